//! dml-train: the trainer of the dml pipeline (being written).
#![deny(missing_docs)]

pub mod atomic;
pub mod checkpoint;
pub mod config;
pub mod embed;
pub mod error;
mod metrics_log;
pub mod observer;
pub mod optimizer;
pub mod schedule;
pub mod seed;
pub mod state;
pub mod task;
pub mod trainer;
#[cfg(test)]
mod test_support;
