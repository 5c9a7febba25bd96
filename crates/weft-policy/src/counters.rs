//! Denied packets per policy and rule from the kernel's own counters, always on (no
//! nflog, no flag).
//!
//! The table counts as data, with no rule per policy: the row maps (`egress`,
//! `ingress`) and the isolated sets (`egress-isolated`, `ingress-isolated`) are declared
//! with `counter`, so the kernel keeps a counter per element.
//! - A row element denies for one rule, or for isolation, or allows (rows are split by
//!   the deciding rule, [`crate::rows::Denial`]): its counter, for an element that sends
//!   packets to the Admin or Baseline deny chain, is that rule's denials.
//! - The NetworkPolicy deny chain looks the packet's subject class up in the isolated
//!   set: its counter is that class's denials by isolation, counted once under each
//!   NetworkPolicy that isolates it (as [`crate::denials::explain`] counts a logged one).
//!
//! What an element stands for comes from the compiled rows and classes
//! ([`Attribution`]), which are the matcher's answers: one source of truth. Elements come
//! and go with changes (a removed element takes its count with it), so [`Tally`] keeps
//! the last reading of each element and adds what grew; the agent reads before every
//! change it applies, so nothing counted under the old table is lost or misattributed.

use std::collections::BTreeMap;

use weft_nft::{Key, Value};

use crate::compile::{Compiled, Direction2};
use crate::denials::{Counters, Culprit};
use crate::desired::{isolated_set_name, subject_mark, verdict_map, NodeContext, DIRECTIONS};
use crate::enforcer::Enforcer;
use crate::error::Result;
use crate::model::{Direction, PolicyId};
use crate::rows::Row;
use crate::view::Cluster;

/// Which counting element stands for what, per direction: the rows by id and, per
/// subject class mark, the NetworkPolicies that isolate it.
#[derive(Debug, Clone, Default)]
pub struct Attribution {
    rows: BTreeMap<Direction, BTreeMap<u32, Row>>,
    isolating: BTreeMap<Direction, BTreeMap<u32, Vec<PolicyId>>>,
}

impl Attribution {
    /// For the table [`crate::desired::desired`] compiles from `cluster`.
    pub fn new(cluster: &Cluster, ctx: &NodeContext) -> Attribution {
        let c = Compiled::new(cluster, ctx, None);
        let mut a = Attribution::default();
        for dir in DIRECTIONS {
            a.set(dir, c.dir(dir));
        }
        a
    }

    pub(crate) fn set(&mut self, dir: Direction, d: &Direction2) {
        self.set_parts(dir, &d.rows, &d.isolating);
    }

    pub(crate) fn set_parts(
        &mut self,
        dir: Direction,
        rows: &BTreeMap<u32, Row>,
        isolating: &BTreeMap<u32, Vec<PolicyId>>,
    ) {
        self.rows.insert(dir, rows.clone());
        let by_mark = isolating
            .iter()
            .map(|(sid, ps)| (subject_mark(*sid), ps.clone()))
            .collect();
        self.isolating.insert(dir, by_mark);
    }

    /// What a row element's packets count against: the rule its denial names, nothing
    /// for isolation (the isolated set counts it) or for an element that allows.
    fn row_culprit(&self, dir: Direction, key: &Key) -> Option<&Culprit> {
        let [Value::Mark(id), Value::Proto(proto), Value::Port(port)] = key.0.as_slice() else {
            return None;
        };
        let row = self.rows.get(&dir)?.get(id)?;
        row.iter()
            .find(|(((plo, phi), (lo, hi)), _)| {
                plo <= proto && proto <= phi && lo <= port && port <= hi
            })
            .and_then(|(_, denial)| denial.rule.as_ref())
    }

    fn isolation_culprits(&self, dir: Direction, key: &Key) -> Vec<Culprit> {
        let [Value::Mark(mark)] = key.0.as_slice() else {
            return Vec::new();
        };
        self.isolating
            .get(&dir)
            .and_then(|m| m.get(mark))
            .map(|ps| {
                ps.iter()
                    .map(|p| Culprit {
                        policy: p.to_string(),
                        direction: dir,
                        rule: "isolation".into(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Which counting set an element is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Row,
    Isolated,
}

/// One reading of the kernel's counting elements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reading {
    elems: BTreeMap<(Direction, Kind, Key), u64>,
}

impl Reading {
    /// Reads the row maps and isolated sets of the Enforcer's namespace; an empty reading
    /// when the table does not exist yet.
    pub fn read(enforcer: &mut Enforcer) -> Result<Reading> {
        let mut elems = BTreeMap::new();
        for dir in DIRECTIONS {
            for (kind, set) in [
                (Kind::Row, verdict_map(dir)),
                (Kind::Isolated, isolated_set_name(dir)),
            ] {
                for (key, n) in enforcer.read_counters(&set)?.unwrap_or_default() {
                    elems.insert((dir, kind, key), n);
                }
            }
        }
        Ok(Reading { elems })
    }

    /// Packets counted by every element, for tests and figures.
    pub fn total(&self) -> u64 {
        self.elems.values().sum()
    }
}

/// Denials per policy and rule since the first reading, across table changes.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    last: Reading,
    pub counters: Counters,
}

impl Tally {
    /// Adds what each element counted since the last reading, attributed by `attr` (the
    /// table those elements belong to); returns whether any count changed. An element
    /// that is new, or was replaced (its count went down), counts from zero.
    pub fn observe(&mut self, now: Reading, attr: &Attribution) -> bool {
        let mut changed = false;
        for ((dir, kind, key), n) in &now.elems {
            let before = self.last.elems.get(&(*dir, *kind, key.clone())).copied();
            let grew = match before {
                Some(b) if b <= *n => n - b,
                _ => *n,
            };
            if grew == 0 {
                continue;
            }
            let culprits = match kind {
                Kind::Row => attr.row_culprit(*dir, key).cloned().into_iter().collect(),
                Kind::Isolated => attr.isolation_culprits(*dir, key),
            };
            for c in &culprits {
                self.counters.add_n(c, grew);
                changed = true;
            }
        }
        self.last = now;
        changed
    }
}
