//! Helpers shared by the CLI integration tests.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs the freshly built `dml` binary with `args`.
pub fn dml(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dml"))
        .args(args)
        .output()
        .expect("the dml binary runs")
}

/// The repository root (fixtures live there).
#[allow(dead_code)]
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The read-only shared data folder beside the repository (present in CI too).
#[allow(dead_code)]
pub fn shared_dir() -> PathBuf {
    repo_root().join("../shared")
}
