//! Creating links: bridge, veth pair, vxlan, dummy. Each is one RTM_NEWLINK with
//! NLM_F_CREATE|NLM_F_EXCL, so an existing name fails with `is_exists()` instead of being
//! silently reused.

use std::net::IpAddr;
use std::os::fd::AsRawFd;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage,
};
use netlink_packet_route::RouteNetlinkMessage;

use crate::error::{Error, Result};
use crate::link::{validate_ifname, Link};
use crate::netns::Netns;
use crate::socket::Handle;

/// The IANA-assigned VXLAN port. The kernel's own default is 8472 (flannel's choice), so
/// the port is always sent explicitly.
pub const VXLAN_IANA_PORT: u16 = 4789;

/// What a VXLAN device is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    /// 24-bit VXLAN network identifier.
    pub vni: u32,
    /// Source address of the encapsulated packets (the node's underlay address).
    pub local: IpAddr,
    /// UDP destination port.
    pub port: u16,
    /// Underlay device the tunnel sends through (IFLA_VXLAN_LINK).
    pub underlay: Option<u32>,
    /// Learn remote MACs from received packets; off when FDB entries are programmed.
    pub learning: bool,
    pub mtu: Option<u32>,
}

impl VxlanSpec {
    /// A spec with port 4789, learning off, no underlay device and the default MTU.
    pub fn new(name: impl Into<String>, vni: u32, local: IpAddr) -> VxlanSpec {
        VxlanSpec {
            name: name.into(),
            vni,
            local,
            port: VXLAN_IANA_PORT,
            underlay: None,
            learning: false,
            mtu: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        validate_ifname(&self.name)?;
        if self.vni >= 1 << 24 {
            return Err(Error::invalid(
                format!("vxlan {} vni", self.name),
                format!("{} does not fit in 24 bits", self.vni),
            ));
        }
        if self.port == 0 {
            return Err(Error::invalid(
                format!("vxlan {} port", self.name),
                "must not be 0",
            ));
        }
        if self.local.is_unspecified() || self.local.is_multicast() {
            return Err(Error::invalid(
                format!("vxlan {} local address", self.name),
                format!("{} is not a unicast address", self.local),
            ));
        }
        Ok(())
    }
}

fn validate_mtu(name: &str, mtu: Option<u32>) -> Result<()> {
    match mtu {
        // 68 is the IPv4 minimum (RFC 791); the kernel rejects less on most devices anyway.
        Some(m) if m < 68 => Err(Error::invalid(
            format!("mtu of {name}"),
            format!("{m} is below the minimum of 68"),
        )),
        _ => Ok(()),
    }
}

impl Handle {
    fn create_link(
        &mut self,
        name: &str,
        mtu: Option<u32>,
        info: Vec<LinkInfo>,
        op: &str,
    ) -> Result<Link> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        if let Some(mtu) = mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        m.attributes.push(LinkAttribute::LinkInfo(info));
        self.request(
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
            op,
        )?;
        // Read back what the kernel made (index, MAC), which callers need next.
        self.link_by_name(name)?.ok_or_else(|| Error::NotFound {
            op: format!("{op}: read back"),
            what: format!("link {name}"),
        })
    }

    /// A bridge called `name`, down. Existing name: `is_exists()`.
    pub fn create_bridge(&mut self, name: &str, mtu: Option<u32>) -> Result<Link> {
        validate_ifname(name)?;
        validate_mtu(name, mtu)?;
        self.create_link(
            name,
            mtu,
            vec![LinkInfo::Kind(InfoKind::Bridge)],
            &format!("create bridge {name}"),
        )
    }

    /// A veth pair: `name` in this handle's namespace, `peer_name` created directly in
    /// `peer_ns` (IFLA_NET_NS_FD on the peer), so the peer's name only has to be free
    /// there: a container's `eth0` while the host has its own `eth0` is fine. Both ends
    /// start down. Returns this side.
    pub fn create_veth(
        &mut self,
        name: &str,
        peer_name: &str,
        peer_ns: &Netns,
        mtu: Option<u32>,
    ) -> Result<Link> {
        validate_ifname(name)?;
        validate_ifname(peer_name)?;
        validate_mtu(name, mtu)?;
        let mut peer = LinkMessage::default();
        peer.attributes
            .push(LinkAttribute::IfName(peer_name.to_string()));
        peer.attributes
            .push(LinkAttribute::NetNsFd(peer_ns.fd().as_raw_fd()));
        if let Some(mtu) = mtu {
            peer.attributes.push(LinkAttribute::Mtu(mtu));
        }
        self.create_link(
            name,
            mtu,
            vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
            ],
            &format!("create veth {name} (peer {peer_name})"),
        )
    }

    pub fn create_vxlan(&mut self, v: &VxlanSpec) -> Result<Link> {
        v.validate()?;
        validate_mtu(&v.name, v.mtu)?;
        let mut data = vec![InfoVxlan::Id(v.vni)];
        data.push(match v.local {
            IpAddr::V4(ip) => InfoVxlan::Local(ip),
            IpAddr::V6(ip) => InfoVxlan::Local6(ip),
        });
        data.push(InfoVxlan::Port(v.port));
        if let Some(dev) = v.underlay {
            data.push(InfoVxlan::Link(dev));
        }
        data.push(InfoVxlan::Learning(v.learning));
        self.create_link(
            &v.name,
            v.mtu,
            vec![
                LinkInfo::Kind(InfoKind::Vxlan),
                LinkInfo::Data(InfoData::Vxlan(data)),
            ],
            &format!("create vxlan {} (vni {})", v.name, v.vni),
        )
    }

    pub fn create_dummy(&mut self, name: &str) -> Result<Link> {
        validate_ifname(name)?;
        self.create_link(
            name,
            None,
            vec![LinkInfo::Kind(InfoKind::Dummy)],
            &format!("create dummy {name}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn vxlan_spec_rejects_wide_vni_and_bad_local() {
        let ok = VxlanSpec::new("weft.1", 1, IpAddr::V4(Ipv4Addr::new(192, 168, 1, 2)));
        assert!(ok.validate().is_ok());
        let wide = VxlanSpec {
            vni: 1 << 24,
            ..ok.clone()
        };
        assert!(wide.validate().is_err());
        let any = VxlanSpec {
            local: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ..ok
        };
        assert!(any.validate().is_err());
    }
}
