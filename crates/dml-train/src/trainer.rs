//! The training loop: deterministic, checkpointed, resumable exactly.
//!
//! Everything a step depends on is a function of the run seed and the run's position
//! (epoch, batch, step): the data source gives epoch `e`'s batches from any index, the backend
//! and the loss are seeded from the step number, and the optimizer's moments and the
//! schedule's counters are saved in every checkpoint. So a run killed at any moment and
//! resumed from its last checkpoint redoes exactly the steps an uninterrupted run did, and ends
//! with bit-identical weights and metrics.

use std::time::Instant;

use burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};
use serde_json::json;

use crate::atomic;
use crate::checkpoint::{Checkpoint, EncodedCheckpoint};
use crate::config::RunConfig;
use crate::embed::embed_source;
use crate::error::{BoxError, Error};
use crate::fingerprint::DataFingerprint;
use crate::metrics_log::MetricsLog;
use crate::observer::{CheckpointKind, Control, Event, Observer, StepReport};
use crate::optimizer::build_optimizer;
use crate::run_folder::{RunPaths, Start};
use crate::schedule::build_schedule;
use crate::seed::{SeedStream, derive_seed};
use crate::state::{BestMetric, Evaluation, RunStatus, TrainerState};
use crate::task::{
    Batch, BatchSource, EmbeddingModel, EmbeddingTask, Evaluator, MetricLoss, Metrics,
};

/// The held-out split and what to measure on it.
#[derive(Clone, Copy)]
pub struct EvalSet<'a> {
    /// Batches of the held-out split (read as epoch 0, in order, without augmentation).
    pub data: &'a dyn BatchSource,
    /// The metrics.
    pub evaluator: &'a dyn Evaluator,
}

/// How [`Trainer::fit`] ended.
#[derive(Debug)]
pub struct TrainOutcome<M: Module, L: Module> {
    /// The trained model and loss.
    pub task: EmbeddingTask<M, L>,
    /// The final state (position, evaluations, best metric, status).
    pub state: TrainerState,
    /// True if an observer stopped the run (it can be resumed from its last checkpoint).
    pub interrupted: bool,
}

/// Trains an [`EmbeddingTask`] as a [`RunConfig`] says, in the run folder `config.out`.
pub struct Trainer<'a> {
    config: &'a RunConfig,
    device: Device,
    train: &'a dyn BatchSource,
    eval: Option<EvalSet<'a>>,
    data: Option<DataFingerprint>,
    paths: RunPaths,
}

/// The bookkeeping of a run in progress (the task itself is passed by value, because burn's
/// optimizer takes the module by value and updates it in place when nothing else holds it).
struct Run {
    optimizer: ModuleOptimizer,
    schedule: ModuleLrScheduler,
    state: TrainerState,
    log: MetricsLog,
    total_steps: u64,
}

enum Flow {
    Continue,
    Stop,
}

fn outcome<M: Module, L: Module>(
    task: EmbeddingTask<M, L>,
    run: Run,
    interrupted: bool,
) -> TrainOutcome<M, L> {
    TrainOutcome {
        task,
        state: run.state,
        interrupted,
    }
}

impl<'a> Trainer<'a> {
    /// A trainer for `config`, training on `device` (an autodiff device) with batches from
    /// `train`.
    pub fn new(config: &'a RunConfig, device: Device, train: &'a dyn BatchSource) -> Self {
        Trainer {
            config,
            device,
            train,
            eval: None,
            data: None,
            paths: RunPaths::new(&config.out),
        }
    }

    /// Evaluates on `eval` every `eval.every_epochs` epochs and at the end.
    pub fn with_eval(mut self, eval: EvalSet<'a>) -> Self {
        self.eval = Some(eval);
        self
    }

    /// Records `data` in the run folder (`data.json`) when the run starts, and checks that a
    /// resumed run's data still has it.
    pub fn with_data_fingerprint(mut self, data: DataFingerprint) -> Self {
        self.data = Some(data);
        self
    }

    /// The run folder's files.
    pub fn paths(&self) -> &RunPaths {
        &self.paths
    }

    /// The number of optimizer steps the run takes: every batch of every epoch, capped by
    /// `train.max_steps`.
    pub fn total_steps(&self) -> Result<u64, Error> {
        let mut total = 0u64;
        for epoch in 0..self.config.train.epochs {
            let batches = self.train.batches_in_epoch(epoch);
            if batches == 0 {
                return Err(Error::EmptyEpoch { epoch });
            }
            total += batches as u64;
        }
        Ok(self
            .config
            .train
            .max_steps
            .map_or(total, |max| max.min(total)))
    }

    /// Trains `task` (freshly initialised from the configuration) to the end of the run.
    ///
    /// The run takes its folder as `start` says ([`RunPaths::prepare`]). With
    /// [`Start::Resume`], the model, loss, optimizer, schedule and trainer state are restored
    /// from the run folder's `last.ckpt` first, and training continues exactly where that
    /// checkpoint was taken; `metrics.jsonl` is cut back to what it held then. A finished run
    /// resumes to its final state at once.
    pub fn fit<M: EmbeddingModel, L: MetricLoss>(
        &self,
        task: EmbeddingTask<M, L>,
        start: Start,
        observer: &mut dyn Observer,
    ) -> Result<TrainOutcome<M, L>, Error> {
        let total_steps = self.total_steps()?;
        self.paths.prepare(start)?;
        let (mut task, mut run) = if start == Start::Resume {
            self.restore(task, total_steps)?
        } else {
            (task, self.start(total_steps)?)
        };
        if run.state.status != RunStatus::Running {
            return Ok(outcome(task, run, false));
        }
        let started = Event::Started {
            start_step: run.state.step,
            total_steps,
        };
        if let Control::Stop = observer.on_event(&started) {
            return Ok(outcome(task, run, true));
        }
        while run.state.status == RunStatus::Running {
            let (trained, flow) = self.train_epoch(task, &mut run, observer)?;
            task = trained;
            if let Flow::Stop = flow {
                return Ok(outcome(task, run, true));
            }
        }
        Ok(outcome(task, run, false))
    }

    fn start(&self, total_steps: u64) -> Result<Run, Error> {
        atomic::write_file(&self.paths.config, self.config.to_json().as_bytes())?;
        if let Some(data) = &self.data {
            let json = serde_json::to_string_pretty(data).expect("a fingerprint serialises");
            atomic::write_file(&self.paths.data, json.as_bytes())?;
        }
        Ok(Run {
            optimizer: build_optimizer(&self.config.optimizer),
            schedule: self.schedule(total_steps)?,
            state: TrainerState::new(),
            log: MetricsLog::create(&self.paths.metrics)?,
            total_steps,
        })
    }

    fn restore<M: Module, L: Module>(
        &self,
        task: EmbeddingTask<M, L>,
        total_steps: u64,
    ) -> Result<(EmbeddingTask<M, L>, Run), Error> {
        let path = &self.paths.last_checkpoint;
        if !path.exists() {
            return Err(Error::NoCheckpoint { path: path.clone() });
        }
        let checkpoint = Checkpoint::read(path)?;
        if let Some(field) = checkpoint.config.first_difference(self.config) {
            return Err(Error::ResumeMismatch {
                path: path.clone(),
                field,
            });
        }
        if let Some(now) = &self.data {
            self.check_data(now)?;
        }
        let task = EmbeddingTask {
            model: checkpoint.load_model(task.model)?,
            loss: checkpoint.load_loss(task.loss)?,
        };
        let run = Run {
            optimizer: checkpoint.load_optimizer(build_optimizer(&self.config.optimizer))?,
            schedule: self
                .schedule(total_steps)?
                .load_record(checkpoint.schedule_record()?),
            log: MetricsLog::resume(&self.paths.metrics, checkpoint.state.log_bytes)?,
            state: checkpoint.state,
            total_steps,
        };
        Ok((task, run))
    }

    /// The data a resumed run trains on must be the data it started with.
    fn check_data(&self, now: &DataFingerprint) -> Result<(), Error> {
        let path = &self.paths.data;
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let started: DataFingerprint =
            serde_json::from_str(&text).map_err(|e| Error::CheckpointFormat {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        match started.difference(now) {
            None => Ok(()),
            Some(difference) => Err(Error::DataChanged {
                dir: self.paths.dir.clone(),
                difference,
            }),
        }
    }

    fn schedule(&self, total_steps: u64) -> Result<ModuleLrScheduler, Error> {
        Ok(build_schedule(
            &self.config.schedule,
            self.config.optimizer.lr(),
            total_steps,
        )?)
    }

    /// Trains the rest of the current epoch, then evaluates and checkpoints as configured.
    fn train_epoch<M: EmbeddingModel, L: MetricLoss>(
        &self,
        mut task: EmbeddingTask<M, L>,
        run: &mut Run,
        observer: &mut dyn Observer,
    ) -> Result<(EmbeddingTask<M, L>, Flow), Error> {
        let epoch = run.state.epoch;
        let batches = self.train.batches_in_epoch(epoch);
        if batches == 0 {
            return Err(Error::EmptyEpoch { epoch });
        }
        let start = run.state.batch;
        let data_error = |batch: usize| {
            move |source: BoxError| Error::Data {
                epoch,
                batch,
                source,
            }
        };
        let source = self
            .train
            .batches(epoch, start)
            .map_err(data_error(start))?;
        let mut clock = Instant::now();
        for item in source.take(batches.saturating_sub(start)) {
            if run.state.step >= run.total_steps {
                break;
            }
            let batch = item.map_err(data_error(run.state.batch))?;
            if let Some(reason) = batch.inconsistency() {
                return Err(Error::MalformedBatch {
                    epoch,
                    batch: run.state.batch,
                    reason,
                });
            }
            let data_wait = clock.elapsed().as_secs_f64();
            let (trained, report) = self.step(task, run, batch, batches, data_wait)?;
            task = trained;
            clock = Instant::now();
            if report
                .step
                .is_multiple_of(self.config.train.log_every_steps)
            {
                run.log.append(&json!({
                    "event": "step",
                    "epoch": report.epoch,
                    "batch": report.batch,
                    "step": report.step,
                    "loss": report.loss,
                    "lr": report.lr,
                    "images_per_sec": report.images_per_sec,
                }))?;
            }
            if let Control::Stop = observer.on_event(&Event::Step(&report)) {
                return Ok((task, Flow::Stop));
            }
            let mid_epoch = run.state.batch < batches && run.state.step < run.total_steps;
            if let Some(every) = self.config.checkpoint.every_steps
                && mid_epoch
                && run.state.step.is_multiple_of(every)
                && let Flow::Stop = self.save(&task, run, false, observer)?
            {
                return Ok((task, Flow::Stop));
            }
        }
        self.end_epoch(task, run, batches, observer)
    }

    /// One optimizer step on one batch.
    fn step<M: EmbeddingModel, L: MetricLoss>(
        &self,
        task: EmbeddingTask<M, L>,
        run: &mut Run,
        batch: Batch,
        batches: usize,
        data_wait: f64,
    ) -> Result<(EmbeddingTask<M, L>, StepReport), Error> {
        let timer = Instant::now();
        let (epoch, batch_index, step) = (run.state.epoch, run.state.batch, run.state.step);
        let seed = self.config.seed;
        // Layers that draw random numbers (dropout) get the same ones on a resumed run.
        self.device.seed(derive_seed(seed, SeedStream::Step, step));
        let batch_size = batch.labels.len();
        let images =
            Tensor::<4>::from_data(TensorData::new(batch.images, batch.shape), &self.device);
        let embeddings = task.model.embed(images);
        let loss = task
            .loss
            .loss(
                embeddings,
                &batch.labels,
                derive_seed(seed, SeedStream::Loss, step),
            )
            .map_err(|source| Error::Loss {
                epoch,
                batch: batch_index,
                source,
            })?;
        let value = read_scalar(loss.clone())?;
        if !value.is_finite() {
            return Err(Error::NonFiniteLoss {
                epoch,
                batch: batch_index,
                step: step + 1,
                value,
            });
        }
        let grads = GradientsParams::from_grads(loss.backward(), &task);
        let lr = run.schedule.step();
        let lr_value = lr.base();
        let task = run.optimizer.step(lr, task, grads);
        let state = &mut run.state;
        state.batch += 1;
        state.step += 1;
        state.epoch_loss_sum += value;
        let seconds = data_wait + timer.elapsed().as_secs_f64();
        let report = StepReport {
            epoch,
            batch: batch_index,
            batches_in_epoch: batches,
            step: state.step,
            total_steps: run.total_steps,
            loss: value,
            lr: lr_value,
            batch_size,
            images_per_sec: batch_size as f64 / seconds.max(1e-9),
        };
        Ok((task, report))
    }

    /// Closes an epoch (or the run, when `train.max_steps` ends it mid-epoch): logs it,
    /// evaluates if due, decides early stopping and writes the checkpoints.
    fn end_epoch<M: EmbeddingModel, L: MetricLoss>(
        &self,
        task: EmbeddingTask<M, L>,
        run: &mut Run,
        batches: usize,
        observer: &mut dyn Observer,
    ) -> Result<(EmbeddingTask<M, L>, Flow), Error> {
        let state = &mut run.state;
        let epoch = state.epoch;
        let complete = state.batch >= batches;
        if !complete && state.step < run.total_steps {
            return Err(Error::ShortEpoch {
                epoch,
                got: state.batch,
                expected: batches,
            });
        }
        if complete {
            let mean_loss = state.epoch_loss_sum / state.batch as f64;
            run.log.append(&json!({
                "event": "epoch",
                "epoch": epoch,
                "step": state.step,
                "mean_loss": mean_loss,
            }))?;
            state.epoch += 1;
            state.batch = 0;
            state.epoch_loss_sum = 0.0;
            if let Control::Stop = observer.on_event(&Event::EpochEnd { epoch, mean_loss }) {
                return Ok((task, Flow::Stop));
            }
        }
        let finished = state.step >= run.total_steps || state.epoch >= self.config.train.epochs;
        let every = self.config.eval.every_epochs;
        let due = finished || (complete && every > 0 && state.epoch.is_multiple_of(every));
        let mut improved = false;
        if let Some(eval) = self.eval.filter(|_| due) {
            let metrics = self.evaluate(&task.model, eval, state.epoch)?;
            let evaluation = Evaluation {
                epochs: state.epoch,
                step: state.step,
                metrics,
            };
            improved = self.update_best(state, &evaluation);
            run.log.append(&json!({
                "event": "eval",
                "epochs": evaluation.epochs,
                "step": evaluation.step,
                "metrics": evaluation.metrics,
                "improved": improved,
            }))?;
            let event = Event::Evaluated {
                evaluation: &evaluation,
                improved,
            };
            if let Control::Stop = observer.on_event(&event) {
                return Ok((task, Flow::Stop));
            }
            state.evaluations.push(evaluation);
            if let Some(early) = &self.config.early_stopping
                && state.evals_since_best >= early.patience
            {
                state.status = RunStatus::EarlyStopped;
            }
        }
        if finished && state.status == RunStatus::Running {
            state.status = RunStatus::Finished;
        }
        if state.status != RunStatus::Running {
            run.log.append(&json!({
                "event": "end",
                "status": state.status,
                "epochs": state.epoch,
                "step": state.step,
                "best": state.best,
            }))?;
        }
        if let Flow::Stop = self.save(&task, run, improved, observer)? {
            return Ok((task, Flow::Stop));
        }
        if let (RunStatus::EarlyStopped, Some(best)) = (run.state.status, &run.state.best)
            && let Control::Stop = observer.on_event(&Event::EarlyStopped { best })
        {
            return Ok((task, Flow::Stop));
        }
        Ok((task, Flow::Continue))
    }

    /// Embeds the held-out split and computes its metrics.
    fn evaluate<M: EmbeddingModel>(
        &self,
        model: &M,
        eval: EvalSet<'_>,
        epochs: usize,
    ) -> Result<Metrics, Error> {
        let eval_error = |source: BoxError| Error::Eval { epochs, source };
        let device = self.device.clone().inner();
        let embeddings = embed_source(model, eval.data, &device).map_err(eval_error)?;
        let metrics = eval.evaluator.evaluate(&embeddings).map_err(eval_error)?;
        if let Some((key, value)) = metrics.iter().find(|(_, value)| !value.is_finite()) {
            return Err(eval_error(format!("metric {key} is {value}").into()));
        }
        let monitor = &self.config.eval.monitor;
        if !metrics.contains_key(monitor) {
            return Err(Error::MissingMetric {
                metric: monitor.clone(),
                available: metrics.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        Ok(metrics)
    }

    /// Records `evaluation` against the best so far; true if the monitored metric improved by
    /// more than `early_stopping.min_delta` (0 without early stopping).
    fn update_best(&self, state: &mut TrainerState, evaluation: &Evaluation) -> bool {
        let monitor = &self.config.eval.monitor;
        let value = evaluation.metrics[monitor];
        let min_delta = self
            .config
            .early_stopping
            .as_ref()
            .map_or(0.0, |early| early.min_delta);
        let improved = state
            .best
            .as_ref()
            .is_none_or(|best| value > best.value + min_delta);
        if improved {
            state.best = Some(BestMetric {
                metric: monitor.clone(),
                value,
                epochs: evaluation.epochs,
                step: evaluation.step,
            });
            state.evals_since_best = 0;
        } else {
            state.evals_since_best += 1;
        }
        improved
    }

    /// Writes `best.ckpt` (if `best`) and then `last.ckpt`, each atomically. Best first: a run
    /// killed between the two resumes from the older `last.ckpt` and rewrites both.
    fn save<M: Module, L: Module>(
        &self,
        task: &EmbeddingTask<M, L>,
        run: &mut Run,
        best: bool,
        observer: &mut dyn Observer,
    ) -> Result<Flow, Error> {
        run.state.log_bytes = run.log.flush()?;
        // `valid()` folds batch-norm running averages still pending in burn's per-thread
        // buffers into their values (a record of the training module would miss the last
        // update); folding now or at the next forward gives the same numbers.
        let encoded = EncodedCheckpoint::encode(
            self.config,
            &run.state,
            task.model.valid(),
            task.loss.valid(),
            &run.optimizer,
            run.schedule.to_record(),
        )?;
        let mut targets = vec![(CheckpointKind::Last, &self.paths.last_checkpoint)];
        if best && self.config.checkpoint.best {
            targets.insert(0, (CheckpointKind::Best, &self.paths.best_checkpoint));
        }
        for (kind, path) in targets {
            encoded.write(path)?;
            if let Control::Stop = observer.on_event(&Event::CheckpointWritten { kind, path }) {
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Continue)
    }
}

fn read_scalar(loss: Tensor<1>) -> Result<f64, Error> {
    let values = loss
        .try_into_vec_as::<f32>()
        .map_err(|e| Error::TensorRead {
            what: "the loss",
            reason: format!("{e:?}"),
        })?;
    match values.as_slice() {
        [value] => Ok(f64::from(*value)),
        other => Err(Error::TensorRead {
            what: "the loss",
            reason: format!("expected one value, got {}", other.len()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::config::{
        CheckpointConfig, EarlyStoppingConfig, EvalConfig, MetricKind, OptimizerConfig,
        ScheduleConfig, TrainConfig,
    };
    use crate::test_support::{Blobs, BruteRecall, InOrder, LinearEmbedder, PairLoss};

    type Outcome = TrainOutcome<LinearEmbedder, PairLoss>;

    const MODEL_SEED: u64 = 5;

    fn config(dir: &Path) -> RunConfig {
        RunConfig {
            out: dir.to_owned(),
            seed: 3,
            train: TrainConfig {
                epochs: 3,
                max_steps: None,
                log_every_steps: 1,
            },
            optimizer: OptimizerConfig::Adam {
                lr: 0.05,
                beta1: 0.9,
                beta2: 0.999,
                epsilon: 1e-8,
                weight_decay: 1e-4,
            },
            schedule: ScheduleConfig::Cosine {
                min_lr: 0.001,
                warmup_steps: 2,
            },
            eval: EvalConfig {
                every_epochs: 1,
                k: vec![1, 2],
                metrics: vec![MetricKind::RecallAtK],
                episodes: None,
                monitor: "recall@1".to_owned(),
            },
            checkpoint: CheckpointConfig {
                every_steps: Some(3),
                best: true,
            },
            ..RunConfig::default()
        }
    }

    /// Runs the stand-in task: 48 training items in batches of 12 (4 steps an epoch).
    fn train(
        config: &RunConfig,
        model_seed: u64,
        start: Start,
        observer: &mut dyn Observer,
        tweak: impl FnOnce(&mut Blobs, &mut BruteRecall, &mut PairLoss),
    ) -> Result<Outcome, Error> {
        let device = Device::flex().autodiff();
        let mut data = Blobs::new(6, 8, 12, 11);
        let held_out = Blobs::new(4, 6, 12, 99);
        let mut evaluator = BruteRecall {
            k: vec![1, 2],
            constant: None,
        };
        let mut loss = PairLoss {
            margin: 1.0,
            nan: false,
        };
        tweak(&mut data, &mut evaluator, &mut loss);
        let eval_data = InOrder(&held_out);
        let trainer = Trainer::new(config, device.clone(), &data).with_eval(EvalSet {
            data: &eval_data,
            evaluator: &evaluator,
        });
        let task = EmbeddingTask {
            model: LinearEmbedder::new(model_seed, 4, &device),
            loss,
        };
        trainer.fit(task, start, observer)
    }

    /// [`train`] without an observer.
    fn silent(
        config: &RunConfig,
        model_seed: u64,
        start: Start,
        tweak: impl FnOnce(&mut Blobs, &mut BruteRecall, &mut PairLoss),
    ) -> Result<Outcome, Error> {
        let mut observer = crate::observer::Silent;
        train(config, model_seed, start, &mut observer, tweak)
    }

    fn plain(config: &RunConfig) -> Outcome {
        silent(config, MODEL_SEED, Start::New, |_, _, _| {}).unwrap()
    }

    /// Stops the run at its `n`-th event, like a kill at that moment.
    struct KillAt {
        n: usize,
        seen: usize,
    }

    impl Observer for KillAt {
        fn on_event(&mut self, _event: &Event<'_>) -> Control {
            self.seen += 1;
            if self.seen == self.n {
                Control::Stop
            } else {
                Control::Continue
            }
        }
    }

    /// Counts the events of a run.
    struct Count(usize);

    impl Observer for Count {
        fn on_event(&mut self, _event: &Event<'_>) -> Control {
            self.0 += 1;
            Control::Continue
        }
    }

    /// The metrics log without its timing fields (which differ between any two runs).
    fn log_without_timings(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| {
                let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
                value.as_object_mut().unwrap().remove("images_per_sec");
                value
            })
            .collect()
    }

    fn comparable(state: &TrainerState) -> TrainerState {
        TrainerState {
            log_bytes: 0,
            ..state.clone()
        }
    }

    fn assert_same_run(a: &Outcome, a_dir: &Path, b: &Outcome, b_dir: &Path, what: &str) {
        assert_eq!(
            a.task.model.values(),
            b.task.model.values(),
            "{what}: weights"
        );
        assert_eq!(comparable(&a.state), comparable(&b.state), "{what}: state");
        assert_eq!(
            log_without_timings(&a_dir.join("metrics.jsonl")),
            log_without_timings(&b_dir.join("metrics.jsonl")),
            "{what}: metrics log"
        );
        let best = |dir: &Path| Checkpoint::read(&RunPaths::new(dir).best_checkpoint).unwrap();
        assert_eq!(
            best(a_dir).state.best,
            best(b_dir).state.best,
            "{what}: best"
        );
    }

    #[test]
    fn a_run_killed_at_any_event_and_resumed_ends_bit_identical() {
        let reference_dir = tempfile::tempdir().unwrap();
        let reference_config = config(reference_dir.path());
        let mut count = Count(0);
        let reference = train(
            &reference_config,
            MODEL_SEED,
            Start::New,
            &mut count,
            |_, _, _| {},
        )
        .unwrap();
        assert_eq!(reference.state.status, RunStatus::Finished);
        assert_eq!(reference.state.step, 12);
        assert_eq!(reference.state.evaluations.len(), 3);
        // The run learned something: the model is not where it started.
        let start = LinearEmbedder::new(MODEL_SEED, 4, &Device::flex().autodiff());
        assert_ne!(reference.task.model.values(), start.values());

        for n in 1..=count.0 {
            let dir = tempfile::tempdir().unwrap();
            let config = config(dir.path());
            let mut kill = KillAt { n, seen: 0 };
            let first = train(&config, MODEL_SEED, Start::New, &mut kill, |_, _, _| {}).unwrap();
            assert!(first.interrupted, "event {n}");
            let resumed = if RunPaths::new(dir.path()).last_checkpoint.exists() {
                // A different initial model: the weights must come from the checkpoint.
                silent(&config, 777, Start::Resume, |_, _, _| {}).unwrap()
            } else {
                // Killed before the first checkpoint: nothing to resume, start over.
                silent(&config, MODEL_SEED, Start::Overwrite, |_, _, _| {}).unwrap()
            };
            assert!(!resumed.interrupted);
            assert_same_run(
                &reference,
                reference_dir.path(),
                &resumed,
                dir.path(),
                &format!("killed at event {n}"),
            );
        }
    }

    #[test]
    fn sgd_with_momentum_and_step_schedule_resumes_exactly() {
        let with_sgd = |dir: &Path| RunConfig {
            optimizer: OptimizerConfig::Sgd {
                lr: 0.05,
                momentum: 0.9,
                dampening: 0.0,
                nesterov: true,
                weight_decay: 1e-4,
            },
            schedule: ScheduleConfig::Step {
                step_size: 5,
                gamma: 0.5,
                warmup_steps: 0,
            },
            ..config(dir)
        };
        let reference_dir = tempfile::tempdir().unwrap();
        let reference = plain(&with_sgd(reference_dir.path()));
        let dir = tempfile::tempdir().unwrap();
        let config = with_sgd(dir.path());
        // Killed twice: after step 4's checkpoint is written, then again mid-epoch 2.
        let mut kill = KillAt { n: 9, seen: 0 };
        train(&config, MODEL_SEED, Start::New, &mut kill, |_, _, _| {}).unwrap();
        let mut kill = KillAt { n: 6, seen: 0 };
        let second = train(&config, 777, Start::Resume, &mut kill, |_, _, _| {}).unwrap();
        assert!(second.interrupted);
        let resumed = silent(&config, 777, Start::Resume, |_, _, _| {}).unwrap();
        assert_same_run(
            &reference,
            reference_dir.path(),
            &resumed,
            dir.path(),
            "sgd",
        );
    }

    #[test]
    fn a_failed_checkpoint_write_keeps_the_previous_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let paths = RunPaths::new(dir.path());
        // After the first checkpoint, block the temporary file of the next one with a folder
        // of the same name: creating it fails like a full disk would.
        struct Sabotage(PathBuf);
        impl Observer for Sabotage {
            fn on_event(&mut self, event: &Event<'_>) -> Control {
                if let Event::CheckpointWritten { .. } = event {
                    std::fs::create_dir_all(&self.0).unwrap();
                }
                Control::Continue
            }
        }
        let temp = paths
            .last_checkpoint
            .with_file_name(format!(".last.ckpt.tmp{}", std::process::id()));
        let err = train(
            &config,
            MODEL_SEED,
            Start::New,
            &mut Sabotage(temp.clone()),
            |_, _, _| {},
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::Io { path, .. } if *path == paths.last_checkpoint),
            "{err}"
        );
        let survivor = Checkpoint::read(&paths.last_checkpoint).unwrap();
        assert_eq!(survivor.state.step, 3);

        std::fs::remove_dir(&temp).unwrap();
        let resumed = silent(&config, 777, Start::Resume, |_, _, _| {}).unwrap();
        let reference_dir = tempfile::tempdir().unwrap();
        let reference = plain(&self::config(reference_dir.path()));
        assert_eq!(resumed.task.model.values(), reference.task.model.values());
    }

    #[test]
    fn early_stopping_ends_after_patience_evaluations_without_improvement() {
        let dir = tempfile::tempdir().unwrap();
        let config = RunConfig {
            train: TrainConfig {
                epochs: 10,
                max_steps: None,
                log_every_steps: 4,
            },
            early_stopping: Some(EarlyStoppingConfig {
                patience: 2,
                min_delta: 0.0,
            }),
            ..config(dir.path())
        };
        let outcome = silent(&config, MODEL_SEED, Start::New, |_, eval, _| {
            eval.constant = Some(0.5);
        })
        .unwrap();
        assert_eq!(outcome.state.status, RunStatus::EarlyStopped);
        // Epoch 1 sets the best; epochs 2 and 3 do not improve on it.
        assert_eq!(outcome.state.epoch, 3);
        let best = outcome.state.best.as_ref().unwrap();
        assert_eq!((best.epochs, best.value), (1, 0.5));
        let best_checkpoint = Checkpoint::read(&RunPaths::new(dir.path()).best_checkpoint).unwrap();
        assert_eq!(best_checkpoint.state.epoch, 1);
        // Resuming a finished run returns its final state without training.
        let again = silent(&config, 777, Start::Resume, |_, eval, _| {
            eval.constant = Some(0.5);
        })
        .unwrap();
        assert_eq!(again.state, outcome.state);
        assert_eq!(again.task.model.values(), outcome.task.model.values());
    }

    #[test]
    fn max_steps_ends_mid_epoch_with_a_final_evaluation() {
        let dir = tempfile::tempdir().unwrap();
        let config = RunConfig {
            train: TrainConfig {
                epochs: 3,
                max_steps: Some(6),
                log_every_steps: 1,
            },
            ..config(dir.path())
        };
        let outcome = plain(&config);
        assert_eq!(outcome.state.status, RunStatus::Finished);
        assert_eq!(
            (outcome.state.step, outcome.state.epoch, outcome.state.batch),
            (6, 1, 2)
        );
        let epochs: Vec<usize> = outcome.state.evaluations.iter().map(|e| e.epochs).collect();
        assert_eq!(epochs, [1, 1]);
        assert_eq!(outcome.state.evaluations[1].step, 6);
    }

    #[test]
    fn resume_refuses_a_different_configuration_and_a_missing_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let err = silent(&config, MODEL_SEED, Start::Resume, |_, _, _| {}).unwrap_err();
        assert!(matches!(err, Error::NoCheckpoint { .. }), "{err}");

        let mut kill = KillAt { n: 8, seen: 0 };
        train(&config, MODEL_SEED, Start::New, &mut kill, |_, _, _| {}).unwrap();
        let changed = RunConfig {
            seed: 4,
            ..config.clone()
        };
        let err = silent(&changed, MODEL_SEED, Start::Resume, |_, _, _| {}).unwrap_err();
        assert!(
            matches!(&err, Error::ResumeMismatch { field, .. } if field == "seed"),
            "{err}"
        );
    }

    #[test]
    fn failures_name_where_they_happened() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let err = silent(&config, MODEL_SEED, Start::New, |data, _, _| {
            data.fail_at = Some(2);
        })
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Data {
                    epoch: 0,
                    batch: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert!(dml_core::error::chain(&err).contains("blob.png"), "{err}");

        let err = silent(&config, MODEL_SEED, Start::Overwrite, |_, _, loss| {
            loss.nan = true;
        })
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::NonFiniteLoss {
                    epoch: 0,
                    batch: 0,
                    step: 1,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn the_monitored_metric_must_be_computed() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let err = silent(&config, MODEL_SEED, Start::New, |_, eval, _| {
            eval.k = vec![2];
        })
        .unwrap_err();
        assert!(
            matches!(&err, Error::MissingMetric { metric, available } if metric == "recall@1" && available == "recall@2"),
            "{err}"
        );
    }
}
