//! Small numerically careful functions shared by the kernels: scalar helpers, and
//! [`exp_in_place`], the exponential over a slice that the kernels' hot loops use.

use std::any::TypeId;

use dml_core::Real;

/// `torch.nn.functional.softplus` (beta 1, threshold 20): `log(1 + e^v)`, or `v` above 20.
#[inline]
pub fn softplus<T: Real>(v: T) -> T {
    if v > T::of(20.0) { v } else { v.exp().ln_1p() }
}

/// `log(1 + e^v)` without a threshold (exact where [`softplus`] returns `v`).
#[inline]
pub fn log_one_plus_exp<T: Real>(v: T) -> T {
    if v > T::zero() {
        v + (-v).exp().ln_1p()
    } else {
        v.exp().ln_1p()
    }
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

    /// How many terms were added.
    pub fn len(&self) -> usize {
        self.index.len()
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

/// Replaces every `v` in `values` by `e^v`.
///
/// `f32` runs a branch-free polynomial that the compiler vectorises (8 lanes with AVX2,
/// chosen at run time): scalar libm `expf` does not vectorise and was a third of the
/// exponential-heavy kernels' time. It is within 1 ulp of the correctly rounded value in the
/// normal range, rounds correctly into the subnormal range, gives exactly 0 below
/// `ln(2^-150)`, `inf` above `ln(f32::MAX)` and propagates NaN. Its additions and
/// multiplications are never fused, so both builds give the same bits. `f64` keeps
/// `f64::exp` (the reference checks want the libm result). Written here rather than taken from
/// a crate: the crates that vectorise `exp` need nightly `std::simd` or their own vector
/// types, which would not compose with our plain slice loops.
pub fn exp_in_place<T: Real>(values: &mut [T]) {
    match as_f32_slice(values) {
        Some(v) => exp_f32_slice(v),
        None => values.iter_mut().for_each(|v| *v = v.exp()),
    }
}

/// Partial sums kept by [`dot`], [`sum`] and [`max`]: enough independent lanes for the
/// compiler to vectorise a reduction it may not reorder.
const LANES: usize = 16;

/// `sum a[k] b[k]` over the common length, in a fixed order that vectorises: 16
/// running sums, added together at the end. The same inputs give the same bits on any thread.
pub fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let len = a.len().min(b.len());
    let (a_chunks, a_tail) = a[..len].as_chunks::<LANES>();
    let (b_chunks, b_tail) = b[..len].as_chunks::<LANES>();
    let mut acc = [T::zero(); LANES];
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for lane in 0..LANES {
            acc[lane] += x[lane] * y[lane];
        }
    }
    let tail = a_tail
        .iter()
        .zip(b_tail)
        .fold(T::zero(), |s, (&x, &y)| s + x * y);
    acc.iter().fold(T::zero(), |s, &v| s + v) + tail
}

/// `sum v[k]`, in [`dot`]'s fixed vectorisable order.
pub fn sum<T: Real>(values: &[T]) -> T {
    let (chunks, tail) = values.as_chunks::<LANES>();
    let mut acc = [T::zero(); LANES];
    for x in chunks {
        for lane in 0..LANES {
            acc[lane] += x[lane];
        }
    }
    acc.iter().fold(T::zero(), |s, &v| s + v) + tail.iter().fold(T::zero(), |s, &v| s + v)
}

/// The smallest value (`inf` for an empty slice); NaN entries are skipped.
pub fn min<T: Real>(values: &[T]) -> T {
    let (chunks, tail) = values.as_chunks::<LANES>();
    let mut acc = [T::infinity(); LANES];
    for x in chunks {
        for lane in 0..LANES {
            acc[lane] = if x[lane] < acc[lane] {
                x[lane]
            } else {
                acc[lane]
            };
        }
    }
    acc.iter()
        .chain(tail)
        .fold(T::infinity(), |m, &v| if v < m { v } else { m })
}

/// The largest value (`-inf` for an empty slice); NaN entries are skipped.
pub fn max<T: Real>(values: &[T]) -> T {
    let (chunks, tail) = values.as_chunks::<LANES>();
    let mut acc = [T::neg_infinity(); LANES];
    // `if v > m` rather than `T::max`: the comparison compiles to one vector max.
    for x in chunks {
        for lane in 0..LANES {
            acc[lane] = if x[lane] > acc[lane] {
                x[lane]
            } else {
                acc[lane]
            };
        }
    }
    acc.iter()
        .chain(tail)
        .fold(T::neg_infinity(), |m, &v| if v > m { v } else { m })
}

/// `values` as `f32`s when `T` is `f32`.
fn as_f32_slice<T: Real>(values: &mut [T]) -> Option<&mut [f32]> {
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        // SAFETY: `T` is `f32` (same type id), so this is the same slice with its own type.
        Some(unsafe { &mut *(values as *mut [T] as *mut [f32]) })
    } else {
        None
    }
}

fn exp_f32_slice(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { exp_f32_slice_avx2(values) };
        return;
    }
    exp_f32_slice_portable(values);
}

/// [`exp_f32_slice_portable`] compiled for AVX2 (8 lanes instead of SSE2's 4).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn exp_f32_slice_avx2(values: &mut [f32]) {
    exp_f32_slice_portable(values);
}

#[inline(always)]
fn exp_f32_slice_portable(values: &mut [f32]) {
    values.iter_mut().for_each(|v| *v = exp_f32(*v));
}

/// `e^x` for one `f32`, branch-free (Cephes' `expf`: `x = n ln 2 + r`, `|r| <= ln(2) / 2`,
/// `e^r` by a degree-7 polynomial, then `2^n` applied as two exact power-of-two factors so
/// that results in the subnormal range are rounded once).
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    // Beyond these the result is inf / 0 anyway; clamping keeps 2^n representable. Written as
    // comparisons so that NaN passes through.
    const HI: f32 = 88.8;
    const LO: f32 = -104.0;
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // 1.5 * 2^23: adding it rounds to an integer (ties to even) held in the low mantissa bits.
    const SHIFTER: f32 = 12_582_912.0;
    // ln 2 split so that n * LN2_HI is exact for |n| <= 2^15.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_2e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ];
    let x = if x > HI { HI } else { x };
    let x = if x < LO { LO } else { x };
    let t = x * LOG2E + SHIFTER;
    let n = t - SHIFTER;
    let ni = (t.to_bits() as i32).wrapping_sub(SHIFTER.to_bits() as i32);
    let r = x - n * LN2_HI - n * LN2_LO;
    let poly = P[1..].iter().fold(P[0], |acc, &c| acc * r + c);
    let e_r = poly * (r * r) + r + 1.0;
    // n in [-150, 128]: each half in [-75, 64], so both factors are normal floats.
    let half = ni >> 1;
    let scale = |k: i32| f32::from_bits((k.wrapping_add(127) as u32).wrapping_shl(23));
    e_r * scale(half) * scale(ni.wrapping_sub(half))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance of `got` from the exact `want` in units of the last place of `want` as an f32.
    fn ulps(got: f32, want: f64) -> f64 {
        let ulp = if want.abs() < f32::MIN_POSITIVE as f64 {
            f64::from(f32::from_bits(1))
        } else {
            let w = want as f32;
            f64::from(f32::from_bits(w.to_bits() + 1) - w)
        };
        (got as f64 - want).abs() / ulp
    }

    #[test]
    fn fast_exp_is_within_one_ulp_over_the_f32_range() {
        // Every 101st float from the overflow edge down to the underflow edge, both signs.
        let (hi, lo) = (88.8f32, -104.0f32);
        let mut xs: Vec<f32> = (0..hi.to_bits()).step_by(101).map(f32::from_bits).collect();
        xs.extend(
            (0..lo.to_bits() - 0x8000_0000)
                .step_by(101)
                .map(|b| -f32::from_bits(b)),
        );
        let mut got = xs.clone();
        exp_in_place(&mut got);
        let mut worst = (0.0f64, 0.0f32);
        for (&x, &e) in xs.iter().zip(&got) {
            let want = (x as f64).exp();
            if want > f32::MAX as f64 {
                assert_eq!(e, f32::INFINITY, "exp({x})");
                continue;
            }
            let err = ulps(e, want);
            if err > worst.0 {
                worst = (err, x);
            }
        }
        assert!(
            worst.0 <= 1.0,
            "max error {} ulp at x = {}",
            worst.0,
            worst.1
        );
        // and the scalar libm exp agrees to within 1 ulp as well
        let std_err = xs
            .iter()
            .zip(&got)
            .map(|(&x, &e)| (e.to_bits() as i64 - x.exp().to_bits() as i64).abs())
            .max();
        assert!(std_err <= Some(1), "{std_err:?}");
    }

    #[test]
    fn lane_reductions_match_plain_loops() {
        for len in [0usize, 1, 15, 16, 17, 40] {
            let a: Vec<f64> = (0..len).map(|k| ((k * 37) % 11) as f64 - 5.5).collect();
            let b: Vec<f64> = (0..len).map(|k| ((k * 13) % 7) as f64 * 0.25).collect();
            let plain: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() < 1e-12, "{len}");
            assert!((sum(&a) - a.iter().sum::<f64>()).abs() < 1e-12);
            assert_eq!(max(&a), a.iter().copied().fold(f64::NEG_INFINITY, f64::max));
            assert_eq!(min(&a), a.iter().copied().fold(f64::INFINITY, f64::min));
        }
        let with_nan = [1.0f32, f32::NAN, -3.0, 2.0];
        assert_eq!((max(&with_nan), min(&with_nan)), (2.0, -3.0));
    }

    #[test]
    fn fast_exp_handles_the_edges() {
        let xs = [
            0.0f32,
            -0.0,
            1.0,
            f32::MAX.ln(),
            88.73,
            89.0,
            1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -1e30,
            -87.33,
            -100.0,
            -103.9,
            -103.98,
            -104.5,
            f32::NAN,
            f32::MIN_POSITIVE,
        ];
        let mut got = xs;
        exp_in_place(&mut got);
        for (&x, &e) in xs.iter().zip(&got) {
            let want = x.exp();
            if want.is_nan() {
                assert!(e.is_nan(), "exp({x}) = {e}");
            } else if want == 0.0 || want.is_infinite() {
                assert_eq!(e, want, "exp({x})");
            } else {
                assert!(
                    ulps(e, (x as f64).exp()) <= 1.0,
                    "exp({x}) = {e}, want {want}"
                );
            }
        }
        assert_eq!(got[0], 1.0);
        // f64 is libm's exp, bit for bit
        let mut d = [0.5f64, -745.0, 709.0, f64::NAN];
        exp_in_place(&mut d);
        assert_eq!(d[..3], [0.5f64.exp(), (-745.0f64).exp(), 709.0f64.exp()]);
        assert!(d[3].is_nan());
    }

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
