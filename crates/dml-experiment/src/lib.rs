//! Experiments over many training runs: plans, a resumable results store, and reports.
//!
//! - [`Plan`]: a `PLAN.toml` (see [`plan`] for the format) with a base run config and named
//!   axis entries, validated and expanded into [`PlannedRun`]s: a stable id such as
//!   `glyphs-1mode/triplet-hard/lr0.001/20x6/seed1`, the config overrides, the resolved
//!   config. [`RunCheck`] lets the trainer reject runs before any starts.
//! - [`ResultsStore`]: `results.jsonl`, one [`RunRecord`] per finished run, appended with one
//!   write and an `fsync`; a resumed experiment skips recorded runs, and an unfinished last
//!   line from a killed run is dropped and reported.
//! - [`run_experiment`]: runs the grid through a [`RunExecutor`] (the trainer), skipping
//!   recorded runs, appending each record as its run finishes.
//! - [`CollapseRule`] and [`Spread`]: when a run counts as collapsed, measured from the spread
//!   of its embeddings.
//! - [`write_report`]: `report.md` plus SVG/PNG figures (Recall@1 curves, stability maps,
//!   collapse indicator, seeded Barnes-Hut t-SNE maps via [`tsne`]) from the results file only.
//!
//! The crate knows nothing of the trainer's config struct: plans speak in `key.path = value`
//! overrides, and the trainer checks the resolved configs through [`RunCheck`].
//!
//! ```
//! use std::path::Path;
//! use dml_experiment::Plan;
//!
//! let plan = Plan::parse(r#"
//!     name = "demo"
//!     base = { optimizer = { kind = "adam" } }
//!     keys = { lr = "optimizer.lr", seed = "seed", classes_per_batch = "data.p", samples_per_class = "data.k" }
//!     grid = { datasets = ["glyphs-1mode"], losses = ["triplet-hard", "npairs"], learning_rates = [1e-3], batches = ["20x6"], seeds = [1, 2] }
//!     [datasets.glyphs-1mode]
//!     data.modes = 1
//!     [losses.triplet-hard]
//!     loss = { name = "triplet-margin", margin = 1.0 }
//!     [losses.npairs]
//!     loss.name = "npairs"
//! "#, Path::new("demo.toml"))?;
//! let ids: Vec<&str> = plan.runs().iter().map(|r| r.id.as_str()).collect();
//! assert_eq!(ids[0], "glyphs-1mode/triplet-hard/lr0.001/20x6/seed1");
//! assert_eq!(ids.len(), 4);
//! assert_eq!(plan.runs()[3].config["loss"]["name"].as_str(), Some("npairs"));
//! # Ok::<(), dml_experiment::Error>(())
//! ```
#![deny(missing_docs)]

mod atomic;
pub mod collapse;
pub mod embeddings;
mod error;
pub mod grid;
pub mod overrides;
pub mod plan;
pub mod record;
mod report;
pub mod runner;
pub mod stats;
pub mod store;
pub mod tsne;

pub use collapse::{CollapseRule, Spread};
pub use error::{BoxError, Error, Result};
pub use grid::{Axis, BatchShape, PlannedRun, RunAxes};
pub use plan::{Plan, RunCheck};
pub use record::{CurvePoint, EmbeddingFiles, FinalMetrics, RunRecord};
pub use report::{ReportOptions, ReportSummary, write_report};
pub use runner::{ExperimentSummary, Progress, RunExecutor, RunOutcome, run_experiment};
pub use store::{LoadedResults, ResultsStore, TruncatedTail};
pub use tsne::TsneConfig;
