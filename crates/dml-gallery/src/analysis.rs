//! What the page reports beyond the summary metrics, all from the per-query values dml-eval
//! averages ([`QueryRetrieval`]) and the exact k-NN lists: per-class Recall@1 and MAP@R, the
//! worst queries, a seeded sample, and the class pairs most often confused.

use std::cmp::Ordering;
use std::collections::HashMap;

use dml_eval::{Neighbours, QueryRetrieval};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// One class's row of the per-class table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClassRow {
    /// The class id (an index into the class names).
    pub class: u32,
    /// Its queries.
    pub size: usize,
    /// The fraction of its queries whose nearest item has their class (lone queries miss,
    /// as in Recall@K).
    pub recall_at_1: f64,
    /// The mean average precision at R of its non-lone queries; NaN when all are lone.
    pub map_at_r: f64,
}

/// NaN (a class of lone queries) sorts before every number: it is the least informative,
/// and worst-first tables put it with the failures.
fn nan_first(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.total_cmp(&b),
    }
}

/// The per-class table of every class that has queries, worst first: Recall@1 ascending,
/// then MAP@R ascending, then name.
pub(crate) fn per_class(
    query_labels: &[u32],
    per_query: &[QueryRetrieval],
    names: &[String],
) -> Vec<ClassRow> {
    // (queries, hits at 1, non-lone queries, sum of AP@R), summed in query order.
    let mut sums: Vec<(usize, usize, usize, f64)> = vec![(0, 0, 0, 0.0); names.len()];
    for (&label, q) in query_labels.iter().zip(per_query) {
        let s = &mut sums[label as usize];
        s.0 += 1;
        s.1 += usize::from(q.hit_at(1));
        if q.first_rank.is_some() {
            s.2 += 1;
            s.3 += q.average_precision_at_r;
        }
    }
    let mut rows: Vec<ClassRow> = sums
        .into_iter()
        .enumerate()
        .filter(|(_, s)| s.0 > 0)
        .map(|(class, (size, hits, non_lone, ap))| ClassRow {
            class: class as u32,
            size,
            recall_at_1: hits as f64 / size as f64,
            map_at_r: if non_lone == 0 {
                f64::NAN
            } else {
                ap / non_lone as f64
            },
        })
        .collect();
    rows.sort_by(|a, b| {
        nan_first(a.recall_at_1, b.recall_at_1)
            .then(nan_first(a.map_at_r, b.map_at_r))
            .then_with(|| names[a.class as usize].cmp(&names[b.class as usize]))
    });
    rows
}

/// The `n` non-lone queries with the lowest average precision at R (the term of MAP@R), worst
/// first; ties go to the later first correct item, then to the lower row. Lone queries have
/// no correct item to miss and are left out.
pub(crate) fn worst(per_query: &[QueryRetrieval], n: usize) -> Vec<usize> {
    let mut rows: Vec<usize> = (0..per_query.len())
        .filter(|&q| per_query[q].first_rank.is_some())
        .collect();
    let key = |q: usize| (per_query[q].average_precision_at_r, per_query[q].first_rank);
    let order = |&a: &usize, &b: &usize| {
        let ((ap_a, first_a), (ap_b, first_b)) = (key(a), key(b));
        ap_a.total_cmp(&ap_b)
            .then(first_b.cmp(&first_a))
            .then(a.cmp(&b))
    };
    if n < rows.len() {
        rows.select_nth_unstable_by(n, order);
        rows.truncate(n);
    }
    rows.sort_by(order);
    rows
}

/// `n` distinct queries of `num_queries` drawn uniformly with `seed` (all of them when there
/// are no more), in row order.
pub(crate) fn sample(num_queries: usize, n: usize, seed: u64) -> Vec<usize> {
    let mut rows = if n >= num_queries {
        (0..num_queries).collect()
    } else {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rand::seq::index::sample(&mut rng, num_queries, n).into_vec()
    };
    rows.sort_unstable();
    rows
}

/// Every query of class `class`, in row order.
pub(crate) fn of_class(query_labels: &[u32], class: u32) -> Vec<usize> {
    (0..query_labels.len())
        .filter(|&q| query_labels[q] == class)
        .collect()
}

/// Two classes that retrieve each other: `a` names sort before `b` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Confusion {
    /// One class id.
    pub a: u32,
    /// The other class id.
    pub b: u32,
    /// Top-k neighbours of class `b` among the queries of class `a`.
    pub a_to_b: u64,
    /// Top-k neighbours of class `a` among the queries of class `b`.
    pub b_to_a: u64,
}

impl Confusion {
    /// Both directions together.
    pub fn count(&self) -> u64 {
        self.a_to_b + self.b_to_a
    }
}

/// The `top` class pairs most often retrieved for each other: for each query of class a,
/// every top-k neighbour of another class b counts once for the pair {a, b} (both directions
/// merged). Most counts first, then by the names.
pub(crate) fn confusions(
    query_labels: &[u32],
    reference_labels: &[u32],
    neighbours: &Neighbours,
    names: &[String],
    top: usize,
) -> Vec<Confusion> {
    let name = |c: u32| names[c as usize].as_str();
    let mut counts: HashMap<(u32, u32), (u64, u64)> = HashMap::new();
    for (q, &a) in query_labels.iter().enumerate() {
        for &r in neighbours.indices(q) {
            let b = reference_labels[r as usize];
            if a == b {
                continue;
            }
            // Keyed with the names in order, so (a, b) and (b, a) meet.
            if (name(a), a) < (name(b), b) {
                counts.entry((a, b)).or_default().0 += 1;
            } else {
                counts.entry((b, a)).or_default().1 += 1;
            }
        }
    }
    let mut pairs: Vec<Confusion> = counts
        .into_iter()
        .map(|((a, b), (a_to_b, b_to_a))| Confusion {
            a,
            b,
            a_to_b,
            b_to_a,
        })
        .collect();
    pairs.sort_by(|x, y| {
        y.count()
            .cmp(&x.count())
            .then_with(|| (name(x.a), name(x.b), x.a, x.b).cmp(&(name(y.a), name(y.b), y.a, y.b)))
    });
    pairs.truncate(top);
    pairs
}

#[cfg(test)]
mod tests {
    use dml_eval::{Distance, Embeddings, QueryMode, knn, retrieval_per_query};

    use super::*;

    /// Points on a line with labels a a b b a c (ids 0 0 1 1 0 2): rankings read off by hand.
    ///
    /// ```text
    /// position:  0  1  2  10  11  30
    /// label:     a  a  b  b   a   c
    /// ```
    fn hand_made() -> (Vec<u32>, Vec<QueryRetrieval>, Neighbours, Vec<String>) {
        let e = Embeddings::new(vec![0.0, 1.0, 2.0, 10.0, 11.0, 30.0], 1).unwrap();
        let labels = vec![0, 0, 1, 1, 0, 2];
        let d = Distance::SquaredEuclidean;
        let per_query = retrieval_per_query(&e, &labels, None, d).unwrap();
        let neighbours = knn(&e, QueryMode::LeaveOneOut, d, 2).unwrap();
        let names = ["a", "b", "c"].map(String::from).to_vec();
        (labels, per_query, neighbours, names)
    }

    #[test]
    fn per_class_recall_and_map_at_r_worst_first() {
        let (labels, per_query, _, names) = hand_made();
        // a: queries 0 (nearest 1: a), 1 (nearest 0: a), 4 (nearest 3: b) -> R@1 2/3.
        //    AP@R (R = 2): q0 ranking 1 2 10 11 -> relevant at 1, 4: (1/1) / 2 = 0.5;
        //    q1 ranking 0 2 10 11 -> 0.5; q4 ranking 10 2 1 0 -> relevant at 3, 4: 0.
        // b: query 2 (nearest 1: a), 3 (nearest 4: a) -> R@1 0; AP@R (R = 1): q2 has item 3
        //    at rank 3, q3 has item 2 at rank 2 -> 0.
        // c: query 5 is lone: R@1 0, MAP@R undefined.
        let rows = per_class(&labels, &per_query, &names);
        let got: Vec<(&str, usize, f64, f64)> = rows
            .iter()
            .map(|r| {
                (
                    names[r.class as usize].as_str(),
                    r.size,
                    r.recall_at_1,
                    r.map_at_r,
                )
            })
            .collect();
        assert_eq!(got.len(), 3);
        assert_eq!((got[0].0, got[0].1, got[0].2), ("c", 1, 0.0));
        assert!(got[0].3.is_nan(), "a lone class sorts first: {got:?}");
        assert_eq!(got[1], ("b", 2, 0.0, 0.0));
        assert_eq!((got[2].0, got[2].1), ("a", 3));
        assert!((got[2].2 - 2.0 / 3.0).abs() < 1e-12);
        assert!((got[2].3 - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn worst_is_lowest_average_precision_then_latest_first_hit() {
        let (_, per_query, _, _) = hand_made();
        // AP@R: q0 0.5, q1 0.5, q2 0, q3 0, q4 0, q5 lone. First ranks: q2 3, q3 2, q4 3.
        assert_eq!(worst(&per_query, 10), [2, 4, 3, 0, 1]);
        assert_eq!(worst(&per_query, 2), [2, 4]);
        assert_eq!(worst(&per_query, 0), Vec::<usize>::new());
    }

    #[test]
    fn confusions_merge_both_directions() {
        let (labels, _, neighbours, names) = hand_made();
        // Top-2 lists: q0 [1 a, 2 b], q1 [0 a, 2 b], q2 [1 a, 0 a], q3 [4 a, 2 b],
        // q4 [3 b, 2 b], q5 [4 a, 3 b].
        // a -> b: q0, q1, q4 x2 = 4; b -> a: q2 x2, q3 = 3; c -> a 1, c -> b 1.
        let pairs = confusions(&labels, &labels, &neighbours, &names, 50);
        let got: Vec<(&str, &str, u64, u64)> = pairs
            .iter()
            .map(|c| {
                (
                    names[c.a as usize].as_str(),
                    names[c.b as usize].as_str(),
                    c.a_to_b,
                    c.b_to_a,
                )
            })
            .collect();
        assert_eq!(got, [("a", "b", 4, 3), ("a", "c", 0, 1), ("b", "c", 0, 1)]);
        assert_eq!(pairs[0].count(), 7);
        assert_eq!(
            confusions(&labels, &labels, &neighbours, &names, 1).len(),
            1
        );
    }

    #[test]
    fn the_sample_is_seeded_distinct_and_sorted() {
        let a = sample(1000, 50, 7);
        assert_eq!(a, sample(1000, 50, 7));
        assert_ne!(a, sample(1000, 50, 8));
        assert!(a.windows(2).all(|w| w[0] < w[1]) && a.len() == 50);
        assert_eq!(sample(3, 50, 7), [0, 1, 2]);
        assert_eq!(of_class(&[0, 1, 0, 2], 0), [0, 2]);
    }

    /// The first-correct rank of the per-query values agrees with the k-NN lists: a correct
    /// neighbour is in the top k exactly when the first correct item's rank is at most k.
    #[test]
    fn first_correct_rank_agrees_with_the_neighbour_lists() {
        let n = 400;
        let values: Vec<f32> = (0..n * 3)
            .map(|i| ((i * 2_654_435_761usize) % 17) as f32 / 3.0)
            .collect();
        let e = Embeddings::new(values, 3).unwrap();
        let labels: Vec<u32> = (0..n as u32).map(|i| i % 23).collect();
        let d = Distance::SquaredEuclidean;
        let per_query = retrieval_per_query(&e, &labels, None, d).unwrap();
        let k = 8;
        let nb = knn(&e, QueryMode::LeaveOneOut, d, k).unwrap();
        for q in 0..n {
            let in_list = nb
                .indices(q)
                .iter()
                .position(|&r| labels[r as usize] == labels[q]);
            let first = per_query[q].first_rank.unwrap();
            match in_list {
                Some(p) => assert_eq!(first, p as u64 + 1, "query {q}"),
                None => assert!(first > k as u64, "query {q}"),
            }
        }
    }
}
