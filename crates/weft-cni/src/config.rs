//! The network configuration on stdin. Keys follow the reference `bridge` and `host-local`
//! plugins so an existing config works with only `type` changed. Everything is validated
//! here, before any change to the system, and each error names the field at fault.

use crate::error::{code, Error, Result};
use crate::ipam::range::{validate_sets, Range, RangeSet};
use ipnet::IpNet;
use serde_json::{Map, Value};
use std::net::IpAddr;
use std::path::PathBuf;

pub const DEFAULT_BRIDGE: &str = "cbr0";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/weft/ipam";

#[derive(Debug, Clone)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub plugin_type: String,
    pub bridge: String,
    pub is_gateway: bool,
    pub is_default_gateway: bool,
    pub ip_masq: bool,
    pub mtu: Option<u32>,
    pub hairpin_mode: bool,
    pub ipam: IpamConf,
    pub dns: Option<Value>,
    pub prev_result: Option<Value>,
    /// Addresses the runtime asks for (`runtimeConfig.ips`, `args.cni.ips`).
    pub requested_ips: Vec<IpAddr>,
    /// `policySocket` (weft's own): ADD waits for the node agent to commit the pod's
    /// NetworkPolicy before it returns (see `policy_wait`).
    pub policy: Option<crate::policy_wait::PolicyWait>,
    /// The config exactly as received, handed on unchanged to a delegated IPAM plugin.
    pub raw: Vec<u8>,
}

#[derive(Debug, Clone)]
pub enum IpamConf {
    /// No `ipam` section: the interface gets no address (rare, but the reference allows it).
    None,
    /// `ipam.type: weft`.
    Weft(WeftIpam),
    /// Any other `ipam.type`: run that plugin from CNI_PATH.
    Delegate(String),
}

#[derive(Debug, Clone)]
pub struct WeftIpam {
    pub sets: Sources,
    pub routes: Vec<RouteConf>,
    pub data_dir: PathBuf,
}

/// Where the ranges come from: the config itself, or a file the node agent writes once the
/// node has its pod subnet (so a runtime may call us before that: we answer "try again").
#[derive(Debug, Clone)]
pub enum Sources {
    Ranges(Vec<RangeSet>),
    SubnetFile(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConf {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
}

fn obj<'a>(v: &'a Value, field: &str) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| Error::invalid_config(field, format!("must be an object, got {v}")))
}

fn opt_str<'a>(m: &'a Map<String, Value>, key: &str, path: &str) -> Result<Option<&'a str>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(Error::invalid_config(
            &format!("{path}{key}"),
            format!("must be a string, got {v}"),
        )),
    }
}

fn opt_bool(m: &Map<String, Value>, key: &str) -> Result<bool> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(Error::invalid_config(
            key,
            format!("must be true or false, got {v}"),
        )),
    }
}

fn parse_as<T: std::str::FromStr>(s: &str, field: &str, what: &str) -> Result<T> {
    s.parse()
        .map_err(|_| Error::invalid_config(field, format!("{s:?} is not a valid {what}")))
}

fn opt_ip(m: &Map<String, Value>, key: &str, path: &str) -> Result<Option<IpAddr>> {
    opt_str(m, key, path)?
        .map(|s| parse_as(s, &format!("{path}{key}"), "IP address"))
        .transpose()
}

/// Keys of the reference bridge plugin that weft does not implement: refusing them beats
/// silently ignoring what the user asked for (spec error 2, "unsupported field").
const UNSUPPORTED_WHEN_SET: &[&str] = &[
    "vlan",
    "vlanTrunk",
    "promiscMode",
    "macspoofchk",
    "enabledad",
];

impl NetConf {
    pub fn parse(raw: &[u8]) -> Result<NetConf> {
        let v: Value = serde_json::from_slice(raw).map_err(|e| {
            Error::new(
                code::DECODE,
                format!("network config on stdin is not valid JSON: {e}"),
            )
        })?;
        let m = obj(&v, "(config)")?;
        let cni_version = opt_str(m, "cniVersion", "")?
            .ok_or_else(|| Error::invalid_config("cniVersion", "missing"))?
            .to_string();
        crate::version::require_supported(&cni_version)?;
        let name = opt_str(m, "name", "")?
            .ok_or_else(|| Error::invalid_config("name", "missing"))?
            .to_string();
        validate_network_name(&name)?;
        let plugin_type = opt_str(m, "type", "")?
            .ok_or_else(|| Error::invalid_config("type", "missing"))?
            .to_string();
        for key in UNSUPPORTED_WHEN_SET {
            if let Some(val) = m.get(*key) {
                if !matches!(val, Value::Null | Value::Bool(false)) {
                    return Err(Error::new(
                        code::UNSUPPORTED_FIELD,
                        format!("field `{key}` is not supported by weft (value {val})"),
                    ));
                }
            }
        }
        let bridge = opt_str(m, "bridge", "")?
            .unwrap_or(DEFAULT_BRIDGE)
            .to_string();
        crate::env::validate_ifname(&bridge).map_err(|_| {
            Error::invalid_config(
                "bridge",
                format!("{bridge:?} is not a valid interface name"),
            )
        })?;
        let mtu = match m.get("mtu") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(x) if (68..=65535).contains(&x) => Some(x as u32),
                _ => {
                    return Err(Error::invalid_config(
                        "mtu",
                        format!("{n} is outside 68..65535"),
                    ))
                }
            },
            Some(v) => {
                return Err(Error::invalid_config(
                    "mtu",
                    format!("must be a number, got {v}"),
                ))
            }
        };
        let is_default_gateway = opt_bool(m, "isDefaultGateway")?;
        let ipam = match m.get("ipam") {
            None | Some(Value::Null) => IpamConf::None,
            Some(v) => parse_ipam(obj(v, "ipam")?)?,
        };
        if let Some(dns) = m.get("dns") {
            obj(dns, "dns")?;
        }
        let mut requested_ips = Vec::new();
        if let Some(rc) = m.get("runtimeConfig").filter(|v| !v.is_null()) {
            collect_ips(
                obj(rc, "runtimeConfig")?.get("ips"),
                "runtimeConfig.ips",
                &mut requested_ips,
            )?;
        }
        if let Some(args) = m.get("args").and_then(|a| a.get("cni")) {
            collect_ips(args.get("ips"), "args.cni.ips", &mut requested_ips)?;
        }
        Ok(NetConf {
            cni_version,
            name,
            plugin_type,
            bridge,
            // isDefaultGateway implies the bridge carries the gateway address.
            is_gateway: opt_bool(m, "isGateway")? || is_default_gateway,
            is_default_gateway,
            ip_masq: opt_bool(m, "ipMasq")?,
            mtu,
            hairpin_mode: opt_bool(m, "hairpinMode")?,
            ipam,
            dns: m.get("dns").cloned(),
            prev_result: m.get("prevResult").filter(|v| !v.is_null()).cloned(),
            requested_ips,
            policy: crate::policy_wait::parse_config(m)?,
            raw: raw.to_vec(),
        })
    }
}

/// The name becomes a directory under the IPAM data dir, so it must be a plain path element.
fn validate_network_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_config(
            "name",
            format!("{name:?} must be letters, digits, '_', '.' or '-'"),
        ))
    }
}

fn collect_ips(v: Option<&Value>, field: &str, out: &mut Vec<IpAddr>) -> Result<()> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let list = v
        .as_array()
        .ok_or_else(|| Error::invalid_config(field, "must be a list of addresses"))?;
    for (i, item) in list.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let s = item
            .as_str()
            .ok_or_else(|| Error::invalid_config(&f, "must be a string"))?;
        // Runtimes send either `10.0.0.5` or `10.0.0.5/24`.
        let ip = match s.split_once('/') {
            Some((a, _)) => parse_as(a, &f, "IP address")?,
            None => parse_as(s, &f, "IP address")?,
        };
        out.push(ip);
    }
    Ok(())
}

fn parse_range(m: &Map<String, Value>, path: &str) -> Result<Range> {
    let subnet: IpNet = match opt_str(m, "subnet", path)? {
        Some(s) => parse_as(s, &format!("{path}subnet"), "CIDR")?,
        None => return Err(Error::invalid_config(&format!("{path}subnet"), "missing")),
    };
    Range::new(
        path.trim_end_matches('.'),
        subnet,
        opt_ip(m, "rangeStart", path)?,
        opt_ip(m, "rangeEnd", path)?,
        opt_ip(m, "gateway", path)?,
    )
}

fn parse_ipam(m: &Map<String, Value>) -> Result<IpamConf> {
    let ty = opt_str(m, "type", "ipam.")?
        .ok_or_else(|| Error::invalid_config("ipam.type", "missing"))?;
    if ty != "weft" {
        if ty.is_empty() || ty.contains('/') {
            return Err(Error::invalid_config(
                "ipam.type",
                format!("{ty:?} is not a plugin name"),
            ));
        }
        return Ok(IpamConf::Delegate(ty.to_string()));
    }
    let mut sets: Vec<RangeSet> = Vec::new();
    if m.get("subnet").is_some_and(|v| !v.is_null()) {
        sets.push(vec![parse_range(m, "ipam.")?]);
    }
    if let Some(rs) = m.get("ranges").filter(|v| !v.is_null()) {
        let outer = rs
            .as_array()
            .ok_or_else(|| Error::invalid_config("ipam.ranges", "must be a list of range sets"))?;
        for (i, set) in outer.iter().enumerate() {
            let inner = set.as_array().ok_or_else(|| {
                Error::invalid_config(&format!("ipam.ranges[{i}]"), "must be a list of ranges")
            })?;
            let mut rs = Vec::new();
            for (j, r) in inner.iter().enumerate() {
                let path = format!("ipam.ranges[{i}][{j}].");
                rs.push(parse_range(obj(r, path.trim_end_matches('.'))?, &path)?);
            }
            sets.push(rs);
        }
    }
    let subnet_file = opt_str(m, "subnetFile", "ipam.")?.map(PathBuf::from);
    let sets = match (sets.is_empty(), subnet_file) {
        (false, None) => {
            validate_sets(&sets)?;
            Sources::Ranges(sets)
        }
        (true, Some(f)) => Sources::SubnetFile(f),
        (false, Some(_)) => {
            return Err(Error::invalid_config(
                "ipam.subnetFile",
                "give either subnetFile or subnet/ranges, not both",
            ))
        }
        (true, None) => {
            return Err(Error::invalid_config(
                "ipam.subnet",
                "missing: weft IPAM needs `subnet`, `ranges` or `subnetFile`",
            ))
        }
    };
    let mut routes = Vec::new();
    if let Some(rs) = m.get("routes").filter(|v| !v.is_null()) {
        let list = rs
            .as_array()
            .ok_or_else(|| Error::invalid_config("ipam.routes", "must be a list"))?;
        for (i, r) in list.iter().enumerate() {
            let path = format!("ipam.routes[{i}].");
            let r = obj(r, path.trim_end_matches('.'))?;
            let dst = opt_str(r, "dst", &path)?
                .ok_or_else(|| Error::invalid_config(&format!("{path}dst"), "missing"))?;
            routes.push(RouteConf {
                dst: parse_as(dst, &format!("{path}dst"), "CIDR")?,
                gw: opt_ip(r, "gw", &path)?,
            });
        }
    }
    let data_dir = opt_str(m, "dataDir", "ipam.")?
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    Ok(IpamConf::Weft(WeftIpam {
        sets,
        routes,
        data_dir,
    }))
}

/// Reads the node's pod subnet from the file the agent writes: either a bare CIDR or
/// `KEY=VALUE` lines with WEFT_SUBNET (FLANNEL_SUBNET is accepted too, holding the gateway
/// address with the prefix, as flannel writes it).
pub fn read_subnet_file(path: &std::path::Path) -> Result<Vec<RangeSet>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::new(
                code::TRY_AGAIN_LATER,
                format!("pod subnet file {} does not exist yet", path.display()),
            )
            .with_details("the node agent writes it once the node has a podCIDR")
        } else {
            Error::io(format!("read {}", path.display()), e)
        }
    })?;
    let field = format!("ipam.subnetFile ({})", path.display());
    let mut cidr = None;
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        match line.split_once('=') {
            Some(("WEFT_SUBNET" | "FLANNEL_SUBNET", v)) => cidr = Some(v.trim().to_string()),
            Some(_) => {}
            None => cidr = Some(line.to_string()),
        }
    }
    let cidr = cidr.ok_or_else(|| Error::invalid_config(&field, "holds no subnet"))?;
    let net: IpNet = parse_as(&cidr, &field, "CIDR")?;
    let range = Range::new("ipam", net.trunc(), None, None, Some(gateway_of(net)))?;
    Ok(vec![vec![range]])
}

/// flannel writes the gateway's address with the prefix (10.244.1.1/24); a bare network
/// (10.244.1.0/24) means the first address.
fn gateway_of(net: IpNet) -> IpAddr {
    if net.addr() == net.network() {
        crate::ipam::range::from_u128(crate::ipam::range::to_u128(net.network()) + 1, net.addr())
    } else {
        net.addr()
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
