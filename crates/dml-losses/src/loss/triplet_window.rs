//! The fused hinge-triplet path: all (or margin-window-mined) triplets without materialising
//! any of them.
//!
//! For an anchor `a` with its negatives sorted by farness `u` (distance, or negated
//! similarity), the triplets of one positive `p` that a [`TripletMarginMiner`] keeps, that the
//! reducer keeps, and whose hinge is active are each one contiguous run of that sorted list.
//! Counts come from binary searches and loss sums from prefix sums; each negative's gradient
//! multiplicity comes from a difference array over the runs. That is O(n log n) per anchor,
//! O(n^2 log n) in all, with O(n) scratch per thread. Every kept triplet has the same reducer
//! weight, so gradients are accumulated unscaled and scaled once at the end.

use dml_core::Real;
use rayon::prelude::*;

use super::LossStats;
use crate::distance::{Scores, with_avx2};
use crate::miner::{TripletMarginMiner, TripletType, sorted_negatives};
use crate::reducer::Reducer;
use crate::tuples::Classes;

/// What the fused pass found. The gradient it wrote is unscaled: multiply it (or, the backward
/// pass being linear, the embeddings' gradient) by `scale`.
pub(crate) struct FusedTriplets<T> {
    /// The reduced loss.
    pub value: T,
    /// The reducer's weight of every kept triplet.
    pub scale: T,
    pub stats: LossStats,
}

/// Reduced `relu(margin(d_ap, d_an) + margin)` over the selected triplets; writes the unscaled
/// gradient with respect to the scores into `grad` (`n x n`, overwritten).
pub(crate) fn fused_hinge<T: Real>(
    scores: &Scores<T>,
    labels: &[i64],
    margin: T,
    window: Option<&TripletMarginMiner>,
    reducer: Reducer,
    grad: &mut [T],
) -> FusedTriplets<T> {
    let dist = scores.distance();
    let n = scores.rows();
    let slope = dist.margin_slope::<T>();
    let classes = Classes::new(labels);
    let direct = DirectTriplets {
        sign: if dist.is_similarity() {
            -T::one()
        } else {
            T::one()
        },
        margin,
        slope,
        window: window.map_or(Interval::everything(), Interval::of_window),
        kept: Interval::of_reducer(reducer),
    };
    let (sum, kept, active, total) = grad
        .par_chunks_mut(n)
        .enumerate()
        .map(|(a, g)| {
            g.iter_mut().for_each(|v| *v = T::zero());
            let class = classes.ids[a];
            let positives: Vec<usize> = classes
                .members(class)
                .iter()
                .map(|&p| p as usize)
                .filter(|&p| p != a)
                .collect();
            if positives.len() <= DIRECT_MAX_POSITIVES {
                let row = scores.row(a);
                return positives.iter().fold((0.0, 0, 0, 0), |acc, &p| {
                    let c = direct.positive(row, &classes.ids, class, row[p], g);
                    g[p] += slope * T::of(c.contributing as f64);
                    (
                        acc.0 + c.sum,
                        acc.1 + c.kept,
                        acc.2 + c.active,
                        acc.3 + c.selected,
                    )
                });
            }
            let (negs, idx) = sorted_negatives(scores, labels, a);
            let mut prefix = Vec::with_capacity(negs.len() + 1);
            prefix.push(0.0f64);
            for &u in &negs {
                prefix.push(prefix.last().copied().unwrap_or(0.0) + u.f64());
            }
            let mut runs = vec![0i64; negs.len() + 1];
            let mut acc = (0.0f64, 0u64, 0u64, 0u64);
            for &p in &positives {
                let up = dist.farness(scores.get(a, p));
                let (lo, hi) = window.map_or((0, negs.len()), |m| m.window(&negs, up));
                let run = &negs[lo..hi];
                // The hinge value as PML computes it: margin(d_ap, d_an) + margin.
                let hinge = |u: T| (up - u) + margin;
                let relu = |u: T| hinge(u).max(T::zero());
                let k_lo = lo + run.partition_point(|&u| !reducer.below_upper(relu(u)));
                let k_hi = (lo + run.partition_point(|&u| reducer.above_lower(relu(u)))).max(k_lo);
                let positive_hi = lo + run.partition_point(|&u| hinge(u) > T::zero());
                let act_hi = positive_hi.clamp(k_lo, k_hi);
                let n_act = (act_hi - k_lo) as u64;
                acc.0 += n_act as f64 * (up.f64() + margin.f64()) - (prefix[act_hi] - prefix[k_lo]);
                acc.1 += (k_hi - k_lo) as u64;
                acc.2 += (positive_hi - lo) as u64;
                acc.3 += (hi - lo) as u64;
                if n_act > 0 {
                    g[p] += slope * T::of(n_act as f64);
                    runs[k_lo] += 1;
                    runs[act_hi] -= 1;
                }
            }
            let mut count = 0i64;
            for (q, &j) in idx.iter().enumerate() {
                count += runs[q];
                if count != 0 {
                    g[j as usize] -= slope * T::of(count as f64);
                }
            }
            acc
        })
        // Collected in anchor order and summed sequentially: a parallel `reduce` would add the
        // float sums in an order that depends on thread scheduling.
        .collect::<Vec<_>>()
        .into_iter()
        .fold((0.0, 0, 0, 0), |x, y| {
            (x.0 + y.0, x.1 + y.1, x.2 + y.2, x.3 + y.3)
        });
    let scale = reducer.scale::<T>(kept, None);
    FusedTriplets {
        value: T::of(sum * scale.f64()),
        scale,
        stats: LossStats { active, total },
    }
}

/// An interval of values `v`: `v > lower` (when bounded below) and `v <= upper` or
/// `v < upper` (when bounded above). Both of [`TripletMarginMiner::selects`] and
/// [`Reducer::keeps`] are one, and testing an interval is branch-free, so loops that test one
/// per entry vectorise.
#[derive(Debug, Clone, Copy)]
struct Interval<T> {
    lower: Option<T>,
    upper: Option<T>,
    upper_inclusive: bool,
}

impl<T: Real> Interval<T> {
    /// Every value, NaN included.
    fn everything() -> Self {
        Self {
            lower: None,
            upper: None,
            upper_inclusive: true,
        }
    }

    /// The gaps `m` a miner [`TripletMarginMiner::selects`].
    fn of_window(miner: &TripletMarginMiner) -> Self {
        let margin = T::of(miner.margin());
        let (lower, upper) = match miner.kind() {
            TripletType::All => (None, Some(margin)),
            // `m <= margin && m <= 0`.
            TripletType::Hard => (None, Some(margin.min(T::zero()))),
            TripletType::SemiHard => (Some(T::zero()), Some(margin)),
            TripletType::Easy => (Some(margin), None),
        };
        Self {
            lower,
            upper,
            upper_inclusive: true,
        }
    }

    /// The losses a reducer [`Reducer::keeps`].
    fn of_reducer(reducer: Reducer) -> Self {
        let (lower, upper) = match reducer {
            Reducer::Mean | Reducer::Sum | Reducer::Divisor => (None, None),
            Reducer::AvgNonZero => (Some(T::zero()), None),
            Reducer::Threshold(b) => (b.low().map(T::of), b.high().map(T::of)),
        };
        Self {
            lower,
            upper,
            upper_inclusive: false,
        }
    }

    #[inline(always)]
    fn contains(&self, v: T) -> bool {
        let above = self.lower.is_none_or(|l| v > l);
        let below = self
            .upper
            .is_none_or(|u| v < u || self.upper_inclusive && v == u);
        above & below
    }
}

/// Up to this many positives per anchor, visiting each (positive, negative) pair directly
/// (O(n * positives), vectorised) is cheaper than sorting the anchor's negatives
/// (O(n log n)).
const DIRECT_MAX_POSITIVES: usize = 16;

/// The per-anchor constants of the direct path.
#[derive(Debug, Clone, Copy)]
struct DirectTriplets<T> {
    /// Turns a score into a farness (`-1` for similarities).
    sign: T,
    margin: T,
    slope: T,
    window: Interval<T>,
    kept: Interval<T>,
}

/// Counts of one positive's triplets on the direct path.
#[derive(Debug, Clone, Copy, Default)]
struct DirectCounts {
    /// Sum of the kept non-zero losses.
    sum: f64,
    kept: u64,
    active: u64,
    selected: u64,
    /// Kept with a non-zero loss: each adds `slope` to `dL/ds_ap` and takes it from `dL/ds_an`.
    contributing: u64,
}

/// Lanes of the direct path's running counts and sums: one AVX2 vector of `f32`, so that the
/// counters stay in registers.
const LANES: usize = 8;

/// Chunks of [`LANES`] entries whose losses are summed in `T` before joining the `f64` sums:
/// short partial sums (at most 32 terms a lane) keep `f32` rounding negligible while the loop
/// runs at full `f32` vector width.
const CHUNKS_PER_SUM: usize = 32;

impl<T: Real> DirectTriplets<T> {
    /// The triplets `(a, p, j)` of one positive (score `s_ap`) over every negative `j` of the
    /// anchor's `row` (`ids[j] != class`), with the predicates of the sorted path; subtracts
    /// `slope` from `g[j]` for each contributing one. Adding `slope` per contributing triplet
    /// to `g[p]` is the caller's.
    fn positive(&self, row: &[T], ids: &[u32], class: u32, s_ap: T, g: &mut [T]) -> DirectCounts {
        direct_positive(*self, row, ids, class, s_ap, g)
    }

    /// One triplet: (selected, active, kept, contributing, loss).
    #[inline(always)]
    fn triplet(&self, up: T, s: T, negative: bool) -> (bool, bool, bool, bool, T) {
        let u = self.sign * s;
        let selected = negative & self.window.contains(u - up);
        let hinge = (up - u) + self.margin;
        let positive = hinge > T::zero();
        let kept = selected & self.kept.contains(hinge.max(T::zero()));
        (selected, selected & positive, kept, kept & positive, hinge)
    }
}

with_avx2! {
    /// [`direct_positive_portable`], vectorised.
    fn direct_positive<T: Real>(
        direct: DirectTriplets<T>,
        row: &[T],
        ids: &[u32],
        class: u32,
        s_ap: T,
        g: &mut [T]
    ) -> DirectCounts = direct_positive_portable
}

/// [`DirectTriplets::positive`], with [`LANES`] running counts and sums so that it vectorises.
#[inline(always)]
fn direct_positive_portable<T: Real>(
    direct: DirectTriplets<T>,
    row: &[T],
    ids: &[u32],
    class: u32,
    s_ap: T,
    g: &mut [T],
) -> DirectCounts {
    let up = direct.sign * s_ap;
    let mut counts = [0u64; 4];
    let mut sums = [0.0f64; LANES];
    let (rows, row_tail) = row.as_chunks::<LANES>();
    let (id_chunks, id_tail) = ids.as_chunks::<LANES>();
    let (g_chunks, g_tail) = g.as_chunks_mut::<LANES>();
    let blocks = rows
        .chunks(CHUNKS_PER_SUM)
        .zip(id_chunks.chunks(CHUNKS_PER_SUM))
        .zip(g_chunks.chunks_mut(CHUNKS_PER_SUM));
    let (one, zero) = (T::one(), T::zero());
    for ((rows, id_chunks), g_chunks) in blocks {
        // Counted in `T` too (exact: at most CHUNKS_PER_SUM a lane), so every lane operation
        // works on vectors of the same width as the scores.
        let mut partial_counts = [[zero; LANES]; 4];
        let mut partial = [zero; LANES];
        for ((r, c), gc) in rows.iter().zip(id_chunks).zip(g_chunks) {
            for k in 0..LANES {
                let (selected, active, kept, contributing, hinge) =
                    direct.triplet(up, r[k], c[k] != class);
                partial_counts[0][k] += if selected { one } else { zero };
                partial_counts[1][k] += if active { one } else { zero };
                partial_counts[2][k] += if kept { one } else { zero };
                partial_counts[3][k] += if contributing { one } else { zero };
                partial[k] += if contributing { hinge } else { zero };
                gc[k] -= if contributing { direct.slope } else { zero };
            }
        }
        for (total, lanes) in counts.iter_mut().zip(&partial_counts) {
            *total += lanes.iter().map(|v| v.f64() as u64).sum::<u64>();
        }
        for (s, p) in sums.iter_mut().zip(partial) {
            *s += p.f64();
        }
    }
    let mut out = DirectCounts {
        sum: sums.iter().sum(),
        selected: counts[0],
        active: counts[1],
        kept: counts[2],
        contributing: counts[3],
    };
    for ((&s, &c), gj) in row_tail.iter().zip(id_tail).zip(g_tail) {
        let (selected, active, kept, contributing, hinge) = direct.triplet(up, s, c != class);
        out.selected += u64::from(selected);
        out.active += u64::from(active);
        out.kept += u64::from(kept);
        if contributing {
            out.contributing += 1;
            out.sum += hinge.f64();
            *gj -= direct.slope;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Distance;
    use crate::reducer::ThresholdBounds;

    fn miners() -> Vec<TripletMarginMiner> {
        let kinds = [
            TripletType::All,
            TripletType::Hard,
            TripletType::SemiHard,
            TripletType::Easy,
        ];
        let mut out = Vec::new();
        for kind in kinds {
            for margin in [0.25, -0.25, 0.0] {
                out.push(TripletMarginMiner::new(Distance::Cosine, margin, kind).unwrap());
            }
        }
        out
    }

    fn reducers() -> Vec<Reducer> {
        vec![
            Reducer::Mean,
            Reducer::Sum,
            Reducer::AvgNonZero,
            Reducer::Divisor,
            Reducer::Threshold(ThresholdBounds::new(Some(0.25), Some(0.5)).unwrap()),
            Reducer::Threshold(ThresholdBounds::new(None, Some(0.5)).unwrap()),
            Reducer::Threshold(ThresholdBounds::new(Some(0.0), None).unwrap()),
        ]
    }

    /// Values on a grid that hits every bound exactly, plus the special ones.
    fn probes() -> Vec<f32> {
        let mut v: Vec<f32> = (-8..=8).map(|k| k as f32 * 0.125).collect();
        v.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -0.0]);
        v
    }

    #[test]
    fn intervals_are_the_window_and_the_reducer() {
        for m in miners() {
            let interval = Interval::of_window(&m);
            for v in probes() {
                assert_eq!(interval.contains(v), m.selects(v), "{m:?} {v}");
            }
        }
        for r in reducers() {
            let interval = Interval::of_reducer(r);
            for v in probes() {
                assert_eq!(interval.contains(v), r.keeps(v), "{r:?} {v}");
            }
        }
        assert!(Interval::everything().contains(f32::NAN));
    }

    /// The vectorised direct path counts and writes exactly what a plain loop over the
    /// triplets with the miner's and the reducer's own predicates does.
    #[test]
    fn direct_positive_equals_the_plain_loop() {
        let n = 83;
        let row: Vec<f32> = (0..n)
            .map(|k| ((k * 37) % 17) as f32 * 0.0625 - 0.5)
            .collect();
        let ids: Vec<u32> = (0..n as u32).map(|k| k % 7).collect();
        for dist in [Distance::Cosine, Distance::PML_LP_DEFAULT] {
            let slope = dist.margin_slope::<f32>();
            for m in miners() {
                for r in reducers() {
                    for (p, margin) in [(3, 0.125f32), (10, 0.0)] {
                        let direct = DirectTriplets {
                            sign: if dist.is_similarity() { -1.0 } else { 1.0 },
                            margin,
                            slope,
                            window: Interval::of_window(&m),
                            kept: Interval::of_reducer(r),
                        };
                        let mut got_g = vec![0.0f32; n];
                        let got = direct.positive(&row, &ids, ids[p], row[p], &mut got_g);
                        let mut want = DirectCounts::default();
                        let mut want_g = vec![0.0f32; n];
                        let up = dist.farness(row[p]);
                        for j in (0..n).filter(|&j| ids[j] != ids[p]) {
                            let u = dist.farness(row[j]);
                            if !m.selects(u - up) {
                                continue;
                            }
                            want.selected += 1;
                            let hinge = (up - u) + margin;
                            want.active += u64::from(hinge > 0.0);
                            if r.keeps(hinge.max(0.0)) {
                                want.kept += 1;
                                if hinge > 0.0 {
                                    want.contributing += 1;
                                    want.sum += f64::from(hinge);
                                    want_g[j] -= slope;
                                }
                            }
                        }
                        let what = format!("{dist:?} {m:?} {r:?} p={p}");
                        assert_eq!(
                            (got.selected, got.active, got.kept, got.contributing),
                            (want.selected, want.active, want.kept, want.contributing),
                            "{what}"
                        );
                        assert!((got.sum - want.sum).abs() < 1e-9, "{what}");
                        assert_eq!(got_g, want_g, "{what}");
                    }
                }
            }
        }
    }
}
