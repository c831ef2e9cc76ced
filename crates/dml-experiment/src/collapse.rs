//! Embedding collapse: measured, not guessed.
//!
//! A collapsed model maps every input to (nearly) the same point, so retrieval degenerates to
//! chance. The symptom is the spread of the evaluation embeddings shrinking towards zero. Its
//! scale depends on the head (unit-norm or not), so the rule compares each run with itself:
//!
//! ```text
//! indicator(t) = mean_pairwise_distance(t) / mean_pairwise_distance(first curve point)
//! collapsed    = the last curve point's indicator < min_spread_ratio (default 0.01),
//!                or its spread is not finite (null) while the first one was
//! ```
//!
//! The first curve point is the untrained model, so an indicator of 1 means "as spread out as
//! at initialisation" and 0 means "every embedding in one place". A run without a positive
//! finite spread at its first point cannot be judged and counts as not collapsed.

use crate::record::CurvePoint;

/// The spread statistics recorded in each [`CurvePoint`], computed from embeddings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Mean Euclidean distance over all pairs `i < j`.
    pub mean_pairwise_distance: f64,
    /// `sqrt(mean over dimensions of the per-dimension variance)` (population variance).
    pub embedding_std: f64,
}

impl Spread {
    /// Spread of `n = embeddings.len() / dim` row-major embeddings. `None` for fewer than two
    /// rows or a length that is not a multiple of `dim`. O(n² d): meant for evaluation sets of
    /// a few thousand points.
    pub fn of(embeddings: &[f32], dim: usize) -> Option<Self> {
        if dim == 0 || !embeddings.len().is_multiple_of(dim) || embeddings.len() / dim < 2 {
            return None;
        }
        let rows: Vec<&[f32]> = embeddings.chunks_exact(dim).collect();
        let n = rows.len();
        let mut distance_sum = 0.0f64;
        for (i, a) in rows.iter().enumerate() {
            for b in &rows[i + 1..] {
                let sq: f64 = a
                    .iter()
                    .zip(b.iter())
                    .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
                    .sum();
                distance_sum += sq.sqrt();
            }
        }
        let pairs = (n * (n - 1) / 2) as f64;
        let mut variance_sum = 0.0f64;
        for d in 0..dim {
            let mean = rows.iter().map(|r| f64::from(r[d])).sum::<f64>() / n as f64;
            variance_sum += rows
                .iter()
                .map(|r| (f64::from(r[d]) - mean).powi(2))
                .sum::<f64>()
                / n as f64;
        }
        Some(Self {
            mean_pairwise_distance: distance_sum / pairs,
            embedding_std: (variance_sum / dim as f64).sqrt(),
        })
    }
}

/// The collapse rule (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CollapseRule {
    /// Below this fraction of its initial spread a run has collapsed. Default: 0.01.
    pub min_spread_ratio: f64,
}

impl Default for CollapseRule {
    fn default() -> Self {
        Self {
            min_spread_ratio: 0.01,
        }
    }
}

impl CollapseRule {
    /// The collapse indicator at each curve point that has a spread: `(step, ratio)`, with a
    /// non-finite spread reported as ratio 0. Empty if the run cannot be judged.
    pub fn indicator(&self, curve: &[CurvePoint]) -> Vec<(u64, f64)> {
        let Some(initial) = initial_spread(curve) else {
            return Vec::new();
        };
        curve
            .iter()
            .map(|p| {
                let ratio = p
                    .mean_pairwise_distance
                    .filter(|s| s.is_finite())
                    .map_or(0.0, |s| s / initial);
                (p.step, ratio)
            })
            .collect()
    }

    /// Whether the run ended collapsed.
    pub fn is_collapsed(&self, curve: &[CurvePoint]) -> bool {
        self.indicator(curve)
            .last()
            .is_some_and(|&(_, ratio)| ratio < self.min_spread_ratio)
    }
}

fn initial_spread(curve: &[CurvePoint]) -> Option<f64> {
    curve
        .first()?
        .mean_pairwise_distance
        .filter(|s| s.is_finite() && *s > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(spreads: &[Option<f64>]) -> Vec<CurvePoint> {
        spreads
            .iter()
            .enumerate()
            .map(|(i, &s)| CurvePoint {
                step: 10 * i as u64,
                mean_pairwise_distance: s,
                ..CurvePoint::default()
            })
            .collect()
    }

    #[test]
    fn spread_of_a_hand_computed_set() {
        // Three points on a line at 0, 3, 4 (dim 1) plus a zero second coordinate.
        let s = Spread::of(&[0.0, 0.0, 3.0, 0.0, 4.0, 0.0], 2).unwrap();
        assert!((s.mean_pairwise_distance - (3.0 + 4.0 + 1.0) / 3.0).abs() < 1e-12);
        let var0: f64 = (49.0 / 9.0 + 4.0 / 9.0 + 25.0 / 9.0) / 3.0;
        assert!((s.embedding_std - (var0 / 2.0).sqrt()).abs() < 1e-12);
        assert_eq!(Spread::of(&[1.0, 2.0], 2), None);
        assert_eq!(Spread::of(&[1.0, 2.0, 3.0], 2), None);
    }

    #[test]
    fn identical_embeddings_have_zero_spread() {
        let s = Spread::of(&[0.5; 12], 3).unwrap();
        assert_eq!((s.mean_pairwise_distance, s.embedding_std), (0.0, 0.0));
    }

    #[test]
    fn collapse_is_a_spread_ratio_below_the_threshold_at_the_end() {
        let rule = CollapseRule::default();
        assert!(rule.is_collapsed(&curve(&[Some(2.0), Some(1.0), Some(0.019)])));
        assert!(!rule.is_collapsed(&curve(&[Some(2.0), Some(0.001), Some(0.021)])));
        assert!(rule.is_collapsed(&curve(&[Some(2.0), Some(1.0), None])));
        assert!(!rule.is_collapsed(&curve(&[None, Some(0.0)])));
        assert!(!rule.is_collapsed(&[]));
        let ind = rule.indicator(&curve(&[Some(2.0), Some(1.0)]));
        assert_eq!(ind, [(0, 1.0), (10, 0.5)]);
    }
}
