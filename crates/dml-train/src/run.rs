//! The pipeline in a few calls, as the CLI's `train`, `embed` and `run` use it: assemble a
//! configured run from dml's crates, train it, embed a split with a checkpoint, evaluate.

use std::collections::BTreeMap;

use burn::tensor::Device;
use dml_losses::LossModule;
use dml_models::EmbeddingNet;
use serde::{Deserialize, Serialize};

use crate::atomic;
use crate::checkpoint::Checkpoint;
use crate::components::data::{HeldOut, RunData};
use crate::components::evaluator::RetrievalEvaluator;
use crate::components::loss::build_loss;
use crate::components::model::build_model;
use crate::config::RunConfig;
use crate::embed::embed_source;
use crate::error::Error;
use crate::observer::Observer;
use crate::seed::{SeedStream, derive_seed};
use crate::state::{BestMetric, Evaluation, RunStatus, TrainerState};
use crate::task::{EmbeddingTask, Embeddings, Evaluator, Metrics};
use crate::trainer::{EvalSet, RunPaths, TrainOutcome, Trainer};

/// A run's data and evaluator, opened from its configuration.
pub struct Assembled {
    /// Training batches and the held-out split.
    pub data: RunData,
    /// The metrics of the held-out split (none without one).
    pub evaluator: Option<RetrievalEvaluator>,
}

impl Assembled {
    /// Opens the data (validating it) and prepares the evaluator.
    pub fn open(config: &RunConfig) -> Result<Self, Error> {
        let data = RunData::open(&config.data, config.seed)?;
        let eval_seed = derive_seed(config.seed, SeedStream::Eval, 0);
        let evaluator = data
            .test
            .as_ref()
            .map(|test| RetrievalEvaluator::new(&config.eval, eval_seed, test));
        Ok(Assembled { data, evaluator })
    }

    /// Embeds the held-out split with `model` and evaluates it; `None` without a held-out
    /// split. `device` is a plain (inference) device.
    pub fn evaluate(
        &self,
        model: &EmbeddingNet,
        device: &Device,
    ) -> Result<Option<(EmbeddedSplit, Metrics)>, Error> {
        let (Some(test), Some(evaluator)) = (&self.data.test, &self.evaluator) else {
            return Ok(None);
        };
        let split = embed_split(model, test, device)?;
        let metrics = evaluator
            .evaluate(&split.embeddings)
            .map_err(|source| Error::Embed { source })?;
        Ok(Some((split, metrics)))
    }
}

/// What `summary.json` holds: how the run ended and everything it measured, without timings,
/// so two runs of one configuration give identical files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// How the run ended.
    pub status: RunStatus,
    /// Epochs completed.
    pub epochs: usize,
    /// Optimizer steps done.
    pub step: u64,
    /// The best monitored metric.
    pub best: Option<BestMetric>,
    /// Every evaluation.
    pub evaluations: Vec<Evaluation>,
}

impl From<&TrainerState> for RunSummary {
    fn from(state: &TrainerState) -> Self {
        RunSummary {
            status: state.status,
            epochs: state.epoch,
            step: state.step,
            best: state.best.clone(),
            evaluations: state.evaluations.clone(),
        }
    }
}

/// Trains the run `config` describes in its folder `config.out` on `device` (an autodiff
/// device), or resumes it from its last checkpoint. A run that ends (not interrupted by the
/// observer) writes `summary.json`.
pub fn train(
    config: &RunConfig,
    assembled: &Assembled,
    device: &Device,
    resume: bool,
    observer: &mut dyn Observer,
) -> Result<TrainOutcome<EmbeddingNet, LossModule>, Error> {
    let model = build_model(config, device, !resume)?;
    let classes = assembled.data.train.dataset().class_names().len();
    let loss_seed = derive_seed(config.seed, SeedStream::ModelInit, 1);
    let loss = build_loss(
        &config.loss,
        classes,
        config.model.embedding_dim,
        loss_seed,
        device,
    )?;
    let mut trainer = Trainer::new(config, device.clone(), &assembled.data.train);
    if let (Some(data), Some(evaluator)) = (&assembled.data.test, &assembled.evaluator) {
        trainer = trainer.with_eval(EvalSet { data, evaluator });
    }
    let outcome = trainer.fit(EmbeddingTask { model, loss }, resume, observer)?;
    if !outcome.interrupted {
        let summary = RunSummary::from(&outcome.state);
        let json = serde_json::to_string_pretty(&summary).expect("a summary always serialises");
        atomic::write_file(&RunPaths::new(&config.out).summary, json.as_bytes())?;
    }
    Ok(outcome)
}

/// The network of a checkpoint, on `device`.
pub fn model_from_checkpoint(
    checkpoint: &Checkpoint,
    device: &Device,
) -> Result<EmbeddingNet, Error> {
    let net = build_model(&checkpoint.config, device, false)?;
    checkpoint.load_model(net)
}

/// A split's embeddings with the class name and the path of every row.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddedSplit {
    /// The embeddings, with dense labels and split indices.
    pub embeddings: Embeddings,
    /// The class name of every row.
    pub class_names: Vec<String>,
    /// The image path (or synthetic id) of every row.
    pub paths: Vec<String>,
}

/// Embeds every image of `split` with `model` (in inference mode) on `device`.
pub fn embed_split(
    model: &EmbeddingNet,
    split: &HeldOut,
    device: &Device,
) -> Result<EmbeddedSplit, Error> {
    let embeddings =
        embed_source(model, split, device).map_err(|source| Error::Embed { source })?;
    let described: BTreeMap<usize, (String, String)> = split
        .items()
        .map(|(dataset, i, index)| {
            let name = dataset.class_names()[dataset.label(i)].clone();
            (index, (name, dataset.describe(i)))
        })
        .collect();
    let (class_names, paths) = embeddings
        .indices
        .iter()
        .map(|index| described[index].clone())
        .unzip();
    Ok(EmbeddedSplit {
        embeddings,
        class_names,
        paths,
    })
}
