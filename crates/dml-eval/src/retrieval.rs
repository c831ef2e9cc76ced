//! Retrieval metrics on exact rankings: Recall@K, precision@1, R-precision, MAP@R, MAP, MRR.
//!
//! Every one of them is a function of where each query's *relevant* reference items (same
//! label, the query itself excluded) sit in its full ranking. So instead of keeping a top-k
//! list (PML keeps `max_bin_count` neighbours, faiss returns them), one blocked pass counts,
//! for each relevant item, how many other-label items outrank it: rank = 1 + relevant items
//! ahead + other items ahead. That is exact for MAP over the whole ranking (PML needs
//! `k=None` and an O(N^2) matrix for it) in O(sum of R) memory, and Recall@K for any K is
//! just "rank of the first relevant item <= K".

use std::collections::{BTreeMap, HashMap};

use dml_core::linalg::{Transpose, matmul};
use rayon::prelude::*;

use crate::embeddings::Embeddings;
use crate::error::{Error, Result};
use crate::knn::scan::Sink;
use crate::knn::topk::Candidate;
use crate::knn::{Distance, Prepared, QueryMode};

/// Relevant (query, item) pairs whose state is held at once, over all threads' copies of it
/// (12 bytes each, 192 MiB in all). Past it the queries are processed in groups, one pass
/// each.
const RELEVANT_PAIRS_HELD: usize = 1 << 24;

/// Scores of one class's queries against its items are computed in pieces this large.
const RELEVANT_TILE: usize = 1 << 22;

/// A separate reference set with its labels (the In-Shop protocol's gallery).
#[derive(Debug, Clone, Copy)]
pub struct Gallery<'a> {
    /// Reference embeddings.
    pub embeddings: &'a Embeddings,
    /// One label id per reference row, in the queries' id space (see [`crate::Labels::unify`]).
    pub labels: &'a [u32],
}

/// Retrieval metrics of a set of queries. PML-style averages are over non-lone queries and
/// are NaN when every query is lone; Recall@K averages over all queries.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalMetrics {
    /// `(K, Recall@K)` in the order asked for: the fraction of all queries with a relevant
    /// item among their K nearest (a lone query is a miss).
    pub recall_at_k: Vec<(usize, f64)>,
    /// Fraction of non-lone queries whose nearest item is relevant (PML `precision_at_1`).
    pub precision_at_1: f64,
    /// Mean over non-lone queries of (relevant items in the top R) / R (PML `r_precision`).
    pub r_precision: f64,
    /// Mean over non-lone queries of `(1/R) sum_{i<=R} P@i rel_i` (PML
    /// `mean_average_precision_at_r`).
    pub map_at_r: f64,
    /// Mean over non-lone queries of `(1/R) sum_i P@i rel_i` over the whole ranking (PML
    /// `mean_average_precision` with `k=None`).
    pub map: f64,
    /// Mean over non-lone queries of 1 / rank of the first relevant item, over the whole
    /// ranking (PML `mean_reciprocal_rank` with `k=None`).
    pub mrr: f64,
    /// Number of queries.
    pub num_queries: usize,
    /// Number of reference items.
    pub num_reference: usize,
    /// Queries with no relevant reference item.
    pub num_lone_queries: usize,
}

/// Computes [`RetrievalMetrics`] with exact rankings under `distance`.
///
/// ```text
/// R_q     = #{reference items with q's label} (q itself excluded in leave-one-out mode)
/// rank_t  = 1-based rank of q's t-th best relevant item (ties: lower index first)
/// Recall@K     = mean over all q of [R_q > 0 and rank_1 <= K]
/// P@1          = mean over R_q > 0 of [rank_1 = 1]
/// R-precision  = mean over R_q > 0 of #{t : rank_t <= R_q} / R_q
/// MAP@R        = mean over R_q > 0 of (1/R_q) sum_{t : rank_t <= R_q} t / rank_t
/// MAP          = mean over R_q > 0 of (1/R_q) sum_t t / rank_t
/// MRR          = mean over R_q > 0 of 1 / rank_1
/// ```
///
/// `gallery: None` is leave-one-out (the queries are the references, self excluded by
/// index). Query labels absent from the gallery make lone queries: misses for Recall@K,
/// left out of the other averages (as PML). Time: one blocked GEMM pass (half of one in
/// leave-one-out mode) plus one small GEMM per class; memory O((Q+R) D + sum R_q + tile).
///
/// # Errors
/// Empty sets, label counts that differ from row counts, differing dimensions, a K of 0
/// or a K above the reference items a query can see ([`Error::KTooLarge`]).
pub fn retrieval_metrics(
    query: &Embeddings,
    query_labels: &[u32],
    gallery: Option<Gallery<'_>>,
    distance: Distance,
    recall_ks: &[usize],
) -> Result<RetrievalMetrics> {
    let (queries, num_reference) = rank_queries(query, query_labels, gallery, distance, recall_ks)?;
    Ok(aggregate(&queries, recall_ks, num_reference))
}

/// Every query's own retrieval numbers, the values [`retrieval_metrics`] averages (it is
/// computed from this list, so the two cannot disagree): for reports that show which queries
/// and classes fail.
///
/// ```
/// use dml_eval::{Distance, Embeddings, retrieval_per_query};
/// // a a b on a line: query 1's nearest item is 2 (class b), its class mate comes second
/// let e = Embeddings::new(vec![0.0, 2.0, 2.5], 1).unwrap();
/// let q = retrieval_per_query(&e, &[0, 0, 1], None, Distance::SquaredEuclidean).unwrap();
/// assert_eq!((q[1].relevant, q[1].first_rank), (1, Some(2)));
/// assert_eq!(q[1].average_precision_at_r, 0.0);
/// assert_eq!(q[2].first_rank, None); // a lone query: no other item of class b
/// ```
///
/// # Errors
/// Those of [`retrieval_metrics`] (without the K checks).
pub fn retrieval_per_query(
    query: &Embeddings,
    query_labels: &[u32],
    gallery: Option<Gallery<'_>>,
    distance: Distance,
) -> Result<Vec<QueryRetrieval>> {
    rank_queries(query, query_labels, gallery, distance, &[]).map(|(queries, _)| queries)
}

/// One query's place in its exact ranking: what every metric of [`RetrievalMetrics`] is a
/// mean of (see [`retrieval_metrics`] for the formulas).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueryRetrieval {
    /// R: the reference items with the query's label (itself excluded in leave-one-out
    /// mode); 0 for a lone query.
    pub relevant: usize,
    /// 1-based rank of the best relevant item in the whole ranking; `None` for a lone query.
    pub first_rank: Option<u64>,
    /// Relevant items in the top R, over R; NaN for a lone query.
    pub r_precision: f64,
    /// Average precision at R, `(1/R) sum_{t : rank_t <= R} t / rank_t` (the term of MAP@R);
    /// NaN for a lone query.
    pub average_precision_at_r: f64,
    /// Average precision over the whole ranking (the term of MAP); NaN for a lone query.
    pub average_precision: f64,
}

impl QueryRetrieval {
    /// The numbers of a query whose relevant items have the 1-based `ranks`, best first
    /// (empty: a lone query).
    fn from_ranks(ranks: &[u64]) -> Self {
        let Some(&first) = ranks.first() else {
            return QueryRetrieval {
                relevant: 0,
                first_rank: None,
                r_precision: f64::NAN,
                average_precision_at_r: f64::NAN,
                average_precision: f64::NAN,
            };
        };
        let r = ranks.len() as f64;
        let big_r = ranks.len() as u64;
        let mut in_top_r = 0u64;
        let (mut ap_at_r, mut ap) = (0.0, 0.0);
        for (t, &rank) in ranks.iter().enumerate() {
            let precision = (t + 1) as f64 / rank as f64;
            ap += precision;
            if rank <= big_r {
                in_top_r += 1;
                ap_at_r += precision;
            }
        }
        QueryRetrieval {
            relevant: ranks.len(),
            first_rank: Some(first),
            r_precision: in_top_r as f64 / r,
            average_precision_at_r: ap_at_r / r,
            average_precision: ap / r,
        }
    }

    /// Whether a relevant item is among the `k` nearest (the term of Recall@K; a lone query
    /// never is).
    pub fn hit_at(&self, k: usize) -> bool {
        self.first_rank.is_some_and(|first| first <= k as u64)
    }
}

/// The means of `queries` as [`RetrievalMetrics`] against `num_reference` items.
pub(crate) fn aggregate(
    queries: &[QueryRetrieval],
    recall_ks: &[usize],
    num_reference: usize,
) -> RetrievalMetrics {
    let mut totals = Totals::new(recall_ks);
    for q in queries {
        totals.add(q);
    }
    totals.finish(queries.len(), num_reference)
}

/// Each query's [`QueryRetrieval`], in query order, and the number of reference items,
/// after checking the inputs and every K of `recall_ks`.
pub(crate) fn rank_queries(
    query: &Embeddings,
    query_labels: &[u32],
    gallery: Option<Gallery<'_>>,
    distance: Distance,
    recall_ks: &[usize],
) -> Result<(Vec<QueryRetrieval>, usize)> {
    let mode = match gallery {
        None => QueryMode::LeaveOneOut,
        Some(g) => QueryMode::Gallery(g.embeddings),
    };
    let prepared = Prepared::new(query, mode, distance)?;
    check_len(
        "labels for the query embeddings",
        query.rows(),
        query_labels.len(),
    )?;
    let reference_labels = match gallery {
        None => query_labels,
        Some(g) => {
            check_len(
                "labels for the reference embeddings",
                g.embeddings.rows(),
                g.labels.len(),
            )?;
            g.labels
        }
    };
    for &k in recall_ks {
        if k == 0 {
            return Err(Error::InvalidParameter {
                param: "k",
                value: "0".into(),
                reason: "Recall@K needs K >= 1",
            });
        }
        if k > prepared.available() {
            return Err(Error::KTooLarge {
                k,
                available: prepared.available(),
            });
        }
    }
    let members = members_by_label(reference_labels);
    let relevant_count = |q: usize| -> usize {
        let r = members.get(&query_labels[q]).map_or(0, Vec::len);
        r - usize::from(prepared.leave_one_out() && r > 0)
    };
    let reference_offsets = prepared.offsets(prepared.reference());
    let n = query.rows();
    let mut queries = Vec::with_capacity(n);
    // The scan keeps one copy of the sinks per thread besides the caller's.
    let per_pass = RELEVANT_PAIRS_HELD / (rayon::current_num_threads() + 1);
    let mut start = 0;
    while start < n {
        let mut end = start;
        let mut pairs = 0;
        while end < n && (end == start || pairs + relevant_count(end) <= per_pass) {
            pairs += relevant_count(end);
            end += 1;
        }
        let relevant = relevant_keys(
            &prepared,
            &reference_offsets,
            query_labels,
            &members,
            start..end,
        );
        let mut sinks: Vec<RankSink<'_>> = relevant
            .into_iter()
            .zip(&query_labels[start..end])
            .map(|(relevant, &label)| RankSink::new(label, reference_labels, &relevant))
            .collect();
        prepared.scan_queries(start, end, &mut sinks);
        queries.extend(sinks.iter().map(|s| QueryRetrieval::from_ranks(&s.ranks())));
        start = end;
    }
    Ok((queries, prepared.reference().rows()))
}

fn check_len(what: &'static str, expected: usize, found: usize) -> Result<()> {
    if expected == found {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            what,
            expected,
            found,
        })
    }
}

/// Reference indices of every label, ascending.
fn members_by_label(labels: &[u32]) -> HashMap<u32, Vec<u32>> {
    let mut members: HashMap<u32, Vec<u32>> = HashMap::new();
    for (i, &l) in labels.iter().enumerate() {
        members.entry(l).or_default().push(i as u32);
    }
    members
}

/// For queries `range`, the keys of their relevant items, each list sorted best first.
///
/// Computed per class with one GEMM of the class's queries against its items, so a class of
/// size s costs s^2 D multiply-adds, not a pass over the whole reference set.
fn relevant_keys(
    prepared: &Prepared<'_>,
    reference_offsets: &[f32],
    query_labels: &[u32],
    members: &HashMap<u32, Vec<u32>>,
    range: std::ops::Range<usize>,
) -> Vec<Box<[Candidate]>> {
    let start = range.start;
    let mut by_label: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for q in range.clone() {
        by_label.entry(query_labels[q]).or_default().push(q);
    }
    let query = prepared.query();
    let reference = prepared.reference();
    let dim = query.dim();
    let per_class: Vec<Vec<(usize, Box<[Candidate]>)>> = by_label
        .par_iter()
        .map(|(label, queries)| {
            let items = members.get(label).map_or(&[][..], Vec::as_slice);
            let item_rows: Vec<f32> = items
                .iter()
                .flat_map(|&i| reference.row(i as usize).iter().copied())
                .collect();
            let chunk = (RELEVANT_TILE / items.len().max(1)).max(1);
            let mut out = Vec::with_capacity(queries.len());
            let mut scores = Vec::new();
            for qs in queries.chunks(chunk) {
                let query_rows: Vec<f32> = qs
                    .iter()
                    .flat_map(|&q| query.row(q).iter().copied())
                    .collect();
                scores.resize(qs.len() * items.len(), 0.0);
                matmul(
                    &query_rows,
                    Transpose::No,
                    &item_rows,
                    Transpose::Yes,
                    qs.len(),
                    items.len(),
                    dim,
                    &mut scores,
                    0.0,
                    prepared.scale(),
                );
                for (row, &q) in scores.chunks(items.len().max(1)).zip(qs) {
                    let mut keys: Vec<Candidate> = items
                        .iter()
                        .zip(row)
                        .filter(|&(&i, _)| !(prepared.leave_one_out() && i as usize == q))
                        .map(|(&i, &s)| Candidate {
                            key: s + reference_offsets[i as usize],
                            index: i,
                        })
                        .collect();
                    keys.sort_unstable();
                    out.push((q, keys.into_boxed_slice()));
                }
            }
            out
        })
        .collect();
    let mut relevant: Vec<Box<[Candidate]>> = vec![Box::default(); range.len()];
    for (q, keys) in per_class.into_iter().flatten() {
        relevant[q - start] = keys;
    }
    relevant
}

/// Up to this many relevant items, a candidate's place among them is a plain (vectorised)
/// count of the smaller keys; above, a binary search. A bucket table over the key range was
/// tried in place of the search and measured no faster.
const LINEAR_COUNT: usize = 64;

/// One query's relevant items (sorted best first, as parallel key / index arrays) and, for
/// each, how many other-label items were found just ahead of it: `beaten[p]` counts candidates
/// better than relevant items `p..` but not `..p`.
struct RankSink<'a> {
    label: u32,
    reference_labels: &'a [u32],
    keys: Box<[f32]>,
    indices: Box<[u32]>,
    beaten: Box<[u32]>,
}

impl<'a> RankSink<'a> {
    fn new(label: u32, reference_labels: &'a [u32], relevant: &[Candidate]) -> Self {
        Self {
            label,
            reference_labels,
            keys: relevant.iter().map(|c| c.key).collect(),
            indices: relevant.iter().map(|c| c.index).collect(),
            beaten: vec![0; relevant.len() + 1].into_boxed_slice(),
        }
    }

    /// 1-based rank of each relevant item in the full ranking, best first.
    fn ranks(&self) -> Vec<u64> {
        let mut ahead = 0u64;
        (0..self.keys.len())
            .map(|t| {
                ahead += u64::from(self.beaten[t]);
                t as u64 + 1 + ahead
            })
            .collect()
    }
}

impl Sink for RankSink<'_> {
    fn bound(&self) -> f32 {
        self.keys.last().copied().unwrap_or(f32::NEG_INFINITY)
    }

    #[inline]
    fn offer(&mut self, key: f32, index: u32) {
        if self.reference_labels[index as usize] == self.label {
            return;
        }
        // Relevant items ahead of the candidate: smaller keys, then equal keys with lower
        // indices (the order they are sorted in).
        let keys = &self.keys;
        let mut p = if keys.len() <= LINEAR_COUNT {
            keys.iter().map(|&k| usize::from(k < key)).sum()
        } else {
            keys.partition_point(|&k| k < key)
        };
        while p < keys.len() && keys[p] == key && self.indices[p] < index {
            p += 1;
        }
        self.beaten[p] += 1;
    }

    fn blank(&self) -> Self {
        Self {
            label: self.label,
            reference_labels: self.reference_labels,
            keys: self.keys.clone(),
            indices: self.indices.clone(),
            beaten: vec![0; self.beaten.len()].into_boxed_slice(),
        }
    }

    fn absorb(&mut self, other: Self) {
        for (b, o) in self.beaten.iter_mut().zip(other.beaten) {
            *b += o;
        }
    }
}

/// Running sums of the per-query metrics, in query order (so results are deterministic).
struct Totals {
    ks: Vec<usize>,
    hits: Vec<u64>,
    non_lone: u64,
    precision_at_1: f64,
    r_precision: f64,
    map_at_r: f64,
    map: f64,
    mrr: f64,
}

impl Totals {
    fn new(ks: &[usize]) -> Self {
        Self {
            ks: ks.to_vec(),
            hits: vec![0; ks.len()],
            non_lone: 0,
            precision_at_1: 0.0,
            r_precision: 0.0,
            map_at_r: 0.0,
            map: 0.0,
            mrr: 0.0,
        }
    }

    /// Adds one query (a lone one only counts as a miss of every Recall@K).
    fn add(&mut self, query: &QueryRetrieval) {
        let Some(first) = query.first_rank else {
            return;
        };
        for (hits, &k) in self.hits.iter_mut().zip(&self.ks) {
            *hits += u64::from(query.hit_at(k));
        }
        self.non_lone += 1;
        self.precision_at_1 += f64::from(u8::from(first == 1));
        self.r_precision += query.r_precision;
        self.map_at_r += query.average_precision_at_r;
        self.map += query.average_precision;
        self.mrr += 1.0 / first as f64;
    }

    fn finish(self, num_queries: usize, num_reference: usize) -> RetrievalMetrics {
        let mean = |sum: f64| {
            if self.non_lone == 0 {
                f64::NAN
            } else {
                sum / self.non_lone as f64
            }
        };
        RetrievalMetrics {
            recall_at_k: self
                .ks
                .iter()
                .zip(&self.hits)
                .map(|(&k, &h)| (k, h as f64 / num_queries as f64))
                .collect(),
            precision_at_1: mean(self.precision_at_1),
            r_precision: mean(self.r_precision),
            map_at_r: mean(self.map_at_r),
            map: mean(self.map),
            mrr: mean(self.mrr),
            num_queries,
            num_reference,
            num_lone_queries: num_queries - self.non_lone as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(points: &[f32]) -> Embeddings {
        Embeddings::new(points.to_vec(), 1).unwrap()
    }

    /// Points on a line, so every ranking can be read off by hand.
    #[test]
    fn hand_computed_leave_one_out_ranking() {
        // positions 0, 1, 2, 10, 11 with labels a a b b a
        let e = line(&[0.0, 1.0, 2.0, 10.0, 11.0]);
        let labels = [0, 0, 1, 1, 0];
        let m = retrieval_metrics(&e, &labels, None, Distance::SquaredEuclidean, &[1, 2]).unwrap();
        // query 0: ranking 1(a) 2(b) 10(b) 11(a): R=2, relevant ranks 1, 4
        // query 1: ranking 0(a) 2(b) 10(b) 11(a) (0 and 2 tie at distance 1: lower index
        //          first): ranks 1, 4
        // query 2: ranking 1(a) 0(a) 10(b) 11(a): R=1 (label b has items 2, 3): rank 3
        // query 3: ranking 11(a) 2(b) ...: R=1, rank 2
        // query 4: ranking 10(b) 2(b) 1(a) 0(a): R=2, ranks 3, 4
        assert_eq!(m.num_lone_queries, 0);
        assert_eq!(m.recall_at_k, vec![(1, 2.0 / 5.0), (2, 3.0 / 5.0)]);
        assert!((m.precision_at_1 - 2.0 / 5.0).abs() < 1e-12);
        let r_prec = (0.5 + 0.5 + 0.0 + 0.0 + 0.0) / 5.0;
        assert!((m.r_precision - r_prec).abs() < 1e-12);
        let map_at_r = (0.5 + 0.5 + 0.0 + 0.0 + 0.0) / 5.0;
        assert!((m.map_at_r - map_at_r).abs() < 1e-12);
        let ap = [
            (1.0 + 2.0 / 4.0) / 2.0,
            (1.0 + 2.0 / 4.0) / 2.0,
            1.0 / 3.0,
            1.0 / 2.0,
            (1.0 / 3.0 + 2.0 / 4.0) / 2.0,
        ];
        assert!((m.map - ap.iter().sum::<f64>() / 5.0).abs() < 1e-12);
        let mrr = (1.0 + 1.0 + 1.0 / 3.0 + 1.0 / 2.0 + 1.0 / 3.0) / 5.0;
        assert!((m.mrr - mrr).abs() < 1e-12);
    }

    /// The per-query numbers of the hand-computed case, and the metrics as their means.
    #[test]
    fn per_query_values_are_what_the_metrics_average() {
        let e = line(&[0.0, 1.0, 2.0, 10.0, 11.0]);
        let labels = [0, 0, 1, 1, 0];
        let d = Distance::SquaredEuclidean;
        let q = retrieval_per_query(&e, &labels, None, d).unwrap();
        let first: Vec<Option<u64>> = q.iter().map(|q| q.first_rank).collect();
        assert_eq!(first, [Some(1), Some(1), Some(3), Some(2), Some(3)]);
        let relevant: Vec<usize> = q.iter().map(|q| q.relevant).collect();
        assert_eq!(relevant, [2, 2, 1, 1, 2]);
        assert!((q[4].average_precision - (1.0 / 3.0 + 2.0 / 4.0) / 2.0).abs() < 1e-12);
        assert!((q[0].average_precision_at_r - 0.5).abs() < 1e-12);
        assert!(q[0].hit_at(1) && !q[2].hit_at(2) && q[2].hit_at(3));
        let m = retrieval_metrics(&e, &labels, None, d, &[1, 2]).unwrap();
        let mean = |f: fn(&QueryRetrieval) -> f64| q.iter().map(f).sum::<f64>() / 5.0;
        assert!((m.map_at_r - mean(|q| q.average_precision_at_r)).abs() < 1e-15);
        assert!((m.r_precision - mean(|q| q.r_precision)).abs() < 1e-15);
        assert!((m.map - mean(|q| q.average_precision)).abs() < 1e-15);
        let lone = retrieval_per_query(&e, &[0, 0, 1, 2, 0], None, d).unwrap();
        assert_eq!((lone[2].relevant, lone[2].first_rank), (0, None));
        assert!(lone[2].average_precision_at_r.is_nan() && !lone[2].hit_at(4));
    }

    #[test]
    fn lone_queries_miss_recall_and_leave_the_other_averages() {
        let q = line(&[0.0, 5.0]);
        let g = line(&[0.1, 4.0, 6.0]);
        let gallery = Gallery {
            embeddings: &g,
            labels: &[0, 1, 1],
        };
        // query 1 has label 2, absent from the gallery
        let m = retrieval_metrics(&q, &[0, 2], Some(gallery), Distance::SquaredEuclidean, &[1])
            .unwrap();
        assert_eq!(m.num_lone_queries, 1);
        assert_eq!(m.recall_at_k, vec![(1, 0.5)]);
        assert_eq!(m.precision_at_1, 1.0);
        assert_eq!(m.map, 1.0);
        let all_lone =
            retrieval_metrics(&q, &[5, 6], Some(gallery), Distance::SquaredEuclidean, &[3])
                .unwrap();
        assert_eq!(all_lone.recall_at_k, vec![(3, 0.0)]);
        assert!(all_lone.precision_at_1.is_nan() && all_lone.map.is_nan());
    }

    #[test]
    fn one_class_only_is_perfect() {
        let e = line(&[0.0, 3.0, 1.0, 7.0]);
        let m = retrieval_metrics(&e, &[4, 4, 4, 4], None, Distance::Cosine, &[1, 3]).unwrap();
        assert_eq!(m.recall_at_k, vec![(1, 1.0), (3, 1.0)]);
        assert_eq!((m.r_precision, m.map_at_r, m.map), (1.0, 1.0, 1.0));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let e = line(&[0.0, 1.0, 2.0]);
        let d = Distance::SquaredEuclidean;
        assert!(matches!(
            retrieval_metrics(&e, &[0, 1], None, d, &[1]),
            Err(Error::LengthMismatch { .. })
        ));
        assert!(matches!(
            retrieval_metrics(&e, &[0, 1, 1], None, d, &[3]),
            Err(Error::KTooLarge { k: 3, available: 2 })
        ));
        assert!(matches!(
            retrieval_metrics(&e, &[0, 1, 1], None, d, &[0]),
            Err(Error::InvalidParameter { .. })
        ));
    }

    /// Rank counts are gathered per thread and added up: any thread count gives the same
    /// metrics, bit for bit.
    #[test]
    fn thread_count_does_not_change_metrics() {
        let n = 2 * crate::knn::scan::BLOCK + 100;
        let points: Vec<f32> = (0..n * 3)
            .map(|i| ((i * 2_654_435_761usize) % 13) as f32 / 4.0)
            .collect();
        let e = Embeddings::new(points, 3).unwrap();
        let labels: Vec<u32> = (0..n as u32).map(|i| i % 29).collect();
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    retrieval_metrics(&e, &labels, None, Distance::SquaredEuclidean, &[1, 4])
                        .unwrap()
                })
        };
        let one = run(1);
        assert_eq!(run(2), one);
        assert_eq!(run(3), one);
    }

    /// Splitting the queries into several passes gives the same numbers as one pass.
    #[test]
    fn grouped_passes_agree_with_one_pass() {
        let n = 300;
        let points: Vec<f32> = (0..n * 2)
            .map(|i| ((i * 2_654_435_761usize) % 97) as f32 / 10.0)
            .collect();
        let e = Embeddings::new(points, 2).unwrap();
        let labels: Vec<u32> = (0..n as u32).map(|i| i % 7).collect();
        let whole =
            retrieval_metrics(&e, &labels, None, Distance::SquaredEuclidean, &[1, 5]).unwrap();
        let prepared =
            Prepared::new(&e, QueryMode::LeaveOneOut, Distance::SquaredEuclidean).unwrap();
        let offsets = prepared.offsets(prepared.reference());
        let members = members_by_label(&labels);
        let mut totals = Totals::new(&[1, 5]);
        for (start, end) in [(0, 100), (100, 101), (101, n)] {
            let relevant = relevant_keys(&prepared, &offsets, &labels, &members, start..end);
            let mut sinks: Vec<RankSink<'_>> = relevant
                .into_iter()
                .zip(&labels[start..end])
                .map(|(r, &l)| RankSink::new(l, &labels, &r))
                .collect();
            prepared.scan_queries(start, end, &mut sinks);
            for s in &sinks {
                totals.add(&QueryRetrieval::from_ranks(&s.ranks()));
            }
        }
        assert_eq!(totals.finish(n, n), whole);
    }
}
