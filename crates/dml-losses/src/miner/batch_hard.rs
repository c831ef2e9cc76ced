//! Batch-hard mining (Hermans et al. 2017).

use dml_core::Real;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::distance::{Distance, Scores};
use crate::tuples::TripletIndices;

/// For every anchor, its hardest positive and hardest negative.
///
/// ```text
/// p*(a) = argmax_{p: y_p = y_a, p != a} farness(a, p)     farness = distance, or -similarity
/// n*(a) = argmin_{n: y_n != y_a}        farness(a, n)
/// ```
///
/// Anchors lacking a positive or a negative are skipped; ties go to the lower index; output is
/// in anchor order (PML note 12). O(n^2) time, O(n) output.
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

    /// Mines one triplet per anchor that has a positive and a negative.
    pub fn mine<T: Real>(&self, scores: &Scores<T>, labels: &[i64]) -> TripletIndices {
        let dist = scores.distance();
        let picks: Vec<Option<(usize, usize)>> = (0..scores.rows())
            .into_par_iter()
            .map(|a| {
                let mut pos: Option<(T, usize)> = None;
                let mut neg: Option<(T, usize)> = None;
                for (j, &s) in scores.row(a).iter().enumerate() {
                    let u = dist.farness(s);
                    if labels[j] == labels[a] {
                        if j != a && pos.is_none_or(|(b, _)| u > b) {
                            pos = Some((u, j));
                        }
                    } else if neg.is_none_or(|(b, _)| u < b) {
                        neg = Some((u, j));
                    }
                }
                Some((pos?.1, neg?.1))
            })
            .collect();
        let mut out = TripletIndices::default();
        for (a, pick) in picks.into_iter().enumerate() {
            if let Some((p, n)) = pick {
                out.push(a, p, n);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::MatrixRef;

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
}
