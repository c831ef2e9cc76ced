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

/// The spread statistics recorded in each [`CurvePoint`] (computed by dml-eval, which the
/// trainer's evaluator uses).
pub use dml_eval::Spread;

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
