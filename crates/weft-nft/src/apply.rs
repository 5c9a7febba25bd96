//! The thin applier: builds a transaction from models and sends it.

use std::path::Path;

use crate::diff::{self, Summary};
use crate::error::Result;
use crate::model::{Family, Ruleset};
use crate::netlink::decode::{self, KernelTable};
use crate::netlink::{Batch, NftSocket};

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

    pub fn list_tables(&mut self) -> Result<Vec<(Family, String)>> {
        decode::list_tables(&mut self.sock, None)
    }

    pub fn delete_table(&mut self, family: Family, name: &str) -> Result<()> {
        let mut b = self.new_batch();
        b.del_table(family, name);
        self.send(b)
    }
}
