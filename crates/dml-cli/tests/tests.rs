//! CLI integration tests: one binary that runs `dml` as a user would.

mod bad_input;
mod bench_losses;
mod bench_train;
mod common;
mod data_paths;
mod eval;
mod experiment;
mod loss;
mod report;
mod search;
mod train;
