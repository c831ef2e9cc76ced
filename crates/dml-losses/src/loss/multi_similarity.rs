//! Multi-similarity loss (Wang et al. 2019), PML's form.

use dml_core::Real;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::pair_mask::{LabelMask, MaskedPairs, fuses_mask};
use super::{KernelInput, KernelOutput, LossKernel};
use crate::distance::{Distance, Scores};
use crate::error::Result;
use crate::miner::Miner;
use crate::numeric::ExpTerms;
use crate::reducer::Reducer;
use crate::scratch::Scratch;

/// Multi-similarity loss.
///
/// ```text
/// L_i = 1/alpha * log(1 + sum_{p in P_i} exp(alpha * margin(s_ip, base)))
///     + 1/beta  * log(1 + sum_{n in N_i} exp(beta  * margin(base, s_in)))
/// margin(x, y) = y - x for similarities (so -alpha (s_ip - base), beta (s_in - base)),
///                x - y for distances    (so  alpha (d_ip - base), beta (base - d_in))
/// L = reduce(L_i over all n rows)
/// ```
///
/// An empty `P_i` or `N_i` makes its term 0, and the mean runs over **all** rows (PML note 15;
/// the original MS code skips rows lacking either set). Pairs are all pairs, the listed ones
/// (duplicates collapse: a 0/1 mask) or a fused [`crate::miner::MultiSimilarityMiner`] with
/// the same distance, evaluated without listing pairs. O(n^2).
///
/// # Degenerate batches
/// One class: only the positive terms. All labels distinct: only the negative terms (non-zero).
/// Exactly one positive and one negative pair: 0 (PML note 6).
///
/// PML defaults (`MultiSimilarityLoss()`): `alpha = 2`, `beta = 50`, `base = 0.5`, distance
/// `Cosine`, reducer `Mean`. Reference: PML `losses/multi_similarity_loss.py`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MultiSimilarityLoss {
    distance: Distance,
    alpha: f64,
    beta: f64,
    base: f64,
}

impl MultiSimilarityLoss {
    /// A multi-similarity loss; `alpha` and `beta` must be > 0, `base` finite.
    pub fn new(distance: Distance, alpha: f64, beta: f64, base: f64) -> Result<Self> {
        crate::error::positive("MultiSimilarityLoss", "alpha", alpha)?;
        crate::error::positive("MultiSimilarityLoss", "beta", beta)?;
        crate::error::finite("MultiSimilarityLoss", "base", base)?;
        Ok(Self {
            distance,
            alpha,
            beta,
            base,
        })
    }
}

impl LossKernel for MultiSimilarityLoss {
    fn name(&self) -> &'static str {
        "MultiSimilarityLoss"
    }

    fn pml_default_reducer(&self) -> Reducer {
        Reducer::Mean
    }

    fn fuses(&self, miner: &Miner) -> bool {
        fuses_mask(self.distance, miner)
    }

    fn compute<T: Real>(&self, input: &KernelInput<'_, T>) -> Result<KernelOutput<T>> {
        let x = input.embeddings;
        let (n, d) = (x.rows(), x.cols());
        let scores = self.distance.scores(x, None);
        let mut grad_s = Scratch::zeroed(n * n);
        let rows = match LabelMask::new(&input.selection, input.labels, self.distance) {
            Some(mask) => self.label_rows(&scores, &mask, input.reducer, &mut grad_s),
            None => {
                let masked =
                    MaskedPairs::new(&input.selection, input.labels, &scores, self.name())?;
                self.masked_rows(&scores, &masked, input.reducer, &mut grad_s)
            }
        };
        if rows.quirk() {
            return Ok(KernelOutput::zero(n, d, input.params));
        }
        Ok(KernelOutput::scaled_rows(
            input,
            &scores,
            &mut grad_s,
            rows.losses,
        ))
    }
}

/// Per-row losses, with the counts of the pairs they used (for PML's quirk, note 6).
struct RowLosses<T> {
    losses: Vec<T>,
    pos_len: u64,
    neg_len: u64,
}

impl<T> RowLosses<T> {
    fn quirk(&self) -> bool {
        self.pos_len <= 1 && self.neg_len <= 1
    }
}

impl MultiSimilarityLoss {
    /// All pairs or the fused miner: one sweep per row over its negatives (one exponential
    /// each, kept in the row of `grad_s` and rescaled into the gradient), the classmates on
    /// their own. Rows run in parallel; each writes its own row of `grad_s`, **without** the
    /// reducer's weight.
    fn label_rows<T: Real>(
        &self,
        scores: &Scores<T>,
        mask: &LabelMask,
        reducer: Reducer,
        grad_s: &mut [T],
    ) -> RowLosses<T> {
        let n = scores.rows();
        let dist = self.distance;
        let (alpha, beta, base) = (T::of(self.alpha), T::of(self.beta), T::of(self.base));
        let slope = dist.margin_slope::<T>();
        // margin(base, s) = sign (s - base), exactly (negation does not round).
        let sign = -slope;
        let rows: Vec<(T, u64, u64)> = grad_s
            .par_chunks_mut(n)
            .enumerate()
            .map_init(ExpTerms::default, |pos, (i, g)| {
                let row = scores.row(i);
                let neg =
                    mask.exp_negatives(i, row, move |s| beta * (sign * (s - base)), T::zero(), g);
                // log(1 + sum e^v) = shift + log(e^-shift + sum e^(v - shift)), shift >= 0.
                let neg_total = (-neg.shift).exp() + neg.sum;
                let neg_loss = neg.shift + neg_total.ln();
                pos.clear();
                for &j in mask.classmates(i) {
                    if j != i && mask.keeps_positive(&neg, row[j]) {
                        pos.push(j, alpha * dist.margin(row[j], base));
                    }
                }
                let pos_len = pos.len() as u64;
                let l = pos.log_sum(true) / alpha + neg_loss / beta;
                if reducer.keeps(l) {
                    let c = -slope / neg_total;
                    g.iter_mut().for_each(|v| *v *= c);
                    pos.weights().for_each(|(j, w)| g[j] += slope * w);
                } else {
                    g.fill(T::zero());
                }
                (l, pos_len, neg.count)
            })
            .collect();
        RowLosses {
            losses: rows.iter().map(|r| r.0).collect(),
            pos_len: rows.iter().map(|r| r.1).sum(),
            neg_len: rows.iter().map(|r| r.2).sum(),
        }
    }

    /// Listed pairs: the mask tested entry by entry.
    fn masked_rows<T: Real>(
        &self,
        scores: &Scores<T>,
        masked: &MaskedPairs<'_, T>,
        reducer: Reducer,
        grad_s: &mut [T],
    ) -> RowLosses<T> {
        let n = scores.rows();
        let dist = self.distance;
        let mask = &masked.mask;
        let (alpha, beta, base) = (T::of(self.alpha), T::of(self.beta), T::of(self.base));
        let slope = dist.margin_slope::<T>();
        let losses = grad_s
            .par_chunks_mut(n)
            .enumerate()
            .map_init(
                || (ExpTerms::default(), ExpTerms::default()),
                |(pos, neg), (i, g)| {
                    pos.clear();
                    neg.clear();
                    for (j, &s) in scores.row(i).iter().enumerate() {
                        if mask.pos(i, j, s) {
                            pos.push(j, alpha * dist.margin(s, base));
                        }
                        if mask.neg(i, j, s) {
                            neg.push(j, beta * dist.margin(base, s));
                        }
                    }
                    let l = pos.log_sum(true) / alpha + neg.log_sum(true) / beta;
                    if reducer.keeps(l) {
                        pos.weights().for_each(|(j, w)| g[j] += slope * w);
                        neg.weights().for_each(|(j, w)| g[j] -= slope * w);
                    }
                    l
                },
            )
            .collect();
        RowLosses {
            losses,
            pos_len: masked.pos_len,
            neg_len: masked.neg_len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::Selection;
    use crate::loss::testing::{
        assert_all_equals_listed, assert_same, bits_on_threads, input, points,
    };
    use crate::matrix::MatrixRef;
    use crate::miner::MultiSimilarityMiner;
    use crate::tuples::Tuples;

    #[test]
    fn fused_miner_equals_its_listed_pairs() {
        let labels = [0, 1, 0, 2, 1, 0, 2, 1, 1, 0, 3, 2];
        let x = points(12, 4, 9);
        for dist in [Distance::Cosine, Distance::PML_LP_DEFAULT] {
            let loss = MultiSimilarityLoss::new(dist, 2.0, 40.0, 0.5).unwrap();
            let m = MultiSimilarityMiner::new(dist, 0.3).unwrap();
            let scores = dist.scores(MatrixRef::new(&x, 12, 4).unwrap(), None);
            let mined = Tuples::Pairs(m.mine(&scores, &labels));
            let miner = Miner::MultiSimilarity(m);
            for reducer in [Reducer::Mean, Reducer::AvgNonZero, Reducer::Sum] {
                let want = loss
                    .compute(&input(&x, 4, &labels, Selection::Tuples(&mined), reducer))
                    .unwrap();
                let got = loss
                    .compute(&input(&x, 4, &labels, Selection::Fused(&miner), reducer))
                    .unwrap();
                assert_same(&got, &want, &format!("{dist:?} {reducer:?}"));
            }
        }
    }

    /// The row sweep over all pairs equals the mask tested entry by entry on the same pairs
    /// listed, for both kinds of distance, with singletons and a large class.
    #[test]
    fn all_pairs_equal_the_same_pairs_listed() {
        let mut labels = vec![0, 1, 0, 2, 1, 0, 2, 1, 3, 0, 4];
        labels.extend(std::iter::repeat_n(5, 12));
        let n = labels.len();
        let x = points(n, 4, 3);
        let listed = Tuples::Pairs(crate::tuples::PairIndices::all(&labels));
        for dist in [Distance::Cosine, Distance::PML_LP_DEFAULT] {
            let loss = MultiSimilarityLoss::new(dist, 2.0, 10.0, 0.5).unwrap();
            for reducer in [Reducer::Mean, Reducer::AvgNonZero, Reducer::Sum] {
                let what = format!("{dist:?} {reducer:?}");
                assert_all_equals_listed(&loss, &x, 4, &labels, &listed, reducer, &what);
            }
        }
    }

    /// Rows run in parallel, but each row's sums have a fixed order.
    #[test]
    fn results_do_not_depend_on_the_threads() {
        let n = 200;
        let labels: Vec<i64> = (0..n as i64).map(|i| (i * 7) % 50).collect();
        let x: Vec<f32> = points(n, 8, 21).iter().map(|&v| v as f32).collect();
        let loss = MultiSimilarityLoss::new(Distance::Cosine, 2.0, 50.0, 0.5).unwrap();
        let miner =
            Miner::MultiSimilarity(MultiSimilarityMiner::new(Distance::Cosine, 0.1).unwrap());
        let run =
            |threads: usize| bits_on_threads(&loss, &x, &labels, Selection::Fused(&miner), threads);
        let once = run(2);
        assert_eq!(run(2), once);
        assert_eq!(run(1), once);
    }

    /// The row formula with plain loops.
    #[test]
    fn matches_the_formula() {
        let labels = [0, 0, 1, 1, 1, 2];
        let x = points(6, 3, 4);
        let loss = MultiSimilarityLoss::new(Distance::Cosine, 2.0, 50.0, 0.5).unwrap();
        let got = loss
            .compute(&input(&x, 3, &labels, Selection::All, Reducer::Mean))
            .unwrap();
        let s = Distance::Cosine.scores(MatrixRef::new(&x, 6, 3).unwrap(), None);
        let mut want = 0.0;
        for i in 0..6 {
            let (mut p, mut q) = (0.0, 0.0);
            for j in 0..6 {
                if labels[j] == labels[i] && j != i {
                    p += (-2.0 * (s.get(i, j) - 0.5f64)).exp();
                } else if labels[j] != labels[i] {
                    q += (50.0 * (s.get(i, j) - 0.5f64)).exp();
                }
            }
            want += (1.0f64 + p).ln() / 2.0 + (1.0f64 + q).ln() / 50.0;
        }
        assert!((got.loss - want / 6.0).abs() < 1e-12);
    }
}
