//! The thin applier: keeps what it last committed and sends the kernel only the
//! difference, in one transaction (as weft-proxy's Proxier does for Services).

use std::path::Path;

use std::sync::Arc;

use std::collections::BTreeMap;
use weft_nft::diff::{Summary, Touched};

use std::time::Duration;

use weft_nft::{Backend, Elem, Key, Ruleset, Set, Table};

use crate::cells::AddrFamily;
use crate::fqdn::{self, Grant};

use crate::delta::{Delta, SetChange, Update};
use crate::desired::{FAMILY, TABLE};
use crate::error::{Error, Result};
use crate::model::Protocol;
use crate::table_eval::{forward, Outcome, Packet};

/// The policy table in one network namespace.
pub struct Enforcer {
    backend: Backend,
    netns: String,
    /// The table as weft last asked for it (`None` before the first sync). Changes are
    /// applied to it in place, so it is the one copy of the large maps.
    committed: Option<Ruleset>,
    /// Whether the kernel holds `committed`. Not before the first sync, after a failed
    /// one or after [`Enforcer::resync`]: the next sync then reads the kernel's table
    /// again (a restarted agent adopts its predecessor's table and changes only what
    /// differs).
    in_sync: bool,
}

impl Enforcer {
    /// The calling thread's network namespace (the agent runs inside its node's).
    pub fn open() -> Result<Enforcer> {
        Self::with(Backend::open(), "(own)".into())
    }

    /// The namespace at `netns`, e.g. `/run/netns/NAME`.
    pub fn open_in(netns: &Path) -> Result<Enforcer> {
        Self::with(Backend::open_in(netns), netns.display().to_string())
    }

    fn with(backend: weft_nft::Result<Backend>, netns: String) -> Result<Enforcer> {
        let backend = backend.map_err(|source| Error::Nft {
            netns: netns.clone(),
            source,
        })?;
        Ok(Enforcer {
            backend,
            netns,
            committed: None,
            in_sync: false,
        })
    }

    /// Adds DNS grants ([`crate::fqdn::grants`]) to the kernel at once, each with its
    /// timeout (a grant already there gets the new timeout); with `replace`, the grants
    /// already there go first, in the same transaction (after a change of policies or
    /// pods, when the grants are computed again from the live answers).
    pub fn grant(&mut self, grants: &[(Grant, Duration)], replace: bool) -> Result<()> {
        let mut batch = self.backend.new_batch();
        for fam in AddrFamily::ALL {
            let set = fqdn::set(fam);
            if replace {
                batch.flush_set(FAMILY, TABLE, &set.name);
            }
            let elems: Vec<(Key, Elem)> = grants
                .iter()
                .filter(|(g, _)| g.family == fam)
                .map(|(g, ttl)| {
                    (
                        g.start.clone(),
                        Elem {
                            end: Some(g.end.clone()),
                            data: None,
                            timeout: Some((*ttl).max(Duration::from_secs(1))),
                        },
                    )
                })
                .collect();
            batch
                .add_elements(FAMILY, TABLE, &set, elems.iter().map(|(k, e)| (k, e)))
                .map_err(self.nft())?;
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.backend.send(batch).map_err(self.nft())
    }

    /// The packets each element of the table's counting set `set` has matched; `None`
    /// when the table or the set does not exist.
    pub fn read_counters(&mut self, set: &str) -> Result<Option<BTreeMap<Key, u64>>> {
        match self.backend.read_counters(FAMILY, TABLE, set) {
            Ok(v) => Ok(v),
            Err(source) => Err(Error::Nft {
                netns: self.netns.clone(),
                source,
            }),
        }
    }

    fn nft(&self) -> impl FnOnce(weft_nft::Error) -> Error + '_ {
        move |source| Error::Nft {
            netns: self.netns.clone(),
            source,
        }
    }

    /// Moves the kernel to `desired` (from [`crate::desired::desired`]) in one
    /// transaction: all of it or none. Connections already established keep going, as
    /// with other NetworkPolicy implementations; new ones see the new policy.
    pub fn sync(&mut self, desired: &Ruleset) -> Result<Summary> {
        self.sync_owned(desired.clone())
    }

    /// Applies an [`Update`] from [`crate::desired::Incremental::update`]: a whole table
    /// as [`Enforcer::sync`], a delta by sending only the elements it names (the
    /// kernel's copy of a changed key is compared with the new one, nothing else is).
    pub fn apply(&mut self, update: Update) -> Result<Summary> {
        match update {
            Update::Unchanged if self.in_sync => Ok(Summary::default()),
            Update::Unchanged => {
                let Some(model) = self.committed.take() else {
                    return Ok(Summary::default());
                };
                self.sync_owned(model)
            }
            Update::Full(rs) => self.sync_owned(rs),
            Update::Delta(d) => self.apply_delta(&d),
        }
    }

    fn sync_owned(&mut self, desired: Ruleset) -> Result<Summary> {
        let prev = if self.in_sync {
            self.committed.take()
        } else {
            None
        };
        self.in_sync = false;
        let prev = match prev {
            Some(prev) => prev,
            None => {
                let mut k = self.backend.adopt(&desired).map_err(self.nft())?;
                // DNS grants are the kernel's alone (added by `grant`, gone at their
                // timeout): the compiled table has none, and the diff must not remove them.
                if let Some(t) = k.table_mut(FAMILY, TABLE) {
                    for fam in AddrFamily::ALL {
                        if let Some(s) = t.set_mut(&fqdn::set_name(fam)) {
                            s.elements.clear();
                        }
                    }
                }
                k
            }
        };
        let result = self.backend.apply_incremental(&prev, &desired);
        drop(prev);
        self.committed = Some(desired);
        let sum = result.map_err(self.nft())?;
        self.in_sync = true;
        self.log(&sum);
        Ok(sum)
    }

    fn apply_delta(&mut self, d: &Delta) -> Result<Summary> {
        let Some(model) = self.committed.as_mut() else {
            return Err(Error::Delta {
                netns: self.netns.clone(),
                problem: "no table to apply it to yet".into(),
            });
        };
        if !self.in_sync {
            // The kernel may hold anything: move the model on, then compare it whole.
            d.apply_to(model).map_err(|m| self.missing(m))?;
            let model = self.committed.take().expect("just edited");
            return self.sync_owned(model);
        }
        // Only what the delta names, as small sets: the old elements of its keys and the
        // new ones. The diff looks at those keys alone.
        let (mut prev, mut next) = (Table::new(FAMILY, TABLE), Table::new(FAMILY, TABLE));
        let mut touched = Touched::default();
        let have = model.table(FAMILY, TABLE).ok_or_else(|| Error::Delta {
            netns: self.netns.clone(),
            problem: format!("the table {TABLE} is not in the model"),
        })?;
        for (name, change) in &d.sets {
            let old = have.sets.get(name).ok_or_else(|| Error::Delta {
                netns: self.netns.clone(),
                problem: format!("set {name} is not in the model"),
            })?;
            match change {
                SetChange::Replace(set) => {
                    prev.sets.insert(name.clone(), old.clone());
                    next.sets.insert(name.clone(), set.clone());
                    touched.set(FAMILY, TABLE, name.clone());
                }
                SetChange::Elements { put, .. } => {
                    let mut a = Set {
                        name: old.name.clone(),
                        typeof_key: old.typeof_key.clone(),
                        key: old.key.clone(),
                        data: old.data.clone(),
                        flags: old.flags,
                        timeout: old.timeout,
                        elements: Default::default(),
                    };
                    let mut b = a.clone();
                    for k in change.keys() {
                        if let Some(e) = old.elements.get(k) {
                            a.elements.insert(k.clone(), e.clone());
                        }
                        if let Some(e) = put.get(k) {
                            b.elements.insert(k.clone(), e.clone());
                        }
                        touched.element(FAMILY, TABLE, name.clone(), k.0.clone());
                    }
                    prev.sets.insert(name.clone(), Arc::new(a));
                    next.sets.insert(name.clone(), Arc::new(b));
                }
            }
        }
        let (mut p, mut n) = (Ruleset::default(), Ruleset::default());
        p.add_table(prev);
        n.add_table(next);
        let result = self.backend.apply_touched(&p, &n, &touched);
        let model = self.committed.as_mut().expect("checked above");
        d.apply_to(model).map_err(|m| self.missing(m))?;
        let sum = result.map_err(|e| {
            self.in_sync = false;
            self.nft()(e)
        })?;
        self.log(&sum);
        Ok(sum)
    }

    fn missing(&self, what: String) -> Error {
        Error::Delta {
            netns: self.netns.clone(),
            problem: format!("{what} is not in the model"),
        }
    }

    fn log(&self, sum: &Summary) {
        if !sum.is_empty() {
            tracing::debug!(
                netns = %self.netns,
                added = sum.elements_added,
                deleted = sum.elements_deleted,
                chains = sum.chains_added + sum.chains_replaced,
                "policy table synced"
            );
        }
    }

    /// Deletes the conntrack entries (IPv4) of flows the committed table would now drop
    /// at their first packet, so a policy change also ends connections it no longer
    /// allows; without this they keep going as established. Returns how many went.
    /// Optional: Kubernetes leaves existing connections to the implementation.
    pub fn cut_denied_flows(&mut self) -> Result<usize> {
        let Some(table) = self
            .committed
            .as_ref()
            .and_then(|rs| rs.table(FAMILY, TABLE))
            .cloned()
        else {
            return Ok(0);
        };
        if crate::desired::selects_no_pod(&table) {
            return Ok(0);
        }
        let flows = self.backend.flows_v4().map_err(self.nft())?;
        let mut cut = 0;
        for f in flows {
            // What the forward hook saw: the client's address, and the server after DNAT
            // (the reply's source).
            let first = Packet {
                saddr: f.original.src.into(),
                daddr: f.reply.src.into(),
                proto: Protocol::from_number(f.original.proto),
                dport: f.reply.sport,
            };
            if matches!(forward(&table, &first), Outcome::Dropped { .. })
                && self.backend.delete_flow(&f.original).is_ok()
            {
                cut += 1;
            }
        }
        if cut > 0 {
            tracing::info!(netns = %self.netns, cut, "flows the policy now denies were cut");
        }
        Ok(cut)
    }

    /// The next sync re-reads the kernel's table and repairs whatever differs (an `nft`
    /// edit, a flush). Agents call it periodically.
    pub fn resync(&mut self) {
        self.in_sync = false;
    }

    /// Removes the policy table (nothing else): every pod is reachable again.
    pub fn remove(&mut self) -> Result<()> {
        self.committed = None;
        self.in_sync = false;
        let present = self
            .backend
            .list_tables()
            .map_err(self.nft())?
            .contains(&(FAMILY, TABLE.to_string()));
        if present {
            self.backend
                .delete_table(FAMILY, TABLE)
                .map_err(self.nft())?;
        }
        Ok(())
    }
}
