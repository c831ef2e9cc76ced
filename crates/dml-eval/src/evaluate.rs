//! [`evaluate`]: every requested metric of one embedding in one call, with the time of each
//! stage: what `dml eval` runs.

use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use crate::embeddings::Embeddings;
use crate::error::{Error, Result};
use crate::kmeans::{KMeansConfig, kmeans};
use crate::knn::Distance;
use crate::mutual_info::{MutualInfo, mutual_info};
use crate::retrieval::{Gallery, QueryRetrieval, RetrievalMetrics, aggregate, rank_queries};

/// A metric [`evaluate`] can report, named by its stable report key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// `recall_at_k`: Recall@K for every requested K.
    RecallAtK,
    /// `precision_at_1`.
    PrecisionAt1,
    /// `r_precision`.
    RPrecision,
    /// `map_at_r`.
    MapAtR,
    /// `map`.
    Map,
    /// `mrr`.
    Mrr,
    /// `nmi`.
    Nmi,
    /// `ami`.
    Ami,
}

impl Metric {
    /// Every metric, in report order.
    pub const ALL: [Metric; 8] = [
        Metric::RecallAtK,
        Metric::PrecisionAt1,
        Metric::RPrecision,
        Metric::MapAtR,
        Metric::Map,
        Metric::Mrr,
        Metric::Nmi,
        Metric::Ami,
    ];

    /// The stable report key (`recall_at_k`, `precision_at_1`, ...).
    pub fn key(self) -> &'static str {
        match self {
            Metric::RecallAtK => "recall_at_k",
            Metric::PrecisionAt1 => "precision_at_1",
            Metric::RPrecision => "r_precision",
            Metric::MapAtR => "map_at_r",
            Metric::Map => "map",
            Metric::Mrr => "mrr",
            Metric::Nmi => "nmi",
            Metric::Ami => "ami",
        }
    }

    /// Whether the metric comes from the k-NN rankings (the others from a clustering).
    pub fn is_retrieval(self) -> bool {
        !matches!(self, Metric::Nmi | Metric::Ami)
    }

    /// Parses a comma-separated list of keys (whitespace allowed, duplicates dropped,
    /// sorted into report order).
    ///
    /// ```
    /// use dml_eval::Metric;
    /// assert_eq!(Metric::parse_list("nmi, map").unwrap(), vec![Metric::Map, Metric::Nmi]);
    /// assert!(Metric::parse_list("recall@1").is_err());
    /// ```
    ///
    /// # Errors
    /// [`Error::UnknownMetric`] listing the valid keys.
    pub fn parse_list(list: &str) -> Result<Vec<Metric>> {
        let mut metrics = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Metric>>>()?;
        if metrics.is_empty() {
            return Err(unknown(list));
        }
        metrics.sort();
        metrics.dedup();
        Ok(metrics)
    }
}

fn unknown(name: &str) -> Error {
    Error::UnknownMetric {
        name: name.to_string(),
        valid: Metric::ALL.map(Metric::key).join(", "),
    }
}

impl FromStr for Metric {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Metric::ALL
            .into_iter()
            .find(|m| m.key() == s)
            .ok_or_else(|| unknown(s))
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// Settings of [`evaluate`].
#[derive(Debug, Clone, PartialEq)]
pub struct EvalConfig {
    /// Metrics to compute. Default: all of them.
    pub metrics: Vec<Metric>,
    /// The K of Recall@K. Default: 1, 2, 4, 8.
    pub recall_ks: Vec<usize>,
    /// How closeness is measured. Default: squared Euclidean (PML, faiss `IndexFlatL2`).
    pub distance: Distance,
    /// k-means settings for NMI/AMI; `clusters` is replaced by the number of distinct query
    /// labels (PML). Default: [`KMeansConfig::new`].
    pub kmeans: KMeansConfig,
    /// A clustering of the queries to score instead of running k-means.
    pub cluster_labels: Option<Vec<u32>>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            metrics: Metric::ALL.to_vec(),
            recall_ks: vec![1, 2, 4, 8],
            distance: Distance::SquaredEuclidean,
            kmeans: KMeansConfig::new(1),
            cluster_labels: None,
        }
    }
}

/// What the k-means behind NMI/AMI did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClusteringSummary {
    /// Number of clusters (distinct query labels).
    pub clusters: usize,
    /// Restarts run.
    pub restarts: usize,
    /// Lloyd iterations of the kept run.
    pub iterations: usize,
    /// Whether the kept run converged before a limit.
    pub converged: bool,
    /// Its inertia.
    pub inertia: f64,
}

/// The results of [`evaluate`]: the requested metrics (others absent) and stage timings.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The metrics requested.
    pub metrics: Vec<Metric>,
    /// Rank-based metrics, when any was requested.
    pub retrieval: Option<RetrievalMetrics>,
    /// NMI and AMI, when either was requested.
    pub mutual_info: Option<MutualInfo>,
    /// The k-means run behind them (absent for given cluster labels).
    pub clustering: Option<ClusteringSummary>,
    /// Number of queries.
    pub num_queries: usize,
    /// Number of reference items (the queries themselves in leave-one-out mode).
    pub num_reference: usize,
    /// Seconds per stage (`retrieval`, `kmeans`, `mutual_info`), in the order they ran.
    pub seconds: Vec<(&'static str, f64)>,
}

/// Computes the requested metrics of the queries against the gallery (`None`: leave-one-out).
///
/// NMI and AMI score a clustering of the *queries* against their labels: k-means with k =
/// number of distinct query labels on the embeddings as given (L2-normalised for
/// [`Distance::Cosine`]), or [`EvalConfig::cluster_labels`] when given (PML semantics,
/// notes 24-29 of the reference README).
///
/// # Errors
/// Those of [`retrieval_metrics`](crate::retrieval_metrics), [`kmeans`] and
/// [`mutual_info`]; an empty query set; cluster labels of the wrong length.
pub fn evaluate(
    query: &Embeddings,
    query_labels: &[u32],
    gallery: Option<Gallery<'_>>,
    config: &EvalConfig,
) -> Result<Evaluation> {
    evaluate_per_query(query, query_labels, gallery, config).map(|(evaluation, _)| evaluation)
}

/// [`evaluate`], also returning every query's [`QueryRetrieval`] (when a retrieval metric is
/// asked for): the values the retrieval metrics average, from the same pass, for reports that
/// show which queries and classes fail next to the metrics `dml eval` prints.
///
/// # Errors
/// Those of [`evaluate`].
pub fn evaluate_per_query(
    query: &Embeddings,
    query_labels: &[u32],
    gallery: Option<Gallery<'_>>,
    config: &EvalConfig,
) -> Result<(Evaluation, Option<Vec<QueryRetrieval>>)> {
    if query.is_empty() {
        return Err(Error::Empty { what: "query" });
    }
    if query_labels.len() != query.rows() {
        return Err(Error::LengthMismatch {
            what: "labels for the query embeddings",
            expected: query.rows(),
            found: query_labels.len(),
        });
    }
    let mut seconds = Vec::new();
    let wants = |m: Metric| config.metrics.contains(&m);
    let (retrieval, per_query) = if config.metrics.iter().any(|m| m.is_retrieval()) {
        let start = Instant::now();
        let ks: &[usize] = if wants(Metric::RecallAtK) {
            &config.recall_ks
        } else {
            &[]
        };
        let (queries, num_reference) =
            rank_queries(query, query_labels, gallery, config.distance, ks)?;
        let r = aggregate(&queries, ks, num_reference);
        seconds.push(("retrieval", start.elapsed().as_secs_f64()));
        (Some(r), Some(queries))
    } else {
        (None, None)
    };
    let (mutual, clustering) = if wants(Metric::Nmi) || wants(Metric::Ami) {
        let (clusters, summary) = match &config.cluster_labels {
            Some(given) => (given.clone(), None),
            None => {
                let start = Instant::now();
                let classes = distinct(query_labels);
                let points = match config.distance {
                    Distance::Cosine => std::borrow::Cow::Owned(query.l2_normalized()),
                    _ => std::borrow::Cow::Borrowed(query),
                };
                let km = kmeans(
                    &points,
                    &KMeansConfig {
                        clusters: classes,
                        ..config.kmeans.clone()
                    },
                )?;
                seconds.push(("kmeans", start.elapsed().as_secs_f64()));
                let summary = ClusteringSummary {
                    clusters: classes,
                    restarts: km.restarts_run,
                    iterations: km.iterations,
                    converged: km.converged,
                    inertia: km.inertia,
                };
                (km.assignments, Some(summary))
            }
        };
        let start = Instant::now();
        let mi = mutual_info(query_labels, &clusters)?;
        seconds.push(("mutual_info", start.elapsed().as_secs_f64()));
        (Some(mi), summary)
    } else {
        (None, None)
    };
    let evaluation = Evaluation {
        metrics: config.metrics.clone(),
        retrieval,
        mutual_info: mutual,
        clustering,
        num_queries: query.rows(),
        num_reference: gallery.map_or(query.rows(), |g| g.embeddings.rows()),
        seconds,
    };
    Ok((evaluation, per_query))
}

fn distinct(labels: &[u32]) -> usize {
    let mut l = labels.to_vec();
    l.sort_unstable();
    l.dedup();
    l.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_keys_round_trip_and_unknown_keys_list_the_valid_ones() {
        for m in Metric::ALL {
            assert_eq!(m.key().parse::<Metric>().unwrap(), m);
        }
        let err = Metric::parse_list("map,foo").unwrap_err().to_string();
        assert!(
            err.contains("`foo`") && err.contains("recall_at_k, precision_at_1"),
            "{err}"
        );
        assert!(Metric::parse_list(" , ").is_err());
    }

    #[test]
    fn only_requested_stages_run() {
        let e = Embeddings::new(vec![0.0, 0.1, 5.0, 5.1], 1).unwrap();
        let labels = [0, 0, 1, 1];
        let config = EvalConfig {
            metrics: vec![Metric::Map],
            recall_ks: vec![1],
            ..EvalConfig::default()
        };
        let r = evaluate(&e, &labels, None, &config).unwrap();
        assert!(r.mutual_info.is_none() && r.clustering.is_none());
        assert_eq!(r.retrieval.unwrap().map, 1.0);
        assert_eq!(r.seconds.len(), 1);
        let config = EvalConfig {
            metrics: vec![Metric::Nmi],
            ..EvalConfig::default()
        };
        let r = evaluate(&e, &labels, None, &config).unwrap();
        assert!(r.retrieval.is_none());
        assert_eq!(r.mutual_info.unwrap().nmi, 1.0);
        assert_eq!(r.clustering.unwrap().clusters, 2);
    }

    #[test]
    fn given_clusters_replace_kmeans_and_must_fit() {
        let e = Embeddings::new(vec![0.0, 0.1, 5.0, 5.1], 1).unwrap();
        let config = EvalConfig {
            metrics: vec![Metric::Nmi, Metric::Ami],
            cluster_labels: Some(vec![0, 1, 0, 1]),
            ..EvalConfig::default()
        };
        let r = evaluate(&e, &[0, 0, 1, 1], None, &config).unwrap();
        assert_eq!(r.mutual_info.unwrap().nmi, 0.0);
        assert!(r.clustering.is_none());
        let bad = EvalConfig {
            cluster_labels: Some(vec![0]),
            ..config
        };
        assert!(matches!(
            evaluate(&e, &[0, 0, 1, 1], None, &bad),
            Err(Error::LengthMismatch { .. })
        ));
    }
}
