//! `dml embed`: embed a dataset with a trained checkpoint.
//!
//! Writes `E.npy` (float32, `[n, d]`) and, beside it, `E.labels.txt` (the class name of every
//! row) and `E.paths.txt` (its image), which `dml eval --embeddings E.npy --labels
//! E.labels.txt` reads back.

use std::path::PathBuf;

use dml_train::checkpoint::Checkpoint;
use dml_train::components::data::{SplitChoice, open_split};
use dml_train::export::write_embeddings;
use dml_train::run::{embed_split, model_from_checkpoint};

use super::train::checkpoint_file;
use crate::device::DeviceArg;

/// Arguments of `dml embed`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint file (.ckpt), or a run folder (its best checkpoint).
    #[arg(long, value_name = "PATH")]
    checkpoint: PathBuf,
    /// Images to embed: a .csv list, an image folder or .zip, or the path of
    /// the checkpoint's dataset kind. Default: the checkpoint's own data.
    #[arg(long, value_name = "PATH")]
    data: Option<PathBuf>,
    /// Which split of the checkpoint's data to embed (default: test). Data
    /// given with --data is embedded whole.
    #[arg(long, value_name = "SPLIT", conflicts_with = "data")]
    split: Option<SplitArg>,
    /// Output embeddings (.npy); labels and paths go beside it.
    #[arg(long, short = 'o', value_name = "PATH")]
    out: PathBuf,
    /// Images per forward pass (default: the checkpoint's).
    #[arg(long, value_name = "NUM", value_parser = super::batch_size_arg())]
    batch_size: Option<usize>,
}

/// `--split` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SplitArg {
    Train,
    Test,
}

/// Runs `dml embed`.
pub fn run(args: Args, device: DeviceArg) -> anyhow::Result<()> {
    let path = checkpoint_file(&args.checkpoint)?;
    let checkpoint = Checkpoint::read(&path)?;
    let mut config = checkpoint.config.clone();
    let mut split = match args.split {
        Some(SplitArg::Train) => SplitChoice::Train,
        Some(SplitArg::Test) | None => SplitChoice::Test,
    };
    if let Some(data) = &args.data {
        let like = config.data.test.as_ref().unwrap_or(&config.data.dataset);
        config.data.dataset = like.for_path(data);
        config.data.test = None;
        // The given data is embedded whole (`--split` conflicts with `--data`).
        split = SplitChoice::Train;
    }
    if let Some(batch_size) = args.batch_size {
        config.data.batch.eval_batch_size = batch_size;
    }
    let held_out = open_split(&config.data, split)?;
    let device = device.device()?;
    let model = model_from_checkpoint(&checkpoint, &device)?;
    let embedded = embed_split(&model, &held_out, &device)?;
    let files = write_embeddings(
        &args.out,
        &embedded.embeddings,
        &embedded.class_names,
        &embedded.paths,
    )?;
    outln!(
        "{} x {} embeddings: {} (labels {}, paths {})",
        embedded.embeddings.len(),
        embedded.embeddings.dim,
        files.embeddings.display(),
        files.labels.display(),
        files.paths.display()
    )?;
    Ok(())
}
