//! Links: reading them back, changing their state, moving and deleting them.
//! Creating links of each kind is in `link_create.rs`.

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use netlink_packet_core::DefaultNla;
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoPortData, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage, LinkProtoInfoBridge, State,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::{Error, Result};
use crate::netns::Netns;
use crate::socket::{open_socket, recv_batch, set_recv_deadline, Handle};

/// Link notifications multicast group (rtnetlink.h RTNLGRP_LINK).
const RTNLGRP_LINK: u32 = 1;
/// Bridge port attribute "hairpin mode" inside IFLA_PROTINFO (if_link.h IFLA_BRPORT_MODE).
const IFLA_BRPORT_MODE: u16 = 4;
/// Kernel limit for interface names, without the terminating NUL (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// IFLA_INFO_KIND: "veth", "bridge", "vxlan", "dummy", ...; None for physical devices
    /// and loopback.
    pub kind: Option<String>,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Usable: operstate UP, or UNKNOWN with carrier (dummy and loopback never report UP).
    pub oper_up: bool,
    /// The bridge (or other controller) this link is enslaved to.
    pub master: Option<u32>,
    /// IFLA_LINK: for a veth, the peer's ifindex (in the peer's namespace when
    /// `link_netnsid` is set); for a vlan, its parent.
    pub link: Option<u32>,
    /// The peer namespace's id as seen from this namespace, when the peer lives elsewhere.
    pub link_netnsid: Option<i32>,
    /// Bridge port hairpin mode, when the link is a bridge port.
    pub hairpin: Option<bool>,
    /// VXLAN parameters, when `kind` is "vxlan".
    pub vxlan: Option<VxlanInfo>,
}

/// VXLAN parameters read back from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanInfo {
    pub vni: u32,
    pub local: Option<IpAddr>,
    pub port: u16,
    /// The underlay device (IFLA_VXLAN_LINK).
    pub underlay: Option<u32>,
    pub learning: bool,
}

impl Link {
    pub(crate) fn from_message(m: &LinkMessage) -> Link {
        let flags = m.header.flags;
        let mut link = Link {
            index: m.header.index,
            name: String::new(),
            kind: None,
            mac: None,
            mtu: 0,
            up: flags.contains(LinkFlags::Up),
            oper_up: false,
            master: None,
            link: None,
            link_netnsid: None,
            hairpin: None,
            vxlan: None,
        };
        let mut oper = State::Unknown;
        for attr in &m.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Mtu(v) => link.mtu = *v,
                LinkAttribute::Address(a) => link.mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
                LinkAttribute::Controller(v) if *v != 0 => link.master = Some(*v),
                LinkAttribute::Link(v) if *v != 0 => link.link = Some(*v),
                LinkAttribute::LinkNetNsId(v) if *v >= 0 => link.link_netnsid = Some(*v),
                LinkAttribute::OperState(s) => oper = *s,
                LinkAttribute::LinkInfo(infos) => read_link_info(infos, &mut link),
                _ => {}
            }
        }
        link.oper_up = match oper {
            State::Up => true,
            State::Unknown => link.up && flags.contains(LinkFlags::LowerUp),
            _ => false,
        };
        link
    }
}

fn read_link_info(infos: &[LinkInfo], link: &mut Link) {
    for info in infos {
        match info {
            LinkInfo::Kind(k) => link.kind = Some(k.to_string()),
            LinkInfo::Data(InfoData::Vxlan(attrs)) => link.vxlan = Some(read_vxlan(attrs)),
            LinkInfo::PortData(InfoPortData::BridgePort(attrs)) => {
                for a in attrs {
                    if let InfoBridgePort::HairpinMode(on) = a {
                        link.hairpin = Some(*on);
                    }
                }
            }
            _ => {}
        }
    }
}

fn read_vxlan(attrs: &[InfoVxlan]) -> VxlanInfo {
    let mut v = VxlanInfo {
        vni: 0,
        local: None,
        port: 0,
        underlay: None,
        learning: false,
    };
    for a in attrs {
        match a {
            InfoVxlan::Id(id) => v.vni = *id,
            InfoVxlan::Local(ip) => v.local = Some(IpAddr::V4(*ip)),
            InfoVxlan::Local6(ip) => v.local = Some(IpAddr::V6(*ip)),
            InfoVxlan::Port(p) => v.port = *p,
            InfoVxlan::Link(l) if *l != 0 => v.underlay = Some(*l),
            InfoVxlan::Learning(on) => v.learning = *on,
            _ => {}
        }
    }
    v
}

/// Interface names the kernel accepts (dev_valid_name): 1..=15 bytes, no '/', ':' or
/// whitespace, not "." or "..".
pub(crate) fn validate_ifname(name: &str) -> Result<()> {
    let bad = |reason: &str| Err(Error::invalid(format!("interface name {name:?}"), reason));
    if name.is_empty() {
        return bad("must not be empty");
    }
    if name.len() > IFNAME_MAX {
        return bad("longer than 15 bytes (IFNAMSIZ)");
    }
    if name == "." || name == ".." {
        return bad("must not be '.' or '..'");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        return bad("must not contain '/', ':' or whitespace");
    }
    Ok(())
}

pub(crate) fn link_message(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m
}

impl Handle {
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let answers = self.dump(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            "list links",
        )?;
        Ok(answers
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
                _ => None,
            })
            .collect())
    }

    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        validate_ifname(name)?;
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.get_link(m, &format!("get link {name}"))
    }

    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        if index == 0 {
            return Ok(None);
        }
        self.get_link(link_message(index), &format!("get link {index}"))
    }

    fn get_link(&mut self, m: LinkMessage, op: &str) -> Result<Option<Link>> {
        match self.request_collect(RouteNetlinkMessage::GetLink(m), 0, op) {
            Ok(answers) => Ok(answers.iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
                _ => None,
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The index of the link called `name`, or `NotFound` naming `op`.
    pub fn link_index(&mut self, name: &str) -> Result<u32> {
        match self.link_by_name(name)? {
            Some(l) => Ok(l.index),
            None => Err(Error::NotFound {
                op: format!("look up link {name}"),
                what: format!("link {name}"),
            }),
        }
    }

    /// Send a change to one link; on failure, name the link in the error ("link 7 (veth1)").
    fn link_request(
        &mut self,
        index: u32,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: impl Fn(&str) -> String,
    ) -> Result<()> {
        match self.request(msg, flags, &op(&format!("link {index}"))) {
            Ok(()) => Ok(()),
            Err(e) => {
                let label = match self.link_by_index(index) {
                    Ok(Some(l)) => format!("link {index} ({})", l.name),
                    Ok(None) => format!("link {index} (no such link)"),
                    Err(_) => format!("link {index}"),
                };
                Err(e.with_op(op(&label)))
            }
        }
    }

    fn set_flags(&mut self, index: u32, up: bool) -> Result<()> {
        let mut m = link_message(index);
        m.header.flags = if up {
            LinkFlags::Up
        } else {
            LinkFlags::empty()
        };
        m.header.change_mask = LinkFlags::Up;
        let word = if up { "up" } else { "down" };
        self.link_request(index, RouteNetlinkMessage::SetLink(m), 0, |l| {
            format!("set {l} {word}")
        })
    }

    pub fn set_up(&mut self, index: u32) -> Result<()> {
        self.set_flags(index, true)
    }

    pub fn set_down(&mut self, index: u32) -> Result<()> {
        self.set_flags(index, false)
    }

    /// Enslave `index` to the bridge `master`; `master == 0` releases it.
    pub fn set_master(&mut self, index: u32, master: u32) -> Result<()> {
        let mut m = link_message(index);
        m.attributes.push(LinkAttribute::Controller(master));
        self.link_request(index, RouteNetlinkMessage::SetLink(m), 0, |l| {
            format!("set master of {l} to link {master}")
        })
    }

    /// Rename a link (older kernels refuse with EBUSY while it is up).
    pub fn set_name(&mut self, index: u32, name: &str) -> Result<()> {
        validate_ifname(name)?;
        let mut m = link_message(index);
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.link_request(index, RouteNetlinkMessage::SetLink(m), 0, |l| {
            format!("rename {l} to {name}")
        })
    }

    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        let mut m = link_message(index);
        m.attributes.push(LinkAttribute::Mtu(mtu));
        self.link_request(index, RouteNetlinkMessage::SetLink(m), 0, |l| {
            format!("set mtu of {l} to {mtu}")
        })
    }

    pub fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<()> {
        let mut m = link_message(index);
        m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        let text = crate::mac::mac_to_string(&mac);
        self.link_request(index, RouteNetlinkMessage::SetLink(m), 0, |l| {
            format!("set mac of {l} to {text}")
        })
    }

    /// Hairpin mode on a bridge port: the bridge may send a frame back out of the port it
    /// came in on (a pod reaching itself through a Service). An AF_BRIDGE setlink with
    /// IFLA_PROTINFO/IFLA_BRPORT_MODE, as `bridge link set dev X hairpin on` sends.
    pub fn set_hairpin(&mut self, index: u32, on: bool) -> Result<()> {
        let mut m = link_message(index);
        m.header.interface_family = AddressFamily::Bridge;
        m.attributes.push(LinkAttribute::ProtoInfoBridge(vec![
            LinkProtoInfoBridge::Other(DefaultNla::new(IFLA_BRPORT_MODE, vec![u8::from(on)])),
        ]));
        let word = if on { "on" } else { "off" };
        self.link_request(index, RouteNetlinkMessage::SetLink(m), 0, |l| {
            format!("set hairpin {word} on bridge port {l}")
        })
    }

    /// Move a link into `ns`, renaming it there when `new_name` is given (in one request, so
    /// a name that exists here but not there, or the reverse, is no problem).
    pub fn move_to_netns(&mut self, index: u32, ns: &Netns, new_name: Option<&str>) -> Result<()> {
        if let Some(n) = new_name {
            validate_ifname(n)?;
        }
        let mut m = link_message(index);
        m.attributes
            .push(LinkAttribute::NetNsFd(ns.fd().as_raw_fd()));
        if let Some(n) = new_name {
            m.attributes.push(LinkAttribute::IfName(n.to_string()));
        }
        let target = ns.path().display().to_string();
        let rename = new_name.map(|n| format!(" as {n}")).unwrap_or_default();
        self.link_request(index, RouteNetlinkMessage::SetLink(m), 0, |l| {
            format!("move {l} to network namespace {target}{rename}")
        })
    }

    /// Delete a link (for a veth, the peer goes with it). Missing link: `is_not_found()`.
    pub fn delete_link(&mut self, index: u32) -> Result<()> {
        self.request(
            RouteNetlinkMessage::DelLink(link_message(index)),
            0,
            &format!("delete link {index}"),
        )
    }

    /// Delete the link called `name`; Ok(false) if there was none.
    pub fn delete_link_by_name(&mut self, name: &str) -> Result<bool> {
        validate_ifname(name)?;
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(
            RouteNetlinkMessage::DelLink(m),
            0,
            &format!("delete link {name}"),
        ) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Wait until the link is operationally up (see `Link::oper_up`) and return it. Listens
    /// to the kernel's link notifications instead of polling, so it returns as soon as the
    /// carrier comes up, and fails with `Error::Timeout` after `timeout`.
    pub fn wait_oper_up(&mut self, index: u32, timeout: Duration) -> Result<Link> {
        let op = format!("wait for link {index} to come up");
        let deadline = Instant::now() + timeout;
        // Subscribe before reading the current state, so no transition falls in between.
        let sub = self.netns().run_in(open_socket)??;
        sub.add_membership(RTNLGRP_LINK)
            .map_err(|e| Error::io(format!("{op}: subscribe to link notifications"), e))?;
        let not_found = || Error::NotFound {
            op: op.clone(),
            what: format!("link {index}"),
        };
        let link = self.link_by_index(index)?.ok_or_else(not_found)?;
        if link.oper_up {
            return Ok(link);
        }
        loop {
            let more = set_recv_deadline(&sub, deadline)
                .map_err(|e| Error::io(format!("{op}: set receive timeout"), e))?;
            if !more {
                return Err(Error::Timeout { op, timeout });
            }
            let batch = match recv_batch(&sub, None, &op) {
                Ok(b) => b,
                Err(e) if matches!(e.errno(), Some(nix::libc::EAGAIN)) => {
                    return Err(Error::Timeout { op, timeout })
                }
                // ENOBUFS: notifications were dropped; the current state is the truth.
                Err(e) if matches!(e.errno(), Some(nix::libc::ENOBUFS)) => {
                    let link = self.link_by_index(index)?.ok_or_else(not_found)?;
                    if link.oper_up {
                        return Ok(link);
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            for (_, payload) in batch {
                match payload {
                    netlink_packet_core::NetlinkPayload::InnerMessage(
                        RouteNetlinkMessage::NewLink(m),
                    ) if m.header.index == index => {
                        let link = Link::from_message(&m);
                        if link.oper_up {
                            return Ok(link);
                        }
                    }
                    netlink_packet_core::NetlinkPayload::InnerMessage(
                        RouteNetlinkMessage::DelLink(m),
                    ) if m.header.index == index => return Err(not_found()),
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifname_rules_match_the_kernel() {
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("veth0123456789a").is_ok()); // 15 bytes
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "veth0123456789ab"] {
            assert!(validate_ifname(bad).is_err(), "{bad:?} accepted");
        }
    }
}
