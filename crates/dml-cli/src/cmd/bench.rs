//! `dml bench`: benchmarks that print tables (speed and memory targets live here, never in
//! timed unit tests).

/// Arguments of `dml bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    which: Which,
}

#[derive(Debug, clap::Subcommand)]
enum Which {
    /// Evaluation engine: k-NN search, retrieval metrics, NMI/AMI on synthetic data.
    Eval(super::bench_eval::Args),
    /// Ranking losses: mine + forward + backward time and peak memory against the GEMM floor.
    Losses(super::bench_losses::Args),
}

/// Runs `dml bench`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.which {
        Which::Eval(args) => super::bench_eval::run(args),
        Which::Losses(args) => super::bench_losses::run(args),
    }
}
