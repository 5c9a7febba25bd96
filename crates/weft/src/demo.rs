//! `weft lab demo`.
pub fn run() -> anyhow::Result<()> {
    anyhow::bail!("weft lab demo: not built yet")
}
