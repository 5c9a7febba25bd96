//! The ADD result, in the wire format of the config's `cniVersion`.

use crate::error::{code, Error, Result};
use crate::version::{result_has_ip_version, Version};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::IpAddr;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// Added in spec 1.1.0; dropped when rendering older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    /// "4" or "6": present only before 1.0.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

impl CniResult {
    /// Shapes the result for the version the runtime speaks.
    pub fn for_version(mut self, version: &str) -> CniResult {
        let v = Version::parse(version).unwrap_or(Version(1, 1, 0));
        self.cni_version = version.to_string();
        for ip in &mut self.ips {
            ip.version = result_has_ip_version(v).then(|| {
                if ip.address.addr().is_ipv4() {
                    "4"
                } else {
                    "6"
                }
                .to_string()
            });
        }
        if v < Version(1, 1, 0) {
            for i in &mut self.interfaces {
                i.mtu = None;
            }
        }
        self
    }

    /// Reads a result another plugin printed (delegated IPAM) or a prevResult.
    pub fn from_json(v: &Value, what: &str) -> Result<CniResult> {
        serde_json::from_value(v.clone())
            .map_err(|e| Error::new(code::DECODE, format!("cannot decode {what}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_versions_carry_ip_version_and_no_mtu() {
        let r = CniResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mtu: Some(1500),
                ..Default::default()
            }],
            ips: vec![IpConfig {
                version: None,
                address: "10.0.0.2/24".parse().unwrap(),
                gateway: None,
                interface: Some(0),
            }],
            ..Default::default()
        };
        let old = serde_json::to_value(r.clone().for_version("0.4.0")).unwrap();
        assert_eq!(old["ips"][0]["version"], "4");
        assert!(old["interfaces"][0].get("mtu").is_none());
        let new = serde_json::to_value(r.for_version("1.1.0")).unwrap();
        assert!(new["ips"][0].get("version").is_none());
        assert_eq!(new["interfaces"][0]["mtu"], 1500);
        assert_eq!(new["ips"][0]["address"], "10.0.0.2/24");
    }
}
