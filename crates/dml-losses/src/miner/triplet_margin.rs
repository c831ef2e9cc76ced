//! Triplet-margin mining: keep the triplets whose margin falls in a window.

use dml_core::Real;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{DEFAULT_TUPLE_BUDGET, sorted_negatives};
use crate::distance::{Distance, Scores};
use crate::error::{Error, Result};
use crate::tuples::TripletIndices;

/// Which triplets a [`TripletMarginMiner`] keeps, by `m = farness(a, n) - farness(a, p)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TripletType {
    /// `m <= margin`.
    All,
    /// `m <= margin` and `m <= 0` (so `m = 0` counts as hard).
    Hard,
    /// `0 < m <= margin`.
    SemiHard,
    /// `m > margin`.
    Easy,
}

/// Keeps triplets by the gap between the anchor-negative and anchor-positive scores.
///
/// ```text
/// m(a, p, n) = d_an - d_ap          (distances)
///            = s_ap - s_an          (similarities)
/// all: m <= margin    hard: m <= min(margin, 0)    semihard: 0 < m <= margin    easy: m > margin
/// ```
///
/// Output is in lexicographic `(a, p, n)` order (PML note 11). Mining streams per anchor over
/// its negatives sorted by score: O(n^2 log n) time plus the output, which is capped by
/// `max_triplets` ([`Error::TupleBudgetExceeded`] before anything is allocated). A
/// [`crate::loss::TripletMarginLoss`] given this miner evaluates it inline without
/// materialising any triplet.
///
/// PML defaults (`TripletMarginMiner()`): `margin = 0.2`, `type_of_triplets = "all"`,
/// distance `Lp { power: One, normalize: true }`.
/// Reference: PML `miners/triplet_margin_miner.py`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TripletMarginMiner {
    distance: Distance,
    margin: f64,
    kind: TripletType,
    max_triplets: u64,
}

impl TripletMarginMiner {
    /// A miner; `margin` must be finite. The tuple budget defaults to
    /// [`DEFAULT_TUPLE_BUDGET`].
    pub fn new(distance: Distance, margin: f64, kind: TripletType) -> Result<Self> {
        crate::error::finite("TripletMarginMiner", "margin", margin)?;
        Ok(Self {
            distance,
            margin,
            kind,
            max_triplets: DEFAULT_TUPLE_BUDGET,
        })
    }

    /// Caps how many triplets [`TripletMarginMiner::mine`] may return.
    pub fn with_max_triplets(mut self, max_triplets: u64) -> Self {
        self.max_triplets = max_triplets;
        self
    }

    /// The distance pairs are scored with.
    pub fn distance(&self) -> Distance {
        self.distance
    }

    /// The miner's margin.
    pub fn margin(&self) -> f64 {
        self.margin
    }

    /// Which triplets are kept.
    pub fn kind(&self) -> TripletType {
        self.kind
    }

    /// The lower half of the window: false for small `m`, true from some point on.
    #[inline]
    pub(crate) fn above_lower<T: Real>(&self, m: T) -> bool {
        match self.kind {
            TripletType::All | TripletType::Hard => true,
            TripletType::SemiHard => m > T::zero(),
            TripletType::Easy => m > T::of(self.margin),
        }
    }

    /// The upper half of the window: true for small `m`, false from some point on.
    #[inline]
    pub(crate) fn below_upper<T: Real>(&self, m: T) -> bool {
        let margin = T::of(self.margin);
        match self.kind {
            TripletType::All | TripletType::SemiHard => m <= margin,
            TripletType::Hard => m <= margin && m <= T::zero(),
            TripletType::Easy => true,
        }
    }

    /// Whether a triplet with gap `m` is kept.
    #[inline]
    pub(crate) fn selects<T: Real>(&self, m: T) -> bool {
        self.above_lower(m) && self.below_upper(m)
    }

    /// The kept negatives of `(anchor, positive)` as a range of the anchor's negatives sorted
    /// by farness (`neg_farness`, ascending); `pos_farness` is the positive's farness.
    #[inline]
    pub(crate) fn window<T: Real>(&self, neg_farness: &[T], pos_farness: T) -> (usize, usize) {
        let lo = neg_farness.partition_point(|&u| !self.above_lower(u - pos_farness));
        let hi = neg_farness.partition_point(|&u| self.below_upper(u - pos_farness));
        (lo, hi.max(lo))
    }

    /// Mines the kept triplets of a self score matrix scored with [`Self::distance`].
    pub fn mine<T: Real>(&self, scores: &Scores<T>, labels: &[i64]) -> Result<TripletIndices> {
        let n = scores.rows();
        // Pass 1: count, so the budget is checked before anything large is allocated.
        let needed: u64 = (0..n)
            .into_par_iter()
            .map(|a| {
                let mut count = 0u64;
                self.visit_anchor(scores, labels, a, &mut |_, _| count += 1);
                count
            })
            .sum();
        if needed > self.max_triplets {
            return Err(Error::TupleBudgetExceeded {
                miner: "TripletMarginMiner",
                needed,
                budget: self.max_triplets,
            });
        }
        // Pass 2: emit per anchor, in (positive, negative) index order.
        let per_anchor: Vec<TripletIndices> = (0..n)
            .into_par_iter()
            .map(|a| {
                let mut out = TripletIndices::default();
                self.visit_anchor(scores, labels, a, &mut |p, ng| out.push(a, p, ng));
                out
            })
            .collect();
        let mut out = TripletIndices::default();
        for t in per_anchor {
            out.anchor.extend(t.anchor);
            out.positive.extend(t.positive);
            out.negative.extend(t.negative);
        }
        Ok(out)
    }

    /// Calls `emit(positive, negative)` for every kept triplet of `anchor`, in index order.
    /// With few positives each (positive, negative) pair is tested directly; otherwise each
    /// positive's window is cut from the anchor's sorted negatives.
    fn visit_anchor<T: Real>(
        &self,
        scores: &Scores<T>,
        labels: &[i64],
        a: usize,
        emit: &mut dyn FnMut(usize, usize),
    ) {
        let dist = scores.distance();
        let row = scores.row(a);
        let pos: Vec<usize> = positives(labels, a).collect();
        if pos.len() <= 16 {
            for &p in &pos {
                let up = dist.farness(row[p]);
                for (j, &s) in row.iter().enumerate() {
                    if labels[j] != labels[a] && self.selects(dist.farness(s) - up) {
                        emit(p, j);
                    }
                }
            }
            return;
        }
        let (negs, idx) = sorted_negatives(scores, labels, a);
        let mut window = Vec::new();
        for &p in &pos {
            let (lo, hi) = self.window(&negs, dist.farness(row[p]));
            window.clear();
            window.extend_from_slice(&idx[lo..hi]);
            window.sort_unstable();
            for &ng in &window {
                emit(p, ng as usize);
            }
        }
    }
}

/// The positives of `anchor` in index order.
pub(crate) fn positives(labels: &[i64], anchor: usize) -> impl Iterator<Item = usize> + '_ {
    labels
        .iter()
        .enumerate()
        .filter(move |&(j, &l)| j != anchor && l == labels[anchor])
        .map(|(j, _)| j)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::MatrixRef;

    /// The streaming miner agrees with filtering every triplet by the definition.
    #[test]
    fn matches_brute_force_filter() {
        let x: Vec<f64> = (0..120)
            .map(|k| ((k * 7919) % 23) as f64 / 7.0 - 1.5)
            .collect();
        // Class 0 has 20 members, so its anchors take the sorted path and the others the
        // direct one.
        let labels: Vec<i64> = (0..30)
            .map(|i| if i % 3 == 0 || i < 10 { 0 } else { i % 4 + 1 })
            .collect();
        let m = MatrixRef::new(&x, 30, 4).unwrap();
        for dist in [Distance::PML_LP_DEFAULT, Distance::Cosine] {
            let s = dist.scores(m, None);
            for kind in [
                TripletType::All,
                TripletType::Hard,
                TripletType::SemiHard,
                TripletType::Easy,
            ] {
                let miner = TripletMarginMiner::new(dist, 0.2, kind).unwrap();
                let got = miner.mine(&s, &labels).unwrap();
                let mut want = TripletIndices::default();
                for (a, p, n) in TripletIndices::all(&labels, 100_000).unwrap().iter() {
                    let gap = dist.farness(s.get(a, n)) - dist.farness(s.get(a, p));
                    if miner.selects(gap) {
                        want.push(a, p, n);
                    }
                }
                assert_eq!(got, want, "{dist:?} {kind:?}");
            }
        }
    }

    #[test]
    fn budget_is_enforced() {
        let x: Vec<f64> = (0..40).map(|k| k as f64).collect();
        let labels = [0, 1, 0, 1, 0, 1, 0, 1, 0, 1];
        let m = MatrixRef::new(&x, 10, 4).unwrap();
        let miner = TripletMarginMiner::new(Distance::PML_LP_DEFAULT, 10.0, TripletType::All)
            .unwrap()
            .with_max_triplets(3);
        let s = miner.distance().scores(m, None);
        assert!(matches!(
            miner.mine(&s, &labels),
            Err(Error::TupleBudgetExceeded {
                needed: 200,
                budget: 3,
                ..
            })
        ));
    }
}
