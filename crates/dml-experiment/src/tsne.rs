//! Seeded, deterministic Barnes-Hut t-SNE to 2-D (van der Maaten, JMLR 2014).
//!
//! Written here rather than taken from the `bhtsne` crate: its 0.7.13 Barnes-Hut fit, with its
//! default learning rate, merges whole well-separated clusters into one exact point once
//! there are ~1,000 points or more (measured on 12 Gaussian clusters in 16-D: 7 of 12 clusters
//! had zero spread at n = 1,200), and it draws its initial embedding and vantage-point tree
//! from the thread RNG. Here every random choice comes from `ChaCha8Rng::seed_from_u64(seed)`
//! and every sum has a fixed order (per-point work runs in parallel, totals are summed
//! sequentially), so the same input and seed give the same map on any thread count.
//!
//! ```text
//! p_j|i ∝ exp(-beta_i ||x_i - x_j||²) over the 3·perplexity nearest neighbours of i,
//!         beta_i found by bisection so that the entropy of p_.|i is ln(perplexity)
//! P     = (p_j|i + p_i|j) / 2n                     (sparse, symmetric, sums to 1)
//! grad_i = 4 (exaggeration · Σ_j P_ij q_ij (y_i - y_j) - Σ_j q_ij² (y_i - y_j) / Z),
//!         q_ij = 1 / (1 + ||y_i - y_j||²),  Z = Σ_{k≠l} q_kl
//! ```
//! The repulsive sums use a quadtree: a cell of width w at distance d from y_i is replaced by
//! its centre of mass when w / d < theta. Optimisation: gradient descent with momentum
//! (0.5, then 0.8) and per-coordinate gains, early exaggeration 12 for the first quarter of
//! the iterations (at most 250), learning rate max(200, n / 12) (Belkina et al. 2019).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::{Error, Result};

/// t-SNE settings. Defaults follow van der Maaten (2014): perplexity 30, theta 0.5, 1000
/// iterations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TsneConfig {
    /// Target perplexity; lowered to `(n - 1) / 3` for small sets.
    pub perplexity: f64,
    /// Barnes-Hut accuracy: smaller is more exact and slower.
    pub theta: f64,
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
    if dim == 0 || !vectors.len().is_multiple_of(dim) {
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
    let perplexity = config.perplexity.min((n - 1) as f64 / 3.0).max(1.0);
    let k = ((3.0 * perplexity) as usize).clamp(1, n - 1);
    let p = Affinities::new(&exact_neighbors(vectors, dim, k), perplexity);
    let y = optimise(&p, n, config);
    Ok(y.iter().map(|&[a, b]| [a as f32, b as f32]).collect())
}

/// A neighbour: its index and Euclidean distance.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Neighbor {
    index: usize,
    distance: f64,
}

/// The `k` nearest other points of every point, by Euclidean distance, ascending, ties by
/// index. Exact and O(n² d); each row is independent, so the parallel loop is deterministic.
fn exact_neighbors(vectors: &[f32], dim: usize, k: usize) -> Vec<Vec<Neighbor>> {
    let rows: Vec<&[f32]> = vectors.chunks_exact(dim).collect();
    (0..rows.len())
        .into_par_iter()
        .map(|i| {
            let mut d: Vec<(f64, usize)> = rows
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(j, r)| {
                    let sq: f64 = rows[i]
                        .iter()
                        .zip(r.iter())
                        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                        .sum();
                    (sq.sqrt(), j)
                })
                .collect();
            let order =
                |a: &(f64, usize), b: &(f64, usize)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
            if k < d.len() {
                d.select_nth_unstable_by(k - 1, order);
                d.truncate(k);
                // The collect below reuses this buffer: without this every point would keep
                // room for n candidates (1.6 GB at 10,000 points).
                d.shrink_to_fit();
            }
            d.sort_unstable_by(order);
            d.into_iter()
                .map(|(distance, index)| Neighbor { index, distance })
                .collect()
        })
        .collect()
}

/// The symmetric sparse input affinities P, row-compressed.
struct Affinities {
    /// `row_start[i]..row_start[i + 1]` indexes row i of `columns` / `values`.
    row_start: Vec<usize>,
    columns: Vec<usize>,
    values: Vec<f64>,
}

impl Affinities {
    fn new(neighbors: &[Vec<Neighbor>], perplexity: f64) -> Self {
        let n = neighbors.len();
        let conditional: Vec<Vec<f64>> = neighbors
            .par_iter()
            .map(|row| conditional_row(row, perplexity))
            .collect();
        // Symmetrise: every (i, j, p_j|i) also counts as (j, i, p_j|i); merge duplicates.
        let mut entries: Vec<(usize, usize, f64)> = Vec::new();
        for (i, (row, p)) in neighbors.iter().zip(&conditional).enumerate() {
            for (nb, &v) in row.iter().zip(p) {
                entries.push((i, nb.index, v));
                entries.push((nb.index, i, v));
            }
        }
        entries.sort_unstable_by_key(|a| (a.0, a.1));
        let mut row_start = vec![0usize; n + 1];
        let mut columns = Vec::with_capacity(entries.len());
        let mut values: Vec<f64> = Vec::with_capacity(entries.len());
        for (i, j, v) in entries {
            if columns.len() > row_start[i] && columns.last() == Some(&j) {
                *values.last_mut().expect("a column was pushed") += v;
            } else {
                columns.push(j);
                values.push(v);
            }
            row_start[i + 1] = columns.len();
        }
        for i in 1..=n {
            row_start[i] = row_start[i].max(row_start[i - 1]);
        }
        let total: f64 = values.iter().sum();
        for v in &mut values {
            *v /= total;
        }
        Self {
            row_start,
            columns,
            values,
        }
    }

    fn row(&self, i: usize) -> impl Iterator<Item = (usize, f64)> + '_ {
        let r = self.row_start[i]..self.row_start[i + 1];
        self.columns[r.clone()]
            .iter()
            .copied()
            .zip(self.values[r].iter().copied())
    }
}

/// `p_j|i` over i's neighbours, with the Gaussian precision bisected to the target entropy.
fn conditional_row(row: &[Neighbor], perplexity: f64) -> Vec<f64> {
    let target = perplexity.ln();
    // Shifting by the smallest squared distance leaves the distribution unchanged and keeps
    // exp() away from underflow.
    let d_min = row.first().map_or(0.0, |nb| nb.distance * nb.distance);
    let d: Vec<f64> = row
        .iter()
        .map(|nb| nb.distance * nb.distance - d_min)
        .collect();
    let (mut beta, mut lo, mut hi) = (1.0f64, f64::NEG_INFINITY, f64::INFINITY);
    let mut p = vec![0.0; d.len()];
    for _ in 0..200 {
        for (pj, &dj) in p.iter_mut().zip(&d) {
            *pj = (-beta * dj).exp();
        }
        let sum: f64 = p.iter().sum();
        let entropy = sum.ln() + beta * p.iter().zip(&d).map(|(pj, dj)| pj * dj).sum::<f64>() / sum;
        if (entropy - target).abs() < 1e-5 {
            break;
        }
        if entropy > target {
            lo = beta;
            beta = if hi.is_finite() {
                (beta + hi) / 2.0
            } else {
                beta * 2.0
            };
        } else {
            hi = beta;
            beta = if lo.is_finite() {
                (beta + lo) / 2.0
            } else {
                beta / 2.0
            };
        }
    }
    let sum: f64 = p.iter().sum();
    p.iter().map(|pj| pj / sum).collect()
}

/// A quadtree over the current embedding, rebuilt every iteration.
struct QuadTree {
    nodes: Vec<Node>,
}

/// One cell: its square, the points' centre-of-mass sums, and either four children or at
/// most one point (several only at the depth limit or for exact duplicates).
#[derive(Clone, Copy)]
struct Node {
    center: [f64; 2],
    half_width: f64,
    mass: [f64; 2],
    count: usize,
    /// Index of the first of four consecutive children; 0 for a leaf (the root is node 0).
    children: usize,
    /// The single point of a one-point leaf.
    point: Option<usize>,
}

/// Deeper cells than this hold their points together (only exact or near duplicates).
const MAX_DEPTH: usize = 48;

impl QuadTree {
    fn new(y: &[[f64; 2]]) -> Self {
        let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
        for p in y {
            for a in 0..2 {
                lo[a] = lo[a].min(p[a]);
                hi[a] = hi[a].max(p[a]);
            }
        }
        let half_width = ((hi[0] - lo[0]).max(hi[1] - lo[1]) / 2.0).max(1e-12) * (1.0 + 1e-9);
        let root = Node {
            center: [(lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0],
            half_width,
            mass: [0.0; 2],
            count: 0,
            children: 0,
            point: None,
        };
        let mut tree = Self { nodes: vec![root] };
        for i in 0..y.len() {
            tree.insert(0, i, y, 0);
        }
        tree
    }

    fn quadrant(node: &Node, p: [f64; 2]) -> usize {
        usize::from(p[0] > node.center[0]) + 2 * usize::from(p[1] > node.center[1])
    }

    fn insert(&mut self, at: usize, i: usize, y: &[[f64; 2]], depth: usize) {
        let node = &mut self.nodes[at];
        node.mass[0] += y[i][0];
        node.mass[1] += y[i][1];
        node.count += 1;
        if node.children != 0 {
            let child = node.children + Self::quadrant(node, y[i]);
            self.insert(child, i, y, depth + 1);
            return;
        }
        if node.count == 1 {
            node.point = Some(i);
            return;
        }
        let Some(old) = node.point else {
            // Already a multi-point leaf.
            return;
        };
        if depth >= MAX_DEPTH || y[old] == y[i] {
            node.point = None;
            return;
        }
        // Split: make four children and push both points down.
        let (center, h) = (node.center, node.half_width / 2.0);
        let first = self.nodes.len();
        self.nodes[at].children = first;
        self.nodes[at].point = None;
        for q in 0..4 {
            let dx = if q & 1 == 1 { h } else { -h };
            let dy = if q & 2 == 2 { h } else { -h };
            self.nodes.push(Node {
                center: [center[0] + dx, center[1] + dy],
                half_width: h,
                mass: [0.0; 2],
                count: 0,
                children: 0,
                point: None,
            });
        }
        let parent = self.nodes[at];
        for p in [old, i] {
            self.insert(first + Self::quadrant(&parent, y[p]), p, y, depth + 1);
        }
    }

    /// Unnormalised repulsion on `p`: `(Σ q² (p - y_j), Σ q)` over all points, `p` itself
    /// included (it adds exactly 1 to the sum and nothing to the force).
    fn repulsion(&self, p: [f64; 2], theta: f64) -> ([f64; 2], f64) {
        let (mut force, mut z) = ([0.0f64; 2], 0.0f64);
        let mut stack = vec![0usize];
        while let Some(at) = stack.pop() {
            let node = &self.nodes[at];
            if node.count == 0 {
                continue;
            }
            let count = node.count as f64;
            let com = [node.mass[0] / count, node.mass[1] / count];
            let diff = [p[0] - com[0], p[1] - com[1]];
            let d2 = diff[0] * diff[0] + diff[1] * diff[1];
            let width = 2.0 * node.half_width;
            if node.children == 0 || width * width < theta * theta * d2 {
                let q = 1.0 / (1.0 + d2);
                let m = count * q;
                z += m;
                force[0] += m * q * diff[0];
                force[1] += m * q * diff[1];
            } else {
                stack.extend((0..4).map(|c| node.children + c));
            }
        }
        (force, z)
    }
}

/// Gradient descent with momentum and gains; returns the final embedding.
fn optimise(p: &Affinities, n: usize, config: &TsneConfig) -> Vec<[f64; 2]> {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut y: Vec<[f64; 2]> = (0..n)
        .map(|_| [gaussian(&mut rng), gaussian(&mut rng)])
        .collect();
    for point in &mut y {
        point[0] *= 1e-4;
        point[1] *= 1e-4;
    }
    let mut velocity = vec![[0.0f64; 2]; n];
    let mut gains = vec![[1.0f64; 2]; n];
    let learning_rate = (n as f64 / 12.0).max(200.0);
    let exaggeration_iterations = (config.iterations / 4).min(250);
    for iteration in 0..config.iterations {
        let (exaggeration, momentum) = if iteration < exaggeration_iterations {
            (12.0, 0.5)
        } else {
            (1.0, 0.8)
        };
        let tree = QuadTree::new(&y);
        let repulsion: Vec<([f64; 2], f64)> = y
            .par_iter()
            .map(|&yi| tree.repulsion(yi, config.theta))
            .collect();
        // Sequential sum: the same order on every run. Each point counted itself once.
        let z = (repulsion.iter().map(|r| r.1).sum::<f64>() - n as f64).max(f64::MIN_POSITIVE);
        let gradient: Vec<[f64; 2]> = (0..n)
            .into_par_iter()
            .map(|i| {
                let mut attraction = [0.0f64; 2];
                for (j, pij) in p.row(i) {
                    let diff = [y[i][0] - y[j][0], y[i][1] - y[j][1]];
                    let q = 1.0 / (1.0 + diff[0] * diff[0] + diff[1] * diff[1]);
                    attraction[0] += pij * q * diff[0];
                    attraction[1] += pij * q * diff[1];
                }
                let (rep, _) = repulsion[i];
                [
                    4.0 * (exaggeration * attraction[0] - rep[0] / z),
                    4.0 * (exaggeration * attraction[1] - rep[1] / z),
                ]
            })
            .collect();
        for i in 0..n {
            for a in 0..2 {
                let g = gradient[i][a];
                gains[i][a] = if (g > 0.0) != (velocity[i][a] > 0.0) {
                    gains[i][a] + 0.2
                } else {
                    (gains[i][a] * 0.8).max(0.01)
                };
                velocity[i][a] = momentum * velocity[i][a] - learning_rate * gains[i][a] * g;
                y[i][a] += velocity[i][a];
            }
        }
        let mean = y.iter().fold([0.0; 2], |m, p| [m[0] + p[0], m[1] + p[1]]);
        for point in &mut y {
            point[0] -= mean[0] / n as f64;
            point[1] -= mean[1] / n as f64;
        }
    }
    y
}

/// A standard normal draw (Box-Muller), so the initial embedding needs only `rand`.
fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
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
    fn many_clusters_stay_clusters_of_distinct_points() {
        // 12 clusters x 100 points in 16-D: the case where bhtsne 0.7.13 merged clusters into
        // single points.
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (n, dim, classes) = (1200, 16, 12);
        let normal = |rng: &mut ChaCha8Rng| gaussian(rng) as f32;
        let centers: Vec<f32> = (0..classes * dim).map(|_| 3.0 * normal(&mut rng)).collect();
        let labels: Vec<usize> = (0..n).map(|i| i % classes).collect();
        let v: Vec<f32> = (0..n * dim)
            .map(|k| centers[labels[k / dim] * dim + k % dim] + normal(&mut rng))
            .collect();
        let config = TsneConfig {
            iterations: 300,
            ..TsneConfig::default()
        };
        let points = embed_2d(&v, dim, &config).unwrap();
        let purity = knn_purity(&points, &labels);
        assert!(purity > 0.95, "5-NN purity {purity}");
        for c in 0..classes {
            let first = points[c];
            let spread = labels
                .iter()
                .zip(&points)
                .filter(|(l, _)| **l == c)
                .map(|(_, p)| (p[0] - first[0]).abs() + (p[1] - first[1]).abs())
                .fold(0.0f32, f32::max);
            assert!(spread > 1e-3, "class {c} collapsed to one point");
        }
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
        let one_thread = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let d = one_thread.install(|| embed_2d(&v, 10, &config)).unwrap();
        assert_eq!(a, d, "the map depends on the thread count");
    }

    #[test]
    fn identical_points_give_finite_output() {
        let points = embed_2d(
            &[1.0; 40],
            4,
            &TsneConfig {
                iterations: 50,
                ..TsneConfig::default()
            },
        )
        .unwrap();
        assert!(points.iter().flatten().all(|x| x.is_finite()));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let c = TsneConfig::default();
        assert!(
            embed_2d(&[0.0; 6], 2, &c)
                .unwrap_err()
                .to_string()
                .contains("at least 4")
        );
        assert!(embed_2d(&[0.0; 7], 2, &c).is_err());
        let mut v = vec![0.5; 20];
        v[13] = f32::NAN;
        assert!(
            embed_2d(&v, 2, &c)
                .unwrap_err()
                .to_string()
                .contains("point 6")
        );
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
