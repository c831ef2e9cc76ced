//! `dml bench train`: images per second of a whole training step (forward, triplet loss with
//! batch-hard mining, backward, Adam) for dml's networks, with dml's kernels, with burn's
//! composed operations (the baseline), and in PyTorch + pytorch-metric-learning when given a
//! Python with torch (`--torch`), all timed in the same invocation.
//!
//! Each (model, side) runs in a fresh child process (`--single`, hidden; the PyTorch side in
//! `scripts/bench_torch_train_step.py`), so its peak resident memory is its own and no side
//! inherits another's heap. A GEMM of the same thread count is timed in this process, as the
//! reference for the step's achieved GFLOP/s (three times the forward convolutions' operations:
//! the forward pass, the input gradient and the weight gradient).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use dml_core::linalg::{Transpose, matmul};
use dml_losses::LossModule;
use dml_losses::cases::build_metric_loss;
use dml_models::{Backbone, EmbeddingNetConfig, HeadKind, ops};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::bench::peak_rss_mib;

/// One benchmarked network: its name (as the PyTorch script spells it), config and batch.
struct Model {
    name: &'static str,
    backbone: Backbone,
    batch: [usize; 4],
    classes: usize,
}

const MODELS: [Model; 3] = [
    Model {
        name: "small-conv-net",
        backbone: Backbone::SmallConvNet,
        batch: [128, 1, 28, 28],
        classes: 32,
    },
    Model {
        name: "resnet18",
        backbone: Backbone::ResNet18,
        batch: [32, 3, 224, 224],
        classes: 8,
    },
    Model {
        name: "resnet50",
        backbone: Backbone::ResNet50,
        batch: [32, 3, 224, 224],
        classes: 8,
    },
];

/// Embedding size of every benchmarked network (head `direct`).
const EMBEDDING_DIM: usize = 128;

/// Arguments of `dml bench train`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Networks, comma separated: small-conv-net, resnet18, resnet50.
    #[arg(
        long,
        value_name = "NAME,..",
        value_delimiter = ',',
        default_value = "small-conv-net,resnet18,resnet50"
    )]
    models: Vec<String>,
    /// Timed steps per (network, side), after the warm-up steps; the table shows the median
    /// and the range.
    #[arg(long, value_name = "NUM", default_value_t = 5)]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, value_name = "NUM", default_value_t = 2)]
    warmup: usize,
    /// A Python with torch and pytorch-metric-learning: adds PyTorch's side, timed by
    /// scripts/bench_torch_train_step.py.
    #[arg(long, value_name = "PYTHON")]
    torch: Option<PathBuf>,
    /// Skip the baseline of burn's composed operations (slow on the ResNets).
    #[arg(long)]
    no_baseline: bool,
    /// Internal: measure one network on one side in this process and print it as JSON.
    #[arg(long, hide = true, num_args = 2, value_names = ["MODEL", "SIDE"])]
    single: Option<Vec<String>>,
}

/// What one child reports; the PyTorch script prints the same fields (and a few more).
#[derive(Debug, Serialize, Deserialize)]
struct Measurement {
    /// Milliseconds of each timed step.
    step_ms: Vec<f64>,
    /// Peak resident memory of the process, MiB.
    peak_rss_mib: Option<f64>,
    /// Operations of one forward pass's convolutions (dml only).
    #[serde(default)]
    forward_flops: Option<u64>,
}

/// Which implementation a child runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Kernels,
    Composed,
}

impl Side {
    fn arg(self) -> &'static str {
        match self {
            Side::Kernels => "dml",
            Side::Composed => "burn",
        }
    }
}

/// Runs `dml bench train`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    if let Some(single) = &args.single {
        let model = model(&single[0])?;
        let side = match single[1].as_str() {
            "dml" => Side::Kernels,
            "burn" => Side::Composed,
            other => bail!("--single: unknown side `{other}`"),
        };
        let m = measure(model, side, &args)?;
        outln!("{}", serde_json::to_string(&m)?)?;
        return Ok(());
    }
    let models = args
        .models
        .iter()
        .map(|name| model(name))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let script = match &args.torch {
        Some(_) => Some(torch_script()?),
        None => None,
    };
    let threads = rayon::current_num_threads();
    let gemm = gemm_gflops();
    outln!(
        "dml bench train: forward + triplet loss (batch-hard) + backward + Adam, {threads} \
         thread(s), median [min-max] of {} step(s) after {} warm-up, one child process per cell; \
         GEMM reference {gemm:.1} GFLOP/s",
        args.steps,
        args.warmup
    )?;
    outln!(
        "| network | batch | dml ms | dml img/s | burn ops ms | dml / burn | PyTorch ms | dml / PyTorch \
         | dml GFLOP/s (% of GEMM) | peak MiB dml / burn / PyTorch |"
    )?;
    outln!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for model in models {
        let cell = |m: &anyhow::Result<Measurement>| match m {
            Ok(m) => {
                let (med, lo, hi) = spread(&m.step_ms);
                format!("{med:.1} [{lo:.1}-{hi:.1}]")
            }
            Err(e) => format!("failed: {e:#}"),
        };
        let dml = child(model, Side::Kernels, threads, &args);
        let burn = if args.no_baseline {
            Err(anyhow::anyhow!("skipped"))
        } else {
            child(model, Side::Composed, threads, &args)
        };
        let torch = match (&args.torch, &script) {
            (Some(python), Some(script)) => torch_child(python, script, model, threads, &args),
            _ => Err(anyhow::anyhow!("no --torch")),
        };
        let median_of =
            |m: &anyhow::Result<Measurement>| m.as_ref().ok().map(|m| spread(&m.step_ms).0);
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => format!("{:.2}x", b / a),
            _ => "-".into(),
        };
        let images = model.batch[0] as f64;
        let dml_ms = median_of(&dml);
        let gflops = match (&dml, dml_ms) {
            (
                Ok(Measurement {
                    forward_flops: Some(f),
                    ..
                }),
                Some(ms),
            ) => {
                let g = 3.0 * *f as f64 / (ms * 1e6);
                format!("{g:.1} ({:.0}%)", 100.0 * g / gemm)
            }
            _ => "-".into(),
        };
        let peak = |m: &anyhow::Result<Measurement>| {
            m.as_ref()
                .ok()
                .and_then(|m| m.peak_rss_mib)
                .map_or("-".into(), |p| format!("{p:.0}"))
        };
        outln!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {gflops} | {} / {} / {} |",
            model.name,
            format!("{:?}", model.batch).replace(' ', ""),
            cell(&dml),
            dml_ms.map_or("-".into(), |ms| format!("{:.1}", images / ms * 1e3)),
            if args.no_baseline {
                "-".into()
            } else {
                cell(&burn)
            },
            ratio(dml_ms, median_of(&burn)),
            if args.torch.is_some() {
                cell(&torch)
            } else {
                "-".into()
            },
            ratio(dml_ms, median_of(&torch)),
            peak(&dml),
            peak(&burn),
            peak(&torch),
        )?;
    }
    Ok(())
}

fn model(name: &str) -> anyhow::Result<&'static Model> {
    MODELS.iter().find(|m| m.name == name).with_context(|| {
        let names: Vec<_> = MODELS.iter().map(|m| m.name).collect();
        format!("unknown network `{name}`; networks: {}", names.join(", "))
    })
}

/// Median, minimum and maximum.
fn spread(ms: &[f64]) -> (f64, f64, f64) {
    let mut sorted = ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    (
        sorted[sorted.len() / 2],
        sorted[0],
        sorted[sorted.len() - 1],
    )
}

/// Runs one (network, side) in a fresh child process of this binary.
fn child(model: &Model, side: Side, threads: usize, args: &Args) -> anyhow::Result<Measurement> {
    let exe = std::env::current_exe().context("cannot find the dml executable")?;
    let mut command = Command::new(exe);
    command
        .args(["--threads", &threads.to_string(), "bench", "train"])
        .args([
            "--steps",
            &args.steps.to_string(),
            "--warmup",
            &args.warmup.to_string(),
        ])
        .args(["--single", model.name, side.arg()]);
    parse_last_line(command)
}

/// Runs PyTorch's side through the script.
fn torch_child(
    python: &Path,
    script: &Path,
    model: &Model,
    threads: usize,
    args: &Args,
) -> anyhow::Result<Measurement> {
    let which = match model.backbone {
        Backbone::SmallConvNet => "small",
        Backbone::ResNet18 => "resnet18",
        Backbone::ResNet50 => "resnet50",
    };
    let mut command = Command::new(python);
    command
        .arg(script)
        .arg(which)
        .args([
            "--steps",
            &args.steps.to_string(),
            "--warmup",
            &args.warmup.to_string(),
        ])
        .args(["--threads", &threads.to_string(), "--json"]);
    parse_last_line(command)
}

fn parse_last_line(mut command: Command) -> anyhow::Result<Measurement> {
    let out = command
        .output()
        .with_context(|| format!("cannot start {:?}", command.get_program()))?;
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

/// scripts/bench_torch_train_step.py, looked for beside the current directory's repository.
fn torch_script() -> anyhow::Result<PathBuf> {
    let path = PathBuf::from("scripts/bench_torch_train_step.py");
    if !path.is_file() {
        bail!(
            "--torch needs {} (run dml bench train from the repository root)",
            path.display()
        );
    }
    Ok(path)
}

/// Times training steps of one network in this process.
fn measure(model: &Model, side: Side, args: &Args) -> anyhow::Result<Measurement> {
    let device = Device::flex().autodiff();
    let config = EmbeddingNetConfig {
        backbone: model.backbone,
        head: HeadKind::Direct,
        embedding_dim: EMBEDDING_DIM,
        in_channels: model.batch[1],
    };
    let mut net = config.init_seeded(0, &device)?;
    let mut optimizer = AdamConfig::new().init();
    let loss = build_metric_loss(
        "TripletMarginLoss",
        Some(&json!({"margin": 0.2})),
        Some(("BatchHardMiner", None)),
        Default::default(),
    )?;
    let loss = LossModule::new(loss, EMBEDDING_DIM, 0, &device);
    let [b, c, h, w] = model.batch;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let pixels: Vec<f32> = (0..b * c * h * w)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let images = Tensor::<4>::from_data(TensorData::new(pixels, model.batch), &device);
    let labels: Vec<i64> = (0..b).map(|i| (i % model.classes) as i64).collect();
    let run = |f: &mut dyn FnMut() -> anyhow::Result<()>| match side {
        Side::Kernels => f(),
        Side::Composed => ops::with_composed_ops(f),
    };
    let mut step_ms = Vec::with_capacity(args.steps);
    let mut forward_flops = None;
    for step in 0..args.warmup + args.steps {
        let start = Instant::now();
        run(&mut || {
            let (embeddings, flops) = ops::count_flops(|| net.forward(images.clone()));
            forward_flops.get_or_insert(flops);
            let out = loss.forward(embeddings, &labels)?;
            let grads = GradientsParams::from_grads(out.loss.backward(), &net);
            net = optimizer.step(1e-4, net.clone(), grads);
            device.sync().context("device sync")?;
            Ok(())
        })?;
        if step >= args.warmup {
            step_ms.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(Measurement {
        step_ms,
        peak_rss_mib: peak_rss_mib(),
        forward_flops: (side == Side::Kernels).then_some(forward_flops.unwrap_or(0)),
    })
}

/// GFLOP/s of a 2048 x 2048 x 2048 f32 product on the current thread pool, best of 3.
fn gemm_gflops() -> f64 {
    let n = 2048;
    let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.1).collect();
    let mut c = vec![0.0f32; n * n];
    let best = (0..3)
        .map(|_| {
            let start = Instant::now();
            matmul(
                &a,
                Transpose::No,
                &a,
                Transpose::No,
                n,
                n,
                n,
                &mut c,
                0.0,
                1.0,
            );
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    2.0 * (n * n * n) as f64 / best / 1e9
}
