//! dml-train: the trainer of the dml pipeline, its run configuration and its checkpoints.
//!
//! - [`config::RunConfig`]: the whole run as one serde tree, read from TOML, overridden with
//!   [`config::Override`]s (`--set key.path=value` and the CLI's dedicated flags), validated,
//!   and written to the run folder as `config.json`. Unknown fields are errors naming them.
//! - [`trainer::Trainer`]: the deterministic training loop (optimizers and schedules from
//!   burn, evaluation every N epochs, early stopping, best and last checkpoints) whose
//!   `fit(.., Start::Resume, ..)` continues a killed run exactly: same weights, same metrics.
//! - [`task`]: the small traits the trainer is written against ([`task::EmbeddingModel`],
//!   [`task::MetricLoss`], [`task::BatchSource`], [`task::Evaluator`]), so any model, loss,
//!   data and metric crate can drive it.
//! - [`checkpoint::Checkpoint`]: one file per checkpoint, replaced atomically
//!   ([`atomic`]), holding the config, the trainer state and burn's model, optimizer and
//!   scheduler records.
//! - [`observer`]: progress events for front ends (the library never prints); the library
//!   itself writes `metrics.jsonl` into the run folder.
//! - [`components`]: the four parts made from dml's crates (dml-data loaders and samplers,
//!   dml-models networks, dml-losses losses by PML class name, dml-eval metrics), and
//!   [`run`]: a configured run in a few calls (train, embed a split with a checkpoint,
//!   evaluate), with [`export`] writing embeddings as `.npy` plus labels and paths.
//!
//! A run folder ([`run_folder`]) holds `config.json`, `data.json` (the fingerprint of its data),
//! `metrics.jsonl`, `checkpoints/{last,best}.ckpt` and, once the run has ended, `summary.json`.
//! A new run never goes into a folder that holds another one.
//!
//! ```
//! use dml_train::config::{Override, RunConfig};
//!
//! let toml = "seed = 7\n[train]\nepochs = 2\n";
//! let overrides = [Override::parse("optimizer.lr=0.01")?, Override::new("train.epochs", 5)];
//! let config = RunConfig::resolve(toml, "run.toml", &overrides)?;
//! assert_eq!((config.seed, config.train.epochs, config.optimizer.lr()), (7, 5, 0.01));
//!
//! let typo = RunConfig::resolve("[train]\nepoch = 2\n", "run.toml", &[]).unwrap_err();
//! assert!(typo.to_string().starts_with("run.toml:2:1: unknown field `epoch`"));
//! # Ok::<(), dml_train::error::ConfigError>(())
//! ```
#![deny(missing_docs)]

pub mod atomic;
pub mod checkpoint;
pub mod components;
pub mod config;
pub mod embed;
pub mod error;
pub mod export;
pub mod fingerprint;
mod metrics_log;
pub mod observer;
pub mod optimizer;
pub mod run;
pub mod run_folder;
pub mod schedule;
pub mod seed;
pub mod state;
pub mod task;
pub mod trainer;

#[cfg(test)]
mod test_support;
