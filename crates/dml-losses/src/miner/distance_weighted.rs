//! Distance-weighted sampling (Wu et al. 2017).

use dml_core::Real;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::triplet_margin::positives;
use crate::distance::{Distance, LpPower, Scores};
use crate::error::{Error, Result};
use crate::tuples::TripletIndices;

/// For every positive pair, one negative drawn with probability inversely proportional to the
/// density of distances on the unit sphere.
///
/// ```text
/// q(d) ~ d^(D - 2) (1 - d^2 / 4)^((D - 3) / 2)         (D = embedding width)
/// w(a, n) = 1 / q(max(d_an, cutoff))  if d_an < nonzero_loss_cutoff, else 0
/// for every positive pair (a, p): n ~ w(a, .) / sum w(a, .)
/// ```
///
/// Weights are computed in log space with the row maximum subtracted; infinite or NaN weights
/// become 0, and anchors whose weights are all 0 are skipped. Sampling uses ChaCha8 seeded
/// with `seed`, a stream per call `step` and a fixed offset per anchor, so results are the
/// same whatever the thread count. Following the paper's code, every positive of an anchor gets
/// one negative (PML instead draws `class size` random positives per anchor).
///
/// PML defaults (`DistanceWeightedMiner()`): `cutoff = 0.5`, `nonzero_loss_cutoff = 1.4`; the
/// distance must be `Lp { power: One, normalize: true }`.
/// Reference: Wu et al., "Sampling Matters in Deep Embedding Learning", ICCV 2017, section 4.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DistanceWeightedMiner {
    cutoff: f64,
    nonzero_loss_cutoff: f64,
    seed: u64,
}

impl DistanceWeightedMiner {
    /// The distance this miner is defined for: Euclidean on the unit sphere.
    pub const DISTANCE: Distance = Distance::Lp {
        power: LpPower::One,
        normalize: true,
    };

    /// A miner; `0 <= cutoff < nonzero_loss_cutoff`.
    pub fn new(cutoff: f64, nonzero_loss_cutoff: f64, seed: u64) -> Result<Self> {
        crate::error::non_negative("DistanceWeightedMiner", "cutoff", cutoff)?;
        crate::error::positive(
            "DistanceWeightedMiner",
            "nonzero_loss_cutoff",
            nonzero_loss_cutoff,
        )?;
        if nonzero_loss_cutoff <= cutoff {
            return Err(Error::InvalidParameter {
                owner: "DistanceWeightedMiner",
                param: "nonzero_loss_cutoff",
                value: nonzero_loss_cutoff,
                reason: "must be greater than cutoff",
            });
        }
        Ok(Self {
            cutoff,
            nonzero_loss_cutoff,
            seed,
        })
    }

    /// Mines one triplet per positive pair (of anchors with a usable negative) from a self
    /// score matrix of [`Self::DISTANCE`]; `dim` is the embedding width.
    pub fn mine<T: Real>(
        &self,
        scores: &Scores<T>,
        labels: &[i64],
        dim: usize,
        step: u64,
    ) -> TripletIndices {
        let dim = dim as f64;
        let per_anchor: Vec<TripletIndices> = (0..scores.rows())
            .into_par_iter()
            .map(|a| {
                let mut out = TripletIndices::default();
                let row = scores.row(a);
                let log_w: Vec<(usize, f64)> = (0..row.len())
                    .filter(|&j| labels[j] != labels[a] && row[j].f64() < self.nonzero_loss_cutoff)
                    .map(|j| {
                        let d = row[j].f64().max(self.cutoff);
                        (
                            j,
                            (2.0 - dim) * d.ln() - (dim - 3.0) / 2.0 * (1.0 - 0.25 * d * d).ln(),
                        )
                    })
                    .filter(|(_, v)| v.is_finite())
                    .collect();
                let Some(max) = log_w.iter().map(|&(_, v)| v).reduce(f64::max) else {
                    return out;
                };
                let weights: Vec<(usize, f64)> =
                    log_w.iter().map(|&(j, v)| (j, (v - max).exp())).collect();
                let total: f64 = weights.iter().map(|&(_, w)| w).sum();
                let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
                rng.set_stream(step);
                rng.set_word_pos((a as u128) << 40);
                for p in positives(labels, a) {
                    let mut u = rng.random::<f64>() * total;
                    let mut pick = weights[weights.len() - 1].0;
                    for &(j, w) in &weights {
                        if u < w {
                            pick = j;
                            break;
                        }
                        u -= w;
                    }
                    out.push(a, p, pick);
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
    fn same_seed_same_triplets_and_only_valid_ones() {
        let x: Vec<f64> = (0..64)
            .map(|k| ((k * 7919) % 37) as f64 / 9.0 - 2.0)
            .collect();
        let labels: Vec<i64> = (0..16).map(|i| i % 4).collect();
        let s = DistanceWeightedMiner::DISTANCE.scores(MatrixRef::new(&x, 16, 4).unwrap(), None);
        let m = DistanceWeightedMiner::new(0.5, 1.4, 7).unwrap();
        let a = m.mine(&s, &labels, 4, 3);
        assert_eq!(a, m.mine(&s, &labels, 4, 3));
        assert!(!a.is_empty());
        for (an, p, n) in a.iter() {
            assert!(labels[an] == labels[p] && an != p && labels[n] != labels[an]);
            assert!(s.get(an, n) < 1.4);
        }
        assert_ne!(
            a,
            m.mine(&s, &labels, 4, 4),
            "another step draws other negatives"
        );
    }
}
