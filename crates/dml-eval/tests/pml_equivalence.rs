//! The evaluation cases of fixtures/pml (pytorch-metric-learning 2.9.0, faiss 1.15.1,
//! scikit-learn 1.9.1, float64; see fixtures/pml and the reference README): k-NN indices
//! exactly, metrics to 1e-6, NMI/AMI of the given clustering to 1e-9.

use std::path::PathBuf;

use dml_eval::{
    Distance, Embeddings, Gallery, Labels, QueryMode, knn, mutual_info, retrieval_metrics,
};
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/pml")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("valid JSON")
}

fn matrix(v: &Value) -> Embeddings {
    let rows = v.as_array().expect("rows");
    let dim = rows[0].as_array().expect("row").len();
    let flat: Vec<f64> = rows
        .iter()
        .flat_map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_f64().expect("number"))
        })
        .collect();
    Embeddings::from_f64(&flat, dim).expect("finite embeddings")
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|x| x.as_i64().expect("integer"))
        .collect()
}

fn number(v: &Value, what: &str) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"))
}

fn close(got: f64, want: f64, tol: f64, what: &str) {
    assert!((got - want).abs() <= tol, "{what}: got {got}, want {want}");
}

/// One eval case with its expected results.
struct Case {
    name: String,
    input: Value,
    expected: Value,
}

fn cases() -> Vec<Case> {
    let inputs = fixture("pml-cases.json");
    let expected = fixture("pml-expected.json");
    let inputs = inputs["eval_cases"].as_array().expect("eval_cases").clone();
    let results = expected["eval_results"].as_array().expect("eval_results");
    assert_eq!(inputs.len(), 3, "the fixture has three eval cases");
    inputs
        .into_iter()
        .map(|input| {
            let name = input["name"].as_str().expect("name").to_string();
            let expected = results
                .iter()
                .find(|r| r["name"] == input["name"])
                .unwrap_or_else(|| panic!("no result for {name}"))
                .clone();
            Case {
                name,
                input,
                expected,
            }
        })
        .collect()
}

/// Embeddings with their label ids.
type Labelled = (Embeddings, Vec<u32>);

/// Query embeddings, query label ids, and the reference set when there is one, with labels in
/// one id space.
fn sets(case: &Case) -> (Embeddings, Vec<u32>, Option<Labelled>) {
    let query = matrix(&case.input["query"]);
    let query_labels = Labels::from_values(ints(&case.input["query_labels"]));
    match case.input.get("reference") {
        None => (query, query_labels.ids().to_vec(), None),
        Some(reference) => {
            let reference_labels = Labels::from_values(ints(&case.input["reference_labels"]));
            let (r, q) = reference_labels.unify(&query_labels);
            (
                query,
                q.ids().to_vec(),
                Some((matrix(reference), r.ids().to_vec())),
            )
        }
    }
}

#[test]
fn knn_indices_match_exactly_and_distances_to_float32_precision() {
    for case in cases() {
        let (query, _, reference) = sets(&case);
        let want_idx = &case.expected["knn_indices"];
        let want_d = &case.expected["knn_sq_dists"];
        let k = want_idx[0].as_array().expect("row").len();
        let mode = match &reference {
            None => QueryMode::LeaveOneOut,
            Some((r, _)) => QueryMode::Gallery(r),
        };
        let nb = knn(&query, mode, Distance::SquaredEuclidean, k).unwrap();
        for q in 0..query.rows() {
            let want: Vec<u32> = ints(&want_idx[q]).iter().map(|&i| i as u32).collect();
            assert_eq!(nb.indices(q), want.as_slice(), "{} query {q}", case.name);
            for (j, &d) in nb.scores(q).iter().enumerate() {
                let w = number(&want_d[q][j], "distance");
                close(
                    f64::from(d),
                    w,
                    1e-5 * w.max(1.0),
                    &format!("{} d[{q}][{j}]", case.name),
                );
            }
        }
    }
}

#[test]
fn retrieval_metrics_match_pml_to_1e6() {
    for case in cases() {
        let (query, query_labels, reference) = sets(&case);
        let gallery = reference.as_ref().map(|(e, l)| Gallery {
            embeddings: e,
            labels: l,
        });
        let want_recall = case.expected["recall_at_k"]
            .as_object()
            .expect("recall_at_k");
        let ks: Vec<usize> = want_recall.keys().map(|k| k.parse().expect("K")).collect();
        let m = retrieval_metrics(
            &query,
            &query_labels,
            gallery,
            Distance::SquaredEuclidean,
            &ks,
        )
        .unwrap();
        let name = &case.name;
        for (k, got) in &m.recall_at_k {
            let want = number(&want_recall[&k.to_string()], "recall");
            close(*got, want, 1e-6, &format!("{name} recall@{k}"));
        }
        assert_eq!(
            m.num_lone_queries as i64,
            case.expected["num_lone_queries"].as_i64().expect("count"),
            "{name} lone queries"
        );
        let non_lone_r1 = number(&case.expected["recall_at_k_non_lone"]["1"], "recall");
        close(
            m.precision_at_1,
            non_lone_r1,
            1e-6,
            &format!("{name} non-lone recall@1"),
        );
        let pml = &case.expected["pml"];
        close(
            m.precision_at_1,
            number(&pml["precision_at_1"], "p@1"),
            1e-6,
            name,
        );
        close(
            m.r_precision,
            number(&pml["r_precision"], "r_precision"),
            1e-6,
            name,
        );
        close(
            m.map_at_r,
            number(&pml["mean_average_precision_at_r"], "map@r"),
            1e-6,
            name,
        );
        if let Some(map) = pml.get("mean_average_precision") {
            close(m.map, number(map, "map"), 1e-6, &format!("{name} map"));
        }
    }
}

#[test]
fn nmi_and_ami_of_the_given_clusterings_match_sklearn_to_1e9() {
    let mut checked = 0;
    for case in cases() {
        let (_, query_labels, _) = sets(&case);
        let name = &case.name;
        // PML's own k-means output, scored by PML.
        if let Some(clusters) = case.expected.get("pml_cluster_labels") {
            let clusters: Vec<u32> = ints(clusters).iter().map(|&c| c as u32).collect();
            let mi = mutual_info(&query_labels, &clusters).unwrap();
            close(
                mi.nmi,
                number(&case.expected["pml"]["NMI"], "NMI"),
                1e-9,
                name,
            );
            close(
                mi.ami,
                number(&case.expected["pml"]["AMI"], "AMI"),
                1e-9,
                name,
            );
            checked += 1;
        }
        // A clustering given with the case, scored by scikit-learn.
        if let Some(clusters) = case.input.get("cluster_labels") {
            let clusters: Vec<u32> = ints(clusters).iter().map(|&c| c as u32).collect();
            let mi = mutual_info(&query_labels, &clusters).unwrap();
            close(
                mi.nmi,
                number(&case.expected["NMI_given_clusters"], "NMI"),
                1e-9,
                name,
            );
            close(
                mi.ami,
                number(&case.expected["AMI_given_clusters"], "AMI"),
                1e-9,
                name,
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 3, "two PML clusterings and one given clustering");
}
