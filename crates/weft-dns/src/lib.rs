//! weft-dns: the cluster DNS server. It answers the names of the Kubernetes DNS
//! specification (schema 1.1.0) for the Services, EndpointSlices, Pods and Namespaces the
//! agent watches, under a configurable zone (`cluster.local`), and forwards every other
//! name to the node's resolvers with a cache. Only clients inside the cluster are
//! answered (pod CIDRs, Node InternalIPs, loopback, its own addresses); anyone else gets
//! REFUSED. README.md beside this crate lists the records and the behaviour.
//!
//! How a query flows:
//!
//! - [`records`] compiles one object into records, a pure function ([`records::compile`]
//!   does the whole cluster at once, for tests and comparison);
//! - [`model::Model`] keeps each object's records and sends [`zone::Zone`] only the
//!   difference, so an update costs in proportion to the object; the zone keeps every
//!   answer encoded, owner pointing at the question (`0xC00C`);
//! - [`server`] reads datagrams and TCP frames; [`answer`] parses the header and the
//!   question by hand ([`wire`]), checks [`acl`], and copies the encoded answer: about
//!   100 ns per query, no allocation;
//! - names outside the zone go to [`forward`], which caches in [`cache`] (TTL aged on
//!   serve, RFC 2308 negative caching) and sends identical questions upstream once;
//! - [`client::query`] is a blocking dig for `weft probe dns`.
//!
//! ```no_run
//! use weft_dns::{Model, ServerConfig, Upstreams, ZoneConfig};
//!
//! # async fn run(svc: k8s_openapi::api::core::v1::Service) -> weft_dns::Result<()> {
//! let model = Model::new(ZoneConfig::default())?; // cluster.local, TTL 30 s
//! // From the watchers, one object at a time; answers change when the call returns:
//! model.upsert_service(&svc);
//! model.delete_pod("default", "web-0");
//!
//! let cfg = ServerConfig {
//!     listen: vec!["10.96.0.10:53".parse().unwrap()],
//!     allowed: vec!["10.244.0.0/16".parse().unwrap()],
//!     upstreams: Upstreams::ResolvConf("/etc/resolv.conf".into()),
//!     ..ServerConfig::default()
//! };
//! weft_dns::serve(cfg, model.clone()).await?;
//! # Ok(())
//! # }
//! ```
//!
//! ```no_run
//! // weft probe dns web.default.svc.cluster.local --type A --server 10.96.0.10
//! let r = weft_dns::query(
//!     "10.96.0.10:53".parse().unwrap(),
//!     "web.default.svc.cluster.local",
//!     "A",
//!     false,
//!     std::time::Duration::from_secs(2),
//! )?;
//! print!("{r}"); // ";; status: NOERROR aa" then "web.default.svc.cluster.local. 30 IN A 10.96.0.20"
//! # Ok::<(), weft_dns::Error>(())
//! ```

pub mod acl;
pub mod answer;
pub mod cache;
pub mod chase;
pub mod client;
pub mod config;
pub mod delay;
pub mod error;
#[doc(hidden)]
pub mod fixtures;
pub mod forward;
pub mod hook;
mod mmsg;
pub mod model;
pub mod name;
pub mod records;
pub mod server;
mod udp;
pub mod wire;
pub mod zone;

pub use client::{query, Response};
pub use config::{ServerConfig, Upstreams, ZoneConfig};
pub use error::{Error, Result};
pub use hook::{Answer, AnswerHook};
pub use model::Model;
pub use server::{serve, Server, Stats, StatsHandle};

// The agent shares the model between watcher threads and the server's runtime.
const _: () = {
    const fn shared<T: Send + Sync + Clone>() {}
    const fn send<T: Send>() {}
    shared::<Model>();
    send::<Error>();
    send::<Server>();
};

#[cfg(test)]
mod answer_tests;
#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod model_tests;

// The agent spawns the server on a multi-thread runtime: its future must be Send.
#[allow(dead_code)]
fn serve_is_send(cfg: ServerConfig, model: Model) {
    fn send<T: Send>(_: &T) {}
    send(&serve(cfg, model));
}
#[cfg(test)]
mod cache_tests;
