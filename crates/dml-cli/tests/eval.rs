//! `dml eval` on .npy and text files written here: the PML reference cases end to end (table
//! and JSON), and one-line errors with exit code 2 for bad inputs.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{arg, dml, repo_root, write_npy};

fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(repo_root().join("fixtures/pml").join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// An eval case of the reference fixture and its expected results.
fn case(name: &str) -> (Value, Value) {
    let input = fixture("pml-cases.json")["eval_cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
        .clone();
    let expected = fixture("pml-expected.json")["eval_results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
        .clone();
    (input, expected)
}

/// Writes a JSON matrix as a float64 .npy file.
fn matrix_npy(path: &Path, rows: &Value) {
    let rows = rows.as_array().unwrap();
    let dim = rows[0].as_array().unwrap().len();
    let flat: Vec<f64> = rows
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
        .collect();
    write_npy(path, &[rows.len() as u64, dim as u64], &flat);
}

fn labels_of(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn run_ok(args: &[&str]) -> String {
    let out = dml(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `dml` expecting failure; returns the single stderr line.
fn run_err(args: &[&str]) -> String {
    let out = dml(args);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?} should fail with exit code 2"
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("dml: error: "), "{err}");
    err
}

fn close(got: &Value, want: &Value, what: &str) {
    let (g, w) = (got.as_f64().unwrap(), want.as_f64().unwrap());
    assert!((g - w).abs() <= 1e-6, "{what}: {g} vs {w}");
}

/// Leave-one-out files: float64 embeddings and int64 labels of the `query_is_reference` case.
fn leave_one_out_files(dir: &Path) -> (PathBuf, PathBuf, Value) {
    let (input, expected) = case("query_is_reference");
    let e = dir.join("emb.npy");
    let l = dir.join("labels.npy");
    matrix_npy(&e, &input["query"]);
    write_npy(
        &l,
        &[input["query_labels"].as_array().unwrap().len() as u64],
        &labels_of(&input["query_labels"]),
    );
    (e, l, expected)
}

#[test]
fn eval_json_matches_the_pml_reference_case() {
    let dir = tempfile::tempdir().unwrap();
    let (e, l, expected) = leave_one_out_files(dir.path());
    let out = run_ok(&[
        "eval",
        "--embeddings",
        arg(&e),
        "--labels",
        arg(&l),
        "--json",
    ]);
    let got: Value = serde_json::from_str(&out).unwrap();
    let keys: Vec<&str> = got
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want_keys = vec![
        "recall_at_k",
        "precision_at_1",
        "r_precision",
        "map_at_r",
        "map",
        "mrr",
        "nmi",
        "ami",
        "num_queries",
        "num_reference",
        "seconds",
    ];
    want_keys.sort_unstable();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, want_keys);
    for k in ["1", "2", "4", "8"] {
        close(
            &got["recall_at_k"][k],
            &expected["recall_at_k"][k],
            &format!("recall@{k}"),
        );
    }
    let pml = &expected["pml"];
    close(
        &got["precision_at_1"],
        &pml["precision_at_1"],
        "precision_at_1",
    );
    close(&got["r_precision"], &pml["r_precision"], "r_precision");
    close(
        &got["map_at_r"],
        &pml["mean_average_precision_at_r"],
        "map_at_r",
    );
    assert_eq!(got["num_queries"], 32);
    assert_eq!(got["num_reference"], 32);
    for stage in ["load", "retrieval", "kmeans", "mutual_info", "total"] {
        assert!(
            got["seconds"][stage].as_f64().unwrap() >= 0.0,
            "seconds.{stage}"
        );
    }
    let nmi = got["nmi"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&nmi));
}

#[test]
fn eval_table_and_metric_selection() {
    let dir = tempfile::tempdir().unwrap();
    let (e, l, _) = leave_one_out_files(dir.path());
    let table = run_ok(&[
        "eval",
        "--embeddings",
        arg(&e),
        "--labels",
        arg(&l),
        "--k",
        "1,3",
    ]);
    assert!(
        table.contains("recall@1") && table.contains("recall@3"),
        "{table}"
    );
    assert!(
        table.contains("map_at_r") && table.contains("ami"),
        "{table}"
    );
    assert!(table.contains("k-means with k = 8"), "{table}");
    let out = run_ok(&[
        "eval",
        "--embeddings",
        arg(&e),
        "--labels",
        arg(&l),
        "--metrics",
        "map,nmi",
        "--json",
    ]);
    let got: Value = serde_json::from_str(&out).unwrap();
    assert!(got["map"].is_f64() && got["nmi"].is_f64());
    assert!(got["recall_at_k"].is_null() && got["ami"].is_null() && got["mrr"].is_null());
}

/// The In-Shop layout: a gallery and separate queries, labels as text (strings), one query
/// class absent from the gallery, and the given clustering scored instead of k-means.
#[test]
fn eval_with_a_gallery_and_text_labels() {
    let dir = tempfile::tempdir().unwrap();
    let (input, expected) = case("separate_query_reference");
    let (g, gl, q, ql) = (
        dir.path().join("gallery.npy"),
        dir.path().join("gallery.txt"),
        dir.path().join("query.npy"),
        dir.path().join("query.txt"),
    );
    matrix_npy(&g, &input["reference"]);
    matrix_npy(&q, &input["query"]);
    let text = |v: &Value| -> String {
        labels_of(v)
            .iter()
            .map(|l| format!("class-{l}\n"))
            .collect()
    };
    std::fs::write(&gl, text(&input["reference_labels"])).unwrap();
    std::fs::write(&ql, text(&input["query_labels"])).unwrap();
    let clusters = dir.path().join("clusters.npy");
    let pml_clusters = labels_of(&expected["pml_cluster_labels"]);
    write_npy(&clusters, &[pml_clusters.len() as u64], &pml_clusters);
    let args = [
        "eval",
        "--embeddings",
        arg(&g),
        "--labels",
        arg(&gl),
        "--query-embeddings",
        arg(&q),
        "--query-labels",
        arg(&ql),
        "--cluster-labels",
        arg(&clusters),
    ];
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let got: Value = serde_json::from_str(&run_ok(&json_args)).unwrap();
    for k in ["1", "2", "4", "8"] {
        close(
            &got["recall_at_k"][k],
            &expected["recall_at_k"][k],
            &format!("recall@{k}"),
        );
    }
    close(
        &got["precision_at_1"],
        &expected["pml"]["precision_at_1"],
        "precision_at_1",
    );
    close(
        &got["map_at_r"],
        &expected["pml"]["mean_average_precision_at_r"],
        "map_at_r",
    );
    close(&got["nmi"], &expected["pml"]["NMI"], "nmi");
    close(&got["ami"], &expected["pml"]["AMI"], "ami");
    assert_eq!(
        (got["num_queries"].as_u64(), got["num_reference"].as_u64()),
        (Some(18), Some(40))
    );
    let table = run_ok(&args);
    assert!(
        table.contains("2 of 18 queries have no other item"),
        "{table}"
    );
    assert!(table.contains("given --cluster-labels"), "{table}");
}

#[test]
fn bad_inputs_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (e, l, _) = leave_one_out_files(dir.path());
    let short = dir.path().join("short.npy");
    write_npy(&short, &[3], &[0i32, 1, 0]);
    let err = run_err(&["eval", "--embeddings", arg(&e), "--labels", arg(&short)]);
    assert!(
        err.contains("short.npy has 3 labels") && err.contains("32 rows"),
        "{err}"
    );

    let nan = dir.path().join("nan.npy");
    let mut values = vec![0.5f32; 4 * 2];
    values[5] = f32::NAN;
    write_npy(&nan, &[4, 2], &values);
    let four = dir.path().join("four.txt");
    std::fs::write(&four, "a\nb\na\nb\n").unwrap();
    let err = run_err(&["eval", "--embeddings", arg(&nan), "--labels", arg(&four)]);
    assert!(err.contains("nan.npy") && err.contains("row 2"), "{err}");

    let err = run_err(&[
        "eval",
        "--embeddings",
        arg(&e),
        "--labels",
        arg(&l),
        "--metrics",
        "recall@1",
    ]);
    assert!(
        err.contains("unknown metric `recall@1`") && err.contains("map_at_r"),
        "{err}"
    );

    let err = run_err(&[
        "eval",
        "--embeddings",
        arg(&e),
        "--labels",
        arg(&l),
        "--k",
        "1,32",
    ]);
    assert!(
        err.contains("k = 32") && err.contains("31 reference items"),
        "{err}"
    );

    let empty = dir.path().join("empty.npy");
    write_npy::<f32>(&empty, &[0, 4], &[]);
    let none = dir.path().join("none.txt");
    std::fs::write(&none, "").unwrap();
    let err = run_err(&["eval", "--embeddings", arg(&empty), "--labels", arg(&none)]);
    assert!(err.contains("empty"), "{err}");

    let err = run_err(&[
        "eval",
        "--embeddings",
        arg(&dir.path().join("absent.npy")),
        "--labels",
        arg(&l),
    ]);
    assert!(err.contains("absent.npy"), "{err}");
}

/// Files numpy itself wrote (`scripts/make_numpy_fixtures.py`): f32 in C order and f64 in
/// Fortran order, integer and text labels, against Recall@K numpy computed by brute force.
#[test]
fn files_written_by_numpy_give_numpys_recall() {
    let dir = repo_root().join("fixtures/numpy");
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let pairs = [
        ("embeddings_f32.npy", "labels_i64.npy"),
        ("embeddings_f64_fortran.npy", "labels_u8.npy"),
        ("embeddings_f32.npy", "labels.txt"),
    ];
    for (embeddings, labels) in pairs {
        let run = dml(&[
            "eval",
            "--embeddings",
            dir.join(embeddings).to_str().unwrap(),
            "--labels",
            dir.join(labels).to_str().unwrap(),
            "--metrics",
            "recall_at_k",
            "--json",
        ]);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let got: Value = serde_json::from_slice(&run.stdout).unwrap();
        assert_eq!(got["num_queries"], expected["num_queries"]);
        for k in ["1", "2", "4", "8"] {
            let (g, e) = (
                got["recall_at_k"][k].as_f64().unwrap(),
                expected["recall_at_k"][k].as_f64().unwrap(),
            );
            assert!(
                (g - e).abs() < 1e-12,
                "{embeddings} {labels} recall@{k}: {g} vs {e}"
            );
        }
    }
}
