//! How spread out a set of embeddings is: the signal of embedding collapse.
//!
//! A collapsed model maps every input to (nearly) one point, so its mean pairwise distance
//! and per-dimension spread fall towards zero. The trainer records both at every evaluation
//! and dml-experiment's collapse rule reads them.

use rayon::prelude::*;

/// The spread statistics of a set of embeddings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Mean Euclidean distance over all pairs `i < j`.
    pub mean_pairwise_distance: f64,
    /// `sqrt(mean over dimensions of the per-dimension variance)` (population variance).
    pub embedding_std: f64,
}

impl Spread {
    /// Spread of `n = embeddings.len() / dim` row-major embeddings. `None` for fewer than two
    /// rows or a length that is not a multiple of `dim`. Exact, O(n² d) in f64 over rayon
    /// threads: meant for evaluation sets of a few thousand points.
    ///
    /// ```
    /// use dml_eval::Spread;
    ///
    /// // Points at 0, 3 and 4 on a line: pairwise distances 3, 4 and 1.
    /// let s = Spread::of(&[0.0, 3.0, 4.0], 1).unwrap();
    /// assert!((s.mean_pairwise_distance - 8.0 / 3.0).abs() < 1e-12);
    /// assert_eq!(Spread::of(&[1.0; 8], 4).unwrap().embedding_std, 0.0);
    /// ```
    pub fn of(embeddings: &[f32], dim: usize) -> Option<Self> {
        if dim == 0 || !embeddings.len().is_multiple_of(dim) || embeddings.len() / dim < 2 {
            return None;
        }
        let rows: Vec<&[f32]> = embeddings.chunks_exact(dim).collect();
        let n = rows.len();
        let distance_sum: f64 = (0..n)
            .into_par_iter()
            .map(|i| {
                rows[i + 1..]
                    .iter()
                    .map(|b| {
                        rows[i]
                            .iter()
                            .zip(b.iter())
                            .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
                            .sum::<f64>()
                            .sqrt()
                    })
                    .sum::<f64>()
            })
            // Row sums added in row order: a parallel sum would depend on thread timing.
            .collect::<Vec<f64>>()
            .iter()
            .sum();
        let pairs = (n * (n - 1) / 2) as f64;
        let variance_sum: f64 = (0..dim)
            .map(|d| {
                let mean = rows.iter().map(|r| f64::from(r[d])).sum::<f64>() / n as f64;
                rows.iter()
                    .map(|r| (f64::from(r[d]) - mean).powi(2))
                    .sum::<f64>()
                    / n as f64
            })
            .sum();
        Some(Self {
            mean_pairwise_distance: distance_sum / pairs,
            embedding_std: (variance_sum / dim as f64).sqrt(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_of_a_hand_computed_set() {
        // Three points on a line at 0, 3, 4 (dim 1) plus a zero second coordinate.
        let s = Spread::of(&[0.0, 0.0, 3.0, 0.0, 4.0, 0.0], 2).unwrap();
        assert!((s.mean_pairwise_distance - (3.0 + 4.0 + 1.0) / 3.0).abs() < 1e-12);
        let var0: f64 = (49.0 / 9.0 + 4.0 / 9.0 + 25.0 / 9.0) / 3.0;
        assert!((s.embedding_std - (var0 / 2.0).sqrt()).abs() < 1e-12);
        assert_eq!(Spread::of(&[1.0, 2.0], 2), None);
        assert_eq!(Spread::of(&[1.0, 2.0, 3.0], 2), None);
        assert_eq!(Spread::of(&[], 0), None);
    }

    #[test]
    fn identical_embeddings_have_zero_spread() {
        let s = Spread::of(&[0.5; 12], 3).unwrap();
        assert_eq!((s.mean_pairwise_distance, s.embedding_std), (0.0, 0.0));
    }
}
