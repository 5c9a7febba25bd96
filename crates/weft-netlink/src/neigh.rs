//! ARP/NDP neighbours and the bridge forwarding database (FDB). The VXLAN backend programs
//! both: a neighbour entry maps a remote VTEP's inner IP to its MAC, an FDB entry on the
//! vxlan device maps that MAC to the remote node's underlay IP.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::addr::family_of;
use crate::error::Result;
use crate::mac::mac_to_string;
use crate::socket::Handle;

/// An ARP (IPv4) or NDP (IPv6) entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Neighbour {
    pub index: u32,
    pub ip: IpAddr,
    pub mac: [u8; 6],
    /// NUD_PERMANENT: never expires nor is re-resolved.
    pub permanent: bool,
}

/// A bridge FDB entry: frames for `mac` leave through link `index`; on a vxlan device,
/// encapsulated towards the VTEP `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FdbEntry {
    pub index: u32,
    pub mac: [u8; 6],
    pub dst: Option<IpAddr>,
    /// Static (NUD_PERMANENT or NUD_NOARP), not learned.
    pub permanent: bool,
}

fn state_for(permanent: bool) -> NeighbourState {
    if permanent {
        NeighbourState::Permanent
    } else {
        NeighbourState::Reachable
    }
}

fn ip_of(a: &NeighbourAddress) -> Option<IpAddr> {
    match a {
        NeighbourAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        NeighbourAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        // AF_BRIDGE messages carry the VTEP address untyped; its length tells the family.
        NeighbourAddress::Other(b) => match b.len() {
            4 => <[u8; 4]>::try_from(b.as_slice())
                .ok()
                .map(|o| IpAddr::V4(Ipv4Addr::from(o))),
            16 => <[u8; 16]>::try_from(b.as_slice())
                .ok()
                .map(|o| IpAddr::V6(Ipv6Addr::from(o))),
            _ => None,
        },
        _ => None,
    }
}

fn lladdr_and_dst(m: &NeighbourMessage) -> (Option<[u8; 6]>, Option<IpAddr>) {
    let mut mac = None;
    let mut dst = None;
    for attr in &m.attributes {
        match attr {
            NeighbourAttribute::LinkLayerAddress(b) => mac = <[u8; 6]>::try_from(b.as_slice()).ok(),
            NeighbourAttribute::Destination(a) => dst = ip_of(a),
            _ => {}
        }
    }
    (mac, dst)
}

fn neighbour_message(family: AddressFamily, index: u32, state: NeighbourState) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family;
    m.header.ifindex = index;
    m.header.state = state;
    m
}

fn fdb_message(e: &FdbEntry) -> NeighbourMessage {
    let mut m = neighbour_message(AddressFamily::Bridge, e.index, state_for(e.permanent));
    // NTF_SELF: the entry belongs to the device itself (the vxlan device's own table),
    // not to the bridge it may be enslaved to.
    m.header.flags = NeighbourFlags::Own;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(e.mac.to_vec()));
    if let Some(dst) = e.dst {
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::from(dst)));
    }
    m
}

fn describe_fdb(e: &FdbEntry) -> String {
    let mut s = format!("fdb entry {} dev {}", mac_to_string(&e.mac), e.index);
    if let Some(dst) = e.dst {
        s.push_str(&format!(" dst {dst}"));
    }
    s
}

impl Handle {
    /// ARP and NDP entries that have a link-layer address, on one link or all.
    pub fn neighbours(&mut self, index: Option<u32>) -> Result<Vec<Neighbour>> {
        let answers = self.dump(
            RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
            "list neighbours",
        )?;
        Ok(answers
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n)
                    if matches!(n.header.family, AddressFamily::Inet | AddressFamily::Inet6) =>
                {
                    let (mac, ip) = lladdr_and_dst(n);
                    Some(Neighbour {
                        index: n.header.ifindex,
                        ip: ip?,
                        mac: mac?,
                        permanent: n.header.state == NeighbourState::Permanent,
                    })
                }
                _ => None,
            })
            .filter(|n| index.is_none_or(|i| n.index == i))
            .collect())
    }

    /// Create or overwrite the entry for `n.ip` on `n.index` (permanent unless
    /// `n.permanent` is false, then reachable and subject to normal aging).
    pub fn replace_neighbour(&mut self, n: &Neighbour) -> Result<()> {
        let mut m = neighbour_message(family_of(n.ip), n.index, state_for(n.permanent));
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::from(
                n.ip,
            )));
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(n.mac.to_vec()));
        self.request(
            RouteNetlinkMessage::NewNeighbour(m),
            NLM_F_CREATE | NLM_F_REPLACE,
            &format!(
                "replace neighbour {} lladdr {} dev {}",
                n.ip,
                mac_to_string(&n.mac),
                n.index
            ),
        )
    }

    /// Delete the entry for `n.ip` on `n.index` (the MAC is not compared).
    pub fn del_neighbour(&mut self, n: &Neighbour) -> Result<()> {
        let mut m = neighbour_message(family_of(n.ip), n.index, NeighbourState::None);
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::from(
                n.ip,
            )));
        self.request(
            RouteNetlinkMessage::DelNeighbour(m),
            0,
            &format!("delete neighbour {} dev {}", n.ip, n.index),
        )
    }

    /// Bridge FDB entries (AF_BRIDGE), on one link or all; includes the bridge's own
    /// entries and learned ones.
    pub fn fdb(&mut self, index: Option<u32>) -> Result<Vec<FdbEntry>> {
        let answers = self.dump(
            RouteNetlinkMessage::GetNeighbour(neighbour_message(
                AddressFamily::Bridge,
                0,
                NeighbourState::None,
            )),
            "list fdb entries",
        )?;
        Ok(answers
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n)
                    if n.header.family == AddressFamily::Bridge =>
                {
                    let (mac, dst) = lladdr_and_dst(n);
                    Some(FdbEntry {
                        index: n.header.ifindex,
                        mac: mac?,
                        dst,
                        permanent: matches!(
                            n.header.state,
                            NeighbourState::Permanent | NeighbourState::Noarp
                        ),
                    })
                }
                _ => None,
            })
            .filter(|e| index.is_none_or(|i| e.index == i))
            .collect())
    }

    /// Create or overwrite the FDB entry for `e.mac` on the device `e.index` (NTF_SELF), as
    /// `bridge fdb replace MAC dev DEV dst IP` does.
    pub fn replace_fdb(&mut self, e: &FdbEntry) -> Result<()> {
        self.request(
            RouteNetlinkMessage::NewNeighbour(fdb_message(e)),
            NLM_F_CREATE | NLM_F_REPLACE,
            &format!("replace {}", describe_fdb(e)),
        )
    }

    /// Add one more destination for `e.mac` (`bridge fdb append`): a vxlan device floods
    /// frames for the all-zero MAC to every destination appended for it.
    pub fn append_fdb(&mut self, e: &FdbEntry) -> Result<()> {
        self.request(
            RouteNetlinkMessage::NewNeighbour(fdb_message(e)),
            NLM_F_CREATE | NLM_F_APPEND,
            &format!("append {}", describe_fdb(e)),
        )
    }

    /// Delete the FDB entry for `e.mac` (and `e.dst`, when set) on `e.index`.
    pub fn del_fdb(&mut self, e: &FdbEntry) -> Result<()> {
        self.request(
            RouteNetlinkMessage::DelNeighbour(fdb_message(e)),
            0,
            &format!("delete {}", describe_fdb(e)),
        )
    }
}
