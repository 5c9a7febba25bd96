//! Building and removing the lab's namespaces and underlay from a [`Topology`].

use crate::error::{Error, Result};
use crate::topology::{Host, Topology, UNDERLAY_BRIDGE};
use ipnet::IpNet;
use weft_netlink::{sysctl, Handle, Netns, Route};

/// Builds the lab's network; on any failure removes what it made before returning.
pub fn build(t: &Topology, progress: &mut dyn FnMut(&str)) -> Result<()> {
    let out = build_inner(t, progress);
    if out.is_err() {
        let _ = destroy(t);
    }
    out
}

fn build_inner(t: &Topology, progress: &mut dyn FnMut(&str)) -> Result<()> {
    progress(&format!(
        "underlay: namespace {} with bridge {UNDERLAY_BRIDGE} {}",
        t.root_netns, t.gateway
    ));
    let root = Netns::create_named(&t.root_netns)
        .map_err(Error::kernel(format!("create namespace {}", t.root_netns)))?;
    let mut rh = Handle::in_netns(&root).map_err(Error::kernel("open netlink in the lab root"))?;
    lo_up(&mut rh)?;
    let br = rh
        .create_bridge(UNDERLAY_BRIDGE, None)
        .map_err(Error::kernel(format!("create bridge {UNDERLAY_BRIDGE}")))?;
    rh.add_addr(br.index, IpNet::V4(t.gateway))
        .map_err(Error::kernel("address the underlay bridge"))?;
    rh.set_up(br.index)
        .map_err(Error::kernel("set the underlay bridge up"))?;
    for host in t.hosts() {
        progress(&format!(
            "{}: namespace {}, eth0 {}",
            host.name, host.netns, host.addr
        ));
        attach_host(t, host, &mut rh, br.index)?;
    }
    Ok(())
}

fn lo_up(h: &mut Handle) -> Result<()> {
    if let Some(lo) = h.link_by_name("lo").map_err(Error::kernel("look up lo"))? {
        h.set_up(lo.index).map_err(Error::kernel("set lo up"))?;
    }
    Ok(())
}

fn attach_host(t: &Topology, host: &Host, root: &mut Handle, bridge: u32) -> Result<()> {
    let ns = Netns::create_named(&host.netns)
        .map_err(Error::kernel(format!("create namespace {}", host.netns)))?;
    let up = root
        .create_veth(&host.uplink, "eth0", &ns, None)
        .map_err(Error::kernel(format!(
            "create veth {} <-> {}:eth0",
            host.uplink, host.netns
        )))?;
    root.set_master(up.index, bridge)
        .map_err(Error::kernel(format!(
            "attach {} to {UNDERLAY_BRIDGE}",
            host.uplink
        )))?;
    root.set_up(up.index)
        .map_err(Error::kernel(format!("set {} up", host.uplink)))?;
    let mut h =
        Handle::in_netns(&ns).map_err(Error::kernel(format!("open netlink in {}", host.netns)))?;
    lo_up(&mut h)?;
    let eth0 = h
        .link_by_name("eth0")
        .map_err(Error::kernel("look up eth0"))?
        .ok_or_else(|| Error::invalid("topology", format!("eth0 missing in {}", host.netns)))?;
    h.add_addr(eth0.index, IpNet::V4(host.addr))
        .map_err(Error::kernel(format!("address eth0 in {}", host.netns)))?;
    h.set_up(eth0.index)
        .map_err(Error::kernel(format!("set eth0 up in {}", host.netns)))?;
    let default: IpNet = "0.0.0.0/0"
        .parse()
        .map_err(|_| Error::invalid("route", "default"))?;
    h.add_route(
        &Route::new(default)
            .via(t.gateway.addr().into())
            .dev(eth0.index),
    )
    .map_err(Error::kernel(format!("default route in {}", host.netns)))?;
    if host.name == "external" {
        if let Some(lb) = t.load_balancer_cidr {
            let nodes = t.nodes.iter().map(|n| n.addr.addr().into());
            h.add_route(&Route::new(IpNet::V4(lb)).via_each(nodes).dev(eth0.index))
                .map_err(Error::kernel(format!(
                    "route {lb} to the nodes in {}",
                    host.netns
                )))?;
        }
    }
    // Nodes route pod traffic; the external host is a plain client.
    if host.name != "external" {
        ns.run_in(|| sysctl::set("net.ipv4.ip_forward", "1"))
            .map_err(Error::kernel(format!("enter {}", host.netns)))?
            .map_err(Error::kernel(format!(
                "enable forwarding in {}",
                host.netns
            )))?;
    }
    Ok(())
}

/// Removes every namespace of the lab, pods' included. Absent ones are fine, so a half-built
/// or half-removed lab can always be removed.
pub fn destroy(t: &Topology) -> Result<Vec<String>> {
    let existing = Netns::list_named().map_err(Error::kernel("list namespaces"))?;
    let mut removed = Vec::new();
    let mut first_err = None;
    let ours = |n: &String| {
        n == &t.root_netns
            || t.hosts()
                .any(|h| n == &h.netns || n.starts_with(&Topology::pod_netns_prefix(h)))
    };
    // Pods first, then hosts, then the root (its veths vanish with their peers).
    let mut victims: Vec<&String> = existing.iter().filter(|n| ours(n)).collect();
    victims.sort_by_key(|n| (n.as_str() == t.root_netns, !n.contains('.'), n.to_string()));
    let inodes: Vec<u64> = victims
        .iter()
        .filter_map(|n| Netns::from_name(n).ok()?.inode().ok())
        .collect();
    kill_processes_in(&inodes);
    for n in victims {
        match Netns::delete_named(n) {
            Ok(()) => removed.push(n.clone()),
            Err(e) => {
                first_err.get_or_insert(Error::Kernel {
                    op: format!("delete namespace {n}"),
                    source: e,
                });
            }
        }
    }
    first_err.map_or(Ok(removed), Err)
}

/// Kills every process whose network namespace is one of `inodes` (servers in pods, agents
/// in nodes, the control plane in the root): a namespace with a process in it outlives its
/// name, and so would its links and addresses.
pub fn kill_processes_in(inodes: &[u64]) -> usize {
    if inodes.is_empty() {
        return 0;
    }
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let me = std::process::id();
    let mut killed = 0;
    for e in rd.filter_map(|e| e.ok()) {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(link) = std::fs::read_link(e.path().join("ns/net")) else {
            continue;
        };
        // The link reads "net:[INODE]".
        let inode = link
            .to_string_lossy()
            .trim_start_matches("net:[")
            .trim_end_matches(']')
            .parse::<u64>()
            .ok();
        if inode.is_some_and(|i| inodes.contains(&i)) {
            // SAFETY: kill(2) with a pid read from /proc; a pid that exited meanwhile is ESRCH.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            killed += 1;
        }
    }
    killed
}
