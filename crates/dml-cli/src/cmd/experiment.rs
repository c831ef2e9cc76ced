//! `dml experiment`: run a plan's grid of training runs through the trainer, resumably, and
//! write the report.
//!
//! Every grid point is a `dml train` run in `OUT/runs/<run id>/` (config, metrics.jsonl,
//! checkpoints, test embeddings). The untrained network is evaluated first, so every curve
//! starts at step 0; every evaluation also records the spread of the test embeddings
//! (`eval.metrics` always gets `spread`), which the collapse rule reads. A finished run is
//! one line of `OUT/results.jsonl`; running the same plan into the same folder skips those
//! runs and resumes a run that was killed from its last checkpoint.
//!
//! Paths inside the plan's run configs (dataset paths) are relative to the working folder,
//! as for `dml train`; a relative `base = "FILE"` is relative to the plan file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use burn::tensor::Device;
use dml_experiment::{
    BoxError, CollapseRule, CurvePoint, EmbeddingFiles, FinalMetrics, Plan, PlannedRun,
    Progress as PlanProgress, ReportOptions, RunExecutor, RunOutcome, run_experiment, write_report,
};
use dml_train::checkpoint::Checkpoint;
use dml_train::components::model::build_model;
use dml_train::config::{MetricKind, Override, RunConfig, SPREAD_KEYS};
use dml_train::observer::{Control, Event, Observer};
use dml_train::run::{Assembled, model_from_checkpoint, train};
use dml_train::run_folder::{RunPaths, Start};
use dml_train::state::Evaluation;
use dml_train::task::Metrics;
use indicatif::{ProgressBar, ProgressStyle};

use super::train::apply_threads;
use crate::device::DeviceArg;

/// Arguments of `dml experiment`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Experiment plan (TOML): a base run config, dataset and loss entries, the grid.
    #[arg(long, value_name = "PATH")]
    plan: PathBuf,
    /// Output folder for results.jsonl, runs/ and report/. Default: experiments/<plan name>.
    #[arg(long, short = 'o', value_name = "DIR")]
    out: Option<PathBuf>,
    /// Set a run-config field in every run, after the plan, e.g. --set train.max_steps=2.
    ///
    /// For smoke tests of a plan: the runs keep their ids, and their recorded configs
    /// show the change. Repeatable; applied in order.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Do not write OUT/report when the grid is done (`dml report` can write it later).
    #[arg(long)]
    no_report: bool,
    /// Check the plan and list its runs without training.
    #[arg(long)]
    dry_run: bool,
}

/// Runs `dml experiment`.
pub fn run(args: Args, device: DeviceArg) -> anyhow::Result<()> {
    let plan = Plan::from_file(&args.plan)?;
    let overrides = args
        .set
        .iter()
        .map(|text| Override::parse(text))
        .collect::<Result<Vec<_>, _>>()?;
    plan.check(&|run: &PlannedRun| check_run(run, &overrides))?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| Path::new("experiments").join(plan.name()));
    if args.dry_run {
        for run in plan.runs() {
            outln!("{}", run.id)?;
        }
        outln!("{} runs, plan `{}` checked", plan.runs().len(), plan.name())?;
        return Ok(());
    }
    if let Some(first) = plan.runs().first() {
        apply_threads(&run_config(first, &out, &overrides)?);
    }
    let planned = plan.runs().len();
    let device = device.device()?;
    let mut executor = TrainerExecutor {
        planned,
        overrides,
        device,
    };
    let rule = CollapseRule::default();
    // A closed stdout does not stop the runs (their results go to results.jsonl); its error
    // is returned once they are done.
    let mut stdout_error = None;
    let summary = run_experiment(&plan, &out, &mut executor, &rule, &mut |event| {
        if let Err(e) = report_progress(&event, planned) {
            stdout_error.get_or_insert(e);
        }
    })?;
    if let Some(e) = stdout_error {
        return Err(e.into());
    }
    if let Some(tail) = &summary.truncated_tail {
        errln!(
            "dml: warning: {}: dropped unfinished line {} ({} bytes) left by an interrupted run",
            summary.results.display(),
            tail.line,
            tail.bytes
        );
    }
    outln!(
        "{} runs planned: {} trained now, {} already in {}",
        summary.planned,
        summary.ran,
        summary.skipped,
        summary.results.display()
    )?;
    if !args.no_report {
        let dir = out.join("report");
        let report = write_report(&summary.results, &dir, &ReportOptions::default())
            .with_context(|| format!("cannot write the report into {}", dir.display()))?;
        outln!(
            "report: {} ({} figure files)",
            report.report.display(),
            report.figures.len()
        )?;
    }
    Ok(())
}

/// The run config of a planned run, to be trained in `run_dir`: the plan's resolved table
/// and the `--set` overrides through the trainer's own validation, with the spread metric
/// added.
fn run_config(
    run: &PlannedRun,
    run_dir: &Path,
    overrides: &[Override],
) -> anyhow::Result<RunConfig> {
    let text = toml::to_string(&run.config).context("the run config is not a TOML table")?;
    let mut config = RunConfig::resolve(&text, &format!("plan run `{}`", run.id), overrides)?;
    config.out = run_dir.to_owned();
    if !config.eval.metrics.contains(&MetricKind::Spread) {
        config.eval.metrics.push(MetricKind::Spread);
    }
    config.validate()?;
    Ok(config)
}

/// The plan check: every run config is valid and its data files exist, before any run starts.
fn check_run(run: &PlannedRun, overrides: &[Override]) -> Result<(), BoxError> {
    let config = run_config(run, Path::new("."), overrides)?;
    let datasets = std::iter::once(&config.data.dataset).chain(config.data.test.as_ref());
    for path in datasets.filter_map(|d| d.path()) {
        if !path.exists() {
            return Err(format!("data path {} does not exist", path.display()).into());
        }
    }
    if !config.data.dataset.has_test_split() && config.data.test.is_none() {
        return Err("an experiment run needs a held-out split to evaluate: set data.test".into());
    }
    Ok(())
}

/// One line per finished run on stdout; nothing for skipped ones.
fn report_progress(event: &PlanProgress<'_>, planned: usize) -> std::io::Result<()> {
    if let PlanProgress::Finished { record, index } = event {
        let cell = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
        let m = &record.final_metrics;
        outln!(
            "[{}/{planned}] {}  R@1 {}  R@4 {}  NMI {}{}  {:.0} s",
            index + 1,
            record.run_id,
            cell(m.recall_at(1)),
            cell(m.recall_at(4)),
            cell(m.nmi),
            if record.collapsed { "  COLLAPSED" } else { "" },
            record.wall_seconds
        )?;
    }
    Ok(())
}

/// Trains planned runs with dml-train.
struct TrainerExecutor {
    planned: usize,
    overrides: Vec<Override>,
    /// Where the networks run (without autodiff).
    device: Device,
}

impl RunExecutor for TrainerExecutor {
    fn execute(&mut self, run: &PlannedRun, run_dir: &Path) -> Result<RunOutcome, BoxError> {
        let config = run_config(run, run_dir, &self.overrides)?;
        Ok(execute(&config, &run.id, self.planned, &self.device)?)
    }
}

fn execute(
    config: &RunConfig,
    run_id: &str,
    planned: usize,
    device: &Device,
) -> anyhow::Result<RunOutcome> {
    let run_dir = config.out.as_path();
    let assembled = Assembled::open(config)?;
    let plain = device.clone();
    let evaluate = |model: &_| -> anyhow::Result<_> {
        assembled
            .evaluate(model, &plain)?
            .context("an experiment run needs a held-out split to evaluate: set data.test")
    };
    // The same seed builds the same network training starts from.
    let (_, initial) = evaluate(&build_model(config, &plain, true)?)?;
    let paths = RunPaths::new(run_dir);
    // The experiment owns its run folders: a run killed before its first checkpoint has
    // nothing to resume and starts over.
    let start = if paths.last_checkpoint.exists() {
        Start::Resume
    } else {
        Start::Overwrite
    };
    let mut bar = RunBar::new(run_id, planned);
    let outcome = train(
        config,
        &assembled,
        &device.clone().autodiff(),
        start,
        &mut bar,
    )?;
    bar.bar.finish_and_clear();

    let model = model_from_checkpoint(&Checkpoint::read(&paths.last_checkpoint)?, &plain)?;
    let (split, last) = evaluate(&model)?;
    let files = split.write_into_run(run_dir)?;
    let relative = |p: &Path| {
        p.strip_prefix(run_dir)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    };
    let epoch_losses = epoch_losses(&paths.metrics)?;
    Ok(RunOutcome {
        config: serde_json::from_str(&config.to_json()).context("run config as JSON")?,
        curve: curve(&initial, &outcome.state.evaluations, &epoch_losses),
        final_metrics: final_metrics(&last, &config.eval.k),
        embeddings: Some(EmbeddingFiles {
            vectors: relative(&files.embeddings),
            labels: relative(&files.labels),
        }),
    })
}

/// Mean training loss of every completed epoch, from the run's `metrics.jsonl` (complete
/// also for a resumed run, whose log continues the killed one's).
fn epoch_losses(metrics: &Path) -> anyhow::Result<BTreeMap<u64, f64>> {
    let text = dml_core::text::read_file(metrics)
        .with_context(|| format!("cannot read {}", metrics.display()))?;
    let mut losses = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let value: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}", metrics.display(), number + 1))?;
        if value["event"] == "epoch"
            && let (Some(epoch), Some(loss)) =
                (value["epoch"].as_u64(), value["mean_loss"].as_f64())
        {
            losses.insert(epoch, loss);
        }
    }
    Ok(losses)
}

/// The curve: the untrained network at step 0, then every evaluation, each with the mean
/// training loss of the epochs since the previous point.
fn curve(
    initial: &Metrics,
    evaluations: &[Evaluation],
    epoch_losses: &BTreeMap<u64, f64>,
) -> Vec<CurvePoint> {
    let mut points = vec![curve_point(0, 0, None, initial)];
    let mut previous_epochs = 0;
    for evaluation in evaluations {
        let epochs = evaluation.epochs as u64;
        let losses: Vec<f64> = epoch_losses
            .range(previous_epochs..epochs)
            .map(|(_, &l)| l)
            .collect();
        let loss = (!losses.is_empty()).then(|| losses.iter().sum::<f64>() / losses.len() as f64);
        points.push(curve_point(
            evaluation.step,
            epochs,
            loss,
            &evaluation.metrics,
        ));
        previous_epochs = epochs;
    }
    points
}

fn curve_point(step: u64, epoch: u64, loss: Option<f64>, metrics: &Metrics) -> CurvePoint {
    let get = |key: &str| metrics.get(key).copied().filter(|v| v.is_finite());
    let [distance, std] = SPREAD_KEYS;
    CurvePoint {
        step,
        epoch,
        loss: loss.filter(|l| l.is_finite()),
        recall_at_1: get("recall@1"),
        recall_at_4: get("recall@4"),
        nmi: get("nmi"),
        map_at_r: get("map@r"),
        mean_pairwise_distance: get(distance),
        embedding_std: get(std),
    }
}

fn final_metrics(metrics: &Metrics, ks: &[usize]) -> FinalMetrics {
    let get = |key: &str| metrics.get(key).copied().filter(|v| v.is_finite());
    FinalMetrics {
        recall_at_k: ks
            .iter()
            .filter_map(|&k| Some((u32::try_from(k).ok()?, get(&format!("recall@{k}")))))
            .collect(),
        nmi: get("nmi"),
        map_at_r: get("map@r"),
        r_precision: get("r_precision"),
    }
}

/// A progress bar for the run in training (hidden when stderr is not a terminal).
struct RunBar {
    bar: ProgressBar,
}

impl RunBar {
    fn new(run_id: &str, planned: usize) -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{prefix} {bar:20} {pos}/{len} steps  {msg}")
                .expect("the template is valid"),
        );
        bar.set_prefix(format!("({planned} planned) {run_id}"));
        bar.enable_steady_tick(Duration::from_millis(500));
        RunBar { bar }
    }
}

impl Observer for RunBar {
    fn on_event(&mut self, event: &Event<'_>) -> Control {
        match event {
            Event::Started {
                start_step,
                total_steps,
            } => {
                self.bar.set_length(*total_steps);
                self.bar.set_position(*start_step);
            }
            Event::Step(report) => {
                self.bar.set_position(report.step);
                self.bar.set_message(format!("loss {:.4}", report.loss));
            }
            _ => {}
        }
        Control::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evaluation(epochs: usize, step: u64, recall: f64) -> Evaluation {
        Evaluation {
            epochs,
            step,
            metrics: Metrics::from([
                ("recall@1".to_owned(), recall),
                ("mean_pairwise_distance".to_owned(), 0.5),
                ("nmi".to_owned(), f64::NAN),
            ]),
        }
    }

    #[test]
    fn the_curve_starts_untrained_and_averages_losses_between_points() {
        let initial = Metrics::from([("recall@1".to_owned(), 0.1)]);
        let losses = BTreeMap::from([(0, 1.0), (1, 0.5), (2, 0.3), (3, 0.1)]);
        let evals = [evaluation(2, 20, 0.6), evaluation(4, 40, 0.8)];
        let curve = curve(&initial, &evals, &losses);
        assert_eq!(curve.len(), 3);
        assert_eq!((curve[0].step, curve[0].loss), (0, None));
        assert_eq!(curve[0].recall_at_1, Some(0.1));
        assert_eq!((curve[1].step, curve[1].epoch), (20, 2));
        assert_eq!(curve[1].loss, Some(0.75));
        assert!((curve[2].loss.unwrap() - 0.2).abs() < 1e-12);
        assert_eq!(curve[2].mean_pairwise_distance, Some(0.5));
        assert_eq!(curve[2].nmi, None, "NaN is recorded as not measured");
    }

    #[test]
    fn final_metrics_take_every_configured_k() {
        let m = Metrics::from([
            ("recall@1".to_owned(), 0.5),
            ("recall@4".to_owned(), 0.9),
            ("nmi".to_owned(), 0.7),
        ]);
        let f = final_metrics(&m, &[1, 4, 8]);
        assert_eq!(f.recall_at(1), Some(0.5));
        assert_eq!(f.recall_at(4), Some(0.9));
        assert_eq!(f.recall_at_k.get(&8), Some(&None));
        assert_eq!((f.nmi, f.map_at_r), (Some(0.7), None));
    }
}
