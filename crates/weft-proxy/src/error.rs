//! The one error type of weft-proxy.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("nf_tables in {netns}: {source}")]
    Nft {
        netns: String,
        #[source]
        source: weft_nft::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;
