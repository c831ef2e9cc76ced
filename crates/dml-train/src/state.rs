//! The trainer's own state: where the run is, what it has measured and what it has decided.
//! Saved as JSON in every checkpoint; with the model, optimizer and schedule records it is
//! everything a resumed run needs to continue exactly.

use serde::{Deserialize, Serialize};

use crate::task::Metrics;

/// Whether a run is still going, and why it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// Epochs (or steps) remain.
    Running,
    /// All epochs, or `train.max_steps`, were done.
    Finished,
    /// Early stopping ended the run.
    EarlyStopped,
}

/// One evaluation on the held-out split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evaluation {
    /// Epochs completed when it ran.
    pub epochs: usize,
    /// Optimizer steps completed when it ran.
    pub step: u64,
    /// The metrics, by report key.
    pub metrics: Metrics,
}

/// The best value of the monitored metric so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BestMetric {
    /// The metric's report key (`eval.monitor`).
    pub metric: String,
    /// Its best value.
    pub value: f64,
    /// Epochs completed when it was reached.
    pub epochs: usize,
    /// Optimizer steps completed when it was reached.
    pub step: u64,
}

/// The position and the decisions of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerState {
    /// The epoch in progress (0-based); equals the epochs completed when `batch` is 0.
    pub epoch: usize,
    /// Batches of `epoch` already trained on.
    pub batch: usize,
    /// Optimizer steps done.
    pub step: u64,
    /// Sum of the losses of the batches of `epoch` done so far (for the epoch's mean).
    pub epoch_loss_sum: f64,
    /// The best monitored value so far.
    pub best: Option<BestMetric>,
    /// Evaluations since the best one (the early-stopping counter).
    pub evals_since_best: usize,
    /// Every evaluation so far, in order.
    pub evaluations: Vec<Evaluation>,
    /// Length of `metrics.jsonl` when the state was saved: a resumed run cuts the log back to
    /// it, so lines written after the checkpoint are not duplicated.
    pub log_bytes: u64,
    /// Running or why it ended.
    pub status: RunStatus,
}

impl TrainerState {
    /// The state of a run that has not started.
    pub fn new() -> Self {
        TrainerState {
            epoch: 0,
            batch: 0,
            step: 0,
            epoch_loss_sum: 0.0,
            best: None,
            evals_since_best: 0,
            evaluations: Vec::new(),
            log_bytes: 0,
            status: RunStatus::Running,
        }
    }

    /// The latest evaluation, if any.
    pub fn last_evaluation(&self) -> Option<&Evaluation> {
        self.evaluations.last()
    }
}

impl Default for TrainerState {
    fn default() -> Self {
        TrainerState::new()
    }
}
