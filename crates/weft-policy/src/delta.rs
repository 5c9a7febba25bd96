//! What a compile changed in the node's table, as data: the sets to replace and, for the
//! large class-keyed maps, only the elements to take out and put in. A change then costs
//! what it touches: neither the compiler nor the [`crate::enforcer::Enforcer`] copies or
//! compares a map of tens of thousands of elements to move a few hundred.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use weft_nft::{Elem, Key, Ruleset, Set};

use crate::desired::{FAMILY, TABLE};

/// The result of [`crate::desired::Incremental::update`].
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// The table is what the last update made it.
    Unchanged,
    /// A whole table: the first compile, or after a change the compiler does not follow
    /// element by element.
    Full(Ruleset),
    /// The previous table with these changes is the new one.
    Delta(Delta),
}

/// Changes to the sets of the `inet weft-policy` table; chains never change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delta {
    pub sets: BTreeMap<String, SetChange>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SetChange {
    /// The set becomes this one (the small maps: subjects, peers, rows).
    Replace(Arc<Set>),
    /// Elements with keys in `remove` go, then those in `put` are added or replaced.
    Elements {
        remove: BTreeSet<Key>,
        put: BTreeMap<Key, Elem>,
    },
}

impl SetChange {
    /// Every key whose element may differ.
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        let (remove, put) = match self {
            SetChange::Replace(_) => (None, None),
            SetChange::Elements { remove, put } => (Some(remove), Some(put)),
        };
        remove
            .into_iter()
            .flatten()
            .chain(put.into_iter().flat_map(|p| p.keys()))
    }
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Counts the elements it names (replaced sets count whole).
    pub fn elements(&self) -> usize {
        self.sets
            .values()
            .map(|c| match c {
                SetChange::Replace(s) => s.elements.len(),
                SetChange::Elements { remove, put } => remove.len() + put.len(),
            })
            .sum()
    }

    /// Applies the changes to a ruleset holding the previous table, in place: a set that
    /// nothing else shares is edited without a copy. Returns the name of a set (or the
    /// table) the ruleset lacks, which means it is not the table this delta follows.
    pub fn apply_to(&self, rs: &mut Ruleset) -> Result<(), String> {
        let table = rs
            .table_mut(FAMILY, TABLE)
            .ok_or_else(|| format!("table {TABLE}"))?;
        for (name, change) in &self.sets {
            match change {
                SetChange::Replace(set) => {
                    table.sets.insert(name.clone(), set.clone());
                }
                SetChange::Elements { remove, put } => {
                    let set = table.set_mut(name).ok_or_else(|| format!("set {name}"))?;
                    for k in remove {
                        set.elements.remove(k);
                    }
                    for (k, e) in put {
                        set.elements.insert(k.clone(), e.clone());
                    }
                }
            }
        }
        Ok(())
    }
}
