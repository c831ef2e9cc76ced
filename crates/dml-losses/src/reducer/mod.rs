//! Reducers: how a vector of per-element losses becomes one number.
//!
//! Every reducer here has the same shape: it *keeps* some entries (all, the positive ones, or
//! those inside a window) and multiplies their sum by a *scale* (1 / count, 1, or 1 / divisor).
//! That shape is what lets fused kernels reduce losses they never materialise: they only need
//! counts and sums over the kept entries. The gradient of the reduced value with respect to
//! entry `k` is `scale` if `k` is kept and 0 otherwise.

mod threshold;

pub use threshold::ThresholdBounds;

use dml_core::Real;
use serde::{Deserialize, Serialize};

/// A reducer (PML's `reducers` module). Each loss documents its PML default; dml never picks one
/// silently in its Rust API.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reducer {
    /// Plain mean over all entries, zeros included (PML `MeanReducer`).
    Mean,
    /// Mean over the entries strictly greater than 0, or 0 when there are none
    /// (PML `AvgNonZeroReducer`, note 7).
    AvgNonZero,
    /// Sum of all entries (PML `SumReducer`).
    Sum,
    /// Mean over the entries strictly inside `(low, high)`, or 0 when there are none
    /// (PML `ThresholdReducer`).
    Threshold(ThresholdBounds),
    /// Sum divided by a divisor the loss supplies with each term, or 0 when it is 0
    /// (PML `DivisorReducer`; ProxyAnchorLoss and MarginLoss supply divisors).
    Divisor,
}

/// The outcome of reducing one term: its value and the per-kept-entry gradient.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reduction<T> {
    /// The reduced loss.
    pub value: T,
    /// `d value / d entry` for every kept entry (0 for the others).
    pub scale: T,
    /// How many entries were kept.
    pub kept: u64,
}

impl Reducer {
    /// PML's class name.
    pub fn pml_name(&self) -> &'static str {
        match self {
            Reducer::Mean => "MeanReducer",
            Reducer::AvgNonZero => "AvgNonZeroReducer",
            Reducer::Sum => "SumReducer",
            Reducer::Threshold(_) => "ThresholdReducer",
            Reducer::Divisor => "DivisorReducer",
        }
    }

    /// Whether an entry with this loss value takes part in the reduction.
    #[inline]
    pub fn keeps<T: Real>(&self, loss: T) -> bool {
        self.above_lower(loss) && self.below_upper(loss)
    }

    /// The lower half of [`Reducer::keeps`]: true for all entries above the reducer's lower
    /// bound (0 for `AvgNonZero`). Monotone in the loss, which lets fused kernels find the kept
    /// entries of a sorted run with binary search.
    #[inline]
    pub fn above_lower<T: Real>(&self, loss: T) -> bool {
        match self {
            Reducer::Mean | Reducer::Sum | Reducer::Divisor => true,
            Reducer::AvgNonZero => loss > T::zero(),
            Reducer::Threshold(b) => b.low().is_none_or(|l| loss > T::of(l)),
        }
    }

    /// The upper half of [`Reducer::keeps`]: true for all entries below the upper bound.
    #[inline]
    pub fn below_upper<T: Real>(&self, loss: T) -> bool {
        match self {
            Reducer::Threshold(b) => b.high().is_none_or(|h| loss < T::of(h)),
            _ => true,
        }
    }

    /// The factor applied to the sum of `kept` kept entries; `divisor` is the loss-supplied
    /// divisor for [`Reducer::Divisor`] (`None` is treated as 1: only losses that supply one
    /// accept this reducer).
    pub fn scale<T: Real>(&self, kept: u64, divisor: Option<T>) -> T {
        let per_count = |c: u64| {
            if c == 0 {
                T::zero()
            } else {
                T::one() / T::of(c as f64)
            }
        };
        match self {
            Reducer::Mean | Reducer::AvgNonZero | Reducer::Threshold(_) => per_count(kept),
            Reducer::Sum => T::one(),
            Reducer::Divisor => match divisor {
                Some(d) if d != T::zero() => T::one() / d,
                Some(_) => T::zero(),
                None => T::one(),
            },
        }
    }

    /// Reduces a materialised vector of losses.
    pub fn reduce<T: Real>(&self, losses: &[T], divisor: Option<T>) -> Reduction<T> {
        // Accumulated in f64: f32 sums over many pairs would drift past PML's tolerance.
        let mut sum = 0.0f64;
        let mut kept = 0u64;
        for &l in losses {
            if self.keeps(l) {
                sum += l.f64();
                kept += 1;
            }
        }
        let scale = self.scale(kept, divisor);
        Reduction {
            value: if kept == 0 {
                T::zero()
            } else {
                T::of(sum * scale.f64())
            },
            scale,
            kept,
        }
    }

    /// `d reduced / d losses[k]` for a reduction computed by [`Reducer::reduce`].
    #[inline]
    pub fn weight<T: Real>(&self, reduction: &Reduction<T>, loss: T) -> T {
        if self.keeps(loss) {
            reduction.scale
        } else {
            T::zero()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reducers_keep_and_scale_like_pml() {
        let l = [0.0, 2.0, 4.0, 0.5];
        assert_eq!(Reducer::Mean.reduce(&l, None).value, 6.5 / 4.0);
        assert_eq!(Reducer::AvgNonZero.reduce(&l, None).value, 6.5 / 3.0);
        assert_eq!(Reducer::Sum.reduce(&l, None).value, 6.5);
        let t = Reducer::Threshold(ThresholdBounds::new(Some(0.5), Some(4.0)).unwrap());
        assert_eq!(t.reduce(&l, None).value, 2.0);
        assert_eq!(Reducer::Divisor.reduce(&l, Some(2.0)).value, 3.25);
        assert_eq!(Reducer::Divisor.reduce(&l, Some(0.0)).value, 0.0);
        assert_eq!(Reducer::AvgNonZero.reduce(&[0.0f64; 3], None).value, 0.0);
        assert_eq!(Reducer::Mean.reduce::<f64>(&[], None).value, 0.0);
    }

    #[test]
    fn weights_are_zero_for_dropped_entries() {
        let l = [0.0, 2.0];
        let r = Reducer::AvgNonZero.reduce(&l, None);
        assert_eq!(Reducer::AvgNonZero.weight(&r, 0.0), 0.0);
        assert_eq!(Reducer::AvgNonZero.weight(&r, 2.0), 1.0);
    }
}
