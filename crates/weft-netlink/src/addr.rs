//! Interface addresses (RTM_NEWADDR / RTM_DELADDR / RTM_GETADDR).

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::{Error, Result};
use crate::socket::Handle;

/// An address on an interface: `net` is the address with its prefix length
/// (10.244.1.5/24), as `ip addr` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Addr {
    pub index: u32,
    pub net: IpNet,
}

pub(crate) fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn address_message(index: u32, net: IpNet) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = family_of(net.addr());
    m.header.prefix_len = net.prefix_len();
    m.header.index = index;
    // IFA_LOCAL is the interface's own address, IFA_ADDRESS the peer (or the same on
    // broadcast links); iproute2 sends both, and IPv4 needs IFA_LOCAL to be set.
    m.attributes.push(AddressAttribute::Local(net.addr()));
    m.attributes.push(AddressAttribute::Address(net.addr()));
    m
}

fn addr_from_message(m: &AddressMessage) -> Option<Addr> {
    let mut local = None;
    let mut address = None;
    for attr in &m.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    let ip = local.or(address)?;
    let net = IpNet::new(ip, m.header.prefix_len).ok()?;
    Some(Addr {
        index: m.header.index,
        net,
    })
}

impl Handle {
    /// Addresses of both families, on one link or all.
    pub fn addrs(&mut self, index: Option<u32>) -> Result<Vec<Addr>> {
        let op = match index {
            Some(i) => format!("list addresses of link {i}"),
            None => "list addresses".to_string(),
        };
        let answers = self.dump(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            &op,
        )?;
        Ok(answers
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => addr_from_message(a),
                _ => None,
            })
            .filter(|a| index.is_none_or(|i| a.index == i))
            .collect())
    }

    /// Add `net` to a link. Already present: `is_exists()`.
    pub fn add_addr(&mut self, index: u32, net: IpNet) -> Result<()> {
        self.add_addr_flags(index, net, AddressFlags::empty())
    }

    /// Add an IPv6 address without duplicate address detection, so it is usable at once
    /// instead of "tentative" for a second or more (pod addresses are unique by IPAM).
    pub fn add_addr_nodad(&mut self, index: u32, net: IpNet) -> Result<()> {
        self.add_addr_flags(index, net, AddressFlags::Nodad)
    }

    fn add_addr_flags(&mut self, index: u32, net: IpNet, flags: AddressFlags) -> Result<()> {
        if index == 0 {
            return Err(Error::invalid(format!("address {net}"), "link index 0"));
        }
        let mut m = address_message(index, net);
        if !flags.is_empty() {
            // The header has room for the low 8 flag bits; the attribute carries all 32.
            m.header.flags = AddressHeaderFlags::from_bits_retain(flags.bits() as u8);
            m.attributes.push(AddressAttribute::Flags(flags));
        }
        self.request(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
            &format!("add address {net} to link {index}"),
        )
    }

    /// Remove `net` from a link. Not present: `is_not_found()`.
    pub fn del_addr(&mut self, index: u32, net: IpNet) -> Result<()> {
        self.request(
            RouteNetlinkMessage::DelAddress(address_message(index, net)),
            0,
            &format!("delete address {net} from link {index}"),
        )
    }
}
