//! Triplet margin loss (Weinberger & Saul 2009; Schroff et al. 2015), PML's form.

use std::borrow::Cow;

use dml_core::Real;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::triplet_window::fused_hinge;
use super::{KernelInput, KernelOutput, LossKernel, LossStats, LossTerm, Selection, TermIndices};
use crate::distance::{Distance, PairScores, Scores};
use crate::error::{Error, Result};
use crate::miner::{Miner, TripletMarginMiner};
use crate::numeric::{softplus, softplus_grad};
use crate::reducer::Reducer;
use crate::scratch::Scratch;
use crate::tuples::{TripletIndices, Tuples};

/// Listed triplets up to this many per batch row are scored pair by pair instead of through
/// the `n x n` score matrix.
const SPARSE_TRIPLETS_PER_ROW: usize = 16;

/// Triplet margin loss.
///
/// ```text
/// v(a, p, n) = margin(s_ap, s_an) + margin     margin(x, y) = x - y (distances), y - x (similarities)
/// l = relu(v)            or softplus(v) with smooth_loss
/// swap: s_an := the closer of s_an and s_pn  (min distance / max similarity)
/// L = reduce(l over the triplets)
/// ```
///
/// Triplets are all valid `(a, p, n)` (never materialised), the given / mined ones, or those a
/// fused [`TripletMarginMiner`] keeps (PML's "TripletMarginLoss + TripletMarginMiner(type)",
/// computed without listing triplets). The hinge form without `swap` runs in O(n^2 log n) with
/// per-anchor sorted negatives; `smooth_loss` or `swap` visit every selected triplet in
/// O(n^2 * positives per anchor) time, still without materialising them.
///
/// # Shapes
/// embeddings `[n, d]`, labels `[n]`.
///
/// # Degenerate batches
/// No valid triplet (one class, or all labels distinct): 0 with zero gradient.
///
/// PML defaults (`TripletMarginLoss()`): `margin = 0.05` (not the miner's 0.2), `swap = false`,
/// `smooth_loss = false`, distance `Lp { power: One, normalize: true }`, reducer `AvgNonZero`
/// (note 10). `triplets_per_anchor` other than "all" (random sampling) is not supported: use a
/// miner. Reference: PML `losses/triplet_margin_loss.py`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TripletMarginLoss {
    distance: Distance,
    margin: f64,
    swap: bool,
    smooth: bool,
}

impl TripletMarginLoss {
    /// A hinge triplet loss with the given margin (finite and >= 0: a negative margin asks
    /// negatives to be *closer* than positives).
    pub fn new(distance: Distance, margin: f64) -> Result<Self> {
        crate::error::non_negative("TripletMarginLoss", "margin", margin)?;
        Ok(Self {
            distance,
            margin,
            swap: false,
            smooth: false,
        })
    }

    /// Uses the positive-negative score when it violates the margin more (PML `swap`).
    pub fn with_swap(mut self, swap: bool) -> Self {
        self.swap = swap;
        self
    }

    /// Replaces the hinge by softplus (PML `smooth_loss`).
    pub fn with_smooth_loss(mut self, smooth: bool) -> Self {
        self.smooth = smooth;
        self
    }

    /// The distance triplets are scored with.
    pub fn distance(&self) -> Distance {
        self.distance
    }

    /// The loss of one triplet from its scores: `(loss, d loss / d s_ap, d loss / d s_an,
    /// d loss / d s_pn)`.
    #[inline]
    fn triplet<T: Real>(&self, ap: T, an: T, pn: Option<T>) -> (T, T, T, T) {
        let dist = self.distance;
        let (neg, swapped) = match pn {
            Some(pn) if dist.farness(pn) < dist.farness(an) => (pn, true),
            _ => (an, false),
        };
        let v = dist.margin(ap, neg) + T::of(self.margin);
        let (l, dl) = if self.smooth {
            (softplus(v), softplus_grad(v))
        } else if v > T::zero() {
            (v, T::one())
        } else {
            (T::zero(), T::zero())
        };
        let slope = dist.margin_slope::<T>();
        let (d_an, d_pn) = if swapped {
            (T::zero(), -slope * dl)
        } else {
            (-slope * dl, T::zero())
        };
        (l, slope * dl, d_an, d_pn)
    }

    /// Listed triplets: each one evaluated, duplicates counted per copy. `score(i, j)` gives
    /// a pair's score; `emit(i, j, g)` receives every non-zero `dL/ds_ij` contribution.
    fn listed<T: Real>(
        &self,
        score: impl Fn(usize, usize) -> T,
        t: &TripletIndices,
        reducer: Reducer,
        mut emit: impl FnMut(usize, usize, T),
    ) -> (T, LossStats, Vec<T>) {
        let eval = |(a, p, ng): (usize, usize, usize)| {
            let pn = self.swap.then(|| score(p, ng));
            self.triplet(score(a, p), score(a, ng), pn)
        };
        let losses: Vec<T> = t.iter().map(|k| eval(k).0).collect();
        let red = reducer.reduce(&losses, None);
        for (k, &l) in t.iter().zip(&losses) {
            let w = reducer.weight(&red, l);
            if w == T::zero() {
                continue;
            }
            let (a, p, ng) = k;
            let (_, gap, gan, gpn) = eval(k);
            for (i, j, g) in [(a, p, gap), (a, ng, gan), (p, ng, gpn)] {
                if g != T::zero() {
                    emit(i, j, w * g);
                }
            }
        }
        let active = losses.iter().filter(|&&l| l != T::zero()).count() as u64;
        let stats = LossStats {
            active,
            total: losses.len() as u64,
        };
        (red.value, stats, losses)
    }

    /// Listed triplets scored pair by pair, O(triplets * d): for mined lists (batch-hard's
    /// one triplet per anchor) far smaller than the `n x n` score matrix.
    fn sparse_listed<T: Real>(
        &self,
        input: &KernelInput<'_, T>,
        t: &TripletIndices,
    ) -> KernelOutput<T> {
        let x = input.embeddings;
        let scores = PairScores::new(self.distance, x);
        let mut entries = Vec::with_capacity(3 * t.len());
        let (loss, stats, losses) = self.listed(
            |i, j| scores.get(i, j),
            t,
            input.reducer,
            |i, j, g| entries.push((i, j, g)),
        );
        if stats.total == 0 {
            return KernelOutput::zero(x.rows(), x.cols(), input.params);
        }
        let terms = if input.want_terms {
            vec![LossTerm {
                name: "loss",
                losses,
                indices: TermIndices::PerTriplet(t.clone()),
            }]
        } else {
            Vec::new()
        };
        KernelOutput {
            loss,
            grad: scores.backward(&entries),
            param_grad: None,
            terms,
            stats,
        }
    }

    /// Every selected triplet visited in place (for `smooth_loss` / `swap`), never stored.
    /// Returns the loss, the scale of the unscaled gradient written into `grad`, and counts.
    fn visited<T: Real>(
        &self,
        scores: &Scores<T>,
        labels: &[i64],
        window: Option<&TripletMarginMiner>,
        reducer: Reducer,
        grad: &mut [T],
    ) -> (T, T, LossStats) {
        let n = scores.rows();
        let dist = self.distance;
        // One anchor's triplets; `emit(row, col, unscaled gradient)` receives every kept one.
        let anchor = |a: usize, emit: &mut dyn FnMut(usize, usize, T)| {
            let mut acc = (0.0f64, 0u64, 0u64, 0u64);
            for p in (0..n).filter(|&p| p != a && labels[p] == labels[a]) {
                let ap = scores.get(a, p);
                for ng in (0..n).filter(|&j| labels[j] != labels[a]) {
                    let an = scores.get(a, ng);
                    if window.is_some_and(|m| !m.selects(dist.farness(an) - dist.farness(ap))) {
                        continue;
                    }
                    acc.3 += 1;
                    let pn = self.swap.then(|| scores.get(p, ng));
                    let (l, gap, gan, gpn) = self.triplet(ap, an, pn);
                    if l != T::zero() {
                        acc.2 += 1;
                    }
                    if !reducer.keeps(l) {
                        continue;
                    }
                    acc.0 += l.f64();
                    acc.1 += 1;
                    emit(a, p, gap);
                    if gan != T::zero() {
                        emit(a, ng, gan);
                    }
                    if gpn != T::zero() {
                        emit(p, ng, gpn);
                    }
                }
            }
            acc
        };
        let merge = |x: (f64, u64, u64, u64), y: (f64, u64, u64, u64)| {
            (x.0 + y.0, x.1 + y.1, x.2 + y.2, x.3 + y.3)
        };
        grad.par_iter_mut().for_each(|v| *v = T::zero());
        let (sum, kept, active, total) = if self.swap {
            // Swapped gradients land in other anchors' rows: one thread writes them all.
            (0..n).fold((0.0, 0, 0, 0), |acc, a| {
                merge(acc, anchor(a, &mut |i, j, g| grad[i * n + j] += g))
            })
        } else {
            grad.par_chunks_mut(n)
                .enumerate()
                .map(|(a, row)| anchor(a, &mut |_, j, g| row[j] += g))
                // In anchor order: float sums independent of thread scheduling.
                .collect::<Vec<_>>()
                .into_iter()
                .fold((0.0, 0, 0, 0), merge)
        };
        let scale = reducer.scale::<T>(kept, None);
        (T::of(sum * scale.f64()), scale, LossStats { active, total })
    }
}

impl LossKernel for TripletMarginLoss {
    fn name(&self) -> &'static str {
        "TripletMarginLoss"
    }

    fn pml_default_reducer(&self) -> Reducer {
        Reducer::AvgNonZero
    }

    fn fuses(&self, miner: &Miner) -> bool {
        matches!(miner, Miner::TripletMargin(m) if m.distance() == self.distance)
    }

    fn compute<T: Real>(&self, input: &KernelInput<'_, T>) -> Result<KernelOutput<T>> {
        let x = input.embeddings;
        let (n, d) = (x.rows(), x.cols());
        let labels = input.labels;
        let given: Option<Cow<'_, TripletIndices>> = match input.selection {
            Selection::Tuples(Tuples::Triplets(t)) => Some(Cow::Borrowed(t)),
            Selection::Tuples(Tuples::Pairs(p)) => {
                Some(Cow::Owned(p.to_triplets(input.tuple_budget)?))
            }
            _ => None,
        };
        if let Some(t) = &given
            && t.len() <= SPARSE_TRIPLETS_PER_ROW * n
        {
            return Ok(self.sparse_listed(input, t));
        }
        let scores = self.distance.scores(x, None);
        let window = match input.selection {
            Selection::Fused(Miner::TripletMargin(m)) if self.fuses(&Miner::TripletMargin(*m)) => {
                Some(m)
            }
            Selection::Fused(m) => {
                return Err(Error::Case(format!(
                    "TripletMarginLoss cannot fuse {}",
                    m.name()
                )));
            }
            _ => None,
        };
        let listed: Option<Cow<'_, TripletIndices>> = match given {
            Some(t) => Some(t),
            None if input.want_terms => Some(Cow::Owned(match window {
                Some(m) => m
                    .with_max_triplets(input.tuple_budget)
                    .mine(&scores, labels)?,
                None => TripletIndices::all(labels, input.tuple_budget)?,
            })),
            None => None,
        };
        // The fused and visited paths write dL/dS unscaled; the backward pass is linear, so
        // their scale is applied to the n x d gradient instead of the n x n one.
        // The fused and visited paths overwrite every entry; the listed one adds into zeros.
        let mut grad_s = match listed {
            Some(_) => Scratch::zeroed(n * n),
            None => Scratch::recycled(n * n),
        };
        let (loss, grad_scale, stats, terms) = match listed {
            Some(t) => {
                let (loss, stats, losses) = self.listed(
                    |i, j| scores.get(i, j),
                    &t,
                    input.reducer,
                    |i, j, g| grad_s[i * n + j] += g,
                );
                let terms = if input.want_terms {
                    vec![LossTerm {
                        name: "loss",
                        losses,
                        indices: TermIndices::PerTriplet(t.into_owned()),
                    }]
                } else {
                    Vec::new()
                };
                (loss, T::one(), stats, terms)
            }
            None if !self.swap && !self.smooth => {
                let r = fused_hinge(
                    &scores,
                    labels,
                    T::of(self.margin),
                    window,
                    input.reducer,
                    &mut grad_s,
                );
                (r.value, r.scale, r.stats, Vec::new())
            }
            None => {
                let (loss, scale, stats) =
                    self.visited(&scores, labels, window, input.reducer, &mut grad_s);
                (loss, scale, stats, Vec::new())
            }
        };
        if stats.total == 0 {
            return Ok(KernelOutput::zero(n, d, input.params));
        }
        let mut grad = scores.backward(&mut grad_s).x;
        if grad_scale != T::one() {
            grad.par_iter_mut().for_each(|g| *g *= grad_scale);
        }
        Ok(KernelOutput {
            loss,
            grad,
            param_grad: None,
            terms,
            stats,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LpPower;
    use crate::loss::testing::{assert_all_equals_listed, assert_same, input, points};
    use crate::matrix::MatrixRef;
    use crate::miner::TripletType;
    use crate::reducer::ThresholdBounds;

    /// The fused and visited paths give exactly what evaluating the listed triplets gives.
    #[test]
    fn unlisted_paths_equal_listed_triplets() {
        // The first 20 rows share a class (sorted path); the rest are small classes (direct).
        let labels: Vec<i64> = (0..30)
            .map(|i| if i < 20 { 0 } else { i % 4 + 1 })
            .collect();
        let x = points(30, 3, 5);
        let raw = Distance::Lp {
            power: LpPower::One,
            normalize: false,
        };
        let reducers = [
            Reducer::AvgNonZero,
            Reducer::Mean,
            Reducer::Sum,
            Reducer::Threshold(ThresholdBounds::new(Some(0.05), Some(0.6)).unwrap()),
        ];
        for dist in [Distance::PML_LP_DEFAULT, Distance::Cosine, raw] {
            let scores = dist.scores(MatrixRef::new(&x, 30, 3).unwrap(), None);
            for (swap, smooth) in [(false, false), (true, false), (false, true)] {
                let loss = TripletMarginLoss::new(dist, 0.3)
                    .unwrap()
                    .with_swap(swap)
                    .with_smooth_loss(smooth);
                for reducer in reducers {
                    let all = TripletIndices::all(&labels, 1 << 20).unwrap();
                    let listed = Tuples::Triplets(all);
                    let what = format!("{dist:?} all swap={swap} smooth={smooth} {reducer:?}");
                    assert_all_equals_listed(&loss, &x, 3, &labels, &listed, reducer, &what);
                    for kind in [
                        TripletType::All,
                        TripletType::Hard,
                        TripletType::SemiHard,
                        TripletType::Easy,
                    ] {
                        let miner = Miner::TripletMargin(
                            TripletMarginMiner::new(dist, 0.25, kind).unwrap(),
                        );
                        let Miner::TripletMargin(m) = &miner else {
                            unreachable!()
                        };
                        let mined = Tuples::Triplets(m.mine(&scores, &labels).unwrap());
                        let want = loss
                            .compute(&input(&x, 3, &labels, Selection::Tuples(&mined), reducer))
                            .unwrap();
                        let got = loss
                            .compute(&input(&x, 3, &labels, Selection::Fused(&miner), reducer))
                            .unwrap();
                        assert_same(
                            &got,
                            &want,
                            &format!("{dist:?} {kind:?} swap={swap} smooth={smooth} {reducer:?}"),
                        );
                        assert_eq!(got.stats, want.stats);
                    }
                }
            }
        }
    }

    #[test]
    fn no_valid_triplet_is_an_exact_zero() {
        let x = points(4, 2, 1);
        let loss = TripletMarginLoss::new(Distance::Cosine, 0.2).unwrap();
        for labels in [[1, 1, 1, 1], [0, 1, 2, 3]] {
            let out = loss
                .compute(&input(&x, 2, &labels, Selection::All, Reducer::Mean))
                .unwrap();
            assert_eq!(out.loss, 0.0);
            assert!(out.grad.iter().all(|&g| g == 0.0));
        }
    }
}
