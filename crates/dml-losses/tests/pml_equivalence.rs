//! Every case of fixtures/pml/pml-cases.json against PML 2.9's float64 output
//! (fixtures/pml/pml-expected.json), in f64 and in f32, with the tolerances of
//! docs/pml-semantics.md, note 30.

use dml_losses::cases::{Dtype, run_case_file};
use serde_json::Value;

use crate::common::fixture;

/// Cases dml does not support yet, by name. Goal: empty.
const UNSUPPORTED: &[&str] = &[];

/// Absolute and relative loss tolerance, and gradient tolerance relative to max |g|.
struct Tolerance {
    loss_abs: f64,
    loss_rel: f64,
    grad_rel: f64,
}

const F32: Tolerance = Tolerance {
    loss_abs: 1e-6,
    loss_rel: 1e-5,
    grad_rel: 1e-4,
};

const F64: Tolerance = Tolerance {
    loss_abs: 1e-10,
    loss_rel: 1e-9,
    grad_rel: 1e-8,
};

fn numbers(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) => a.iter().flat_map(numbers).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap()],
        Value::Null => vec![f64::NAN],
        Value::String(s) if s == "inf" => vec![f64::INFINITY],
        Value::String(s) if s == "-inf" => vec![f64::NEG_INFINITY],
        other => panic!("not a number: {other}"),
    }
}

fn compare_matrix(what: &str, want: &Value, got: Option<&Value>, tol: f64, errs: &mut Vec<String>) {
    let Some(got) = got else {
        errs.push(format!("{what}: missing"));
        return;
    };
    let (w, g) = (numbers(want), numbers(got));
    if w.len() != g.len() {
        errs.push(format!("{what}: {} values, expected {}", g.len(), w.len()));
        return;
    }
    let scale = w.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let worst = w
        .iter()
        .zip(&g)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f64, f64::max);
    if worst.is_nan() || worst > tol * scale {
        errs.push(format!(
            "{what}: max |diff| {worst:.3e} > {tol:.0e} * max|g| ({scale:.3e})"
        ));
    }
}

fn check(dtype: Dtype, tol: &Tolerance) -> Vec<String> {
    let expected: Value = serde_json::from_str(&fixture("pml-expected.json")).unwrap();
    let ours = run_case_file(&fixture("pml-cases.json"), Some(dtype)).unwrap();
    let ours = ours["results"].as_array().unwrap();
    let mut failures = Vec::new();
    for want in expected["results"].as_array().unwrap() {
        let name = want["name"].as_str().unwrap();
        let Some(got) = ours.iter().find(|r| r["name"] == name) else {
            failures.push(format!("{name}: no result"));
            continue;
        };
        if UNSUPPORTED.contains(&name) {
            assert!(
                got.get("error").is_some(),
                "{name} is listed as unsupported but ran"
            );
            continue;
        }
        if let Some(e) = got.get("error") {
            failures.push(format!("{name}: {e}"));
            continue;
        }
        let mut errs = Vec::new();
        let (wl, gl) = (
            want["loss"].as_f64().unwrap(),
            got["loss"].as_f64().unwrap_or(f64::NAN),
        );
        let loss_diff = (wl - gl).abs();
        if loss_diff.is_nan() || loss_diff > tol.loss_abs + tol.loss_rel * wl.abs() {
            errs.push(format!("loss {gl} vs {wl} (diff {:.3e})", (wl - gl).abs()));
        }
        compare_matrix(
            "grad",
            &want["grad"],
            got.get("grad"),
            tol.grad_rel,
            &mut errs,
        );
        if let Some(pg) = want.get("proxy_grad") {
            compare_matrix(
                "proxy_grad",
                pg,
                got.get("proxy_grad"),
                tol.grad_rel,
                &mut errs,
            );
        }
        if let Some(m) = want.get("miner_output").filter(|m| !m.is_null())
            && got.get("miner_output") != Some(m)
        {
            errs.push("miner output differs".to_string());
        }
        if let Some(un) = want.get("unreduced") {
            for (term, w) in un.as_object().unwrap() {
                let Some(g) = got.get("unreduced").and_then(|u| u.get(term)) else {
                    errs.push(format!("unreduced {term}: missing"));
                    continue;
                };
                if g["indices"] != w["indices"] || g["reduction_type"] != w["reduction_type"] {
                    errs.push(format!(
                        "unreduced {term}: indices or reduction type differ"
                    ));
                }
                compare_matrix(
                    &format!("unreduced {term}"),
                    &w["losses"],
                    Some(&g["losses"]),
                    tol.grad_rel,
                    &mut errs,
                );
            }
        }
        if !errs.is_empty() {
            failures.push(format!("{name}: {}", errs.join("; ")));
        }
    }
    failures
}

#[test]
fn every_case_matches_pml_in_f64() {
    let failures = check(Dtype::F64, &F64);
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_case_matches_pml_in_f32() {
    let failures = check(Dtype::F32, &F32);
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
