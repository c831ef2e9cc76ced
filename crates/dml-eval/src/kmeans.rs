//! Seeded k-means (k-means++ initialisation, Lloyd iterations, restarts) with blocked GEMM
//! assignments, for the NMI/AMI of an embedding.
//!
//! ```text
//! minimise  inertia = sum_i min_j |x_i - c_j|^2
//! init      k-means++ (Arthur & Vassilvitskii 2007): c_1 uniform, then each next centre is
//!           point x with probability D(x)^2 / sum D^2, D = distance to the nearest centre
//! iterate   c_j = mean of the points assigned to j; assign every point to its nearest c_j
//! stop      no assignment changes, inertia improves by <= tolerance * inertia, max_iters,
//!           or the multiply-add budget (below) is spent
//! restarts  keep the run with the lowest inertia
//! ```
//!
//! **Cost.** An assignment pass is `N k D` multiply-adds: with k = number of classes that is
//! 60,000 x 12,000 x 512 = 3.7e11 for Stanford Online Products, about 7.5 CPU-seconds (3.8 s
//! on two cores) through the blocked GEMM on the development machine (docs/benchmarks.md).
//! Textbook k-means++ is as expensive and sequential (k passes over the data), so the
//! initialisation here draws from the exact k-means++ distribution by rejection: it samples
//! from D^2 as of the last refresh (an upper bound, since D only shrinks), checks the candidate
//! against the centres added since (a few hundred dot products) and accepts it with
//! probability D_now^2 / D_then^2; every 256 centres, or when acceptances fall below about
//! one in two, one GEMM pass over the new centres refreshes D. The whole initialisation then
//! costs about one assignment pass and ends with the first assignment already made.
//! Bound-based accelerations (Elkan, Hamerly) were considered and left out: with ~5 points per
//! cluster in 512 dimensions the distance to the own centre is larger than half the distance
//! between centres, so their bounds prune almost nothing.
//!
//! **Budget.** [`KMeansConfig::max_multiply_adds`] caps the work (default 8e11: at 60k x
//! 12,000 x 512 that is two passes, initialisation plus one Lloyd iteration, one restart, which
//! keeps a whole 60k evaluation near its 18 s target). The first restart always gets its
//! initialisation and one iteration; further iterations and restarts run only while the
//! budget allows a whole pass (a restart needs two). Small problems are not affected: at
//! 10,000 x 100 x 512 the default 3 restarts x 20 iterations use at most 4% of it. The cut is
//! a function of the shapes and the data only, so results stay deterministic, and
//! [`KMeans::restarts_run`] / [`KMeans::iterations`] say what ran.
//!
//! Empty clusters take the point farthest from its centre (ties: lower index), as
//! scikit-learn does.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::embeddings::Embeddings;
use crate::error::{Error, Result};
use crate::knn::scan::{self, Layout, Side, Sink};
use crate::knn::topk::Candidate;

/// Centres added between two refreshes of the k-means++ distances, at most.
const MAX_PENDING: usize = 256;

/// Settings of [`kmeans`].
#[derive(Debug, Clone, PartialEq)]
pub struct KMeansConfig {
    /// Number of clusters. PML (and dml eval) use the number of classes.
    pub clusters: usize,
    /// Independent seeded runs; the lowest inertia wins. Default: 3.
    pub restarts: usize,
    /// Lloyd iterations per run, at most. Default: 20 (PML's faiss `niter`).
    pub max_iters: usize,
    /// Stop when an iteration lowers the inertia by at most this fraction. Default: 1e-4.
    pub tolerance: f64,
    /// Seed of every random choice. Default: 0.
    pub seed: u64,
    /// Multiply-adds the whole call may spend (see the module docs). Default: 8e11.
    pub max_multiply_adds: f64,
}

impl KMeansConfig {
    /// The defaults for `clusters` clusters.
    pub fn new(clusters: usize) -> Self {
        Self {
            clusters,
            restarts: 3,
            max_iters: 20,
            tolerance: 1e-4,
            seed: 0,
            max_multiply_adds: 8e11,
        }
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// The best clustering found.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeans {
    /// Cluster of every point.
    pub assignments: Vec<u32>,
    /// Row-major `clusters x dim` centres the assignments were made against.
    pub centroids: Vec<f32>,
    /// Sum of squared distances of the points to their centres.
    pub inertia: f64,
    /// Restarts actually run (fewer than asked when the budget ran out).
    pub restarts_run: usize,
    /// Lloyd iterations of the winning run.
    pub iterations: usize,
    /// Whether the winning run stopped because it converged (not because of a limit).
    pub converged: bool,
}

/// Clusters `points` with k-means; see the module docs for the algorithm and its budget.
///
/// ```
/// use dml_eval::{Embeddings, KMeansConfig, kmeans};
/// let points = Embeddings::new(vec![0.0, 0.1, 0.2, 10.0, 10.1, 10.2], 1).unwrap();
/// let result = kmeans(&points, &KMeansConfig::new(2)).unwrap();
/// let a = &result.assignments;
/// assert!(a[0] == a[1] && a[1] == a[2] && a[3] == a[4] && a[4] == a[5] && a[0] != a[3]);
/// ```
///
/// # Errors
/// [`Error::Empty`] without points; [`Error::InvalidParameter`] for 0 clusters, more
/// clusters than points, 0 restarts or a negative tolerance.
pub fn kmeans(points: &Embeddings, config: &KMeansConfig) -> Result<KMeans> {
    validate(points, config)?;
    let n = points.rows();
    let pass = (n * config.clusters * points.dim()) as f64;
    let mut spent = 0.0;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let norms = dml_core::linalg::row_sq_norms(points.as_slice(), points.dim());
    let mut best: Option<KMeans> = None;
    for restart in 0..config.restarts {
        if restart > 0 && spent + 2.0 * pass > config.max_multiply_adds {
            break;
        }
        let mut run = Run::plus_plus(points, &norms, config.clusters, &mut rng);
        spent += pass;
        let mut iterations = 0;
        let mut converged = false;
        while iterations < config.max_iters
            && (iterations == 0 || spent + pass <= config.max_multiply_adds)
        {
            let before = run.inertia();
            let changed = run.lloyd_step(points, &norms);
            spent += pass;
            iterations += 1;
            let after = run.inertia();
            if changed == 0 || before - after <= config.tolerance * before {
                converged = true;
                break;
            }
        }
        let candidate = KMeans {
            inertia: run.inertia(),
            assignments: run.nearest,
            centroids: run.centroids,
            restarts_run: restart + 1,
            iterations,
            converged,
        };
        best = match best {
            Some(b) if b.inertia <= candidate.inertia => Some(KMeans {
                restarts_run: restart + 1,
                ..b
            }),
            _ => Some(candidate),
        };
    }
    Ok(best.expect("at least one restart runs"))
}

fn validate(points: &Embeddings, config: &KMeansConfig) -> Result<()> {
    if points.is_empty() {
        return Err(Error::Empty { what: "points" });
    }
    let invalid = |param, value: String, reason| Error::InvalidParameter {
        param,
        value,
        reason,
    };
    if config.clusters == 0 || config.clusters > points.rows() {
        return Err(invalid(
            "clusters",
            config.clusters.to_string(),
            "must be between 1 and the number of points",
        ));
    }
    if config.restarts == 0 {
        return Err(invalid(
            "restarts",
            "0".into(),
            "at least one run is needed",
        ));
    }
    if config.tolerance.is_nan() || config.tolerance < 0.0 {
        return Err(invalid(
            "tolerance",
            config.tolerance.to_string(),
            "must be >= 0",
        ));
    }
    Ok(())
}

/// The nearest reference seen so far (ties: lower index).
struct Nearest(Candidate);

impl Default for Nearest {
    fn default() -> Self {
        Nearest(Candidate {
            key: f32::INFINITY,
            index: u32::MAX,
        })
    }
}

impl Sink for Nearest {
    fn bound(&self) -> f32 {
        self.0.key
    }

    fn offer(&mut self, key: f32, index: u32) {
        let c = Candidate { key, index };
        if c < self.0 {
            self.0 = c;
        }
    }

    fn blank(&self) -> Self {
        Nearest::default()
    }

    fn absorb(&mut self, other: Self) {
        if other.0 < self.0 {
            self.0 = other.0;
        }
    }
}

/// The nearest of `centres` (row-major) for every point: `(squared distance, index)`.
fn nearest_centres(points: &Embeddings, norms: &[f32], centres: &[f32]) -> Vec<Nearest> {
    let dim = points.dim();
    let mut sinks: Vec<Nearest> = (0..points.rows()).map(|_| Nearest::default()).collect();
    let query = Side {
        data: points.as_slice(),
        dim,
        offset: Vec::new(),
    };
    let reference = Side {
        data: centres,
        dim,
        offset: dml_core::linalg::row_sq_norms(centres, dim),
    };
    scan::scan(
        &query,
        &reference,
        -2.0,
        Layout::Separate { self_shift: None },
        &mut sinks,
    );
    for (s, &norm) in sinks.iter_mut().zip(norms) {
        s.0.key = (s.0.key + norm).max(0.0);
    }
    sinks
}

/// `|a - b|^2` with 16 running sums, so it vectorises (a single f32 sum cannot be reordered
/// by the compiler, which made the k-means++ candidate checks a tenth of k-means).
fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let (a_chunks, a_rest) = a.as_chunks::<LANES>();
    let (b_chunks, b_rest) = b.as_chunks::<LANES>();
    let mut sums = [0.0f32; LANES];
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for ((s, &x), &y) in sums.iter_mut().zip(x).zip(y) {
            *s += (x - y) * (x - y);
        }
    }
    let rest: f32 = a_rest
        .iter()
        .zip(b_rest)
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    sums.iter().sum::<f32>() + rest
}

/// One k-means run: centres, and every point's nearest centre and squared distance to it.
struct Run {
    centroids: Vec<f32>,
    nearest: Vec<u32>,
    distance: Vec<f32>,
}

impl Run {
    fn inertia(&self) -> f64 {
        self.distance.iter().map(|&d| f64::from(d)).sum()
    }

    /// k-means++ by rejection sampling (module docs), ending with every point assigned.
    fn plus_plus(points: &Embeddings, norms: &[f32], k: usize, rng: &mut ChaCha8Rng) -> Self {
        let n = points.rows();
        let first = rng.random_range(0..n);
        let mut centres = vec![first];
        let mut is_centre = vec![false; n];
        is_centre[first] = true;
        let mut distance: Vec<f32> = (0..n)
            .into_par_iter()
            .map(|i| squared_distance(points.row(i), points.row(first)))
            .collect();
        let mut nearest = vec![0u32; n];
        // Centres (positions in `centres`) not yet folded into `distance`.
        let mut pending: Vec<usize> = Vec::new();
        let mut cumulative = prefix_sums(&distance);
        let (mut accepted, mut rejected) = (0usize, 0usize);
        while centres.len() < k {
            let total = *cumulative.last().expect("n > 0");
            let candidate = if total > 0.0 {
                let u = rng.random::<f64>() * total;
                cumulative.partition_point(|&c| c <= u).min(n - 1)
            } else {
                // Every point coincides with a centre: take the unused points in order.
                is_centre.iter().position(|&c| !c).expect("k <= n")
            };
            let then = distance[candidate];
            let now = pending.iter().fold(then, |d, &c| {
                d.min(squared_distance(
                    points.row(candidate),
                    points.row(centres[c]),
                ))
            });
            let accept = !is_centre[candidate]
                && (total <= 0.0 || rng.random::<f64>() * f64::from(then) < f64::from(now));
            if accept {
                is_centre[candidate] = true;
                pending.push(centres.len());
                centres.push(candidate);
                accepted += 1;
            } else {
                rejected += 1;
            }
            let done = centres.len() == k;
            if !pending.is_empty()
                && (done || pending.len() == MAX_PENDING || rejected > accepted + 16)
            {
                let rows: Vec<f32> = pending
                    .iter()
                    .flat_map(|&c| points.row(centres[c]).iter().copied())
                    .collect();
                let found = nearest_centres(points, norms, &rows);
                for (i, f) in found.iter().enumerate() {
                    let c = Candidate {
                        key: f.0.key,
                        index: pending[f.0.index as usize] as u32,
                    };
                    if c < (Candidate {
                        key: distance[i],
                        index: nearest[i],
                    }) {
                        distance[i] = c.key;
                        nearest[i] = c.index;
                    }
                }
                for (pos, &c) in centres.iter().enumerate() {
                    distance[c] = 0.0;
                    nearest[c] = pos as u32;
                }
                pending.clear();
                cumulative = prefix_sums(&distance);
                (accepted, rejected) = (0, 0);
            }
        }
        let centroids = centres
            .iter()
            .flat_map(|&c| points.row(c).iter().copied())
            .collect();
        Self {
            centroids,
            nearest,
            distance,
        }
    }

    /// Moves every centre to the mean of its points, then reassigns. Returns how many points
    /// changed cluster.
    fn lloyd_step(&mut self, points: &Embeddings, norms: &[f32]) -> usize {
        let dim = points.dim();
        let k = self.centroids.len() / dim;
        let mut members: Vec<Vec<u32>> = vec![Vec::new(); k];
        for (i, &c) in self.nearest.iter().enumerate() {
            members[c as usize].push(i as u32);
        }
        let mut far: Vec<usize> = Vec::new();
        if members.iter().any(Vec::is_empty) {
            far = (0..points.rows()).collect();
            far.sort_by(|&a, &b| {
                self.distance[b]
                    .total_cmp(&self.distance[a])
                    .then(a.cmp(&b))
            });
        }
        // Means in parallel over clusters, each summed in point order (deterministic).
        self.centroids
            .par_chunks_exact_mut(dim)
            .zip(&members)
            .filter(|(_, m)| !m.is_empty())
            .for_each(|(centre, m)| {
                let mut sums = vec![0.0f64; dim];
                for &i in m {
                    for (s, &v) in sums.iter_mut().zip(points.row(i as usize)) {
                        *s += f64::from(v);
                    }
                }
                for (c, s) in centre.iter_mut().zip(sums) {
                    *c = (s / m.len() as f64) as f32;
                }
            });
        let mut far = far.into_iter();
        for (centre, m) in self.centroids.chunks_exact_mut(dim).zip(&members) {
            if m.is_empty() {
                let p = far.next().expect("more points than clusters");
                centre.copy_from_slice(points.row(p));
            }
        }
        let found = nearest_centres(points, norms, &self.centroids);
        let mut changed = 0;
        for (i, f) in found.into_iter().enumerate() {
            changed += usize::from(self.nearest[i] != f.0.index);
            self.nearest[i] = f.0.index;
            self.distance[i] = f.0.key;
        }
        changed
    }
}

fn prefix_sums(values: &[f32]) -> Vec<f64> {
    let mut total = 0.0;
    values
        .iter()
        .map(|&v| {
            total += f64::from(v);
            total
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `clusters` tight blobs far apart, `per` points each, in `dim` dimensions.
    fn blobs(clusters: usize, per: usize, dim: usize) -> (Embeddings, Vec<u32>) {
        let mut data = Vec::new();
        let mut labels = Vec::new();
        for c in 0..clusters {
            for p in 0..per {
                for d in 0..dim {
                    let centre = if d == c % dim {
                        100.0 * (1 + c / dim) as f32
                    } else {
                        0.0
                    };
                    data.push(centre + ((c * 31 + p * 7 + d * 3) % 11) as f32 / 10.0);
                }
                labels.push(c as u32);
            }
        }
        (Embeddings::new(data, dim).unwrap(), labels)
    }

    #[test]
    fn separated_blobs_are_recovered() {
        let (points, labels) = blobs(12, 9, 4);
        let result = kmeans(&points, &KMeansConfig::new(12)).unwrap();
        let mi = crate::mutual_info(&labels, &result.assignments).unwrap();
        assert!((mi.nmi - 1.0).abs() < 1e-12, "NMI {}", mi.nmi);
        assert!(result.converged);
        assert!(result.inertia < 12.0 * 9.0 * 4.0 * 0.5);
    }

    #[test]
    fn same_seed_same_clustering_and_seeds_matter() {
        let (points, _) = blobs(30, 3, 2);
        let config = KMeansConfig {
            restarts: 1,
            ..KMeansConfig::new(25)
        };
        let a = kmeans(&points, &config.clone().with_seed(7)).unwrap();
        let b = kmeans(&points, &config.clone().with_seed(7)).unwrap();
        assert_eq!(a, b);
        let others: Vec<KMeans> = (0..5)
            .map(|s| kmeans(&points, &config.clone().with_seed(s)).unwrap())
            .collect();
        assert!(others.iter().any(|o| o.assignments != a.assignments));
    }

    #[test]
    fn more_restarts_never_raise_the_inertia() {
        let (points, _) = blobs(20, 4, 3);
        let one = kmeans(
            &points,
            &KMeansConfig {
                restarts: 1,
                ..KMeansConfig::new(15)
            },
        )
        .unwrap();
        let five = kmeans(
            &points,
            &KMeansConfig {
                restarts: 5,
                ..KMeansConfig::new(15)
            },
        )
        .unwrap();
        assert!(five.inertia <= one.inertia);
        assert_eq!(five.restarts_run, 5);
    }

    /// Rejection sampling draws from the k-means++ distribution: with one far point among
    /// many close ones, the second centre is the far one with probability
    /// D(far)^2 / sum D^2 when the first centre is in the close group.
    #[test]
    fn initialisation_follows_d_squared() {
        // 9 points at 0, one at 3: if the first centre is at 0, P(second = far) = 9/9 = 1;
        // if the first is the far one, the second is one of the zeros. Either way both
        // groups get a centre.
        let mut data = vec![0.0f32; 9];
        data.push(3.0);
        let points = Embeddings::new(data, 1).unwrap();
        for seed in 0..20 {
            let r = kmeans(
                &points,
                &KMeansConfig {
                    restarts: 1,
                    max_iters: 1,
                    ..KMeansConfig::new(2).with_seed(seed)
                },
            )
            .unwrap();
            assert_ne!(r.assignments[0], r.assignments[9], "seed {seed}");
            assert_eq!(r.inertia, 0.0);
        }
    }

    #[test]
    fn as_many_clusters_as_points_and_duplicates() {
        let points = Embeddings::new(vec![1.0, 1.0, 1.0, 2.0], 1).unwrap();
        let r = kmeans(&points, &KMeansConfig::new(4)).unwrap();
        assert_eq!(r.inertia, 0.0);
        let mut a = r.assignments.clone();
        a.sort();
        a.dedup();
        assert!(a.len() >= 2);
    }

    #[test]
    fn the_budget_cuts_restarts_then_iterations() {
        let (points, _) = blobs(10, 5, 2);
        let pass = (points.rows() * 10 * 2) as f64;
        let r = kmeans(
            &points,
            &KMeansConfig {
                max_multiply_adds: 2.5 * pass,
                tolerance: 0.0,
                ..KMeansConfig::new(10)
            },
        )
        .unwrap();
        assert_eq!(r.restarts_run, 1);
        assert!(r.iterations <= 1);
    }

    #[test]
    fn bad_settings_are_errors() {
        let points = Embeddings::new(vec![0.0, 1.0], 1).unwrap();
        for config in [
            KMeansConfig::new(0),
            KMeansConfig::new(3),
            KMeansConfig {
                restarts: 0,
                ..KMeansConfig::new(1)
            },
            KMeansConfig {
                tolerance: f64::NAN,
                ..KMeansConfig::new(1)
            },
        ] {
            assert!(matches!(
                kmeans(&points, &config),
                Err(Error::InvalidParameter { .. })
            ));
        }
    }
}
