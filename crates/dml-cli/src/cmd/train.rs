//! `dml train`: train an embedding network as a TOML run configuration says, in a run folder
//! (config.json, metrics.jsonl, checkpoints/, summary.json, and gallery/: the held-out split
//! embedded with the best checkpoint, as HTML), or resume a killed run exactly.
//!
//! Every configuration field can be set with `--set key.path=value`; the common ones also
//! have their own flag. Flags apply on top of the file, `--set` first.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::device::DeviceArg;
use anyhow::Context;
use dml_losses::LossModule;
use dml_models::EmbeddingNet;
use dml_train::checkpoint::Checkpoint;
use dml_train::config::{Override, RunConfig};
use dml_train::error::ConfigError;
use dml_train::observer::{Control, Event, Observer};
use dml_train::run::{Assembled, embed_split, model_from_checkpoint, train};
use dml_train::run_folder::{RunPaths, Start};
use dml_train::state::{RunStatus, TrainerState};
use dml_train::task::Metrics;
use dml_train::trainer::TrainOutcome;
use indicatif::{ProgressBar, ProgressStyle};

/// Arguments of `dml train`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// Continue the run in this folder from its last checkpoint.
    ///
    /// The run's own config.json is used; the result is identical to a run
    /// that was never interrupted.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ConfigArgs::IDS)]
    resume: Option<PathBuf>,
}

/// The run configuration: a TOML file, `--set` overrides and the dedicated flags. Shared by
/// `dml train` and `dml run`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// Run configuration (TOML). Default: the built-in synthetic glyphs job.
    #[arg(long, short = 'c', value_name = "PATH")]
    config: Option<PathBuf>,
    /// Set any configuration field, e.g. --set optimizer.kind=sgd.
    ///
    /// KEY is the dotted path of the field as in the TOML file; VALUE is a
    /// TOML value (numbers, true/false, [lists], "strings") or, if it is not
    /// one, a plain string. Setting a `kind` starts that section from the
    /// new kind's defaults. Repeatable; applied in order.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Epochs to train (train.epochs).
    #[arg(long, value_name = "NUM")]
    epochs: Option<usize>,
    /// Stop after this many optimizer steps (train.max_steps).
    #[arg(long, value_name = "NUM")]
    max_steps: Option<u64>,
    /// Peak learning rate (optimizer.lr).
    #[arg(long, value_name = "LR")]
    lr: Option<f64>,
    /// Optimizer: sgd, adam, adamw or rmsprop (optimizer.kind).
    #[arg(long, value_name = "NAME")]
    optimizer: Option<String>,
    /// Images per batch, P x K: sets P = NUM / K (data.batch.classes_per_batch).
    #[arg(long, value_name = "NUM")]
    batch_size: Option<usize>,
    /// Classes per batch, P (data.batch.classes_per_batch).
    #[arg(long, value_name = "NUM")]
    classes_per_batch: Option<usize>,
    /// Samples per class in a batch, K (data.batch.samples_per_class).
    #[arg(long, value_name = "NUM")]
    samples_per_class: Option<usize>,
    /// Loss, by its pytorch-metric-learning class name, with its default
    /// parameters (loss.name; loss.params are cleared: add --set loss.params.X=V).
    #[arg(long, value_name = "NAME")]
    loss: Option<String>,
    /// Miner by class name with default parameters, or `none` (loss.miner).
    #[arg(long, value_name = "NAME")]
    miner: Option<String>,
    /// Embedding size (model.embedding_dim).
    #[arg(long, value_name = "NUM")]
    embedding_dim: Option<usize>,
    /// Seed of every random choice (seed).
    #[arg(long, value_name = "NUM")]
    seed: Option<u64>,
    /// Run folder (out).
    #[arg(long, short = 'o', value_name = "DIR")]
    out: Option<PathBuf>,
    /// Training data: a .csv list, an image folder or .zip, or the path of
    /// the configured dataset kind (data.dataset).
    #[arg(long, value_name = "PATH")]
    data: Option<PathBuf>,
    /// Print the resolved configuration (JSON) and exit.
    #[arg(long)]
    dry_run: bool,
    /// Start over in a run folder that holds an earlier run: the folder is
    /// removed as a whole first (a folder holding files dml did not write is
    /// never removed).
    #[arg(long)]
    overwrite: bool,
}

impl ConfigArgs {
    /// Argument ids that define a configuration (they conflict with `--resume`).
    const IDS: [&'static str; 17] = [
        "config",
        "set",
        "epochs",
        "max_steps",
        "lr",
        "optimizer",
        "batch_size",
        "classes_per_batch",
        "samples_per_class",
        "loss",
        "miner",
        "embedding_dim",
        "seed",
        "out",
        "data",
        "dry_run",
        "overwrite",
    ];

    /// The resolved, validated configuration; `threads` is the global `--threads`.
    ///
    /// Order: the file, then the flags that choose a section's kind (`--optimizer`, `--loss`,
    /// `--miner`, which start their section afresh), then every `--set` in order, then the
    /// flags that set one value. A flag and a `--set` of the same field are an error, so every
    /// argument takes effect as written.
    pub fn resolve(&self, threads: Option<usize>) -> anyhow::Result<RunConfig> {
        let (text, origin) = match &self.config {
            Some(path) => (
                dml_core::text::read_file(path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
                path.display().to_string(),
            ),
            None => (String::new(), "(defaults)".to_owned()),
        };
        let sets = self
            .set
            .iter()
            .map(|text| Override::parse(text))
            .collect::<Result<Vec<_>, _>>()?;
        let (sections, names) = self.section_overrides()?;
        let values = self.value_overrides(threads)?;
        for flag in names.iter().chain(&values) {
            if let Some(set) = sets.iter().find(|set| set.overlaps(flag)) {
                return Err(conflict(flag.origin(), set.origin(), &set.key()));
            }
        }
        let claimed = [
            (
                self.miner.as_deref() == Some("none"),
                "--miner none",
                "loss.miner",
            ),
            (self.data.is_some(), "--data", "data.dataset"),
            (
                self.batch_size.is_some(),
                "--batch-size",
                "data.batch.classes_per_batch",
            ),
        ];
        let claimed = claimed
            .into_iter()
            .filter_map(|(given, flag, key)| given.then_some((flag, key)));
        for (flag, key) in claimed {
            let field = Override::new(key, 0);
            if let Some(other) = sets.iter().chain(&values).find(|o| o.overlaps(&field)) {
                return Err(conflict(flag, other.origin(), key));
            }
        }
        let overrides: Vec<Override> = sections.into_iter().chain(sets).chain(values).collect();
        let mut config = RunConfig::resolve(&text, &origin, &overrides)?;
        if let Some(path) = &self.data {
            config.data.dataset = config.data.dataset.for_path(path);
        }
        if self.miner.as_deref() == Some("none") {
            config.loss.miner = None;
        }
        if let Some(batch_size) = self.batch_size {
            config.set_batch_size(batch_size)?;
        }
        config.validate()?;
        Ok(config)
    }

    /// The flags that start a section afresh, and the overrides that name its choice (a
    /// `--set` of those conflicts with the flag).
    fn section_overrides(&self) -> anyhow::Result<(Vec<Override>, Vec<Override>)> {
        let mut all = Vec::new();
        let mut names = Vec::new();
        let no_params = || std::collections::BTreeMap::<String, i64>::new();
        if let Some(kind) = &self.optimizer {
            let kind = Override::flag("--optimizer", "optimizer.kind", kind.as_str())?;
            names.push(kind.clone());
            all.push(kind);
        }
        if let Some(name) = &self.loss {
            let name = Override::flag("--loss", "loss.name", name.as_str())?;
            names.push(name.clone());
            all.extend([name, Override::flag("--loss", "loss.params", no_params())?]);
        }
        if let Some(name) = self.miner.as_ref().filter(|n| *n != "none") {
            let name = Override::flag("--miner", "loss.miner.name", name.as_str())?;
            names.push(name.clone());
            all.extend([
                name,
                Override::flag("--miner", "loss.miner.params", no_params())?,
            ]);
        }
        Ok((all, names))
    }

    /// The flags that set one value each.
    fn value_overrides(&self, threads: Option<usize>) -> anyhow::Result<Vec<Override>> {
        let numbers = [
            ("--lr", "optimizer.lr", self.lr.map(toml::Value::Float)),
            ("--epochs", "train.epochs", self.epochs.map(toml_int)),
            (
                "--max-steps",
                "train.max_steps",
                self.max_steps.map(toml_int),
            ),
            (
                "--classes-per-batch",
                "data.batch.classes_per_batch",
                self.classes_per_batch.map(toml_int),
            ),
            (
                "--samples-per-class",
                "data.batch.samples_per_class",
                self.samples_per_class.map(toml_int),
            ),
            (
                "--embedding-dim",
                "model.embedding_dim",
                self.embedding_dim.map(toml_int),
            ),
            ("--seed", "seed", self.seed.map(toml_int)),
            ("--threads", "threads", threads.map(toml_int)),
            (
                "--out",
                "out",
                self.out
                    .as_ref()
                    .map(|dir| toml::Value::String(dir.display().to_string())),
            ),
        ];
        let mut out = Vec::new();
        for (flag, key, value) in numbers {
            if let Some(value) = value {
                out.push(Override::flag(flag, key, value)?);
            }
        }
        Ok(out)
    }

    /// `--dry-run` was given.
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// `--overwrite` was given: how a new run takes its folder.
    pub fn start(&self) -> Start {
        if self.overwrite {
            Start::Overwrite
        } else {
            Start::New
        }
    }
}

fn conflict(first: &str, second: &str, field: &str) -> anyhow::Error {
    ConfigError::ConflictingSettings {
        first: first.to_owned(),
        second: second.to_owned(),
        field: field.to_owned(),
    }
    .into()
}

/// A count or seed as a TOML integer; beyond i64 (TOML's range) it saturates, and validation
/// reports it.
fn toml_int(v: impl TryInto<i64>) -> toml::Value {
    toml::Value::Integer(v.try_into().unwrap_or(i64::MAX))
}

/// Applies `threads` from the configuration when `--threads` did not set the pool already.
pub fn apply_threads(config: &RunConfig) {
    if let Some(threads) = config.threads {
        // Fails only if the global pool exists, i.e. `--threads` was given: that one wins.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global();
    }
}

/// Runs `dml train`; `threads` is the global `--threads`.
pub fn run(args: Args, device: DeviceArg, threads: Option<usize>) -> anyhow::Result<()> {
    let (config, start) = match &args.resume {
        Some(dir) => {
            let path = RunPaths::new(dir).config;
            let json = dml_core::text::read_file(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let mut config = RunConfig::from_json(&json, &path.display().to_string())?;
            // The folder may have moved since the run started.
            config.out = dir.clone();
            if threads.is_some() {
                config.threads = threads;
            }
            (config, Start::Resume)
        }
        None => (args.config.resolve(threads)?, args.config.start()),
    };
    if args.config.dry_run() {
        outln!("{}", config.to_json())?;
        return Ok(());
    }
    check_run_folder(&config, start)?;
    apply_threads(&config);
    let started = Instant::now();
    let assembled = Assembled::open(&config)?;
    let plain = device.device()?;
    let outcome = train_with_progress(&config, &assembled, &plain, start)?;
    let keys = config.eval.metric_keys();
    let paths = RunPaths::new(&config.out);
    print_summary(&outcome.state, &paths, &keys, started.elapsed())?;
    if let Some(test) = assembled
        .data
        .test
        .as_ref()
        .filter(|_| !outcome.interrupted)
    {
        // The held-out split embedded with the checkpoint `dml run` and `dml embed` use.
        let checkpoint = Checkpoint::read(chosen_checkpoint(&paths))?;
        let split = embed_split(&model_from_checkpoint(&checkpoint, &plain)?, test, &plain)?;
        let page = super::gallery::write_run_gallery(&config.out, &split, test)?;
        outln!("gallery: {} (open it in a browser)", page.display())?;
    }
    Ok(())
}

/// Trains `config`'s run on `plain` (an inference device; training runs on its autodiff
/// form), showing [`Progress`] on stderr.
pub fn train_with_progress(
    config: &RunConfig,
    assembled: &Assembled,
    plain: &burn::tensor::Device,
    start: Start,
) -> anyhow::Result<TrainOutcome<EmbeddingNet, LossModule>> {
    let mut progress = Progress::new(config);
    progress.kill_at = test_kill_step()?;
    let outcome = train(
        config,
        assembled,
        &plain.clone().autodiff(),
        start,
        &mut progress,
    )?;
    progress.finish();
    Ok(outcome)
}

/// The checkpoint a finished run is embedded with: its best, or its last when no evaluation
/// chose a best.
pub fn chosen_checkpoint(paths: &RunPaths) -> &Path {
    if paths.best_checkpoint.exists() {
        &paths.best_checkpoint
    } else {
        &paths.last_checkpoint
    }
}

/// Fails before any work when the run cannot take its folder, saying how to go on.
pub fn check_run_folder(config: &RunConfig, start: Start) -> anyhow::Result<()> {
    let dir = &config.out;
    match RunPaths::new(dir).check(start) {
        Err(dml_train::error::Error::RunExists { .. }) => Err(anyhow::anyhow!(
            "{} already holds a run: continue it with `dml train --resume {}`, start over with \
             --overwrite (removes that run), or give another folder with --out",
            dir.display(),
            dir.display()
        )),
        other => other.map(drop).map_err(Into::into),
    }
}

/// Renders trainer events: a progress bar with loss and images/s on stderr (hidden when
/// stderr is not a terminal) and one line per evaluation.
pub struct Progress {
    bar: ProgressBar,
    monitor: String,
    keys: Vec<String>,
    kill_at: Option<u64>,
}

/// The environment variable that makes `dml train` kill itself with SIGKILL once step N is
/// done: the kill-and-resume test's way to stop a run at a known moment, which a kill sent
/// from outside cannot promise on a fast machine. Not a user setting.
const TEST_KILL_AT_STEP: &str = "DML_TEST_KILL_AT_STEP";

/// The step [`TEST_KILL_AT_STEP`] names, if it is set.
fn test_kill_step() -> anyhow::Result<Option<u64>> {
    match std::env::var(TEST_KILL_AT_STEP) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Ok(text) => text
            .parse()
            .map(Some)
            .with_context(|| format!("{TEST_KILL_AT_STEP}={text:?}: expected a step number")),
        Err(e) => Err(e).context(TEST_KILL_AT_STEP),
    }
}

impl Progress {
    /// A renderer for a run of `config`.
    pub fn new(config: &RunConfig) -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps  {msg}",
            )
            .expect("the template is valid"),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress {
            bar,
            monitor: config.eval.monitor.clone(),
            keys: config.eval.metric_keys(),
            kill_at: None,
        }
    }

    fn line(&self, text: String) {
        self.bar.suspend(|| errln!("{text}"));
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Observer for Progress {
    fn on_event(&mut self, event: &Event<'_>) -> Control {
        match event {
            Event::Started {
                start_step,
                total_steps,
            } => {
                self.bar.set_length(*total_steps);
                self.bar.set_position(*start_step);
                if *start_step > 0 {
                    self.line(format!("resumed at step {start_step} of {total_steps}"));
                }
            }
            Event::Step(report) => {
                if self.kill_at == Some(report.step) {
                    // SIGKILL: no destructor, no flush, exactly like `kill -9`.
                    // SAFETY: kill(2) with our own pid has no memory-safety preconditions.
                    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
                }
                self.bar.set_position(report.step);
                self.bar.set_message(format!(
                    "epoch {}  loss {:.4}  lr {:.2e}  {:.0} img/s",
                    report.epoch + 1,
                    report.loss,
                    report.lr,
                    report.images_per_sec
                ));
            }
            Event::EpochEnd { epoch, mean_loss } => {
                self.line(format!("epoch {:>3}  mean loss {mean_loss:.4}", epoch + 1));
            }
            Event::Evaluated {
                evaluation,
                improved,
            } => {
                let values = format_metrics(&evaluation.metrics, &self.keys);
                let mark = if *improved {
                    format!("  (best {})", self.monitor)
                } else {
                    String::new()
                };
                self.line(format!(
                    "eval after {} epochs: {values}{mark}",
                    evaluation.epochs
                ));
            }
            Event::EarlyStopped { best } => {
                self.line(format!(
                    "early stop: {} has not improved on {:.4} (after {} epochs)",
                    best.metric, best.value, best.epochs
                ));
            }
            _ => {}
        }
        Control::Continue
    }
}

/// `recall@1 0.8123  nmi 0.6012 ...` in report order.
pub fn format_metrics(metrics: &Metrics, keys: &[String]) -> String {
    keys.iter()
        .filter_map(|key| metrics.get(key).map(|v| format!("{key} {v:.4}")))
        .collect::<Vec<_>>()
        .join("  ")
}

fn print_summary(
    state: &TrainerState,
    paths: &RunPaths,
    keys: &[String],
    elapsed: Duration,
) -> std::io::Result<()> {
    let status = match state.status {
        RunStatus::Finished => "finished",
        RunStatus::EarlyStopped => "stopped early",
        RunStatus::Running => "interrupted",
    };
    outln!(
        "{status}: {} epochs, {} steps in {:.1} s",
        state.epoch,
        state.step,
        elapsed.as_secs_f64()
    )?;
    if let Some(best) = &state.best {
        outln!(
            "best {} = {:.4} after {} epochs ({})",
            best.metric,
            best.value,
            best.epochs,
            paths.best_checkpoint.display()
        )?;
    }
    if let Some(last) = state.last_evaluation() {
        outln!("last evaluation: {}", format_metrics(&last.metrics, keys))?;
    }
    outln!("run folder: {}", paths.dir.display())
}

/// A checkpoint file, or for a run folder its best checkpoint (its last if it has no best).
pub fn checkpoint_file(path: &Path) -> anyhow::Result<PathBuf> {
    if !path.is_dir() {
        return Ok(path.to_owned());
    }
    let paths = RunPaths::new(path);
    [paths.best_checkpoint, paths.last_checkpoint.clone()]
        .into_iter()
        .find(|p| p.exists())
        .with_context(|| {
            format!(
                "{} is a folder without checkpoints (looked for {})",
                path.display(),
                paths.last_checkpoint.display()
            )
        })
}
