//! Generalized lifted structure loss (Hermans et al. 2017), PML's form.

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
        let lse_or_zero = |l: &LogSumExp<T>| if l.is_empty() { T::zero() } else { l.value() };
        let rows: Vec<(T, T, T)> = (0..n)
            .into_par_iter()
            .map(|i| {
                let (mut pos, mut neg) = (LogSumExp::default(), LogSumExp::default());
                for (j, &s) in scores.row(i).iter().enumerate() {
                    if mask.pos(i, j, s) {
                        pos.add(dist.margin(s, pm));
                    }
                    if mask.neg(i, j, s) {
                        neg.add(dist.margin(nm, s));
                    }
                }
                let (lp, ln) = (lse_or_zero(&pos), lse_or_zero(&neg));
                ((lp + ln).max(T::zero()), lp, ln)
            })
            .collect();
        let losses: Vec<T> = rows.iter().map(|r| r.0).collect();
        let red = input.reducer.reduce(&losses, None);
        let slope = dist.margin_slope::<T>();
        let mut grad_s = vec![T::zero(); n * n];
        grad_s.par_chunks_mut(n).enumerate().for_each(|(i, g)| {
            let (l, lp, ln) = rows[i];
            let w = input.reducer.weight(&red, l);
            if w == T::zero() || l == T::zero() {
                return;
            }
            for (j, &s) in scores.row(i).iter().enumerate() {
                if mask.pos(i, j, s) {
                    g[j] += w * slope * (dist.margin(s, pm) - lp).exp();
                }
                if mask.neg(i, j, s) {
                    g[j] -= w * slope * (dist.margin(nm, s) - ln).exp();
                }
            }
        });
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
