//! The `[train]`, `[eval]`, `[early_stopping]` and `[checkpoint]` sections: how long to
//! train, when to evaluate, when to stop early and when to write checkpoints.

use serde::{Deserialize, Serialize};

use super::{MAX_EPOCHS, check, check_count};
use crate::error::ConfigError;

/// How long to train and how often to log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Passes over the training data. Default: 10.
    pub epochs: usize,
    /// Stop after this many optimizer steps even if epochs remain. Default: none.
    pub max_steps: Option<u64>,
    /// Write one `step` line to `metrics.jsonl` every this many steps. Default: 10.
    pub log_every_steps: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            max_steps: None,
            log_every_steps: 10,
        }
    }
}

impl TrainConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        check_count("train.epochs", self.epochs, MAX_EPOCHS)?;
        check(
            self.max_steps != Some(0),
            "train.max_steps",
            "must be at least 1 (leave it out for no limit)",
        )?;
        check(
            self.log_every_steps > 0,
            "train.log_every_steps",
            "must be at least 1",
        )
    }
}

/// The metrics an evaluation computes on the held-out split (PML semantics; see dml-eval).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MetricKind {
    /// Recall@K for every K of `eval.k` (keys `recall@1`, `recall@2`, ...).
    #[serde(rename = "recall@k")]
    RecallAtK,
    /// Precision@1 (key `precision@1`).
    #[serde(rename = "precision@1")]
    PrecisionAt1,
    /// R-precision (key `r_precision`).
    #[serde(rename = "r_precision")]
    RPrecision,
    /// MAP@R (key `map@r`).
    #[serde(rename = "map@r")]
    MapAtR,
    /// Mean average precision (key `map`).
    #[serde(rename = "map")]
    Map,
    /// Mean reciprocal rank (key `mrr`).
    #[serde(rename = "mrr")]
    Mrr,
    /// NMI of a k-means clustering with as many clusters as classes (key `nmi`).
    #[serde(rename = "nmi")]
    Nmi,
    /// AMI of the same clustering (key `ami`).
    #[serde(rename = "ami")]
    Ami,
    /// How spread out the embeddings are, the collapse signal (keys `mean_pairwise_distance`
    /// and `embedding_std`, see `dml_eval::Spread`), on at most 4,096 evenly spaced rows.
    #[serde(rename = "spread")]
    Spread,
}

/// N-way K-shot episodes on the held-out split (keys `episodes_nn` and `episodes_ncm`: the
/// accuracy of the nearest support item and of the nearest class mean).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EpisodesConfig {
    /// Classes per episode (N). Default: 20 (Omniglot's 20-way).
    pub ways: usize,
    /// Support items per class (K). Default: 1.
    pub shots: usize,
    /// Query items per class. Default: 1.
    pub queries_per_class: usize,
    /// Episodes drawn. Default: 1000.
    pub episodes: usize,
    /// Draw each episode's classes from one super-class (Omniglot's alphabet), as the
    /// within-alphabet protocol does. Default: true.
    pub within_super_class: bool,
}

impl Default for EpisodesConfig {
    fn default() -> Self {
        EpisodesConfig {
            ways: 20,
            shots: 1,
            queries_per_class: 1,
            episodes: 1000,
            within_super_class: true,
        }
    }
}

/// Evaluation on the held-out split during training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Evaluate after every this many epochs (and always after the last one); 0 = only after
    /// the last. Default: 1.
    pub every_epochs: usize,
    /// The K of Recall@K. Default: [1, 2, 4, 8] (the survey's table).
    pub k: Vec<usize>,
    /// The metrics to compute. Default: Recall@K, MAP@R and NMI.
    pub metrics: Vec<MetricKind>,
    /// Few-shot episodes, if wanted. Default: none.
    pub episodes: Option<EpisodesConfig>,
    /// The metric that picks the best checkpoint and drives early stopping; higher is better.
    /// Default: `recall@1`.
    pub monitor: String,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            every_epochs: 1,
            k: vec![1, 2, 4, 8],
            metrics: vec![MetricKind::RecallAtK, MetricKind::MapAtR, MetricKind::Nmi],
            episodes: None,
            monitor: "recall@1".to_owned(),
        }
    }
}

/// The report keys of [`MetricKind::Spread`].
pub const SPREAD_KEYS: [&str; 2] = ["mean_pairwise_distance", "embedding_std"];

impl EvalConfig {
    /// The keys of the metrics this configuration produces, in report order.
    pub fn metric_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        for metric in &self.metrics {
            match metric {
                MetricKind::RecallAtK => keys.extend(self.k.iter().map(|k| format!("recall@{k}"))),
                MetricKind::PrecisionAt1 => keys.push("precision@1".to_owned()),
                MetricKind::RPrecision => keys.push("r_precision".to_owned()),
                MetricKind::MapAtR => keys.push("map@r".to_owned()),
                MetricKind::Map => keys.push("map".to_owned()),
                MetricKind::Mrr => keys.push("mrr".to_owned()),
                MetricKind::Nmi => keys.push("nmi".to_owned()),
                MetricKind::Ami => keys.push("ami".to_owned()),
                MetricKind::Spread => keys.extend(SPREAD_KEYS.map(str::to_owned)),
            }
        }
        if self.episodes.is_some() {
            keys.extend(["episodes_nn".to_owned(), "episodes_ncm".to_owned()]);
        }
        keys
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.k.iter().all(|&k| k > 0),
            "eval.k",
            "every K must be at least 1",
        )?;
        check(
            !self.metrics.contains(&MetricKind::RecallAtK) || !self.k.is_empty(),
            "eval.k",
            "recall@k needs at least one K",
        )?;
        check(
            !self.metrics.is_empty() || self.episodes.is_some(),
            "eval.metrics",
            "needs at least one metric",
        )?;
        if let Some(episodes) = &self.episodes {
            for (field, value) in [
                ("eval.episodes.ways", episodes.ways),
                ("eval.episodes.shots", episodes.shots),
                (
                    "eval.episodes.queries_per_class",
                    episodes.queries_per_class,
                ),
                ("eval.episodes.episodes", episodes.episodes),
            ] {
                check_count(field, value, MAX_EPISODE_COUNT)?;
            }
            check(
                episodes.ways >= 2,
                "eval.episodes.ways",
                "must be at least 2",
            )?;
        }
        let keys = self.metric_keys();
        check(
            keys.contains(&self.monitor),
            "eval.monitor",
            format!(
                "{:?} is not computed; choose one of {}",
                self.monitor,
                keys.join(", ")
            ),
        )
    }
}

/// The most ways, shots, queries or episodes an episodic evaluation may ask for.
const MAX_EPISODE_COUNT: usize = 1_000_000;

/// Stop when `eval.monitor` has not improved for `patience` evaluations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EarlyStoppingConfig {
    /// Evaluations without improvement before stopping. Default: 3.
    pub patience: usize,
    /// The smallest increase that counts as an improvement. Default: 0.
    pub min_delta: f64,
}

impl Default for EarlyStoppingConfig {
    fn default() -> Self {
        EarlyStoppingConfig {
            patience: 3,
            min_delta: 0.0,
        }
    }
}

impl EarlyStoppingConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.patience > 0,
            "early_stopping.patience",
            "must be at least 1",
        )?;
        check(
            self.min_delta.is_finite() && self.min_delta >= 0.0,
            "early_stopping.min_delta",
            format!("must be a non-negative number, got {}", self.min_delta),
        )
    }
}

/// When checkpoints are written. `checkpoints/last.ckpt` is always written at the end of every
/// epoch; `checkpoints/best.ckpt` whenever `eval.monitor` improves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Also write `last.ckpt` every this many steps inside an epoch, so that a killed run loses
    /// at most that many steps. Default: none (epoch ends only).
    pub every_steps: Option<u64>,
    /// Write `best.ckpt`. Default: true.
    pub best: bool,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            every_steps: None,
            best: true,
        }
    }
}

impl CheckpointConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.every_steps != Some(0),
            "checkpoint.every_steps",
            "must be at least 1 (leave it out for epoch ends only)",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_keys_follow_k_and_metrics() {
        let eval = EvalConfig {
            k: vec![1, 4],
            metrics: vec![MetricKind::Nmi, MetricKind::RecallAtK],
            ..EvalConfig::default()
        };
        assert_eq!(eval.metric_keys(), ["nmi", "recall@1", "recall@4"]);
    }

    #[test]
    fn monitor_must_be_computed() {
        let eval = EvalConfig {
            monitor: "recall@16".to_owned(),
            ..EvalConfig::default()
        };
        let err = eval.validate().unwrap_err().to_string();
        assert!(err.starts_with("eval.monitor"), "{err}");
        assert!(err.contains("recall@8"), "{err}");
    }

    #[test]
    fn metric_names_parse_as_report_keys() {
        let eval: EvalConfig = toml::from_str("metrics = ['map@r', 'recall@k']").unwrap();
        assert_eq!(eval.metrics, [MetricKind::MapAtR, MetricKind::RecallAtK]);
        assert!(toml::from_str::<EvalConfig>("metrics = ['mapr']").is_err());
    }
}
