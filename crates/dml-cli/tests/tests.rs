//! CLI integration tests: one binary that runs `dml` as a user would.

mod common;
mod loss;
mod report;
