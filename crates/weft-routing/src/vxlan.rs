//! The overlay device `weft.<vni>`: created, or adopted when one with the same parameters is
//! already there (an agent restart keeps the device, so its MAC, which the other nodes have
//! programmed, stays valid), and kept at the right MTU, address and state.

use std::net::IpAddr;

use ipnet::IpNet;
use weft_netlink::{Handle, Link, VxlanSpec};

use crate::error::{Error, Result};

/// Outer Ethernet is not counted in the MTU; outer IPv4 (20) + UDP (8) + VXLAN (8) + inner
/// Ethernet (14) are: 50 bytes. An IPv6 underlay adds 20 more.
pub(crate) fn overhead(underlay_ip: IpAddr) -> u32 {
    if underlay_ip.is_ipv4() {
        50
    } else {
        70
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VxlanDevice {
    pub index: u32,
    pub mac: [u8; 6],
}

/// What the device must look like.
pub(crate) struct Want<'a> {
    pub node: &'a str,
    pub name: &'a str,
    pub vni: u32,
    pub port: u16,
    pub local: IpAddr,
    pub underlay: &'a Link,
    /// This node's pod subnet: the device holds its network address (10.244.1.0/32).
    pub own_cidr: IpNet,
}

impl Want<'_> {
    fn mtu(&self) -> Result<u32> {
        let overhead = overhead(self.local);
        match self.underlay.mtu.checked_sub(overhead) {
            Some(m) if m >= 68 => Ok(m),
            _ => Err(Error::config(
                self.node,
                format!(
                    "underlay {} has MTU {}, too small for VXLAN's {overhead} bytes of overhead",
                    self.underlay.name, self.underlay.mtu
                ),
            )),
        }
    }

    /// Whether an existing link can be used as is (its MTU, address and state are fixed
    /// up separately; VNI, port, local address and underlay can only be set at creation).
    fn matches(&self, l: &Link) -> bool {
        l.kind.as_deref() == Some("vxlan")
            && l.vxlan.as_ref().is_some_and(|v| {
                v.vni == self.vni
                    && v.port == self.port
                    && v.local == Some(self.local)
                    && v.underlay == Some(self.underlay.index)
                    && !v.learning
            })
    }

    fn address(&self) -> IpNet {
        let host = if self.own_cidr.addr().is_ipv4() {
            32
        } else {
            128
        };
        // The prefix length is valid for the family by construction.
        IpNet::new(self.own_cidr.network(), host).unwrap_or(self.own_cidr)
    }
}

pub(crate) fn ensure(h: &mut Handle, want: &Want<'_>) -> Result<VxlanDevice> {
    let mtu = want.mtu()?;
    let name = want.name;
    let fail = |what: String| move |e| Error::netlink(what, e);
    let existing = h
        .link_by_name(name)
        .map_err(fail(format!("look up vxlan device {name}")))?;
    let link = match existing {
        Some(l) if want.matches(&l) => l,
        other => {
            if let Some(stale) = other {
                // Created with other parameters (another VNI, port or underlay address):
                // those cannot be changed, so it is made anew, as flannel does.
                h.delete_link(stale.index).map_err(fail(format!(
                    "delete {name}, which has other VXLAN parameters than wanted"
                )))?;
            }
            let spec = VxlanSpec {
                name: name.to_string(),
                vni: want.vni,
                local: want.local,
                port: want.port,
                underlay: Some(want.underlay.index),
                learning: false,
                mtu: Some(mtu),
            };
            h.create_vxlan(&spec).map_err(fail(format!(
                "create vxlan device {name} (vni {}, port {}, local {})",
                want.vni, want.port, want.local
            )))?
        }
    };
    if link.mtu != mtu {
        h.set_mtu(link.index, mtu)
            .map_err(fail(format!("set MTU of {name} to {mtu}")))?;
    }
    ensure_address(h, name, link.index, want.address())?;
    if !link.up {
        h.set_up(link.index)
            .map_err(fail(format!("set {name} up")))?;
    }
    let mac = link.mac.ok_or_else(|| {
        Error::config(
            want.node,
            format!("vxlan device {name} reports no MAC address"),
        )
    })?;
    Ok(VxlanDevice {
        index: link.index,
        mac,
    })
}

/// Delete the VXLAN devices weft made (`weft.<n>`) other than `keep`.
pub(crate) fn remove_stale(h: &mut Handle, keep: Option<&str>) -> Result<()> {
    let links = h.links().map_err(|e| Error::netlink("list links", e))?;
    for l in links {
        let ours = l.kind.as_deref() == Some("vxlan")
            && l.name
                .strip_prefix("weft.")
                .is_some_and(|n| n.parse::<u32>().is_ok());
        if ours && Some(l.name.as_str()) != keep {
            match h.delete_link(l.index) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    return Err(Error::netlink(
                        format!("delete vxlan device {} of an earlier configuration", l.name),
                        e,
                    ))
                }
            }
        }
    }
    Ok(())
}

/// Exactly `addr` among the device's addresses of its family (a lease that changed leaves
/// the old one behind); IPv6 link-local addresses are the kernel's and stay.
fn ensure_address(h: &mut Handle, name: &str, index: u32, addr: IpNet) -> Result<()> {
    let present = h
        .addrs(Some(index))
        .map_err(|e| Error::netlink(format!("list addresses of {name}"), e))?;
    for a in &present {
        let link_local =
            matches!(a.net.addr(), IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
        let same_family = a.net.addr().is_ipv4() == addr.addr().is_ipv4();
        if same_family && !link_local && a.net != addr {
            h.del_addr(index, a.net).map_err(|e| {
                Error::netlink(format!("remove stale address {} from {name}", a.net), e)
            })?;
        }
    }
    if !present.iter().any(|a| a.net == addr) {
        h.add_addr(index, addr)
            .map_err(|e| Error::netlink(format!("add address {addr} to {name}"), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overhead_depends_on_the_underlay_family() {
        assert_eq!(overhead("192.168.1.2".parse().unwrap()), 50);
        assert_eq!(overhead("fd00::2".parse().unwrap()), 70);
    }
}
