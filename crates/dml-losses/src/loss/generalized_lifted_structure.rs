//! Generalized lifted structure loss (Hermans et al. 2017), PML's form.

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

/// Generalized lifted structure loss, one term per row.
///
/// ```text
/// L_i = relu( log sum_{p in P_i} exp(margin(s_ip, pos_margin))
///           + log sum_{n in N_i} exp(margin(neg_margin, s_in)) )
/// L = reduce(L_i over all n rows)
/// ```
///
/// There is no "+1" inside the logs, an empty set contributes 0, and the mean runs over all rows
/// (PML note 18). Pairs are all pairs, listed ones (a 0/1 mask) or a fused
/// [`crate::miner::MultiSimilarityMiner`]. O(n^2).
///
/// # Degenerate batches
/// Exactly one positive and one negative pair: 0 (note 6).
///
/// PML defaults (`GeneralizedLiftedStructureLoss()`): `neg_margin = 1`, `pos_margin = 0`,
/// distance `Lp { power: One, normalize: true }`, reducer `Mean`.
/// Reference: PML `losses/lifted_structure_loss.py`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GeneralizedLiftedStructureLoss {
    distance: Distance,
    neg_margin: f64,
    pos_margin: f64,
}

impl GeneralizedLiftedStructureLoss {
    /// A generalized lifted structure loss; margins must be finite.
    pub fn new(distance: Distance, neg_margin: f64, pos_margin: f64) -> Result<Self> {
        crate::error::finite("GeneralizedLiftedStructureLoss", "neg_margin", neg_margin)?;
        crate::error::finite("GeneralizedLiftedStructureLoss", "pos_margin", pos_margin)?;
        Ok(Self {
            distance,
            neg_margin,
            pos_margin,
        })
    }
}

impl LossKernel for GeneralizedLiftedStructureLoss {
    fn name(&self) -> &'static str {
        "GeneralizedLiftedStructureLoss"
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
        let (losses, pos_len, neg_len) =
            match LabelMask::new(&input.selection, input.labels, self.distance) {
                Some(mask) => self.label_rows(&scores, &mask, input.reducer, &mut grad_s),
                None => {
                    let masked =
                        MaskedPairs::new(&input.selection, input.labels, &scores, self.name())?;
                    let losses = self.masked_rows(&scores, &masked, input.reducer, &mut grad_s);
                    (losses, masked.pos_len, masked.neg_len)
                }
            };
        // PML's quirk (note 6).
        if pos_len <= 1 && neg_len <= 1 {
            return Ok(KernelOutput::zero(n, d, input.params));
        }
        Ok(KernelOutput::scaled_rows(
            input,
            &scores,
            &mut grad_s,
            losses,
        ))
    }
}

impl GeneralizedLiftedStructureLoss {
    /// All pairs or the fused miner, a row at a time as in `MultiSimilarityLoss`: returns the
    /// losses and the numbers of positive and negative pairs used; `grad_s` gets the gradient
    /// without the reducer's weight.
    fn label_rows<T: Real>(
        &self,
        scores: &Scores<T>,
        mask: &LabelMask,
        reducer: Reducer,
        grad_s: &mut [T],
    ) -> (Vec<T>, u64, u64) {
        let n = scores.rows();
        let dist = self.distance;
        let (nm, pm) = (T::of(self.neg_margin), T::of(self.pos_margin));
        let slope = dist.margin_slope::<T>();
        // margin(nm, s) = sign (s - nm), exactly.
        let sign = -slope;
        let rows: Vec<(T, u64, u64)> = grad_s
            .par_chunks_mut(n)
            .enumerate()
            .map_init(ExpTerms::default, |pos, (i, g)| {
                let row = scores.row(i);
                let neg =
                    mask.exp_negatives(i, row, move |s| sign * (s - nm), T::neg_infinity(), g);
                pos.clear();
                for &j in mask.classmates(i) {
                    if j != i && mask.keeps_positive(&neg, row[j]) {
                        pos.push(j, dist.margin(row[j], pm));
                    }
                }
                // An empty set contributes 0 (PML masks it).
                let lp = if pos.is_empty() {
                    T::zero()
                } else {
                    pos.log_sum(false)
                };
                let ln = if neg.count == 0 {
                    T::zero()
                } else {
                    neg.shift + neg.sum.ln()
                };
                let l = (lp + ln).max(T::zero());
                if l > T::zero() && reducer.keeps(l) {
                    let c = -slope / neg.sum;
                    if neg.count > 0 {
                        g.iter_mut().for_each(|v| *v *= c);
                    }
                    pos.weights().for_each(|(j, w)| g[j] += slope * w);
                } else {
                    g.fill(T::zero());
                }
                (l, pos.len() as u64, neg.count)
            })
            .collect();
        (
            rows.iter().map(|r| r.0).collect(),
            rows.iter().map(|r| r.1).sum(),
            rows.iter().map(|r| r.2).sum(),
        )
    }

    /// Listed pairs: the mask tested entry by entry.
    fn masked_rows<T: Real>(
        &self,
        scores: &Scores<T>,
        masked: &MaskedPairs<'_, T>,
        reducer: Reducer,
        grad_s: &mut [T],
    ) -> Vec<T> {
        let n = scores.rows();
        let dist = self.distance;
        let mask = &masked.mask;
        let (nm, pm) = (T::of(self.neg_margin), T::of(self.pos_margin));
        let slope = dist.margin_slope::<T>();
        grad_s
            .par_chunks_mut(n)
            .enumerate()
            .map_init(
                || (ExpTerms::default(), ExpTerms::default()),
                |(pos, neg), (i, g)| {
                    pos.clear();
                    neg.clear();
                    for (j, &s) in scores.row(i).iter().enumerate() {
                        if mask.pos(i, j, s) {
                            pos.push(j, dist.margin(s, pm));
                        }
                        if mask.neg(i, j, s) {
                            neg.push(j, dist.margin(nm, s));
                        }
                    }
                    // An empty set contributes 0 (PML masks it).
                    let lp = if pos.is_empty() {
                        T::zero()
                    } else {
                        pos.log_sum(false)
                    };
                    let ln = if neg.is_empty() {
                        T::zero()
                    } else {
                        neg.log_sum(false)
                    };
                    let l = (lp + ln).max(T::zero());
                    if l > T::zero() && reducer.keeps(l) {
                        pos.weights().for_each(|(j, w)| g[j] += slope * w);
                        neg.weights().for_each(|(j, w)| g[j] -= slope * w);
                    }
                    l
                },
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::Selection;
    use crate::loss::testing::{assert_same, input, points};
    use crate::miner::MultiSimilarityMiner;
    use crate::tuples::{PairIndices, Tuples};

    /// The row sweep (all pairs, fused miner) equals the mask tested entry by entry on the
    /// same pairs listed.
    #[test]
    fn label_rows_equal_the_same_pairs_listed() {
        let mut labels = vec![0, 1, 0, 2, 1, 0, 2, 1, 3, 0, 4];
        labels.extend(std::iter::repeat_n(5, 9));
        let n = labels.len();
        let x = points(n, 4, 8);
        for dist in [Distance::Cosine, Distance::PML_LP_DEFAULT] {
            let loss = GeneralizedLiftedStructureLoss::new(dist, 1.0, 0.0).unwrap();
            let m = MultiSimilarityMiner::new(dist, 0.1).unwrap();
            let scores = dist.scores(crate::matrix::MatrixRef::new(&x, n, 4).unwrap(), None);
            let mined = Tuples::Pairs(m.mine(&scores, &labels));
            let all = Tuples::Pairs(PairIndices::all(&labels));
            let miner = Miner::MultiSimilarity(m);
            for reducer in [Reducer::Mean, Reducer::AvgNonZero] {
                for (fast, listed) in [(Selection::All, &all), (Selection::Fused(&miner), &mined)] {
                    let want = loss
                        .compute(&input(&x, 4, &labels, Selection::Tuples(listed), reducer))
                        .unwrap();
                    let got = loss.compute(&input(&x, 4, &labels, fast, reducer)).unwrap();
                    assert_same(&got, &want, &format!("{dist:?} {reducer:?}"));
                }
            }
        }
    }
}
