//! Contrastive loss (Hadsell et al. 2006, in PML's un-squared form).

use dml_core::Real;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::pair_set::{generic_pair_quirk, pair_sets, reduce_all_pairs, selected_pairs};
use super::{KernelInput, KernelOutput, LossKernel, LossStats, LossTerm, TermIndices};
use crate::distance::Distance;
use crate::error::Result;
use crate::reducer::Reducer;
use crate::scratch::Scratch;

/// Contrastive loss: pull positive pairs inside `pos_margin`, push negatives past `neg_margin`.
///
/// ```text
/// pos_loss(a, p) = relu(margin(s_ap, pos_margin))      margin(x, y) = x - y  (distances)
/// neg_loss(a, n) = relu(margin(neg_margin, s_an))                   = y - x  (similarities)
/// L = reduce(pos_loss) + reduce(neg_loss)      each sub-loss reduced on its own
/// ```
///
/// Nothing is squared, unlike Hadsell et al.; `Lp { power: Two }` squares the distance, not
/// the hinge (PML note 9). With a similarity the margins flip meaning: typical values are
/// `pos_margin = 1, neg_margin = 0` for cosine.
///
/// # Shapes
/// embeddings `[n, d]`, labels `[n]`; pairs are all ordered positive / negative pairs or the
/// mined ones (a triplet `(a, p, n)` gives the pairs `(a, p)` and `(a, n)`).
///
/// # Degenerate batches
/// No positive (negative) pairs: that sub-loss is 0. Exactly one positive and one negative pair:
/// 0 (PML's GenericPairLoss quirk, note 6).
///
/// Margins in the wrong order (a negative margin that can never be active) are rejected.
///
/// PML defaults (`ContrastiveLoss()`): `pos_margin = 0`, `neg_margin = 1`, distance
/// `Lp { power: One, normalize: true }`, reducer `AvgNonZero`.
/// Reference: PML `losses/contrastive_loss.py`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ContrastiveLoss {
    distance: Distance,
    pos_margin: f64,
    neg_margin: f64,
}

impl ContrastiveLoss {
    /// A contrastive loss. Margins must be finite and in the order the distance makes
    /// meaningful: for distances `0 <= pos_margin <= neg_margin`, for similarities
    /// `pos_margin >= neg_margin` (positives should score higher than negatives).
    pub fn new(distance: Distance, pos_margin: f64, neg_margin: f64) -> Result<Self> {
        crate::error::finite("ContrastiveLoss", "pos_margin", pos_margin)?;
        crate::error::finite("ContrastiveLoss", "neg_margin", neg_margin)?;
        let reason = if distance.is_similarity() {
            (pos_margin < neg_margin)
                .then_some("with a similarity pos_margin must be >= neg_margin")
        } else if pos_margin < 0.0 {
            Some("with a distance pos_margin must be >= 0")
        } else {
            (pos_margin > neg_margin).then_some("with a distance neg_margin must be >= pos_margin")
        };
        if let Some(reason) = reason {
            return Err(crate::Error::InvalidParameter {
                owner: "ContrastiveLoss",
                param: if pos_margin < 0.0 && !distance.is_similarity() {
                    "pos_margin"
                } else {
                    "neg_margin"
                },
                value: if pos_margin < 0.0 && !distance.is_similarity() {
                    pos_margin
                } else {
                    neg_margin
                },
                reason,
            });
        }
        Ok(Self {
            distance,
            pos_margin,
            neg_margin,
        })
    }

    /// The distance the pairs are scored with.
    pub fn distance(&self) -> Distance {
        self.distance
    }
}

impl LossKernel for ContrastiveLoss {
    fn name(&self) -> &'static str {
        "ContrastiveLoss"
    }

    fn pml_default_reducer(&self) -> Reducer {
        Reducer::AvgNonZero
    }

    fn compute<T: Real>(&self, input: &KernelInput<'_, T>) -> Result<KernelOutput<T>> {
        let x = input.embeddings;
        let (n, d) = (x.rows(), x.cols());
        let tuples = selected_pairs(&input.selection, self.name())?;
        let (pos, neg) = pair_sets(input.labels, tuples.as_deref());
        if generic_pair_quirk(&pos, &neg) {
            return Ok(KernelOutput::zero(n, d, input.params));
        }
        let dist = self.distance;
        let (pm, nm) = (T::of(self.pos_margin), T::of(self.neg_margin));
        let slope = dist.margin_slope::<T>();
        let pos_f = move |s: T| {
            let v = dist.margin(s, pm);
            if v > T::zero() {
                (v, slope)
            } else {
                (T::zero(), T::zero())
            }
        };
        let neg_f = move |s: T| {
            let v = dist.margin(nm, s);
            if v > T::zero() {
                (v, -slope)
            } else {
                (T::zero(), T::zero())
            }
        };
        let scores = dist.scores(x, None);
        let (rp, rn, grad) = match tuples {
            None => {
                // Written in full by the sweep, or not at all when it lists the entries.
                let mut grad_s = Scratch::recycled(n * n);
                let all = reduce_all_pairs(
                    input.labels,
                    &scores,
                    input.reducer,
                    pos_f,
                    neg_f,
                    &mut grad_s,
                );
                let mut grad = match &all.entries {
                    Some(entries) => scores.backward_entries(entries).x,
                    None => scores.backward(&mut grad_s).x,
                };
                if all.factor != T::one() {
                    grad.par_iter_mut().for_each(|g| *g *= all.factor);
                }
                (all.pos, all.neg, grad)
            }
            Some(_) => {
                let mut grad_s = Scratch::zeroed(n * n);
                let rp = pos.reduce(&scores, input.reducer, pos_f, &mut grad_s);
                let rn = neg.reduce(&scores, input.reducer, neg_f, &mut grad_s);
                (rp, rn, scores.backward(&mut grad_s).x)
            }
        };
        let mut terms = Vec::new();
        if input.want_terms {
            let (a, p) = pos.to_lists();
            terms.push(LossTerm {
                name: "pos_loss",
                losses: pos.values(&scores, |s| pos_f(s).0),
                indices: TermIndices::PerPosPair {
                    anchor: a,
                    positive: p,
                },
            });
            let (a, ng) = neg.to_lists();
            terms.push(LossTerm {
                name: "neg_loss",
                losses: neg.values(&scores, |s| neg_f(s).0),
                indices: TermIndices::PerNegPair {
                    anchor: a,
                    negative: ng,
                },
            });
        }
        Ok(KernelOutput {
            loss: rp.value + rn.value,
            grad,
            param_grad: None,
            terms,
            stats: LossStats {
                active: rp.active + rn.active,
                total: rp.total + rn.total,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::testing::{assert_all_equals_listed, points};
    use crate::tuples::{PairIndices, Tuples};

    /// The row sweep over all pairs, in its listed form (few active negatives) and its dense
    /// form (many), equals the generic per-pair reduction of the same pairs listed.
    #[test]
    fn all_pairs_equal_the_same_pairs_listed() {
        let mut labels: Vec<i64> = (0..90).map(|i| i % 23).collect();
        labels.extend([100, 101, 102]);
        labels.extend(std::iter::repeat_n(7, 20));
        let n = labels.len();
        let x = points(n, 4, 5);
        let listed = Tuples::Pairs(PairIndices::all(&labels));
        let lp = Distance::PML_LP_DEFAULT;
        // Margin 0.1: a few negatives are active (entries listed); 1.6: most are (dense).
        for (dist, pm, nm) in [
            (lp, 0.0, 0.1),
            (lp, 0.05, 1.6),
            (Distance::Cosine, 0.9, 0.2),
        ] {
            let loss = ContrastiveLoss::new(dist, pm, nm).unwrap();
            for reducer in [Reducer::Mean, Reducer::AvgNonZero, Reducer::Sum] {
                let what = format!("{dist:?} {pm} {nm} {reducer:?}");
                assert_all_equals_listed(&loss, &x, 4, &labels, &listed, reducer, &what);
            }
        }
    }

    #[test]
    fn margins_in_a_meaningless_order_are_rejected() {
        let lp = Distance::PML_LP_DEFAULT;
        assert!(ContrastiveLoss::new(lp, 0.0, 1.0).is_ok());
        assert!(ContrastiveLoss::new(Distance::Cosine, 1.0, 0.0).is_ok());
        assert!(ContrastiveLoss::new(lp, -0.1, 1.0).is_err());
        assert!(ContrastiveLoss::new(lp, 1.0, 0.5).is_err());
        assert!(ContrastiveLoss::new(Distance::Cosine, 0.0, 1.0).is_err());
        assert!(ContrastiveLoss::new(lp, 0.0, f64::NAN).is_err());
    }
}
