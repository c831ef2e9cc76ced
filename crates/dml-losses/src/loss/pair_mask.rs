//! Pair masks for matrix-based losses (PML's `mat_based_loss`): which entries of the score
//! matrix are positive pairs and which are negative pairs.
//!
//! Unlike pair-based losses, a duplicated tuple counts once here (PML builds a 0/1 mask).
//! Masks are evaluated per entry and never stored densely as floats: labels decide for "all
//! pairs", a bit matrix holds listed pairs, and a fused multi-similarity miner decides from
//! per-row thresholds.

use dml_core::Real;
use rayon::prelude::*;

use super::Selection;
use crate::distance::{Distance, Scores};
use crate::error::{Error, Result};
use crate::miner::{Miner, MultiSimilarityCuts};
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
