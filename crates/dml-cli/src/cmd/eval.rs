//! `dml eval`: exact retrieval and clustering metrics of saved embeddings.
//!
//! Leave-one-out by default (every item queries all the others, itself excluded by index);
//! with `--query-embeddings` / `--query-labels`, the queries search `--embeddings` as a
//! separate gallery (the In-Shop protocol).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use dml_eval::{Distance, EvalConfig, Evaluation, Gallery, KMeansConfig, Metric, evaluate, io};
use serde_json::{Map, Value, json};

/// Exact retrieval and clustering metrics of saved embeddings: Recall@K, precision@1,
/// R-precision, MAP@R, MAP, MRR, NMI and AMI.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Reference embeddings: .npy (2-D float32/float64) or .safetensors.
    ///
    /// Without --query-embeddings these are also the queries (leave-one-out).
    #[arg(long, value_name = "PATH")]
    embeddings: PathBuf,
    /// Labels of --embeddings: .npy (integers) or text, one label per line.
    #[arg(long, value_name = "PATH")]
    labels: PathBuf,
    /// Separate query embeddings; --embeddings is then the gallery.
    #[arg(long, value_name = "PATH", requires = "query_labels")]
    query_embeddings: Option<PathBuf>,
    /// Labels of --query-embeddings (same formats as --labels).
    #[arg(long, value_name = "PATH", requires = "query_embeddings")]
    query_labels: Option<PathBuf>,
    /// Tensor to read from .safetensors files (default: the only one).
    #[arg(long, value_name = "NAME")]
    tensor: Option<String>,
    /// K values of Recall@K, comma separated (default: 1,2,4,8).
    ///
    /// Each K must be at most the number of reference items a query can
    /// see (one fewer than the set in leave-one-out mode).
    #[arg(long, value_name = "K,..", value_delimiter = ',')]
    k: Option<Vec<usize>>,
    /// Metrics to compute, comma separated (default: all).
    ///
    /// Keys: recall_at_k, precision_at_1, r_precision, map_at_r, map, mrr,
    /// nmi, ami. With --json, metrics not computed are null.
    #[arg(long, value_name = "KEYS")]
    metrics: Option<String>,
    /// How closeness is measured.
    #[arg(long, value_name = "DIST", default_value = "squared-euclidean")]
    distance: DistanceArg,
    /// Score this clustering of the queries with NMI/AMI instead of k-means.
    ///
    /// .npy (integers) or text, one cluster per query.
    #[arg(long, value_name = "PATH")]
    cluster_labels: Option<PathBuf>,
    /// Seed of k-means (initialisation and restarts; default: 0).
    #[arg(long, value_name = "NUM")]
    seed: Option<u64>,
    /// k-means restarts, the lowest inertia is kept (default: 3).
    #[arg(long, value_name = "NUM")]
    kmeans_restarts: Option<usize>,
    /// Lloyd iterations per k-means restart, at most (default: 20).
    ///
    /// k-means also stops at 8e11 multiply-adds in all (at 60000 items x
    /// 12000 classes: one restart, one iteration); the table says what ran.
    #[arg(long, value_name = "NUM")]
    kmeans_iters: Option<usize>,
    /// Print one JSON object instead of a table.
    ///
    /// Keys: recall_at_k (object keyed by K), precision_at_1, r_precision,
    /// map_at_r, map, mrr, nmi, ami, num_queries, num_reference, seconds
    /// (object: seconds per stage). NaN (every query lone) is null.
    #[arg(long)]
    json: bool,
}

/// `--distance` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum DistanceArg {
    SquaredEuclidean,
    InnerProduct,
    Cosine,
}

impl From<DistanceArg> for Distance {
    fn from(d: DistanceArg) -> Self {
        match d {
            DistanceArg::SquaredEuclidean => Distance::SquaredEuclidean,
            DistanceArg::InnerProduct => Distance::InnerProduct,
            DistanceArg::Cosine => Distance::Cosine,
        }
    }
}

/// The survey's Recall@K values.
const DEFAULT_KS: [usize; 4] = [1, 2, 4, 8];

/// The evaluation `dml eval` runs where no flag changes it: every metric, Recall@1,2,4,8,
/// squared Euclidean distance, k-means' defaults. `dml gallery` and the galleries of `dml run`
/// and `dml train` summarise with it, so their numbers are the ones `dml eval` prints.
pub(crate) fn default_config() -> EvalConfig {
    EvalConfig {
        metrics: Metric::ALL.to_vec(),
        recall_ks: DEFAULT_KS.to_vec(),
        distance: DistanceArg::SquaredEuclidean.into(),
        kmeans: KMeansConfig::new(1),
        cluster_labels: None,
    }
}

/// A flag whose metric is not computed would be silently ignored: it is an error instead.
fn check_flags_apply(args: &Args, metrics: &[Metric]) -> anyhow::Result<()> {
    if args.k.is_some() && !metrics.contains(&Metric::RecallAtK) {
        bail!("--k sets the K of Recall@K, which --metrics leaves out");
    }
    let kmeans_flags = [
        (args.seed.is_some(), "--seed"),
        (args.kmeans_restarts.is_some(), "--kmeans-restarts"),
        (args.kmeans_iters.is_some(), "--kmeans-iters"),
    ];
    if let Some((_, flag)) = kmeans_flags.iter().find(|(given, _)| *given) {
        if args.cluster_labels.is_some() {
            bail!("{flag} sets the k-means clustering, which --cluster-labels replaces");
        }
        if !metrics
            .iter()
            .any(|m| matches!(m, Metric::Nmi | Metric::Ami))
        {
            bail!("{flag} sets the k-means clustering of NMI and AMI, which --metrics leaves out");
        }
    }
    Ok(())
}

/// Runs `dml eval`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let start = Instant::now();
    let metrics = match &args.metrics {
        Some(list) => Metric::parse_list(list).context("--metrics")?,
        None => default_config().metrics,
    };
    check_flags_apply(&args, &metrics)?;
    let ks = args.k.clone().unwrap_or_else(|| default_config().recall_ks);
    if let Some(&k) = ks.iter().find(|&&k| k == 0) {
        bail!("--k: K = {k} is invalid: Recall@K needs K >= 1");
    }
    let tensor = args.tensor.as_deref();
    let reference = io::read_embeddings(&args.embeddings, tensor)?;
    let reference_labels = io::read_labels(&args.labels)?;
    check_rows(
        &args.labels,
        reference_labels.len(),
        &args.embeddings,
        reference.rows(),
    )?;
    let query = match (&args.query_embeddings, &args.query_labels) {
        (Some(e), Some(l)) => {
            let embeddings = io::read_embeddings(e, tensor)?;
            let labels = io::read_labels(l)?;
            check_rows(l, labels.len(), e, embeddings.rows())?;
            if embeddings.dim() != reference.dim() {
                bail!(
                    "{} has dimension {} but {} has dimension {}",
                    e.display(),
                    embeddings.dim(),
                    args.embeddings.display(),
                    reference.dim()
                );
            }
            Some((embeddings, labels))
        }
        _ => None,
    };
    let cluster_labels = match &args.cluster_labels {
        Some(path) => {
            let clusters = io::read_labels(path)?;
            let (queries_path, queries) = match &query {
                Some((e, _)) => (args.query_embeddings.as_deref().unwrap_or(path), e.rows()),
                None => (args.embeddings.as_path(), reference.rows()),
            };
            check_rows(path, clusters.len(), queries_path, queries)?;
            Some(clusters.ids().to_vec())
        }
        None => None,
    };
    let config = EvalConfig {
        metrics,
        recall_ks: ks,
        distance: args.distance.into(),
        kmeans: {
            let defaults = default_config().kmeans;
            KMeansConfig {
                restarts: args.kmeans_restarts.unwrap_or(defaults.restarts),
                max_iters: args.kmeans_iters.unwrap_or(defaults.max_iters),
                seed: args.seed.unwrap_or(defaults.seed),
                ..defaults
            }
        },
        cluster_labels,
    };
    let load_seconds = start.elapsed().as_secs_f64();
    let evaluation = match &query {
        None => evaluate(&reference, reference_labels.ids(), None, &config)?,
        Some((embeddings, labels)) => {
            let (reference_labels, query_labels) = reference_labels.unify(labels);
            let gallery = Gallery {
                embeddings: &reference,
                labels: reference_labels.ids(),
            };
            evaluate(embeddings, query_labels.ids(), Some(gallery), &config)?
        }
    };
    let mut seconds = vec![("load", load_seconds)];
    seconds.extend(evaluation.seconds.iter().copied());
    seconds.push(("total", start.elapsed().as_secs_f64()));
    let report = Report {
        evaluation: &evaluation,
        seconds: &seconds,
        distance: config.distance,
        leave_one_out: query.is_none(),
        given_clusters: args.cluster_labels.is_some(),
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report.json())?)?;
    } else {
        out!("{}", report.table())?;
    }
    Ok(())
}

/// The row-count check between a labels file and its embeddings, naming both files.
pub(crate) fn check_rows(
    labels: &Path,
    n_labels: usize,
    embeddings: &Path,
    rows: usize,
) -> anyhow::Result<()> {
    if n_labels != rows {
        bail!(
            "{} has {n_labels} labels but {} has {rows} rows",
            labels.display(),
            embeddings.display()
        );
    }
    Ok(())
}

/// What `dml eval` prints.
struct Report<'a> {
    evaluation: &'a Evaluation,
    seconds: &'a [(&'static str, f64)],
    distance: Distance,
    leave_one_out: bool,
    given_clusters: bool,
}

impl Report<'_> {
    /// The value of a single-number metric, when computed.
    fn value(&self, metric: Metric) -> Option<f64> {
        if !self.evaluation.metrics.contains(&metric) {
            return None;
        }
        let r = self.evaluation.retrieval.as_ref();
        let mi = self.evaluation.mutual_info.as_ref();
        match metric {
            Metric::RecallAtK => None,
            Metric::PrecisionAt1 => r.map(|r| r.precision_at_1),
            Metric::RPrecision => r.map(|r| r.r_precision),
            Metric::MapAtR => r.map(|r| r.map_at_r),
            Metric::Map => r.map(|r| r.map),
            Metric::Mrr => r.map(|r| r.mrr),
            Metric::Nmi => mi.map(|m| m.nmi),
            Metric::Ami => mi.map(|m| m.ami),
        }
    }

    fn recall(&self) -> Option<&[(usize, f64)]> {
        if !self.evaluation.metrics.contains(&Metric::RecallAtK) {
            return None;
        }
        self.evaluation
            .retrieval
            .as_ref()
            .map(|r| r.recall_at_k.as_slice())
    }

    fn json(&self) -> Value {
        let mut out = Map::new();
        out.insert(
            "recall_at_k".into(),
            match self.recall() {
                Some(recall) => Value::Object(
                    recall
                        .iter()
                        .map(|(k, v)| (k.to_string(), json!(v)))
                        .collect(),
                ),
                None => Value::Null,
            },
        );
        for metric in Metric::ALL.into_iter().filter(|&m| m != Metric::RecallAtK) {
            out.insert(metric.key().into(), json!(self.value(metric)));
        }
        out.insert("num_queries".into(), json!(self.evaluation.num_queries));
        out.insert("num_reference".into(), json!(self.evaluation.num_reference));
        out.insert(
            "seconds".into(),
            Value::Object(
                self.seconds
                    .iter()
                    .map(|(s, t)| (s.to_string(), json!(t)))
                    .collect(),
            ),
        );
        Value::Object(out)
    }

    fn table(&self) -> String {
        let e = self.evaluation;
        let mut out = String::new();
        let mode = if self.leave_one_out {
            "leave-one-out (each item queries all others)".to_string()
        } else {
            format!("against a gallery of {}", e.num_reference)
        };
        out.push_str(&format!(
            "{} queries, {mode}, {}\n\n",
            e.num_queries,
            self.distance.name()
        ));
        out.push_str(&format!("{:<16} {:>8}\n", "metric", "value"));
        let fmt = |v: f64| {
            if v.is_nan() {
                "n/a".to_string()
            } else {
                format!("{v:.4}")
            }
        };
        for (k, v) in self.recall().unwrap_or_default() {
            out.push_str(&format!("{:<16} {:>8}\n", format!("recall@{k}"), fmt(*v)));
        }
        for metric in Metric::ALL.into_iter().filter(|&m| m != Metric::RecallAtK) {
            if let Some(v) = self.value(metric) {
                out.push_str(&format!("{:<16} {:>8}\n", metric.key(), fmt(v)));
            }
        }
        out.push('\n');
        if let Some(r) = &e.retrieval
            && r.num_lone_queries > 0
        {
            out.push_str(&format!(
                "{} of {} queries have no other item of their label: Recall@K counts them as \
                 misses, the other rank metrics leave them out\n",
                r.num_lone_queries, r.num_queries
            ));
        }
        if let Some(c) = &e.clustering {
            out.push_str(&format!(
                "nmi/ami: k-means with k = {} (classes), best of {} restart(s), {} Lloyd \
                 iteration(s), {}\n",
                c.clusters,
                c.restarts,
                c.iterations,
                if c.converged {
                    "converged"
                } else {
                    "stopped by the iteration or work limit"
                }
            ));
        } else if self.given_clusters && e.mutual_info.is_some() {
            out.push_str("nmi/ami: of the given --cluster-labels\n");
        }
        let times: Vec<String> = self
            .seconds
            .iter()
            .map(|(s, t)| format!("{s} {t:.3}"))
            .collect();
        out.push_str(&format!("seconds: {}\n", times.join(", ")));
        out
    }
}

#[cfg(test)]
mod tests {
    fn parse(extra: &[&str]) -> Result<super::Args, clap::Error> {
        let mut argv = vec!["--embeddings", "e.npy", "--labels", "l.npy"];
        argv.extend_from_slice(extra);
        crate::cmd::parse_args(&argv)
    }

    #[test]
    fn defaults_are_the_survey_ks_and_all_metrics() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.k, None);
        assert!(args.metrics.is_none() && !args.json);
        assert_eq!(
            (args.seed, args.kmeans_restarts, args.kmeans_iters),
            (None, None, None)
        );
    }

    /// What `dml gallery` shares with `dml eval` is what `dml eval` runs without flags.
    #[test]
    fn the_default_config_is_what_no_flags_give() {
        let args = parse(&[]).unwrap();
        let config = super::default_config();
        assert_eq!(dml_eval::Distance::from(args.distance), config.distance);
        assert_eq!(config.recall_ks, [1, 2, 4, 8]);
        assert_eq!(config.metrics, dml_eval::Metric::ALL);
        assert!(config.cluster_labels.is_none());
    }

    #[test]
    fn k_is_a_comma_list_and_queries_come_in_pairs() {
        assert_eq!(
            parse(&["--k", "1,10,100"]).unwrap().k,
            Some(vec![1, 10, 100])
        );
        assert!(parse(&["--k", "1,x"]).is_err());
        assert!(parse(&["--query-embeddings", "q.npy"]).is_err());
        assert!(parse(&["--query-labels", "q.txt"]).is_err());
        assert!(parse(&["--query-embeddings", "q.npy", "--query-labels", "q.txt"]).is_ok());
        assert!(parse(&["--distance", "cosine"]).is_ok());
        assert!(parse(&["--distance", "manhattan"]).is_err());
    }
}
