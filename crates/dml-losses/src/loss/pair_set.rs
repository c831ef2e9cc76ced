//! Positive or negative pair sets, and reducing an element-wise function over one.

use dml_core::Real;
use rayon::prelude::*;

use crate::distance::Scores;
use crate::reducer::Reducer;
use crate::tuples::LabelCounts;

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

/// [`PairSet::reduce`] for all positive and all negative pairs at once: one sweep over the
/// score matrix for both sums and one for both gradients, instead of two each.
pub(crate) fn reduce_all_pairs<T: Real, P, N>(
    labels: &[i64],
    scores: &Scores<T>,
    reducer: Reducer,
    pos_f: P,
    neg_f: N,
    grad: &mut [T],
) -> (PairReduction<T>, PairReduction<T>)
where
    P: Fn(T) -> (T, T) + Sync,
    N: Fn(T) -> (T, T) + Sync,
{
    let cols = scores.cols();
    let zero = || ((0.0f64, 0u64, 0u64), (0.0f64, 0u64, 0u64));
    let (pos, neg) = (0..scores.rows())
        .into_par_iter()
        .map(|i| {
            let (mut p, mut q) = zero();
            for (j, &s) in scores.row(i).iter().enumerate() {
                if labels[i] == labels[j] {
                    if i != j {
                        add(&mut p, reducer, pos_f(s).0);
                    }
                } else {
                    add(&mut q, reducer, neg_f(s).0);
                }
            }
            (p, q)
        })
        // In row order: float sums independent of thread scheduling.
        .collect::<Vec<_>>()
        .into_iter()
        .fold(zero(), |x, y| {
            (
                (x.0.0 + y.0.0, x.0.1 + y.0.1, x.0.2 + y.0.2),
                (x.1.0 + y.1.0, x.1.1 + y.1.1, x.1.2 + y.1.2),
            )
        });
    let (sp, sn) = (
        reducer.scale::<T>(pos.1, None),
        reducer.scale::<T>(neg.1, None),
    );
    grad.par_chunks_mut(cols).enumerate().for_each(|(i, g)| {
        for (j, &s) in scores.row(i).iter().enumerate() {
            let (f, scale) = if labels[i] == labels[j] {
                if i == j {
                    continue;
                }
                (pos_f(s), sp)
            } else {
                (neg_f(s), sn)
            };
            if reducer.keeps(f.0) {
                g[j] += scale * f.1;
            }
        }
    });
    let all = |positive| PairSet::All { labels, positive }.len();
    (
        PairReduction {
            value: T::of(pos.0 * sp.f64()),
            active: pos.2,
            total: all(true),
        },
        PairReduction {
            value: T::of(neg.0 * sn.f64()),
            active: neg.2,
            total: all(false),
        },
    )
}
