//! `dml train`, `dml embed` and `dml run` on a tiny synthetic-glyph job: configuration
//! errors, the resolved configuration, a run that kills itself with SIGKILL at a given step and is resumed (same metrics as
//! an uninterrupted run), and train -> embed -> eval through the files the commands write.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::common::{arg, fails, ok};

/// 6 training classes of 8 glyphs, P x K = 3 x 4 (4 steps an epoch), an 8-d embedding,
/// evaluation on 4 held-out classes every epoch, a checkpoint every step.
const TINY: &str = r#"
seed = 3

[data.dataset]
kind = "synthetic"
train_classes = 6
test_classes = 4
samples_per_class = 8

[data.batch]
classes_per_batch = 3
samples_per_class = 4
eval_batch_size = 32

[model]
embedding_dim = 8

[optimizer]
kind = "adam"
lr = 0.01

[train]
epochs = 6
log_every_steps = 1

[eval]
k = [1, 2]
metrics = ["recall@k", "map@r", "nmi"]

[checkpoint]
every_steps = 1
"#;

fn tiny_config(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.toml");
    std::fs::write(&path, TINY).unwrap();
    path
}

#[test]
fn dry_run_prints_the_resolved_configuration_with_flags_applied() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(dir.path());
    let out = ok(&[
        "train",
        "--config",
        arg(&config),
        "--epochs",
        "2",
        "--lr",
        "0.5",
        "--batch-size",
        "8",
        "--loss",
        "ContrastiveLoss",
        "--miner",
        "none",
        "--set",
        "eval.k=[1, 4]",
        "--out",
        "elsewhere",
        "--dry-run",
    ]);
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["train"]["epochs"], 2);
    assert_eq!(json["optimizer"]["kind"], "adam");
    assert_eq!(json["optimizer"]["lr"], 0.5);
    assert_eq!(json["data"]["batch"]["classes_per_batch"], 2);
    assert_eq!(json["loss"]["name"], "ContrastiveLoss");
    assert_eq!(json["loss"]["miner"], Value::Null);
    assert_eq!(json["eval"]["k"], serde_json::json!([1, 4]));
    assert_eq!(json["out"], "elsewhere");
    // Defaults are spelled out.
    assert_eq!(json["data"]["pipeline"]["resize"], 28);
}

#[test]
fn configuration_mistakes_are_one_line_errors_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("typo.toml");
    std::fs::write(&config, "seed = 1\n[train]\nepoch = 3\n").unwrap();
    let err = fails(&["train", "--config", arg(&config), "--dry-run"]);
    assert!(err.contains("typo.toml:3:1"), "{err}");
    assert!(err.contains("unknown field `epoch`"), "{err}");

    let err = fails(&["train", "--set", "model.embeding_dim=3", "--dry-run"]);
    assert!(err.contains("--set model.embeding_dim=3"), "{err}");
    assert!(err.contains("embeding_dim"), "{err}");

    let err = fails(&["train", "--lr=-1", "--dry-run"]);
    assert!(err.contains("optimizer.lr"), "{err}");

    let err = fails(&["run", "--loss", "TripletLoss", "--dry-run"]);
    assert!(err.contains("TripletMarginLoss"), "{err}");

    let err = fails(&["train", "--resume", arg(&dir.path().join("nothing"))]);
    assert!(err.contains("config.json"), "{err}");
}

/// A GPU asked of a build without one is an error that says how to build one.
#[cfg(not(feature = "wgpu"))]
#[test]
fn a_gpu_asked_of_a_cpu_build_says_how_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(dir.path());
    let out = dir.path().join("run");
    for command in ["train", "run"] {
        let args = [
            "--device",
            "wgpu",
            command,
            "--config",
            arg(&config),
            "--out",
            arg(&out),
        ];
        let err = fails(&args);
        assert!(
            err.contains("--device wgpu") && err.contains("--features wgpu"),
            "{err}"
        );
    }
}

/// Trains `config` into `out` without interruption and returns its summary.json.
fn uninterrupted(config: &Path, out: &Path) -> Value {
    ok(&["train", "--config", arg(config), "--out", arg(out)]);
    read_json(&out.join("summary.json"))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Steps logged so far in a run folder's metrics.jsonl.
fn logged_steps(out: &Path) -> usize {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .map(|t| {
            t.lines()
                .filter(|l| l.contains("\"event\":\"step\""))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_run_killed_with_sigkill_and_resumed_ends_with_the_same_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(dir.path());
    let reference = uninterrupted(&config, &dir.path().join("reference"));
    assert_eq!(reference["status"], "finished");
    assert_eq!(reference["step"], 24);
    assert_eq!(reference["evaluations"].as_array().unwrap().len(), 6);

    let out = dir.path().join("killed");
    // dml kills itself with SIGKILL once step 6 is done, in the middle of the second epoch:
    // a kill from outside could come too late on a fast machine.
    let killed = Command::new(env!("CARGO_BIN_EXE_dml"))
        .args(["train", "--config", arg(&config), "--out", arg(&out)])
        .env("DML_TEST_KILL_AT_STEP", "6")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(killed.signal(), Some(9), "{killed}");
    assert!(
        !out.join("summary.json").exists(),
        "the run finished before it was killed"
    );

    ok(&["train", "--resume", arg(&out)]);
    assert_eq!(read_json(&out.join("summary.json")), reference);
    // The resumed log has each step once, as an uninterrupted run's.
    assert_eq!(logged_steps(&out), 24);
}

#[test]
fn run_then_embed_then_eval_through_the_written_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(dir.path());
    let out = dir.path().join("run");
    let printed = ok(&[
        "run",
        "--config",
        arg(&config),
        "--epochs",
        "2",
        "--out",
        arg(&out),
    ]);
    let row = |key: &str| {
        printed
            .lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no {key} row in:\n{printed}"))
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse::<f64>().unwrap())
            .collect::<Vec<f64>>()
    };
    for key in ["recall@1", "recall@2", "map@r", "nmi"] {
        let values = row(key);
        assert_eq!(values.len(), 2, "{key}: before and after");
        assert!(
            values.iter().all(|v| (0.0..=1.0).contains(v)),
            "{key}: {values:?}"
        );
    }
    let written = out.join("embeddings/test.npy");
    assert!(written.exists());

    // `dml embed` with the run's best checkpoint gives the same test embeddings.
    let embedded = dir.path().join("e.npy");
    let said = ok(&["embed", "--checkpoint", arg(&out), "--out", arg(&embedded)]);
    assert!(said.starts_with("32 x 8 embeddings"), "{said}");
    assert_eq!(
        std::fs::read(&embedded).unwrap(),
        std::fs::read(&written).unwrap()
    );
    let labels = std::fs::read_to_string(dir.path().join("e.labels.txt")).unwrap();
    assert_eq!(labels.lines().count(), 32);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("e.paths.txt"))
            .unwrap()
            .lines()
            .count(),
        32
    );

    // And `dml eval` reads them back: its Recall@1 is the run's "after" value.
    let json: Value = serde_json::from_str(&ok(&[
        "eval",
        "--embeddings",
        arg(&embedded),
        "--labels",
        arg(&dir.path().join("e.labels.txt")),
        "--k",
        "1",
        "--json",
    ]))
    .unwrap();
    let recall = json["recall_at_k"]["1"].as_f64().unwrap();
    assert!(
        (recall - row("recall@1")[1]).abs() < 5e-5,
        "{recall} vs {:?}",
        row("recall@1")
    );

    // The training split, embedded whole.
    let said = ok(&[
        "embed",
        "--checkpoint",
        arg(&out.join("checkpoints/last.ckpt")),
        "--split",
        "train",
        "--out",
        arg(&dir.path().join("train.npy")),
    ]);
    assert!(said.starts_with("48 x 8 embeddings"), "{said}");
}
