//! `dml report`: results.jsonl in, report.md and figures out.

use std::path::Path;

use serde_json::json;

use crate::common::{dml, write_npy};

/// One record as `dml experiment` writes it; recall rises over three evaluations.
fn record(loss: &str, seed: u64, recall: f64, with_embeddings: bool) -> serde_json::Value {
    let run_id = format!("glyphs-4modes/{loss}/lr0.001/20x6/seed{seed}");
    let curve: Vec<serde_json::Value> = (0..3)
        .map(|i| {
            let r = 0.1 + (recall - 0.1) * f64::from(i) / 2.0;
            json!({"step": i * 100, "epoch": i, "loss": 0.5, "recall_at_1": r,
                   "recall_at_4": r + 0.1, "nmi": 0.4, "map_at_r": 0.2,
                   "mean_pairwise_distance": 1.0, "embedding_std": 0.3})
        })
        .collect();
    let mut r = json!({
        "run_id": run_id, "plan_name": "cli-test",
        "axes": {"dataset": "glyphs-4modes", "loss": loss, "lr": 0.001, "batch": "20x6", "seed": seed},
        "config": {"seed": seed}, "curve": curve,
        "final": {"recall_at_k": {"1": recall, "4": recall + 0.1}, "nmi": 0.4, "map_at_r": 0.2},
        "wall_seconds": 3.5, "collapsed": false
    });
    if with_embeddings {
        r["embeddings"] = json!({"vectors": "emb.npy", "labels": "emb.labels.txt"});
    }
    r
}

/// results.jsonl for two losses x three seeds, the first run with saved embeddings.
fn write_results(dir: &Path) -> std::path::PathBuf {
    let (n, d) = (60usize, 4usize);
    let values: Vec<f32> = (0..n * d)
        .map(|k| {
            ((k * 37 % 11) as f32) * 0.01
                + if k % d == 0 {
                    5.0 * ((k / d) % 3) as f32
                } else {
                    0.0
                }
        })
        .collect();
    write_npy(&dir.join("emb.npy"), &[n as u64, d as u64], &values);
    let labels: String = (0..n).map(|i| format!("class{}\n", i % 3)).collect();
    std::fs::write(dir.join("emb.labels.txt"), labels).unwrap();
    let mut lines = String::new();
    for (loss, recall) in [("triplet-semihard", 0.7), ("angular", 0.6)] {
        for seed in 1..=3u64 {
            let with_embeddings = loss == "triplet-semihard" && seed == 1;
            let r = record(loss, seed, recall + seed as f64 * 0.01, with_embeddings);
            lines.push_str(&serde_json::to_string(&r).unwrap());
            lines.push('\n');
        }
    }
    let path = dir.join("results.jsonl");
    std::fs::write(&path, lines).unwrap();
    path
}

#[test]
fn report_writes_markdown_and_png_and_svg_figures() {
    let dir = tempfile::tempdir().unwrap();
    let results = write_results(dir.path());
    let out = dir.path().join("report");
    let o = dml(&[
        "report",
        results.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--tsne-points",
        "40",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("(6 runs, 8 figure files)"), "{stdout}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    // Recall@1 of triplet-semihard: 0.71, 0.72, 0.73 -> 72.00 ± 1.00.
    assert!(
        md.contains("| triplet-semihard | 0.001 | 20x6 | 3 | 72.00 ± 1.00 |"),
        "{md}"
    );
    assert!(md.contains("40 of 60 test embeddings, 3 classes"), "{md}");
    for stem in [
        "recall-glyphs-4modes",
        "stability-glyphs-4modes",
        "collapse-glyphs-4modes",
        "tsne-glyphs-4modes-triplet-semihard",
    ] {
        let png = std::fs::read(out.join(format!("figures/{stem}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{stem}.png");
        let svg = std::fs::read_to_string(out.join(format!("figures/{stem}.svg"))).unwrap();
        assert!(svg.starts_with("<svg"), "{stem}.svg");
    }
}

#[test]
fn report_warns_about_an_unfinished_last_line_and_still_reports() {
    let dir = tempfile::tempdir().unwrap();
    let results = write_results(dir.path());
    let mut text = std::fs::read_to_string(&results).unwrap();
    text.push_str("{\"run_id\": \"glyphs-4modes/angular/lr0.001/20x6/se");
    std::fs::write(&results, text).unwrap();
    let out = dir.path().join("report");
    let o = dml(&[
        "report",
        results.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("ignored unfinished line 7"), "{stderr}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("Line 7 of `results.jsonl` is an unfinished record"),
        "{md}"
    );
}

#[test]
fn report_on_a_bad_results_file_is_one_error_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results.jsonl");
    std::fs::write(&results, "not json\n{}\n").unwrap();
    let out = dir.path().join("report");
    let o = dml(&[
        "report",
        results.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.starts_with("dml: error:"), "{stderr}");
    assert!(
        stderr.contains("results.jsonl:1: not a run record"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");

    let o = dml(&["report", "missing.jsonl", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.jsonl"));
}
