//! The pod's side: its interface, addresses, routes and loopback, all configured through a
//! netlink socket opened inside the pod's namespace.

use crate::error::{code, Error, Result};
use crate::result::Route;
use ipnet::IpNet;
use weft_netlink::{sysctl, Family, Handle, Link, Netns};

pub fn open(netns: &std::path::Path) -> Result<(Netns, Handle)> {
    let ns = Netns::from_path(netns).map_err(|e| {
        Error::new(
            code::CONTAINER_UNKNOWN,
            format!(
                "cannot open the container's network namespace {}: {e}",
                netns.display()
            ),
        )
    })?;
    let h = Handle::in_netns(&ns)
        .map_err(|e| Error::kernel(format!("open netlink in {}", netns.display()), e))?;
    Ok((ns, h))
}

pub fn configure(
    ns: &Netns,
    h: &mut Handle,
    ifname: &str,
    addrs: &[IpNet],
    routes: &[Route],
) -> Result<Link> {
    let link = h
        .link_by_name(ifname)
        .map_err(|e| Error::kernel(format!("look up {ifname} in the pod"), e))?
        .ok_or_else(|| Error::new(code::KERNEL, format!("{ifname} did not appear in the pod")))?;
    if addrs.iter().any(|a| a.addr().is_ipv6()) {
        // A pod address must work the moment ADD returns: no DAD wait.
        let key = format!("net.ipv6.conf.{ifname}.accept_dad");
        ns.run_in(|| sysctl::set(&key, "0"))
            .map_err(|e| Error::kernel("enter the pod's namespace", e))?
            .map_err(|e| Error::kernel(format!("disable DAD on {ifname}"), e))?;
    }
    for a in addrs {
        h.add_addr(link.index, *a)
            .map_err(|e| Error::kernel(format!("add address {a} to {ifname} in the pod"), e))?;
    }
    h.set_up(link.index)
        .map_err(|e| Error::kernel(format!("set {ifname} up in the pod"), e))?;
    if let Some(lo) = h
        .link_by_name("lo")
        .map_err(|e| Error::kernel("look up lo", e))?
    {
        h.set_up(lo.index)
            .map_err(|e| Error::kernel("set lo up in the pod", e))?;
    }
    for r in routes {
        let mut route = weft_netlink::Route::new(r.dst);
        route.gateway = r.gw;
        route.oif = Some(link.index);
        if r.gw.is_none() {
            route.scope = weft_netlink::RouteScope::Link;
        }
        match h.add_route(&route) {
            Ok(()) => {}
            Err(e) if e.is_exists() => {}
            Err(e) => {
                let via = r.gw.map(|g| format!(" via {g}")).unwrap_or_default();
                return Err(Error::kernel(
                    format!("add route {}{via} in the pod", r.dst),
                    e,
                ));
            }
        }
    }
    Ok(link)
}

/// Takes the pod's interface away; its veth peer on the host goes with it. Absent is fine;
/// returns whether there was one.
///
/// Synchronously the interface goes down (no carrier on the host end either, so the bridge
/// disables the port and forgets the MACs learnt on it) and is renamed to `weftdel<index>`,
/// so the pod no longer has `ifname` and an ADD may create it again at once. The kernel's
/// unregistration, which waits out an RCU grace period, finishes in the background.
pub fn retire(h: &mut Handle, ifname: &str) -> Result<bool> {
    let Some(link) = h
        .link_by_name(ifname)
        .map_err(|e| Error::kernel(format!("look up {ifname} in the pod"), e))?
    else {
        return Ok(false);
    };
    h.set_down(link.index)
        .map_err(|e| Error::kernel(format!("set {ifname} down in the pod"), e))?;
    let tombstone = format!("weftdel{:08x}", link.index);
    h.set_name(link.index, &tombstone)
        .map_err(|e| Error::kernel(format!("rename {ifname} to {tombstone} in the pod"), e))?;
    h.delete_link_detached(link.index)
        .map_err(|e| Error::kernel(format!("delete {ifname} ({tombstone}) in the pod"), e))?;
    Ok(true)
}

/// CHECK: the interface, each address and each route of the previous result must be there.
pub fn check(h: &mut Handle, ifname: &str, addrs: &[IpNet], routes: &[Route]) -> Result<()> {
    let fail = |m: String| Error::new(code::CHECK_FAILED, m);
    let link = h
        .link_by_name(ifname)
        .map_err(|e| Error::kernel(format!("look up {ifname}"), e))?
        .ok_or_else(|| fail(format!("interface {ifname} is missing from the pod")))?;
    if !link.up {
        return Err(fail(format!("interface {ifname} in the pod is down")));
    }
    let have = h
        .addrs(Some(link.index))
        .map_err(|e| Error::kernel(format!("list addresses of {ifname}"), e))?;
    for a in addrs {
        if !have.iter().any(|x| x.net == *a) {
            return Err(fail(format!(
                "address {a} is missing from {ifname} in the pod"
            )));
        }
    }
    let table = h
        .routes(Family::All)
        .map_err(|e| Error::kernel("list the pod's routes", e))?;
    for r in routes {
        let found = table
            .iter()
            .any(|t| t.dst == r.dst && (r.gw.is_none() || t.gateway == r.gw));
        if !found {
            let via = r.gw.map(|g| format!(" via {g}")).unwrap_or_default();
            return Err(fail(format!("route {}{via} is missing in the pod", r.dst)));
        }
    }
    Ok(())
}
