//! Circle loss (Sun et al. 2020), PML's form.

use dml_core::Real;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::pair_mask::{MaskedPairs, fuses_mask};
use super::{KernelInput, KernelOutput, LossKernel};
use crate::distance::Distance;
use crate::error::{Error, Result};
use crate::miner::Miner;
use crate::numeric::{LogSumExp, softplus, softplus_grad};
use crate::reducer::Reducer;

/// Circle loss: self-paced weights on the positive and negative cosine similarities of a row.
///
/// ```text
/// a_p = relu(1 + m - s_ip)      a_n = relu(s_in + m)      (both detached: no gradient)
/// l_i = softplus( LSE_p(-gamma * a_p * (s_ip - (1 - m))) + LSE_n(gamma * a_n * (s_in - m)) )
/// l_i = 0 for a row without a positive or without a negative
/// L = reduce(l over the n rows)
/// ```
///
/// Because `a_p` and `a_n` are detached (PML note 20), the gradient is PML's, not the full
/// derivative of the formula. Pairs are all pairs, the listed ones (a 0/1 mask: duplicates
/// collapse) or a fused [`crate::miner::MultiSimilarityMiner`] with cosine similarity. O(n^2),
/// parallel over rows.
///
/// # Shapes
/// embeddings `[n, d]`, labels `[n]`.
///
/// # Degenerate batches
/// No row with both a positive and a negative: 0. Exactly one positive and one negative pair:
/// 0 (PML note 6). In f32 a softplus argument below about -103 gives exactly 0, and the row
/// leaves `AvgNonZero`'s denominator, as in PML.
///
/// PML defaults (`CircleLoss()`): `m = 0.4`, `gamma = 80`, distance `Cosine` (the only one PML
/// accepts), reducer `AvgNonZero`. Reference: PML `losses/circle_loss.py`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CircleLoss {
    m: f64,
    gamma: f64,
}

impl CircleLoss {
    /// A circle loss; `distance` must be [`Distance::Cosine`], `m >= 0`, `gamma > 0`.
    pub fn new(distance: Distance, m: f64, gamma: f64) -> Result<Self> {
        if distance != Distance::Cosine {
            return Err(Error::UnsupportedDistance {
                owner: "CircleLoss",
                required: "CosineSimilarity()",
                given: distance.describe(),
            });
        }
        crate::error::non_negative("CircleLoss", "m", m)?;
        crate::error::positive("CircleLoss", "gamma", gamma)?;
        Ok(Self { m, gamma })
    }

    /// The positive logit and its (detached-weight) derivative.
    #[inline]
    fn pos_logit<T: Real>(&self, s: T) -> (T, T) {
        let (m, gamma) = (T::of(self.m), T::of(self.gamma));
        let a = (T::one() + m - s).max(T::zero());
        (-gamma * a * (s - (T::one() - m)), -gamma * a)
    }

    /// The negative logit and its (detached-weight) derivative.
    #[inline]
    fn neg_logit<T: Real>(&self, s: T) -> (T, T) {
        let (m, gamma) = (T::of(self.m), T::of(self.gamma));
        let a = (s + m).max(T::zero());
        (gamma * a * (s - m), gamma * a)
    }
}

impl LossKernel for CircleLoss {
    fn name(&self) -> &'static str {
        "CircleLoss"
    }

    fn pml_default_reducer(&self) -> Reducer {
        Reducer::AvgNonZero
    }

    fn fuses(&self, miner: &Miner) -> bool {
        fuses_mask(Distance::Cosine, miner)
    }

    fn compute<T: Real>(&self, input: &KernelInput<'_, T>) -> Result<KernelOutput<T>> {
        let x = input.embeddings;
        let (n, d) = (x.rows(), x.cols());
        let scores = Distance::Cosine.scores(x, None);
        let masked = MaskedPairs::new(&input.selection, input.labels, &scores, self.name())?;
        if masked.quirk() {
            return Ok(KernelOutput::zero(n, d, input.params));
        }
        let mask = &masked.mask;
        // Per row: (loss, both log-sum-exps), or None for a row lacking either set.
        let rows: Vec<Option<(T, T, T)>> = (0..n)
            .into_par_iter()
            .map(|i| {
                let (mut pos, mut neg) = (LogSumExp::default(), LogSumExp::default());
                for (j, &s) in scores.row(i).iter().enumerate() {
                    if mask.pos(i, j, s) {
                        pos.add(self.pos_logit(s).0);
                    }
                    if mask.neg(i, j, s) {
                        neg.add(self.neg_logit(s).0);
                    }
                }
                (!pos.is_empty() && !neg.is_empty()).then(|| {
                    let (lp, ln) = (pos.value(), neg.value());
                    (softplus(lp + ln), lp, ln)
                })
            })
            .collect();
        let losses: Vec<T> = rows.iter().map(|r| r.map_or(T::zero(), |r| r.0)).collect();
        let red = input.reducer.reduce(&losses, None);
        let mut grad_s = vec![T::zero(); n * n];
        grad_s.par_chunks_mut(n).enumerate().for_each(|(i, g)| {
            let Some((l, lp, ln)) = rows[i] else { return };
            let w = input.reducer.weight(&red, l);
            if w == T::zero() {
                return;
            }
            let dv = w * softplus_grad(lp + ln);
            for (j, (gj, &s)) in g.iter_mut().zip(scores.row(i)).enumerate() {
                if mask.pos(i, j, s) {
                    let (v, dvds) = self.pos_logit(s);
                    *gj += dv * (v - lp).exp() * dvds;
                }
                if mask.neg(i, j, s) {
                    let (v, dvds) = self.neg_logit(s);
                    *gj += dv * (v - ln).exp() * dvds;
                }
            }
        });
        let grads = scores.backward(&mut grad_s);
        Ok(KernelOutput::per_element(
            red.value,
            grads,
            losses,
            rows.iter().filter(|r| r.is_some()).count() as u64,
            input.want_terms,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::Selection;
    use crate::matrix::MatrixRef;

    fn cos(x: &[f64], d: usize, i: usize, j: usize) -> f64 {
        let (a, b) = (&x[i * d..(i + 1) * d], &x[j * d..(j + 1) * d]);
        let dot: f64 = a.iter().zip(b).map(|(u, v)| u * v).sum();
        dot / (a.iter().map(|u| u * u).sum::<f64>().sqrt()
            * b.iter().map(|u| u * u).sum::<f64>().sqrt())
    }

    /// The formula with plain loops, AvgNonZero over rows, and its gradient with the weights
    /// `a_p`, `a_n` held at the values of `weights_at`.
    fn oracle(x: &[f64], weights_at: &[f64], labels: &[i64], d: usize, m: f64, gamma: f64) -> f64 {
        let n = labels.len();
        let (mut total, mut count) = (0.0, 0);
        for i in 0..n {
            let (mut sp, mut sn, mut np, mut nn) = (0.0, 0.0, 0, 0);
            for j in 0..n {
                let (s, s0) = (cos(x, d, i, j), cos(weights_at, d, i, j));
                if labels[j] == labels[i] && j != i {
                    sp += (-gamma * (1.0 + m - s0).max(0.0) * (s - (1.0 - m))).exp();
                    np += 1;
                } else if labels[j] != labels[i] {
                    sn += (gamma * (s0 + m).max(0.0) * (s - m)).exp();
                    nn += 1;
                }
            }
            if np > 0 && nn > 0 {
                let l = (sp.ln() + sn.ln()).exp().ln_1p();
                if l > 0.0 {
                    total += l;
                    count += 1;
                }
            }
        }
        total / count as f64
    }

    #[test]
    fn matches_the_formula_and_pmls_detached_gradient() {
        let x: Vec<f64> = (0..28)
            .map(|k| ((k * 7919) % 29) as f64 / 9.0 - 1.5)
            .collect();
        let labels = [0, 1, 0, 2, 1, 0, 3];
        let loss = CircleLoss::new(Distance::Cosine, 0.25, 16.0).unwrap();
        let out = loss
            .compute(&KernelInput {
                embeddings: MatrixRef::new(&x, 7, 4).unwrap(),
                labels: &labels,
                selection: Selection::All,
                params: None,
                reducer: Reducer::AvgNonZero,
                want_terms: false,
                tuple_budget: 1 << 20,
            })
            .unwrap();
        let want = oracle(&x, &x, &labels, 4, 0.25, 16.0);
        assert!((out.loss - want).abs() < 1e-12, "{} vs {want}", out.loss);
        // Rows 3 and 6 (singletons) have no positive: they are not counted.
        assert_eq!(out.stats.total, 5);
        let h = 1e-6;
        for k in 0..x.len() {
            let (mut up, mut down) = (x.clone(), x.clone());
            up[k] += h;
            down[k] -= h;
            let fd = (oracle(&up, &x, &labels, 4, 0.25, 16.0)
                - oracle(&down, &x, &labels, 4, 0.25, 16.0))
                / (2.0 * h);
            assert!(
                (fd - out.grad[k]).abs() < 1e-6,
                "entry {k}: {fd} vs {}",
                out.grad[k]
            );
        }
    }

    #[test]
    fn only_cosine_and_sensible_parameters() {
        assert!(matches!(
            CircleLoss::new(Distance::PML_LP_DEFAULT, 0.4, 80.0),
            Err(Error::UnsupportedDistance { .. })
        ));
        assert!(CircleLoss::new(Distance::Cosine, -0.1, 80.0).is_err());
        assert!(CircleLoss::new(Distance::Cosine, 0.4, 0.0).is_err());
    }
}
