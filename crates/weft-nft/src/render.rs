//! Rendering to nft syntax.
