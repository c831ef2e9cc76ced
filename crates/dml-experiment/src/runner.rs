//! Running a plan: every grid point not yet in `results.jsonl` goes through the trainer, and
//! its record is appended the moment it finishes.
//!
//! The trainer is behind [`RunExecutor`], so this crate stays free of burn and the resume
//! logic is tested with stand-ins. An interrupted experiment is resumed by running the same
//! plan into the same folder: recorded runs are skipped, the rest run in grid order.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::collapse::CollapseRule;
use crate::error::{BoxError, Error, Result};
use crate::grid::PlannedRun;
use crate::plan::Plan;
use crate::record::{CurvePoint, EmbeddingFiles, FinalMetrics, RunRecord};
use crate::store::{ResultsStore, TruncatedTail};

/// What the trainer reports for one finished run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    /// The fully resolved run config, defaults included.
    pub config: serde_json::Value,
    /// Metrics at every evaluation, the untrained model first.
    pub curve: Vec<CurvePoint>,
    /// Metrics of the final model.
    pub final_metrics: FinalMetrics,
    /// Saved test embeddings, paths relative to the run's folder.
    pub embeddings: Option<EmbeddingFiles>,
}

/// Trains one planned run (the CLI implements it with dml-train).
pub trait RunExecutor {
    /// Runs `run`, keeping its files (checkpoints, logs, embeddings) under `run_dir`, which
    /// exists. A run that was interrupted before may find its earlier files there.
    fn execute(
        &mut self,
        run: &PlannedRun,
        run_dir: &Path,
    ) -> std::result::Result<RunOutcome, BoxError>;
}

/// Progress of an experiment, for front ends (the library never prints).
#[derive(Debug)]
pub enum Progress<'a> {
    /// A run already in `results.jsonl` was skipped.
    Skipped {
        /// The run.
        run: &'a PlannedRun,
        /// Its 0-based position in the grid.
        index: usize,
    },
    /// A run is starting.
    Started {
        /// The run.
        run: &'a PlannedRun,
        /// Its 0-based position in the grid.
        index: usize,
    },
    /// A run finished and was recorded.
    Finished {
        /// What was appended to `results.jsonl`.
        record: &'a RunRecord,
        /// Its 0-based position in the grid.
        index: usize,
    },
}

/// What an experiment call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExperimentSummary {
    /// `results.jsonl`.
    pub results: PathBuf,
    /// Grid points in the plan.
    pub planned: usize,
    /// Runs skipped because they were already recorded.
    pub skipped: usize,
    /// Runs trained and recorded by this call.
    pub ran: usize,
    /// An unfinished last line (from a killed run) that was dropped; its run was redone.
    pub truncated_tail: Option<TruncatedTail>,
}

/// Runs every grid point of `plan` that `out/results.jsonl` does not hold yet, in grid order,
/// each in `out/runs/<run id>/`. The first failing run stops the experiment with an error
/// naming it; everything finished before stays recorded.
pub fn run_experiment(
    plan: &Plan,
    out: &Path,
    executor: &mut dyn RunExecutor,
    rule: &CollapseRule,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<ExperimentSummary> {
    std::fs::create_dir_all(out).map_err(Error::io(out))?;
    let results = out.join("results.jsonl");
    let mut store = ResultsStore::open(&results)?;
    if let Some(other) = store.records().iter().find(|r| r.plan_name != plan.name()) {
        return Err(Error::PlanMismatch {
            path: results,
            found: other.plan_name.clone(),
            expected: plan.name().to_owned(),
        });
    }
    let mut summary = ExperimentSummary {
        results: results.clone(),
        planned: plan.runs().len(),
        skipped: 0,
        ran: 0,
        truncated_tail: store.truncated_tail(),
    };
    for (index, run) in plan.runs().iter().enumerate() {
        if store.contains(&run.id) {
            summary.skipped += 1;
            progress(Progress::Skipped { run, index });
            continue;
        }
        let relative_dir = Path::new("runs").join(&run.id);
        let run_dir = out.join(&relative_dir);
        std::fs::create_dir_all(&run_dir).map_err(Error::io(&run_dir))?;
        progress(Progress::Started { run, index });
        let started = Instant::now();
        let outcome = executor
            .execute(run, &run_dir)
            .map_err(|source| Error::RunFailed {
                run_id: run.id.clone(),
                source,
            })?;
        let in_results_dir = |p: &str| relative_dir.join(p).to_string_lossy().into_owned();
        let record = RunRecord {
            run_id: run.id.clone(),
            plan_name: plan.name().to_owned(),
            axes: run.axes.clone(),
            config: outcome.config,
            collapsed: rule.is_collapsed(&outcome.curve),
            curve: outcome.curve,
            final_metrics: outcome.final_metrics,
            wall_seconds: started.elapsed().as_secs_f64(),
            embeddings: outcome.embeddings.map(|e| EmbeddingFiles {
                vectors: in_results_dir(&e.vectors),
                labels: in_results_dir(&e.labels),
            }),
        };
        store.append(record)?;
        summary.ran += 1;
        let record = store.records().last().expect("just appended");
        progress(Progress::Finished { record, index });
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store;

    const PLAN: &str = r#"
name = "runner-test"
base = { seed = 0 }
keys = { lr = "lr", seed = "seed", classes_per_batch = "p", samples_per_class = "k" }
grid = { datasets = ["d"], losses = ["a", "b"], learning_rates = [0.1], batches = ["2x2"], seeds = [1, 2] }
[datasets.d]
[losses.a]
margin = 1.0
[losses.b]
margin = 0.0
"#;

    fn plan() -> Plan {
        Plan::parse(PLAN, Path::new("plan.toml")).unwrap()
    }

    /// Records which runs it was asked for; fails on `fail_on`; loss `b` collapses.
    struct StandIn {
        calls: Vec<String>,
        fail_on: Option<String>,
    }

    impl RunExecutor for StandIn {
        fn execute(
            &mut self,
            run: &PlannedRun,
            run_dir: &Path,
        ) -> std::result::Result<RunOutcome, BoxError> {
            assert!(run_dir.is_dir());
            self.calls.push(run.id.clone());
            if self.fail_on.as_deref() == Some(run.id.as_str()) {
                return Err("out of memory".into());
            }
            let spread = if run.axes.loss == "b" { 0.0 } else { 2.0 };
            let curve = vec![
                CurvePoint {
                    step: 0,
                    mean_pairwise_distance: Some(1.0),
                    ..CurvePoint::default()
                },
                CurvePoint {
                    step: 5,
                    mean_pairwise_distance: Some(spread),
                    ..CurvePoint::default()
                },
            ];
            Ok(RunOutcome {
                config: serde_json::json!({ "seed": run.config["seed"].as_integer() }),
                curve,
                final_metrics: FinalMetrics::default(),
                embeddings: Some(EmbeddingFiles {
                    vectors: "test.npy".into(),
                    labels: "test.labels.txt".into(),
                }),
            })
        }
    }

    fn stand_in(fail_on: Option<&str>) -> StandIn {
        StandIn {
            calls: Vec::new(),
            fail_on: fail_on.map(str::to_owned),
        }
    }

    #[test]
    fn runs_every_point_once_and_records_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut exec = stand_in(None);
        let mut finished = Vec::new();
        let summary = run_experiment(
            &plan(),
            dir.path(),
            &mut exec,
            &CollapseRule::default(),
            &mut |p| {
                if let Progress::Finished { record, .. } = p {
                    finished.push(record.run_id.clone());
                }
            },
        )
        .unwrap();
        assert_eq!((summary.planned, summary.skipped, summary.ran), (4, 0, 4));
        assert_eq!(exec.calls, finished);
        let records = store::load(&summary.results).unwrap().records;
        let ids: Vec<&str> = records.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "d/a/lr0.1/2x2/seed1",
                "d/a/lr0.1/2x2/seed2",
                "d/b/lr0.1/2x2/seed1",
                "d/b/lr0.1/2x2/seed2"
            ]
        );
        assert_eq!(
            records.iter().map(|r| r.collapsed).collect::<Vec<_>>(),
            [false, false, true, true]
        );
        assert_eq!(records[1].config["seed"], 2);
        assert_eq!(
            records[0].embeddings.as_ref().unwrap().vectors,
            "runs/d/a/lr0.1/2x2/seed1/test.npy"
        );
        assert!(dir.path().join("runs/d/b/lr0.1/2x2/seed2").is_dir());
    }

    #[test]
    fn an_interrupted_experiment_resumes_without_redoing_finished_runs() {
        let dir = tempfile::tempdir().unwrap();
        let rule = CollapseRule::default();
        let mut failing = stand_in(Some("d/b/lr0.1/2x2/seed1"));
        let msg = dml_core::error::chain(
            &run_experiment(&plan(), dir.path(), &mut failing, &rule, &mut |_| {}).unwrap_err(),
        );
        assert!(
            msg.contains("run `d/b/lr0.1/2x2/seed1` failed: out of memory"),
            "{msg}"
        );
        assert_eq!(failing.calls.len(), 3);

        // A run killed while its line was being written leaves half a line.
        let results = dir.path().join("results.jsonl");
        let mut text = std::fs::read_to_string(&results).unwrap();
        let second = text.lines().nth(1).unwrap().to_owned();
        text = text.lines().next().unwrap().to_owned() + "\n" + &second[..second.len() / 2];
        std::fs::write(&results, text).unwrap();

        let mut resumed = stand_in(None);
        let summary =
            run_experiment(&plan(), dir.path(), &mut resumed, &rule, &mut |_| {}).unwrap();
        assert_eq!(
            resumed.calls,
            [
                "d/a/lr0.1/2x2/seed2",
                "d/b/lr0.1/2x2/seed1",
                "d/b/lr0.1/2x2/seed2"
            ]
        );
        assert_eq!((summary.skipped, summary.ran), (1, 3));
        assert_eq!(summary.truncated_tail.map(|t| t.line), Some(2));
        assert_eq!(store::load(&results).unwrap().records.len(), 4);

        let mut idle = stand_in(None);
        let summary = run_experiment(&plan(), dir.path(), &mut idle, &rule, &mut |_| {}).unwrap();
        assert!(idle.calls.is_empty());
        assert_eq!((summary.skipped, summary.ran), (4, 0));
    }

    #[test]
    fn results_of_another_plan_are_not_mixed_in() {
        let dir = tempfile::tempdir().unwrap();
        let rule = CollapseRule::default();
        run_experiment(&plan(), dir.path(), &mut stand_in(None), &rule, &mut |_| {}).unwrap();
        let other =
            Plan::parse(&PLAN.replace("runner-test", "other"), Path::new("p.toml")).unwrap();
        let msg = run_experiment(&other, dir.path(), &mut stand_in(None), &rule, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("plan `runner-test`") && msg.contains("`other`"),
            "{msg}"
        );
    }
}
