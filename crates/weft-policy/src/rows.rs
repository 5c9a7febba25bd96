//! One (subject, peer) pair's denials over protocols and ports: the matcher asked once per
//! port region ([`Cells::ports`]), neighbouring regions denied alike merged.

use crate::cells::{Cells, PortRange, OTHER_PROTOCOLS, PORT_PROTOCOLS};
use crate::decision::{Reason, Verdict};
use crate::denials::{rule_culprit, Culprit};
use crate::matcher::{decide, Applicable, Remote};
use crate::model::{Protocol, Tier};
use crate::view::Cluster;

/// One region of protocols and ports: `(protocols, ports)`, both inclusive.
pub type Service = ((u8, u8), PortRange);

/// Who denies a region: the tier (the deny chain the packet goes to) and, when a rule
/// decided, that rule. Rows with the same verdicts but different deciding rules are
/// different rows, so each element of the row map, whose counter the kernel keeps,
/// denies for one rule. NetworkPolicy isolation (no rule decides) is counted per subject
/// class instead ([`crate::desired::isolated_set`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Denial {
    pub tier: Tier,
    pub rule: Option<Culprit>,
}

impl Denial {
    /// What a denying verdict is counted as; `None` when it allows.
    pub fn of(v: &Verdict) -> Option<Denial> {
        let tier = v.denying_tier()?;
        let rule = match &v.reason {
            Reason::Rule { rule, .. } => Some(rule_culprit(rule)),
            _ => None,
        };
        Some(Denial { tier, rule })
    }
}

/// A class pair's denials, shared by every pair with the same answers.
pub type Row = std::sync::Arc<Vec<(Service, Denial)>>;

/// The denied (service region, denial) list for `a`'s pod and one peer, merged along
/// ports.
pub fn denials(
    cluster: &Cluster,
    cells: &Cells,
    a: &Applicable,
    remote: Remote,
) -> Vec<(Service, Denial)> {
    let mut row: Vec<(Service, Denial)> = Vec::new();
    for proto in PORT_PROTOCOLS {
        let n = proto.number();
        for &(lo, hi) in &cells.ports[&proto] {
            let v = decide(cluster, a, remote, lo, proto);
            if let Some(tier) = Denial::of(&v) {
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
    if let Some(tier) = Denial::of(&decide(cluster, a, remote, 0, Protocol::Other(1))) {
        for p in OTHER_PROTOCOLS {
            row.push(((p, (0, u16::MAX)), tier.clone()));
        }
    }
    merge_protocols(row)
}

/// Joins neighbouring protocols denied on every port alike, so a peer denied everything
/// is one element rather than seven.
fn merge_protocols(mut row: Vec<(Service, Denial)>) -> Vec<(Service, Denial)> {
    const ALL_PORTS: PortRange = (0, u16::MAX);
    row.sort();
    let mut out: Vec<(Service, Denial)> = Vec::with_capacity(row.len());
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
        let np = || Denial {
            tier: Tier::NetworkPolicy,
            rule: None,
        };
        let row = vec![
            (((6, 6), all), np()),
            (((17, 17), (0, 79)), np()),
            (((0, 5), all), np()),
            (((7, 16), all), np()),
        ];
        assert_eq!(
            merge_protocols(row),
            vec![(((0, 16), all), np()), (((17, 17), (0, 79)), np())]
        );
    }
}
