//! `dml bench eval`: time and memory of the evaluation engine on seeded synthetic embeddings.
//!
//! Data: `classes` random unit centres in `dim` dimensions; item `i` belongs to class
//! `i % classes` and is its centre plus Gaussian noise of total norm about `--noise`, then
//! L2-normalised (unit-norm embeddings, as a trained model with a normalising head gives).
//! Queries = reference (leave-one-out), as in the faiss / PML measurements.

use std::time::Instant;

use anyhow::{Context, bail};
use dml_eval::{Distance, Embeddings, EvalConfig, KMeansConfig, Metric, QueryMode, evaluate, knn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Arguments of `dml bench eval`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Problem sizes as ITEMSxCLASSES, comma separated.
    #[arg(
        long,
        value_name = "NxC,..",
        value_delimiter = ',',
        default_value = "10000x100,60000x12000"
    )]
    sizes: Vec<String>,
    /// Embedding dimension.
    #[arg(long, value_name = "NUM", default_value_t = 512)]
    dim: usize,
    /// Noise norm relative to the unit class centres (larger: harder data).
    #[arg(long, value_name = "NUM", default_value_t = 1.0)]
    noise: f64,
    /// Seed of the synthetic data (and of k-means).
    #[arg(long, value_name = "NUM", default_value_t = 0)]
    seed: u64,
    /// Runs of each measurement; the table shows medians.
    #[arg(long, value_name = "NUM", default_value_t = 1)]
    repeats: usize,
}

/// One size parsed from `--sizes`.
#[derive(Debug, Clone, Copy)]
struct Size {
    items: usize,
    classes: usize,
}

fn parse_size(s: &str) -> anyhow::Result<Size> {
    let (n, c) = s
        .split_once('x')
        .with_context(|| format!("--sizes: `{s}` is not ITEMSxCLASSES (e.g. 10000x100)"))?;
    let items: usize = n
        .trim()
        .parse()
        .with_context(|| format!("--sizes: `{n}` is not a count"))?;
    let classes: usize = c
        .trim()
        .parse()
        .with_context(|| format!("--sizes: `{c}` is not a count"))?;
    if classes == 0 || items < 2 * classes {
        bail!("--sizes: {s} needs at least one class and two items per class");
    }
    Ok(Size { items, classes })
}

/// Runs `dml bench eval`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let sizes = args
        .sizes
        .iter()
        .map(|s| parse_size(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if args.dim == 0 || args.repeats == 0 {
        bail!("--dim and --repeats must be at least 1");
    }
    if args.noise.is_nan() || args.noise < 0.0 {
        bail!("--noise must be >= 0");
    }
    println!(
        "dml bench eval: dim {}, noise {}, seed {}, {} thread(s), median of {} run(s)",
        args.dim,
        args.noise,
        args.seed,
        rayon::current_num_threads(),
        args.repeats
    );
    println!(
        "| items x classes | 8-NN search | GFLOP/s | all k-NN metrics | NMI + AMI (k-means) | \
         all metrics | peak RSS | RSS increase | recall@1 | map@r | nmi |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for size in sizes {
        let base = peak_rss_kib(true);
        let data = synthetic(size, args.dim, args.noise, args.seed);
        let n = size.items as f64;
        let search = median(args.repeats, || {
            let t = Instant::now();
            knn(
                &data.0,
                QueryMode::LeaveOneOut,
                Distance::SquaredEuclidean,
                8,
            )
            .map(|_| t.elapsed().as_secs_f64())
        })?;
        // Full-matrix equivalent (what faiss performs): 2 N^2 D. dml computes half of it.
        let gflops = 2.0 * n * n * args.dim as f64 / search / 1e9;
        let retrieval = only(
            &data,
            vec![
                Metric::RecallAtK,
                Metric::PrecisionAt1,
                Metric::RPrecision,
                Metric::MapAtR,
                Metric::Map,
                Metric::Mrr,
            ],
            args.seed,
        );
        let knn_metrics = median(args.repeats, || retrieval().map(|e| stage(&e, "retrieval")))?;
        let clustering = only(&data, vec![Metric::Nmi, Metric::Ami], args.seed);
        let mut plan = String::new();
        let nmi_ami = median(args.repeats, || {
            clustering().map(|e| {
                if let Some(c) = e.clustering {
                    plan = format!("{} restart(s) x {} iter(s)", c.restarts, c.iterations);
                }
                stage(&e, "kmeans") + stage(&e, "mutual_info")
            })
        })?;
        let everything = only(&data, Metric::ALL.to_vec(), args.seed);
        let mut sanity = (0.0, 0.0, 0.0);
        let total = median(args.repeats, || {
            let t = Instant::now();
            everything().map(|e| {
                let r = e
                    .retrieval
                    .as_ref()
                    .expect("retrieval metrics were asked for");
                let nmi = e.mutual_info.map_or(f64::NAN, |m| m.nmi);
                sanity = (r.recall_at_k[0].1, r.map_at_r, nmi);
                t.elapsed().as_secs_f64()
            })
        })?;
        let peak = peak_rss_kib(false);
        println!(
            "| {} x {} | {search:.3} s | {gflops:.0} | {knn_metrics:.3} s | {nmi_ami:.3} s ({plan}) | \
             {total:.3} s | {} | {} | {:.4} | {:.4} | {:.4} |",
            size.items,
            size.classes,
            mib(peak),
            match (peak, base) {
                (Some(p), Some(b)) => format!("{:.0} MiB", (p.saturating_sub(b)) as f64 / 1024.0),
                _ => "n/a".into(),
            },
            sanity.0,
            sanity.1,
            sanity.2,
        );
    }
    Ok(())
}

/// A closure evaluating `metrics` of the synthetic data, leave-one-out.
fn only(
    data: &(Embeddings, Vec<u32>),
    metrics: Vec<Metric>,
    seed: u64,
) -> impl Fn() -> dml_eval::Result<dml_eval::Evaluation> + '_ {
    move || {
        let config = EvalConfig {
            metrics: metrics.clone(),
            kmeans: KMeansConfig::new(1).with_seed(seed),
            ..EvalConfig::default()
        };
        evaluate(&data.0, &data.1, None, &config)
    }
}

fn stage(e: &dml_eval::Evaluation, name: &str) -> f64 {
    e.seconds
        .iter()
        .filter(|(s, _)| *s == name)
        .map(|(_, t)| t)
        .sum()
}

/// Median of `repeats` runs of `f` (seconds).
fn median(repeats: usize, mut f: impl FnMut() -> dml_eval::Result<f64>) -> anyhow::Result<f64> {
    let mut times = (0..repeats)
        .map(|_| f())
        .collect::<dml_eval::Result<Vec<f64>>>()?;
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Seeded clustered unit vectors and their labels (module docs).
fn synthetic(size: Size, dim: usize, noise: f64, seed: u64) -> (Embeddings, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let centres: Vec<Vec<f64>> = (0..size.classes)
        .map(|_| normalized((0..dim).map(|_| gaussian(&mut rng)).collect()))
        .collect();
    let scale = noise / (dim as f64).sqrt();
    let mut data = Vec::with_capacity(size.items * dim);
    let mut labels = Vec::with_capacity(size.items);
    for i in 0..size.items {
        let c = i % size.classes;
        let row: Vec<f64> = centres[c]
            .iter()
            .map(|&m| m + scale * gaussian(&mut rng))
            .collect();
        data.extend(normalized(row).into_iter().map(|v| v as f32));
        labels.push(c as u32);
    }
    let embeddings = Embeddings::new(data, dim).expect("synthetic data is finite");
    (embeddings, labels)
}

fn normalized(v: Vec<f64>) -> Vec<f64> {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
    v.into_iter().map(|x| x / norm).collect()
}

/// A standard normal draw (Box-Muller): five lines instead of a dependency on rand_distr.
fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    let u: f64 = 1.0 - rng.random::<f64>();
    let v: f64 = rng.random();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// Peak resident set size (VmHWM) in KiB; with `reset`, first clears the peak so it is
/// measured from now on (Linux `clear_refs` 5). `None` where /proc is unavailable.
fn peak_rss_kib(reset: bool) -> Option<u64> {
    if reset {
        // Best effort: without it the peak simply includes earlier sizes.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
    }
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = if reset { "VmRSS:" } else { "VmHWM:" };
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".into(), |k| format!("{:.0} MiB", k as f64 / 1024.0))
}
