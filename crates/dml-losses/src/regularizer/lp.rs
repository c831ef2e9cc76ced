//! The Lp-norm regulariser.

use dml_core::Real;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::matrix::MatrixRef;

/// `weight * mean_i ||x_i||_p ^ power` over all rows (PML `LpRegularizer`, note 8).
///
/// ```text
/// R = weight / N * sum_i ( sum_k |x_ik|^p )^(power / p)
/// ```
///
/// Applied to the raw embeddings of the whole batch (not only mined ones), or to proxy rows.
/// The N-pair paper's `lambda * ||f||^2` is `p = 2, power = 2`. Rows of norm 0 get gradient 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LpRegularizer {
    p: f64,
    power: f64,
    weight: f64,
}

impl LpRegularizer {
    /// A regulariser; `p >= 1`, `power > 0` and `weight` finite.
    ///
    /// PML defaults: `p = 2`, `power = 1` (the mean norm, not the squared norm), weight 1.
    pub fn new(p: f64, power: f64, weight: f64) -> Result<Self> {
        if !(p.is_finite() && p >= 1.0) {
            return Err(Error::InvalidParameter {
                owner: "LpRegularizer",
                param: "p",
                value: p,
                reason: "must be finite and >= 1",
            });
        }
        crate::error::positive("LpRegularizer", "power", power)?;
        crate::error::finite("LpRegularizer", "weight", weight)?;
        Ok(Self { p, power, weight })
    }

    /// The norm's order.
    pub fn p(&self) -> f64 {
        self.p
    }

    /// The power the norm is raised to.
    pub fn power(&self) -> f64 {
        self.power
    }

    /// The weight multiplying the mean.
    pub fn weight(&self) -> f64 {
        self.weight
    }

    /// The regularisation value and its gradient with respect to `x` (same shape as `x`).
    pub fn compute<T: Real>(&self, x: MatrixRef<'_, T>) -> (T, Vec<T>) {
        let (n, d) = (x.rows(), x.cols());
        let mut grad = vec![T::zero(); n * d];
        if n == 0 || d == 0 {
            return (T::zero(), grad);
        }
        let (p, power) = (T::of(self.p), T::of(self.power));
        let scale = T::of(self.weight) / T::of(n as f64);
        let values: Vec<T> = grad
            .par_chunks_mut(d)
            .enumerate()
            .map(|(i, g)| {
                let row = x.row(i);
                let norm = if self.p == 2.0 {
                    row.iter().map(|&v| v * v).sum::<T>().sqrt()
                } else {
                    row.iter()
                        .map(|&v| v.abs().powf(p))
                        .sum::<T>()
                        .powf(T::one() / p)
                };
                if norm > T::zero() {
                    // d ||x||^power / dx_k = power ||x||^(power - p) sign(x_k) |x_k|^(p - 1)
                    let outer = scale * power * norm.powf(power - p);
                    for (gk, &v) in g.iter_mut().zip(row) {
                        let inner = if self.p == 2.0 {
                            v
                        } else {
                            v.signum() * v.abs().powf(p - T::one())
                        };
                        *gk = outer * inner;
                    }
                }
                norm.powf(power)
            })
            .collect();
        (scale * values.into_iter().sum::<T>(), grad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_norm_and_gradient() {
        let x = [3.0f64, 4.0, 0.0, 0.0];
        let m = MatrixRef::new(&x, 2, 2).unwrap();
        let (v, g) = LpRegularizer::new(2.0, 1.0, 0.5).unwrap().compute(m);
        assert!((v - 0.5 * 5.0 / 2.0).abs() < 1e-12);
        assert!((g[0] - 0.25 * 0.6).abs() < 1e-12 && (g[1] - 0.25 * 0.8).abs() < 1e-12);
        assert_eq!(&g[2..], &[0.0, 0.0]);
        let (v2, g2) = LpRegularizer::new(2.0, 2.0, 1.0).unwrap().compute(m);
        assert!((v2 - 12.5).abs() < 1e-12 && (g2[0] - 3.0).abs() < 1e-12);
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(LpRegularizer::new(0.5, 1.0, 1.0).is_err());
        assert!(LpRegularizer::new(2.0, 0.0, 1.0).is_err());
        assert!(LpRegularizer::new(2.0, 1.0, f64::NAN).is_err());
    }
}
