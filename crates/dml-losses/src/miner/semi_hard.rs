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
                let (negs, idx) = sorted_negatives(scores, labels, a);
                let Some(&farthest) = negs.last() else {
                    return out;
                };
                // The farthest negative with the lowest index among ties.
                let far = idx[negs.partition_point(|&u| u < farthest)] as usize;
                for p in positives(labels, a) {
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
