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

/// Time and memory of `dml eval`'s engine on seeded synthetic embeddings (queries = reference).
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
    ///
    /// The default 2.2 gives recall@1 about 0.77 and MAP@R about 0.42 at
    /// 60000 x 12000, close to published Stanford Online Products models.
    #[arg(long, value_name = "NUM", default_value_t = 2.2)]
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
pub(crate) struct Size {
    pub(crate) items: usize,
    pub(crate) classes: usize,
}

/// `ITEMSxCLASSES`, at least two items per class.
pub(crate) fn parse_size(s: &str) -> anyhow::Result<Size> {
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
    outln!(
        "dml bench eval: dim {}, noise {}, seed {}, {} thread(s), median of {} run(s)",
        args.dim,
        args.noise,
        args.seed,
        rayon::current_num_threads(),
        args.repeats
    )?;
    outln!(
        "| items x classes | 8-NN search (CPU) | GFLOP/s | all k-NN metrics (CPU) | \
         NMI + AMI (CPU; k-means) | all metrics | peak RSS | RSS increase | recall@1 | map@r | \
         nmi |"
    )?;
    outln!("|---|---|---|---|---|---|---|---|---|---|---|")?;
    for size in sizes {
        let base = peak_rss_kib(true);
        let data = synthetic(size, args.dim, args.noise, args.seed);
        let n = size.items as f64;
        let search = median(args.repeats, || {
            knn(
                &data.0,
                QueryMode::LeaveOneOut,
                Distance::SquaredEuclidean,
                8,
            )
            .map(|_| ())
        })?;
        // Full-matrix equivalent (what faiss performs): 2 N^2 D. dml computes half of it.
        let gflops = 2.0 * n * n * args.dim as f64 / search.wall / 1e9;
        let retrieval = only(
            &data,
            Metric::ALL.into_iter().filter(|m| m.is_retrieval()),
            args.seed,
        );
        let knn_metrics = median(args.repeats, || retrieval().map(|_| ()))?;
        let clustering = only(&data, [Metric::Nmi, Metric::Ami], args.seed);
        let mut plan = String::new();
        let nmi_ami = median(args.repeats, || {
            clustering().map(|e| {
                if let Some(c) = e.clustering {
                    plan = format!("{} restart x {} iter", c.restarts, c.iterations);
                }
            })
        })?;
        let everything = only(&data, Metric::ALL, args.seed);
        let mut sanity = (0.0, 0.0, 0.0);
        let total = median(args.repeats, || {
            everything().map(|e| {
                let r = e
                    .retrieval
                    .as_ref()
                    .expect("retrieval metrics were asked for");
                let nmi = e.mutual_info.map_or(f64::NAN, |m| m.nmi);
                sanity = (r.recall_at_k[0].1, r.map_at_r, nmi);
            })
        })?;
        let peak = peak_rss_kib(false);
        outln!(
            "| {} x {} | {search} | {gflops:.0} | {knn_metrics} | {nmi_ami}; {plan} | {total} | \
             {} | {} | {:.4} | {:.4} | {:.4} |",
            size.items,
            size.classes,
            mib(peak),
            match (peak, base) {
                (Some(p), Some(b)) => format!("{:.0} MiB", p.saturating_sub(b) as f64 / 1024.0),
                _ => "n/a".into(),
            },
            sanity.0,
            sanity.1,
            sanity.2,
        )?;
    }
    Ok(())
}

/// A closure evaluating `metrics` of the synthetic data, leave-one-out.
fn only(
    data: &(Embeddings, Vec<u32>),
    metrics: impl IntoIterator<Item = Metric>,
    seed: u64,
) -> impl Fn() -> dml_eval::Result<dml_eval::Evaluation> + '_ {
    let metrics: Vec<Metric> = metrics.into_iter().collect();
    move || {
        let config = EvalConfig {
            metrics: metrics.clone(),
            kmeans: KMeansConfig::new(1).with_seed(seed),
            ..EvalConfig::default()
        };
        evaluate(&data.0, &data.1, None, &config)
    }
}

/// Wall-clock and CPU (all threads) seconds of one measurement.
#[derive(Debug, Clone, Copy)]
struct Timing {
    wall: f64,
    cpu: Option<f64>,
}

impl std::fmt::Display for Timing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.cpu {
            Some(cpu) => write!(f, "{:.3} s ({cpu:.2} s)", self.wall),
            None => write!(f, "{:.3} s", self.wall),
        }
    }
}

/// The run with the median wall-clock time among `repeats` runs of `f`.
fn median(repeats: usize, mut f: impl FnMut() -> dml_eval::Result<()>) -> anyhow::Result<Timing> {
    let mut runs = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let (start, cpu) = (Instant::now(), cpu_seconds());
        f()?;
        runs.push(Timing {
            wall: start.elapsed().as_secs_f64(),
            cpu: cpu.zip(cpu_seconds()).map(|(a, b)| b - a),
        });
    }
    runs.sort_by(|a, b| a.wall.total_cmp(&b.wall));
    Ok(runs[runs.len() / 2])
}

/// User + system CPU seconds of this process so far (all threads), from /proc/self/stat in
/// the kernel's fixed 100 Hz user-visible clock ticks. On a busy machine the wall-clock time
/// includes waiting for a core and the CPU time does not, which makes the two worth showing.
pub(crate) fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

/// Seeded clustered unit vectors and their labels (module docs).
pub(crate) fn synthetic(size: Size, dim: usize, noise: f64, seed: u64) -> (Embeddings, Vec<u32>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_items_x_classes() {
        let s = parse_size("60000x12000").unwrap();
        assert_eq!((s.items, s.classes), (60000, 12000));
        assert!(parse_size("60000").is_err());
        assert!(parse_size("10x0").is_err());
        assert!(
            parse_size("10x6").is_err(),
            "two items per class are needed"
        );
    }

    #[test]
    fn synthetic_data_is_seeded_unit_norm_and_balanced() {
        let size = Size {
            items: 40,
            classes: 8,
        };
        let (e, labels) = synthetic(size, 16, 2.2, 3);
        assert_eq!(synthetic(size, 16, 2.2, 3).0, e);
        assert_ne!(synthetic(size, 16, 2.2, 4).0, e);
        for i in 0..e.rows() {
            let norm: f32 = e.row(i).iter().map(|v| v * v).sum();
            assert!((norm - 1.0).abs() < 1e-5);
        }
        assert!((0..8).all(|c| labels.iter().filter(|&&l| l == c).count() == 5));
    }
}
