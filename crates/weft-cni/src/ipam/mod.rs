//! weft's IPAM: per-network address allocation, durable and safe across processes.
//!
//! The allocation logic works on an in-memory [`State`] (pure, unit-tested); [`Ipam`] wraps
//! it in the store's lock-read-modify-write-fsync transaction.

pub mod range;
pub mod store;

use crate::error::{code, Error, Result};
use range::{candidates, Range, RangeSet};
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;
pub use store::{Allocation, Durability, State, Store};

/// One address handed to an interface, with the range it came from (subnet, gateway).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: IpAddr,
    pub range: Range,
}

fn set_key(set: &RangeSet) -> String {
    set[0].subnet.to_string()
}

fn range_of(sets: &[RangeSet], ip: IpAddr) -> Option<(usize, &Range)> {
    sets.iter()
        .enumerate()
        .find_map(|(i, s)| s.iter().find(|r| r.contains(ip)).map(|r| (i, r)))
}

/// Allocates one address from each range set for `(container_id, ifname)`.
///
/// Asking again for the same attachment returns what it already holds, so a runtime that
/// retries an ADD does not leak addresses. `requested` pins addresses (CNI_ARGS `IP=` or
/// `runtimeConfig.ips`); each must fall in one of the sets.
pub fn allocate_in(
    state: &mut State,
    sets: &[RangeSet],
    container_id: &str,
    ifname: &str,
    requested: &[IpAddr],
) -> Result<Vec<Lease>> {
    let held: Vec<IpAddr> = state
        .allocations
        .iter()
        .filter(|a| a.container_id == container_id && a.ifname == ifname)
        .map(|a| a.ip)
        .collect();
    if !held.is_empty() {
        let leases: Option<Vec<Lease>> = held
            .iter()
            .map(|ip| {
                range_of(sets, *ip).map(|(_, r)| Lease {
                    ip: *ip,
                    range: r.clone(),
                })
            })
            .collect();
        if let Some(l) = leases.filter(|l| l.len() == sets.len()) {
            return Ok(l);
        }
        // The config changed under an existing attachment: start it afresh.
        state
            .allocations
            .retain(|a| !(a.container_id == container_id && a.ifname == ifname));
    }
    let mut pinned: Vec<Option<IpAddr>> = vec![None; sets.len()];
    for ip in requested {
        match range_of(sets, *ip) {
            Some((i, _)) if pinned[i].is_none() => pinned[i] = Some(*ip),
            Some(_) => {
                return Err(Error::new(
                    code::INVALID_CONFIG,
                    format!("two requested addresses fall in one range set (second: {ip})"),
                ))
            }
            None => {
                return Err(Error::new(
                    code::REQUESTED_UNAVAILABLE,
                    format!("requested address {ip} is in none of the configured ranges"),
                ))
            }
        }
    }
    let taken: HashSet<IpAddr> = state.allocations.iter().map(|a| a.ip).collect();
    let mut leases = Vec::with_capacity(sets.len());
    for (i, set) in sets.iter().enumerate() {
        let gateways: HashSet<IpAddr> = set.iter().map(|r| r.gateway).collect();
        let ip = match pinned[i] {
            Some(ip) if taken.contains(&ip) || gateways.contains(&ip) => {
                return Err(Error::new(
                    code::REQUESTED_UNAVAILABLE,
                    format!("requested address {ip} is already in use"),
                ))
            }
            Some(ip) => ip,
            None => candidates(set, state.last.get(&set_key(set)).copied())
                .find(|ip| !taken.contains(ip) && !gateways.contains(ip))
                .ok_or_else(|| {
                    let subnets: Vec<String> = set.iter().map(|r| r.subnet.to_string()).collect();
                    Error::new(
                        code::RANGE_EXHAUSTED,
                        format!("no free address left in range set {}", subnets.join(", ")),
                    )
                    .with_details("every address is allocated; delete pods or widen the range")
                })?,
        };
        let (_, range) =
            range_of(sets, ip).ok_or_else(|| Error::new(code::IO, "range vanished"))?;
        leases.push(Lease {
            ip,
            range: range.clone(),
        });
    }
    for l in &leases {
        let set_idx = range_of(sets, l.ip).map(|(i, _)| i).unwrap_or(0);
        state.last.insert(set_key(&sets[set_idx]), l.ip);
        state.allocations.push(Allocation {
            ip: l.ip,
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
        });
    }
    Ok(leases)
}

/// The persistent allocator for one network.
pub struct Ipam {
    store: Store,
}

impl Ipam {
    pub fn open(data_dir: &Path, network: &str) -> Result<Ipam> {
        Ok(Ipam {
            store: Store::open(data_dir, network)?,
        })
    }

    pub fn allocate(
        &self,
        sets: &[RangeSet],
        container_id: &str,
        ifname: &str,
        requested: &[IpAddr],
    ) -> Result<Vec<Lease>> {
        self.store.transact(Durability::Synced, |s| {
            allocate_in(s, sets, container_id, ifname, requested)
        })
    }

    /// Releases the attachment's addresses; releasing nothing is fine (DEL is idempotent).
    pub fn release(&self, container_id: &str, ifname: &str) -> Result<Vec<IpAddr>> {
        self.store.transact(Durability::Lazy, |s| {
            let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut s.allocations)
                .into_iter()
                .partition(|a| a.container_id == container_id && a.ifname == ifname);
            s.allocations = kept;
            Ok(gone.into_iter().map(|a| a.ip).collect())
        })
    }

    /// Releases every allocation whose attachment is not in `valid` (CNI GC).
    pub fn retain(&self, valid: &HashSet<(String, String)>) -> Result<Vec<Allocation>> {
        self.store.transact(Durability::Lazy, |s| {
            let (kept, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut s.allocations)
                .into_iter()
                .partition(|a| valid.contains(&(a.container_id.clone(), a.ifname.clone())));
            s.allocations = kept;
            Ok(gone)
        })
    }

    pub fn held(&self, container_id: &str, ifname: &str) -> Result<Vec<IpAddr>> {
        Ok(self
            .store
            .read()?
            .allocations
            .into_iter()
            .filter(|a| a.container_id == container_id && a.ifname == ifname)
            .map(|a| a.ip)
            .collect())
    }

    /// How many addresses each set still has free (STATUS reports 50 when one has none).
    pub fn free_counts(&self, sets: &[RangeSet]) -> Result<Vec<u128>> {
        let state = self.store.read()?;
        Ok(sets
            .iter()
            .map(|set| {
                let total: u128 = set
                    .iter()
                    .map(|r| range::to_u128(r.end) - range::to_u128(r.start) + 1)
                    .sum();
                let gws = set.iter().filter(|r| r.contains(r.gateway)).count() as u128;
                let used = state
                    .allocations
                    .iter()
                    .filter(|a| set.iter().any(|r| r.contains(a.ip)))
                    .count() as u128;
                total.saturating_sub(gws + used)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(cidr: &str) -> RangeSet {
        vec![Range::new("ipam", cidr.parse().unwrap(), None, None, None).unwrap()]
    }

    #[test]
    fn allocates_in_order_skipping_gateway_and_is_idempotent() {
        let sets = vec![set("10.244.1.0/24")];
        let mut s = State::default();
        let a = allocate_in(&mut s, &sets, "c1", "eth0", &[]).unwrap();
        let b = allocate_in(&mut s, &sets, "c2", "eth0", &[]).unwrap();
        assert_eq!(a[0].ip.to_string(), "10.244.1.2");
        assert_eq!(b[0].ip.to_string(), "10.244.1.3");
        assert_eq!(allocate_in(&mut s, &sets, "c1", "eth0", &[]).unwrap(), a);
        assert_eq!(s.allocations.len(), 2);
    }

    #[test]
    fn freed_address_is_not_reused_at_once() {
        let sets = vec![set("10.0.0.0/29")]; // .2 .. .6 usable
        let mut s = State::default();
        allocate_in(&mut s, &sets, "c1", "eth0", &[]).unwrap();
        s.allocations.clear(); // c1 released .2
        let next = allocate_in(&mut s, &sets, "c2", "eth0", &[]).unwrap();
        assert_eq!(next[0].ip.to_string(), "10.0.0.3");
    }

    #[test]
    fn exhaustion_and_requested_conflicts() {
        let sets = vec![set("10.0.0.0/30")]; // only .2
        let mut s = State::default();
        allocate_in(&mut s, &sets, "c1", "eth0", &[]).unwrap();
        let e = allocate_in(&mut s, &sets, "c2", "eth0", &[]).unwrap_err();
        assert_eq!(e.code, code::RANGE_EXHAUSTED);
        let e =
            allocate_in(&mut s, &sets, "c3", "eth0", &["10.0.0.2".parse().unwrap()]).unwrap_err();
        assert_eq!(e.code, code::REQUESTED_UNAVAILABLE);
        let e =
            allocate_in(&mut s, &sets, "c3", "eth0", &["10.9.0.2".parse().unwrap()]).unwrap_err();
        assert_eq!(e.code, code::REQUESTED_UNAVAILABLE);
    }

    #[test]
    fn dual_stack_gets_one_of_each() {
        let sets = vec![set("10.0.0.0/24"), set("fd00:10::/64")];
        let mut s = State::default();
        let l = allocate_in(&mut s, &sets, "c1", "eth0", &[]).unwrap();
        assert_eq!(l.len(), 2);
        assert!(l[0].ip.is_ipv4() && l[1].ip.is_ipv6());
        assert_eq!(l[1].ip.to_string(), "fd00:10::2");
    }
}
