//! What IPAM gives an attachment (addresses, gateways, routes, DNS), whichever IPAM it is:
//! weft's own, another plugin by delegation, or none.

use crate::config::{read_subnet_file, IpamConf, NetConf, Sources, WeftIpam};
use crate::delegate;
use crate::env::Invocation;
use crate::error::{code, Error, Result};
use crate::ipam::{range::RangeSet, Ipam};
use crate::result::Route;
use ipnet::IpNet;
use serde_json::Value;
use std::collections::HashSet;
use std::net::IpAddr;

#[derive(Debug, Clone, Default)]
pub struct Addressing {
    /// Address with the subnet's prefix, and that subnet's gateway.
    pub ips: Vec<(IpNet, Option<IpAddr>)>,
    pub routes: Vec<Route>,
    pub dns: Option<Value>,
}

pub fn range_sets(w: &WeftIpam) -> Result<Vec<RangeSet>> {
    match &w.sets {
        Sources::Ranges(s) => Ok(s.clone()),
        Sources::SubnetFile(p) => read_subnet_file(p),
    }
}

fn requested(inv: &Invocation, conf: &NetConf) -> Result<Vec<IpAddr>> {
    let mut ips = conf.requested_ips.clone();
    if let Some(list) = inv.arg("IP") {
        for s in list.split(',').filter(|s| !s.is_empty()) {
            ips.push(s.parse().map_err(|_| {
                Error::invalid_env("CNI_ARGS", format!("IP={s} is not an IP address"))
            })?);
        }
    }
    Ok(ips)
}

pub fn acquire(inv: &Invocation, conf: &NetConf) -> Result<Addressing> {
    match &conf.ipam {
        IpamConf::None => Ok(Addressing::default()),
        IpamConf::Weft(w) => {
            let sets = range_sets(w)?;
            let ipam = Ipam::open(&w.data_dir, &conf.name)?;
            let leases = ipam.allocate(
                &sets,
                &inv.container_id,
                &inv.ifname,
                &requested(inv, conf)?,
            )?;
            let ips: Vec<(IpNet, Option<IpAddr>)> = leases
                .iter()
                .map(|l| {
                    let net = IpNet::new(l.ip, l.range.subnet.prefix_len())
                        .map_err(|_| Error::new(code::IO, "bad prefix"))?;
                    Ok((net, Some(l.range.gateway)))
                })
                .collect::<Result<_>>()?;
            let routes = w
                .routes
                .iter()
                .map(|r| Route {
                    dst: r.dst,
                    gw: r.gw,
                })
                .collect();
            Ok(Addressing {
                ips,
                routes,
                dns: None,
            })
        }
        IpamConf::Delegate(plugin) => {
            let path = delegate::find(plugin, &inv.path)?;
            let r = delegate::add(&path, &conf.raw)?;
            Ok(Addressing {
                ips: r.ips.iter().map(|i| (i.address, i.gateway)).collect(),
                routes: r.routes,
                dns: r.dns,
            })
        }
    }
}

pub fn release(inv: &Invocation, conf: &NetConf) -> Result<()> {
    match &conf.ipam {
        IpamConf::None => Ok(()),
        IpamConf::Weft(w) => Ipam::open(&w.data_dir, &conf.name)?
            .release(&inv.container_id, &inv.ifname)
            .map(|_| ()),
        IpamConf::Delegate(plugin) => {
            let path = delegate::find(plugin, &inv.path)?;
            delegate::run(&path, "DEL", &conf.raw).map(|_| ())
        }
    }
}

pub fn check(inv: &Invocation, conf: &NetConf, addrs: &[IpNet]) -> Result<()> {
    match &conf.ipam {
        IpamConf::None => Ok(()),
        IpamConf::Weft(w) => {
            let held = Ipam::open(&w.data_dir, &conf.name)?.held(&inv.container_id, &inv.ifname)?;
            match addrs.iter().find(|a| !held.contains(&a.addr())) {
                Some(a) => Err(Error::new(
                    code::CHECK_FAILED,
                    format!(
                        "IPAM holds no allocation of {} for this container",
                        a.addr()
                    ),
                )),
                None => Ok(()),
            }
        }
        IpamConf::Delegate(plugin) => {
            let path = delegate::find(plugin, &inv.path)?;
            delegate::run(&path, "CHECK", &conf.raw).map(|_| ())
        }
    }
}

/// STATUS: can an ADD succeed now?
pub fn status(inv: &Invocation, conf: &NetConf) -> Result<()> {
    match &conf.ipam {
        IpamConf::None => Ok(()),
        IpamConf::Weft(w) => {
            let sets = range_sets(w).map_err(|e| {
                Error::new(code::NOT_AVAILABLE, format!("IPAM not ready: {}", e.msg))
                    .with_details(e.details)
            })?;
            let free = Ipam::open(&w.data_dir, &conf.name)?.free_counts(&sets)?;
            match free.iter().position(|f| *f == 0) {
                Some(i) => Err(Error::new(
                    code::NOT_AVAILABLE,
                    format!("no free address left in range set {}", sets[i][0].subnet),
                )),
                None => Ok(()),
            }
        }
        IpamConf::Delegate(plugin) => {
            let path = delegate::find(plugin, &inv.path)?;
            delegate::run(&path, "STATUS", &conf.raw).map(|_| ())
        }
    }
}

/// GC: release every allocation whose attachment is not in `valid`.
pub fn gc(inv: &Invocation, conf: &NetConf, valid: &HashSet<(String, String)>) -> Result<()> {
    match &conf.ipam {
        IpamConf::None => Ok(()),
        IpamConf::Weft(w) => Ipam::open(&w.data_dir, &conf.name)?
            .retain(valid)
            .map(|_| ()),
        IpamConf::Delegate(plugin) => {
            let path = delegate::find(plugin, &inv.path)?;
            delegate::run(&path, "GC", &conf.raw).map(|_| ())
        }
    }
}
