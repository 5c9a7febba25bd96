//! The thin applier: keeps what it last committed and sends the kernel only the difference.

use std::path::{Path, PathBuf};

use weft_nft::diff::Summary;
use weft_nft::{Backend, Family, Ruleset};

use crate::desired::TABLE;
use crate::error::{Error, Result};

/// The proxy's table in one network namespace.
pub struct Proxier {
    backend: Backend,
    netns: String,
    /// What the kernel holds, as weft last committed it. `None` until the first sync, and
    /// after a failed one: the next sync then reads the kernel's table again (a restarted
    /// agent adopts its predecessor's rules and changes only what differs).
    committed: Option<Ruleset>,
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
        let sum = self
            .backend
            .apply_incremental(&prev, desired)
            .map_err(self.nft())?;
        self.committed = Some(desired.clone());
        Ok(sum)
    }

    /// Removes the proxy's table (nothing else weft or others installed).
    pub fn remove(&mut self) -> Result<()> {
        self.committed = None;
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

    pub fn netns(&self) -> PathBuf {
        PathBuf::from(&self.netns)
    }
}
