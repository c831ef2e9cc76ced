//! `dml bench train`: a tiny run times the small convnet with dml's kernels and with burn's
//! composed ops, each in its own child process, and bad flags fail with one clear line.

use crate::common::{fails, ok};

#[test]
fn a_tiny_run_measures_both_sides_of_the_small_convnet() {
    let stdout = ok(&[
        "--threads",
        "1",
        "bench",
        "train",
        "--models",
        "small-conv-net",
        "--steps",
        "1",
        "--warmup",
        "0",
    ]);
    let row: Vec<&str> = stdout
        .lines()
        .find(|l| l.starts_with("| small-conv-net"))
        .unwrap_or_else(|| panic!("no row: {stdout}"))
        .split('|')
        .map(str::trim)
        .collect();
    // | network | batch | dml | img/s | burn | dml/burn | PyTorch | dml/PyTorch | GFLOP/s | peak |
    assert_eq!(row[2], "[128,1,28,28]", "{stdout}");
    for cell in [row[3], row[5]] {
        assert!(cell.contains('[') && !cell.contains("failed"), "{stdout}");
    }
    assert!(row[6].ends_with('x'), "{stdout}");
    assert_eq!(row[7], "-", "no --torch, no PyTorch column: {stdout}");
    assert!(row[9].ends_with("%)"), "{stdout}");
    assert!(stdout.contains("GEMM reference"), "{stdout}");
}

#[test]
fn unknown_networks_and_zero_steps_are_one_line_errors() {
    let err = fails(&["bench", "train", "--models", "resnet101"]);
    assert!(
        err.contains("resnet101") && err.contains("small-conv-net"),
        "{err}"
    );
    let err = fails(&["bench", "train", "--steps", "0"]);
    assert!(err.contains("--steps"), "{err}");
}
