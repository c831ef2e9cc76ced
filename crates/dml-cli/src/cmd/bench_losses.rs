//! `dml bench losses`: time and peak memory of mine + forward + backward for the ranking
//! losses, against the floor of the two `N x N x D` matrix products every loss needs.
//!
//! Data: seeded N(0, 1) embeddings, `--per-class` samples per class. Each (loss, N) runs in a
//! fresh child process of this binary (`--single LOSS N`, hidden) so its peak resident memory
//! (`VmHWM`) is its own. The timed step is the real training path: the burn adapter on
//! `Device::flex().autodiff()`, `loss.backward()` and reading the embeddings' gradient.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use burn::tensor::{Device, Tensor, TensorData};
use dml_core::linalg::{Transpose, matmul};
use dml_losses::cases::build_metric_loss;
use dml_losses::{Batch, LossModule, MatrixRef};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::bench::peak_rss_mib;

/// One benchmarked configuration: a table row name and PML's class names with their defaults.
struct Config {
    name: &'static str,
    loss: &'static str,
    miner: Option<&'static str>,
    miner_params: Option<serde_json::Value>,
}

/// The rows of the table, each with PML's defaults.
fn configs() -> Vec<Config> {
    let row = |name, loss, miner, miner_params| Config {
        name,
        loss,
        miner,
        miner_params,
    };
    vec![
        row(
            "triplet+semihard",
            "TripletMarginLoss",
            Some("TripletMarginMiner"),
            Some(json!({"type_of_triplets": "semihard"})),
        ),
        row(
            "triplet+batch-hard",
            "TripletMarginLoss",
            Some("BatchHardMiner"),
            None,
        ),
        row("n-pairs", "NPairsLoss", None, None),
        row("angular", "AngularLoss", None, None),
        row("contrastive", "ContrastiveLoss", None, None),
        row(
            "multi-similarity+miner",
            "MultiSimilarityLoss",
            Some("MultiSimilarityMiner"),
            None,
        ),
        row("lifted", "LiftedStructureLoss", None, None),
        row("nt-xent", "NTXentLoss", None, None),
    ]
}

/// Arguments of `dml bench losses`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Batch sizes N, comma separated.
    #[arg(
        long,
        value_name = "N,..",
        value_delimiter = ',',
        default_value = "256,1024,4096,8192"
    )]
    sizes: Vec<usize>,
    /// Embedding dimension D.
    #[arg(long, value_name = "NUM", default_value_t = 128)]
    dim: usize,
    /// Samples per class.
    #[arg(long, value_name = "NUM", default_value_t = 4)]
    per_class: usize,
    /// Timed runs per (loss, N) after one warm-up run; the table shows median and range.
    #[arg(long, value_name = "NUM", default_value_t = 5)]
    repeats: usize,
    /// Seed of the embeddings.
    #[arg(long, value_name = "NUM", default_value_t = 0)]
    seed: u64,
    /// Only these rows (names as printed), comma separated.
    #[arg(long, value_name = "NAME,..", value_delimiter = ',')]
    only: Vec<String>,
    /// Internal: measure one (loss, N) in this process and print it as JSON.
    #[arg(long, hide = true, num_args = 2, value_names = ["LOSS", "N"])]
    single: Option<Vec<String>>,
}

/// What a child process reports for one (loss, N).
#[derive(Debug, Serialize, Deserialize)]
struct Measurement {
    /// Milliseconds of each timed run of the adapter path, sorted.
    step_ms: Vec<f64>,
    /// Milliseconds of each timed run of the kernel alone (`MetricLoss::compute` on host
    /// data, no burn), sorted.
    kernel_ms: Vec<f64>,
    /// Milliseconds of each run of the floor (the two GEMMs), sorted, measured in the same
    /// process right after the loss so that both see the same machine load.
    floor_ms: Vec<f64>,
    /// Peak resident memory of the process, MiB.
    peak_mib: Option<f64>,
    /// Resident memory before the batch was built, MiB.
    base_mib: Option<f64>,
    /// The loss value of the last run (a sanity check that something was computed).
    loss: f64,
}

/// Runs `dml bench losses`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.dim == 0 || args.repeats == 0 || args.per_class < 2 {
        bail!("--dim and --repeats must be at least 1 and --per-class at least 2");
    }
    if let Some(single) = &args.single {
        let name = &single[0];
        let n: usize = single[1]
            .parse()
            .with_context(|| format!("--single: `{}` is not a batch size", single[1]))?;
        let m = measure(name, n, &args)?;
        outln!("{}", serde_json::to_string(&m)?)?;
        return Ok(());
    }
    let known: Vec<&str> = configs().iter().map(|c| c.name).collect();
    if let Some(bad) = args.only.iter().find(|o| !known.contains(&o.as_str())) {
        bail!("--only: unknown row `{bad}`; rows: {}", known.join(", "));
    }
    if let Some(&bad) = args.sizes.iter().find(|&&n| n < 2 * args.per_class) {
        bail!(
            "--sizes: N = {bad} needs at least two classes of --per-class {}",
            args.per_class
        );
    }
    let threads = rayon::current_num_threads();
    outln!(
        "dml bench losses: D {}, {} per class, seed {}, {threads} thread(s), median [min-max] of {} \
         run(s) after a warm-up; one child process per cell, which also times the floor",
        args.dim,
        args.per_class,
        args.seed,
        args.repeats
    )?;
    outln!(
        "| loss | N | mine+fwd+bwd ms | kernel only ms | peak RSS (increase) | floor ms (2 GEMMs) | \
         ratio to floor |"
    )?;
    outln!("|---|---:|---:|---:|---:|---:|---:|")?;
    for &n in &args.sizes {
        for c in configs()
            .iter()
            .filter(|c| args.only.is_empty() || args.only.iter().any(|o| o == c.name))
        {
            match child(c.name, n, threads, &args) {
                Ok(m) => {
                    let (med, floor) = (median(&m.step_ms), median(&m.floor_ms));
                    outln!(
                        "| {} | {n} | {med:.1} [{:.1}-{:.1}] | {:.1} | {} | {floor:.1} | {:.1}x |",
                        c.name,
                        m.step_ms[0],
                        m.step_ms[m.step_ms.len() - 1],
                        median(&m.kernel_ms),
                        match (m.peak_mib, m.base_mib) {
                            (Some(p), Some(b)) => format!("{p:.0} MiB (+{:.0})", p - b),
                            _ => "n/a".into(),
                        },
                        med / floor,
                    )?;
                }
                Err(e) => outln!("| {} | {n} | failed: {e:#} | | | | |", c.name)?,
            }
        }
    }
    Ok(())
}

/// Runs one cell in a fresh child process and parses its report.
fn child(name: &str, n: usize, threads: usize, args: &Args) -> anyhow::Result<Measurement> {
    let exe = std::env::current_exe().context("cannot find the dml executable")?;
    let out = Command::new(exe)
        .args(["--threads", &threads.to_string(), "bench", "losses"])
        .args([
            "--dim",
            &args.dim.to_string(),
            "--per-class",
            &args.per_class.to_string(),
        ])
        .args([
            "--repeats",
            &args.repeats.to_string(),
            "--seed",
            &args.seed.to_string(),
        ])
        .args(["--single", name, &n.to_string()])
        .output()
        .context("cannot start the measuring child process")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!(
            "{} ({})",
            err.trim().lines().last().unwrap_or("no message"),
            out.status
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().context("the child printed nothing")?;
    serde_json::from_str(line).with_context(|| format!("cannot parse the child's report `{line}`"))
}

/// Measures one (loss, N) in this process.
fn measure(name: &str, n: usize, args: &Args) -> anyhow::Result<Measurement> {
    let config = configs()
        .into_iter()
        .find(|c| c.name == name)
        .with_context(|| format!("unknown loss row `{name}`"))?;
    let loss = build_metric_loss(
        config.loss,
        None,
        config.miner.map(|m| (m, config.miner_params.as_ref())),
        Default::default(),
    )?;
    let base_mib = peak_rss_mib();
    let (x, labels) = batch(n, args.dim, args.per_class, args.seed);
    let device = Device::flex().autodiff();
    let module = LossModule::new(loss.clone(), args.dim, 0, &device);
    let step = || adapter_step(&module, &device, &x, &labels, args.dim);
    let step_ms = timed(args.repeats, || step().map(|_| ()))?;
    let kernel_ms = timed(args.repeats, || {
        let batch = Batch::new(MatrixRef::new(&x, n, args.dim)?, &labels);
        loss.compute(batch).map(|_| ()).map_err(Into::into)
    })?;
    let value = step()?;
    let floor_ms = gemm_floor(&x, n, args.dim, args.repeats)?;
    Ok(Measurement {
        step_ms,
        kernel_ms,
        floor_ms,
        peak_mib: peak_rss_mib(),
        base_mib,
        loss: value,
    })
}

/// One training step through the burn adapter: the embeddings as a fresh leaf of the graph,
/// forward, backward, and the embeddings' gradient read back. Returns the loss.
fn adapter_step(
    module: &LossModule,
    device: &Device,
    x: &[f32],
    labels: &[i64],
    d: usize,
) -> anyhow::Result<f64> {
    let n = labels.len();
    let emb = Tensor::<2>::from_data(TensorData::new(x.to_vec(), [n, d]), device).require_grad();
    let out = module.forward(emb.clone(), labels)?;
    let value: f32 = out.loss.clone().into_scalar();
    let grads = out.loss.backward();
    let grad = emb
        .grad(&grads)
        .context("the embeddings received no gradient")?;
    let grad: Vec<f32> = grad.try_to_vec_as().context("cannot read the gradient")?;
    anyhow::ensure!(
        grad.len() == n * d,
        "the gradient has {} values, not {}",
        grad.len(),
        n * d
    );
    Ok(value as f64)
}

/// One warm-up run of `f`, then `repeats` timed runs; milliseconds, sorted.
fn timed(repeats: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Vec<f64>> {
    f()?;
    let mut ms = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let t = Instant::now();
        f()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms)
}

/// Median (upper median for even counts) of sorted values.
fn median(sorted: &[f64]) -> f64 {
    sorted[sorted.len() / 2]
}

/// The floor: one `N x N x D` GEMM for the scores and one for the gradient; ms per run,
/// sorted.
fn gemm_floor(x: &[f32], n: usize, d: usize, repeats: usize) -> anyhow::Result<Vec<f64>> {
    let mut scores = vec![0.0f32; n * n];
    let mut grad = vec![0.0f32; n * d];
    timed(repeats, || {
        let no = Transpose::No;
        matmul(x, no, x, Transpose::Yes, n, n, d, &mut scores, 0.0, 1.0);
        matmul(&scores, no, x, no, n, d, n, &mut grad, 0.0, 1.0);
        Ok(())
    })
}

/// Seeded N(0, 1) embeddings, `per_class` consecutive rows per class.
fn batch(n: usize, d: usize, per_class: usize, seed: u64) -> (Vec<f32>, Vec<i64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = (0..n * d)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let labels = (0..n).map(|i| (i / per_class) as i64).collect();
    (x, labels)
}
