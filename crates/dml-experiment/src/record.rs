//! One finished run as stored in `results.jsonl`: what ran, how it learned, where it ended.
//!
//! Metric values are `Option<f64>`: `null` in the file means "not measured at this point" or
//! "not finite" (JSON has no NaN; `serde_json` writes NaN and infinities as `null`). Metrics in
//! [0, 1] (Recall@K, NMI, MAP@R) are stored as fractions, not percentages.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::grid::RunAxes;

/// One line of `results.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    /// The run's stable id (see [`RunAxes::run_id`]).
    pub run_id: String,
    /// The plan the run belongs to.
    pub plan_name: String,
    /// Where the run sits in the grid.
    pub axes: RunAxes,
    /// The fully resolved run config, defaults included.
    pub config: serde_json::Value,
    /// Metrics over training, in step order; the first point is the untrained model.
    pub curve: Vec<CurvePoint>,
    /// Metrics of the final model on the test split.
    #[serde(rename = "final")]
    pub final_metrics: FinalMetrics,
    /// Wall-clock time of the run, evaluation included.
    pub wall_seconds: f64,
    /// Whether the run collapsed, by [`crate::CollapseRule`].
    pub collapsed: bool,
    /// Saved test embeddings for the t-SNE map, if the run kept them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embeddings: Option<EmbeddingFiles>,
}

/// Metrics at one evaluation point during training.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurvePoint {
    /// Optimiser steps taken so far.
    pub step: u64,
    /// Epochs completed so far.
    pub epoch: u64,
    /// Mean training loss since the previous point (`null` at step 0 or if not finite).
    #[serde(default)]
    pub loss: Option<f64>,
    /// Recall@1 on the evaluation split.
    #[serde(default)]
    pub recall_at_1: Option<f64>,
    /// Recall@4 on the evaluation split.
    #[serde(default)]
    pub recall_at_4: Option<f64>,
    /// NMI of k-means clusters against the labels.
    #[serde(default)]
    pub nmi: Option<f64>,
    /// MAP@R.
    #[serde(default)]
    pub map_at_r: Option<f64>,
    /// Mean L2 distance over pairs of evaluation embeddings (see [`crate::Spread`]).
    #[serde(default)]
    pub mean_pairwise_distance: Option<f64>,
    /// Root mean per-dimension variance of the evaluation embeddings (see [`crate::Spread`]).
    #[serde(default)]
    pub embedding_std: Option<f64>,
}

/// Metrics of the final model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinalMetrics {
    /// Recall@K by K (`{"1": 0.8, "4": 0.95}` in the file).
    pub recall_at_k: BTreeMap<u32, Option<f64>>,
    /// NMI.
    #[serde(default)]
    pub nmi: Option<f64>,
    /// MAP@R.
    #[serde(default)]
    pub map_at_r: Option<f64>,
    /// R-precision.
    #[serde(default)]
    pub r_precision: Option<f64>,
}

impl FinalMetrics {
    /// Recall@`k`, if it was measured and is finite.
    pub fn recall_at(&self, k: u32) -> Option<f64> {
        self.recall_at_k.get(&k).copied().flatten()
    }
}

/// Paths, relative to the folder of `results.jsonl`, of a run's saved test embeddings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingFiles {
    /// `.npy` of shape `[n, d]`, `f32` or `f64`.
    pub vectors: String,
    /// `.npy` of `n` integer labels, or `.txt` with one label per line.
    pub labels: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_metrics_use_string_keys_and_null_for_nan() {
        let mut m = FinalMetrics::default();
        m.recall_at_k.insert(1, Some(0.5));
        m.recall_at_k.insert(4, Some(f64::NAN));
        let json = serde_json::to_string(&m).unwrap();
        assert!(
            json.contains(r#""recall_at_k":{"1":0.5,"4":null}"#),
            "{json}"
        );
        let back: FinalMetrics = serde_json::from_str(&json).unwrap();
        assert_eq!(back.recall_at(1), Some(0.5));
        assert_eq!(back.recall_at(4), None);
        assert_eq!(back.recall_at(8), None);
    }
}
