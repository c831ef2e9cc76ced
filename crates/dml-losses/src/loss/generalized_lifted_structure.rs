//! Generalized lifted structure loss (Hermans et al. 2017), PML's form.

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
        let dist = self.distance;
        let scores = dist.scores(x, None);
        let masked = MaskedPairs::new(&input.selection, input.labels, &scores, self.name())?;
        if masked.quirk() {
            return Ok(KernelOutput::zero(n, d, input.params));
        }
        let mask = &masked.mask;
        let (nm, pm) = (T::of(self.neg_margin), T::of(self.pos_margin));
        let slope = dist.margin_slope::<T>();
        // One pass per row with unscaled gradients, as in MultiSimilarityLoss.
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
                    if l > T::zero() && input.reducer.keeps(l) {
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
        Ok(KernelOutput {
            loss: red.value,
            grad: grads.x,
            param_grad: None,
            terms: if input.want_terms {
                vec![LossTerm {
                    name: "loss",
                    losses,
                    indices: TermIndices::PerElement((0..n as u32).collect()),
                }]
            } else {
                Vec::new()
            },
            stats: LossStats {
                active,
                total: n as u64,
            },
        })
    }
}
