//! ArcFace loss (Deng et al. 2019), PML's form.

use dml_core::Real;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::proxies::proxy_batch;
use super::{KernelInput, KernelOutput, LossKernel};
use crate::distance::Distance;
use crate::error::{Error, Result};
use crate::reducer::Reducer;

/// ArcFace: softmax cross-entropy over cosine logits with an additive angular margin on the
/// target class.
///
/// ```text
/// c_ik = cos(x_i, w_k),  theta = acos(clamp(c_iy, -1, 1)),  m = margin in radians
/// t_i  = cos(theta + m)            if theta <= pi - m
///      = c_iy - m * sin(m)         otherwise (keeps the logit decreasing in theta)
/// logits = scale * c_ik for k != y_i, scale * t_i for k = y_i
/// l_i = w_i * CE(logits_i, y_i),   L = reduce(l)
/// ```
///
/// `w_k` is class `k`'s weight vector, stored as the proxy row `k` (PML keeps `W` as `d x C`;
/// the proxies here are `W^T`). `w_i` is 1 without a miner, else PML's miner weight.
///
/// The derivative of `cos(acos(c) + m)` is `sin(theta + m) / sin(theta)`, infinite at
/// `c = 1` (PML then yields inf / NaN); dml floors `sin(theta)` at `sqrt(epsilon)` there, so
/// a sample lying exactly on its class direction gets a large but finite gradient.
///
/// # Shapes
/// embeddings `[n, d]`, labels `[n]` in `0..num_classes`, proxies (learnable parameters)
/// `[num_classes, d]`, whose gradient is returned in `param_grad`. O(n * C * d).
///
/// PML defaults (`ArcFaceLoss(num_classes, embedding_size)`): `margin = 28.6` degrees,
/// `scale = 64`, distance `Cosine` (the only one the formula makes sense with), reducer `Mean`;
/// weights start as N(0, 1). Reference: PML `losses/arcface_loss.py` and
/// `losses/large_margin_softmax_loss.py`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ArcFaceLoss {
    num_classes: usize,
    margin_degrees: f64,
    scale: f64,
}

impl ArcFaceLoss {
    /// An ArcFace loss over `num_classes >= 1` classes; `margin_degrees` in `[0, 180)`,
    /// `scale > 0`. `distance` must be a cosine similarity (`Cosine`, or `DotProduct` with
    /// normalisation).
    pub fn new(
        distance: Distance,
        num_classes: usize,
        margin_degrees: f64,
        scale: f64,
    ) -> Result<Self> {
        if !matches!(
            distance,
            Distance::Cosine | Distance::DotProduct { normalize: true }
        ) {
            return Err(Error::UnsupportedDistance {
                owner: "ArcFaceLoss",
                required: "CosineSimilarity (angles need normalised points)",
                given: distance.describe(),
            });
        }
        if num_classes == 0 {
            return Err(Error::InvalidParameter {
                owner: "ArcFaceLoss",
                param: "num_classes",
                value: 0.0,
                reason: "must be at least 1",
            });
        }
        if !(0.0..180.0).contains(&margin_degrees) {
            return Err(Error::InvalidParameter {
                owner: "ArcFaceLoss",
                param: "margin",
                value: margin_degrees,
                reason: "is an angle in degrees and must be in [0, 180)",
            });
        }
        crate::error::positive("ArcFaceLoss", "scale", scale)?;
        Ok(Self {
            num_classes,
            margin_degrees,
            scale,
        })
    }

    /// Number of classes (weight vectors).
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The target logit before scaling and its derivative with respect to the target cosine.
    fn target<T: Real>(&self, cos: T) -> (T, T) {
        let m = T::of(self.margin_degrees.to_radians());
        let c = cos.max(-T::one()).min(T::one());
        let theta = c.acos();
        if theta <= T::of(std::f64::consts::PI) - m {
            let sin = (T::one() - c * c).sqrt().max(T::epsilon().sqrt());
            ((theta + m).cos(), (theta + m).sin() / sin)
        } else {
            (c - m * m.sin(), T::one())
        }
    }
}

impl LossKernel for ArcFaceLoss {
    fn name(&self) -> &'static str {
        "ArcFaceLoss"
    }

    fn pml_default_reducer(&self) -> Reducer {
        Reducer::Mean
    }

    fn param_shape(&self, dim: usize) -> Option<(usize, usize)> {
        Some((self.num_classes, dim))
    }

    fn compute<T: Real>(&self, input: &KernelInput<'_, T>) -> Result<KernelOutput<T>> {
        let x = input.embeddings;
        let n = x.rows();
        let c = self.num_classes;
        let batch = proxy_batch(input, self.name(), c)?;
        let labels = input.labels;
        let scale = T::of(self.scale);
        let scores = Distance::Cosine.scores(x, Some(batch.proxies));
        let logit = |i: usize, k: usize, s: T| {
            if labels[i] as usize == k {
                scale * self.target(s).0
            } else {
                scale * s
            }
        };
        // Per row: (log-sum-exp of the logits, weighted cross-entropy).
        let rows: Vec<(T, T)> = (0..n)
            .into_par_iter()
            .map(|i| {
                let row = scores.row(i);
                let max = row
                    .iter()
                    .enumerate()
                    .map(|(k, &s)| logit(i, k, s))
                    .fold(T::neg_infinity(), T::max);
                let sum: T = row
                    .iter()
                    .enumerate()
                    .map(|(k, &s)| (logit(i, k, s) - max).exp())
                    .sum();
                let lse = max + sum.ln();
                let y = labels[i] as usize;
                (lse, batch.weight(i) * (lse - logit(i, y, row[y])))
            })
            .collect();
        let losses: Vec<T> = rows.iter().map(|r| r.1).collect();
        let red = input.reducer.reduce(&losses, None);
        let mut grad_s = vec![T::zero(); n * c];
        grad_s.par_chunks_mut(c).enumerate().for_each(|(i, g)| {
            let (lse, loss) = rows[i];
            let w = input.reducer.weight(&red, loss) * batch.weight(i) * scale;
            if w == T::zero() {
                return;
            }
            for (k, (gk, &s)) in g.iter_mut().zip(scores.row(i)).enumerate() {
                let p = (logit(i, k, s) - lse).exp();
                *gk = if labels[i] as usize == k {
                    w * (p - T::one()) * self.target(s).1
                } else {
                    w * p
                };
            }
        });
        let grads = scores.backward(&mut grad_s);
        Ok(KernelOutput::per_element(
            red.value,
            grads,
            losses,
            n as u64,
            input.want_terms,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::Selection;
    use crate::matrix::MatrixRef;

    fn unit(v: &[f64]) -> Vec<f64> {
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        v.iter().map(|a| a / norm).collect()
    }

    fn oracle(x: &[f64], labels: &[i64], p: &[f64], d: usize, margin_deg: f64, scale: f64) -> f64 {
        let c = p.len() / d;
        let m = margin_deg.to_radians();
        let mut total = 0.0;
        for (i, &y) in labels.iter().enumerate() {
            let xi = unit(&x[i * d..(i + 1) * d]);
            let logits: Vec<f64> = (0..c)
                .map(|k| {
                    let cos: f64 = xi
                        .iter()
                        .zip(unit(&p[k * d..(k + 1) * d]))
                        .map(|(a, b)| a * b)
                        .sum();
                    if k as i64 != y {
                        scale * cos
                    } else if cos.acos() <= std::f64::consts::PI - m {
                        scale * (cos.acos() + m).cos()
                    } else {
                        scale * (cos - m * m.sin())
                    }
                })
                .collect();
            let lse = logits.iter().map(|v| v.exp()).sum::<f64>().ln();
            total += lse - logits[y as usize];
        }
        total / labels.len() as f64
    }

    #[test]
    fn matches_the_formula_and_finite_differences() {
        let x: Vec<f64> = (0..15)
            .map(|k| ((k * 7919) % 23) as f64 / 7.0 - 1.5)
            .collect();
        // Proxy 2 points away from row 2 (its class), so the "otherwise" branch is covered.
        let mut p: Vec<f64> = (0..9)
            .map(|k| ((k * 104_729) % 19) as f64 / 6.0 - 1.4)
            .collect();
        p[6..9].copy_from_slice(&[-x[6], -x[7] + 0.05, -x[8]]);
        let labels = [0, 1, 2, 1, 0];
        let loss = ArcFaceLoss::new(Distance::Cosine, 3, 28.6, 4.0).unwrap();
        let input = KernelInput {
            embeddings: MatrixRef::new(&x, 5, 3).unwrap(),
            labels: &labels,
            selection: Selection::All,
            params: Some(MatrixRef::new(&p, 3, 3).unwrap()),
            reducer: Reducer::Mean,
            want_terms: false,
            tuple_budget: 1 << 20,
        };
        let out = loss.compute(&input).unwrap();
        let want = oracle(&x, &labels, &p, 3, 28.6, 4.0);
        assert!((out.loss - want).abs() < 1e-12, "{} vs {want}", out.loss);
        let h = 1e-6;
        for k in 0..15 {
            let (mut up, mut down) = (x.clone(), x.clone());
            up[k] += h;
            down[k] -= h;
            let fd = (oracle(&up, &labels, &p, 3, 28.6, 4.0)
                - oracle(&down, &labels, &p, 3, 28.6, 4.0))
                / (2.0 * h);
            assert!(
                (fd - out.grad[k]).abs() < 1e-6,
                "embedding entry {k}: {fd} vs {}",
                out.grad[k]
            );
        }
        for k in 0..9 {
            let (mut up, mut down) = (p.clone(), p.clone());
            up[k] += h;
            down[k] -= h;
            let fd = (oracle(&x, &labels, &up, 3, 28.6, 4.0)
                - oracle(&x, &labels, &down, 3, 28.6, 4.0))
                / (2.0 * h);
            let g = out.param_grad.as_ref().unwrap()[k];
            assert!((fd - g).abs() < 1e-6, "proxy entry {k}: {fd} vs {g}");
        }
    }

    #[test]
    fn a_sample_on_its_class_direction_has_a_finite_gradient() {
        let x = [2.0f32, 0.0, 0.0, 1.0];
        let p = [1.0f32, 0.0, 0.0, 1.0];
        let loss = ArcFaceLoss::new(Distance::Cosine, 2, 28.6, 64.0).unwrap();
        let out = loss
            .compute(&KernelInput {
                embeddings: MatrixRef::new(&x, 2, 2).unwrap(),
                labels: &[0, 1],
                selection: Selection::All,
                params: Some(MatrixRef::new(&p, 2, 2).unwrap()),
                reducer: Reducer::Mean,
                want_terms: false,
                tuple_budget: 1 << 20,
            })
            .unwrap();
        assert!(
            out.loss.is_finite()
                && out
                    .grad
                    .iter()
                    .chain(out.param_grad.as_ref().unwrap())
                    .all(|g| g.is_finite())
        );
    }

    #[test]
    fn rejects_distances_and_margins_that_make_no_sense() {
        assert!(matches!(
            ArcFaceLoss::new(Distance::PML_LP_DEFAULT, 3, 28.6, 64.0),
            Err(Error::UnsupportedDistance { .. })
        ));
        assert!(ArcFaceLoss::new(Distance::Cosine, 3, -1.0, 64.0).is_err());
        assert!(ArcFaceLoss::new(Distance::Cosine, 3, 180.0, 64.0).is_err());
        assert!(ArcFaceLoss::new(Distance::Cosine, 3, 28.6, 0.0).is_err());
    }
}
