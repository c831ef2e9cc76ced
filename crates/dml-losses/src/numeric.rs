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

/// The exponents of one row, kept so that `log(1 + sum e^v)` (or `log sum e^v`) and every
/// term's softmax weight cost one `exp` per term.
#[derive(Debug, Clone, Default)]
pub struct ExpTerms<T> {
    index: Vec<u32>,
    value: Vec<T>,
    total: T,
}

impl<T: Real> ExpTerms<T> {
    /// Forgets the previous row's terms (keeps the allocation).
    pub fn clear(&mut self) {
        self.index.clear();
        self.value.clear();
    }

    /// Adds the term `e^v` belonging to column `j`.
    #[inline]
    pub fn push(&mut self, j: usize, v: T) {
        self.index.push(j as u32);
        self.value.push(v);
    }

    /// Whether no term was added.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// `log(plus_one + sum e^v)` with `plus_one` 0 or 1; afterwards [`ExpTerms::weights`]
    /// gives `e^v / (plus_one + sum e^v)`. Empty: `log(plus_one)` (0 or `-inf`).
    pub fn log_sum(&mut self, plus_one: bool) -> T {
        let mut max = self.value.iter().copied().fold(T::neg_infinity(), T::max);
        if plus_one {
            max = max.max(T::zero());
        }
        if max == T::neg_infinity() {
            self.total = T::zero();
            return max;
        }
        let mut total = if plus_one { (-max).exp() } else { T::zero() };
        for v in &mut self.value {
            *v = (*v - max).exp();
            total += *v;
        }
        self.total = total;
        max + total.ln()
    }

    /// `(column, softmax weight)` of every term, after [`ExpTerms::log_sum`].
    pub fn weights(&self) -> impl Iterator<Item = (usize, T)> + '_ {
        self.index
            .iter()
            .zip(&self.value)
            .map(|(&j, &e)| (j as usize, e / self.total))
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
    fn exp_terms_agree_with_the_running_log_sum_exp() {
        let vals = [3.0f64, -2.0, 700.0, 699.5];
        let mut t = ExpTerms::default();
        let mut l = LogSumExp::default();
        for (j, &v) in vals.iter().enumerate() {
            t.push(j, v);
            l.add(v);
        }
        let with_one = t.clone().log_sum(true);
        assert!((with_one - l.value_plus_one()).abs() < 1e-12);
        let lse = t.log_sum(false);
        assert!((lse - l.value()).abs() < 1e-12);
        let w: f64 = t.weights().map(|(_, w)| w).sum();
        assert!((w - 1.0).abs() < 1e-12);
        let mut empty = ExpTerms::<f32>::default();
        assert_eq!(empty.log_sum(true), 0.0);
        assert_eq!(empty.log_sum(false), f32::NEG_INFINITY);
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
