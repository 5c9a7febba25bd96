//! The plugin's commands. Each validates everything before it changes anything, and a
//! failed ADD undoes what it did, so a runtime never inherits half a pod network.

use crate::addressing::{self, Addressing};
use crate::config::NetConf;
use crate::env::{Command, Invocation};
use crate::error::{code, Error, Result};
use crate::result::{CniResult, Interface, IpConfig, Route};
use crate::version::{self, Version};
use crate::{bridge, sandbox, veth};
use ipnet::IpNet;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::io::Read;
use weft_netlink::{mac_to_string, Handle};

/// Runs the plugin as a runtime calls it; returns the exit code.
pub fn main_from_env() -> u8 {
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    // Errors are reported in the version the caller speaks, when we can tell it.
    let version = serde_json::from_slice::<Value>(&stdin)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
        .filter(|v| version::SUPPORTED.contains(&v.as_str()))
        .unwrap_or_else(|| version::LATEST.to_string());
    let outcome = match read {
        Ok(_) => Invocation::from_env().and_then(|inv| run(&inv, &stdin)),
        Err(e) => Err(Error::io("read the network config from stdin", e)),
    };
    match outcome {
        Ok(Some(v)) => {
            println!("{v}");
            0
        }
        Ok(None) => 0,
        Err(e) => {
            println!("{}", e.to_json(&version));
            1
        }
    }
}

pub fn run(inv: &Invocation, stdin: &[u8]) -> Result<Option<Value>> {
    if inv.command == Command::Version {
        return Ok(Some(json!({
            "cniVersion": version::LATEST,
            "supportedVersions": version::SUPPORTED,
        })));
    }
    let conf = NetConf::parse(stdin)?;
    let v = Version::parse(&conf.cni_version).unwrap_or(Version(1, 1, 0));
    let need = |min: Version, what: &str| -> Result<()> {
        if v < min {
            return Err(Error::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "{what} needs cniVersion {}.{}.{} or later, config has {}",
                    min.0, min.1, min.2, conf.cni_version
                ),
            ));
        }
        Ok(())
    };
    match inv.command {
        Command::Add => {
            let r = add(inv, &conf)?.for_version(&conf.cni_version);
            Ok(Some(
                serde_json::to_value(r).map_err(|e| Error::new(code::IO, e.to_string()))?,
            ))
        }
        Command::Del => del(inv, &conf).map(|_| None),
        Command::Check => {
            need(Version(0, 4, 0), "CHECK")?;
            check(inv, &conf).map(|_| None)
        }
        Command::Status => {
            need(Version(1, 1, 0), "STATUS")?;
            addressing::status(inv, &conf).map(|_| None)
        }
        Command::Gc => {
            need(Version(1, 1, 0), "GC")?;
            gc(inv, &conf, stdin).map(|_| None)
        }
        Command::Version => unreachable!("handled above"),
    }
}

fn host() -> Result<Handle> {
    Handle::new().map_err(|e| Error::kernel("open netlink in the host namespace", e))
}

/// The routes the pod gets: IPAM's routes (a route without `gw` goes via its family's
/// gateway, as the reference plugins do) plus default routes for `isDefaultGateway`.
fn pod_routes(conf: &NetConf, a: &Addressing) -> Vec<Route> {
    let gw_for = |dst: &IpNet| {
        a.ips
            .iter()
            .find(|(ip, _)| ip.addr().is_ipv4() == dst.addr().is_ipv4())
            .and_then(|(_, g)| *g)
    };
    let mut routes: Vec<Route> = a
        .routes
        .iter()
        .map(|r| Route {
            dst: r.dst,
            gw: r.gw.or_else(|| gw_for(&r.dst)),
        })
        .collect();
    if conf.is_default_gateway {
        for (ip, gw) in &a.ips {
            let default: IpNet = if ip.addr().is_ipv4() {
                "0.0.0.0/0"
            } else {
                "::/0"
            }
            .parse()
            .unwrap_or_default();
            if gw.is_some() && !routes.iter().any(|r| r.dst == default) {
                routes.push(Route {
                    dst: default,
                    gw: *gw,
                });
            }
        }
    }
    routes
}

fn add(inv: &Invocation, conf: &NetConf) -> Result<CniResult> {
    let netns = inv
        .netns
        .as_deref()
        .ok_or_else(|| Error::invalid_env("CNI_NETNS", "not set"))?;
    let (ns, mut pod) = sandbox::open(netns)?;
    if pod
        .link_by_name(&inv.ifname)
        .map_err(|e| Error::kernel("list the pod's links", e))?
        .is_some()
    {
        return Err(Error::new(
            code::INTERFACE_EXISTS,
            format!(
                "interface {} already exists in {}",
                inv.ifname,
                netns.display()
            ),
        ));
    }
    // The pod's name for the policy wait comes from CNI_ARGS: checked before any change.
    let policy = conf
        .policy
        .as_ref()
        .map(|w| crate::policy_wait::Pending::new(inv, w))
        .transpose()?;
    let mut host = host()?;
    let addressing = addressing::acquire(inv, conf)?;
    let host_veth = veth::host_name(&inv.container_id, &inv.ifname);
    let built = (|| -> Result<CniResult> {
        let br = bridge::ensure(&mut host, &conf.bridge, conf.mtu)?;
        if conf.is_gateway {
            let gws: Vec<IpNet> = addressing
                .ips
                .iter()
                .filter_map(|(ip, gw)| gw.and_then(|g| IpNet::new(g, ip.prefix_len()).ok()))
                .collect();
            bridge::ensure_gateways(&mut host, &br, &gws)?;
        }
        let hv = veth::create(
            &mut host,
            &host_veth,
            &inv.ifname,
            &ns,
            &br,
            conf.mtu,
            conf.hairpin_mode,
        )?;
        let routes = pod_routes(conf, &addressing);
        let addrs: Vec<IpNet> = addressing.ips.iter().map(|(ip, _)| *ip).collect();
        let pl = sandbox::configure(&ns, &mut pod, &inv.ifname, &addrs, &routes)?;
        if conf.ip_masq {
            let subnets: Vec<IpNet> = addrs.iter().map(|a| a.trunc()).collect();
            crate::masq::ensure(&conf.name, &subnets)?;
        }
        let br = host
            .link_by_index(br.index)
            .map_err(|e| Error::kernel("read back the bridge", e))?
            .unwrap_or(br);
        let iface = |l: &weft_netlink::Link, sandbox: String| Interface {
            name: l.name.clone(),
            mac: l.mac.as_ref().map(mac_to_string).unwrap_or_default(),
            mtu: Some(l.mtu),
            sandbox,
        };
        Ok(CniResult {
            cni_version: conf.cni_version.clone(),
            interfaces: vec![
                iface(&br, String::new()),
                iface(&hv, String::new()),
                iface(&pl, netns.display().to_string()),
            ],
            ips: addressing
                .ips
                .iter()
                .map(|(ip, gw)| IpConfig {
                    version: None,
                    address: *ip,
                    gateway: *gw,
                    interface: Some(2),
                })
                .collect(),
            routes,
            dns: conf.dns.clone().or(addressing.dns.clone()),
        })
    })();
    // The last step before the runtime may start the pod's process: its policy in force.
    let built = built.and_then(|r| match policy {
        Some(p) => p
            .commit(addressing.ips.iter().map(|(ip, _)| ip.addr()).collect())
            .map(|_| r),
        None => Ok(r),
    });
    if built.is_err() {
        // Undo in reverse: the veth (its pod end goes with it), then the addresses.
        let _ = host.delete_link_by_name(&host_veth);
        let _ = addressing::release(inv, conf);
    }
    built
}

/// DEL is best effort and idempotent: every step runs even if an earlier one failed, and
/// things already gone (the namespace, the link, the allocation) count as done.
fn del(inv: &Invocation, conf: &NetConf) -> Result<()> {
    let mut first_err: Option<Error> = None;
    let mut note = |r: Result<()>| {
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    };
    let mut retired = false;
    if let Some(p) = inv.netns.as_deref().filter(|p| p.exists()) {
        // A path whose namespace is gone (a stale bind-mount target) cannot be opened:
        // nothing is left inside it to remove.
        if let Ok((_, mut pod)) = sandbox::open(p) {
            match sandbox::retire(&mut pod, &inv.ifname) {
                Ok(found) => retired = found,
                Err(e) => note(Err(e)),
            }
        }
    }
    if !retired {
        // No pod end to take it along (the namespace went first): the host end alone.
        note(host().and_then(|mut h| veth::retire_host(&mut h, &inv.container_id, &inv.ifname)));
    }
    note(addressing::release(inv, conf));
    first_err.map_or(Ok(()), Err)
}

fn check(inv: &Invocation, conf: &NetConf) -> Result<()> {
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| Error::invalid_config("prevResult", "CHECK needs the result of ADD"))?;
    let prev = CniResult::from_json(prev, "prevResult")?;
    let netns = inv
        .netns
        .as_deref()
        .ok_or_else(|| Error::invalid_env("CNI_NETNS", "not set"))?;
    let pod_idx = prev
        .interfaces
        .iter()
        .position(|i| i.name == inv.ifname && !i.sandbox.is_empty());
    let addrs: Vec<IpNet> = prev
        .ips
        .iter()
        .filter(|i| i.interface.is_none() || i.interface == pod_idx)
        .map(|i| i.address)
        .collect();
    let (_, mut pod) = sandbox::open(netns)?;
    sandbox::check(&mut pod, &inv.ifname, &addrs, &prev.routes)?;
    let mut h = host()?;
    let hv_name = veth::host_name(&inv.container_id, &inv.ifname);
    let hv = h
        .link_by_name(&hv_name)
        .map_err(|e| Error::kernel("look up the host veth", e))?
        .ok_or_else(|| {
            Error::new(
                code::CHECK_FAILED,
                format!("host veth {hv_name} is missing"),
            )
        })?;
    let br = h
        .link_by_name(&conf.bridge)
        .map_err(|e| Error::kernel("look up the bridge", e))?
        .ok_or_else(|| {
            Error::new(
                code::CHECK_FAILED,
                format!("bridge {} is missing", conf.bridge),
            )
        })?;
    if hv.master != Some(br.index) {
        return Err(Error::new(
            code::CHECK_FAILED,
            format!(
                "host veth {hv_name} is not attached to bridge {}",
                conf.bridge
            ),
        ));
    }
    addressing::check(inv, conf, &addrs)
}

/// GC: the runtime lists the attachments still alive; everything else goes (addresses, and
/// host veths on our bridge whose pod is gone but whose namespace was leaked).
fn gc(inv: &Invocation, conf: &NetConf, stdin: &[u8]) -> Result<()> {
    let v: Value =
        serde_json::from_slice(stdin).map_err(|e| Error::new(code::DECODE, e.to_string()))?;
    let list = v
        .get("cni.dev/valid-attachments")
        .or_else(|| v.get("cni.dev/attachments"))
        .cloned()
        .unwrap_or(Value::Array(vec![]));
    let list = list.as_array().ok_or_else(|| {
        Error::invalid_config(
            "cni.dev/valid-attachments",
            "must be a list of {containerID, ifname}",
        )
    })?;
    let mut valid = HashSet::new();
    for (i, a) in list.iter().enumerate() {
        let field = |k: &str| {
            a.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| {
                    Error::invalid_config(
                        &format!("cni.dev/valid-attachments[{i}].{k}"),
                        "missing or not a string",
                    )
                })
        };
        valid.insert((field("containerID")?, field("ifname")?));
    }
    let keep: HashSet<String> = valid.iter().map(|(c, i)| veth::host_name(c, i)).collect();
    let mut h = host()?;
    if let Some(br) = h
        .link_by_name(&conf.bridge)
        .map_err(|e| Error::kernel("look up the bridge", e))?
    {
        let links = h.links().map_err(|e| Error::kernel("list links", e))?;
        for l in links.iter().filter(|l| {
            l.master == Some(br.index)
                && l.kind.as_deref() == Some("veth")
                && l.name.starts_with("veth")
                && l.name.len() == 15
        }) {
            if !keep.contains(&l.name) {
                let _ = h.delete_link(l.index);
            }
        }
    }
    addressing::gc(inv, conf, &valid)
}
