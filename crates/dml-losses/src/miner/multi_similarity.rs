//! Multi-similarity mining (Wang et al. 2019).

use dml_core::Real;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::distance::{Distance, Scores};
use crate::error::Result;
use crate::tuples::PairIndices;

/// Keeps the positive pairs harder than the easiest negative and the negative pairs harder than
/// the easiest positive, each with a slack `epsilon`.
///
/// ```text
/// similarities:  keep (i, p) if s_ip - eps < max_n s_in      keep (i, n) if s_in + eps > min_p s_ip
/// distances:     keep (i, p) if d_ip + eps > min_n d_in      keep (i, n) if d_in - eps < max_p d_ip
/// ```
///
/// Both inequalities are strict; self pairs are excluded; a row without positives keeps no
/// negatives and vice versa; a batch without any positive (or negative) pair yields nothing.
/// Within a row the output follows ascending score (PML note 16). O(n^2) time; matrix-based
/// losses ([`crate::loss::MultiSimilarityLoss`] and others) evaluate it inline without listing
/// pairs.
///
/// PML defaults (`MultiSimilarityMiner()`): `epsilon = 0.1`, distance `Cosine`.
/// Reference: PML `miners/multi_similarity_miner.py`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MultiSimilarityMiner {
    distance: Distance,
    epsilon: f64,
}

/// Per-row thresholds of a [`MultiSimilarityMiner`] on one score matrix, in farness
/// (distance, or negated similarity) so one comparison serves both kinds of distance.
#[derive(Debug, Clone)]
pub(crate) struct MultiSimilarityCuts<T> {
    epsilon: T,
    /// Smallest farness of a negative of each row (+inf without negatives).
    min_neg: Vec<T>,
    /// Largest farness of a positive of each row (-inf without positives).
    max_pos: Vec<T>,
    /// Whether the batch has at least one positive and one negative pair.
    any: bool,
}

impl<T: Real> MultiSimilarityCuts<T> {
    /// Whether the positive pair `(i, p)` with score `s` is kept.
    #[inline(always)]
    pub fn keeps_pos(&self, dist: Distance, i: usize, s: T) -> bool {
        self.any && dist.farness(s) + self.epsilon > self.min_neg[i]
    }

    /// Whether the negative pair `(i, n)` with score `s` is kept.
    #[inline(always)]
    pub fn keeps_neg(&self, dist: Distance, i: usize, s: T) -> bool {
        self.any && dist.farness(s) - self.epsilon < self.max_pos[i]
    }
}

impl MultiSimilarityMiner {
    /// A miner with slack `epsilon` (finite).
    pub fn new(distance: Distance, epsilon: f64) -> Result<Self> {
        crate::error::finite("MultiSimilarityMiner", "epsilon", epsilon)?;
        Ok(Self { distance, epsilon })
    }

    /// The distance pairs are scored with.
    pub fn distance(&self) -> Distance {
        self.distance
    }

    /// The slack.
    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }

    /// The per-row thresholds on a self score matrix.
    pub(crate) fn cuts<T: Real>(
        &self,
        scores: &Scores<T>,
        labels: &[i64],
    ) -> MultiSimilarityCuts<T> {
        let dist = scores.distance();
        let (min_neg, max_pos): (Vec<T>, Vec<T>) = (0..scores.rows())
            .into_par_iter()
            .map(|i| {
                let mut min_neg = T::infinity();
                let mut max_pos = T::neg_infinity();
                for (j, &s) in scores.row(i).iter().enumerate() {
                    let u = dist.farness(s);
                    if labels[j] != labels[i] {
                        min_neg = min_neg.min(u);
                    } else if j != i {
                        max_pos = max_pos.max(u);
                    }
                }
                (min_neg, max_pos)
            })
            .unzip();
        let any = min_neg.iter().any(|v| v.is_finite()) && max_pos.iter().any(|v| v.is_finite());
        MultiSimilarityCuts {
            epsilon: T::of(self.epsilon),
            min_neg,
            max_pos,
            any,
        }
    }

    /// Mines the kept pairs of a self score matrix scored with [`Self::distance`].
    pub fn mine<T: Real>(&self, scores: &Scores<T>, labels: &[i64]) -> PairIndices {
        let dist = scores.distance();
        let cuts = self.cuts(scores, labels);
        let rows: Vec<(Vec<u32>, Vec<u32>)> = (0..scores.rows())
            .into_par_iter()
            .map(|i| {
                let row = scores.row(i);
                let mut pos: Vec<(T, u32)> = Vec::new();
                let mut neg: Vec<(T, u32)> = Vec::new();
                for (j, &s) in row.iter().enumerate() {
                    if labels[j] != labels[i] {
                        if cuts.keeps_neg(dist, i, s) {
                            neg.push((s, j as u32));
                        }
                    } else if j != i && cuts.keeps_pos(dist, i, s) {
                        pos.push((s, j as u32));
                    }
                }
                let by_score = |a: &(T, u32), b: &(T, u32)| {
                    a.0.partial_cmp(&b.0)
                        .unwrap_or(std::cmp::Ordering::Equal)
                        .then(a.1.cmp(&b.1))
                };
                pos.sort_unstable_by(by_score);
                neg.sort_unstable_by(by_score);
                (
                    pos.into_iter().map(|(_, j)| j).collect(),
                    neg.into_iter().map(|(_, j)| j).collect(),
                )
            })
            .collect();
        let mut out = PairIndices::default();
        for (i, (pos, neg)) in rows.into_iter().enumerate() {
            out.anchor_pos
                .extend(std::iter::repeat_n(i as u32, pos.len()));
            out.positive.extend(pos);
            out.anchor_neg
                .extend(std::iter::repeat_n(i as u32, neg.len()));
            out.negative.extend(neg);
        }
        out
    }
}
