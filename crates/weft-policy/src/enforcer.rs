//! The thin applier: keeps what it last committed and sends the kernel only the
//! difference, in one transaction (as weft-proxy's Proxier does for Services).

use std::path::Path;

use weft_nft::diff::Summary;
use weft_nft::{Backend, Ruleset};

use crate::desired::{FAMILY, TABLE};
use crate::error::{Error, Result};
use crate::model::Protocol;
use crate::table_eval::{forward, Outcome, Packet};

/// The policy table in one network namespace.
pub struct Enforcer {
    backend: Backend,
    netns: String,
    /// What the kernel holds, as weft last committed it. `None` until the first sync and
    /// after a failed one: the next sync then reads the kernel's table again (a restarted
    /// agent adopts its predecessor's table and changes only what differs).
    committed: Option<Ruleset>,
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
        })
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
        let prev = match self.committed.take() {
            Some(prev) => prev,
            None => self.backend.adopt(desired).map_err(self.nft())?,
        };
        let sum = self
            .backend
            .apply_incremental(&prev, desired)
            .map_err(self.nft())?;
        self.committed = Some(desired.clone());
        if !sum.is_empty() {
            tracing::debug!(
                netns = %self.netns,
                added = sum.elements_added,
                deleted = sum.elements_deleted,
                chains = sum.chains_added + sum.chains_replaced,
                "policy table synced"
            );
        }
        Ok(sum)
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
        self.committed = None;
    }

    /// Removes the policy table (nothing else): every pod is reachable again.
    pub fn remove(&mut self) -> Result<()> {
        self.committed = None;
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
