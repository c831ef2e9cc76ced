//! `dml report`: turn an experiment's `results.jsonl` into `report.md` plus SVG/PNG figures.
//!
//! The report is made from the results file (and the embedding files it references) alone,
//! so it can be regenerated at any time, also for an experiment that is still running.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use dml_experiment::{ReportOptions, TsneConfig, write_report};

/// Arguments of `dml report`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Results of `dml experiment`: one JSON record per finished run.
    #[arg(value_name = "RESULTS")]
    results: PathBuf,
    /// Folder for report.md and figures/ (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Subsample test embeddings to at most NUM points per t-SNE map.
    #[arg(long, value_name = "NUM", default_value_t = ReportOptions::default().tsne_max_points,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(4..))]
    tsne_points: usize,
    /// Seed of the t-SNE maps and their subsampling.
    #[arg(long, value_name = "NUM", default_value_t = TsneConfig::default().seed)]
    seed: u64,
}

/// Runs `dml report`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let defaults = ReportOptions::default();
    let options = ReportOptions {
        tsne: TsneConfig {
            seed: args.seed,
            ..defaults.tsne
        },
        tsne_max_points: args.tsne_points,
        ..defaults
    };
    let summary = write_report(&args.results, &args.out, &options)
        .with_context(|| format!("cannot write the report of {}", args.results.display()))?;
    if let Some(tail) = summary.truncated_tail {
        errln!(
            "dml: warning: {}: ignored unfinished line {} ({} bytes) left by an interrupted run",
            args.results.display(),
            tail.line,
            tail.bytes
        );
    }
    writeln!(
        std::io::stdout().lock(),
        "wrote {} ({} runs, {} figure files)",
        summary.report.display(),
        summary.runs,
        summary.figures.len()
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::cmd::parse_args;

    #[test]
    fn out_is_required_and_tsne_points_has_a_floor() {
        assert!(parse_args::<super::Args>(&["r.jsonl"]).is_err());
        let args: super::Args = parse_args(&["r.jsonl", "--out", "o"]).unwrap();
        assert_eq!(args.tsne_points, 2000);
        assert_eq!(args.seed, 0);
        let args: super::Args = parse_args(&[
            "r.jsonl",
            "--out",
            "o",
            "--tsne-points",
            "500",
            "--seed",
            "7",
        ])
        .unwrap();
        assert_eq!((args.tsne_points, args.seed), (500, 7));
        assert!(
            parse_args::<super::Args>(&["r.jsonl", "--out", "o", "--tsne-points", "3"]).is_err()
        );
    }
}
