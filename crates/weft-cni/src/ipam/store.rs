//! The durable allocation state of one network: a JSON file replaced atomically under an
//! exclusive flock. Runtimes run ADDs for different containers in parallel processes, so
//! every read-modify-write holds the lock; and an allocation must survive a crash once ADD
//! has returned it, so a write is fsynced (file, then directory) before the lock is released.

use crate::error::{Error, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Allocation {
    pub ip: IpAddr,
    #[serde(rename = "containerId")]
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Every address in use, sorted by address.
    pub allocations: Vec<Allocation>,
    /// The address most recently handed out from each range set (keyed by the set's first
    /// subnet), where the next round-robin search starts.
    #[serde(default)]
    pub last: BTreeMap<String, IpAddr>,
}

pub struct Store {
    dir: PathBuf,
}

const STATE: &str = "state.json";

impl Store {
    /// Opens (creating if needed) `<data_dir>/<network>`.
    pub fn open(data_dir: &Path, network: &str) -> Result<Store> {
        let dir = data_dir.join(network);
        fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("create IPAM directory {}", dir.display()), e))?;
        Ok(Store { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self, arg: FlockArg) -> Result<Flock<File>> {
        let path = self.dir.join("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        Flock::lock(f, arg).map_err(|(_, errno)| {
            Error::io(
                format!("lock {}", path.display()),
                std::io::Error::from(errno),
            )
        })
    }

    fn load(&self) -> Result<State> {
        let path = self.dir.join(STATE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::io(
                    format!(
                        "IPAM state {} is corrupt (move it aside to reset)",
                        path.display()
                    ),
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
        }
    }

    fn save(&self, state: &State) -> Result<()> {
        let path = self.dir.join(STATE);
        let tmp = self.dir.join("state.json.tmp");
        let bytes = serde_json::to_vec_pretty(state)
            .map_err(|e| Error::io("encode IPAM state", std::io::Error::other(e)))?;
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| Error::io(format!("write {}", path.display()), e))
    }

    /// Runs `f` on the state under the exclusive lock and persists it if `f` changed it.
    pub fn transact<T>(&self, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let _lock = self.lock(FlockArg::LockExclusive)?;
        let before = self.load()?;
        let mut state = before.clone();
        let out = f(&mut state)?;
        if state != before {
            state.allocations.sort();
            self.save(&state)?;
        }
        Ok(out)
    }

    pub fn read(&self) -> Result<State> {
        let _lock = self.lock(FlockArg::LockShared)?;
        self.load()
    }
}
