//! The veth pair joining a pod to the bridge. The host end's name is derived from the
//! attachment (container ID + interface), so DEL and GC can find it without any state.

use crate::error::{Error, Result};
use weft_netlink::{Handle, Link, Netns};

/// `veth` + 11 hex digits of a hash of the attachment: 15 bytes, the kernel's limit.
pub fn host_name(container_id: &str, ifname: &str) -> String {
    // FNV-1a: stable across versions and platforms, which std's hasher does not promise.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in container_id.bytes().chain([b'/']).chain(ifname.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("veth{:011x}", h & 0xfff_ffff_ffff)
}

/// Creates the pair with the pod end born inside the pod's namespace (never visible on the
/// host under the pod's interface name), attaches the host end to the bridge and sets it up.
pub fn create(
    host: &mut Handle,
    host_name: &str,
    ifname: &str,
    sandbox: &Netns,
    bridge: &Link,
    mtu: Option<u32>,
    hairpin: bool,
) -> Result<Link> {
    let link = match host.create_veth(host_name, ifname, sandbox, mtu) {
        Ok(l) => l,
        Err(e) if e.is_exists() => {
            // Left by an ADD that crashed for this same attachment: replace it.
            host.delete_link_by_name(host_name)
                .map_err(|e| Error::kernel(format!("remove stale {host_name}"), e))?;
            host.create_veth(host_name, ifname, sandbox, mtu)
                .map_err(|e| {
                    Error::kernel(format!("create veth {host_name} (pod end {ifname})"), e)
                })?
        }
        Err(e) => {
            return Err(Error::kernel(
                format!("create veth {host_name} (pod end {ifname})"),
                e,
            ))
        }
    };
    host.set_master(link.index, bridge.index)
        .map_err(|e| Error::kernel(format!("attach {host_name} to bridge {}", bridge.name), e))?;
    if hairpin {
        host.set_hairpin(link.index, true)
            .map_err(|e| Error::kernel(format!("set hairpin mode on {host_name}"), e))?;
    }
    host.set_up(link.index)
        .map_err(|e| Error::kernel(format!("set {host_name} up"), e))?;
    host.link_by_index(link.index)
        .map_err(|e| Error::kernel(format!("read back {host_name}"), e))?
        .ok_or_else(|| Error::new(crate::error::code::KERNEL, format!("{host_name} vanished")))
}

/// DEL when the pod end is already gone: the host end, if the kernel has not taken it
/// with the namespace yet, is deleted in the background (see `sandbox::retire`). Its name
/// stays taken until then; an ADD for the same attachment meanwhile replaces it.
pub fn retire_host(host: &mut Handle, container_id: &str, ifname: &str) -> Result<()> {
    let name = host_name(container_id, ifname);
    let found = host
        .link_by_name(&name)
        .map_err(|e| Error::kernel(format!("look up host veth {name}"), e))?;
    match found {
        Some(l) => host
            .delete_link_detached(l.index)
            .map_err(|e| Error::kernel(format!("delete host veth {name}"), e)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_names_are_stable_and_short() {
        let a = super::host_name("abc", "eth0");
        assert_eq!(a.len(), 15);
        assert_eq!(a, super::host_name("abc", "eth0"));
        assert_ne!(a, super::host_name("abc", "eth1"));
    }
}
