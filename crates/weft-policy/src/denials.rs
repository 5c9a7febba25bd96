//! Why a logged packet was dropped, and denials counted per policy.
//!
//! The kernel's table knows classes and rows, not policies: its counters are per
//! direction and tier (the deny chains). To name the policy and rule, a packet the table
//! logged ([`crate::nflog::Logged`]) is put to the matcher, the same model the table was
//! compiled from, so there is one source of truth and no second copy of any decision in
//! the datapath. The direction is the one whose chain dropped it (the log prefix), so
//! the answer is that direction's verdict.
//!
//! What is counted per denial:
//! - a rule decided (an Admin or Baseline `Deny`, a fail-closed peer): one count for that
//!   rule of that policy;
//! - NetworkPolicies isolate the pod and none allows ("isolated by P1..Pn, none
//!   allows"): one count for each isolating policy's *isolation* entry. No rule decided,
//!   every one of them would have had to allow it, so each is as responsible; the sum over
//!   policies can then exceed the packets;
//! - the matcher now allows it (the view changed between the drop and the reading):
//!   counted as `unexplained`.

use std::collections::BTreeMap;
use std::fmt;

use crate::decision::{Reason, RuleRef, Verdict};
use crate::matcher::check;
use crate::model::Direction;
use crate::nflog::Logged;
use crate::view::Cluster;
use crate::Endpoint;

/// What one denial is counted against.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Culprit {
    /// `NetworkPolicy ns/name` or `ClusterNetworkPolicy name`; empty when unexplained.
    pub policy: String,
    pub direction: Direction,
    /// `ingress[0] "name"` for a rule, `isolation` for NetworkPolicy isolation,
    /// `unexplained` when the matcher no longer denies it.
    pub rule: String,
}

impl fmt::Display for Culprit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.policy.is_empty() {
            write!(f, "{} {}", self.direction.as_str(), self.rule)
        } else {
            write!(
                f,
                "{} {} {}",
                self.policy,
                self.direction.as_str(),
                self.rule
            )
        }
    }
}

/// The culprit for a rule that decided: `ingress[0] "name"` of its policy.
pub fn rule_culprit(rule: &RuleRef) -> Culprit {
    let mut r = format!("{}[{}]", rule.direction.as_str(), rule.index);
    if let Some(n) = &rule.name {
        r.push_str(&format!(" {n:?}"));
    }
    Culprit {
        policy: rule.policy.to_string(),
        direction: rule.direction,
        rule: r,
    }
}

/// The verdict the matcher gives the dropping direction, and what it counts against.
pub fn explain(cluster: &Cluster, p: &Logged) -> (Option<Verdict>, Vec<Culprit>) {
    let d = check(
        cluster,
        &Endpoint::Ip(p.src),
        &Endpoint::Ip(p.dst),
        p.dport,
        p.proto,
    );
    let v = d.ok().map(|d| match p.direction {
        Direction::Egress => d.egress,
        Direction::Ingress => d.ingress,
    });
    let culprit = |policy: String, rule: String| Culprit {
        policy,
        direction: p.direction,
        rule,
    };
    let culprits = match v.as_ref().map(|v| (v.allowed, &v.reason)) {
        Some((false, Reason::Rule { rule, .. })) => vec![rule_culprit(rule)],
        Some((false, Reason::Isolated { policies, .. })) => policies
            .iter()
            .map(|id| culprit(id.to_string(), "isolation".into()))
            .collect(),
        _ => vec![culprit(String::new(), "unexplained".into())],
    };
    (v, culprits)
}

/// One line for the log: the packet and why it was dropped.
pub fn describe(p: &Logged, verdict: Option<&Verdict>) -> String {
    let port = if p.proto.has_ports() {
        format!("{}/{}", p.dport, p.proto)
    } else {
        p.proto.to_string()
    };
    let why = match verdict {
        Some(v) if !v.allowed => v.to_string(),
        _ => "dropped, but the current view allows it (it changed since)".into(),
    };
    format!(
        "{} -> {} {port}: {} {} {why}",
        p.src,
        p.dst,
        p.direction.as_str(),
        p.tier.as_str()
    )
}

/// Denied packets per culprit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub counts: BTreeMap<Culprit, u64>,
}

impl Counters {
    pub fn add(&mut self, culprits: &[Culprit]) {
        for c in culprits {
            self.add_n(c, 1);
        }
    }

    pub fn add_n(&mut self, culprit: &Culprit, n: u64) {
        *self.counts.entry(culprit.clone()).or_default() += n;
    }

    /// Tab-separated `packets policy direction rule` lines, the agent's counters file.
    pub fn to_tsv(&self) -> String {
        let mut s = String::from("# packets\tpolicy\tdirection\trule\n");
        for (c, n) in &self.counts {
            s.push_str(&format!(
                "{n}\t{}\t{}\t{}\n",
                c.policy,
                c.direction.as_str(),
                c.rule
            ));
        }
        s
    }

    /// Reads [`Counters::to_tsv`]'s output back; a malformed line is an error naming it.
    pub fn from_tsv(text: &str) -> Result<Counters, String> {
        let mut out = Counters::default();
        for (i, line) in text.lines().enumerate() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let bad = || {
                format!(
                    "line {}: not `packets<TAB>policy<TAB>direction<TAB>rule` (got {line:?})",
                    i + 1
                )
            };
            let f: Vec<&str> = line.split('\t').collect();
            let [n, policy, dir, rule] = f.as_slice() else {
                return Err(bad());
            };
            let n: u64 = n.parse().map_err(|_| bad())?;
            let direction = match *dir {
                "egress" => Direction::Egress,
                "ingress" => Direction::Ingress,
                _ => return Err(bad()),
            };
            out.counts.insert(
                Culprit {
                    policy: (*policy).into(),
                    direction,
                    rule: (*rule).into(),
                },
                n,
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_read_back() {
        let mut c = Counters::default();
        let a = Culprit {
            policy: "NetworkPolicy x/deny".into(),
            direction: Direction::Ingress,
            rule: "isolation".into(),
        };
        c.add(&[a.clone(), a]);
        c.add(&[Culprit {
            policy: "ClusterNetworkPolicy block".into(),
            direction: Direction::Egress,
            rule: "egress[1] \"no-dns\"".into(),
        }]);
        assert_eq!(Counters::from_tsv(&c.to_tsv()).unwrap(), c);
        let err = Counters::from_tsv("x\tNetworkPolicy a/b\tingress\tisolation").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
    }
}
