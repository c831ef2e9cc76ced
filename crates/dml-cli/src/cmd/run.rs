//! `dml run`: train, embed and evaluate in one command.
//!
//! The held-out split is evaluated with the initial network, the network is trained (as
//! `dml train`), the held-out split is embedded with the best checkpoint into
//! `<run>/embeddings/test.npy` (labels and paths beside it) and evaluated again; a table
//! shows the metrics before and after, and `<run>/gallery/index.html` shows the queries,
//! their neighbours and the embedding map. Without arguments this is the README's main job:
//! the small convnet on the built-in synthetic glyphs.

use std::time::Instant;

use anyhow::Context;
use dml_train::checkpoint::Checkpoint;
use dml_train::components::model::build_model;
use dml_train::run::{Assembled, model_from_checkpoint};
use dml_train::run_folder::RunPaths;
use dml_train::task::Metrics;

use super::gallery::write_run_gallery;
use super::train::{
    ConfigArgs, apply_threads, check_run_folder, chosen_checkpoint, format_metrics,
    train_with_progress,
};
use crate::device::DeviceArg;

/// Arguments of `dml run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArgs,
}

/// Runs `dml run`; `threads` is the global `--threads`.
pub fn run(args: Args, device: DeviceArg, threads: Option<usize>) -> anyhow::Result<()> {
    let config = args.config.resolve(threads)?;
    if args.config.dry_run() {
        outln!("{}", config.to_json())?;
        return Ok(());
    }
    let start = args.config.start();
    check_run_folder(&config, start)?;
    apply_threads(&config);
    let started = Instant::now();
    let assembled = Assembled::open(&config)?;
    let plain = device.device()?;
    let keys = config.eval.metric_keys();
    let evaluate = |model: &_| -> anyhow::Result<_> {
        assembled.evaluate(model, &plain)?.context(
            "dml run evaluates on a held-out split: set data.test, or use a dataset with one",
        )
    };
    // The weights training starts from: the same seed builds the same network.
    let (_, before) = evaluate(&build_model(&config, &plain, true)?)?;
    errln!("before training: {}", format_metrics(&before, &keys));

    let outcome = train_with_progress(&config, &assembled, &plain, start)?;

    let paths = RunPaths::new(&config.out);
    let chosen = chosen_checkpoint(&paths);
    let model = model_from_checkpoint(&Checkpoint::read(chosen)?, &plain)?;
    let (split, after) = evaluate(&model)?;
    let files = split.write_into_run(&config.out)?;
    let gallery = match &assembled.data.test {
        Some(test) => Some(write_run_gallery(&config.out, &split, test)?),
        None => None,
    };

    print_table(&keys, &before, &after)?;
    outln!(
        "trained {} epochs ({} steps) in {:.1} s; after = {}",
        outcome.state.epoch,
        outcome.state.step,
        started.elapsed().as_secs_f64(),
        chosen.display()
    )?;
    outln!(
        "embeddings: {} ({} x {}; labels {}, paths {})",
        files.embeddings.display(),
        split.embeddings.len(),
        split.embeddings.dim,
        files.labels.display(),
        files.paths.display()
    )?;
    if let Some(page) = gallery {
        outln!("gallery: {} (open it in a browser)", page.display())?;
    }
    Ok(())
}

fn print_table(keys: &[String], before: &Metrics, after: &Metrics) -> std::io::Result<()> {
    outln!("{:<14} {:>8} {:>8}", "metric", "before", "after")?;
    for key in keys {
        let cell = |m: &Metrics| m.get(key).map_or("-".to_owned(), |v| format!("{v:.4}"));
        outln!("{key:<14} {:>8} {:>8}", cell(before), cell(after))?;
    }
    Ok(())
}
