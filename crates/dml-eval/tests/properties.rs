//! Property tests against plain-loop f64 oracles (seeded proptest, small shapes).
//!
//! Coordinates are small integers, so every f32 key is exact and ties are common: the engine
//! must then agree with a brute-force sort that breaks ties by the lower index.

use dml_eval::{Distance, Embeddings, Gallery, QueryMode, knn, mutual_info, retrieval_metrics};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

fn config() -> Config {
    Config {
        cases: 64,
        rng_seed: RngSeed::Fixed(20_240_603),
        failure_persistence: None,
        ..Config::default()
    }
}

/// `rows x dim` small integers and `rows` labels below `classes`.
fn labelled(rows: std::ops::Range<usize>) -> impl Strategy<Value = (Vec<f32>, usize, Vec<u32>)> {
    (rows, 1usize..5, 1u32..5).prop_flat_map(|(n, dim, classes)| {
        (
            prop::collection::vec(-3i8..4, n * dim),
            Just(dim),
            prop::collection::vec(0..classes, n),
        )
            .prop_map(|(v, dim, l)| (v.into_iter().map(f32::from).collect(), dim, l))
    })
}

fn sq(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum()
}

/// Every reference index for query `q`, nearest first, ties by index.
fn ranking(q: &Embeddings, r: &Embeddings, loo: bool, i: usize) -> Vec<usize> {
    let mut all: Vec<(f64, usize)> = (0..r.rows())
        .filter(|&j| !(loo && i == j))
        .map(|j| (sq(q.row(i), r.row(j)), j))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    all.into_iter().map(|p| p.1).collect()
}

/// The metrics straight from the definitions, over full rankings.
fn oracle(
    q: &Embeddings,
    ql: &[u32],
    r: &Embeddings,
    rl: &[u32],
    loo: bool,
    ks: &[usize],
) -> (Vec<f64>, [f64; 5]) {
    let mut hits = vec![0.0; ks.len()];
    let mut sums = [0.0; 5];
    let mut non_lone = 0.0;
    for (i, &label) in ql.iter().enumerate() {
        let rel: Vec<bool> = ranking(q, r, loo, i)
            .iter()
            .map(|&j| rl[j] == label)
            .collect();
        let big_r = rel.iter().filter(|&&x| x).count();
        for (h, &k) in hits.iter_mut().zip(ks) {
            *h += f64::from(u8::from(rel[..k].iter().any(|&x| x)));
        }
        if big_r == 0 {
            continue;
        }
        non_lone += 1.0;
        let (mut seen, mut ap, mut ap_r) = (0.0, 0.0, 0.0);
        for (pos, &x) in rel.iter().enumerate() {
            if x {
                seen += 1.0;
                ap += seen / (pos + 1) as f64;
                if pos < big_r {
                    ap_r += seen / (pos + 1) as f64;
                }
            }
        }
        let first = rel.iter().position(|&x| x).expect("non-lone") + 1;
        sums[0] += f64::from(u8::from(first == 1));
        sums[1] += rel[..big_r].iter().filter(|&&x| x).count() as f64 / big_r as f64;
        sums[2] += ap_r / big_r as f64;
        sums[3] += ap / big_r as f64;
        sums[4] += 1.0 / first as f64;
    }
    let n = q.rows() as f64;
    (
        hits.iter().map(|h| h / n).collect(),
        sums.map(|s| {
            if non_lone == 0.0 {
                f64::NAN
            } else {
                s / non_lone
            }
        }),
    )
}

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() < 1e-12
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn knn_equals_a_brute_force_sort(
        (data, dim, _) in labelled(2..40),
        (gdata, _, _) in labelled(1..30),
        k in 1usize..6,
    ) {
        let q = Embeddings::new(data, dim).unwrap();
        let k = k.min(q.rows() - 1).max(1);
        if q.rows() > k {
            let nb = knn(&q, QueryMode::LeaveOneOut, Distance::SquaredEuclidean, k).unwrap();
            for i in 0..q.rows() {
                let want: Vec<u32> = ranking(&q, &q, true, i)[..k].iter().map(|&j| j as u32).collect();
                prop_assert_eq!(nb.indices(i), want.as_slice());
            }
        }
        // a gallery of the same width
        let g: Vec<f32> = gdata.iter().cycle().take(dim * (gdata.len() / dim.max(1)).max(1)).copied().collect();
        let g = Embeddings::new(g, dim).unwrap();
        let k = k.min(g.rows());
        let nb = knn(&q, QueryMode::Gallery(&g), Distance::SquaredEuclidean, k).unwrap();
        for i in 0..q.rows() {
            let want: Vec<u32> = ranking(&q, &g, false, i)[..k].iter().map(|&j| j as u32).collect();
            prop_assert_eq!(nb.indices(i), want.as_slice());
        }
    }

    #[test]
    fn retrieval_metrics_equal_the_definitions(
        (data, dim, labels) in labelled(2..40),
        (gdata, _, glabels) in labelled(1..30),
    ) {
        let q = Embeddings::new(data, dim).unwrap();
        let ks: Vec<usize> = [1, 2, 3, 5].into_iter().filter(|&k| k < q.rows()).collect();
        let m = retrieval_metrics(&q, &labels, None, Distance::SquaredEuclidean, &ks).unwrap();
        let (recall, rest) = oracle(&q, &labels, &q, &labels, true, &ks);
        let got = [m.precision_at_1, m.r_precision, m.map_at_r, m.map, m.mrr];
        for (g, w) in m.recall_at_k.iter().zip(&recall) {
            prop_assert!(same(g.1, *w), "recall@{}: {} vs {}", g.0, g.1, w);
        }
        for (g, w) in got.iter().zip(&rest) {
            prop_assert!(same(*g, *w), "{:?} vs {:?}", got, rest);
        }
        // gallery mode, gallery labels drawn independently (so lone queries happen)
        let rows = (gdata.len() / dim).max(1);
        let g: Vec<f32> = gdata.iter().cycle().take(rows * dim).copied().collect();
        let g = Embeddings::new(g, dim).unwrap();
        let gl: Vec<u32> = glabels.iter().cycle().take(rows).copied().collect();
        let ks: Vec<usize> = [1, 2, 4].into_iter().filter(|&k| k <= rows).collect();
        let gallery = Gallery { embeddings: &g, labels: &gl };
        let m = retrieval_metrics(&q, &labels, Some(gallery), Distance::SquaredEuclidean, &ks).unwrap();
        let (recall, rest) = oracle(&q, &labels, &g, &gl, false, &ks);
        for (g, w) in m.recall_at_k.iter().zip(&recall) {
            prop_assert!(same(g.1, *w));
        }
        let got = [m.precision_at_1, m.r_precision, m.map_at_r, m.map, m.mrr];
        for (g, w) in got.iter().zip(&rest) {
            prop_assert!(same(*g, *w), "{:?} vs {:?}", got, rest);
        }
    }

    #[test]
    fn recall_grows_with_k_and_map_at_r_stays_below_r_precision(
        (data, dim, labels) in labelled(3..60),
    ) {
        let q = Embeddings::new(data, dim).unwrap();
        let ks: Vec<usize> = (1..q.rows()).collect();
        for distance in [Distance::SquaredEuclidean, Distance::InnerProduct, Distance::Cosine] {
            let m = retrieval_metrics(&q, &labels, None, distance, &ks).unwrap();
            for w in m.recall_at_k.windows(2) {
                prop_assert!(w[0].1 <= w[1].1);
            }
            if !m.map_at_r.is_nan() {
                prop_assert!(m.map_at_r <= m.r_precision + 1e-12);
                prop_assert!(m.map_at_r <= m.map + 1e-12);
            }
        }
    }

    #[test]
    fn nmi_lies_in_unit_interval_and_is_one_for_a_renamed_perfect_clustering(
        classes in prop::collection::vec(0u32..6, 1..80),
        clusters in prop::collection::vec(0u32..6, 80),
        rename in 0u32..1000,
    ) {
        let clusters = &clusters[..classes.len()];
        let mi = mutual_info(&classes, clusters).unwrap();
        prop_assert!((-1e-12..=1.0 + 1e-12).contains(&mi.nmi), "nmi {}", mi.nmi);
        prop_assert!(mi.ami <= 1.0 + 1e-12, "ami {}", mi.ami);
        let renamed: Vec<u32> = classes.iter().map(|&c| (c * 7919) ^ rename).collect();
        let perfect = mutual_info(&classes, &renamed).unwrap();
        prop_assert!((perfect.nmi - 1.0).abs() < 1e-12);
        prop_assert!((perfect.ami - 1.0).abs() < 1e-9);
    }
}
