//! The pipeline in a few calls, as the CLI's `train`, `embed` and `run` use it: assemble a
//! configured run from dml's crates, train it, embed a split with a checkpoint, evaluate.

use std::collections::BTreeMap;
use std::path::Path;

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
use crate::export::{ExportPaths, write_embeddings};
use crate::observer::Observer;
use crate::run_folder::{RunPaths, Start};
use crate::seed::{SeedStream, derive_seed};
use crate::state::{BestMetric, Evaluation, RunStatus, TrainerState};
use crate::task::{EmbeddingTask, Embeddings, Evaluator, Metrics};
use crate::trainer::{EvalSet, TrainOutcome, Trainer};

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
            .map(|test| RetrievalEvaluator::new(&config.eval, eval_seed, test))
            .transpose()?;
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
/// device), taking the folder as `start` says: a new run, a new run replacing the one in the
/// folder, or the folder's run resumed from its last checkpoint (on the same data). A run that
/// ends (not interrupted by the observer) writes `summary.json`.
pub fn train(
    config: &RunConfig,
    assembled: &Assembled,
    device: &Device,
    start: Start,
    observer: &mut dyn Observer,
) -> Result<TrainOutcome<EmbeddingNet, LossModule>, Error> {
    let model = build_model(config, device, start != Start::Resume)?;
    let classes = assembled.data.train.dataset().class_names().len();
    let loss_seed = derive_seed(config.seed, SeedStream::ModelInit, 1);
    let loss = build_loss(
        &config.loss,
        classes,
        config.model.embedding_dim,
        loss_seed,
        device,
    )?;
    let mut trainer = Trainer::new(config, device.clone(), &assembled.data.train)
        .with_data_fingerprint(assembled.data.fingerprint());
    if let (Some(data), Some(evaluator)) = (&assembled.data.test, &assembled.evaluator) {
        trainer = trainer.with_eval(EvalSet { data, evaluator });
    }
    let outcome = trainer.fit(EmbeddingTask { model, loss }, start, observer)?;
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

impl EmbeddedSplit {
    /// Writes the embeddings to `<run_dir>/embeddings/test.npy`, with the class names and
    /// paths beside it, the three as one atomic set ([`write_embeddings`]).
    pub fn write_into_run(&self, run_dir: &Path) -> Result<ExportPaths, Error> {
        let folder = RunPaths::new(run_dir).embeddings;
        std::fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
        write_embeddings(
            &folder.join("test.npy"),
            &self.embeddings,
            &self.class_names,
            &self.paths,
        )
    }
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use burn::module::{Module, ModuleVisitor, Param};
    use burn::tensor::Tensor;

    use super::*;
    use crate::config::{CheckpointConfig, Override, TrainConfig};
    use crate::observer::{Control, Event, Silent};

    /// Every float the network holds (weights and batch-norm statistics), in visit order.
    fn values(net: &EmbeddingNet) -> Vec<Vec<f32>> {
        struct Collect(Vec<Vec<f32>>);
        impl ModuleVisitor for Collect {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0.push(param.val().try_into_vec_as::<f32>().unwrap());
            }
        }
        let mut collect = Collect(Vec::new());
        // `valid()` folds pending batch-norm updates into the visible statistics.
        net.valid().visit(&mut collect);
        collect.0
    }

    /// A tiny glyph run: 6 training classes of 8 images, P x K = 3 x 4 (4 steps an epoch),
    /// the small convnet, semi-hard triplets, evaluation on 4 held-out classes every epoch.
    fn glyph_config(out: &Path) -> RunConfig {
        let toml = r#"
            seed = 9
            [data.dataset]
            kind = "synthetic"
            train_classes = 6
            test_classes = 4
            samples_per_class = 8
            [data.batch]
            classes_per_batch = 3
            samples_per_class = 4
            eval_batch_size = 16
            [model]
            embedding_dim = 8
            [optimizer]
            kind = "sgd"
            lr = 0.05
            momentum = 0.9
            [schedule]
            kind = "cosine"
            warmup_steps = 2
            [eval]
            k = [1, 2]
            metrics = ["recall@k", "nmi"]
        "#;
        let mut config = RunConfig::resolve(
            toml,
            "glyphs.toml",
            &[Override::new("out", out.display().to_string())],
        )
        .unwrap();
        config.train = TrainConfig {
            epochs: 2,
            max_steps: None,
            log_every_steps: 1,
        };
        config.checkpoint = CheckpointConfig {
            every_steps: Some(3),
            best: true,
        };
        config
    }

    struct KillAt(usize, usize);

    impl Observer for KillAt {
        fn on_event(&mut self, _: &Event<'_>) -> Control {
            self.1 += 1;
            if self.1 == self.0 {
                Control::Stop
            } else {
                Control::Continue
            }
        }
    }

    fn run(
        config: &RunConfig,
        start: Start,
        observer: &mut dyn Observer,
    ) -> TrainOutcome<EmbeddingNet, LossModule> {
        let assembled = Assembled::open(config).unwrap();
        train(
            config,
            &assembled,
            &Device::flex().autodiff(),
            start,
            observer,
        )
        .unwrap()
    }

    #[test]
    fn a_glyph_run_killed_and_resumed_matches_an_uninterrupted_one() {
        let reference_dir = tempfile::tempdir().unwrap();
        let reference = run(&glyph_config(reference_dir.path()), Start::New, &mut Silent);
        assert_eq!(reference.state.status, RunStatus::Finished);
        assert_eq!(reference.state.evaluations.len(), 2);
        let summary = |dir: &Path| std::fs::read_to_string(RunPaths::new(dir).summary).unwrap();
        // Events: 1 start, 3 steps, checkpoint (5), step 4, epoch end, eval, best, last (10).
        for kill_at in [5, 8, 10] {
            let dir = tempfile::tempdir().unwrap();
            let config = glyph_config(dir.path());
            let first = run(&config, Start::New, &mut KillAt(kill_at, 0));
            assert!(first.interrupted);
            assert!(!RunPaths::new(dir.path()).summary.exists());
            let resumed = run(&config, Start::Resume, &mut Silent);
            assert_eq!(
                values(&resumed.task.model),
                values(&reference.task.model),
                "killed at event {kill_at}"
            );
            assert_eq!(
                summary(dir.path()),
                summary(reference_dir.path()),
                "killed at event {kill_at}"
            );
        }
    }

    #[test]
    fn embedding_a_split_names_every_row_and_the_checkpoint_rebuilds_the_model() {
        let dir = tempfile::tempdir().unwrap();
        let config = glyph_config(dir.path());
        let outcome = run(&config, Start::New, &mut Silent);
        let assembled = Assembled::open(&config).unwrap();
        let device = Device::flex();
        let checkpoint = Checkpoint::read(&RunPaths::new(dir.path()).last_checkpoint).unwrap();
        let model = model_from_checkpoint(&checkpoint, &device).unwrap();
        assert_eq!(values(&model), values(&outcome.task.model));
        let (split, metrics) = assembled.evaluate(&model, &device).unwrap().unwrap();
        assert_eq!(split.embeddings.len(), 32);
        assert_eq!(split.embeddings.dim, 8);
        assert_eq!(split.class_names.len(), 32);
        assert_eq!(split.paths.len(), 32);
        // The last evaluation during training saw the same model and data.
        assert_eq!(&metrics, &outcome.state.evaluations[1].metrics);
    }

    #[test]
    fn a_misspelt_loss_is_a_config_error_listing_the_losses() {
        let err = RunConfig::resolve("[loss]\nname = 'TripletMarginLos'\n", "run.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("loss: "), "{err}");
        assert!(err.contains("TripletMarginLoss"), "{err}");
        let err = RunConfig::resolve(
            "[loss]\nname = 'ContrastiveLoss'\nparams = { neg_margn = 1.0 }\n",
            "run.toml",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("neg_margn"), "{err}");
    }
}
