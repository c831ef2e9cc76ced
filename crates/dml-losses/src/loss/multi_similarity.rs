//! Multi-similarity loss (Wang et al. 2019), PML's form.

use dml_core::Real;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::pair_mask::{MaskedPairs, fuses_mask};
use super::{KernelInput, KernelOutput, LossKernel, LossStats, LossTerm, TermIndices};
use crate::distance::Distance;
use crate::error::Result;
use crate::miner::Miner;
use crate::numeric::LogSumExp;
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
        // Per row: (loss, log(1 + sum) of the positive and of the negative exponentials).
        let rows: Vec<(T, T, T)> = (0..n)
            .into_par_iter()
            .map(|i| {
                let (mut pos, mut neg) = (LogSumExp::default(), LogSumExp::default());
                for (j, &s) in scores.row(i).iter().enumerate() {
                    if mask.pos(i, j, s) {
                        pos.add(alpha * dist.margin(s, base));
                    }
                    if mask.neg(i, j, s) {
                        neg.add(beta * dist.margin(base, s));
                    }
                }
                let (lp, ln) = (pos.value_plus_one(), neg.value_plus_one());
                (lp / alpha + ln / beta, lp, ln)
            })
            .collect();
        let losses: Vec<T> = rows.iter().map(|r| r.0).collect();
        let red = input.reducer.reduce(&losses, None);
        let slope = dist.margin_slope::<T>();
        let mut grad_s = vec![T::zero(); n * n];
        grad_s.par_chunks_mut(n).enumerate().for_each(|(i, g)| {
            let (l, lp, ln) = rows[i];
            let w = input.reducer.weight(&red, l);
            if w == T::zero() {
                return;
            }
            for (j, &s) in scores.row(i).iter().enumerate() {
                if mask.pos(i, j, s) {
                    g[j] += w * slope * (alpha * dist.margin(s, base) - lp).exp();
                }
                if mask.neg(i, j, s) {
                    g[j] -= w * slope * (beta * dist.margin(base, s) - ln).exp();
                }
            }
        });
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
