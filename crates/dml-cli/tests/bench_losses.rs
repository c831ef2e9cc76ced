//! `dml bench losses`: a tiny run prints one measured row per (loss, N), each from its own
//! child process, and bad flags fail with one clear line.

use crate::common::dml;

#[test]
fn a_tiny_run_measures_every_requested_cell() {
    let run = dml(&[
        "--threads",
        "1",
        "bench",
        "losses",
        "--sizes",
        "16,24",
        "--dim",
        "8",
        "--repeats",
        "1",
        "--only",
        "nt-xent,triplet+batch-hard",
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.starts_with("| nt-xent") || l.starts_with("| triplet+batch-hard"))
        .map(|l| l.split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), 4, "{stdout}");
    for row in rows {
        // | name | N | median [min-max] | kernel | peak | floor | ratio |
        assert!(!row[3].contains("failed"), "{stdout}");
        assert!(row[5].ends_with(')') && row[7].ends_with('x'), "{stdout}");
    }
}

#[test]
fn unknown_rows_and_too_small_batches_are_one_line_errors() {
    for args in [
        &["bench", "losses", "--only", "tripplet"][..],
        &["bench", "losses", "--sizes", "6"][..],
    ] {
        let run = dml(args);
        assert_eq!(run.status.code(), Some(2));
        let err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.starts_with("dml: error: --"), "{err}");
    }
}
