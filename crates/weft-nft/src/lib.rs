//! weft-nft: a typed nf_tables ruleset, rendered to `nft` syntax and applied over netlink
//! in all-or-nothing transactions, in full or as the difference between two models.

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
