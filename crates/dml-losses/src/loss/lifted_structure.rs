//! Lifted structured loss (Oh Song et al. 2016), PML's form, without PML's
//! (positive pairs x negative pairs) matrix.

use dml_core::Real;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::pair_mask::LabelMask;
use super::pair_set::{PairSet, generic_pair_quirk, pair_sets, selected_pairs};
use super::{KernelInput, KernelOutput, LossKernel, LossStats, LossTerm, TermIndices};
use crate::distance::{Distance, Scores};
use crate::error::Result;
use crate::numeric::LogSumExp;
use crate::reducer::Reducer;
use crate::scratch::Scratch;

/// Lifted structured loss over positive pairs.
///
/// ```text
/// for each ordered positive pair (i, j):
///   J = log sum_{negative pairs (k, l), k in {i, j}} exp(margin(neg_margin, s_kl)) + margin(s_ij, pos_margin)
///   L(i, j) = relu(J)^2 / 2
/// L = reduce(L(i, j))          (Mean: the paper's 1/(2|P|) sum over unordered pairs)
/// ```
///
/// The log-sum-exp over the union of two anchors' negatives is the log-add-exp of two
/// per-anchor log-sum-exps, so this runs in O(n^2) time and memory; PML builds a dense
/// (positive pairs x negative pairs) matrix (12.8 GB at n = 1024, note 17). Listed negative
/// pairs count once per copy.
///
/// # Degenerate batches
/// No positive or no negative pair, or one of each: 0. A positive pair whose anchors have no
/// negative pair: `relu(margin(s_ij, pos_margin))^2 / 2`.
///
/// PML defaults (`LiftedStructureLoss()`): `neg_margin = 1`, `pos_margin = 0`, distance
/// `Lp { power: One, normalize: true }`, reducer `Mean`.
/// Reference: PML `losses/lifted_structure_loss.py`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LiftedStructureLoss {
    distance: Distance,
    neg_margin: f64,
    pos_margin: f64,
}

impl LiftedStructureLoss {
    /// A lifted structured loss; margins must be finite.
    pub fn new(distance: Distance, neg_margin: f64, pos_margin: f64) -> Result<Self> {
        crate::error::finite("LiftedStructureLoss", "neg_margin", neg_margin)?;
        crate::error::finite("LiftedStructureLoss", "pos_margin", pos_margin)?;
        Ok(Self {
            distance,
            neg_margin,
            pos_margin,
        })
    }
}

/// Per-anchor log-sum-exp of `f(score)` over listed negative pairs (`-inf` without any).
fn listed_anchor_lse<T: Real>(
    (anchor, other): (&[u32], &[u32]),
    scores: &Scores<T>,
    f: impl Fn(T) -> T,
) -> Vec<T> {
    let mut lse = vec![LogSumExp::default(); scores.rows()];
    for (&k, &l) in anchor.iter().zip(other) {
        lse[k as usize].add(f(scores.get(k as usize, l as usize)));
    }
    lse.iter().map(LogSumExp::value).collect()
}

/// Adds `coef[k] * exp(f(s_kl) - lse[k]) * slope` to `grad[k][l]` for every listed negative
/// pair.
#[allow(clippy::too_many_arguments)]
fn listed_spread<T: Real>(
    (anchor, other): (&[u32], &[u32]),
    scores: &Scores<T>,
    f: impl Fn(T) -> T,
    lse: &[T],
    coef: &[T],
    slope: T,
    grad: &mut [T],
) {
    let n = scores.cols();
    for (&k, &l) in anchor.iter().zip(other) {
        let (k, l) = (k as usize, l as usize);
        if coef[k] != T::zero() {
            grad[k * n + l] += coef[k] * (f(scores.get(k, l)) - lse[k]).exp() * slope;
        }
    }
}

/// `log(e^a + e^b)` treating `-inf` as absent.
#[inline]
pub(crate) fn log_add_exp<T: Real>(a: T, b: T) -> T {
    let m = a.max(b);
    if m == T::neg_infinity() {
        m
    } else {
        m + ((a - m).exp() + (b - m).exp()).ln()
    }
}

impl LossKernel for LiftedStructureLoss {
    fn name(&self) -> &'static str {
        "LiftedStructureLoss"
    }

    fn pml_default_reducer(&self) -> Reducer {
        Reducer::Mean
    }

    fn compute<T: Real>(&self, input: &KernelInput<'_, T>) -> Result<KernelOutput<T>> {
        let x = input.embeddings;
        let (n, d) = (x.rows(), x.cols());
        let tuples = selected_pairs(&input.selection, self.name())?;
        let (pos, neg) = pair_sets(input.labels, tuples.as_deref());
        if generic_pair_quirk(&pos, &neg) || pos.len() == 0 || neg.len() == 0 {
            return Ok(KernelOutput::zero(n, d, input.params));
        }
        let dist = self.distance;
        let (nm, pm) = (T::of(self.neg_margin), T::of(self.pos_margin));
        let slope = dist.margin_slope::<T>();
        let scores = dist.scores(x, None);
        // margin(nm, s) = sign (s - nm), exactly (negation does not round).
        let sign = -slope;
        let neg_f = move |s: T| sign * (s - nm);
        let mut grad_s = Scratch::zeroed(n * n);
        // Per anchor: the log-sum-exp over its negatives (for all pairs, a sweep per row in a
        // scratch row that stays in cache).
        let (by_label, listed) = match neg {
            PairSet::All { labels, .. } => {
                (Some(LabelMask::all_pairs(labels, dist)), (&[][..], &[][..]))
            }
            PairSet::Listed { anchor, other } => (None, (anchor, other)),
        };
        let lse: Vec<T> = match &by_label {
            Some(mask) => (0..n)
                .into_par_iter()
                .map_init(Vec::new, |scratch, k| {
                    scratch.resize(n, T::zero());
                    let r = mask.exp_negatives(k, scores.row(k), neg_f, T::neg_infinity(), scratch);
                    if r.count == 0 {
                        T::neg_infinity()
                    } else {
                        r.shift + r.sum.ln()
                    }
                })
                .collect(),
            None => listed_anchor_lse(listed, &scores, neg_f),
        };
        let (a1, p) = match &by_label {
            Some(mask) => mask.positive_pairs(),
            None => pos.to_lists(),
        };
        // Per positive pair: the log-sum-exp over its two anchors' negatives, and the loss.
        let pair_lse = |i: usize, j: usize| {
            if i == j {
                lse[i]
            } else {
                log_add_exp(lse[i], lse[j])
            }
        };
        let (joint, hinge): (Vec<T>, Vec<T>) = a1
            .par_iter()
            .zip(p.par_iter())
            .map(|(&i, &j)| {
                let (i, j) = (i as usize, j as usize);
                let l = pair_lse(i, j);
                let neg_part = if l == T::neg_infinity() { T::zero() } else { l };
                (
                    l,
                    (neg_part + dist.margin(scores.get(i, j), pm)).max(T::zero()),
                )
            })
            .unzip();
        let losses: Vec<T> = hinge.iter().map(|&h| h * h / T::of(2.0)).collect();
        let red = input.reducer.reduce(&losses, None);
        let mut coef = vec![T::zero(); n];
        let mut pair_grads = Vec::new();
        for (k, (&i, &j)) in a1.iter().zip(&p).enumerate() {
            let w = input.reducer.weight(&red, losses[k]);
            let g = w * hinge[k];
            if g == T::zero() {
                continue;
            }
            let (i, j) = (i as usize, j as usize);
            pair_grads.push((i * n + j, g * slope));
            if joint[k] != T::neg_infinity() {
                for a in if i == j { vec![i] } else { vec![i, j] } {
                    if lse[a] != T::neg_infinity() {
                        coef[a] += g * (lse[a] - joint[k]).exp();
                    }
                }
            }
        }
        // d/ds_kl of the negatives' log-sum-exp: coef[k] e^(f(s_kl) - lse[k]) (times -slope).
        // The row's exponentials are recomputed (the same bits as above) straight into the
        // gradient: cheaper than storing them and reading them back. Rows without a
        // coefficient are never touched.
        match &by_label {
            Some(mask) => {
                grad_s
                    .par_chunks_mut(n)
                    .zip(coef.par_iter())
                    .enumerate()
                    .for_each(|(k, (g, &c))| {
                        if c != T::zero() {
                            let r =
                                mask.exp_negatives(k, scores.row(k), neg_f, T::neg_infinity(), g);
                            let c = c * sign / r.sum;
                            g.iter_mut().for_each(|v| *v *= c);
                        }
                    });
            }
            None => {
                listed_spread(listed, &scores, neg_f, &lse, &coef, sign, &mut grad_s);
            }
        }
        // Positive pairs are never negatives: their entries are still 0 here.
        for (at, g) in pair_grads {
            grad_s[at] += g;
        }
        let grads = scores.backward(&mut grad_s);
        let active = losses.iter().filter(|&&l| l != T::zero()).count() as u64;
        let total = losses.len() as u64;
        Ok(KernelOutput {
            loss: red.value,
            grad: grads.x,
            param_grad: None,
            terms: if input.want_terms {
                vec![LossTerm {
                    name: "loss",
                    losses,
                    indices: TermIndices::PerPosPair {
                        anchor: a1,
                        positive: p,
                    },
                }]
            } else {
                Vec::new()
            },
            stats: LossStats { active, total },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::Selection;
    use crate::loss::testing::{input, points};
    use crate::matrix::MatrixRef;
    use crate::tuples::{PairIndices, Tuples};

    /// PML's definition: for each positive pair, a log-sum-exp over every negative pair whose
    /// anchor is either member, with plain loops (what PML's dense matrix holds).
    fn brute_force(x: &[f64], labels: &[i64], pairs: &PairIndices) -> f64 {
        let n = labels.len();
        let s = Distance::PML_LP_DEFAULT.scores(MatrixRef::new(x, n, x.len() / n).unwrap(), None);
        let mut total = 0.0;
        for (i, j) in pairs.pos_pairs() {
            let terms: Vec<f64> = pairs
                .neg_pairs()
                .filter(|&(k, _)| k == i || k == j)
                .map(|(k, l)| 1.0 - s.get(k, l))
                .collect();
            let lse = if terms.is_empty() {
                0.0
            } else {
                terms.iter().map(|t| t.exp()).sum::<f64>().ln()
            };
            let h = (lse + s.get(i, j)).max(0.0);
            total += h * h / 2.0;
        }
        total / pairs.num_pos() as f64
    }

    #[test]
    fn matches_the_dense_definition_with_all_and_listed_pairs() {
        let labels = [0, 1, 0, 2, 1, 0, 2, 1, 3];
        let x = points(9, 3, 2);
        let loss = LiftedStructureLoss::new(Distance::PML_LP_DEFAULT, 1.0, 0.0).unwrap();
        let all = PairIndices::all(&labels);
        let got = loss
            .compute(&input(&x, 3, &labels, Selection::All, Reducer::Mean))
            .unwrap();
        assert!((got.loss - brute_force(&x, &labels, &all)).abs() < 1e-12);
        // listed pairs with a duplicate and an anchor without negatives
        let listed = PairIndices {
            anchor_pos: vec![0, 0, 2, 1],
            positive: vec![2, 2, 5, 4],
            anchor_neg: vec![0, 0, 5, 2],
            negative: vec![1, 1, 3, 8],
        };
        let t = Tuples::Pairs(listed.clone());
        let got = loss
            .compute(&input(&x, 3, &labels, Selection::Tuples(&t), Reducer::Mean))
            .unwrap();
        assert!((got.loss - brute_force(&x, &labels, &listed)).abs() < 1e-12);
    }
}
