//! Progress reporting. The library never prints: the trainer reports events to an
//! [`Observer`], which the CLI renders as progress bars (and a test can use to stop a run at a
//! chosen moment).

use std::path::Path;

use crate::state::{BestMetric, Evaluation};

/// One optimizer step, as reported to observers and to `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// 0-based epoch.
    pub epoch: usize,
    /// 0-based batch within the epoch.
    pub batch: usize,
    /// Batches in this epoch.
    pub batches_in_epoch: usize,
    /// 1-based optimizer step (steps done including this one).
    pub step: u64,
    /// Steps the whole run will take.
    pub total_steps: u64,
    /// The batch's loss.
    pub loss: f64,
    /// The learning rate used for this step.
    pub lr: f64,
    /// Images in the batch.
    pub batch_size: usize,
    /// Training throughput of this step (wall clock, data wait included).
    pub images_per_sec: f64,
}

/// Which checkpoint file was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointKind {
    /// `last.ckpt`: where a resumed run continues from.
    Last,
    /// `best.ckpt`: the best monitored metric so far.
    Best,
}

/// Something the trainer did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// Training starts (or continues, from `start_step`).
    Started {
        /// Steps already done (0 for a fresh run).
        start_step: u64,
        /// Steps the whole run will take.
        total_steps: u64,
    },
    /// One optimizer step was taken.
    Step(&'a StepReport),
    /// An epoch was completed.
    EpochEnd {
        /// The epoch (0-based).
        epoch: usize,
        /// Mean loss over its batches.
        mean_loss: f64,
    },
    /// The held-out split was evaluated.
    Evaluated {
        /// The evaluation.
        evaluation: &'a Evaluation,
        /// Whether the monitored metric improved on the best so far.
        improved: bool,
    },
    /// A checkpoint was written.
    CheckpointWritten {
        /// Which one.
        kind: CheckpointKind,
        /// Where.
        path: &'a Path,
    },
    /// Early stopping ended the run.
    EarlyStopped {
        /// The best value reached.
        best: &'a BestMetric,
    },
}

/// What the trainer should do after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Go on.
    Continue,
    /// Return at once, writing nothing more, exactly as if the process had been killed at
    /// this point (the run can be resumed from its last checkpoint).
    Stop,
}

/// Receives the trainer's events.
pub trait Observer {
    /// Handles one event.
    fn on_event(&mut self, event: &Event<'_>) -> Control;
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Observer for Silent {
    fn on_event(&mut self, _event: &Event<'_>) -> Control {
        Control::Continue
    }
}
