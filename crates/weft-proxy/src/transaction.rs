//! One model delta as one nf_tables transaction, in the order the kernel needs: new sets,
//! new and changed chains, element deletions and additions, then chains and sets that
//! went. Everything in one batch, so packets see the old table or the new one, never a
//! Service half moved.

use std::collections::BTreeMap;

use weft_nft::diff::Summary;
use weft_nft::expr::lower;
use weft_nft::netlink::Batch;
use weft_nft::{Chain, Elem, Family, Key, Table};

use crate::desired::TABLE;
use crate::model::Delta;

const FAMILY: Family = Family::Ip;

fn add_rules(batch: &mut Batch, c: &Chain, sum: &mut Summary) -> weft_nft::Result<()> {
    for (i, r) in c.rules.iter().enumerate() {
        batch.add_rule(FAMILY, TABLE, &c.name, &lower(r, FAMILY)?, i as u32)?;
        sum.rules_added += 1;
    }
    Ok(())
}

/// Appends `d` to `batch`; `table` is the model's table after the change.
pub fn build(batch: &mut Batch, table: &Table, d: &Delta) -> weft_nft::Result<Summary> {
    let mut sum = Summary::default();
    let empty = Table::new(FAMILY, TABLE);
    let (before, after) = match &d.structure {
        Some((b, a)) => (b, a),
        None => (&empty, &empty),
    };
    for (name, set) in &after.sets {
        if !before.sets.contains_key(name) {
            batch.add_set(FAMILY, TABLE, set)?;
            sum.sets_added += 1;
        }
    }
    // Regular chains before base chains: a base chain's rules may jump to them.
    let mut new_chains: Vec<&Chain> = after
        .chains
        .values()
        .filter(|c| !before.chains.contains_key(&c.name))
        .map(|c| &**c)
        .collect();
    new_chains.sort_by_key(|c| c.base.is_some());
    for c in &new_chains {
        batch.add_chain(FAMILY, TABLE, c);
        sum.chains_added += 1;
    }
    for c in &new_chains {
        add_rules(batch, c, &mut sum)?;
    }
    for (name, c) in &after.chains {
        if before.chains.get(name).is_some_and(|old| old != c) {
            batch.flush_chain(FAMILY, TABLE, name);
            add_rules(batch, c, &mut sum)?;
            sum.chains_replaced += 1;
        }
    }

    let mut removed: BTreeMap<String, Vec<(Key, Elem)>> = BTreeMap::new();
    for (set, key, elem) in &d.removed {
        removed
            .entry(set.name())
            .or_default()
            .push((key.clone(), elem.clone()));
    }
    for (name, elems) in &removed {
        // A set that went takes its elements with it.
        if let Some(set) = table.sets.get(name) {
            batch.del_elements(FAMILY, TABLE, set, elems.iter().map(|(k, e)| (k, e)))?;
            sum.elements_deleted += elems.len();
        }
    }
    let mut added: BTreeMap<String, Vec<(Key, Elem)>> = BTreeMap::new();
    for (set, key, elem) in &d.added {
        added
            .entry(set.name())
            .or_default()
            .push((key.clone(), elem.clone()));
    }
    for (name, elems) in &added {
        if let Some(set) = table.sets.get(name) {
            batch.add_elements(FAMILY, TABLE, set, elems.iter().map(|(k, e)| (k, e)))?;
            sum.elements_added += elems.len();
        }
    }

    let mut gone: Vec<&Chain> = before
        .chains
        .values()
        .filter(|c| !after.chains.contains_key(&c.name))
        .map(|c| &**c)
        .collect();
    // Base chains first: they jump to the regular ones.
    gone.sort_by_key(|c| c.base.is_none());
    for c in gone {
        batch.del_chain(FAMILY, TABLE, &c.name);
        sum.chains_deleted += 1;
    }
    for name in before.sets.keys() {
        if !after.sets.contains_key(name) {
            batch.del_set(FAMILY, TABLE, name);
            sum.sets_deleted += 1;
        }
    }
    sum.messages = batch.len();
    Ok(sum)
}
