//! Batch-hard mining (Hermans et al. 2017).

use dml_core::Real;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::distance::{Distance, Scores, with_avx2};
use crate::matrix::MatrixRef;
use crate::tuples::{Classes, TripletIndices};

/// For every anchor, its hardest positive and hardest negative.
///
/// ```text
/// p*(a) = argmax_{p: y_p = y_a, p != a} farness(a, p)     farness = distance, or -similarity
/// n*(a) = argmin_{n: y_n != y_a}        farness(a, n)
/// ```
///
/// Anchors lacking a positive or a negative are skipped; ties go to the lower index; output is
/// in anchor order (PML note 12). O(n^2 d) time (one GEMM's work), O(n) output; mining
/// from embeddings streams the score matrix and never holds all of it.
///
/// PML default distance: `Lp { power: One, normalize: true }`.
/// Reference: PML `miners/batch_hard_miner.py`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BatchHardMiner {
    distance: Distance,
}

impl BatchHardMiner {
    /// A batch-hard miner scoring with `distance`.
    pub fn new(distance: Distance) -> Self {
        Self { distance }
    }

    /// The distance pairs are scored with.
    pub fn distance(&self) -> Distance {
        self.distance
    }

    /// Mines one triplet per anchor that has a positive and a negative, from a precomputed
    /// self score matrix of [`Self::distance`].
    pub fn mine<T: Real>(&self, scores: &Scores<T>, labels: &[i64]) -> TripletIndices {
        let classes = Classes::new(labels);
        let picks: Vec<Option<(usize, usize)>> = (0..scores.rows())
            .into_par_iter()
            .map(|a| hardest_pair(self.distance, scores.row(a), a, &classes))
            .collect();
        triplets(picks)
    }

    /// [`Self::mine`] straight from the embeddings, streaming the score matrix a panel of
    /// rows at a time ([`Distance::map_self_rows`]): the same triplets, bit for bit, for one
    /// GEMM's work and a few MiB instead of an `n x n` matrix.
    pub(crate) fn mine_embeddings<T: Real>(
        &self,
        x: MatrixRef<'_, T>,
        labels: &[i64],
    ) -> TripletIndices {
        let classes = Classes::new(labels);
        let picks = self
            .distance
            .map_self_rows(x, |a, row| hardest_pair(self.distance, row, a, &classes));
        triplets(picks)
    }
}

/// Anchor `a`'s `(hardest positive, nearest negative)` from its row of scores.
fn hardest_pair<T: Real>(
    dist: Distance,
    row: &[T],
    a: usize,
    classes: &Classes,
) -> Option<(usize, usize)> {
    let class = classes.ids[a];
    // Positives are few (a class), so they are visited directly, in index order.
    let mut pos: Option<(T, usize)> = None;
    for &p in classes.members(class) {
        let (p, u) = (p as usize, dist.farness(row[p as usize]));
        if p != a && pos.is_none_or(|(b, _)| u > b) {
            pos = Some((u, p));
        }
    }
    let (_, p) = pos?;
    Some((p, nearest_negative(dist, row, &classes.ids, class)?))
}

/// The negative (row whose class id is not `class`) of lowest farness, the lowest index among
/// ties.
///
/// One pass that vectorises ([`lane_minima`]), then the lanes are merged by (farness, index).
/// NaN scores (only from overflowing inputs) never win a lane, which is what the plain scan
/// does too unless the first negative is NaN; that row, and one without a finite negative,
/// takes the plain scan, whose behaviour defines the result there.
fn nearest_negative<T: Real>(dist: Distance, row: &[T], ids: &[u32], class: u32) -> Option<usize> {
    let first = ids.iter().position(|&c| c != class)?;
    if row[first].is_nan() {
        return nearest_negative_plain(dist, row, ids, class);
    }
    let sign = if dist.is_similarity() {
        -T::one()
    } else {
        T::one()
    };
    let lanes = lane_minima(row, ids, class, sign);
    let mut best: Option<(T, usize)> = None;
    for (k, (&u, &chunk)) in lanes.least.iter().zip(&lanes.chunk).enumerate() {
        let j = chunk as usize * LANES + k;
        if best.is_none_or(|(b, i)| u < b || u == b && j < i) {
            best = Some((u, j));
        }
    }
    let start = row.len() - row.len() % LANES;
    for (j, (&s, &c)) in row[start..].iter().zip(&ids[start..]).enumerate() {
        let u = if c != class { sign * s } else { T::infinity() };
        if best.is_none_or(|(b, _)| u < b) {
            best = Some((u, start + j));
        }
    }
    match best {
        Some((u, j)) if u < T::infinity() => Some(j),
        _ => nearest_negative_plain(dist, row, ids, class),
    }
}

/// Lanes of [`nearest_negative`]'s vectorised pass.
const LANES: usize = 16;

/// Per lane `k`: the least key among the entries `c * LANES + k` of the whole chunks and the
/// first chunk `c` where it occurs.
struct LaneMinima<T> {
    least: [T; LANES],
    chunk: [u32; LANES],
}

with_avx2! {
    /// [`lane_minima_portable`], vectorised.
    fn lane_minima<T: Real>(row: &[T], ids: &[u32], class: u32, sign: T) -> LaneMinima<T>
        = lane_minima_portable
}

/// [`LaneMinima`] of the keys `sign * score` of the negatives (`+inf` for rows of `class`).
/// Class ids are `u32` so a vector of ids is as wide as a vector of `f32` scores.
#[inline(always)]
fn lane_minima_portable<T: Real>(row: &[T], ids: &[u32], class: u32, sign: T) -> LaneMinima<T> {
    let mut least = [T::infinity(); LANES];
    let mut chunk = [0u32; LANES];
    let (rows, _) = row.as_chunks::<LANES>();
    let (id_chunks, _) = ids.as_chunks::<LANES>();
    for (c, (r, l)) in rows.iter().zip(id_chunks).enumerate() {
        for k in 0..LANES {
            let u = if l[k] != class {
                sign * r[k]
            } else {
                T::infinity()
            };
            let nearer = u < least[k];
            least[k] = if nearer { u } else { least[k] };
            chunk[k] = if nearer { c as u32 } else { chunk[k] };
        }
    }
    LaneMinima { least, chunk }
}

/// [`nearest_negative`] as one scan keeping the first strictly nearer negative.
fn nearest_negative_plain<T: Real>(
    dist: Distance,
    row: &[T],
    ids: &[u32],
    class: u32,
) -> Option<usize> {
    let mut neg: Option<(T, usize)> = None;
    for (j, (&s, &c)) in row.iter().zip(ids).enumerate() {
        let u = dist.farness(s);
        if c != class && neg.is_none_or(|(b, _)| u < b) {
            neg = Some((u, j));
        }
    }
    neg.map(|(_, j)| j)
}

/// The picks of anchors `0..n` as triplets, skipping anchors without one.
fn triplets(picks: Vec<Option<(usize, usize)>>) -> TripletIndices {
    let mut out = TripletIndices::default();
    for (a, pick) in picks.into_iter().enumerate() {
        if let Some((p, n)) = pick {
            out.push(a, p, n);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_brute_force_max_and_min() {
        let x: Vec<f64> = (0..30)
            .map(|k| ((k * 7919) % 29) as f64 / 6.0 - 2.0)
            .collect();
        let labels = [0, 1, 0, 2, 1, 0, 2, 3, 1, 0];
        for dist in [Distance::PML_LP_DEFAULT, Distance::Cosine] {
            let s = dist.scores(MatrixRef::new(&x, 10, 3).unwrap(), None);
            let got = BatchHardMiner::new(dist).mine(&s, &labels);
            let mut want = TripletIndices::default();
            for a in 0..10 {
                let far = |j: usize| dist.farness(s.get(a, j));
                let p = (0..10)
                    .filter(|&j| j != a && labels[j] == labels[a])
                    .reduce(|b, j| if far(j) > far(b) { j } else { b });
                let n = (0..10)
                    .filter(|&j| labels[j] != labels[a])
                    .reduce(|b, j| if far(j) < far(b) { j } else { b });
                if let (Some(p), Some(n)) = (p, n) {
                    want.push(a, p, n);
                }
            }
            assert_eq!(got, want);
        }
    }

    /// Streaming over panels picks exactly what the full matrix picks, ties included: rows
    /// repeat (equal scores) and the batch spans several GEMM panels.
    #[test]
    fn streamed_mining_equals_mining_the_full_matrix() {
        fn check<T: Real>(n: usize) {
            let d = 3;
            let x: Vec<T> = (0..n * d)
                .map(|k| {
                    // Every 7th row repeats the row before it.
                    let r = k / d;
                    let src = if r % 7 == 6 { k - d } else { k };
                    T::of(((src * 7919) % 61) as f64 / 9.0 - 3.0)
                })
                .collect();
            let labels: Vec<i64> = (0..n as i64).map(|i| i / 4 + (i % 3 == 0) as i64).collect();
            let m = MatrixRef::new(&x, n, d).unwrap();
            assert!(crate::distance::panel_rows::<T>(n, n) < n, "one panel only");
            for dist in [
                Distance::PML_LP_DEFAULT,
                Distance::Cosine,
                Distance::DotProduct { normalize: false },
                Distance::Lp {
                    power: crate::LpPower::Two,
                    normalize: false,
                },
            ] {
                let miner = BatchHardMiner::new(dist);
                let want = miner.mine(&dist.scores(m, None), &labels);
                assert!(want.len() + 2 >= n, "most anchors have a triplet");
                assert_eq!(miner.mine_embeddings(m, &labels), want, "{dist:?}");
            }
        }
        check::<f32>(2100);
        check::<f64>(1500);
    }

    /// The vectorised nearest negative equals the plain scan, with ties, infinities and NaN.
    #[test]
    fn nearest_negative_equals_the_plain_scan() {
        let ids: Vec<u32> = (0..37).map(|i| i % 5).collect();
        for dist in [Distance::PML_LP_DEFAULT, Distance::Cosine] {
            let mut row: Vec<f32> = (0..37).map(|k| ((k * 13) % 7) as f32 - 2.0).collect();
            for case in 0..6 {
                match case {
                    1 => row[20] = f32::INFINITY,
                    2 => row[3] = f32::NEG_INFINITY,
                    3 => row[33] = f32::NAN,
                    4 => row[17] = f32::NAN,
                    5 => row[0] = f32::NAN,
                    _ => {}
                }
                for class in [0, 2, 4, 9] {
                    assert_eq!(
                        nearest_negative(dist, &row, &ids, class),
                        nearest_negative_plain(dist, &row, &ids, class),
                        "{dist:?} case {case} class {class}"
                    );
                }
            }
            assert_eq!(nearest_negative(dist, &row[..5], &[1; 5], 1), None);
            let inf = [f32::INFINITY; 20];
            assert_eq!(nearest_negative(dist, &inf, &ids[..20], 1), Some(0));
        }
    }
}
