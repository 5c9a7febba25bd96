//! Address ranges: what may be handed out from a subnet. Pure arithmetic, no I/O.

use crate::error::{Error, Result};
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One allocatable range inside a subnet. `start..=end` excludes the network address, the
/// IPv4 broadcast address and (at allocation time) the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub subnet: IpNet,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: IpAddr,
}

/// A set of ranges of one family; one address is allocated per set (dual stack = two sets).
pub type RangeSet = Vec<Range>;

pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

pub fn from_u128(v: u128, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(v as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

impl Range {
    /// Builds a range, checking every bound against the subnet. `field` names the config
    /// path in errors (e.g. `ipam.ranges[0][1]`).
    pub fn new(
        field: &str,
        subnet: IpNet,
        start: Option<IpAddr>,
        end: Option<IpAddr>,
        gateway: Option<IpAddr>,
    ) -> Result<Range> {
        if subnet.addr() != subnet.network() {
            return Err(Error::invalid_config(
                &format!("{field}.subnet"),
                format!(
                    "{subnet} has host bits set (did you mean {}?)",
                    subnet.trunc()
                ),
            ));
        }
        let max_prefix = if subnet.addr().is_ipv4() { 30 } else { 126 };
        if subnet.prefix_len() > max_prefix {
            return Err(Error::invalid_config(
                &format!("{field}.subnet"),
                format!(
                    "{subnet} is too small: a pod subnet needs a gateway and at least one address"
                ),
            ));
        }
        let net = to_u128(subnet.network());
        let last = to_u128(subnet.broadcast());
        let first_usable = net + 1;
        // IPv4 keeps its broadcast address out; IPv6 has none.
        let last_usable = if subnet.addr().is_ipv4() {
            last - 1
        } else {
            last
        };
        let inside = |name: &str, ip: IpAddr| -> Result<u128> {
            let v = to_u128(ip);
            if ip.is_ipv4() != subnet.addr().is_ipv4() || v < first_usable || v > last_usable {
                return Err(Error::invalid_config(
                    &format!("{field}.{name}"),
                    format!("{ip} is not a usable address of subnet {subnet}"),
                ));
            }
            Ok(v)
        };
        let gateway = match gateway {
            Some(g) => {
                inside("gateway", g)?;
                g
            }
            None => from_u128(first_usable, subnet.addr()),
        };
        let s = match start {
            Some(ip) => inside("rangeStart", ip)?,
            None => first_usable,
        };
        let e = match end {
            Some(ip) => inside("rangeEnd", ip)?,
            None => last_usable,
        };
        if s > e {
            return Err(Error::invalid_config(
                &format!("{field}.rangeStart"),
                format!(
                    "{} is after rangeEnd {}",
                    from_u128(s, subnet.addr()),
                    from_u128(e, subnet.addr())
                ),
            ));
        }
        Ok(Range {
            subnet,
            start: from_u128(s, subnet.addr()),
            end: from_u128(e, subnet.addr()),
            gateway,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.start.is_ipv4()
            && (to_u128(self.start)..=to_u128(self.end)).contains(&to_u128(ip))
    }

    fn overlaps(&self, other: &Range) -> bool {
        self.start.is_ipv4() == other.start.is_ipv4()
            && to_u128(self.start) <= to_u128(other.end)
            && to_u128(other.start) <= to_u128(self.end)
    }
}

/// Every range set must be one family, and no two ranges anywhere may overlap.
pub fn validate_sets(sets: &[RangeSet]) -> Result<()> {
    let all: Vec<(usize, usize, &Range)> = sets
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.iter().enumerate().map(move |(j, r)| (i, j, r)))
        .collect();
    for (i, set) in sets.iter().enumerate() {
        if set.is_empty() {
            return Err(Error::invalid_config(
                &format!("ipam.ranges[{i}]"),
                "empty range set",
            ));
        }
        if set
            .iter()
            .any(|r| r.start.is_ipv4() != set[0].start.is_ipv4())
        {
            return Err(Error::invalid_config(
                &format!("ipam.ranges[{i}]"),
                "mixes IPv4 and IPv6 ranges; put each family in its own range set",
            ));
        }
    }
    for (a, (i, j, r)) in all.iter().enumerate() {
        for (k, l, o) in &all[a + 1..] {
            if r.overlaps(o) {
                return Err(Error::invalid_config(
                    &format!("ipam.ranges[{k}][{l}]"),
                    format!(
                        "{}-{} overlaps ranges[{i}][{j}] {}-{}",
                        o.start, o.end, r.start, r.end
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Candidate addresses of a set in round-robin order: starting just after `last`
/// (the most recently handed out address) and wrapping, so a freed address is reused as
/// late as possible (stale conntrack entries for it have time to expire).
pub fn candidates(set: &RangeSet, last: Option<IpAddr>) -> impl Iterator<Item = IpAddr> + '_ {
    // Flatten the set into (range index, offset) positions and rotate.
    let sizes: Vec<u128> = set
        .iter()
        .map(|r| to_u128(r.end) - to_u128(r.start) + 1)
        .collect();
    let total: u128 = sizes.iter().sum();
    let pos_of = |ip: IpAddr| -> Option<u128> {
        let mut base = 0u128;
        for (r, size) in set.iter().zip(&sizes) {
            if r.contains(ip) {
                return Some(base + to_u128(ip) - to_u128(r.start));
            }
            base += size;
        }
        None
    };
    let first = last.and_then(pos_of).map(|p| (p + 1) % total).unwrap_or(0);
    let at = move |pos: u128| -> IpAddr {
        let mut rest = pos;
        for (r, size) in set.iter().zip(&sizes) {
            if rest < *size {
                return from_u128(to_u128(r.start) + rest, r.start);
            }
            rest -= size;
        }
        set[0].start
    };
    (0..total).map(move |i| at((first + i) % total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Range {
        Range::new("ipam", s.parse().unwrap(), None, None, None).unwrap()
    }

    #[test]
    fn defaults_skip_network_gateway_broadcast() {
        let x = r("10.244.1.0/24");
        assert_eq!(x.start.to_string(), "10.244.1.1");
        assert_eq!(x.end.to_string(), "10.244.1.254");
        assert_eq!(x.gateway.to_string(), "10.244.1.1");
    }

    #[test]
    fn errors_name_the_field() {
        let e = Range::new(
            "ipam",
            "10.0.0.0/24".parse().unwrap(),
            Some("10.0.1.5".parse().unwrap()),
            None,
            None,
        )
        .unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("ipam.rangeStart"), "{e}");
        let e = Range::new("ipam", "10.0.0.5/24".parse().unwrap(), None, None, None).unwrap_err();
        assert!(e.msg.contains("host bits"), "{e}");
        assert!(Range::new("ipam", "10.0.0.0/31".parse().unwrap(), None, None, None).is_err());
    }

    #[test]
    fn round_robin_wraps_across_ranges() {
        let set = vec![
            Range::new(
                "a",
                "10.0.0.0/29".parse().unwrap(),
                Some("10.0.0.5".parse().unwrap()),
                None,
                None,
            )
            .unwrap(),
            Range::new(
                "b",
                "10.0.1.0/29".parse().unwrap(),
                None,
                Some("10.0.1.2".parse().unwrap()),
                None,
            )
            .unwrap(),
        ];
        let c: Vec<String> = candidates(&set, Some("10.0.0.6".parse().unwrap()))
            .map(|i| i.to_string())
            .collect();
        assert_eq!(c, ["10.0.1.1", "10.0.1.2", "10.0.0.5", "10.0.0.6"]);
    }

    #[test]
    fn overlap_and_family_mix_rejected() {
        assert!(validate_sets(&[vec![r("10.0.0.0/24")], vec![r("10.0.0.0/25")]]).is_err());
        assert!(validate_sets(&[vec![r("10.0.0.0/24"), r("fd00::/64")]]).is_err());
        assert!(validate_sets(&[vec![r("10.0.0.0/24")], vec![r("fd00::/64")]]).is_ok());
    }
}
