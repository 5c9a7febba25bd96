//! weft-nft: a typed nf_tables ruleset, rendered to `nft` syntax and applied over netlink
//! in all-or-nothing transactions, in full or as the difference between two models.
//!
//! ```no_run
//! use weft_nft::*;
//!
//! let mut t = Table::new(Family::Ip, "weft");
//! t.add_chain(
//!     Chain::base("prerouting", BaseChain {
//!         kind: ChainType::Nat, hook: Hook::Prerouting, priority: -100, policy: Policy::Accept,
//!     })
//!     .with_rule(Rule::new(vec![
//!         Stmt::eq(Selector::IpDaddr, Value::Ipv4([10, 96, 0, 1].into())),
//!         Stmt::eq(Selector::TcpDport, Value::Port(80)),
//!         Stmt::Dnat { addr: "10.244.1.5".parse().unwrap(), port: Some(8080) },
//!     ])),
//! );
//! let mut rs = Ruleset::default();
//! rs.add_table(t);
//! println!("{}", render::ruleset(&rs)); // what `nft -f` would accept
//!
//! let mut nft = Backend::open_in(std::path::Path::new("/run/netns/example")).unwrap();
//! nft.apply_full(&rs).unwrap(); // one transaction: all or nothing
//! let mut next = rs.clone();
//! // ... change `next` ...
//! nft.apply_incremental(&rs, &next).unwrap(); // only the difference
//! ```
//!
//! Layers: [`model`] and [`rule`] are what callers build; [`expr`] is what the kernel
//! executes (lowered by `lower.rs`, read back by [`netlink::decode`]); [`render`] prints
//! nft syntax; [`diff`] turns models into transactions; [`netlink`] encodes and sends them;
//! [`apply::Backend`] ties these together for one network namespace.

pub mod apply;
pub mod diff;
pub mod error;
pub mod expr;
mod lower;
pub mod model;
pub mod netlink;
pub mod render;
pub mod rule;

pub use apply::Backend;
pub use error::{Error, Failure, Result};
pub use model::*;
pub use rule::*;
