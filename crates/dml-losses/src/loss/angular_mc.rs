//! The "angular-mc" loss: angular loss in N-pair form, as used by the survey's author.

use dml_core::Real;
use dml_core::linalg::{Transpose, matmul};
use serde::{Deserialize, Serialize};

use super::n_pairs::{gather, npair_tuples, scatter_add};
use super::{KernelInput, KernelOutput, LossKernel, LossStats, LossTerm, TermIndices};
use crate::distance::UnitRows;
use crate::error::{Error, Result};
use crate::matrix::MatrixRef;
use crate::reducer::Reducer;

/// Angular loss on N-pair tuples: each anchor against the other classes' positives, as a
/// softmax cross-entropy whose target logit is 0.
///
/// ```text
/// one pair (f_i, p_i) per label (as NPairsLoss), t = tan^2(alpha)
/// z_ij = 4 t (f_i + p_i) . p_j - 2 (1 + t) f_i . p_i     (j != i),    z_ii = 0
/// L_i = log sum_j exp z_ij = log(1 + sum_{j != i} exp z_ij)
/// L = reduce(L_i)
/// ```
///
/// This is Wang et al.'s angular term with N-pair sampling (the negatives of pair `i` are the
/// positives of the other pairs), all points normalised when `normalize`. Unlike PML's
/// [`super::AngularLoss`], negatives are normalised like anchors and positives.
///
/// # Degenerate batches
/// Fewer than two classes with two samples: 0 (one pair has no negatives: `log 1`).
///
/// Defaults used by the survey's code: `alpha = 45` degrees, normalised features, `Mean`.
/// Reference: Wang et al., "Deep Metric Learning with Angular Loss", ICCV 2017, eq. (9)-(10).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AngularMcLoss {
    alpha_degrees: f64,
    normalize: bool,
}

impl AngularMcLoss {
    /// An angular-mc loss with angle `alpha_degrees` in (0, 90).
    pub fn new(alpha_degrees: f64, normalize: bool) -> Result<Self> {
        check_alpha("AngularMcLoss", alpha_degrees)?;
        Ok(Self {
            alpha_degrees,
            normalize,
        })
    }
}

pub(crate) fn check_alpha(owner: &'static str, alpha_degrees: f64) -> Result<()> {
    if alpha_degrees > 0.0 && alpha_degrees < 90.0 {
        Ok(())
    } else {
        Err(Error::InvalidParameter {
            owner,
            param: "alpha",
            value: alpha_degrees,
            reason: "must be an angle in degrees strictly between 0 and 90",
        })
    }
}

/// The N-pair tuples of a batch, gathered (and normalised) as `k x d` anchors and positives.
pub(crate) struct NPairBlock<T> {
    pub anchors: Vec<u32>,
    pub positives: Vec<u32>,
    pub f: UnitRows<T>,
    pub p: UnitRows<T>,
    pub k: usize,
    pub d: usize,
}

impl<T: Real> NPairBlock<T> {
    pub fn new(input: &KernelInput<'_, T>, normalize: bool, owner: &'static str) -> Result<Self> {
        let x = input.embeddings;
        let d = x.cols();
        let (anchors, positives) = npair_tuples(&input.selection, input.labels, owner)?;
        let k = anchors.len();
        let (fa, fp) = (gather(x, &anchors), gather(x, &positives));
        Ok(Self {
            f: UnitRows::new(MatrixRef::new(&fa, k, d)?, normalize),
            p: UnitRows::new(MatrixRef::new(&fp, k, d)?, normalize),
            anchors,
            positives,
            k,
            d,
        })
    }

    /// Chains gradients w.r.t. the (normalised) blocks into the batch gradient.
    pub fn backward(&self, mut df: Vec<T>, mut dp: Vec<T>, n: usize) -> Vec<T> {
        self.f.backward(&mut df, self.d);
        self.p.backward(&mut dp, self.d);
        let mut grad = vec![T::zero(); n * self.d];
        scatter_add(&mut grad, &self.anchors, &df, self.d);
        scatter_add(&mut grad, &self.positives, &dp, self.d);
        grad
    }
}

/// The angular-mc logits of a block and their per-row losses.
pub(crate) struct AngularMcTerms<T> {
    z: Vec<T>,
    pub losses: Vec<T>,
    four_t: T,
    two_1t: T,
}

impl<T: Real> AngularMcTerms<T> {
    pub fn new(b: &NPairBlock<T>, alpha_degrees: f64) -> Self {
        let (k, d) = (b.k, b.d);
        let t = T::of(alpha_degrees.to_radians().tan().powi(2));
        let (four_t, two_1t) = (T::of(4.0) * t, T::of(2.0) * (T::one() + t));
        let (f, p) = (b.f.points(), b.p.points());
        let sum: Vec<T> = f.iter().zip(p).map(|(&a, &b)| a + b).collect();
        let mut z = vec![T::zero(); k * k];
        matmul(
            &sum,
            Transpose::No,
            p,
            Transpose::Yes,
            k,
            k,
            d,
            &mut z,
            T::zero(),
            T::one(),
        );
        let mut losses = Vec::with_capacity(k);
        for i in 0..k {
            let c: T = f[i * d..(i + 1) * d]
                .iter()
                .zip(&p[i * d..(i + 1) * d])
                .map(|(&a, &b)| a * b)
                .sum();
            let row = &mut z[i * k..(i + 1) * k];
            for (j, v) in row.iter_mut().enumerate() {
                *v = if j == i {
                    T::zero()
                } else {
                    four_t * *v - two_1t * c
                };
            }
            let max = row.iter().copied().fold(T::neg_infinity(), T::max);
            let s: T = row.iter().map(|&v| (v - max).exp()).sum();
            losses.push(max + s.ln());
        }
        Self {
            z,
            losses,
            four_t,
            two_1t,
        }
    }

    /// Adds `sum_i w_i * d L_i` into `df` and `dp` (gradients w.r.t. the block's points).
    pub fn backward(&self, b: &NPairBlock<T>, w: &[T], df: &mut [T], dp: &mut [T]) {
        let (k, d) = (b.k, b.d);
        let (f, p) = (b.f.points(), b.p.points());
        let mut dz = vec![T::zero(); k * k];
        for i in 0..k {
            let mut mass = T::zero();
            for j in (0..k).filter(|&j| j != i) {
                let sigma = (self.z[i * k + j] - self.losses[i]).exp();
                mass += sigma;
                dz[i * k + j] = w[i] * self.four_t * sigma;
            }
            // -2(1+t) f_i . p_i
            let dc = -w[i] * self.two_1t * mass;
            for c in 0..d {
                df[i * d + c] += dc * p[i * d + c];
                dp[i * d + c] += dc * f[i * d + c];
            }
        }
        // z = (F + P) P^T:  d(F + P) = dz P,  dP += dz^T (F + P)
        let sum: Vec<T> = f.iter().zip(p).map(|(&a, &b)| a + b).collect();
        let mut dsum = vec![T::zero(); k * d];
        matmul(
            &dz,
            Transpose::No,
            p,
            Transpose::No,
            k,
            d,
            k,
            &mut dsum,
            T::zero(),
            T::one(),
        );
        matmul(
            &dz,
            Transpose::Yes,
            &sum,
            Transpose::No,
            k,
            d,
            k,
            dp,
            T::one(),
            T::one(),
        );
        for ((a, b), &s) in df.iter_mut().zip(dp.iter_mut()).zip(&dsum) {
            *a += s;
            *b += s;
        }
    }
}

impl LossKernel for AngularMcLoss {
    fn name(&self) -> &'static str {
        "AngularMcLoss"
    }

    fn pml_default_reducer(&self) -> Reducer {
        Reducer::Mean
    }

    fn compute<T: Real>(&self, input: &KernelInput<'_, T>) -> Result<KernelOutput<T>> {
        let (n, d) = (input.embeddings.rows(), input.embeddings.cols());
        let block = NPairBlock::new(input, self.normalize, self.name())?;
        if block.k == 0 {
            return Ok(KernelOutput::zero(n, d, input.params));
        }
        let terms = AngularMcTerms::new(&block, self.alpha_degrees);
        let red = input.reducer.reduce(&terms.losses, None);
        let w: Vec<T> = terms
            .losses
            .iter()
            .map(|&l| input.reducer.weight(&red, l))
            .collect();
        let (mut df, mut dp) = (vec![T::zero(); block.k * d], vec![T::zero(); block.k * d]);
        terms.backward(&block, &w, &mut df, &mut dp);
        let grad = block.backward(df, dp, n);
        let active = terms.losses.iter().filter(|&&l| l != T::zero()).count() as u64;
        let total = block.k as u64;
        Ok(KernelOutput {
            loss: red.value,
            grad,
            param_grad: None,
            terms: if input.want_terms {
                vec![LossTerm {
                    name: "loss",
                    losses: terms.losses,
                    indices: TermIndices::PerElement(block.anchors),
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
    use crate::loss::n_pair_angular::NPairAngularLoss;
    use crate::loss::testing::{input, points};

    fn unit(v: &[f64]) -> Vec<f64> {
        let n = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        v.iter().map(|a| a / n).collect()
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// Both N-pair angular losses with plain loops over the N-pair tuples (first and second
    /// index of each class with two samples, labels ascending).
    #[test]
    fn match_the_formulas() {
        let labels = [3, 0, 1, 0, 3, 1, 2, 0];
        let x = points(8, 4, 11);
        let row = |i: usize| unit(&x[i * 4..(i + 1) * 4]);
        let pairs = [(1usize, 3usize), (2, 5), (0, 4)]; // labels 0, 1, 3
        let t = 45f64.to_radians().tan().powi(2);
        let (mut angular, mut npair) = (0.0, 0.0);
        for (i, &(a, p)) in pairs.iter().enumerate() {
            let (fa, fp) = (row(a), row(p));
            let mut sum_ang = 1.0;
            let mut sum_np = 0.0;
            for (j, &(_, q)) in pairs.iter().enumerate() {
                let fq = row(q);
                sum_np += dot(&fa, &fq).exp();
                if j != i {
                    let s: Vec<f64> = fa.iter().zip(&fp).map(|(u, v)| u + v).collect();
                    sum_ang += (4.0 * t * dot(&s, &fq) - 2.0 * (1.0 + t) * dot(&fa, &fp)).exp();
                }
            }
            angular += sum_ang.ln();
            npair += sum_np.ln() - dot(&fa, &fp);
        }
        let k = pairs.len() as f64;
        let mc = AngularMcLoss::new(45.0, true).unwrap();
        let got = mc
            .compute(&input(&x, 4, &labels, Selection::All, Reducer::Mean))
            .unwrap();
        assert!(
            (got.loss - angular / k).abs() < 1e-12,
            "{} vs {}",
            got.loss,
            angular / k
        );
        let both = NPairAngularLoss::new(45.0, 2.0, true).unwrap();
        let got = both
            .compute(&input(&x, 4, &labels, Selection::All, Reducer::Mean))
            .unwrap();
        assert!((got.loss - (npair + 2.0 * angular) / k).abs() < 1e-12);
    }
}
