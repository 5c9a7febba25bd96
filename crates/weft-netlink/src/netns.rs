//! Network namespace handles. `setns` moves only the calling thread, so work inside another
//! namespace runs on a short-lived helper thread (`Netns::run_in`): the caller's thread, and
//! every other thread of the process, stay where they are.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::statfs::{fstatfs, NSFS_MAGIC};

use crate::error::{Error, Result};

/// Where named namespaces live, as iproute2 keeps them (`ip netns add/list/exec` see ours).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// A handle on a network namespace: an open file descriptor of an nsfs file, which keeps
/// the namespace alive for as long as the handle exists.
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
    path: PathBuf,
}

impl Netns {
    /// The calling thread's namespace.
    pub fn current() -> Result<Netns> {
        let path = format!(
            "/proc/{}/task/{}/ns/net",
            std::process::id(),
            nix::unistd::gettid()
        );
        Netns::from_path(path)
    }

    /// Open a namespace file (`/proc/PID/ns/net`, `/run/netns/NAME`, a CNI_NETNS path...).
    pub fn from_path(p: impl AsRef<Path>) -> Result<Netns> {
        let path = p.as_ref().to_path_buf();
        let op = || format!("open network namespace {}", path.display());
        let file = File::open(&path).map_err(|e| Error::io(op(), e))?;
        // A stale /run/netns entry whose bind mount is gone is an empty regular file; setns on
        // it would fail later with a confusing EINVAL, so reject anything that is not nsfs now.
        let st = fstatfs(&file).map_err(|e| Error::nix(op(), e))?;
        if st.filesystem_type() != NSFS_MAGIC {
            return Err(Error::invalid(
                format!("network namespace path {}", path.display()),
                "not a namespace file (nsfs); is the namespace mounted?",
            ));
        }
        Ok(Netns {
            fd: file.into(),
            path,
        })
    }

    /// Open the named namespace `/run/netns/NAME`.
    pub fn from_name(name: &str) -> Result<Netns> {
        validate_name(name)?;
        Netns::from_path(Netns::named_path(name))
    }

    /// `/run/netns/NAME`.
    pub fn named_path(name: &str) -> PathBuf {
        Path::new(NETNS_RUN_DIR).join(name)
    }

    /// Create a new, empty network namespace and pin it at `/run/netns/NAME` (what
    /// `ip netns add NAME` does). Fails with `is_exists()` if the name is taken.
    pub fn create_named(name: &str) -> Result<Netns> {
        validate_name(name)?;
        let op = format!("create network namespace {name}");
        ensure_run_dir().map_err(|e| match e {
            Error::Io { op: inner, source } => Error::Io {
                op: format!("{op}: {inner}"),
                source,
            },
            other => other,
        })?;
        let path = Netns::named_path(name);
        // create_new makes the name check and the reservation one atomic step.
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&path)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    Error::Exists {
                        op: op.clone(),
                        what: path.display().to_string(),
                    }
                } else {
                    Error::io(format!("{op}: create {}", path.display()), e)
                }
            })?;

        let target = path.clone();
        let pinned = thread::Builder::new()
            .name("weft-netns-new".into())
            .spawn(move || -> std::result::Result<(), (String, Errno)> {
                unshare(CloneFlags::CLONE_NEWNET).map_err(|e| ("unshare".to_string(), e))?;
                mount(
                    Some("/proc/thread-self/ns/net"),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| (format!("bind-mount onto {}", target.display()), e))
            })
            .map_err(|e| Error::io(format!("{op}: spawn helper thread"), e))?
            .join();
        let result = match pinned {
            Ok(Ok(())) => Netns::from_path(&path),
            Ok(Err((step, errno))) => Err(Error::nix(format!("{op}: {step}"), errno)),
            Err(panic) => std::panic::resume_unwind(panic),
        };
        if result.is_err() {
            // Leave nothing half-made behind: no mount, no placeholder file.
            let _ = umount2(&path, MntFlags::MNT_DETACH);
            let _ = fs::remove_file(&path);
        }
        result
    }

    /// Unpin and remove `/run/netns/NAME` (what `ip netns delete` does). The namespace itself
    /// dies once no process and no open handle refers to it. Absent is not an error.
    pub fn delete_named(name: &str) -> Result<()> {
        validate_name(name)?;
        let path = Netns::named_path(name);
        let op = format!("delete network namespace {name}");
        match umount2(&path, MntFlags::MNT_DETACH) {
            // EINVAL: not a mount point (half-created entry); ENOENT: already gone.
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(Error::nix(format!("{op}: unmount {}", path.display()), e)),
        }
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("{op}: remove {}", path.display()), e)),
        }
    }

    /// Names under /run/netns, sorted (what `ip netns list` shows); empty if the directory
    /// does not exist yet.
    pub fn list_named() -> Result<Vec<String>> {
        let entries = match fs::read_dir(NETNS_RUN_DIR) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("list {NETNS_RUN_DIR}"), e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(format!("list {NETNS_RUN_DIR}"), e))?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A second handle on the same namespace (dup of the descriptor).
    pub fn try_clone(&self) -> Result<Netns> {
        let fd = self.fd.try_clone().map_err(|e| {
            Error::io(
                format!(
                    "duplicate handle of network namespace {}",
                    self.path.display()
                ),
                e,
            )
        })?;
        Ok(Netns {
            fd,
            path: self.path.clone(),
        })
    }

    /// The namespace's inode number: two handles refer to the same namespace iff these match
    /// (nsfs has a single device).
    pub fn inode(&self) -> Result<u64> {
        let file = File::from(self.fd.try_clone().map_err(|e| {
            Error::io(format!("stat network namespace {}", self.path.display()), e)
        })?);
        let meta = file
            .metadata()
            .map_err(|e| Error::io(format!("stat network namespace {}", self.path.display()), e))?;
        Ok(meta.ino())
    }

    /// Run `f` on a short-lived thread that has entered this namespace and return its result.
    /// Sockets opened and /proc/sys/net files read or written in `f` belong to this namespace.
    /// A panic in `f` is propagated to the caller.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let fd = self.fd();
        let path = &self.path;
        thread::scope(|scope| {
            let worker = thread::Builder::new()
                .name("weft-netns-run".into())
                .spawn_scoped(scope, move || -> Result<T> {
                    setns(fd, CloneFlags::CLONE_NEWNET).map_err(|e| {
                        Error::nix(format!("enter network namespace {}", path.display()), e)
                    })?;
                    Ok(f())
                })
                .map_err(|e| Error::io("spawn helper thread for a network namespace", e))?;
            match worker.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Run `f` on a short-lived thread in a new, unnamed network namespace with `lo` up,
    /// and return its result. The namespace goes when the thread and every socket made in
    /// it are gone: nothing to clean up, nothing seen from the host. Threads `f` starts
    /// inherit it (a tokio runtime built inside `f` runs entirely there). Tests use it to
    /// run servers and clients without touching the host's network.
    pub fn run_in_new<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T> {
        thread::scope(|scope| {
            let worker = thread::Builder::new()
                .name("weft-netns-new".into())
                .spawn_scoped(scope, move || -> Result<T> {
                    unshare(CloneFlags::CLONE_NEWNET)
                        .map_err(|e| Error::nix("unshare a network namespace", e))?;
                    let mut h = crate::Handle::new()?;
                    let lo = h.link_index("lo")?;
                    h.set_up(lo)?;
                    Ok(f())
                })
                .map_err(|e| Error::io("spawn a thread for a new network namespace", e))?;
            match worker.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn validate_name(name: &str) -> Result<()> {
    let bad = |reason: &str| Err(Error::invalid(format!("namespace name {name:?}"), reason));
    if name.is_empty() {
        return bad("must not be empty");
    }
    if name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return bad("must be a plain file name (no '/', not '.' or '..')");
    }
    if name.len() > 255 {
        return bad("longer than 255 bytes");
    }
    Ok(())
}

/// Make /run/netns exist and be a shared mount, as iproute2 does, so that namespace mounts
/// made here propagate to other mount namespaces (and unmounts too). Serialised within the
/// process so parallel creators do not stack bind mounts on it.
fn ensure_run_dir() -> Result<()> {
    static READY: Mutex<bool> = Mutex::new(false);
    let mut ready = READY.lock().unwrap_or_else(|p| p.into_inner());
    if *ready {
        return Ok(());
    }
    match fs::create_dir(NETNS_RUN_DIR) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(format!("create {NETNS_RUN_DIR}"), e)),
    }
    let make_shared = || {
        mount(
            None::<&str>,
            NETNS_RUN_DIR,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match make_shared() {
        Ok(()) => {}
        // EINVAL: /run/netns is not a mount point yet; bind it onto itself, then retry.
        Err(Errno::EINVAL) => {
            mount(
                Some(NETNS_RUN_DIR),
                NETNS_RUN_DIR,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| Error::nix(format!("bind-mount {NETNS_RUN_DIR} onto itself"), e))?;
            make_shared()
                .map_err(|e| Error::nix(format!("make {NETNS_RUN_DIR} a shared mount"), e))?;
        }
        Err(e) => {
            return Err(Error::nix(
                format!("make {NETNS_RUN_DIR} a shared mount"),
                e,
            ))
        }
    }
    *ready = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_path_like_names() {
        for bad in ["", ".", "..", "a/b", "x\0y"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_name("weft-t-x-1").is_ok());
    }
}
