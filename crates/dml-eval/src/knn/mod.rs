//! Exact k-nearest-neighbour search: [`knn`] returns each query's `k` nearest reference items.
//!
//! Ranking uses a cheaper key with the same order (`|r|^2 - 2 q.r` for squared Euclidean,
//! `-q.r` for inner product and cosine), computed tile by tile with a GEMM and merged into
//! per-query bounded heaps; only the kept values are converted back to the distance's units.
//! Ties go to the lower reference index. See [`scan`] for the blocking.

pub(crate) mod scan;
pub(crate) mod topk;

use std::borrow::Cow;

use crate::embeddings::Embeddings;
use crate::error::{Error, Result};
use scan::{Layout, Side};
use topk::TopK;

/// How closeness is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Distance {
    /// Squared Euclidean distance `|q - r|^2` (faiss `IndexFlatL2`, PML's k-NN): smaller is
    /// closer. Reported scores are squared distances, clamped at 0.
    #[default]
    SquaredEuclidean,
    /// Inner product `q.r`: larger is closer. Reported scores are inner products.
    InnerProduct,
    /// Cosine similarity of the L2-normalised rows: larger is closer. Reported scores are
    /// cosines.
    Cosine,
}

impl Distance {
    /// The stable lowercase name (`squared-euclidean`, `inner-product`, `cosine`).
    pub fn name(self) -> &'static str {
        match self {
            Distance::SquaredEuclidean => "squared-euclidean",
            Distance::InnerProduct => "inner-product",
            Distance::Cosine => "cosine",
        }
    }

    /// Whether a larger score means closer (similarities).
    pub fn is_similarity(self) -> bool {
        !matches!(self, Distance::SquaredEuclidean)
    }
}

/// Where each query's neighbours come from.
#[derive(Debug, Clone, Copy)]
pub enum QueryMode<'a> {
    /// The queries are the reference set; each query's own row is excluded by index (not by
    /// zero distance: exact duplicates exist and stay neighbours of each other).
    LeaveOneOut,
    /// A separate gallery, as in the In-Shop protocol; nothing is excluded.
    Gallery(&'a Embeddings),
}

/// The `k` nearest reference items of every query, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbours {
    k: usize,
    indices: Vec<u32>,
    scores: Vec<f32>,
}

impl Neighbours {
    /// Neighbours per query.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Number of queries.
    pub fn num_queries(&self) -> usize {
        self.indices.len() / self.k
    }

    /// Reference indices of query `q`'s neighbours, nearest first.
    pub fn indices(&self, q: usize) -> &[u32] {
        &self.indices[q * self.k..(q + 1) * self.k]
    }

    /// Their scores in the distance's own units (squared distance, inner product or cosine).
    pub fn scores(&self, q: usize) -> &[f32] {
        &self.scores[q * self.k..(q + 1) * self.k]
    }
}

/// The sides of the scan for `distance`, sharing storage where no normalisation is needed.
pub(crate) struct Prepared<'a> {
    query: Cow<'a, Embeddings>,
    reference: Option<Cow<'a, Embeddings>>,
    distance: Distance,
}

impl<'a> Prepared<'a> {
    /// Checks shapes and normalises for cosine.
    pub fn new(query: &'a Embeddings, mode: QueryMode<'a>, distance: Distance) -> Result<Self> {
        if query.is_empty() {
            return Err(Error::Empty { what: "query" });
        }
        if let QueryMode::Gallery(reference) = mode {
            if reference.is_empty() {
                return Err(Error::Empty { what: "reference" });
            }
            if reference.dim() != query.dim() {
                return Err(Error::LengthMismatch {
                    what: "reference embedding dimension (the query dimension)",
                    expected: query.dim(),
                    found: reference.dim(),
                });
            }
        }
        let prepare = |e: &'a Embeddings| match distance {
            Distance::Cosine => Cow::Owned(e.l2_normalized()),
            _ => Cow::Borrowed(e),
        };
        Ok(Self {
            query: prepare(query),
            reference: match mode {
                QueryMode::LeaveOneOut => None,
                QueryMode::Gallery(r) => Some(prepare(r)),
            },
            distance,
        })
    }

    /// The query rows as scanned (normalised for cosine).
    pub fn query(&self) -> &Embeddings {
        &self.query
    }

    /// The reference rows as scanned; the queries themselves in leave-one-out mode.
    pub fn reference(&self) -> &Embeddings {
        self.reference.as_deref().unwrap_or(&self.query)
    }

    /// Whether the queries are the references.
    pub fn leave_one_out(&self) -> bool {
        self.reference.is_none()
    }

    /// Reference items every query can have as neighbours.
    pub fn available(&self) -> usize {
        self.reference().rows() - usize::from(self.leave_one_out())
    }

    /// The multiplier of `q.r` in the key.
    pub fn scale(&self) -> f32 {
        match self.distance {
            Distance::SquaredEuclidean => -2.0,
            Distance::InnerProduct | Distance::Cosine => -1.0,
        }
    }

    /// The per-row key term of a side's rows.
    pub fn offsets(&self, e: &Embeddings) -> Vec<f32> {
        match self.distance {
            Distance::SquaredEuclidean => dml_core::linalg::row_sq_norms(e.as_slice(), e.dim()),
            Distance::InnerProduct | Distance::Cosine => vec![0.0; e.rows()],
        }
    }

    /// Runs the blocked scan over rows `start..end` of the queries, one sink per row.
    pub fn scan_queries<S: scan::Sink>(&self, start: usize, end: usize, sinks: &mut [S]) {
        let q = self.query();
        let layout = match (self.leave_one_out(), start == 0 && end == q.rows()) {
            (true, true) => Layout::Symmetric,
            (true, false) => Layout::Separate {
                self_shift: Some(start),
            },
            (false, _) => Layout::Separate { self_shift: None },
        };
        let query_side = Side {
            data: q.slice_rows(start, end),
            dim: q.dim(),
            offset: if layout == Layout::Symmetric {
                self.offsets(q)
            } else {
                Vec::new()
            },
        };
        let r = self.reference();
        let reference_side = Side {
            data: r.as_slice(),
            dim: r.dim(),
            offset: if layout == Layout::Symmetric {
                Vec::new()
            } else {
                self.offsets(r)
            },
        };
        scan::scan(&query_side, &reference_side, self.scale(), layout, sinks);
    }

    /// Converts a key of query row `q` back to the distance's units.
    pub fn score(&self, key: f32, query_sq_norm: f32) -> f32 {
        match self.distance {
            Distance::SquaredEuclidean => (key + query_sq_norm).max(0.0),
            Distance::InnerProduct | Distance::Cosine => -key,
        }
    }
}

/// The `k` nearest reference items of each query, exactly.
///
/// ```text
/// SquaredEuclidean: score(q, r) = |q - r|^2, ascending
/// InnerProduct:     score(q, r) = q . r,     descending
/// Cosine:           score(q, r) = q.r / (max(|q|,1e-12) max(|r|,1e-12)), descending
/// ties: lower reference index first
/// ```
///
/// Time O(Q R D) through blocked GEMM (half of it in leave-one-out mode, where the score
/// matrix is symmetric); memory O((Q + R) D + Q k + tile).
///
/// # Errors
/// [`Error::Empty`] for an empty set, [`Error::LengthMismatch`] for differing dimensions,
/// [`Error::InvalidParameter`] for `k = 0` and [`Error::KTooLarge`] when `k` exceeds the
/// reference items a query can have (one fewer than the set in leave-one-out mode).
pub fn knn(
    query: &Embeddings,
    mode: QueryMode<'_>,
    distance: Distance,
    k: usize,
) -> Result<Neighbours> {
    let prepared = Prepared::new(query, mode, distance)?;
    if k == 0 {
        return Err(Error::InvalidParameter {
            param: "k",
            value: "0".into(),
            reason: "at least one neighbour is needed",
        });
    }
    if k > prepared.available() {
        return Err(Error::KTooLarge {
            k,
            available: prepared.available(),
        });
    }
    let q = prepared.query();
    let mut sinks: Vec<TopK> = (0..q.rows()).map(|_| TopK::new(k)).collect();
    prepared.scan_queries(0, q.rows(), &mut sinks);
    let norms = dml_core::linalg::row_sq_norms(q.as_slice(), q.dim());
    let mut indices = Vec::with_capacity(q.rows() * k);
    let mut scores = Vec::with_capacity(q.rows() * k);
    for (sink, &norm) in sinks.into_iter().zip(&norms) {
        for c in sink.into_sorted() {
            indices.push(c.index);
            scores.push(prepared.score(c.key, norm));
        }
    }
    Ok(Neighbours { k, indices, scores })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute_force(q: &Embeddings, r: &Embeddings, loo: bool, k: usize) -> Vec<Vec<u32>> {
        (0..q.rows())
            .map(|i| {
                let mut all: Vec<(f64, u32)> = (0..r.rows())
                    .filter(|&j| !(loo && i == j))
                    .map(|j| {
                        let d: f64 = q
                            .row(i)
                            .iter()
                            .zip(r.row(j))
                            .map(|(a, b)| f64::from(a - b).powi(2))
                            .sum();
                        (d, j as u32)
                    })
                    .collect();
                all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                all.iter().take(k).map(|p| p.1).collect()
            })
            .collect()
    }

    #[test]
    fn one_dimensional_points_have_obvious_neighbours() {
        let e = Embeddings::new(vec![0.0, 1.0, 3.0, 7.0], 1).unwrap();
        let nb = knn(&e, QueryMode::LeaveOneOut, Distance::SquaredEuclidean, 2).unwrap();
        assert_eq!(nb.indices(0), &[1, 2]);
        assert_eq!(nb.scores(0), &[1.0, 9.0]);
        assert_eq!(nb.indices(3), &[2, 1]);
        assert_eq!(nb.scores(3), &[16.0, 36.0]);
    }

    #[test]
    fn duplicates_are_neighbours_and_self_is_excluded_by_index() {
        let e = Embeddings::new(vec![1.0, 1.0, 1.0, 5.0], 1).unwrap();
        let nb = knn(&e, QueryMode::LeaveOneOut, Distance::SquaredEuclidean, 2).unwrap();
        assert_eq!(nb.indices(0), &[1, 2]);
        assert_eq!(nb.indices(1), &[0, 2]);
        assert_eq!(nb.indices(2), &[0, 1]);
        assert_eq!(nb.scores(1), &[0.0, 0.0]);
    }

    #[test]
    fn inner_product_and_cosine_rank_by_similarity() {
        let q = Embeddings::new(vec![1.0, 0.0], 2).unwrap();
        let r = Embeddings::new(vec![10.0, 10.0, 0.5, 0.0, -1.0, 0.0], 2).unwrap();
        let ip = knn(&q, QueryMode::Gallery(&r), Distance::InnerProduct, 3).unwrap();
        assert_eq!(ip.indices(0), &[0, 1, 2]);
        assert_eq!(ip.scores(0), &[10.0, 0.5, -1.0]);
        let cos = knn(&q, QueryMode::Gallery(&r), Distance::Cosine, 3).unwrap();
        assert_eq!(cos.indices(0), &[1, 0, 2]);
        assert!((cos.scores(0)[1] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
    }

    #[test]
    fn bad_requests_are_errors() {
        let e = Embeddings::new(vec![0.0, 1.0, 2.0], 1).unwrap();
        let m = QueryMode::LeaveOneOut;
        let d = Distance::SquaredEuclidean;
        assert!(matches!(
            knn(&e, m, d, 3),
            Err(Error::KTooLarge { k: 3, available: 2 })
        ));
        assert!(matches!(
            knn(&e, m, d, 0),
            Err(Error::InvalidParameter { .. })
        ));
        let empty = Embeddings::new(vec![], 1).unwrap();
        assert!(matches!(knn(&empty, m, d, 1), Err(Error::Empty { .. })));
        let wide = Embeddings::new(vec![0.0, 1.0], 2).unwrap();
        assert!(matches!(
            knn(&e, QueryMode::Gallery(&wide), d, 1),
            Err(Error::LengthMismatch { .. })
        ));
    }

    #[test]
    fn matches_brute_force_across_tiles() {
        let (n, dim) = (scan::BLOCK + 50, 4);
        // A coarse grid makes many exact ties, which must go to the lower index.
        let data: Vec<f32> = (0..n * dim)
            .map(|i| ((i * 2_654_435_761) % 7) as f32)
            .collect();
        let e = Embeddings::new(data, dim).unwrap();
        let nb = knn(&e, QueryMode::LeaveOneOut, Distance::SquaredEuclidean, 5).unwrap();
        let want = brute_force(&e, &e, true, 5);
        for q in (0..n).step_by(41) {
            assert_eq!(nb.indices(q), want[q].as_slice(), "query {q}");
        }
    }

    /// Tiles go to threads in whatever order rayon picks; the neighbours (ties included) and
    /// their scores must not depend on it or on the number of threads.
    #[test]
    fn thread_count_does_not_change_neighbours() {
        let (n, dim) = (2 * scan::BLOCK + 300, 3);
        let data: Vec<f32> = (0..n * dim)
            .map(|i| ((i * 2_654_435_761) % 11) as f32)
            .collect();
        let e = Embeddings::new(data, dim).unwrap();
        let gallery = Embeddings::new(e.slice_rows(0, scan::BLOCK + 7).to_vec(), dim).unwrap();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let own = knn(&e, QueryMode::LeaveOneOut, Distance::SquaredEuclidean, 6).unwrap();
                let other =
                    knn(&e, QueryMode::Gallery(&gallery), Distance::InnerProduct, 4).unwrap();
                (own, other)
            })
        };
        let one = run(1);
        assert_eq!(run(2), one);
        assert_eq!(run(3), one);
    }
}
