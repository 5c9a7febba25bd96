//! weft-routing: pod traffic between nodes without NAT, by one of two backends (flannel's,
//! as flannel does them):
//!
//! - **host-gw**: a route to each remote node's pod subnet via that node's underlay IP;
//! - **vxlan**: device `weft.<vni>` (UDP 8472, learning off) holding `<own subnet>.0/32`,
//!   and per remote node one route `<subnet> via <subnet>.0 dev weft.1 onlink`, one
//!   permanent neighbour `<subnet>.0 -> VTEP MAC`, one FDB entry `VTEP MAC -> underlay IP`.
//!
//! `desired` compiles the node list into that state (pure, unit-tested); `Router` reads the
//! kernel, diffs, and changes only the difference. Routes are marked with protocol
//! `RTPROT_WEFT` so that nothing else in the routing table is ever touched.
//!
//! ```no_run
//! use weft_netlink::{Handle, Netns};
//! use weft_routing::{Backend, NodeInfo, Router};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let me = NodeInfo {
//!     name: "node-1".into(),
//!     underlay_ip: "192.168.1.2".parse()?,
//!     pod_cidr: Some("10.244.1.0/24".parse()?),
//!     vtep_mac: None,
//! };
//! let handle = Handle::in_netns(&Netns::from_name("weft-lab-node-1")?)?;
//! let mut router = Router::new(handle, Backend::parse("vxlan")?, me.clone(), "eth0")?;
//! // Publish router.vtep_mac() as the node's weft.dev/vtep-mac annotation, then on every
//! // change of the Node list:
//! let changes = router.sync(&[me])?;
//! for r in &changes.refused {
//!     eprintln!("not routed: {r}");
//! }
//! # Ok(())
//! # }
//! ```

mod backend;
mod desired;
mod diff;
mod error;
mod node;
mod router;
mod vxlan;

pub use backend::{Backend, DEFAULT_VNI, DEFAULT_VXLAN_PORT};
pub use desired::{
    desired, Desired, DesiredFdb, DesiredNeighbour, DesiredRoute, RouteDev, Waiting,
};
pub use error::{Error, Refusal, Result};
pub use node::{NodeInfo, VTEP_MAC_ANNOTATION};
pub use router::{Changes, Delta, Router, RTPROT_WEFT};

// The agent keeps a router per node in its own thread; breaking that must fail here.
const _: () = {
    const fn send<T: Send>() {}
    send::<Router>();
    send::<Error>();
};
