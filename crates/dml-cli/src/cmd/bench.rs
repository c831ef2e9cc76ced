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
    /// Training steps of dml's networks: dml's kernels, burn's composed ops and PyTorch.
    Train(super::bench_train::Args),
    /// `dml gallery` on a synthetic set the size of SOP's test split, without images.
    Gallery(super::bench_gallery::Args),
}

/// Runs `dml bench`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.which {
        Which::Eval(args) => super::bench_eval::run(args),
        Which::Losses(args) => super::bench_losses::run(args),
        Which::Train(args) => super::bench_train::run(args),
        Which::Gallery(args) => super::bench_gallery::run(args),
    }
}

/// The process's peak resident memory (`VmHWM`), MiB; `None` where /proc is unavailable.
pub(crate) fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
