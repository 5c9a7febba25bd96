//! weft-netlink: a small synchronous rtnetlink layer, one NETLINK_ROUTE socket per network
//! namespace (the model is Podman's netavark). Links (bridge, veth, vxlan, dummy),
//! addresses, routes, neighbours, bridge FDB, network namespaces and /proc/sys.
//!
//! Everything talks to the kernel directly; nothing here runs `ip`, `bridge` or `sysctl`.
//! Errors name the operation and the object ("create veth veth1234 (peer eth0): File exists
//! (os error 17)") and classify with `is_not_found()` / `is_exists()`.
//!
//! Namespaces: `setns` moves only one thread, so work in another namespace either goes
//! through a `Handle::in_netns` socket (bound to that namespace for life) or through
//! `Netns::run_in`, which runs a closure on a helper thread inside the namespace.
//!
//! ```no_run
//! use weft_netlink::{sysctl, Handle, Netns, Route};
//!
//! # fn main() -> weft_netlink::Result<()> {
//! let pod = Netns::from_path("/run/netns/pod-1")?;
//! let mut host = Handle::new()?;
//! let bridge = match host.link_by_name("cbr0")? {
//!     Some(b) => b,
//!     None => host.create_bridge("cbr0", None)?,
//! };
//! // The pod end is born inside the pod, so its name only has to be free there.
//! let veth = host.create_veth("veth0123abcd", "eth0", &pod, None)?;
//! host.set_master(veth.index, bridge.index)?;
//! host.set_up(veth.index)?;
//!
//! let mut inside = Handle::in_netns(&pod)?;
//! let eth0 = inside.link_index("eth0")?;
//! inside.add_addr(eth0, "10.244.1.5/24".parse().unwrap())?;
//! inside.set_up(eth0)?;
//! inside.add_route(&Route::new("0.0.0.0/0".parse().unwrap()).via("10.244.1.1".parse().unwrap()))?;
//! pod.run_in(|| sysctl::set("net.ipv6.conf.eth0.accept_dad", "0"))??;
//! # Ok(())
//! # }
//! ```

mod addr;
mod detach;
mod error;
mod link;
mod link_create;
mod mac;
mod neigh;
mod netns;
mod route;
mod socket;
pub mod sysctl;

pub use addr::Addr;
pub use error::{Error, Result};
pub use link::{Link, VxlanInfo, IFNAME_MAX};
pub use link_create::{VxlanSpec, VXLAN_IANA_PORT};
pub use mac::{mac_to_string, parse_mac};
pub use neigh::{FdbEntry, Neighbour};
pub use netns::{Netns, NETNS_RUN_DIR};
pub use route::{
    Family, Route, RouteKind, RouteScope, RTPROT_BOOT, RTPROT_KERNEL, RTPROT_STATIC,
    RT_TABLE_LOCAL, RT_TABLE_MAIN,
};
pub use socket::Handle;

pub use ipnet::IpNet;

// Callers keep handles in threads and move namespaces and errors between them; breaking
// that must fail the build, not a caller's.
const _: () = {
    const fn send<T: Send>() {}
    const fn sync<T: Sync>() {}
    send::<Handle>();
    send::<Netns>();
    sync::<Netns>();
    send::<Error>();
    sync::<Error>();
};
