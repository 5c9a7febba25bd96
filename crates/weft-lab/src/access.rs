//! Who may read what a lab writes. A lab runs as root and its programs act as root: its
//! admin token lets anyone who holds it run any command as root (a pod's `command`). So
//! everything under the lab's directory is its owner's alone (files 0600, directories
//! 0700), with one exception: the kubeconfig handed to the user who ran `lab up` through
//! sudo belongs to that user, and the lab directory is then 0711 (enter, not list) so the
//! user can reach that one file.
//!
//! | path                                  | mode | owner           |
//! | ------------------------------------- | ---- | --------------- |
//! | `$WEFT_STATE_DIR`, `labs/`            | 0711 | root            |
//! | `labs/N/` (the lab directory)         | 0700 (0711 when handed to a sudo user) | root |
//! | `labs/N/kubeconfig`                   | 0600 | the lab's owner |
//! | everything else under `labs/N/`       | 0600 / 0700 | root     |

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs::{DirBuilder, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The user a lab's kubeconfig is handed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    /// The user who asked for the lab: sudo's caller when root runs under sudo, else the
    /// process's own user.
    pub fn invoking() -> Owner {
        // SAFETY: getters without side effects.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u32>().ok());
        match (uid, env("SUDO_UID"), env("SUDO_GID")) {
            (0, Some(u), Some(g)) => Owner { uid: u, gid: g },
            _ => Owner { uid, gid },
        }
    }

    /// Someone other than the lab's processes' user, who must be let into the lab directory.
    fn is_other(&self) -> bool {
        // SAFETY: a getter without side effects.
        self.uid != unsafe { libc::geteuid() }
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, Permissions::from_mode(mode))
        .map_err(Error::io(format!("chmod {mode:o} {}", path.display())))
}

/// Creates `dir` with `mode` unless it exists; sets the mode either way when `force`.
fn ensure_dir(dir: &Path, mode: u32, force: bool) -> Result<()> {
    if dir.is_dir() {
        return if force { set_mode(dir, mode) } else { Ok(()) };
    }
    DirBuilder::new()
        .mode(mode)
        .create(dir)
        .map_err(Error::io(format!("create {}", dir.display())))?;
    // DirBuilder's mode passes through the umask; say it exactly.
    set_mode(dir, mode)
}

/// Creates the lab directory and its parents with the modes in the table above.
pub fn create_lab_dir(dir: &Path, owner: Owner) -> Result<()> {
    let labs = dir.parent().ok_or_else(|| Error::State {
        path: dir.display().to_string(),
        problem: "a lab directory needs a parent".into(),
    })?;
    if let Some(root) = labs.parent() {
        if !root.as_os_str().is_empty() {
            // Parents that exist are the machine's own (e.g. /var/lib): left alone.
            if !root.is_dir() {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o711)
                    .create(root)
                    .map_err(Error::io(format!("create {}", root.display())))?;
                set_mode(root, 0o711)?;
            }
        }
    }
    ensure_dir(labs, 0o711, false)?;
    ensure_dir(dir, if owner.is_other() { 0o711 } else { 0o700 }, true)
}

/// Writes `bytes` to `path` atomically as a 0600 file belonging to `owner` (the
/// invoking user) or, without one, to the writer.
pub fn write_private(path: &Path, bytes: &[u8], owner: Option<Owner>) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(Error::io(format!("create {}", tmp.display())))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(Error::io(format!("write {}", tmp.display())))?;
    if let Some(o) = owner {
        std::os::unix::fs::fchown(&f, Some(o.uid), Some(o.gid)).map_err(Error::io(format!(
            "chown {} to {}:{}",
            tmp.display(),
            o.uid,
            o.gid
        )))?;
    }
    std::fs::rename(&tmp, path).map_err(Error::io(format!("rename to {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn lab_dir_is_private_and_files_are_0600() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path().join("state").join("labs").join("x");
        let me = Owner::invoking();
        create_lab_dir(&dir, me).expect("create");
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(dir.parent().expect("labs")), 0o711);
        let f = dir.join("secret");
        write_private(&f, b"token", None).expect("write");
        assert_eq!(mode(&f), 0o600);
        assert_eq!(std::fs::read(&f).expect("read"), b"token");
        // A lab directory left 0755 by an older weft is closed again.
        set_mode(&dir, 0o755).expect("chmod");
        create_lab_dir(&dir, me).expect("again");
        assert_eq!(mode(&dir), 0o700);
    }
}
