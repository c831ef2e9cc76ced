//! `dml loss`: round-trips the PML reference cases and rejects unknown names clearly.

use crate::common::{dml, repo_root};

#[test]
fn loss_round_trips_the_pml_reference_file() {
    let dir = std::env::temp_dir().join(format!("dml-loss-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("results.json");
    let cases = repo_root().join("fixtures/pml/pml-cases.json");
    let run = dml(&[
        "loss",
        "--cases",
        cases.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let ours: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("fixtures/pml/pml-expected.json")).unwrap(),
    )
    .unwrap();
    let ours = ours["results"].as_array().unwrap();
    let expected = expected["results"].as_array().unwrap();
    assert_eq!(ours.len(), expected.len());
    for (o, e) in ours.iter().zip(expected) {
        assert_eq!(o["name"], e["name"]);
        let (lo, le) = (o["loss"].as_f64().unwrap(), e["loss"].as_f64().unwrap());
        assert!(
            (lo - le).abs() <= 1e-9 * (1.0 + le.abs()),
            "{}: {lo} vs {le}",
            e["name"]
        );
        if let Some(m) = e.get("miner_output").filter(|m| !m.is_null()) {
            assert_eq!(&o["miner_output"], m, "{}", e["name"]);
        }
        for key in ["grad", "proxy_grad"] {
            let Some(want) = e.get(key) else { continue };
            let flat = |v: &serde_json::Value| -> Vec<f64> {
                v.as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
                    .collect()
            };
            let (w, g) = (flat(want), flat(&o[key]));
            let scale = w.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            assert_eq!(w.len(), g.len(), "{} {key}", e["name"]);
            for (a, b) in w.iter().zip(&g) {
                assert!(
                    (a - b).abs() <= 1e-8 * scale,
                    "{} {key}: {a} vs {b}",
                    e["name"]
                );
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_loss_is_a_one_line_error_listing_the_supported_ones() {
    let dir = std::env::temp_dir().join(format!("dml-loss-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = dir.join("cases.json");
    std::fs::write(
        &cases,
        r#"{"embeddings": [[1, 0], [0, 1]], "labels": [0, 1],
            "cases": [{"name": "typo", "loss": "TripletMarginLos", "params": {}}]}"#,
    )
    .unwrap();
    let run = dml(&["loss", "--cases", cases.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("TripletMarginLos") && err.contains("supported: ContrastiveLoss"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
