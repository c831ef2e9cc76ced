//! Positive or negative pair sets, and reducing an element-wise function over one.

use dml_core::Real;
use rayon::prelude::*;

use crate::distance::Scores;
use crate::reducer::Reducer;
use crate::tuples::{Classes, LabelCounts};

/// The positive or the negative pairs a pair-based loss visits.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PairSet<'a> {
    /// All ordered pairs `(i, j)` with equal labels and `i != j` (`positive`), or with different
    /// labels; visited row by row, never materialised.
    All { labels: &'a [i64], positive: bool },
    /// Listed pairs; a duplicated pair counts once per copy (PML note 5).
    Listed { anchor: &'a [u32], other: &'a [u32] },
}

/// The result of reducing an element-wise loss over a pair set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PairReduction<T> {
    pub value: T,
    pub active: u64,
    pub total: u64,
}

impl PairSet<'_> {
    /// Number of pairs.
    pub fn len(&self) -> u64 {
        match *self {
            PairSet::All { labels, positive } => {
                let counts = LabelCounts::new(labels);
                let n = labels.len() as u64;
                labels
                    .iter()
                    .map(|&l| {
                        let same = counts.count(l) as u64;
                        if positive { same - 1 } else { n - same }
                    })
                    .sum()
            }
            PairSet::Listed { anchor, .. } => anchor.len() as u64,
        }
    }

    /// The pairs as two index lists, in PML's order (row-major for `All`).
    pub fn to_lists(self) -> (Vec<u32>, Vec<u32>) {
        match self {
            PairSet::All { labels, positive } => {
                let mut a = Vec::new();
                let mut b = Vec::new();
                for (i, &li) in labels.iter().enumerate() {
                    for (j, &lj) in labels.iter().enumerate() {
                        if includes(positive, i, j, li, lj) {
                            a.push(i as u32);
                            b.push(j as u32);
                        }
                    }
                }
                (a, b)
            }
            PairSet::Listed { anchor, other } => (anchor.to_vec(), other.to_vec()),
        }
    }

    /// `f(score)` for every pair, in [`PairSet::to_lists`] order.
    pub fn values<T: Real>(&self, scores: &Scores<T>, f: impl Fn(T) -> T) -> Vec<T> {
        let (a, b) = self.to_lists();
        a.iter()
            .zip(&b)
            .map(|(&i, &j)| f(scores.get(i as usize, j as usize)))
            .collect()
    }

    /// Reduces `f` over the pairs and adds `d value / d score` into `grad` (the dense `dL/dS`).
    ///
    /// `f(s)` returns the pair's loss and its derivative with respect to the score. O(n^2)
    /// for `All` (two parallel sweeps over the score matrix), O(pairs) for `Listed`.
    pub fn reduce<T: Real, F>(
        &self,
        scores: &Scores<T>,
        reducer: Reducer,
        f: F,
        grad: &mut [T],
    ) -> PairReduction<T>
    where
        F: Fn(T) -> (T, T) + Sync,
    {
        let cols = scores.cols();
        // Pass 1: sum and count of the kept losses, count of the non-zero ones.
        let (sum, kept, active) = match *self {
            PairSet::All { labels, positive } => (0..scores.rows())
                .into_par_iter()
                .map(|i| {
                    let mut acc = (0.0f64, 0u64, 0u64);
                    for (j, &s) in scores.row(i).iter().enumerate() {
                        if includes(positive, i, j, labels[i], labels[j]) {
                            add(&mut acc, reducer, f(s).0);
                        }
                    }
                    acc
                })
                // In row order: float sums independent of thread scheduling.
                .collect::<Vec<_>>()
                .into_iter()
                .fold((0.0, 0, 0), |x, y| (x.0 + y.0, x.1 + y.1, x.2 + y.2)),
            PairSet::Listed { anchor, other } => {
                let mut acc = (0.0f64, 0u64, 0u64);
                for (&i, &j) in anchor.iter().zip(other) {
                    add(&mut acc, reducer, f(scores.get(i as usize, j as usize)).0);
                }
                acc
            }
        };
        let scale = reducer.scale::<T>(kept, None);
        // Pass 2: the gradient of every kept pair.
        match *self {
            PairSet::All { labels, positive } => {
                grad.par_chunks_mut(cols).enumerate().for_each(|(i, g)| {
                    for (j, &s) in scores.row(i).iter().enumerate() {
                        if includes(positive, i, j, labels[i], labels[j]) {
                            let (l, dl) = f(s);
                            if reducer.keeps(l) {
                                g[j] += scale * dl;
                            }
                        }
                    }
                });
            }
            PairSet::Listed { anchor, other } => {
                for (&i, &j) in anchor.iter().zip(other) {
                    let (i, j) = (i as usize, j as usize);
                    let (l, dl) = f(scores.get(i, j));
                    if reducer.keeps(l) {
                        grad[i * cols + j] += scale * dl;
                    }
                }
            }
        }
        PairReduction {
            value: T::of(sum * scale.f64()),
            active,
            total: self.len(),
        }
    }
}

/// Whether `(i, j)` belongs to the all-positive (`positive`) or all-negative pair set.
#[inline]
pub(crate) fn includes(positive: bool, i: usize, j: usize, li: i64, lj: i64) -> bool {
    if positive {
        li == lj && i != j
    } else {
        li != lj
    }
}

#[inline]
fn add<T: Real>(acc: &mut (f64, u64, u64), reducer: Reducer, l: T) {
    if reducer.keeps(l) {
        acc.0 += l.f64();
        acc.1 += 1;
    }
    if l != T::zero() {
        acc.2 += 1;
    }
}

/// The positive and negative pair sets of a selection (PML's `convert_to_pairs`): all pairs,
/// or the given tuples (triplets split into `(a, p)` and `(a, n)`).
pub(crate) fn pair_sets<'a>(
    labels: &'a [i64],
    tuples: Option<&'a crate::tuples::PairIndices>,
) -> (PairSet<'a>, PairSet<'a>) {
    match tuples {
        None => (
            PairSet::All {
                labels,
                positive: true,
            },
            PairSet::All {
                labels,
                positive: false,
            },
        ),
        Some(p) => (
            PairSet::Listed {
                anchor: &p.anchor_pos,
                other: &p.positive,
            },
            PairSet::Listed {
                anchor: &p.anchor_neg,
                other: &p.negative,
            },
        ),
    }
}

/// The pair tuples of a selection: `None` for "all pairs", borrowed or converted otherwise.
pub(crate) fn selected_pairs<'a>(
    selection: &crate::loss::Selection<'a>,
    owner: &'static str,
) -> crate::error::Result<Option<std::borrow::Cow<'a, crate::tuples::PairIndices>>> {
    use crate::loss::Selection;
    use crate::tuples::Tuples;
    match *selection {
        Selection::All => Ok(None),
        Selection::Tuples(Tuples::Pairs(p)) => Ok(Some(std::borrow::Cow::Borrowed(p))),
        Selection::Tuples(t @ Tuples::Triplets(_)) => {
            Ok(Some(std::borrow::Cow::Owned(t.to_pairs())))
        }
        Selection::Fused(m) => Err(crate::error::Error::Case(format!(
            "{owner} cannot fuse {}; mine its tuples first",
            m.name()
        ))),
    }
}

/// PML's GenericPairLoss quirk (note 6): when every index list has at most one element the
/// loss is exactly 0.
pub(crate) fn generic_pair_quirk(pos: &PairSet<'_>, neg: &PairSet<'_>) -> bool {
    pos.len() <= 1 && neg.len() <= 1
}

/// What [`reduce_all_pairs`] found: the two reductions and the gradient with respect to the
/// scores, to be multiplied by `factor` after its backward pass (which is linear).
pub(crate) struct AllPairs<T> {
    pub pos: PairReduction<T>,
    pub neg: PairReduction<T>,
    /// The negative pairs' entries carry no reducer weight `sn` (it is only known after the
    /// sweep that finds them) and the positive ones `sp / sn`; the true gradient is `factor`
    /// (= `sn`, or 1 when no negative is kept) times what this describes.
    pub factor: T,
    /// `Some`: the non-zero entries `(row, column, value)`, row-major, and `grad` was not
    /// touched. `None`: `grad` holds the whole matrix.
    pub entries: Option<Vec<(usize, usize, T)>>,
}

/// Up to this many non-zero gradient entries per row on average (and [`ROW_CAP`] in any row),
/// the gradient is returned as a list of entries: no `n x n` buffer is written or read back.
const ENTRIES_PER_ROW: usize = 16;

/// The most entries one row may list before the dense form is used instead.
const ROW_CAP: usize = 4 * ENTRIES_PER_ROW;

/// [`PairSet::reduce`] for all positive and all negative pairs at once, for the hinge-like
/// element-wise losses of `ContrastiveLoss`: one vectorised sweep per row treats every column
/// as a negative, then the row's few classmates are taken back out and scored as positives.
/// When few entries of the gradient are non-zero (with PML's defaults, almost every negative
/// pair lies beyond the margin) they are listed instead of written into `grad`; otherwise
/// `grad` (which may hold anything on entry) gets every entry.
pub(crate) fn reduce_all_pairs<T: Real, P, N>(
    labels: &[i64],
    scores: &Scores<T>,
    reducer: Reducer,
    pos_f: P,
    neg_f: N,
    grad: &mut [T],
) -> AllPairs<T>
where
    P: Fn(T) -> (T, T) + Sync,
    N: Fn(T) -> (T, T) + Sync,
{
    let n = scores.rows();
    let classes = Classes::new(labels);
    let classmates = |i: usize| classes.members(classes.ids[i]).iter().map(|&j| j as usize);
    // The row's classmates as negatives, taken back out of the sweep's sums, and as positives.
    let fix_row = |i: usize, q: &mut (f64, u64, u64)| {
        let row = scores.row(i);
        let mut p = (0.0f64, 0u64, 0u64);
        for j in classmates(i) {
            let (v, _) = neg_f(row[j]);
            if reducer.keeps(v) {
                q.0 -= v.f64();
                q.1 -= 1;
            }
            q.2 -= u64::from(v != T::zero());
            if j != i {
                add(&mut p, reducer, pos_f(row[j]).0);
            }
        }
        p
    };
    let listed: Vec<Option<Row<T>>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let mut list = Vec::new();
            let mut q = sweep_negatives(
                scores.row(i),
                Out::List(&mut list, ROW_CAP),
                &neg_f,
                reducer,
            )?;
            list.retain(|&(j, _)| classes.ids[j] != classes.ids[i]);
            let p = fix_row(i, &mut q);
            Some(Row { p, q, list })
        })
        .collect();
    // Listed entries: the non-zero negatives found plus at most every row's positives.
    let sparse = listed.iter().all(Option::is_some)
        && listed
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, r)| r.list.len() + classmates(i).count() - 1)
            .sum::<usize>()
            <= ENTRIES_PER_ROW * n;
    let rows: Vec<Row<T>> = if sparse {
        listed.into_iter().flatten().collect()
    } else {
        drop(listed);
        grad.par_chunks_mut(n.max(1))
            .enumerate()
            .map(|(i, g)| {
                let mut q = sweep_negatives(scores.row(i), Out::Dense(g), &neg_f, reducer)
                    .expect("the dense sweep never gives up");
                for j in classmates(i) {
                    g[j] = T::zero();
                }
                let p = fix_row(i, &mut q);
                Row {
                    p,
                    q,
                    list: Vec::new(),
                }
            })
            .collect()
    };
    // In row order: float sums independent of thread scheduling.
    let zero = (0.0f64, 0u64, 0u64);
    let (pos, neg) = rows.iter().fold((zero, zero), |(p, q), r| {
        (
            (p.0 + r.p.0, p.1 + r.p.1, p.2 + r.p.2),
            (q.0 + r.q.0, q.1 + r.q.1, q.2 + r.q.2),
        )
    });
    let (sp, sn) = (
        reducer.scale::<T>(pos.1, None),
        reducer.scale::<T>(neg.1, None),
    );
    // No kept negative: every negative entry is 0 and the positives carry their own weight.
    let factor = if sn == T::zero() { T::one() } else { sn };
    let pos_weight = sp / factor;
    let pos_f = &pos_f;
    let positives = |i: usize| {
        let row = scores.row(i);
        classmates(i).filter(move |&j| j != i).filter_map(move |j| {
            let (v, d) = pos_f(row[j]);
            reducer.keeps(v).then_some((j, pos_weight * d))
        })
    };
    let entries = if sparse {
        let mut entries = Vec::new();
        for (i, r) in rows.into_iter().enumerate() {
            let mut row: Vec<(usize, T)> = r.list;
            row.extend(positives(i).filter(|&(_, g)| g != T::zero()));
            row.sort_unstable_by_key(|&(j, _)| j);
            entries.extend(row.into_iter().map(|(j, g)| (i, j, g)));
        }
        Some(entries)
    } else {
        grad.par_chunks_mut(n.max(1))
            .enumerate()
            .for_each(|(i, g)| {
                for (j, v) in positives(i) {
                    g[j] = v;
                }
            });
        None
    };
    let all = |positive| PairSet::All { labels, positive }.len();
    AllPairs {
        pos: PairReduction {
            value: T::of(pos.0 * sp.f64()),
            active: pos.2,
            total: all(true),
        },
        neg: PairReduction {
            value: T::of(neg.0 * sn.f64()),
            active: neg.2,
            total: all(false),
        },
        factor,
        entries,
    }
}

/// One row of [`reduce_all_pairs`]: positive and negative (sum, kept, non-zero), and the
/// row's listed non-zero negative entries `(column, value)`.
struct Row<T> {
    p: (f64, u64, u64),
    q: (f64, u64, u64),
    list: Vec<(usize, T)>,
}

/// Where [`sweep_negatives`] puts the gradient entries.
enum Out<'a, T> {
    /// Every entry of the row, zeros included.
    Dense(&'a mut [T]),
    /// The non-zero entries `(column, value)`; the sweep gives up past the cap.
    List(&'a mut Vec<(usize, T)>, usize),
}

/// Lanes of [`sweep_negatives`]' running sums: one AVX2 vector of `f32`.
const LANES: usize = 8;

/// Chunks of [`LANES`] entries summed in `T` before joining the `f64` sums (at most 32 terms a
/// lane: counts stay exact and `f32` rounding negligible).
const CHUNKS_PER_SUM: usize = 32;

/// Every entry of `row` scored as a negative pair: the unweighted gradient of each kept loss
/// goes to `out` (0 otherwise); returns (sum of kept losses, kept, non-zero), or `None` when a
/// list outgrows its cap. Picks an AVX2 build at run time (same bits either way: no fused
/// multiply-adds).
fn sweep_negatives<T: Real, N>(
    row: &[T],
    out: Out<'_, T>,
    neg_f: &N,
    reducer: Reducer,
) -> Option<(f64, u64, u64)>
where
    N: Fn(T) -> (T, T),
{
    /// The sweep compiled for AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn avx2<T: Real, N: Fn(T) -> (T, T)>(
        row: &[T],
        out: Out<'_, T>,
        neg_f: &N,
        reducer: Reducer,
    ) -> Option<(f64, u64, u64)> {
        sweep_negatives_portable(row, out, neg_f, reducer)
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { avx2(row, out, neg_f, reducer) };
    }
    sweep_negatives_portable(row, out, neg_f, reducer)
}

#[inline(always)]
fn sweep_negatives_portable<T: Real, N>(
    row: &[T],
    mut out: Out<'_, T>,
    neg_f: &N,
    reducer: Reducer,
) -> Option<(f64, u64, u64)>
where
    N: Fn(T) -> (T, T),
{
    // `reducer.keeps`, branch-free: (bound in use, bound), NaN kept exactly when no bound is.
    let (low, high) = match reducer {
        Reducer::Mean | Reducer::Sum | Reducer::Divisor => (None, None),
        Reducer::AvgNonZero => (Some(0.0), None),
        Reducer::Threshold(b) => (b.low(), b.high()),
    };
    let (has_low, low) = (low.is_some(), T::of(low.unwrap_or(0.0)));
    let (has_high, high) = (high.is_some(), T::of(high.unwrap_or(0.0)));
    let keeps = |v: T| (!has_low | (v > low)) & (!has_high | (v < high));
    let (zero, one) = (T::zero(), T::one());
    let mut totals = (0.0f64, 0u64, 0u64);
    let (chunks, tail) = row.as_chunks::<LANES>();
    for (c, group) in chunks.chunks(CHUNKS_PER_SUM).enumerate() {
        let (mut sum, mut kept, mut nonzero) = ([zero; LANES], [zero; LANES], [zero; LANES]);
        for (k, r) in group.iter().enumerate() {
            let mut grads = [zero; LANES];
            for lane in 0..LANES {
                let (v, d) = neg_f(r[lane]);
                let keep = keeps(v);
                grads[lane] = if keep { d } else { zero };
                sum[lane] += if keep { v } else { zero };
                kept[lane] += if keep { one } else { zero };
                nonzero[lane] += if v != zero { one } else { zero };
            }
            let j0 = (c * CHUNKS_PER_SUM + k) * LANES;
            match &mut out {
                Out::Dense(g) => g[j0..j0 + LANES].copy_from_slice(&grads),
                Out::List(list, cap) => {
                    if grads.iter().any(|&g| g != zero) {
                        list.extend((j0..).zip(grads).filter(|&(_, g)| g != zero));
                        if list.len() > *cap {
                            return None;
                        }
                    }
                }
            }
        }
        totals.0 += sum.iter().map(|v| v.f64()).sum::<f64>();
        totals.1 += kept.iter().map(|v| v.f64() as u64).sum::<u64>();
        totals.2 += nonzero.iter().map(|v| v.f64() as u64).sum::<u64>();
    }
    let j0 = chunks.len() * LANES;
    for (j, &s) in (j0..).zip(tail) {
        let (v, d) = neg_f(s);
        let keep = keeps(v);
        let g = if keep { d } else { zero };
        match &mut out {
            Out::Dense(row_g) => row_g[j] = g,
            Out::List(list, cap) => {
                if g != zero {
                    list.push((j, g));
                    if list.len() > *cap {
                        return None;
                    }
                }
            }
        }
        if keep {
            totals.0 += v.f64();
            totals.1 += 1;
        }
        totals.2 += u64::from(v != zero);
    }
    Some(totals)
}
