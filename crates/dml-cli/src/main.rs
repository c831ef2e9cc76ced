//! The `dml` command line: one binary for the whole deep metric learning pipeline.
//!
//! Every subcommand lives in its own file under `cmd/`. Library errors arrive here as typed
//! errors; `main` prints them as one line (the cause chain joined with `: `) and exits 2.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod alloc;
#[macro_use]
mod cmd;
mod device;

/// Deep metric learning: ranking losses, exact k-NN evaluation and retrieval.
#[derive(Debug, Parser)]
#[command(name = "dml", version, about, propagate_version = true)]
struct Cli {
    /// Worker threads for numeric kernels (default: all cores).
    #[arg(long, global = true, value_name = "NUM", value_parser = cmd::threads_arg())]
    threads: Option<usize>,
    /// Where networks train and embed: cpu, or wgpu (a GPU; needs a build with
    /// --features wgpu).
    #[arg(long, global = true, value_name = "DEVICE", default_value = "cpu")]
    device: device::DeviceArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Losses, gradients and miners on pytorch-metric-learning's case format (JSON).
    Loss(cmd::loss::Args),
    /// Exact retrieval and clustering metrics of saved embeddings (Recall@K, MAP@R, NMI, ...).
    Eval(cmd::eval::Args),
    /// Speed and memory tables of the losses and the evaluation (docs/benchmarks.md).
    Bench(cmd::bench::Args),
    /// Run a plan's grid of training runs (resumable) and write its report.
    Experiment(cmd::experiment::Args),
    /// Write report.md and SVG/PNG figures from an experiment's results.jsonl.
    Report(cmd::report::Args),
    /// Train an embedding network from a run configuration (or resume one).
    Train(cmd::train::Args),
    /// Embed a dataset with a trained checkpoint (.npy + labels + paths).
    Embed(cmd::embed::Args),
    /// Train, embed and evaluate in one command (no arguments: synthetic glyphs).
    Run(cmd::run::Args),
    /// The nearest items of an index (from `dml embed`) for query images or embeddings.
    Search(cmd::search::Args),
    /// An HTML gallery of saved embeddings: worst queries, neighbours, confusions, a map.
    Gallery(cmd::gallery::Args),
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(threads) = cli.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .map_err(|e| anyhow::anyhow!("cannot start {threads} threads: {e}"))?;
    }
    match cli.command {
        Command::Loss(args) => cmd::loss::run(args),
        Command::Eval(args) => cmd::eval::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Experiment(args) => cmd::experiment::run(args, cli.device),
        Command::Report(args) => cmd::report::run(args),
        Command::Train(args) => cmd::train::run(args, cli.device, cli.threads),
        Command::Embed(args) => cmd::embed::run(args, cli.device),
        Command::Run(args) => cmd::run::run(args, cli.device, cli.threads),
        Command::Search(args) => cmd::search::run(args, cli.device),
        Command::Gallery(args) => cmd::gallery::run(args),
    }
}

fn main() -> ExitCode {
    alloc::keep_freed_memory();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            errln!("dml: error: {}", one_line(&err));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes on one line, each once: dml's errors keep their cause as
/// `source()` and never repeat it in their own message.
fn one_line(err: &anyhow::Error) -> String {
    err.chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// `dml ... | head` closes our stdout early; that is not a failure.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// `dml --help` lists every command with a sentence of its own, not a struct's doc.
    #[test]
    fn every_command_says_what_it_does() {
        for command in super::Cli::command().get_subcommands() {
            let about = command
                .get_about()
                .map(|a| a.to_string())
                .unwrap_or_default();
            assert!(
                !about.is_empty() && !about.starts_with("Arguments of"),
                "dml {}: {about:?}",
                command.get_name()
            );
        }
    }
}
