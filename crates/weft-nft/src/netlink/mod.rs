//! nf_tables over NETLINK_NETFILTER, written by hand: netlink-packet-netfilter 0.4 covers
//! only a handful of expressions and no batch framing, and a flat byte writer keeps a
//! transaction of a million messages cheap to build.

pub mod attr;
pub mod batch;
pub mod conntrack;
pub mod decode;
pub mod expr;
pub mod msg;
pub mod socket;
pub mod udata;

pub use batch::Batch;
pub use socket::NftSocket;
