//! Multi-class N-pair loss (Sohn 2016), PML's form.

use dml_core::Real;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::pair_set::selected_pairs;
use super::{KernelInput, KernelOutput, LossKernel, LossStats, LossTerm, Selection, TermIndices};
use crate::distance::Distance;
use crate::error::Result;
use crate::matrix::MatrixRef;
use crate::numeric;
use crate::reducer::Reducer;
use crate::scratch::Scratch;
use crate::tuples::LabelCounts;

/// Multi-class N-pair loss: every anchor against the other classes' positives.
///
/// ```text
/// one pair (a_i, p_i) per label, labels ascending (PML note 13)
/// S_ij = sim(a_i, p_j)          (a distance gives S = -d)
/// L_i  = -log softmax_j(S_ij)[i] = log sum_j exp(S_ij) - S_ii
/// L = reduce(L_i)
/// ```
///
/// The pair of a label is its first positive pair: without tuples, the class's smallest and
/// second-smallest index; with tuples, the first listed pair whose anchor has that label. All
/// other samples get zero gradient; classes with one sample are dropped. There is no
/// regulariser built in: the paper's `lambda * ||f||^2` is an [`crate::LpRegularizer`] with
/// `p = 2, power = 2` (averaged over the whole batch, PML note 8).
///
/// # Degenerate batches
/// No class with two samples: 0. One class: `log 1 = 0`.
///
/// PML defaults (`NPairsLoss()`): distance `DotProduct { normalize: true }` (that is, cosine),
/// reducer `Mean`. Reference: PML `losses/n_pairs_loss.py`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NPairsLoss {
    distance: Distance,
}

impl NPairsLoss {
    /// An N-pair loss scoring anchors against positives with `distance`.
    pub fn new(distance: Distance) -> Self {
        Self { distance }
    }
}

/// The N-pair tuples: one `(anchor, positive)` per label, in ascending label order.
pub(crate) fn npair_tuples(
    selection: &Selection<'_>,
    labels: &[i64],
    owner: &'static str,
) -> Result<(Vec<u32>, Vec<u32>)> {
    let mut chosen: std::collections::BTreeMap<i64, (u32, u32)> = std::collections::BTreeMap::new();
    match selected_pairs(selection, owner)? {
        None => {
            let counts = LabelCounts::new(labels);
            for (i, &l) in labels.iter().enumerate() {
                if counts.count(l) < 2 {
                    continue;
                }
                match chosen.get_mut(&l) {
                    None => {
                        chosen.insert(l, (i as u32, u32::MAX));
                    }
                    Some(pair) if pair.1 == u32::MAX => pair.1 = i as u32,
                    Some(_) => {}
                }
            }
        }
        Some(p) => {
            for (a, q) in p.pos_pairs() {
                chosen.entry(labels[a]).or_insert((a as u32, q as u32));
            }
        }
    }
    Ok(chosen.into_values().unzip())
}

/// Gathers the listed rows of `x` into a new row-major matrix.
pub(crate) fn gather<T: Real>(x: MatrixRef<'_, T>, rows: &[u32]) -> Vec<T> {
    rows.iter()
        .flat_map(|&r| x.row(r as usize).iter().copied())
        .collect()
}

/// Adds the rows of `g` (one per listed row) into `grad` at those rows.
pub(crate) fn scatter_add<T: Real>(grad: &mut [T], rows: &[u32], g: &[T], d: usize) {
    for (k, &r) in rows.iter().enumerate() {
        let r = r as usize;
        for (o, &v) in grad[r * d..(r + 1) * d]
            .iter_mut()
            .zip(&g[k * d..(k + 1) * d])
        {
            *o += v;
        }
    }
}

/// Softmax cross-entropy of each row of a `k x k` logit matrix against its diagonal:
/// returns the losses and writes `d loss_i / d z_ij` (unweighted) into `dz`.
pub(crate) fn diagonal_cross_entropy<T: Real>(z: &[T], k: usize, dz: &mut [T]) -> Vec<T> {
    signed_diagonal_cross_entropy(z, T::one(), k, dz)
}

/// [`diagonal_cross_entropy`] of the logits `sign * z` (without materialising them), rows in
/// parallel, one vectorised exponential per entry: `softmax = e^(z - max) / sum`.
fn signed_diagonal_cross_entropy<T: Real>(z: &[T], sign: T, k: usize, dz: &mut [T]) -> Vec<T> {
    if k == 0 {
        return Vec::new();
    }
    dz.par_chunks_mut(k)
        .zip(z.par_chunks(k))
        .enumerate()
        .map(|(i, (d, row))| {
            d.iter_mut().zip(row).for_each(|(e, &v)| *e = sign * v);
            let max = numeric::max(d);
            let zi = d[i];
            d.iter_mut().for_each(|e| *e -= max);
            numeric::exp_in_place(d);
            let sum = numeric::sum(d);
            d.iter_mut().for_each(|e| *e = *e / sum);
            d[i] -= T::one();
            max + sum.ln() - zi
        })
        .collect()
}

impl LossKernel for NPairsLoss {
    fn name(&self) -> &'static str {
        "NPairsLoss"
    }

    fn pml_default_reducer(&self) -> Reducer {
        Reducer::Mean
    }

    fn compute<T: Real>(&self, input: &KernelInput<'_, T>) -> Result<KernelOutput<T>> {
        let x = input.embeddings;
        let (n, d) = (x.rows(), x.cols());
        let (anchors, positives) = npair_tuples(&input.selection, input.labels, self.name())?;
        let k = anchors.len();
        if k == 0 {
            return Ok(KernelOutput::zero(n, d, input.params));
        }
        let (xa, xp) = (gather(x, &anchors), gather(x, &positives));
        let scores = self
            .distance
            .scores(MatrixRef::new(&xa, k, d)?, Some(MatrixRef::new(&xp, k, d)?));
        let sign = if self.distance.is_similarity() {
            T::one()
        } else {
            -T::one()
        };
        // Every entry is written by the cross-entropy.
        let mut dz = Scratch::recycled(k * k);
        let losses = signed_diagonal_cross_entropy(scores.values(), sign, k, &mut dz);
        let red = input.reducer.reduce(&losses, None);
        dz.par_chunks_mut(k).zip(&losses).for_each(|(row, &l)| {
            let w = sign * input.reducer.weight(&red, l);
            row.iter_mut().for_each(|v| *v *= w);
        });
        let grads = scores.backward(&mut dz);
        let mut grad = vec![T::zero(); n * d];
        scatter_add(&mut grad, &anchors, &grads.x, d);
        if let Some(gy) = &grads.y {
            scatter_add(&mut grad, &positives, gy, d);
        }
        let active = losses.iter().filter(|&&l| l != T::zero()).count() as u64;
        let terms = if input.want_terms {
            vec![LossTerm {
                name: "loss",
                losses,
                indices: TermIndices::PerElement(anchors),
            }]
        } else {
            Vec::new()
        };
        Ok(KernelOutput {
            loss: red.value,
            grad,
            param_grad: None,
            terms,
            stats: LossStats {
                active,
                total: k as u64,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parallel, vectorised cross-entropy equals the textbook formula.
    #[test]
    fn signed_cross_entropy_matches_the_formula() {
        let k = 37;
        let z: Vec<f64> = crate::loss::testing::points(k, k, 3)
            .iter()
            .map(|v| 20.0 * v)
            .collect();
        for sign in [1.0, -1.0] {
            let mut dz = vec![0.0; k * k];
            let losses = signed_diagonal_cross_entropy(&z, sign, k, &mut dz);
            for i in 0..k {
                let row: Vec<f64> = z[i * k..(i + 1) * k].iter().map(|v| sign * v).collect();
                let lse = row.iter().map(|v| v.exp()).sum::<f64>().ln();
                assert!((losses[i] - (lse - row[i])).abs() < 1e-12);
                for j in 0..k {
                    let want = (row[j] - lse).exp() - if i == j { 1.0 } else { 0.0 };
                    assert!((dz[i * k + j] - want).abs() < 1e-12, "{i} {j}");
                }
            }
        }
        assert!(diagonal_cross_entropy::<f32>(&[], 0, &mut []).is_empty());
    }
}
