//! One (subject, peer) pair's denials over protocols and ports: the matcher asked once per
//! port region ([`Cells::ports`]), neighbouring regions denied by the same tier merged.

use crate::cells::{Cells, PortRange, OTHER_PROTOCOLS, PORT_PROTOCOLS};
use crate::matcher::{decide, Applicable, Remote};
use crate::model::{Protocol, Tier};
use crate::view::Cluster;

/// One region of protocols and ports: `(protocols, ports)`, both inclusive.
pub type Service = ((u8, u8), PortRange);

/// A class pair's denials, shared by every pair with the same answers.
pub type Row = std::sync::Arc<Vec<(Service, Tier)>>;

/// The denied (service region, tier) list for `a`'s pod and one peer, merged along ports.
pub fn denials(
    cluster: &Cluster,
    cells: &Cells,
    a: &Applicable,
    remote: Remote,
) -> Vec<(Service, Tier)> {
    let mut row: Vec<(Service, Tier)> = Vec::new();
    for proto in PORT_PROTOCOLS {
        let n = proto.number();
        for &(lo, hi) in &cells.ports[&proto] {
            let v = decide(cluster, a, remote, lo, proto);
            if let Some(tier) = v.denying_tier() {
                match row.last_mut() {
                    Some((((p, _), (_, end)), t))
                        if *p == n && *t == tier && end.checked_add(1) == Some(lo) =>
                    {
                        *end = hi
                    }
                    _ => row.push((((n, n), (lo, hi)), tier)),
                }
            }
        }
    }
    if let Some(tier) = decide(cluster, a, remote, 0, Protocol::Other(1)).denying_tier() {
        for p in OTHER_PROTOCOLS {
            row.push(((p, (0, u16::MAX)), tier));
        }
    }
    merge_protocols(row)
}

/// Joins neighbouring protocols denied on every port by the same tier, so a peer denied
/// everything is one element rather than seven.
fn merge_protocols(mut row: Vec<(Service, Tier)>) -> Vec<(Service, Tier)> {
    const ALL_PORTS: PortRange = (0, u16::MAX);
    row.sort();
    let mut out: Vec<(Service, Tier)> = Vec::with_capacity(row.len());
    for (((lo, hi), ports), tier) in row {
        match out.last_mut() {
            Some((((_, phi), pports), ptier))
                if ports == ALL_PORTS
                    && *pports == ALL_PORTS
                    && *ptier == tier
                    && phi.checked_add(1) == Some(lo) =>
            {
                *phi = hi
            }
            _ => out.push((((lo, hi), ports), tier)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_denied_on_every_port_join() {
        let all = (0, u16::MAX);
        let row = vec![
            (((6, 6), all), Tier::NetworkPolicy),
            (((17, 17), (0, 79)), Tier::NetworkPolicy),
            (((0, 5), all), Tier::NetworkPolicy),
            (((7, 16), all), Tier::NetworkPolicy),
        ];
        assert_eq!(
            merge_protocols(row),
            vec![
                (((0, 16), all), Tier::NetworkPolicy),
                (((17, 17), (0, 79)), Tier::NetworkPolicy),
            ]
        );
    }
}
