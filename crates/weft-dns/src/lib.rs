//! weft-dns: cluster DNS (placeholder doc, see README.md).

pub mod acl;
pub mod answer;
pub mod cache;
pub mod client;
pub mod config;
pub mod error;
#[doc(hidden)]
pub mod fixtures;
pub mod forward;
pub mod model;
pub mod name;
pub mod records;
pub mod server;
pub mod wire;
pub mod zone;

pub use client::{query, Response};
pub use config::{ServerConfig, Upstreams, ZoneConfig};
pub use error::{Error, Result};
pub use model::Model;
pub use server::{serve, Server};

#[cfg(test)]
mod answer_tests;
#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod model_tests;
