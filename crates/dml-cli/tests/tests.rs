//! CLI integration tests: one binary that runs `dml` as a user would.

mod bad_input;
mod bench_losses;
mod bench_train;
mod browser;
mod common;
mod data_paths;
mod eval;
mod experiment;
mod gallery;
mod gallery_browser;
mod loss;
mod report;
mod search;
mod train;
