//! `dml eval` (being written).

/// Arguments of `dml eval`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `dml eval`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("dml eval is not built yet")
}
