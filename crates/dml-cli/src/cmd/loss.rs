//! `dml loss`: run PML-style loss cases and write PML-style results, so anyone can check dml
//! against pytorch-metric-learning on their own data.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use dml_losses::cases::{Dtype, run_case_file};

/// Arguments of `dml loss`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Case file in pytorch-metric-learning's format (see fixtures/pml/pml-cases.json).
    #[arg(long, value_name = "PATH")]
    cases: PathBuf,
    /// Write the results here (atomically) instead of printing them.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// Compute in this precision (default: the file's `dtype`, else f32).
    #[arg(long, value_name = "DTYPE")]
    dtype: Option<DtypeArg>,
}

/// `--dtype` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DtypeArg {
    F32,
    F64,
}

/// Runs `dml loss`.
///
/// Every case is written to the results, rejected ones with an `error` field; if any case was
/// rejected the command then fails with the first rejection's message.
pub fn run(args: Args) -> anyhow::Result<()> {
    let text = dml_core::text::read_file(&args.cases)
        .with_context(|| format!("cannot read {}", args.cases.display()))?;
    let dtype = args.dtype.map(|d| match d {
        DtypeArg::F32 => Dtype::F32,
        DtypeArg::F64 => Dtype::F64,
    });
    let results = run_case_file(&text, dtype).with_context(|| args.cases.display().to_string())?;
    let json = serde_json::to_string_pretty(&results)?;
    match &args.out {
        Some(path) => dml_core::atomic::write_file(path, json.as_bytes())?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(json.as_bytes())?;
            out.write_all(b"\n")?;
        }
    }
    let rejected: Vec<&str> = results["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("error").and_then(|e| e.as_str()))
        .collect();
    if let Some(first) = rejected.first() {
        anyhow::bail!(
            "{} of {} cases rejected; first: {first}",
            rejected.len(),
            results["results"].as_array().map_or(0, Vec::len)
        );
    }
    Ok(())
}
