//! Proxy-NCA loss (Movshovitz-Attias et al. 2017), PML's form.

use dml_core::Real;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::proxies::proxy_batch;
use super::{KernelInput, KernelOutput, LossKernel, LossStats, LossTerm, TermIndices};
use crate::distance::Distance;
use crate::error::{Error, Result};
use crate::reducer::Reducer;

/// Proxy-NCA loss: softmax over the class proxies, with the true proxy in the denominator.
///
/// ```text
/// z_ic = -softmax_scale * farness(s_ic)          farness = distance, or -similarity
/// l_i  = -w_i * log softmax_c(z_i)[y_i]          rows whose probability is exactly 0 dropped
/// L = reduce(l over the kept rows)
/// ```
///
/// With the default squared distance between normalised points, `d^2 = 2 - 2 cos`, so this is a
/// normalised softmax with logits `2 * softmax_scale * cos` (PML note 22). Unlike the original
/// ProxyNCA the true proxy is in the denominator. `w_i` is 1 without a miner, else PML's miner
/// weight (appearances in the tuples divided by the largest count). A row whose target
/// probability underflows to exactly 0 (`exp(z_iy - max_c z_ic) == 0`) is dropped, as in PML.
///
/// # Shapes
/// embeddings `[n, d]`, labels `[n]` in `0..num_classes`, proxies (learnable parameters)
/// `[num_classes, d]`, whose gradient is returned in `param_grad`. O(n * C * d).
///
/// PML defaults (`ProxyNCALoss(num_classes, embedding_size)`): `softmax_scale = 1`, distance
/// `Lp { power: Two, normalize: true }`, reducer `Mean`; proxies start as N(0, 1).
/// Reference: PML `losses/proxy_losses.py` and `losses/nca_loss.py`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProxyNCALoss {
    distance: Distance,
    num_classes: usize,
    softmax_scale: f64,
}

impl ProxyNCALoss {
    /// A proxy-NCA loss over `num_classes >= 1` proxies; `softmax_scale > 0`.
    pub fn new(distance: Distance, num_classes: usize, softmax_scale: f64) -> Result<Self> {
        if num_classes == 0 {
            return Err(Error::InvalidParameter {
                owner: "ProxyNCALoss",
                param: "num_classes",
                value: 0.0,
                reason: "must be at least 1",
            });
        }
        crate::error::positive("ProxyNCALoss", "softmax_scale", softmax_scale)?;
        Ok(Self {
            distance,
            num_classes,
            softmax_scale,
        })
    }

    /// Number of proxies (classes).
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }
}

impl LossKernel for ProxyNCALoss {
    fn name(&self) -> &'static str {
        "ProxyNCALoss"
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
        let dist = self.distance;
        let scale = T::of(self.softmax_scale);
        let logit = move |s: T| -scale * dist.farness(s);
        let scores = dist.scores(x, Some(batch.proxies));
        // Per row: the log-sum-exp of the logits and the loss, or None when dropped.
        let rows: Vec<(T, Option<T>)> = (0..n)
            .into_par_iter()
            .map(|i| {
                let row = scores.row(i);
                let max = row
                    .iter()
                    .map(|&s| logit(s))
                    .fold(T::neg_infinity(), T::max);
                let sum: T = row.iter().map(|&s| (logit(s) - max).exp()).sum();
                let target = logit(row[labels[i] as usize]) - max;
                let lse = max + sum.ln();
                let kept = target.exp() != T::zero();
                (lse, kept.then(|| batch.weight(i) * (sum.ln() - target)))
            })
            .collect();
        let kept: Vec<u32> = (0..n as u32)
            .filter(|&i| rows[i as usize].1.is_some())
            .collect();
        let losses: Vec<T> = rows.iter().filter_map(|r| r.1).collect();
        let red = input.reducer.reduce(&losses, None);
        // d l_i / d z_ic = w_i (p_ic - [c = y_i]); d z / d s = -scale * slope.
        let dz = -scale * dist.margin_slope::<T>();
        let mut grad_s = vec![T::zero(); n * c];
        grad_s.par_chunks_mut(c).enumerate().for_each(|(i, g)| {
            let (lse, loss) = rows[i];
            let Some(loss) = loss else { return };
            let w = input.reducer.weight(&red, loss) * batch.weight(i);
            if w == T::zero() {
                return;
            }
            for (k, (gk, &s)) in g.iter_mut().zip(scores.row(i)).enumerate() {
                let p = (logit(s) - lse).exp();
                let target = if labels[i] as usize == k {
                    T::one()
                } else {
                    T::zero()
                };
                *gk = w * dz * (p - target);
            }
        });
        let grads = scores.backward(&mut grad_s);
        let stats = LossStats {
            active: losses.iter().filter(|&&l| l != T::zero()).count() as u64,
            total: losses.len() as u64,
        };
        let terms = if input.want_terms {
            vec![LossTerm {
                name: "loss",
                losses,
                indices: TermIndices::PerElement(kept),
            }]
        } else {
            Vec::new()
        };
        Ok(KernelOutput {
            loss: red.value,
            grad: grads.x,
            param_grad: grads.y,
            terms,
            stats,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance::LpPower;
    use crate::loss::Selection;
    use crate::matrix::MatrixRef;

    const LP2: Distance = Distance::Lp {
        power: LpPower::Two,
        normalize: true,
    };

    fn unit(v: &[f64]) -> Vec<f64> {
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        v.iter().map(|a| a / norm).collect()
    }

    /// Mean over rows of `-log softmax(-scale * d^2)[y]`, normalised points, plain loops.
    fn oracle(x: &[f64], labels: &[i64], p: &[f64], d: usize, scale: f64) -> f64 {
        let c = p.len() / d;
        let n = labels.len();
        let mut total = 0.0;
        for i in 0..n {
            let xi = unit(&x[i * d..(i + 1) * d]);
            let z: Vec<f64> = (0..c)
                .map(|k| {
                    let pk = unit(&p[k * d..(k + 1) * d]);
                    -scale
                        * xi.iter()
                            .zip(&pk)
                            .map(|(a, b)| (a - b) * (a - b))
                            .sum::<f64>()
                })
                .collect();
            let denom: f64 = z.iter().map(|v| v.exp()).sum();
            total += -(z[labels[i] as usize].exp() / denom).ln();
        }
        total / n as f64
    }

    fn input<'a>(x: &'a [f64], labels: &'a [i64], p: &'a [f64]) -> KernelInput<'a, f64> {
        KernelInput {
            embeddings: MatrixRef::new(x, labels.len(), 3).unwrap(),
            labels,
            selection: Selection::All,
            params: Some(MatrixRef::new(p, p.len() / 3, 3).unwrap()),
            reducer: Reducer::Mean,
            want_terms: false,
            tuple_budget: 1 << 20,
        }
    }

    #[test]
    fn matches_the_formula_and_finite_differences() {
        let x: Vec<f64> = (0..15)
            .map(|k| ((k * 7919) % 23) as f64 / 7.0 - 1.5)
            .collect();
        let p: Vec<f64> = (0..9)
            .map(|k| ((k * 104_729) % 19) as f64 / 6.0 - 1.4)
            .collect();
        let labels = [0, 1, 2, 1, 0];
        let loss = ProxyNCALoss::new(LP2, 3, 2.0).unwrap();
        let out = loss.compute(&input(&x, &labels, &p)).unwrap();
        let want = oracle(&x, &labels, &p, 3, 2.0);
        assert!((out.loss - want).abs() < 1e-12, "{} vs {want}", out.loss);
        let h = 1e-6;
        for k in [0, 4, 8] {
            let (mut up, mut down) = (p.clone(), p.clone());
            up[k] += h;
            down[k] -= h;
            let fd =
                (oracle(&x, &labels, &up, 3, 2.0) - oracle(&x, &labels, &down, 3, 2.0)) / (2.0 * h);
            let g = out.param_grad.as_ref().unwrap()[k];
            assert!((fd - g).abs() < 1e-6, "proxy entry {k}: {fd} vs {g}");
        }
        for k in [1, 7, 14] {
            let (mut up, mut down) = (x.clone(), x.clone());
            up[k] += h;
            down[k] -= h;
            let fd =
                (oracle(&up, &labels, &p, 3, 2.0) - oracle(&down, &labels, &p, 3, 2.0)) / (2.0 * h);
            assert!(
                (fd - out.grad[k]).abs() < 1e-6,
                "embedding entry {k}: {fd} vs {}",
                out.grad[k]
            );
        }
    }

    #[test]
    fn rows_with_underflowing_probability_are_dropped() {
        // Row 0 sits on proxy 1 but is labelled 0, whose proxy is opposite: with scale 1000 its
        // target probability is exp(-4000) = 0 exactly.
        let x = [1.0, 0.0, 0.0, -1.0, 0.1, 0.0];
        let p = [-1.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        let loss = ProxyNCALoss::new(LP2, 2, 1000.0).unwrap();
        let out = loss
            .compute(&KernelInput {
                want_terms: true,
                ..input(&x, &[0, 0], &p)
            })
            .unwrap();
        assert_eq!(out.terms[0].indices, TermIndices::PerElement(vec![1]));
        assert!(out.loss.is_finite() && out.grad[..3].iter().all(|&g| g == 0.0));
    }
}
