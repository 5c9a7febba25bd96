//! The thin applier: keeps what it last committed and sends the kernel only the difference.

use std::path::Path;

use weft_nft::diff::Summary;
use weft_nft::{Backend, Family, Ruleset};

use crate::desired::{BACKEND_MAPS, TABLE};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::{affinity, conntrack, transaction};

/// The proxy's table in one network namespace.
pub struct Proxier {
    backend: Backend,
    netns: String,
    /// What the kernel holds, as weft last committed it. `None` until the first sync, and
    /// after a failed one: the next sync then reads the kernel's table again (a restarted
    /// agent adopts its predecessor's rules and changes only what differs).
    committed: Option<Ruleset>,
    /// For [`Proxier::apply`]: the kernel holds what the model held at the last apply.
    in_sync: bool,
}

impl Proxier {
    /// The calling thread's network namespace (the agent runs inside its node's).
    pub fn open() -> Result<Proxier> {
        Self::with(Backend::open(), "(own)".into())
    }

    pub fn open_in(netns: &Path) -> Result<Proxier> {
        Self::with(Backend::open_in(netns), netns.display().to_string())
    }

    fn with(backend: weft_nft::Result<Backend>, netns: String) -> Result<Proxier> {
        let backend = backend.map_err(|source| Error::Nft {
            netns: netns.clone(),
            source,
        })?;
        Ok(Proxier {
            backend,
            netns,
            committed: None,
            in_sync: false,
        })
    }

    fn nft(&self) -> impl FnOnce(weft_nft::Error) -> Error + '_ {
        move |source| Error::Nft {
            netns: self.netns.clone(),
            source,
        }
    }

    /// Moves the kernel to `desired` in one transaction: all of it or none.
    pub fn sync(&mut self, desired: &Ruleset) -> Result<Summary> {
        let prev = match self.committed.take() {
            Some(prev) => prev,
            None => self.backend.adopt(desired).map_err(self.nft())?,
        };
        let sum = self.diff_and_send(&prev, desired)?;
        self.committed = Some(desired.clone());
        Ok(sum)
    }

    /// Sends what `model` changed since the last call, as one transaction whose size
    /// follows the change, not the table. The first call, and the first after a failure,
    /// syncs the whole table instead, adopting what the kernel holds.
    pub fn apply(&mut self, model: &mut Model) -> Result<Summary> {
        if !self.in_sync {
            model.discard_delta();
            let desired = model.ruleset();
            let prev = self.backend.adopt(&desired).map_err(self.nft())?;
            let sum = self.diff_and_send(&prev, &desired)?;
            self.in_sync = true;
            return Ok(sum);
        }
        let delta = model.take_delta();
        if delta.is_empty() {
            return Ok(Summary::default());
        }
        let desired = model.ruleset();
        let Some(table) = desired.table(Family::Ip, TABLE) else {
            self.in_sync = false;
            return Ok(Summary::default());
        };
        let mut batch = self.backend.new_batch();
        let sent = transaction::build(&mut batch, table, &delta)
            .and_then(|sum| self.backend.send(batch).map(|()| sum));
        let sum = match sent {
            Ok(sum) => sum,
            Err(e) => {
                self.in_sync = false;
                return Err(self.nft()(e));
            }
        };
        // Whether or not a Service still has affinity: a remembered endpoint that left
        // must go before the Service (or a new one) sends clients through the map again.
        let backends_changed = delta
            .removed
            .iter()
            .any(|(s, _, _)| BACKEND_MAPS.contains(&s.name().as_str()));
        // The table is committed: what follows is cleanup, so a failure is reported and
        // does not undo the sync.
        if backends_changed {
            if let Err(e) = self.forget_stale_affinity(&desired) {
                tracing::warn!("forgetting stale session affinity: {e}");
            }
        }
        drop(desired);
        let stale = conntrack::from_delta(&delta);
        if !stale.is_empty() {
            if let Err(e) = self.delete_flows(&stale) {
                tracing::warn!("removing stale UDP conntrack entries: {e}");
            }
        }
        Ok(sum)
    }

    /// The whole-table path: diff `prev` against `desired`, send, then clean up what the
    /// change left behind in conntrack and in remembered affinities.
    fn diff_and_send(&mut self, prev: &Ruleset, desired: &Ruleset) -> Result<Summary> {
        let sum = self
            .backend
            .apply_incremental(prev, desired)
            .map_err(self.nft())?;
        if backends_moved(prev, desired) {
            if let Err(e) = self.forget_stale_affinity(desired) {
                tracing::warn!("forgetting stale session affinity: {e}");
            }
            let stale = conntrack::between(prev, desired);
            if !stale.is_empty() {
                if let Err(e) = self.delete_flows(&stale) {
                    tracing::warn!("removing stale UDP conntrack entries: {e}");
                }
            }
        }
        Ok(sum)
    }

    /// Deletes the conntrack entries of UDP flows `stale` names; returns how many.
    fn delete_flows(&mut self, stale: &conntrack::Stale) -> Result<usize> {
        let flows = self.backend.flows_v4().map_err(self.nft())?;
        let mut deleted = 0;
        for f in flows.iter().filter(|f| stale.matches(f)) {
            // A flow may end between the dump and the delete (ENOENT): nothing to do then.
            if self.backend.delete_flow(&f.original).is_ok() {
                deleted += 1;
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, "stale UDP conntrack entries removed");
        }
        Ok(deleted)
    }

    /// Deletes remembered client -> endpoint pairs whose endpoint left its service, so
    /// those clients are balanced again instead of sent to an address that is gone.
    fn forget_stale_affinity(&mut self, desired: &Ruleset) -> Result<usize> {
        let Some(t) = desired.table(Family::Ip, TABLE) else {
            return Ok(0);
        };
        let (Some(b), Some(nb)) = (t.sets.get("backends"), t.sets.get("nodeport-backends")) else {
            return Ok(0);
        };
        let Some(remembered) = self
            .backend
            .read_set(Family::Ip, TABLE, affinity::MAP)
            .map_err(self.nft())?
        else {
            return Ok(0);
        };
        if remembered.elements.is_empty() {
            return Ok(0);
        }
        let stale = affinity::stale(&remembered, b, nb);
        if stale.is_empty() {
            return Ok(0);
        }
        let elems: Vec<(weft_nft::Key, weft_nft::Elem)> = stale
            .into_iter()
            .map(|k| (k, weft_nft::Elem::default()))
            .collect();
        let mut batch = self.backend.new_batch();
        batch
            .del_elements(
                Family::Ip,
                TABLE,
                &remembered,
                elems.iter().map(|(k, e)| (k, e)),
            )
            .map_err(self.nft())?;
        match self.backend.send(batch) {
            Ok(()) => Ok(elems.len()),
            // An element may expire between the read and the delete: harmless, and the
            // next sync looks again.
            Err(e) => {
                tracing::debug!("forgetting stale affinity: {e}");
                Ok(0)
            }
        }
    }

    /// The next [`Proxier::apply`] re-reads the kernel's table and repairs whatever
    /// differs from the model: anything else that edited or flushed it (an `nft -f`
    /// reload, an operator) is undone. Agents call it periodically.
    pub fn resync(&mut self) {
        self.in_sync = false;
    }

    /// Removes the proxy's table (nothing else weft or others installed).
    pub fn remove(&mut self) -> Result<()> {
        self.committed = None;
        self.in_sync = false;
        let present = self
            .backend
            .list_tables()
            .map_err(self.nft())?
            .contains(&(Family::Ip, TABLE.to_string()));
        if present {
            self.backend
                .delete_table(Family::Ip, TABLE)
                .map_err(self.nft())?;
        }
        Ok(())
    }
}

fn backends_moved(prev: &Ruleset, desired: &Ruleset) -> bool {
    let sets = |rs: &Ruleset| {
        rs.table(Family::Ip, TABLE)
            .map(|t| BACKEND_MAPS.map(|m| t.sets.get(m).cloned()))
    };
    sets(prev) != sets(desired)
}
