//! `dml experiment`: the shipped quick plan runs end to end on a tiny budget (every run
//! recorded with its curve, spread and embeddings, the report written), a second call skips
//! finished runs, and a bad plan fails before any run starts.

use std::path::Path;

use crate::common::{dml, repo_root};

/// The smoke budget: one epoch of one 30 x 4 batch per run, 6 held-out classes of 4 images.
const TINY: [&str; 10] = [
    "--set",
    "train.epochs=1",
    "--set",
    "data.dataset.train_classes=30",
    "--set",
    "data.dataset.test_classes=6",
    "--set",
    "data.dataset.samples_per_class=4",
    "--set",
    "data.batch.eval_batch_size=64",
];

fn experiment(plan: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "--threads",
        "2",
        "experiment",
        "--plan",
        plan.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    dml(&args)
}

#[test]
fn the_quick_plan_runs_resumes_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let plan = repo_root().join("plans/quick.toml");
    let run = experiment(&plan, dir.path(), &TINY);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("10 runs planned: 10 trained now, 0 already"),
        "{stdout}"
    );
    assert!(stdout.contains("[10/10] glyphs-4modes/angular/lr0.001/30x4/seed1"));

    let results = std::fs::read_to_string(dir.path().join("results.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = results
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 10);
    for record in &records {
        let curve = record["curve"].as_array().unwrap();
        // The untrained network, then the evaluation at the end of the one step.
        assert_eq!(curve.len(), 2, "{record}");
        assert_eq!(
            (curve[0]["step"].as_u64(), curve[1]["step"].as_u64()),
            (Some(0), Some(1))
        );
        for point in curve {
            assert!(
                point["mean_pairwise_distance"].as_f64().unwrap() > 0.0,
                "{point}"
            );
            assert!(point["embedding_std"].as_f64().unwrap() > 0.0, "{point}");
            assert!(point["recall_at_1"].as_f64().is_some(), "{point}");
        }
        assert!(curve[1]["loss"].as_f64().is_some(), "{record}");
        assert_eq!(record["config"]["train"]["epochs"], 1);
        let vectors = record["embeddings"]["vectors"].as_str().unwrap();
        assert!(dir.path().join(vectors).is_file(), "{vectors}");
    }
    assert_eq!(records[3]["config"]["loss"]["name"], "NPairsLoss");
    assert_eq!(records[5]["config"]["data"]["dataset"]["modes"], 4);
    assert!(dir.path().join("report/report.md").is_file());
    assert!(
        dir.path()
            .join("report/figures/collapse-glyphs-4modes.png")
            .is_file()
    );

    let again = experiment(&plan, dir.path(), &[&TINY[..], &["--no-report"]].concat());
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{stdout}");
    assert!(
        stdout.contains("10 runs planned: 0 trained now, 10 already"),
        "{stdout}"
    );
}

#[test]
fn a_plan_with_an_unknown_loss_fails_before_any_run() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo_root().join("plans/quick.toml"))
        .unwrap()
        .replace(
            r#"params = { alpha = 40.0 }"#,
            r#"params = { alpha = 40.0, beta = 1.0 }"#,
        );
    let plan = dir.path().join("plan.toml");
    std::fs::write(&plan, text).unwrap();
    let out = dir.path().join("out");
    let run = experiment(&plan, &out, &[]);
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("glyphs-1mode/angular") && err.contains("loss entry `angular`"),
        "{err}"
    );
    assert!(err.contains("unknown parameter `beta`"), "{err}");
    assert!(!out.join("results.jsonl").exists());
}
