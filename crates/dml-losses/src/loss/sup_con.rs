//! Supervised contrastive loss (Khosla et al. 2020), PML's form.

use dml_core::Real;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::pair_mask::{MaskedPairs, fuses_mask};
use super::{KernelInput, KernelOutput, LossKernel};
use crate::distance::Distance;
use crate::error::Result;
use crate::miner::Miner;
use crate::numeric::LogSumExp;
use crate::reducer::Reducer;

/// Supervised contrastive loss: every positive of a row against all of the row's pairs.
///
/// ```text
/// z_ij = -farness(s_ij) / temperature       (s / t for similarities, -d / t for distances)
/// l_i  = 1 / (|P_i| + tiny) * sum_{p in P_i} ( LSE_{j in P_i u N_i} z_ij - z_ip )
/// L = reduce(l over the n rows)
/// ```
///
/// Unlike [`super::NTXentLoss`], the anchor's other positives are in the denominator. A row
/// without positives has loss 0; `tiny` is the smallest normal float (PML's `small_val`).
/// Pairs are all pairs, the listed ones (a 0/1 mask: duplicates collapse) or a fused
/// [`crate::miner::MultiSimilarityMiner`] with the same distance. O(n^2), parallel over rows.
///
/// # Shapes
/// embeddings `[n, d]`, labels `[n]`.
///
/// # Degenerate batches
/// No positive or no negative pair in the whole batch: 0. Exactly one of each: 0 (PML note 6).
///
/// PML defaults (`SupConLoss()`): `temperature = 0.1`, distance `Cosine`, reducer
/// `AvgNonZero`. Reference: PML `losses/supcon_loss.py`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SupConLoss {
    distance: Distance,
    temperature: f64,
}

impl SupConLoss {
    /// A supervised contrastive loss; `temperature > 0`.
    pub fn new(distance: Distance, temperature: f64) -> Result<Self> {
        crate::error::positive("SupConLoss", "temperature", temperature)?;
        Ok(Self {
            distance,
            temperature,
        })
    }
}

impl LossKernel for SupConLoss {
    fn name(&self) -> &'static str {
        "SupConLoss"
    }

    fn pml_default_reducer(&self) -> Reducer {
        Reducer::AvgNonZero
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
        if masked.quirk() || masked.pos_len == 0 || masked.neg_len == 0 {
            return Ok(KernelOutput::zero(n, d, input.params));
        }
        let mask = &masked.mask;
        let t = T::of(self.temperature);
        let z = move |s: T| -dist.farness(s) / t;
        let tiny = T::min_positive_value();
        // Per row: (loss, log-sum-exp over the row's pairs, number of positives).
        let rows: Vec<(T, T, T)> = (0..n)
            .into_par_iter()
            .map(|i| {
                let mut lse = LogSumExp::default();
                let mut count = 0usize;
                for (j, &s) in scores.row(i).iter().enumerate() {
                    if mask.pos(i, j, s) {
                        count += 1;
                        lse.add(z(s));
                    } else if mask.neg(i, j, s) {
                        lse.add(z(s));
                    }
                }
                if count == 0 {
                    return (T::zero(), T::zero(), T::zero());
                }
                let lse = lse.value();
                let sum: T = scores
                    .row(i)
                    .iter()
                    .enumerate()
                    .filter(|&(j, &s)| mask.pos(i, j, s))
                    .map(|(_, &s)| lse - z(s))
                    .sum();
                let count = T::of(count as f64);
                (sum / (count + tiny), lse, count)
            })
            .collect();
        let losses: Vec<T> = rows.iter().map(|r| r.0).collect();
        let red = input.reducer.reduce(&losses, None);
        let dz = -dist.margin_slope::<T>() / t;
        let mut grad_s = vec![T::zero(); n * n];
        grad_s.par_chunks_mut(n).enumerate().for_each(|(i, g)| {
            let (l, lse, count) = rows[i];
            let w = input.reducer.weight(&red, l);
            if w == T::zero() || count == T::zero() {
                return;
            }
            // d l_i / d z_ij = (|P_i| softmax_ij - [j in P_i]) / (|P_i| + tiny)
            let coef = w * dz / (count + tiny);
            for (j, (gj, &s)) in g.iter_mut().zip(scores.row(i)).enumerate() {
                let is_pos = mask.pos(i, j, s);
                if is_pos || mask.neg(i, j, s) {
                    let softmax = (z(s) - lse).exp();
                    let own = if is_pos { T::one() } else { T::zero() };
                    *gj += coef * (count * softmax - own);
                }
            }
        });
        let grads = scores.backward(&mut grad_s);
        Ok(KernelOutput::per_element(
            red.value,
            grads,
            losses,
            rows.iter().filter(|r| r.2 != T::zero()).count() as u64,
            input.want_terms,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::Selection;
    use crate::matrix::MatrixRef;
    use crate::tuples::{PairIndices, Tuples};

    /// PML's SupConLoss with plain loops in f64: `pos[i][j]` / `neg[i][j]` are the 0/1 masks,
    /// cosine similarity, AvgNonZero over rows.
    fn oracle(x: &[f64], d: usize, pos: &[Vec<bool>], neg: &[Vec<bool>], t: f64) -> f64 {
        let n = pos.len();
        let unit = |i: usize| {
            let r = &x[i * d..(i + 1) * d];
            let norm = r.iter().map(|v| v * v).sum::<f64>().sqrt();
            r.iter().map(|v| v / norm).collect::<Vec<f64>>()
        };
        let (mut total, mut count) = (0.0, 0);
        for i in 0..n {
            let z: Vec<f64> = (0..n)
                .map(|j| unit(i).iter().zip(unit(j)).map(|(a, b)| a * b).sum::<f64>() / t)
                .collect();
            let denom: f64 = (0..n)
                .filter(|&j| pos[i][j] || neg[i][j])
                .map(|j| z[j].exp())
                .sum();
            let positives: Vec<usize> = (0..n).filter(|&j| pos[i][j]).collect();
            if positives.is_empty() {
                continue;
            }
            let l = -positives
                .iter()
                .map(|&p| (z[p].exp() / denom).ln())
                .sum::<f64>()
                / positives.len() as f64;
            if l > 0.0 {
                total += l;
                count += 1;
            }
        }
        total / count as f64
    }

    fn label_masks(labels: &[i64]) -> (Vec<Vec<bool>>, Vec<Vec<bool>>) {
        let n = labels.len();
        let pos = (0..n)
            .map(|i| (0..n).map(|j| i != j && labels[i] == labels[j]).collect())
            .collect();
        let neg = (0..n)
            .map(|i| (0..n).map(|j| labels[i] != labels[j]).collect())
            .collect();
        (pos, neg)
    }

    fn run(x: &[f64], labels: &[i64], selection: Selection<'_>) -> KernelOutput<f64> {
        SupConLoss::new(Distance::Cosine, 0.1)
            .unwrap()
            .compute(&KernelInput {
                embeddings: MatrixRef::new(x, labels.len(), 4).unwrap(),
                labels,
                selection,
                params: None,
                reducer: Reducer::AvgNonZero,
                want_terms: false,
                tuple_budget: 1 << 20,
            })
            .unwrap()
    }

    #[test]
    fn matches_a_plain_loop_oracle_and_finite_differences() {
        let x: Vec<f64> = (0..32)
            .map(|k| ((k * 7919) % 29) as f64 / 9.0 - 1.5)
            .collect();
        let labels = [0, 1, 0, 2, 1, 0, 2, 3];
        let (pos, neg) = label_masks(&labels);
        let out = run(&x, &labels, Selection::All);
        let want = oracle(&x, 4, &pos, &neg, 0.1);
        assert!((out.loss - want).abs() < 1e-12, "{} vs {want}", out.loss);
        let h = 1e-6;
        for k in 0..x.len() {
            let (mut up, mut down) = (x.clone(), x.clone());
            up[k] += h;
            down[k] -= h;
            let fd =
                (oracle(&up, 4, &pos, &neg, 0.1) - oracle(&down, 4, &pos, &neg, 0.1)) / (2.0 * h);
            assert!(
                (fd - out.grad[k]).abs() < 1e-5 * (1.0 + fd.abs()),
                "entry {k}: {fd} vs {}",
                out.grad[k]
            );
        }
    }

    #[test]
    fn listed_pairs_form_a_mask_where_duplicates_collapse() {
        let x: Vec<f64> = (0..24)
            .map(|k| ((k * 104_729) % 31) as f64 / 10.0 - 1.4)
            .collect();
        let labels = [0, 0, 1, 1, 2, 0];
        let t = Tuples::Pairs(PairIndices {
            anchor_pos: vec![0, 0, 1, 5],
            positive: vec![1, 1, 0, 0],
            anchor_neg: vec![0, 0, 1, 5, 5],
            negative: vec![2, 2, 4, 3, 4],
        });
        let n = labels.len();
        let mut pos = vec![vec![false; n]; n];
        let mut neg = vec![vec![false; n]; n];
        for (a, p) in [(0, 1), (1, 0), (5, 0)] {
            pos[a][p] = true;
        }
        for (a, ng) in [(0, 2), (1, 4), (5, 3), (5, 4)] {
            neg[a][ng] = true;
        }
        let got = run(&x, &labels, Selection::Tuples(&t)).loss;
        let want = oracle(&x, 4, &pos, &neg, 0.1);
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }

    #[test]
    fn batches_without_negatives_or_positives_are_zero() {
        let x: Vec<f64> = (0..16).map(|k| k as f64 - 7.5).collect();
        assert_eq!(run(&x, &[1, 1, 1, 1], Selection::All).loss, 0.0);
        assert_eq!(run(&x, &[0, 1, 2, 3], Selection::All).loss, 0.0);
    }
}
