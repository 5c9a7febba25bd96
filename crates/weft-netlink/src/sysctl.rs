//! Kernel parameters under /proc/sys, read and written directly (never the `sysctl` binary).
//! Files under /proc/sys/net belong to the network namespace of the thread that OPENS them,
//! so these functions act on the calling thread's namespace; wrap them in `Netns::run_in`
//! to act on another.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// `net.ipv4.ip_forward` -> `/proc/sys/net/ipv4/ip_forward`. A key that already uses '/'
/// separators is taken as is, so interface names with dots work:
/// `net/ipv4/conf/eth0.100/rp_filter`.
pub fn path_of(key: &str) -> Result<PathBuf> {
    let invalid = |reason: &str| Err(Error::invalid(format!("sysctl key {key:?}"), reason));
    let rel = if key.contains('/') {
        key.to_string()
    } else {
        key.replace('.', "/")
    };
    if rel.is_empty() {
        return invalid("must not be empty");
    }
    if rel
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return invalid("has an empty, '.' or '..' component");
    }
    if rel.contains('\0') {
        return invalid("contains a NUL byte");
    }
    Ok(PathBuf::from("/proc/sys").join(rel))
}

/// Write `value` to the parameter `key` in the calling thread's namespace.
pub fn set(key: &str, value: &str) -> Result<()> {
    let path = path_of(key)?;
    let op = format!("set sysctl {key} = {value}");
    // One write() of the whole value: proc handlers parse each write on its own.
    let mut f = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("{op}: open {}", path.display()), e))?;
    f.write_all(value.as_bytes())
        .map_err(|e| Error::io(format!("{op}: write {}", path.display()), e))
}

/// Read the parameter `key` in the calling thread's namespace, without the trailing newline.
pub fn get(key: &str) -> Result<String> {
    let path = path_of(key)?;
    let text = fs::read_to_string(&path)
        .map_err(|e| Error::io(format!("get sysctl {key}: read {}", path.display()), e))?;
    Ok(text.trim_end_matches('\n').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_and_slashed_keys() {
        assert_eq!(
            path_of("net.ipv4.ip_forward").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            path_of("net/ipv4/conf/eth0.100/rp_filter").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/rp_filter")
        );
        for bad in ["", "net..ipv4", "net/../etc", "/net/ipv4"] {
            assert!(path_of(bad).is_err(), "{bad:?} accepted");
        }
    }
}
