//! `dml bench`: benchmarks that print tables (speed and memory targets live here, never in
//! timed unit tests).

/// Arguments of `dml bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    which: Which,
}

#[derive(Debug, clap::Subcommand)]
enum Which {}

/// Runs `dml bench`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.which {}
}
