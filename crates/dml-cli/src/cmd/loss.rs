//! `dml loss` (being written).

/// Arguments of `dml loss`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `dml loss`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("dml loss is not built yet")
}
