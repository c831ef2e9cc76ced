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
use crate::distance::Scores;
use crate::miner::TripletMarginMiner;
use crate::miner::sorted_negatives;
use crate::reducer::Reducer;

/// Up to this many positives per anchor, visiting each (positive, negative) pair directly
/// (O(n * positives)) is cheaper than sorting the anchor's negatives (O(n log n)).
const DIRECT_MAX_POSITIVES: usize = 16;

/// What the fused pass found, before the reducer's scale is applied to the gradient.
pub(crate) struct FusedTriplets<T> {
    /// The reduced loss.
    pub value: T,
    pub stats: LossStats,
}

/// Reduced `relu(margin(d_ap, d_an) + margin)` over the selected triplets; writes the gradient
/// with respect to the scores into `grad` (`n x n`, overwritten).
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
    let (sum, kept, active, total) = grad
        .par_chunks_mut(n)
        .enumerate()
        .map(|(a, g)| {
            g.iter_mut().for_each(|v| *v = T::zero());
            let positives: Vec<usize> = (0..n)
                .filter(|&p| p != a && labels[p] == labels[a])
                .collect();
            if positives.len() <= DIRECT_MAX_POSITIVES {
                return direct_anchor(scores, labels, a, &positives, margin, window, reducer, g);
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
    grad.par_iter_mut().for_each(|v| *v *= scale);
    FusedTriplets {
        value: T::of(sum * scale.f64()),
        stats: LossStats { active, total },
    }
}

/// One anchor's triplets visited directly, with exactly the predicates of the sorted path:
/// returns (sum of kept losses, kept, active, selected) and writes the unscaled gradient row.
#[allow(clippy::too_many_arguments)]
fn direct_anchor<T: Real>(
    scores: &Scores<T>,
    labels: &[i64],
    a: usize,
    positives: &[usize],
    margin: T,
    window: Option<&TripletMarginMiner>,
    reducer: Reducer,
    g: &mut [T],
) -> (f64, u64, u64, u64) {
    let dist = scores.distance();
    let slope = dist.margin_slope::<T>();
    let row = scores.row(a);
    let ups: Vec<T> = positives.iter().map(|&p| dist.farness(row[p])).collect();
    let mut acc = (0.0f64, 0u64, 0u64, 0u64);
    for (j, &s) in row.iter().enumerate() {
        if labels[j] == labels[a] {
            continue;
        }
        let u = dist.farness(s);
        for (&p, &up) in positives.iter().zip(&ups) {
            if window.is_some_and(|m| !m.selects(u - up)) {
                continue;
            }
            acc.3 += 1;
            let hinge = (up - u) + margin;
            acc.2 += (hinge > T::zero()) as u64;
            if reducer.keeps(hinge.max(T::zero())) {
                acc.1 += 1;
                if hinge > T::zero() {
                    acc.0 += hinge.f64();
                    g[p] += slope;
                    g[j] -= slope;
                }
            }
        }
    }
    acc
}
