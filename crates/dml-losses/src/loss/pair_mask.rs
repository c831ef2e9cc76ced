//! Pair masks for matrix-based losses (PML's `mat_based_loss`): which entries of the score
//! matrix are positive pairs and which are negative pairs.
//!
//! Unlike pair-based losses, a duplicated tuple counts once here (PML builds a 0/1 mask).
//! Masks are evaluated per entry and never stored densely as floats: labels decide for "all
//! pairs", a bit matrix holds listed pairs, and a fused multi-similarity miner decides from
//! per-row thresholds. [`LabelMask`] serves the two label-structured cases a row at a time,
//! without a test per entry.

use dml_core::Real;
use rayon::prelude::*;

use super::Selection;
use crate::distance::{Distance, Scores};
use crate::error::{Error, Result};
use crate::miner::{Miner, MultiSimilarityCuts};
use crate::numeric::{exp_in_place, max, min, sum};
use crate::tuples::{PairIndices, Tuples};

/// A dense bit matrix (`rows x cols` bits).
#[derive(Debug, Clone)]
pub(crate) struct BitMatrix {
    cols: usize,
    words: Vec<u64>,
}

impl BitMatrix {
    fn new(rows: usize, cols: usize) -> Self {
        Self {
            cols,
            words: vec![0; (rows * cols).div_ceil(64)],
        }
    }

    fn set(&mut self, i: usize, j: usize) {
        let k = i * self.cols + j;
        self.words[k / 64] |= 1 << (k % 64);
    }

    #[inline]
    fn get(&self, i: usize, j: usize) -> bool {
        let k = i * self.cols + j;
        self.words[k / 64] & (1 << (k % 64)) != 0
    }
}

/// Which entries are positive and negative pairs.
#[derive(Debug, Clone)]
pub(crate) enum PairMask<'a, T> {
    /// Equal labels (off the diagonal) are positive, different labels negative.
    Labels(&'a [i64]),
    /// Listed pairs.
    Listed { pos: BitMatrix, neg: BitMatrix },
    /// A multi-similarity miner evaluated inline.
    MultiSimilarity {
        labels: &'a [i64],
        distance: Distance,
        cuts: MultiSimilarityCuts<T>,
    },
}

/// A mask with the lengths of the index lists it came from (for PML's quirk, note 6).
pub(crate) struct MaskedPairs<'a, T> {
    pub mask: PairMask<'a, T>,
    pub pos_len: u64,
    pub neg_len: u64,
}

impl<'a, T: Real> MaskedPairs<'a, T> {
    /// The mask of a selection on a self score matrix. `fuses` says whether the caller accepts
    /// a fused multi-similarity miner (it must have the loss's distance).
    pub fn new(
        selection: &Selection<'a>,
        labels: &'a [i64],
        scores: &Scores<T>,
        owner: &'static str,
    ) -> Result<Self> {
        let n = labels.len();
        match *selection {
            Selection::All => {
                let counts = crate::tuples::LabelCounts::new(labels);
                let pos_len: u64 = labels.iter().map(|&l| counts.count(l) as u64 - 1).sum();
                Ok(Self {
                    mask: PairMask::Labels(labels),
                    pos_len,
                    neg_len: (n as u64) * (n as u64) - pos_len - n as u64,
                })
            }
            Selection::Tuples(t) => {
                let owned;
                let p: &PairIndices = match t {
                    Tuples::Pairs(p) => p,
                    Tuples::Triplets(_) => {
                        owned = t.to_pairs();
                        &owned
                    }
                };
                let mut pos = BitMatrix::new(n, n);
                let mut neg = BitMatrix::new(n, n);
                p.pos_pairs().for_each(|(i, j)| pos.set(i, j));
                p.neg_pairs().for_each(|(i, j)| neg.set(i, j));
                Ok(Self {
                    mask: PairMask::Listed { pos, neg },
                    pos_len: p.num_pos() as u64,
                    neg_len: p.num_neg() as u64,
                })
            }
            Selection::Fused(Miner::MultiSimilarity(m)) if m.distance() == scores.distance() => {
                let cuts = m.cuts(scores, labels);
                let distance = scores.distance();
                let mask = PairMask::MultiSimilarity {
                    labels,
                    distance,
                    cuts,
                };
                let (pos_len, neg_len) = (0..n)
                    .into_par_iter()
                    .map(|i| {
                        scores
                            .row(i)
                            .iter()
                            .enumerate()
                            .fold((0u64, 0u64), |acc, (j, &s)| {
                                (
                                    acc.0 + mask.pos(i, j, s) as u64,
                                    acc.1 + mask.neg(i, j, s) as u64,
                                )
                            })
                    })
                    .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
                Ok(Self {
                    mask,
                    pos_len,
                    neg_len,
                })
            }
            Selection::Fused(m) => Err(Error::Case(format!("{owner} cannot fuse {}", m.name()))),
        }
    }

    /// PML's GenericPairLoss quirk (note 6): at most one entry in every index list means 0.
    pub fn quirk(&self) -> bool {
        self.pos_len <= 1 && self.neg_len <= 1
    }
}

impl<T: Real> PairMask<'_, T> {
    /// Whether `(i, j)` (score `s`) is a positive pair.
    #[inline(always)]
    pub fn pos(&self, i: usize, j: usize, s: T) -> bool {
        match self {
            PairMask::Labels(l) => l[i] == l[j] && i != j,
            PairMask::Listed { pos, .. } => pos.get(i, j),
            PairMask::MultiSimilarity {
                labels,
                distance,
                cuts,
            } => labels[i] == labels[j] && i != j && cuts.keeps_pos(*distance, i, s),
        }
    }

    /// Whether `(i, j)` (score `s`) is a negative pair.
    #[inline(always)]
    pub fn neg(&self, i: usize, j: usize, s: T) -> bool {
        match self {
            PairMask::Labels(l) => l[i] != l[j],
            PairMask::Listed { neg, .. } => neg.get(i, j),
            PairMask::MultiSimilarity {
                labels,
                distance,
                cuts,
            } => labels[i] != labels[j] && cuts.keeps_neg(*distance, i, s),
        }
    }
}

/// Whether a matrix-based loss with distance `distance` can fuse `miner`.
pub(crate) fn fuses_mask(distance: Distance, miner: &Miner) -> bool {
    matches!(miner, Miner::MultiSimilarity(m) if m.distance() == distance)
}

/// A selection whose pairs follow the labels: all pairs, or a fused
/// [`crate::miner::MultiSimilarityMiner`]. Row `i`'s positives are its classmates and its
/// negatives every other row, each kept by a threshold on the score, so a kernel sweeps the
/// negatives as one vectorised pass and handles the classmates (a handful of columns) on
/// their own. Same decisions as [`PairMask`] bit for bit.
#[derive(Debug, Clone)]
pub(crate) struct LabelMask {
    /// The rows of each class, ascending.
    members: Vec<Vec<usize>>,
    /// Each row's class.
    class_of: Vec<usize>,
    distance: Distance,
    /// The fused miner's slack; `None` for all pairs.
    epsilon: Option<f64>,
    /// Whether the batch has a positive and a negative pair (otherwise the miner keeps none).
    any: bool,
}

/// The kept negatives of one row, from [`LabelMask::exp_negatives`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct NegativeRow<T> {
    /// The exponents' largest value (at least the caller's floor); `-inf` when nothing is
    /// kept and the floor is `-inf`.
    pub shift: T,
    /// `sum e^(f - shift)` over the kept negatives.
    pub sum: T,
    /// How many negatives are kept.
    pub count: u64,
    /// The smallest farness of any negative (the miner's positive threshold).
    min_neg: T,
}

impl LabelMask {
    /// The label mask of a selection on scores with distance `distance`, or `None` when the
    /// selection lists its pairs (use [`MaskedPairs`]).
    pub fn new(selection: &Selection<'_>, labels: &[i64], distance: Distance) -> Option<Self> {
        let epsilon = match *selection {
            Selection::All => None,
            Selection::Fused(Miner::MultiSimilarity(m)) if m.distance() == distance => {
                Some(m.epsilon())
            }
            _ => return None,
        };
        Some(Self::by_labels(labels, distance, epsilon))
    }

    /// All pairs by label.
    pub fn all_pairs(labels: &[i64], distance: Distance) -> Self {
        Self::by_labels(labels, distance, None)
    }

    fn by_labels(labels: &[i64], distance: Distance, epsilon: Option<f64>) -> Self {
        let mut index = std::collections::HashMap::new();
        let mut members: Vec<Vec<usize>> = Vec::new();
        let class_of = labels
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                let c = *index.entry(l).or_insert_with(|| {
                    members.push(Vec::new());
                    members.len() - 1
                });
                members[c].push(i);
                c
            })
            .collect();
        let any = members.len() > 1 && members.iter().any(|m| m.len() > 1);
        Self {
            members,
            class_of,
            distance,
            epsilon,
            any,
        }
    }

    /// Every ordered pair of distinct classmates as `(anchors, positives)`, row-major (the
    /// order of `PairSet::to_lists`), in O(pairs).
    pub fn positive_pairs(&self) -> (Vec<u32>, Vec<u32>) {
        let (mut anchors, mut positives) = (Vec::new(), Vec::new());
        for i in 0..self.class_of.len() {
            for &j in self.classmates(i).iter().filter(|&&j| j != i) {
                anchors.push(i as u32);
                positives.push(j as u32);
            }
        }
        (anchors, positives)
    }

    /// The rows with row `i`'s label, `i` included, ascending.
    pub fn classmates(&self, i: usize) -> &[usize] {
        &self.members[self.class_of[i]]
    }

    /// Writes `e^(f(s_ij) - shift)` for every kept negative `j` of row `i` (scores `row`) into
    /// `out` and 0 elsewhere, with `shift` the largest `f` or `floor` if that is larger.
    ///
    /// `f` should be plain arithmetic on values it owns (a `move` closure): it runs on every
    /// entry inside the vectorised sweep.
    pub fn exp_negatives<T: Real>(
        &self,
        i: usize,
        row: &[T],
        f: impl Fn(T) -> T,
        floor: T,
        out: &mut [T],
    ) -> NegativeRow<T> {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { self.exp_negatives_avx2(i, row, f, floor, out) };
        }
        self.sweep_negatives(i, row, f, floor, out)
    }

    /// [`LabelMask::sweep_negatives`] compiled for AVX2 (8 lanes instead of SSE2's 4; no
    /// fused multiply-adds, so the same bits).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn exp_negatives_avx2<T: Real>(
        &self,
        i: usize,
        row: &[T],
        f: impl Fn(T) -> T,
        floor: T,
        out: &mut [T],
    ) -> NegativeRow<T> {
        self.sweep_negatives(i, row, f, floor, out)
    }

    /// The body of [`LabelMask::exp_negatives`].
    #[inline(always)]
    fn sweep_negatives<T: Real>(
        &self,
        i: usize,
        row: &[T],
        f: impl Fn(T) -> T,
        floor: T,
        out: &mut [T],
    ) -> NegativeRow<T> {
        // Farness, +inf on the classmates: they are then never below a cut nor the minimum.
        if self.distance.is_similarity() {
            out.iter_mut().zip(row).for_each(|(o, &s)| *o = -s);
        } else {
            out.copy_from_slice(row);
        }
        let mut max_pos = T::neg_infinity();
        for &j in self.classmates(i) {
            if j != i {
                max_pos = max_pos.max(out[j]);
            }
            out[j] = T::infinity();
        }
        let min_neg = min(out);
        // keep (i, j) if farness - eps < max_pos (the miner), or always (all pairs).
        let (eps, cut) = match self.epsilon {
            None => (T::zero(), T::infinity()),
            Some(e) if self.any => (T::of(e), max_pos),
            Some(e) => (T::of(e), T::neg_infinity()),
        };
        // Counted in its own pass (u32 lanes): a count inside the select loop keeps it scalar.
        let count = out.iter().fold(0u32, |c, &u| c + u32::from(u - eps < cut)) as u64;
        for (o, &s) in out.iter_mut().zip(row) {
            // `f` evaluated on every entry so that the choice is a vector select, not a branch.
            let v = f(s);
            *o = if *o - eps < cut { v } else { T::neg_infinity() };
        }
        let shift = max(out).max(floor);
        if shift == T::neg_infinity() {
            out.fill(T::zero());
            return NegativeRow {
                shift,
                sum: T::zero(),
                count,
                min_neg,
            };
        }
        out.iter_mut().for_each(|v| *v -= shift);
        exp_in_place(out);
        NegativeRow {
            shift,
            sum: sum(out),
            count,
            min_neg,
        }
    }

    /// Whether the positive pair `(i, j)` with score `s` is kept, given row `i`'s negatives.
    #[inline]
    pub fn keeps_positive<T: Real>(&self, negatives: &NegativeRow<T>, s: T) -> bool {
        match self.epsilon {
            None => true,
            Some(e) => self.any && self.distance.farness(s) + T::of(e) > negatives.min_neg,
        }
    }
}
