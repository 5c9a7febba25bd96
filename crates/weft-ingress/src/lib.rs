//! weft's Ingress: Ingress objects compiled into a neutral routing table ([`compile`]),
//! and the node's L7 proxy that serves it ([`proxy`]).

pub mod cases;
pub mod cert;
pub mod class;
pub mod compile;
pub mod error;
pub mod path;
pub mod proxy;
pub mod table;

pub use compile::{compile, Cluster, Compiled, Problem};
pub use error::{Error, Result};
pub use table::{Backend, Decision, Route, RouteTable};
