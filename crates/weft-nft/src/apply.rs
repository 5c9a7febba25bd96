//! The thin applier: builds a transaction from models and sends it.

use std::path::Path;
use std::sync::Arc;

use crate::diff::{self, Summary};
use crate::error::Result;
use crate::model::{Chain, Family, Ruleset, Set, Table};
use crate::netlink::decode::{self, kernel_view, KernelTable};
use crate::netlink::{conntrack, Batch, NftSocket};
use crate::rule::Rule;

/// nf_tables in one network namespace.
pub struct Backend {
    sock: NftSocket,
}

impl Backend {
    /// nf_tables of the calling thread's network namespace.
    pub fn open() -> Result<Self> {
        Ok(Backend {
            sock: NftSocket::open()?,
        })
    }

    /// nf_tables of the namespace at `netns` (e.g. `/run/netns/NAME`).
    pub fn open_in(netns: &Path) -> Result<Self> {
        Ok(Backend {
            sock: NftSocket::open_in(netns)?,
        })
    }

    /// Replaces the tables of `rs` with exactly their model, in one transaction.
    pub fn apply_full(&mut self, rs: &Ruleset) -> Result<Summary> {
        let mut batch = Batch::new(self.sock.next_seq());
        let sum = diff::full(rs, &mut batch)?;
        self.sock.transact(batch.finish())?;
        Ok(sum)
    }

    /// Moves the kernel from `prev` (what weft last committed) to `desired`, sending only
    /// the difference, in one transaction.
    pub fn apply_incremental(&mut self, prev: &Ruleset, desired: &Ruleset) -> Result<Summary> {
        let mut batch = Batch::new(self.sock.next_seq());
        let sum = diff::incremental(prev, desired, &mut batch)?;
        if !batch.is_empty() {
            self.sock.transact(batch.finish())?;
        }
        Ok(sum)
    }

    /// [`Backend::apply_incremental`] for controllers that know what they changed: only
    /// the objects named in `touched` are compared (see [`diff::incremental_touched`]).
    pub fn apply_touched(
        &mut self,
        prev: &Ruleset,
        desired: &Ruleset,
        touched: &diff::Touched,
    ) -> Result<Summary> {
        let mut batch = Batch::new(self.sock.next_seq());
        let sum = diff::incremental_touched(prev, desired, touched, &mut batch)?;
        if !batch.is_empty() {
            self.sock.transact(batch.finish())?;
        }
        Ok(sum)
    }

    /// Sends a batch built by hand (tests, tools).
    pub fn send(&mut self, batch: Batch) -> Result<()> {
        self.sock.transact(batch.finish())
    }

    pub fn new_batch(&mut self) -> Batch {
        Batch::new(self.sock.next_seq())
    }

    pub fn read_table(&mut self, family: Family, name: &str) -> Result<Option<KernelTable>> {
        decode::read_table(&mut self.sock, family, name)
    }

    pub fn read_set(&mut self, family: Family, table: &str, set: &str) -> Result<Option<Set>> {
        decode::read_set(&mut self.sock, family, table, set)
    }

    /// The packets each element of a counting set has matched, by key
    /// ([`crate::netlink::decode::read_counters`]).
    pub fn read_counters(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
    ) -> Result<Option<std::collections::BTreeMap<crate::Key, u64>>> {
        decode::read_counters(&mut self.sock, family, table, set)
    }

    /// The namespace's IPv4 conntrack entries.
    pub fn flows_v4(&mut self) -> Result<Vec<conntrack::Flow>> {
        conntrack::list_v4(&mut self.sock)
    }

    /// Deletes the conntrack entry with this original tuple.
    pub fn delete_flow(&mut self, original: &conntrack::Tuple) -> Result<()> {
        conntrack::delete(&mut self.sock, original)
    }

    pub fn list_tables(&mut self) -> Result<Vec<(Family, String)>> {
        decode::list_tables(&mut self.sock, None)
    }

    pub fn delete_table(&mut self, family: Family, name: &str) -> Result<()> {
        let mut b = self.new_batch();
        b.del_table(family, name);
        self.send(b)
    }

    /// What the kernel holds for the tables of `desired`, as a model to pass as `prev` to
    /// [`Backend::apply_incremental`]: a restarted agent adopts the kernel's state and then
    /// changes only what differs. Chains that already match share `desired`'s `Arc`s;
    /// elements that dynamic sets learned from traffic (affinity) are kept.
    pub fn adopt(&mut self, desired: &Ruleset) -> Result<Ruleset> {
        let mut prev = Ruleset::default();
        for want in desired.tables.values() {
            let Some(have) = self.read_table(want.family, &want.name)? else {
                continue;
            };
            prev.add_table(adopt_table(have, want)?);
        }
        Ok(prev)
    }
}

fn adopt_table(have: KernelTable, want: &Table) -> Result<Table> {
    let view = kernel_view(want)?;
    let mut t = Table::new(have.family, have.name.clone());
    for (name, kc) in have.chains {
        let chain = match (want.chains.get(&name), view.chains.get(&name)) {
            (Some(model), Some(v)) if *v == kc => model.clone(),
            // Differs or is unknown: a stand-in with as many rules, which the diff replaces.
            _ => Arc::new(Chain {
                name: name.clone(),
                base: kc.base,
                rules: vec![Rule::default(); kc.rules.len()],
            }),
        };
        t.chains.insert(name, chain);
    }
    for (name, mut set) in have.sets {
        if let Some(model) = want.sets.get(&name) {
            if set == **model {
                t.sets.insert(name, model.clone());
                continue;
            }
            if set.flags.dynamic && set.same_definition(model) {
                set.elements = model.elements.clone();
            }
        }
        t.sets.insert(name, Arc::new(set));
    }
    Ok(t)
}
