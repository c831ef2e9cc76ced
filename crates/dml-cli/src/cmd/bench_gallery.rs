//! `dml bench gallery`: how long `dml gallery` takes on a set the size of Stanford Online
//! Products' test split (60,502 images of 11,316 products), synthetic and without images.
//!
//! The set is `dml bench eval`'s seeded clustered unit vectors, written as `dml embed` writes
//! embeddings (`E.npy`, `E.labels.txt` and an `E.paths.txt` of empty lines: no images), then
//! built with `dml gallery`'s own code (files read, every metric of `dml eval`, the 8 nearest
//! neighbours of every query, the t-SNE map of 10,000 items, the page); each run times that
//! whole build.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use dml_train::export::write_embeddings;
use dml_train::task::Embeddings;

use super::bench_eval::{cpu_seconds, parse_size, synthetic};
use super::gallery;

/// Time of `dml gallery` on a synthetic set without images (SOP's test split size).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Set size as ITEMSxCLASSES.
    #[arg(long, value_name = "NxC", default_value = "60000x11318")]
    size: String,
    /// Embedding dimension.
    #[arg(long, value_name = "NUM", default_value_t = 128)]
    dim: usize,
    /// Noise norm relative to the unit class centres (as `dml bench eval`).
    ///
    /// The default 1.4 gives recall@1 about 0.76 and MAP@R about 0.42 in
    /// 128 dimensions at 60000 x 11318, close to published SOP models.
    #[arg(long, value_name = "NUM", default_value_t = 1.4)]
    noise: f64,
    /// Seed of the synthetic data.
    #[arg(long, value_name = "NUM", default_value_t = 0)]
    seed: u64,
    /// Builds to time; the summary gives their median and range.
    #[arg(long, value_name = "NUM", default_value_t = 1)]
    repeats: usize,
    /// Folder for the set and its gallery, kept afterwards (default: a temporary folder,
    /// removed at the end).
    #[arg(long, value_name = "DIR")]
    work: Option<PathBuf>,
}

/// Runs `dml bench gallery`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let size = parse_size(&args.size)?;
    if args.dim == 0 || args.repeats == 0 {
        bail!("--dim and --repeats must be at least 1");
    }
    if args.noise.is_nan() || args.noise < 0.0 {
        bail!("--noise must be >= 0");
    }
    let (work, temporary) = match &args.work {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("dml-bench-gallery-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let result = measure(&args, size, &work);
    if temporary {
        // Best effort: the measurement is what was asked for.
        let _ = std::fs::remove_dir_all(&work);
    }
    result
}

/// Writes the set into `work` and times `args.repeats` builds of its gallery there.
fn measure(
    args: &Args,
    size: super::bench_eval::Size,
    work: &std::path::Path,
) -> anyhow::Result<()> {
    let (data, labels) = synthetic(size, args.dim, args.noise, args.seed);
    let npy = work.join("synthetic.npy");
    let embeddings = Embeddings {
        values: data.as_slice().to_vec(),
        dim: args.dim,
        labels: labels.iter().map(|&l| i64::from(l)).collect(),
        indices: (0..size.items).collect(),
    };
    let names: Vec<String> = labels.iter().map(|l| format!("class{l:05}")).collect();
    write_embeddings(&npy, &embeddings, &names, &vec![String::new(); size.items])?;
    outln!(
        "dml bench gallery: {} x {}, {} classes, noise {}, seed {}, {} thread(s), no images",
        size.items,
        args.dim,
        size.classes,
        args.noise,
        args.seed,
        rayon::current_num_threads()
    )?;
    let gallery_args = gallery::Args {
        embeddings: npy,
        labels: None,
        paths: None,
        query_embeddings: None,
        query_labels: None,
        query_paths: None,
        k: 8,
        worst: 50,
        sample: 50,
        classes: Vec::new(),
        seed: 0,
        map_points: 10_000,
        out: work.join("gallery"),
    };
    let mut walls = Vec::with_capacity(args.repeats);
    let mut last = None;
    for run in 1..=args.repeats {
        let (start, cpu) = (Instant::now(), cpu_seconds());
        let (built, load) = gallery::build(&gallery_args)?;
        let wall = start.elapsed().as_secs_f64();
        let cpu = cpu
            .zip(cpu_seconds())
            .map_or("n/a".to_owned(), |(a, b)| format!("{:.1} s", b - a));
        let stages: Vec<String> = std::iter::once(("load", load))
            .chain(built.seconds.iter().copied())
            .map(|(stage, t)| format!("{stage} {t:.2}"))
            .collect();
        outln!("run {run}: {wall:.2} s (CPU {cpu}; {})", stages.join(", "))?;
        walls.push(wall);
        last = Some(built);
    }
    walls.sort_by(f64::total_cmp);
    let built = last.context("at least one run")?;
    let r = built.evaluation.retrieval.as_ref();
    outln!(
        "median {:.2} s, range {:.2}-{:.2} s over {} run(s); recall@1 {:.4}, map@r {:.4}; \
         {} map points, {} query rows; page {:.1} MiB",
        walls[walls.len() / 2],
        walls[0],
        walls[walls.len() - 1],
        walls.len(),
        r.and_then(|r| r.recall_at_k.first())
            .map_or(f64::NAN, |&(_, v)| v),
        r.map_or(f64::NAN, |r| r.map_at_r),
        built.map_points,
        built.query_rows,
        std::fs::metadata(&built.index).map_or(0, |m| m.len()) as f64 / (1u64 << 20) as f64
    )?;
    Ok(())
}
