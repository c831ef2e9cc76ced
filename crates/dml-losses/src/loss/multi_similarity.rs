//! Multi-similarity loss (Wang et al. 2019), PML's form.

use dml_core::Real;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::pair_mask::{MaskedPairs, fuses_mask};
use super::{KernelInput, KernelOutput, LossKernel, LossStats, LossTerm, TermIndices};
use crate::distance::Distance;
use crate::error::Result;
use crate::miner::Miner;
use crate::numeric::ExpTerms;
use crate::reducer::Reducer;

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
        let dist = self.distance;
        let scores = dist.scores(x, None);
        let masked = MaskedPairs::new(&input.selection, input.labels, &scores, self.name())?;
        if masked.quirk() {
            return Ok(KernelOutput::zero(n, d, input.params));
        }
        let mask = &masked.mask;
        let (alpha, beta, base) = (T::of(self.alpha), T::of(self.beta), T::of(self.base));
        let slope = dist.margin_slope::<T>();
        // One pass per row: the loss, and (if the reducer keeps it) its unscaled gradient;
        // every kept row has the same reducer weight, applied at the end.
        let mut grad_s = vec![T::zero(); n * n];
        let losses: Vec<T> = grad_s
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
                    if input.reducer.keeps(l) {
                        pos.weights().for_each(|(j, w)| g[j] += slope * w);
                        neg.weights().for_each(|(j, w)| g[j] -= slope * w);
                    }
                    l
                },
            )
            .collect();
        let red = input.reducer.reduce(&losses, None);
        grad_s.par_iter_mut().for_each(|v| *v *= red.scale);
        let grads = scores.backward(&mut grad_s);
        let active = losses.iter().filter(|&&l| l != T::zero()).count() as u64;
        let terms = if input.want_terms {
            vec![LossTerm {
                name: "loss",
                losses,
                indices: TermIndices::PerElement((0..n as u32).collect()),
            }]
        } else {
            Vec::new()
        };
        Ok(KernelOutput {
            loss: red.value,
            grad: grads.x,
            param_grad: None,
            terms,
            stats: LossStats {
                active,
                total: n as u64,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::Selection;
    use crate::loss::testing::{assert_same, input, points};
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
