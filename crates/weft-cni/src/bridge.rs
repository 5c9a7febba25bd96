//! The node's bridge (`cbr0` by default): created on first use, carrying the pods' gateway
//! address when `isGateway` is set. Parallel ADDs race to create it, so "already exists" is
//! success here.

use crate::error::{Error, Result};
use ipnet::IpNet;
use weft_netlink::{sysctl, Handle, Link};

pub fn ensure(h: &mut Handle, name: &str, mtu: Option<u32>) -> Result<Link> {
    let link = match h
        .link_by_name(name)
        .map_err(|e| Error::kernel(format!("look up bridge {name}"), e))?
    {
        Some(l) => l,
        None => match h.create_bridge(name, mtu) {
            Ok(l) => l,
            Err(e) if e.is_exists() => h
                .link_by_name(name)
                .map_err(|e| Error::kernel(format!("look up bridge {name}"), e))?
                .ok_or_else(|| {
                    Error::new(
                        crate::error::code::KERNEL,
                        format!("bridge {name} vanished"),
                    )
                })?,
            Err(e) => return Err(Error::kernel(format!("create bridge {name}"), e)),
        },
    };
    if link.kind.as_deref() != Some("bridge") {
        return Err(Error::invalid_config(
            "bridge",
            format!(
                "{name} exists but is a {} device, not a bridge",
                link.kind.as_deref().unwrap_or("plain")
            ),
        ));
    }
    if let Some(m) = mtu.filter(|m| *m != link.mtu) {
        h.set_mtu(link.index, m)
            .map_err(|e| Error::kernel(format!("set MTU {m} on bridge {name}"), e))?;
    }
    if !link.up {
        h.set_up(link.index)
            .map_err(|e| Error::kernel(format!("set bridge {name} up"), e))?;
    }
    Ok(link)
}

/// Puts the gateway addresses on the bridge and turns on forwarding, so the bridge is the
/// pods' router. IPv6 gateways skip duplicate address detection, which would otherwise keep
/// the address unusable for a second after every node start.
pub fn ensure_gateways(h: &mut Handle, bridge: &Link, gateways: &[IpNet]) -> Result<()> {
    if gateways.iter().any(|g| g.addr().is_ipv6()) {
        sysctl::set(&format!("net.ipv6.conf.{}.accept_dad", bridge.name), "0")
            .map_err(|e| Error::kernel("disable DAD on the bridge", e))?;
    }
    for gw in gateways {
        match h.add_addr(bridge.index, *gw) {
            Ok(()) => {}
            Err(e) if e.is_exists() => {}
            Err(e) => {
                return Err(Error::kernel(
                    format!("add gateway address {gw} to bridge {}", bridge.name),
                    e,
                ))
            }
        }
    }
    if gateways.iter().any(|g| g.addr().is_ipv4()) {
        sysctl::set("net.ipv4.ip_forward", "1")
            .map_err(|e| Error::kernel("enable IPv4 forwarding", e))?;
    }
    if gateways.iter().any(|g| g.addr().is_ipv6()) {
        sysctl::set("net.ipv6.conf.all.forwarding", "1")
            .map_err(|e| Error::kernel("enable IPv6 forwarding", e))?;
    }
    Ok(())
}
