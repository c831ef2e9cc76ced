//! TF-style semi-hard mining (Schroff et al. 2015, as in TensorFlow's `triplet_semihard_loss`).

use dml_core::Real;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::sorted_negatives;
use super::triplet_margin::positives;
use crate::distance::{Distance, Scores};
use crate::tuples::TripletIndices;

/// One triplet per positive pair: the closest negative that is farther than the positive,
/// or, when there is none, the farthest negative.
///
/// ```text
/// for every positive pair (a, p):
///   n* = argmin { farness(a, n) : farness(a, n) > farness(a, p) }   if that set is non-empty
///      = argmax { farness(a, n) }                                    otherwise
/// ```
///
/// Farness is the distance, or the negated similarity. Ties go to the lower index; output is
/// in `(a, p)` lexicographic order. Unlike [`super::TripletMarginMiner`] with `semihard`,
/// this rule has no margin and never drops a positive pair. O(n^2 log n) time, at most one
/// triplet per positive pair.
///
/// PML has no such miner; FaceNet's batch construction and TensorFlow's
/// `tfa.losses.TripletSemiHardLoss` use this rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SemiHardMiner {
    distance: Distance,
}

impl SemiHardMiner {
    /// A semi-hard miner scoring with `distance`.
    pub fn new(distance: Distance) -> Self {
        Self { distance }
    }

    /// The distance pairs are scored with.
    pub fn distance(&self) -> Distance {
        self.distance
    }

    /// Mines one triplet per positive pair of anchors that have a negative.
    pub fn mine<T: Real>(&self, scores: &Scores<T>, labels: &[i64]) -> TripletIndices {
        let dist = scores.distance();
        let per_anchor: Vec<TripletIndices> = (0..scores.rows())
            .into_par_iter()
            .map(|a| {
                let mut out = TripletIndices::default();
                let pos: Vec<usize> = positives(labels, a).collect();
                if pos.len() <= 16 {
                    // Few positives: one scan of the negatives per positive.
                    let row = scores.row(a);
                    for &p in &pos {
                        let up = dist.farness(row[p]);
                        let mut closer: Option<(T, usize)> = None;
                        let mut far: Option<(T, usize)> = None;
                        for (j, &s) in row.iter().enumerate() {
                            if labels[j] == labels[a] {
                                continue;
                            }
                            let u = dist.farness(s);
                            if u > up && closer.is_none_or(|(b, _)| u < b) {
                                closer = Some((u, j));
                            }
                            if far.is_none_or(|(b, _)| u > b) {
                                far = Some((u, j));
                            }
                        }
                        if let Some((_, ng)) = closer.or(far) {
                            out.push(a, p, ng);
                        }
                    }
                    return out;
                }
                let (negs, idx) = sorted_negatives(scores, labels, a);
                let Some(&farthest) = negs.last() else {
                    return out;
                };
                // The farthest negative with the lowest index among ties.
                let far = idx[negs.partition_point(|&u| u < farthest)] as usize;
                for p in pos {
                    let up = dist.farness(scores.get(a, p));
                    let k = negs.partition_point(|&u| u <= up);
                    out.push(a, p, if k < negs.len() { idx[k] as usize } else { far });
                }
                out
            })
            .collect();
        let mut out = TripletIndices::default();
        for t in per_anchor {
            out.anchor.extend(t.anchor);
            out.positive.extend(t.positive);
            out.negative.extend(t.negative);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::MatrixRef;

    /// Both the direct scan (few positives) and the sorted search (many) follow the rule.
    #[test]
    fn matches_the_rule_by_brute_force() {
        let x: Vec<f64> = (0..90)
            .map(|k| ((k * 7919) % 23) as f64 / 7.0 - 1.5)
            .collect();
        let labels: Vec<i64> = (0..30)
            .map(|i| if i < 20 { 0 } else { i % 3 + 1 })
            .collect();
        for dist in [Distance::PML_LP_DEFAULT, Distance::Cosine] {
            let s = dist.scores(MatrixRef::new(&x, 30, 3).unwrap(), None);
            let got = SemiHardMiner::new(dist).mine(&s, &labels);
            let mut want = TripletIndices::default();
            for a in 0..30 {
                let far = |j: usize| dist.farness(s.get(a, j));
                let negs: Vec<usize> = (0..30).filter(|&j| labels[j] != labels[a]).collect();
                for p in (0..30).filter(|&j| j != a && labels[j] == labels[a]) {
                    let farther = negs.iter().copied().filter(|&j| far(j) > far(p));
                    let pick = farther
                        .reduce(|b, j| if far(j) < far(b) { j } else { b })
                        .or_else(|| {
                            negs.iter()
                                .copied()
                                .reduce(|b, j| if far(j) > far(b) { j } else { b })
                        });
                    if let Some(ng) = pick {
                        want.push(a, p, ng);
                    }
                }
            }
            assert_eq!(got, want, "{dist:?}");
        }
    }

    #[test]
    fn picks_the_closest_farther_negative_or_the_farthest() {
        // 1-D points: anchor 0 at 0, positive 1 at 1; negatives at 0.5, 2, 3.
        let x = [0.0f64, 1.0, 0.5, 2.0, 3.0];
        let labels = [0, 0, 1, 1, 1];
        let lp = Distance::Lp {
            power: crate::LpPower::One,
            normalize: false,
        };
        let s = lp.scores(MatrixRef::new(&x, 5, 1).unwrap(), None);
        let t = SemiHardMiner::new(lp).mine(&s, &labels);
        let got: Vec<_> = t.iter().filter(|&(a, _, _)| a < 2).collect();
        // (0,1): d_ap = 1, negatives 0.5, 2, 3 -> 2 (index 3). (1,0): d_ap = 1, negatives at
        // 0.5, 1, 2 -> none farther than 1 except 2 -> index 4.
        assert_eq!(got, vec![(0, 1, 3), (1, 0, 4)]);
        // Anchor 2 (label 1): positives 3 (d 1.5) and 4 (d 2.5); negatives 0 (0.5), 1 (0.5):
        // none farther -> farthest, ties to the lower index 0.
        let a2: Vec<_> = t.iter().filter(|&(a, _, _)| a == 2).collect();
        assert_eq!(a2, vec![(2, 3, 0), (2, 4, 0)]);
    }
}
