//! `weft serve`: echo servers for lab pods and tests.
use crate::cli::ServeArgs;

pub fn run(_args: ServeArgs) -> anyhow::Result<()> {
    anyhow::bail!("weft serve: not built yet")
}
