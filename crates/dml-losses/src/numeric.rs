//! Small numerically careful scalar functions shared by the kernels.

use dml_core::Real;

/// `torch.nn.functional.softplus` (beta 1, threshold 20): `log(1 + e^v)`, or `v` above 20.
#[inline]
pub fn softplus<T: Real>(v: T) -> T {
    if v > T::of(20.0) { v } else { v.exp().ln_1p() }
}

/// Derivative of [`softplus`]: the logistic sigmoid, or 1 above the threshold.
#[inline]
pub fn softplus_grad<T: Real>(v: T) -> T {
    if v > T::of(20.0) {
        T::one()
    } else {
        sigmoid(v)
    }
}

/// The logistic sigmoid `1 / (1 + e^-v)`, without overflow for large `|v|`.
#[inline]
pub fn sigmoid<T: Real>(v: T) -> T {
    if v >= T::zero() {
        T::one() / (T::one() + (-v).exp())
    } else {
        let e = v.exp();
        e / (T::one() + e)
    }
}

/// A running log-sum-exp: add terms one at a time, read `log(sum exp)` at the end.
///
/// Keeps the maximum seen so far and rescales, so it neither overflows nor underflows.
#[derive(Debug, Clone, Copy)]
pub struct LogSumExp<T> {
    max: T,
    sum: T,
}

impl<T: Real> Default for LogSumExp<T> {
    fn default() -> Self {
        Self {
            max: T::neg_infinity(),
            sum: T::zero(),
        }
    }
}

impl<T: Real> LogSumExp<T> {
    /// Adds `e^v`.
    #[inline]
    pub fn add(&mut self, v: T) {
        if v <= self.max {
            self.sum += (v - self.max).exp();
        } else {
            self.sum = self.sum * (self.max - v).exp() + T::one();
            self.max = v;
        }
    }

    /// Whether no term was added (then the log-sum-exp is `-inf`).
    pub fn is_empty(&self) -> bool {
        self.max == T::neg_infinity()
    }

    /// `log(sum e^v)`; `-inf` when empty.
    pub fn value(&self) -> T {
        if self.is_empty() {
            T::neg_infinity()
        } else {
            self.max + self.sum.ln()
        }
    }

    /// `log(1 + sum e^v)`, i.e. the log-sum-exp with an appended 0 (PML's `add_one=True`).
    pub fn value_plus_one(&self) -> T {
        if self.is_empty() {
            T::zero()
        } else if self.max > T::zero() {
            self.max + (self.sum + (-self.max).exp()).ln()
        } else {
            (self.sum * self.max.exp()).ln_1p()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_sum_exp_is_stable_and_exact() {
        let mut l = LogSumExp::<f64>::default();
        for v in [1000.0, 999.0, -5.0] {
            l.add(v);
        }
        let want = 1000.0 + (1.0 + (-1.0f64).exp() + (-1005.0f64).exp()).ln();
        assert!((l.value() - want).abs() < 1e-12);
        let mut s = LogSumExp::<f64>::default();
        s.add(-40.0);
        assert!((s.value_plus_one() - (-40.0f64).exp().ln_1p()).abs() < 1e-30);
        s.add(3.0);
        let want = (1.0 + 3.0f64.exp() + (-40.0f64).exp()).ln();
        assert!((s.value_plus_one() - want).abs() < 1e-12);
        assert_eq!(LogSumExp::<f32>::default().value_plus_one(), 0.0);
    }

    #[test]
    fn softplus_and_sigmoid_saturate_without_nan() {
        assert_eq!(softplus(100.0f32), 100.0);
        assert!(softplus(-200.0f32) >= 0.0);
        assert_eq!(sigmoid(-1000.0f64), 0.0);
        assert_eq!(sigmoid(1000.0f64), 1.0);
        assert!((softplus_grad(0.0f64) - 0.5).abs() < 1e-15);
    }
}
