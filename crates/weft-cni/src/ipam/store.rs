//! The durable allocation state of one network, under an exclusive flock: runtimes run ADDs
//! for different containers in parallel processes, so every read-modify-write holds the lock.
//!
//! An allocation must survive a crash once ADD has returned it. The state lives in two slot
//! files, `state.0` and `state.1`, each a header (generation, length, checksum, whether the
//! writer flushed it) and the state as JSON, overwritten in place. An allocating write is
//! `fdatasync`ed: one flush per ADD, where a temporary file, a rename and a directory fsync
//! cost two flushes and the rename (ext4 starts writeback of a file renamed over another).
//! Slots never shrink (they are padded), so an overwrite usually changes no metadata the
//! flush would have to journal.
//!
//! A write that only releases is not flushed: a release lost to a crash leaves an address
//! held by a dead attachment, which the runtime's next CNI GC (or a repeated DEL) frees,
//! while a lost allocation would hand one address to two pods.
//!
//! The rule that keeps every acknowledged allocation on disk: a write never overwrites the
//! newest flushed state. When the newest slot was flushed, a write goes to the other slot;
//! when it was not, the write goes over it (the other slot then holds the newest flushed
//! state). A write torn by a crash fails its checksum and the reader takes the other slot.

use crate::error::{Error, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
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

/// Whether a transaction's write must be on disk before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Allocations: flushed before the lock is released.
    Synced,
    /// Releases: written, left for the kernel to flush (see the module comment).
    Lazy,
}

pub struct Store {
    dir: PathBuf,
}

const SLOTS: [&str; 2] = ["state.0", "state.1"];
/// What releases before the slot files existed wrote; read only when no slot exists.
const LEGACY: &str = "state.json";
const MAGIC: &str = "weft-ipam v1";
/// Slots grow in steps of this, so most overwrites keep the file's size.
const PAD: usize = 4096;

/// The newest valid state on disk and where it came from.
struct Loaded {
    state: State,
    generation: u64,
    /// The slot holding it (None: nothing on disk yet, or the legacy file).
    slot: Option<usize>,
    /// Whether its writer left it unflushed.
    lazy: bool,
}

impl Loaded {
    /// Where the next write goes: never over the newest flushed state.
    fn next_slot(&self) -> usize {
        match self.slot {
            None => 0,
            Some(s) if self.lazy => s,
            Some(s) => 1 - s,
        }
    }
}

impl Store {
    /// Opens (creating if needed) `<data_dir>/<network>`.
    pub fn open(data_dir: &Path, network: &str) -> Result<Store> {
        let dir = data_dir.join(network);
        // Root's alone: it names every container on the node.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
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
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        Flock::lock(f, arg).map_err(|(_, errno)| {
            Error::io(
                format!("lock {}", path.display()),
                std::io::Error::from(errno),
            )
        })
    }

    fn load(&self) -> Result<Loaded> {
        let mut best: Option<Loaded> = None;
        let mut any_slot = false;
        for (i, name) in SLOTS.iter().enumerate() {
            let path = self.dir.join(name);
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
            };
            any_slot = true;
            // A slot that does not decode is one a crash tore (or never written): the other
            // slot holds the state from before that write.
            if let Some((generation, lazy, state)) = decode_slot(&bytes) {
                if best.as_ref().is_none_or(|b| generation > b.generation) {
                    best = Some(Loaded {
                        state,
                        generation,
                        slot: Some(i),
                        lazy,
                    });
                }
            }
        }
        if let Some(b) = best {
            return Ok(b);
        }
        if any_slot {
            return Err(Error::io(
                format!(
                    "IPAM state in {} is corrupt: neither state.0 nor state.1 is intact (move them aside to reset)",
                    self.dir.display()
                ),
                std::io::Error::from(ErrorKind::InvalidData),
            ));
        }
        let legacy = self.dir.join(LEGACY);
        let state = match fs::read(&legacy) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::io(
                    format!(
                        "IPAM state {} is corrupt (move it aside to reset)",
                        legacy.display()
                    ),
                    std::io::Error::new(ErrorKind::InvalidData, e),
                )
            })?,
            Err(e) if e.kind() == ErrorKind::NotFound => State::default(),
            Err(e) => return Err(Error::io(format!("read {}", legacy.display()), e)),
        };
        Ok(Loaded {
            state,
            generation: 0,
            slot: None,
            lazy: false,
        })
    }

    /// Writes `state` as the generation after `prev`.
    fn save(&self, state: &State, prev: &Loaded, durability: Durability) -> Result<()> {
        let path = self.dir.join(SLOTS[prev.next_slot()]);
        let bytes = encode_slot(state, prev.generation + 1, durability)
            .map_err(|e| Error::io("encode IPAM state", std::io::Error::other(e)))?;
        let write = || -> std::io::Result<()> {
            let created = !path.exists();
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(&path)?;
            f.write_all_at(&bytes, 0)?;
            if durability == Durability::Synced {
                f.sync_data()?;
                if created {
                    // A new file's name is durable only once its directory is.
                    File::open(&self.dir)?.sync_all()?;
                }
            }
            Ok(())
        };
        write().map_err(|e| Error::io(format!("write {}", path.display()), e))?;
        if prev.slot.is_none() {
            // The slots now hold the state; the legacy file must never be read again.
            let _ = fs::remove_file(self.dir.join(LEGACY));
        }
        Ok(())
    }

    /// Runs `f` on the state under the exclusive lock and persists it if `f` changed it,
    /// on disk for good before returning when `durability` is `Synced`.
    pub fn transact<T>(
        &self,
        durability: Durability,
        f: impl FnOnce(&mut State) -> Result<T>,
    ) -> Result<T> {
        let _lock = self.lock(FlockArg::LockExclusive)?;
        let loaded = self.load()?;
        let mut state = loaded.state.clone();
        let out = f(&mut state)?;
        if state != loaded.state {
            state.allocations.sort();
            self.save(&state, &loaded, durability)?;
        }
        Ok(out)
    }

    /// The current state, read under a shared lock.
    pub fn read(&self) -> Result<State> {
        let _lock = self.lock(FlockArg::LockShared)?;
        self.load().map(|l| l.state)
    }
}

/// `weft-ipam v1 <generation> <length> <fnv1a-64> <synced|lazy>\n`, the JSON, then spaces
/// up to a multiple of `PAD`.
fn encode_slot(
    state: &State,
    generation: u64,
    durability: Durability,
) -> serde_json::Result<Vec<u8>> {
    let body = serde_json::to_vec_pretty(state)?;
    let flushed = match durability {
        Durability::Synced => "synced",
        Durability::Lazy => "lazy",
    };
    let mut out = format!(
        "{MAGIC} {generation:020} {:020} {:016x} {flushed}\n",
        body.len(),
        fnv1a(&body)
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out.push(b'\n');
    out.resize(out.len().div_ceil(PAD) * PAD, b' ');
    Ok(out)
}

/// (generation, left unflushed, state) of an intact slot.
fn decode_slot(bytes: &[u8]) -> Option<(u64, bool, State)> {
    let nl = bytes.iter().position(|b| *b == b'\n')?;
    let header = std::str::from_utf8(&bytes[..nl]).ok()?;
    let rest = header.strip_prefix(MAGIC)?;
    let mut fields = rest.split_ascii_whitespace();
    let generation: u64 = fields.next()?.parse().ok()?;
    let len: usize = fields.next()?.parse().ok()?;
    let sum = u64::from_str_radix(fields.next()?, 16).ok()?;
    let lazy = match fields.next()? {
        "synced" => false,
        "lazy" => true,
        _ => return None,
    };
    let body = bytes.get(nl + 1..nl + 1 + len)?;
    if fnv1a(body) != sum {
        return None;
    }
    Some((generation, lazy, serde_json::from_slice(body).ok()?))
}

/// FNV-1a, 64 bit: detects a torn write (it is not there to resist tampering).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(ip: &str, id: &str) -> Allocation {
        Allocation {
            ip: ip.parse().unwrap(),
            container_id: id.into(),
            ifname: "eth0".into(),
        }
    }

    fn add(store: &Store, ip: &str, id: &str, d: Durability) {
        store
            .transact(d, |s| {
                s.allocations.push(alloc(ip, id));
                Ok(())
            })
            .unwrap();
    }

    fn slot(store: &Store, i: usize) -> Vec<u8> {
        fs::read(store.dir().join(SLOTS[i])).unwrap()
    }

    fn generation(store: &Store, i: usize) -> u64 {
        decode_slot(&slot(store, i)).unwrap().0
    }

    #[test]
    fn flushed_writes_alternate_and_a_torn_newest_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "net").unwrap();
        add(&store, "10.0.0.2", "a", Durability::Synced);
        add(&store, "10.0.0.3", "b", Durability::Synced);
        assert_eq!((generation(&store, 0), generation(&store, 1)), (1, 2));
        assert_eq!(slot(&store, 0).len() % PAD, 0);

        // A crash tore the newest write: the state before it is what remains.
        let mut torn = slot(&store, 1);
        torn[120] ^= 0x20;
        fs::write(store.dir().join(SLOTS[1]), &torn).unwrap();
        assert_eq!(
            store.read().unwrap().allocations,
            vec![alloc("10.0.0.2", "a")]
        );
        // The next write goes over the torn slot and is the newest.
        add(&store, "10.0.0.4", "c", Durability::Synced);
        assert_eq!(generation(&store, 1), 2);
        assert_eq!(store.read().unwrap().allocations.len(), 2);
    }

    #[test]
    fn unflushed_writes_never_overwrite_the_newest_flushed_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "net").unwrap();
        add(&store, "10.0.0.2", "a", Durability::Synced); // slot 0, flushed
        add(&store, "10.0.0.3", "b", Durability::Lazy); // slot 1
        add(&store, "10.0.0.4", "c", Durability::Lazy); // slot 1 again
        assert_eq!((generation(&store, 0), generation(&store, 1)), (1, 3));
        // Had the machine crashed now, slot 0 still holds every flushed allocation.
        add(&store, "10.0.0.5", "d", Durability::Synced); // over the unflushed slot 1
        assert_eq!((generation(&store, 0), generation(&store, 1)), (1, 4));
        add(&store, "10.0.0.6", "e", Durability::Lazy); // slot 1 is flushed: slot 0
        assert_eq!((generation(&store, 0), generation(&store, 1)), (5, 4));
        assert_eq!(store.read().unwrap().allocations.len(), 5);
    }

    #[test]
    fn shorter_state_overwrites_a_longer_one_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "net").unwrap();
        for i in 2..200 {
            add(
                &store,
                &format!("10.0.0.{i}"),
                &format!("c{i}"),
                Durability::Synced,
            );
        }
        store
            .transact(Durability::Synced, |s| {
                s.allocations.truncate(1);
                Ok(())
            })
            .unwrap();
        assert_eq!(store.read().unwrap().allocations.len(), 1);
    }

    #[test]
    fn legacy_file_is_read_then_retired() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "net").unwrap();
        let legacy = State {
            allocations: vec![alloc("10.0.0.9", "old")],
            last: BTreeMap::new(),
        };
        fs::write(
            store.dir().join(LEGACY),
            serde_json::to_vec(&legacy).unwrap(),
        )
        .unwrap();
        assert_eq!(store.read().unwrap(), legacy);
        add(&store, "10.0.0.10", "new", Durability::Synced);
        assert!(!store.dir().join(LEGACY).exists());
        assert_eq!(store.read().unwrap().allocations.len(), 2);
    }

    #[test]
    fn both_slots_torn_is_an_error_naming_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "net").unwrap();
        fs::write(store.dir().join(SLOTS[0]), b"garbage").unwrap();
        let err = store.read().unwrap_err().to_string();
        assert!(err.contains("corrupt") && err.contains("net"), "{err}");
    }
}
