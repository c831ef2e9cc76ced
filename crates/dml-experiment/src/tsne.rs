//! Seeded, deterministic Barnes-Hut t-SNE to 2-D, on top of the `bhtsne` crate.
//!
//! `bhtsne` draws its initial embedding and its vantage-point tree from the thread RNG, and
//! sums over rayon's work-stealing splits, so two runs on the same data differ. We keep its
//! optimiser (Barnes-Hut forces, momentum, gains, early exaggeration) and remove the three
//! sources of variation:
//! - the initial embedding comes from `ChaCha8Rng::seed_from_u64(seed)`;
//! - the neighbour graph is exact k-NN computed here (ties broken by the lower index);
//! - the optimisation runs in a one-thread rayon pool, so every sum has a fixed order.
//!
//! One thread is fast enough for a report: about 2 s for 2,000 points on one core.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::{Error, Result};

/// t-SNE settings. Defaults follow van der Maaten (2014): perplexity 30, theta 0.5, 1000
/// iterations (early exaggeration 12 for the first 250, from `bhtsne`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TsneConfig {
    /// Target perplexity; lowered to `(n - 1) / 3` for small sets.
    pub perplexity: f32,
    /// Barnes-Hut accuracy: 0 would be exact, larger is faster and coarser.
    pub theta: f32,
    /// Gradient-descent iterations.
    pub iterations: usize,
    /// Seed of the initial embedding.
    pub seed: u64,
}

impl Default for TsneConfig {
    fn default() -> Self {
        Self {
            perplexity: 30.0,
            theta: 0.5,
            iterations: 1000,
            seed: 0,
        }
    }
}

/// Embeds `n = vectors.len() / dim` row-major points in 2-D; returns one `[x, y]` per point.
///
/// Needs at least 4 points, finite values, `theta > 0` and `perplexity >= 1`.
pub fn embed_2d(vectors: &[f32], dim: usize, config: &TsneConfig) -> Result<Vec<[f32; 2]>> {
    let bad = |reason: String| Error::Tsne { reason };
    if dim == 0 || vectors.len() % dim != 0 {
        return Err(bad(format!(
            "{} values do not form rows of dimension {dim}",
            vectors.len()
        )));
    }
    let n = vectors.len() / dim;
    if n < 4 {
        return Err(bad(format!("needs at least 4 points, got {n}")));
    }
    if let Some(i) = vectors.iter().position(|v| !v.is_finite()) {
        return Err(bad(format!("point {} has a non-finite value", i / dim)));
    }
    if !(config.theta > 0.0 && config.theta.is_finite()) {
        return Err(bad(format!("theta must be > 0, got {}", config.theta)));
    }
    if !(config.perplexity >= 1.0 && config.perplexity.is_finite()) {
        return Err(bad(format!(
            "perplexity must be >= 1, got {}",
            config.perplexity
        )));
    }
    let perplexity = config.perplexity.min((n - 1) as f32 / 3.0);
    let k = ((3.0 * perplexity) as usize).clamp(1, n - 1);
    let neighbors = exact_neighbors(vectors, dim, k);

    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let init: Vec<f32> = (0..2 * n).map(|_| rng.random_range(-1e-4..1e-4)).collect();

    let rows: Vec<&[f32]> = vectors.chunks_exact(dim).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|e| bad(format!("cannot start its thread: {e}")))?;
    let flat = pool.install(|| {
        let mut tsne: bhtsne::tSNE<f32, &[f32], 2> = bhtsne::tSNE::new(&rows);
        tsne.perplexity(perplexity)
            .epochs(config.iterations)
            .initial_embedding(init);
        tsne.barnes_hut_with_neighbors(config.theta, &neighbors);
        tsne.embedding()
    });
    Ok(flat.chunks_exact(2).map(|p| [p[0], p[1]]).collect())
}

/// The `k` nearest other points of every point, by Euclidean distance, ascending, ties by
/// index. Exact and O(n² d); each row is independent, so the parallel loop is deterministic.
fn exact_neighbors(vectors: &[f32], dim: usize, k: usize) -> Vec<Vec<bhtsne::Neighbor<f32>>> {
    let rows: Vec<&[f32]> = vectors.chunks_exact(dim).collect();
    (0..rows.len())
        .into_par_iter()
        .map(|i| {
            let mut d: Vec<(f32, usize)> = rows
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(j, r)| {
                    let sq: f32 = rows[i]
                        .iter()
                        .zip(r.iter())
                        .map(|(a, b)| (a - b) * (a - b))
                        .sum();
                    (sq.sqrt(), j)
                })
                .collect();
            let order = |a: &(f32, usize), b: &(f32, usize)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
            if k < d.len() {
                d.select_nth_unstable_by(k - 1, order);
                d.truncate(k);
            }
            d.sort_unstable_by(order);
            d.into_iter()
                .map(|(distance, index)| bhtsne::Neighbor { index, distance })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two Gaussian blobs in 10-D, 8 standard deviations apart, alternating labels.
    fn blobs(n: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let dim = 10;
        let mut v = Vec::with_capacity(n * dim);
        let labels: Vec<usize> = (0..n).map(|i| i % 2).collect();
        for &l in &labels {
            for d in 0..dim {
                // Sum of 12 uniforms minus 6: an approximately standard normal draw.
                let z: f32 = (0..12).map(|_| rng.random::<f32>()).sum::<f32>() - 6.0;
                v.push(z + if d == 0 { 8.0 * l as f32 } else { 0.0 });
            }
        }
        (v, labels)
    }

    /// Fraction of points whose 5 nearest 2-D neighbours are all of their own label.
    fn knn_purity(points: &[[f32; 2]], labels: &[usize]) -> f64 {
        let flat: Vec<f32> = points.iter().flatten().copied().collect();
        let nn = exact_neighbors(&flat, 2, 5);
        let pure = nn
            .iter()
            .enumerate()
            .filter(|(i, row)| row.iter().all(|nb| labels[nb.index] == labels[*i]))
            .count();
        pure as f64 / points.len() as f64
    }

    #[test]
    fn separates_two_well_separated_blobs() {
        let (v, labels) = blobs(300, 1);
        let config = TsneConfig {
            iterations: 400,
            ..TsneConfig::default()
        };
        let points = embed_2d(&v, 10, &config).unwrap();
        assert_eq!(points.len(), 300);
        let purity = knn_purity(&points, &labels);
        assert!(purity > 0.97, "5-NN purity {purity}");
    }

    #[test]
    fn same_seed_same_map_other_seed_other_map() {
        let (v, _) = blobs(120, 2);
        let config = TsneConfig {
            iterations: 150,
            ..TsneConfig::default()
        };
        let a = embed_2d(&v, 10, &config).unwrap();
        let b = embed_2d(&v, 10, &config).unwrap();
        assert_eq!(a, b);
        let c = embed_2d(&v, 10, &TsneConfig { seed: 9, ..config }).unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn identical_points_give_finite_output() {
        let points = embed_2d(&[1.0; 40], 4, &TsneConfig { iterations: 50, ..TsneConfig::default() }).unwrap();
        assert!(points.iter().flatten().all(|x| x.is_finite()));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let c = TsneConfig::default();
        assert!(embed_2d(&[0.0; 6], 2, &c).unwrap_err().to_string().contains("at least 4"));
        assert!(embed_2d(&[0.0; 7], 2, &c).is_err());
        let mut v = vec![0.5; 20];
        v[13] = f32::NAN;
        assert!(embed_2d(&v, 2, &c).unwrap_err().to_string().contains("point 6"));
        let c = TsneConfig { theta: 0.0, ..c };
        assert!(embed_2d(&[0.0; 20], 2, &c).is_err());
    }

    #[test]
    fn neighbours_are_exact_and_ties_go_to_the_lower_index() {
        // Points 0, 1, 2, 3 on a line at 0, 1, -1, 2: point 0 has 1 and 2 tied at distance 1.
        let nn = exact_neighbors(&[0.0, 1.0, -1.0, 2.0], 1, 2);
        let idx: Vec<usize> = nn[0].iter().map(|n| n.index).collect();
        assert_eq!(idx, [1, 2]);
        let idx: Vec<usize> = nn[3].iter().map(|n| n.index).collect();
        assert_eq!(idx, [1, 0]);
    }
}
