//! Routes (RTM_NEWROUTE / RTM_DELROUTE / RTM_GETROUTE), single-path, IPv4 and IPv6.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteNextHop,
    RouteProtocol, RouteScope as NlScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::addr::family_of;
use crate::error::{Error, Result};
use crate::socket::Handle;

pub const RT_TABLE_MAIN: u32 = 254;
pub const RT_TABLE_LOCAL: u32 = 255;
/// Route installed by the kernel itself (subnet routes of addresses).
pub const RTPROT_KERNEL: u8 = 2;
/// iproute2's default for routes added by hand; ours too.
pub const RTPROT_BOOT: u8 = 3;
pub const RTPROT_STATIC: u8 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
    All,
}

/// How far the destination is: `Universe` via a gateway, `Link` directly on the link,
/// `Host` this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteScope {
    #[default]
    Universe,
    Link,
    Host,
    /// Site (200) or nowhere (253), rarely seen.
    Other(u8),
}

/// The route's type (rtm_type). Listing returns all of them; callers usually want Unicast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteKind {
    #[default]
    Unicast,
    Local,
    Broadcast,
    Blackhole,
    Unreachable,
    Prohibit,
    Other(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination network; host bits must be zero (10.244.1.0/24, not 10.244.1.5/24).
    pub dst: IpNet,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    /// The gateway is reachable on `oif` even though no address covers it (RTNH_F_ONLINK):
    /// the VXLAN backend's `via 10.244.2.0 dev weft.1 onlink`.
    pub onlink: bool,
    pub scope: RouteScope,
    pub table: u32,
    /// Preferred source address (RTA_PREFSRC).
    pub src: Option<IpAddr>,
    pub protocol: u8,
    pub metric: Option<u32>,
    pub kind: RouteKind,
    /// Equal-cost next hops (RTA_MULTIPATH), each reached via `oif` when set: flows are
    /// spread over them by hash. Empty for an ordinary route.
    pub multipath: Vec<IpAddr>,
}

impl Route {
    /// A unicast route to `dst` in the main table, scope universe, protocol boot; add a
    /// gateway with `via`, a device with `dev`. A route without gateway that reaches `dst`
    /// directly on a link should say `.scope(RouteScope::Link)`, as iproute2 does for it.
    pub fn new(dst: IpNet) -> Route {
        Route {
            dst,
            gateway: None,
            oif: None,
            onlink: false,
            scope: RouteScope::Universe,
            table: RT_TABLE_MAIN,
            src: None,
            protocol: RTPROT_BOOT,
            metric: None,
            kind: RouteKind::Unicast,
            multipath: Vec::new(),
        }
    }

    /// Spreads flows over several gateways (ECMP), as a router announcing a prefix from
    /// many nodes does.
    pub fn via_each(mut self, gateways: impl IntoIterator<Item = IpAddr>) -> Route {
        self.multipath = gateways.into_iter().collect();
        self
    }

    pub fn via(mut self, gateway: IpAddr) -> Route {
        self.gateway = Some(gateway);
        self
    }

    pub fn dev(mut self, oif: u32) -> Route {
        self.oif = Some(oif);
        self
    }

    pub fn onlink(mut self) -> Route {
        self.onlink = true;
        self
    }

    pub fn scope(mut self, scope: RouteScope) -> Route {
        self.scope = scope;
        self
    }

    pub fn table(mut self, table: u32) -> Route {
        self.table = table;
        self
    }

    pub fn src(mut self, src: IpAddr) -> Route {
        self.src = Some(src);
        self
    }

    pub fn protocol(mut self, protocol: u8) -> Route {
        self.protocol = protocol;
        self
    }

    pub fn metric(mut self, metric: u32) -> Route {
        self.metric = Some(metric);
        self
    }

    pub fn kind(mut self, kind: RouteKind) -> Route {
        self.kind = kind;
        self
    }

    fn validate(&self) -> Result<()> {
        let what = || format!("route to {}", self.dst);
        if self.dst != self.dst.trunc() {
            return Err(Error::invalid(
                what(),
                format!(
                    "destination has host bits set; did you mean {}?",
                    self.dst.trunc()
                ),
            ));
        }
        let v4 = self.dst.addr().is_ipv4();
        let hops = self.multipath.iter().map(|g| ("next hop", Some(*g)));
        for (name, ip) in [("gateway", self.gateway), ("source", self.src)]
            .into_iter()
            .chain(hops)
        {
            if let Some(ip) = ip {
                if ip.is_ipv4() != v4 {
                    return Err(Error::invalid(
                        what(),
                        format!("{name} {ip} is of the other address family"),
                    ));
                }
            }
        }
        if self.table == 0 {
            return Err(Error::invalid(
                what(),
                "table 0 (unspecified) is not a table",
            ));
        }
        if self.gateway.is_some() && !self.multipath.is_empty() {
            return Err(Error::invalid(
                what(),
                "give either one gateway or several next hops, not both",
            ));
        }
        if self.kind == RouteKind::Unicast
            && self.gateway.is_none()
            && self.oif.is_none()
            && self.multipath.is_empty()
        {
            return Err(Error::invalid(
                what(),
                "a unicast route needs a gateway or an output device",
            ));
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let mut s = format!("route to {}", self.dst);
        if let Some(gw) = self.gateway {
            s.push_str(&format!(" via {gw}"));
        }
        if let Some(oif) = self.oif {
            s.push_str(&format!(" dev {oif}"));
        }
        if self.table != RT_TABLE_MAIN {
            s.push_str(&format!(" table {}", self.table));
        }
        s
    }

    /// The request for add/replace; `for_delete` widens scope, protocol and type to
    /// "any" so a route read back from the kernel, or built by hand, deletes alike.
    fn to_message(&self, for_delete: bool) -> RouteMessage {
        let mut m = RouteMessage::default();
        let h = &mut m.header;
        h.address_family = family_of(self.dst.addr());
        h.destination_prefix_length = self.dst.prefix_len();
        h.table = u8::try_from(self.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        if for_delete {
            h.scope = NlScope::NoWhere;
            h.protocol = RouteProtocol::Unspec;
            h.kind = RouteType::Unspec;
        } else {
            h.scope = scope_to_nl(self.scope);
            h.protocol = RouteProtocol::from(self.protocol);
            h.kind = kind_to_nl(self.kind);
            if self.onlink {
                h.flags = RouteFlags::Onlink;
            }
        }
        if self.dst.prefix_len() > 0 {
            m.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(
                    self.dst.addr(),
                )));
        }
        if let Some(gw) = self.gateway {
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        if let Some(oif) = self.oif {
            m.attributes.push(RouteAttribute::Oif(oif));
        }
        if !self.multipath.is_empty() {
            let hops = self
                .multipath
                .iter()
                .map(|gw| {
                    let mut hop = RouteNextHop::default();
                    hop.interface_index = self.oif.unwrap_or(0);
                    hop.attributes
                        .push(RouteAttribute::Gateway(RouteAddress::from(*gw)));
                    hop
                })
                .collect();
            m.attributes.push(RouteAttribute::MultiPath(hops));
        }
        if let Some(src) = self.src {
            m.attributes
                .push(RouteAttribute::PrefSource(RouteAddress::from(src)));
        }
        if let Some(metric) = self.metric {
            m.attributes.push(RouteAttribute::Priority(metric));
        }
        // Tables above 255 only fit in the attribute; send it always, as iproute2 does.
        m.attributes.push(RouteAttribute::Table(self.table));
        m
    }

    fn from_message(m: &RouteMessage) -> Option<Route> {
        let h = &m.header;
        let unspecified = match h.address_family {
            AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            _ => return None,
        };
        let mut r = Route::new(IpNet::new(unspecified, 0).ok()?);
        let mut dst = unspecified;
        r.table = u32::from(h.table);
        r.scope = scope_from_nl(h.scope);
        r.protocol = u8::from(h.protocol);
        r.kind = kind_from_nl(h.kind);
        r.onlink = h.flags.contains(RouteFlags::Onlink);
        for attr in &m.attributes {
            match attr {
                RouteAttribute::Destination(a) => dst = ip_of(a)?,
                RouteAttribute::Gateway(a) => r.gateway = ip_of(a),
                RouteAttribute::Oif(i) => r.oif = Some(*i),
                RouteAttribute::PrefSource(a) => r.src = ip_of(a),
                RouteAttribute::Priority(p) => r.metric = Some(*p),
                RouteAttribute::Table(t) => r.table = *t,
                RouteAttribute::MultiPath(hops) => {
                    r.multipath = hops
                        .iter()
                        .filter_map(|h| {
                            h.attributes.iter().find_map(|a| match a {
                                RouteAttribute::Gateway(g) => ip_of(g),
                                _ => None,
                            })
                        })
                        .collect()
                }
                _ => {}
            }
        }
        r.dst = IpNet::new(dst, h.destination_prefix_length).ok()?;
        Some(r)
    }
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

fn scope_to_nl(s: RouteScope) -> NlScope {
    match s {
        RouteScope::Universe => NlScope::Universe,
        RouteScope::Link => NlScope::Link,
        RouteScope::Host => NlScope::Host,
        RouteScope::Other(v) => NlScope::from(v),
    }
}

fn scope_from_nl(s: NlScope) -> RouteScope {
    match s {
        NlScope::Universe => RouteScope::Universe,
        NlScope::Link => RouteScope::Link,
        NlScope::Host => RouteScope::Host,
        other => RouteScope::Other(u8::from(other)),
    }
}

fn kind_to_nl(k: RouteKind) -> RouteType {
    match k {
        RouteKind::Unicast => RouteType::Unicast,
        RouteKind::Local => RouteType::Local,
        RouteKind::Broadcast => RouteType::Broadcast,
        RouteKind::Blackhole => RouteType::BlackHole,
        RouteKind::Unreachable => RouteType::Unreachable,
        RouteKind::Prohibit => RouteType::Prohibit,
        RouteKind::Other(v) => RouteType::from(v),
    }
}

fn kind_from_nl(k: RouteType) -> RouteKind {
    match k {
        RouteType::Unicast => RouteKind::Unicast,
        RouteType::Local => RouteKind::Local,
        RouteType::Broadcast => RouteKind::Broadcast,
        RouteType::BlackHole => RouteKind::Blackhole,
        RouteType::Unreachable => RouteKind::Unreachable,
        RouteType::Prohibit => RouteKind::Prohibit,
        other => RouteKind::Other(u8::from(other)),
    }
}

impl Handle {
    /// Routes of every table (main, local, and any other); filter on `table` and `kind`
    /// for the ones you manage. Kernel route-cache clones are left out. IPv6 routes added
    /// without a metric read back with the kernel's default, 1024.
    pub fn routes(&mut self, family: Family) -> Result<Vec<Route>> {
        let mut m = RouteMessage::default();
        m.header.address_family = match family {
            Family::V4 => AddressFamily::Inet,
            Family::V6 => AddressFamily::Inet6,
            Family::All => AddressFamily::Unspec,
        };
        let answers = self.dump(RouteNetlinkMessage::GetRoute(m), "list routes")?;
        Ok(answers
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r)
                    if !r.header.flags.contains(RouteFlags::Cloned) =>
                {
                    Route::from_message(r)
                }
                _ => None,
            })
            .collect())
    }

    /// Add a route; one with the same destination (table, metric) exists: `is_exists()`.
    pub fn add_route(&mut self, r: &Route) -> Result<()> {
        r.validate()?;
        self.request(
            RouteNetlinkMessage::NewRoute(r.to_message(false)),
            NLM_F_CREATE | NLM_F_EXCL,
            &format!("add {}", r.describe()),
        )
    }

    /// Add the route or replace the one with the same destination (table, metric).
    pub fn replace_route(&mut self, r: &Route) -> Result<()> {
        r.validate()?;
        self.request(
            RouteNetlinkMessage::NewRoute(r.to_message(false)),
            NLM_F_CREATE | NLM_F_REPLACE,
            &format!("replace {}", r.describe()),
        )
    }

    /// Delete the route matching `dst` and table, and gateway, device and metric when they
    /// are set. None matches: `is_not_found()`.
    pub fn del_route(&mut self, r: &Route) -> Result<()> {
        self.request(
            RouteNetlinkMessage::DelRoute(r.to_message(true)),
            0,
            &format!("delete {}", r.describe()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn rejects_host_bits_and_mixed_families() {
        let e = Route::new(net("10.244.1.5/24"))
            .dev(3)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("10.244.1.0/24"), "{e}");
        let mixed = Route::new(net("10.244.1.0/24")).via("fd00::1".parse().unwrap());
        assert!(mixed.validate().is_err());
        assert!(Route::new(net("10.244.1.0/24")).validate().is_err());
    }

    #[test]
    fn message_round_trips() {
        let r = Route::new(net("10.244.2.0/24"))
            .via("10.244.2.0".parse().unwrap())
            .dev(7)
            .onlink()
            .metric(100)
            .table(1000);
        let back = Route::from_message(&r.to_message(false)).unwrap();
        assert_eq!(back, r);
    }
}
