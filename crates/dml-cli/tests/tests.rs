//! CLI integration tests: one binary that runs `dml` as a user would.

mod bench_losses;
mod common;
mod eval;
mod loss;
mod report;
mod train;
