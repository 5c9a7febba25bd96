//! The append-only log that makes the store durable: one JSON record per line, fsynced
//! before a write is acknowledged. A torn last line (crash mid-append) is cut off at open.

use crate::error::Error;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Create or replace an object.
    Put,
    /// Remove an object; `obj` is its final state (sent in the DELETED watch event).
    Del,
    /// Marks the resourceVersion a compacted log starts from (no object).
    Meta,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub rv: u64,
    pub op: Op,
    #[serde(default)]
    pub res: String,
    #[serde(default)]
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obj: Option<Value>,
}

pub struct Log {
    file: File,
    path: PathBuf,
    /// Length of the intact log: a failed append is cut back to it.
    len: u64,
}

impl Log {
    /// Opens (or creates) the log and returns every intact record in order.
    pub fn open(path: &Path) -> Result<(Log, Vec<Record>), Error> {
        let ctx = |what: &str| format!("{what} {}", path.display());
        let mut records = Vec::new();
        if path.exists() {
            let mut buf = Vec::new();
            File::open(path)
                .and_then(|mut f| f.read_to_end(&mut buf))
                .map_err(|e| Error::io(ctx("reading store log"), e))?;
            let mut offset = 0usize;
            let mut line_no = 0usize;
            let mut valid_len = 0usize;
            while offset < buf.len() {
                line_no += 1;
                let Some(nl) = buf[offset..].iter().position(|b| *b == b'\n') else {
                    // No terminating newline: the append was torn by a crash; drop it.
                    break;
                };
                let line = &buf[offset..offset + nl];
                match serde_json::from_slice::<Record>(line) {
                    Ok(r) => records.push(r),
                    Err(e) => {
                        let is_last = offset + nl + 1 >= buf.len();
                        if !is_last {
                            return Err(Error::CorruptLog {
                                path: path.to_path_buf(),
                                line: line_no,
                                reason: e.to_string(),
                            });
                        }
                        break;
                    }
                }
                offset += nl + 1;
                valid_len = offset;
            }
            if valid_len < buf.len() {
                tracing::warn!(
                    "store log {}: dropping {} bytes of a torn final record",
                    path.display(),
                    buf.len() - valid_len
                );
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| Error::io(ctx("opening store log"), e))?;
                f.set_len(valid_len as u64)
                    .and_then(|_| f.sync_all())
                    .map_err(|e| Error::io(ctx("truncating torn store log"), e))?;
            }
        }
        let file = open_append(path)?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(ctx("reading the size of"), e))?
            .len();
        Ok((
            Log {
                file,
                path: path.to_path_buf(),
                len,
            },
            records,
        ))
    }

    /// Appends records without syncing: the store's syncer makes them durable (one
    /// fsync for every append since the previous one) before any is acknowledged.
    pub fn append(&mut self, records: &[Record]) -> Result<(), Error> {
        let mut buf = Vec::with_capacity(records.len() * 512);
        for r in records {
            serde_json::to_writer(&mut buf, r)
                .map_err(|e| Error::io("encoding store record", std::io::Error::other(e)))?;
            buf.push(b'\n');
        }
        match self.file.write_all(&buf) {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Never leave half a record in the middle of the log.
                let _ = self.file.set_len(self.len);
                Err(Error::io(
                    format!("appending to {}", self.path.display()),
                    e,
                ))
            }
        }
    }

    /// A second handle on the log file, for the syncer.
    pub fn sync_handle(&self) -> Result<File, Error> {
        self.file
            .try_clone()
            .map_err(|e| Error::io(format!("duplicating {}", self.path.display()), e))
    }

    /// Atomically replaces the log with `records` (used to compact at start-up).
    pub fn rewrite(&mut self, records: &[Record]) -> Result<(), Error> {
        let tmp = self.path.with_extension("compact");
        {
            let mut f = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
            let mut buf = Vec::new();
            for r in records {
                serde_json::to_writer(&mut buf, r)
                    .map_err(|e| Error::io("encoding store record", std::io::Error::other(e)))?;
                buf.push(b'\n');
            }
            f.write_all(&buf)
                .and_then(|_| f.sync_all())
                .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
        }
        std::fs::rename(&tmp, &self.path)
            .map_err(|e| Error::io(format!("replacing {}", self.path.display()), e))?;
        sync_dir(&self.path)?;
        self.file = open_append(&self.path)?;
        self.len = self
            .file
            .metadata()
            .map_err(|e| Error::io(format!("reading the size of {}", self.path.display()), e))?
            .len();
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File, Error> {
    let existed = path.exists();
    // The store holds every object, Secrets included: the owner's alone.
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("opening store log {}", path.display()), e))?;
    if !existed {
        sync_dir(path)?;
    }
    Ok(f)
}

/// A new or renamed file is durable only once its directory entry is.
fn sync_dir(path: &Path) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))
}
