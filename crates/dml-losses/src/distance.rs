//! Distances and similarities with PML's semantics, their score matrices and exact gradients.
//!
//! A [`Distance`] turns two sets of points into a dense score matrix `S` (rows = `x`,
//! columns = `y`, possibly `x == y`) with one GEMM, and [`Scores::backward`] turns a dense
//! `dL/dS` back into `dL/dx` and `dL/dy` with GEMMs. Losses only ever see `S` and hand back
//! `dL/dS`; the geometry lives here.

use dml_core::Real;
use dml_core::linalg::{Transpose, matmul, row_sq_norms};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::matrix::MatrixRef;
use crate::scratch::Scratch;

/// Normalisation divides by `max(||x||, NORM_EPS)` (PML and `torch.nn.functional.normalize`).
pub const NORM_EPS: f64 = 1e-12;

/// Which power of the Euclidean distance [`Distance::Lp`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LpPower {
    /// The Euclidean distance `||x - y||`.
    One,
    /// The squared Euclidean distance `||x - y||^2`.
    Two,
}

/// How two embeddings are compared.
///
/// Distances (`Lp`) are small for similar points; similarities (`Cosine`, `DotProduct`) are
/// large. Every loss writes its hinges through [`Distance::margin`], so the same loss runs with
/// either kind (PML note 2); the meaning of margins flips with it.
///
/// Unlike PML there is no silent default: `normalize` is always spelled out. PML's
/// `LpDistance()` is `Lp { power: One, normalize: true }` and its `DotProductSimilarity()` is
/// `DotProduct { normalize: true }` (i.e. cosine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Distance {
    /// Euclidean distance (p = 2) raised to `power`, optionally between L2-normalised points.
    Lp {
        /// 1: distance, 2: squared distance (applied to the finished distance, PML note 1).
        power: LpPower,
        /// Normalise each point to unit length (`x / max(||x||, 1e-12)`) first.
        normalize: bool,
    },
    /// Cosine similarity: dot product of L2-normalised points.
    Cosine,
    /// Dot product, optionally of L2-normalised points (then it equals `Cosine`).
    DotProduct {
        /// Normalise each point to unit length first.
        normalize: bool,
    },
}

impl Distance {
    /// PML's `LpDistance()` default: Euclidean distance between L2-normalised points.
    pub const PML_LP_DEFAULT: Distance = Distance::Lp {
        power: LpPower::One,
        normalize: true,
    };

    /// True for similarities (larger = closer), false for distances (PML's `is_inverted`).
    pub fn is_similarity(&self) -> bool {
        !matches!(self, Distance::Lp { .. })
    }

    /// Whether points are L2-normalised before comparison.
    pub fn normalizes(&self) -> bool {
        match *self {
            Distance::Lp { normalize, .. } | Distance::DotProduct { normalize } => normalize,
            Distance::Cosine => true,
        }
    }

    /// PML's direction-aware margin: `x - y` for distances, `y - x` for similarities.
    #[inline]
    pub fn margin<T: Real>(&self, x: T, y: T) -> T {
        if self.is_similarity() { y - x } else { x - y }
    }

    /// `d margin(x, y) / dx`: `+1` for distances, `-1` for similarities (and `-` that for `y`).
    #[inline]
    pub fn margin_slope<T: Real>(&self) -> T {
        if self.is_similarity() {
            -T::one()
        } else {
            T::one()
        }
    }

    /// Turns a score into a "farness": the distance itself, or the negated similarity.
    ///
    /// Miners and the fused triplet path sort by farness so one code path serves both kinds.
    #[inline]
    pub fn farness<T: Real>(&self, score: T) -> T {
        if self.is_similarity() { -score } else { score }
    }

    /// The PML class and arguments this distance corresponds to, for messages and reports.
    pub fn describe(&self) -> String {
        match *self {
            Distance::Lp { power, normalize } => format!(
                "LpDistance(p=2, power={}, normalize_embeddings={normalize})",
                match power {
                    LpPower::One => 1,
                    LpPower::Two => 2,
                }
            ),
            Distance::Cosine => "CosineSimilarity()".to_string(),
            Distance::DotProduct { normalize } => {
                format!("DotProductSimilarity(normalize_embeddings={normalize})")
            }
        }
    }

    /// The score matrix between the rows of `x` and the rows of `y` (`y = None`: `x` itself).
    ///
    /// One GEMM plus O(rows * cols) work. Lp distances are computed as
    /// `sqrt(max(||x||^2 + ||y||^2 - 2 x.y, 0))` like `torch.cdist`, except that pairs whose
    /// squared distance is within rounding of zero (including the diagonal when `y` is `x`) are
    /// recomputed from the explicit difference, so duplicates get exactly 0 and an exactly zero
    /// gradient instead of `sqrt(eps)` noise (PML note 3).
    ///
    /// # Panics
    /// If `y` has a different number of columns than `x` (callers validate shapes).
    pub fn scores<T: Real>(&self, x: MatrixRef<'_, T>, y: Option<MatrixRef<'_, T>>) -> Scores<T> {
        let dim = x.cols();
        if let Some(y) = y {
            assert_eq!(y.cols(), dim, "score matrix operands differ in width");
        }
        let left = Side::prepare(x, self.normalizes());
        let right = y.map(|y| Side::prepare(y, self.normalizes()));
        let rows = x.rows();
        let cols = y.map_or(rows, |y| y.rows());
        // Every entry is written by the GEMM below: the recycled contents never show.
        let mut values = Scratch::recycled(rows * cols);
        let exact = {
            let product = Product::new(*self, &left, right.as_ref(), dim);
            let panel = panel_rows::<T>(rows, cols) * cols;
            let mut exact = Vec::new();
            if panel > 0 {
                for (k, out) in values.chunks_mut(panel).enumerate() {
                    exact.extend(product.fill(k * panel / cols, out));
                }
            }
            exact
        };
        Scores {
            distance: *self,
            values,
            rows,
            cols,
            dim,
            left,
            right,
            exact,
        }
    }

    /// `visit(i, row_i)` for every row `i` of the self score matrix of `x`, in parallel, with
    /// the results in row order; `row_i` is bitwise the row [`Distance::scores`] computes
    /// (`visit` may overwrite it). Only one panel of rows exists at a time (a few MiB),
    /// never the `n x n` matrix: for miners that keep O(1) per row.
    pub(crate) fn map_self_rows<T: Real, R: Send>(
        &self,
        x: MatrixRef<'_, T>,
        visit: impl Fn(usize, &mut [T]) -> R + Sync,
    ) -> Vec<R> {
        let (n, dim) = (x.rows(), x.cols());
        let side = Side::prepare(x, self.normalizes());
        let product = Product::new(*self, &side, None, dim);
        let panel = panel_rows::<T>(n, n);
        let mut buffer = vec![T::zero(); panel * n];
        let mut out = Vec::with_capacity(n);
        for first in (0..n).step_by(panel.max(1)) {
            let chunk = &mut buffer[..(panel.min(n - first)) * n];
            product.fill(first, chunk);
            out.par_extend(
                chunk
                    .par_chunks_mut(n)
                    .enumerate()
                    .map(|(k, row)| visit(first + k, row)),
            );
        }
        out
    }
}

/// Bytes of score rows one GEMM produces: big enough to keep the GEMM at full speed (at
/// n = 8192, d = 128 on 2 threads, panels of 512 rows ran as fast as one whole-matrix GEMM,
/// 128 rows 10% slower, 64 rows 30% slower), small enough that a streaming pass
/// ([`Distance::map_self_rows`]) needs only this much memory.
const PANEL_BYTES: usize = 16 << 20;

/// Rows per GEMM panel of a `rows x cols` score matrix. A function of the shape only, so a
/// streamed row and the same row of the full matrix come from identical GEMM calls (the same
/// bits, whatever the GEMM's blocking).
pub(crate) fn panel_rows<T>(rows: usize, cols: usize) -> usize {
    if rows == 0 || cols == 0 {
        return 0;
    }
    (PANEL_BYTES / (cols * std::mem::size_of::<T>()))
        .max(16)
        .min(rows)
}

/// Computes panels of score rows: one GEMM, then the distance's transform per row.
struct Product<'a, T> {
    distance: Distance,
    left: &'a Side<T>,
    right: &'a Side<T>,
    is_self: bool,
    dim: usize,
}

impl<'a, T: Real> Product<'a, T> {
    fn new(distance: Distance, left: &'a Side<T>, right: Option<&'a Side<T>>, dim: usize) -> Self {
        Self {
            distance,
            left,
            right: right.unwrap_or(left),
            is_self: right.is_none(),
            dim,
        }
    }

    /// Fills `out` with score rows `first..` (as many as it holds, all columns); returns the
    /// Lp pairs that were computed from the explicit difference, in row-major order.
    fn fill(&self, first: usize, out: &mut [T]) -> Vec<(usize, usize)> {
        let (dim, cols) = (self.dim, self.right.sq_norms.len());
        let rows = out.len() / cols;
        matmul(
            &self.left.points[first * dim..(first + rows) * dim],
            Transpose::No,
            &self.right.points,
            Transpose::Yes,
            rows,
            cols,
            dim,
            out,
            T::zero(),
            T::one(),
        );
        let Distance::Lp { power, .. } = self.distance else {
            return Vec::new();
        };
        out.par_chunks_mut(cols)
            .enumerate()
            .map(|(k, row)| self.lp_row(first + k, row, power))
            .collect::<Vec<_>>()
            .into_iter()
            .flatten()
            .collect()
    }

    /// Turns row `i` of the Gram matrix into Lp distances in place, like `torch.cdist`:
    /// `sqrt(max(|x|^2 + |y|^2 - 2 x.y, 0))`, except that pairs whose squared distance is
    /// within rounding of zero (and the diagonal of a self matrix) are recomputed from the
    /// explicit difference; returns those pairs.
    fn lp_row(&self, i: usize, row: &mut [T], power: LpPower) -> Vec<(usize, usize)> {
        let sx = self.left.sq_norms[i];
        let sq_norms = &self.right.sq_norms;
        // The GEMM form loses ~eps * (|x|^2 + |y|^2) absolutely; below this many of those
        // units the explicit difference is used instead.
        let tol = T::epsilon() * T::of(4096.0);
        let near = |sq: T, sy: T| sq <= tol * (sx + sy);
        // A branch-free pass that vectorises; the rare near pairs are fixed afterwards.
        let near_count = squared_from_gram(row, sq_norms, sx, tol);
        let diagonal_near = self.is_self && near(row[i], sq_norms[i]);
        let mut exact = Vec::new();
        if near_count > usize::from(diagonal_near) {
            let xi = self.left.row(i, self.dim);
            for (j, (v, &sy)) in row.iter_mut().zip(sq_norms).enumerate() {
                let diagonal = self.is_self && i == j;
                if !diagonal && !near(*v, sy) {
                    continue;
                }
                *v = if diagonal {
                    T::zero()
                } else {
                    xi.iter()
                        .zip(self.right.row(j, self.dim))
                        .map(|(&a, &b)| (a - b) * (a - b))
                        .sum()
                };
                exact.push((i, j));
            }
        } else if self.is_self {
            row[i] = T::zero();
            exact.push((i, i));
        }
        if power == LpPower::One {
            sqrt_all(row);
        }
        exact
    }
}

/// Replaces the Gram row `row` (`x_i . y_j`) by `max(|x_i|^2 + |y_j|^2 - 2 x_i . y_j, 0)`
/// (`sx = |x_i|^2`, `sq_norms[j] = |y_j|^2`); returns how many of those are at most
/// `tol * (|x_i|^2 + |y_j|^2)`, i.e. within rounding of zero.
#[inline(always)]
fn squared_from_gram_portable<T: Real>(row: &mut [T], sq_norms: &[T], sx: T, tol: T) -> usize {
    const LANES: usize = 16;
    let one = |v: &mut T, sy: T| {
        let sq = (sx + sy - (*v + *v)).max(T::zero());
        *v = sq;
        sq <= tol * (sx + sy)
    };
    let (chunks, tail) = row.as_chunks_mut::<LANES>();
    let (norm_chunks, norm_tail) = sq_norms.as_chunks::<LANES>();
    let mut counts = [0u32; LANES];
    for (c, norms) in chunks.iter_mut().zip(norm_chunks) {
        for k in 0..LANES {
            counts[k] += u32::from(one(&mut c[k], norms[k]));
        }
    }
    let mut count: usize = counts.iter().map(|&c| c as usize).sum();
    for (v, &sy) in tail.iter_mut().zip(norm_tail) {
        count += usize::from(one(v, sy));
    }
    count
}

/// Defines `$name`, which runs the `#[inline(always)]` function `$portable` compiled for AVX2
/// when the CPU has it: element-wise loops that the compiler vectorises then take 8 `f32`
/// lanes instead of the baseline's 4 (SSE2). Only IEEE operations are used (no fused
/// multiply-add is formed), so both builds give the same bits.
macro_rules! with_avx2 {
    ($(#[$doc:meta])* fn $name:ident<$t:ident: Real>($($arg:ident: $ty:ty),*) -> $ret:ty = $portable:ident) => {
        $(#[$doc])*
        fn $name<$t: Real>($($arg: $ty),*) -> $ret {
            /// `$portable` with AVX2 enabled.
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2")]
            unsafe fn avx2<$t: Real>($($arg: $ty),*) -> $ret {
                $portable($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                return unsafe { avx2($($arg),*) };
            }
            $portable($($arg),*)
        }
    };
}
pub(crate) use with_avx2;

with_avx2! {
    /// [`squared_from_gram_portable`], vectorised.
    fn squared_from_gram<T: Real>(row: &mut [T], sq_norms: &[T], sx: T, tol: T) -> usize
        = squared_from_gram_portable
}

with_avx2! {
    /// Replaces every value by its square root.
    fn sqrt_all<T: Real>(values: &mut [T]) -> () = sqrt_all_portable
}

#[inline(always)]
fn sqrt_all_portable<T: Real>(values: &mut [T]) {
    values.iter_mut().for_each(|v| *v = v.sqrt());
}

/// One operand of a score matrix, as the GEMMs see it.
#[derive(Debug, Clone)]
struct Side<T> {
    /// The points, L2-normalised when the distance normalises.
    points: Vec<T>,
    /// The original norms `||x||` when normalised (needed by the normalisation's backward).
    norms: Option<Vec<T>>,
    /// Squared norms of `points`.
    sq_norms: Vec<T>,
}

impl<T: Real> Side<T> {
    fn prepare(x: MatrixRef<'_, T>, normalize: bool) -> Self {
        let dim = x.cols();
        let mut points = x.data().to_vec();
        let mut norms = None;
        if normalize && dim > 0 {
            let eps = T::of(NORM_EPS);
            let n: Vec<T> = row_sq_norms(x.data(), dim)
                .into_iter()
                .map(|s| s.sqrt())
                .collect();
            points
                .par_chunks_mut(dim)
                .zip(n.par_iter())
                .for_each(|(row, &norm)| {
                    let denom = norm.max(eps);
                    row.iter_mut().for_each(|v| *v = *v / denom);
                });
            norms = Some(n);
        }
        let sq_norms = if dim == 0 {
            vec![T::zero(); x.rows()]
        } else {
            row_sq_norms(&points, dim)
        };
        Self {
            points,
            norms,
            sq_norms,
        }
    }

    fn row(&self, i: usize, dim: usize) -> &[T] {
        &self.points[i * dim..(i + 1) * dim]
    }

    /// Chains `dL/d(points)` through the normalisation, in place, giving `dL/d(raw points)`.
    fn normalize_backward(&self, grad: &mut [T], dim: usize) {
        let Some(norms) = &self.norms else { return };
        let eps = T::of(NORM_EPS);
        grad.par_chunks_mut(dim)
            .zip(self.points.par_chunks(dim))
            .zip(norms.par_iter())
            .for_each(|((g, xh), &norm)| {
                if norm >= eps {
                    let proj: T = g.iter().zip(xh).map(|(&a, &b)| a * b).sum();
                    for (gi, &xi) in g.iter_mut().zip(xh) {
                        *gi = (*gi - xi * proj) / norm;
                    }
                } else {
                    // Below the clamp x / eps is linear in x (torch's clamp_min gradient).
                    g.iter_mut().for_each(|gi| *gi = *gi / eps);
                }
            });
    }
}

/// Rows scaled to unit length (`x / max(||x||, 1e-12)`, or left as they are), with the
/// backward pass of that map: for kernels that mix normalised and raw points.
#[derive(Debug, Clone)]
pub(crate) struct UnitRows<T>(Side<T>);

impl<T: Real> UnitRows<T> {
    /// The rows of `x`, normalised when `normalize`.
    pub fn new(x: MatrixRef<'_, T>, normalize: bool) -> Self {
        Self(Side::prepare(x, normalize))
    }

    /// The (normalised) rows, row-major.
    pub fn points(&self) -> &[T] {
        &self.0.points
    }

    /// Chains `dL/d(normalised rows)` into `dL/d(raw rows)`, in place.
    pub fn backward(&self, grad: &mut [T], dim: usize) {
        self.0.normalize_backward(grad, dim);
    }
}

/// A score matrix together with what its backward pass needs.
#[derive(Debug, Clone)]
pub struct Scores<T: Real> {
    distance: Distance,
    values: Scratch<T>,
    rows: usize,
    cols: usize,
    dim: usize,
    left: Side<T>,
    right: Option<Side<T>>,
    /// Lp pairs computed from explicit differences; their gradient is also taken exactly.
    exact: Vec<(usize, usize)>,
}

/// Gradients of a loss with respect to the two operands of a score matrix.
#[derive(Debug, Clone)]
pub struct ScoreGradients<T> {
    /// `dL/dx`, row-major like `x` (includes the `y` side when `y` was `x`).
    pub x: Vec<T>,
    /// `dL/dy` when `y` was a separate matrix.
    pub y: Option<Vec<T>>,
}

impl<T: Real> Scores<T> {
    /// The distance that produced these scores.
    pub fn distance(&self) -> Distance {
        self.distance
    }

    /// Number of rows (points of `x`).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (points of `y`).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The scores, row-major.
    pub fn values(&self) -> &[T] {
        &self.values
    }

    /// Row `i` of the score matrix.
    #[inline]
    pub fn row(&self, i: usize) -> &[T] {
        &self.values[i * self.cols..(i + 1) * self.cols]
    }

    /// Score between row `i` of `x` and row `j` of `y`.
    #[inline]
    pub fn get(&self, i: usize, j: usize) -> T {
        self.values[i * self.cols + j]
    }

    /// Chains a dense `dL/dS` (row-major, `rows x cols`) into gradients for `x` and `y`.
    ///
    /// `grad` is used as scratch space and left in an unspecified state. Costs one or two
    /// GEMMs of size `rows x cols x dim`.
    ///
    /// # Panics
    /// If `grad` is not `rows * cols` long.
    pub fn backward(&self, grad: &mut [T]) -> ScoreGradients<T> {
        assert_eq!(
            grad.len(),
            self.rows * self.cols,
            "dL/dS has the wrong size"
        );
        let (n, m, d) = (self.rows, self.cols, self.dim);
        let mut dx = vec![T::zero(); n * d];
        let mut dy = self.right.as_ref().map(|_| vec![T::zero(); m * d]);
        if n == 0 || m == 0 || d == 0 {
            return ScoreGradients { x: dx, y: dy };
        }
        match sparse_entries(grad, m, n.max(m)) {
            Some(nonzeros) => self.sparse_backward(&nonzeros, &mut dx, dy.as_deref_mut()),
            None => self.dense_backward(grad, &mut dx, dy.as_deref_mut()),
        }
        self.left.normalize_backward(&mut dx, d);
        if let (Some(dy), Some(r)) = (dy.as_mut(), self.right.as_ref()) {
            r.normalize_backward(dy, d);
        }
        ScoreGradients { x: dx, y: dy }
    }

    /// [`Scores::backward`] for a `dL/dS` given as its non-zero entries `(row, column, value)`
    /// (in any order, no duplicates): O(entries x dim), no `rows x cols` matrix needed.
    pub fn backward_entries(&self, entries: &[(usize, usize, T)]) -> ScoreGradients<T> {
        let (n, m, d) = (self.rows, self.cols, self.dim);
        let mut dx = vec![T::zero(); n * d];
        let mut dy = self.right.as_ref().map(|_| vec![T::zero(); m * d]);
        if d > 0 {
            self.sparse_backward(entries, &mut dx, dy.as_deref_mut());
        }
        self.left.normalize_backward(&mut dx, d);
        if let (Some(dy), Some(r)) = (dy.as_mut(), self.right.as_ref()) {
            r.normalize_backward(dy, d);
        }
        ScoreGradients { x: dx, y: dy }
    }

    /// The backward pass with GEMMs, for a dense `dL/dS` (overwritten), before normalisation.
    fn dense_backward(&self, grad: &mut [T], dx: &mut [T], mut dy: Option<&mut [T]>) {
        let (n, m, d) = (self.rows, self.cols, self.dim);
        let yside = self.right.as_ref().unwrap_or(&self.left);
        // S = f(X Y^T): dX collects W Y and dY collects W^T X. With Y = X both land in dX;
        // a second GEMM with the transposed operand is cheaper than symmetrising W in place.
        let (gemm_scale, keep) = match self.distance {
            Distance::Lp { power, .. } => {
                self.exact_pairs_backward(grad, power, dx, dy.as_deref_mut());
                // d sq / dx_i = 2 (x_i - y_j): 2 * rowsum(W) x_i - 2 (W Y)_i, likewise for y.
                let two = T::of(2.0);
                let row_sums: Vec<T> = grad
                    .par_chunks_mut(m)
                    .zip(self.values.par_chunks(m))
                    .map(|(w, dist)| lp_weights_row(w, dist, power == LpPower::One))
                    .collect();
                let col_sums = column_sums(grad, n, m);
                scale_rows(dx, &self.left.points, &row_sums, two, d);
                match dy.as_deref_mut() {
                    Some(dy) => scale_rows(dy, &yside.points, &col_sums, two, d),
                    None => scale_rows(dx, &self.left.points, &col_sums, two, d),
                }
                (-two, T::one())
            }
            Distance::Cosine | Distance::DotProduct { .. } => (T::one(), T::zero()),
        };
        matmul(
            grad,
            Transpose::No,
            &yside.points,
            Transpose::No,
            n,
            d,
            m,
            dx,
            keep,
            gemm_scale,
        );
        let (target, keep_target) = match dy {
            Some(dy) => (dy, keep),
            None => (dx, T::one()),
        };
        matmul(
            grad,
            Transpose::Yes,
            &self.left.points,
            Transpose::No,
            m,
            d,
            n,
            target,
            keep_target,
            gemm_scale,
        );
    }

    /// The backward pass for a `dL/dS` with few non-zero entries (a mined list of pairs or
    /// triplets): each entry's gradient directly, O(entries * dim), instead of dense GEMMs.
    fn sparse_backward(&self, nonzeros: &[(usize, usize, T)], dx: &mut [T], dy: Option<&mut [T]>) {
        let yside = self.right.as_ref().unwrap_or(&self.left);
        let operands = [&self.left, yside];
        scatter_pair_gradients(
            self.distance,
            operands,
            self.dim,
            nonzeros,
            |i, j| self.get(i, j),
            dx,
            dy,
        );
    }

    /// Gradient of the exactly computed pairs from the explicit difference, from their
    /// `dL/dS` entries; zeroes those so the GEMM form does not count them again.
    fn exact_pairs_backward(
        &self,
        grad: &mut [T],
        power: LpPower,
        dx: &mut [T],
        mut dy: Option<&mut [T]>,
    ) {
        let d = self.dim;
        let m = self.cols;
        let yside = self.right.as_ref().unwrap_or(&self.left);
        let two = T::of(2.0);
        for &(i, j) in &self.exact {
            let g = std::mem::replace(&mut grad[i * m + j], T::zero());
            let wij = lp_weight(g, self.values[i * m + j], power == LpPower::One);
            if wij == T::zero() {
                continue;
            }
            let (xi, yj) = (self.left.row(i, d), yside.row(j, d));
            for k in 0..d {
                let g = two * wij * (xi[k] - yj[k]);
                dx[i * d + k] += g;
                match dy.as_deref_mut() {
                    Some(dy) => dy[j * d + k] -= g,
                    None => dx[j * d + k] -= g,
                }
            }
        }
    }
}

/// Adds the gradient of every listed score `(i, j, dL/ds_ij)` to `dx` (row `i`) and `dy`
/// (row `j`; `dx` when `dy` is `None`, i.e. `y = x`), before normalisation. `distance_of(i, j)`
/// is the pair's distance, needed by the power-1 Lp gradient.
fn scatter_pair_gradients<T: Real>(
    distance: Distance,
    [xside, yside]: [&Side<T>; 2],
    d: usize,
    nonzeros: &[(usize, usize, T)],
    distance_of: impl Fn(usize, usize) -> T,
    dx: &mut [T],
    mut dy: Option<&mut [T]>,
) {
    let two = T::of(2.0);
    for &(i, j, g) in nonzeros {
        let (xi, yj) = (xside.row(i, d), yside.row(j, d));
        let lp_weight = match distance {
            Distance::Lp {
                power: LpPower::One,
                ..
            } => {
                let dist = distance_of(i, j);
                if dist > T::zero() {
                    g / dist
                } else {
                    T::zero()
                }
            }
            Distance::Lp {
                power: LpPower::Two,
                ..
            } => two * g,
            Distance::Cosine | Distance::DotProduct { .. } => T::zero(),
        };
        for k in 0..d {
            // Lp: d s / d x_i = 2 w (x_i - y_j) (the difference first: exact for near
            // duplicates); dot products: d s / d x_i = y_j.
            let (gx, gy) = if distance.is_similarity() {
                (g * yj[k], g * xi[k])
            } else {
                let diff = lp_weight * (xi[k] - yj[k]);
                (diff, -diff)
            };
            dx[i * d + k] += gx;
            match dy.as_deref_mut() {
                Some(dy) => dy[j * d + k] += gy,
                None => dx[j * d + k] += gy,
            }
        }
    }
}

/// Scores of single pairs of rows of one batch, computed on demand: for kernels that touch
/// O(n) listed pairs (mined tuples), where an `n x n` [`Scores`] matrix would cost a GEMM and
/// `n^2` memory for nothing. Lp distances come from the explicit difference, which is exact
/// for duplicates.
#[derive(Debug, Clone)]
pub(crate) struct PairScores<T> {
    distance: Distance,
    side: Side<T>,
    dim: usize,
}

impl<T: Real> PairScores<T> {
    /// Prepares (normalises, if the distance does) the rows of `x`.
    pub fn new(distance: Distance, x: MatrixRef<'_, T>) -> Self {
        Self {
            distance,
            side: Side::prepare(x, distance.normalizes()),
            dim: x.cols(),
        }
    }

    /// The score of rows `i` and `j`.
    pub fn get(&self, i: usize, j: usize) -> T {
        let (a, b) = (self.side.row(i, self.dim), self.side.row(j, self.dim));
        match self.distance {
            Distance::Lp { power, .. } => {
                let sq: T = a.iter().zip(b).map(|(&x, &y)| (x - y) * (x - y)).sum();
                match power {
                    LpPower::One => sq.sqrt(),
                    LpPower::Two => sq,
                }
            }
            Distance::Cosine | Distance::DotProduct { .. } => {
                a.iter().zip(b).map(|(&x, &y)| x * y).sum()
            }
        }
    }

    /// `dL/dx` from the gradients `(i, j, dL/ds_ij)` of listed scores (repeats add up).
    pub fn backward(&self, entries: &[(usize, usize, T)]) -> Vec<T> {
        let mut dx = vec![T::zero(); self.side.points.len()];
        if self.dim == 0 {
            return dx;
        }
        let operands = [&self.side, &self.side];
        scatter_pair_gradients(
            self.distance,
            operands,
            self.dim,
            entries,
            |i, j| self.get(i, j),
            &mut dx,
            None,
        );
        self.side.normalize_backward(&mut dx, self.dim);
        dx
    }
}

/// `dL/d(squared distance)` from `dL/dS` (`g`) and the distance, for `power = 1` (`root`):
/// `g / (2 d)`, and 0 at `d = 0` where the root is not differentiable; `g` itself for power 2.
#[inline(always)]
fn lp_weight<T: Real>(g: T, dist: T, root: bool) -> T {
    if !root {
        g
    } else if dist > T::zero() {
        g / (T::of(2.0) * dist)
    } else {
        T::zero()
    }
}

with_avx2! {
    /// [`lp_weights_row_portable`], vectorised.
    fn lp_weights_row<T: Real>(grad: &mut [T], dist: &[T], root: bool) -> T
        = lp_weights_row_portable
}

/// Replaces a row of `dL/dS` by its [`lp_weight`]s; returns their sum (16 running sums, so
/// it vectorises; the same order on any thread).
#[inline(always)]
fn lp_weights_row_portable<T: Real>(grad: &mut [T], dist: &[T], root: bool) -> T {
    const LANES: usize = 16;
    let mut sums = [T::zero(); LANES];
    let (chunks, tail) = grad.as_chunks_mut::<LANES>();
    let (dist_chunks, dist_tail) = dist.as_chunks::<LANES>();
    for (g, dc) in chunks.iter_mut().zip(dist_chunks) {
        for k in 0..LANES {
            g[k] = lp_weight(g[k], dc[k], root);
            sums[k] += g[k];
        }
    }
    let mut sum = sums.iter().fold(T::zero(), |s, &v| s + v);
    for (g, &dc) in tail.iter_mut().zip(dist_tail) {
        *g = lp_weight(*g, dc, root);
        sum += *g;
    }
    sum
}

/// The non-zero entries `(row, col, value)` of a `dL/dS` when there are so few (at most
/// `per_row` per row on average) that visiting them beats the dense GEMMs; `None` otherwise.
/// Counted a block at a time, so a dense `dL/dS` is recognised after its first blocks
/// rather than after a full pass.
fn sparse_entries<T: Real>(
    grad: &[T],
    cols: usize,
    per_row: usize,
) -> Option<Vec<(usize, usize, T)>> {
    // A GEMM does ~2 * dim flops per entry at full SIMD speed; a scattered entry costs ~4 * dim
    // scalar flops, so sparse wins by a wide margin below a few entries per row.
    const BLOCK: usize = 1 << 20;
    let limit = 16 * per_row;
    let mut count = 0;
    for block in grad.chunks(BLOCK) {
        count += block.par_iter().filter(|&&g| g != T::zero()).count();
        if count > limit {
            return None;
        }
    }
    Some(
        grad.par_chunks(cols)
            .enumerate()
            .flat_map_iter(|(i, row)| {
                row.iter()
                    .enumerate()
                    .filter(|&(_, &g)| g != T::zero())
                    .map(move |(j, &g)| (i, j, g))
            })
            .collect(),
    )
}

/// `out[i] = scale * sums[i] * points[i]` for every row.
fn scale_rows<T: Real>(out: &mut [T], points: &[T], sums: &[T], scale: T, d: usize) {
    out.par_chunks_mut(d)
        .zip(points.par_chunks(d))
        .zip(sums.par_iter())
        .for_each(|((o, p), &s)| {
            for (oi, &pi) in o.iter_mut().zip(p) {
                *oi += scale * s * pi;
            }
        });
}

/// Column sums of the `n x m` row-major `w`. Each thread owns a band of columns and adds the
/// rows in order, so the result does not depend on the number of threads or their timing
/// (a parallel fold-and-reduce over rows would).
fn column_sums<T: Real>(w: &[T], n: usize, m: usize) -> Vec<T> {
    const BAND: usize = 256;
    let mut sums = vec![T::zero(); m];
    sums.par_chunks_mut(BAND)
        .enumerate()
        .for_each(|(band, out)| {
            let columns = band * BAND..band * BAND + out.len();
            for row in w[..n * m].chunks_exact(m) {
                for (o, &v) in out.iter_mut().zip(&row[columns.clone()]) {
                    *o += v;
                }
            }
        });
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts() -> Vec<f64> {
        vec![
            0.3, -1.2, 0.5, 2.0, 0.1, -0.4, -0.7, 0.9, 1.1, 0.3, -0.2, 0.8, 0.3, -1.2, 0.5,
        ]
    }

    fn naive(dist: Distance, x: &[f64], y: &[f64], d: usize) -> f64 {
        let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt().max(NORM_EPS);
        let (xs, ys): (Vec<f64>, Vec<f64>) = if dist.normalizes() {
            (
                x.iter().map(|a| a / norm(x)).collect(),
                y.iter().map(|a| a / norm(y)).collect(),
            )
        } else {
            (x.to_vec(), y.to_vec())
        };
        match dist {
            Distance::Lp { power, .. } => {
                let sq: f64 = (0..d).map(|k| (xs[k] - ys[k]).powi(2)).sum();
                match power {
                    LpPower::One => sq.sqrt(),
                    LpPower::Two => sq,
                }
            }
            _ => (0..d).map(|k| xs[k] * ys[k]).sum(),
        }
    }

    fn all() -> Vec<Distance> {
        let mut v = vec![
            Distance::Cosine,
            Distance::DotProduct { normalize: false },
            Distance::DotProduct { normalize: true },
        ];
        for power in [LpPower::One, LpPower::Two] {
            for normalize in [false, true] {
                v.push(Distance::Lp { power, normalize });
            }
        }
        v
    }

    #[test]
    fn scores_match_naive_formulas_and_duplicates_are_exactly_zero() {
        let x = pts();
        let m = MatrixRef::new(&x, 5, 3).unwrap();
        for dist in all() {
            let s = dist.scores(m, None);
            for i in 0..5 {
                for j in 0..5 {
                    let want = naive(dist, m.row(i), m.row(j), 3);
                    assert!((s.get(i, j) - want).abs() < 1e-12, "{dist:?} {i} {j}");
                }
            }
            if !dist.is_similarity() {
                // rows 0 and 4 are identical
                assert_eq!(s.get(0, 4), 0.0);
                assert_eq!(s.get(2, 2), 0.0);
            }
        }
    }

    /// Finite differences of `sum(c .* S)` for a fixed random-ish `c`.
    #[test]
    fn backward_matches_finite_differences() {
        let x = pts();
        let y = vec![0.5, 0.5, -1.0, 1.5, -0.3, 0.2];
        let c: Vec<f64> = (0..25)
            .map(|k| ((k * 37) % 11) as f64 / 5.0 - 1.0)
            .collect();
        for dist in all() {
            for with_y in [false, true] {
                let cols = if with_y { 2 } else { 5 };
                let f = |xv: &[f64], yv: &[f64]| -> f64 {
                    let xm = MatrixRef::new(xv, 5, 3).unwrap();
                    let ym = MatrixRef::new(yv, 2, 3).unwrap();
                    let s = dist.scores(xm, with_y.then_some(ym));
                    // skip the exactly-duplicate pair (0, 4): distance is not differentiable there
                    s.values()
                        .iter()
                        .enumerate()
                        .filter(|(k, _)| {
                            with_y
                                || !(k / cols == 0 && k % cols == 4
                                    || k / cols == 4 && k % cols == 0)
                        })
                        .map(|(k, v)| c[k] * v)
                        .sum()
                };
                let xm = MatrixRef::new(&x, 5, 3).unwrap();
                let ym = MatrixRef::new(&y, 2, 3).unwrap();
                let s = dist.scores(xm, with_y.then_some(ym));
                let mut g: Vec<f64> = (0..5 * cols).map(|k| c[k]).collect();
                if !with_y {
                    g[4] = 0.0;
                    g[4 * cols] = 0.0;
                }
                let grads = s.backward(&mut g);
                let h = 1e-6;
                // perturb row 1 (not a duplicate) of x and row 0 of y
                for k in 0..3 {
                    let mut xp = x.clone();
                    xp[3 + k] += h;
                    let mut xm_ = x.clone();
                    xm_[3 + k] -= h;
                    let fd = (f(&xp, &y) - f(&xm_, &y)) / (2.0 * h);
                    assert!(
                        (fd - grads.x[3 + k]).abs() < 1e-6,
                        "{dist:?} y={with_y} x k={k}: {fd} vs {}",
                        grads.x[3 + k]
                    );
                    if with_y {
                        let mut yp = y.clone();
                        yp[k] += h;
                        let mut ym_ = y.clone();
                        ym_[k] -= h;
                        let fd = (f(&x, &yp) - f(&x, &ym_)) / (2.0 * h);
                        let gy = grads.y.as_ref().unwrap()[k];
                        assert!((fd - gy).abs() < 1e-6, "{dist:?} y k={k}: {fd} vs {gy}");
                    }
                }
            }
        }
    }

    /// The GEMM form and the per-entry form of the backward pass agree.
    #[test]
    fn dense_and_sparse_backward_agree() {
        let (n, d) = (40, 5);
        let x: Vec<f64> = (0..n * d)
            .map(|k| ((k * 7919) % 53) as f64 / 13.0 - 2.0)
            .collect();
        let y: Vec<f64> = x[..20 * d].iter().map(|v| v * 0.7 + 0.1).collect();
        let xm = MatrixRef::new(&x, n, d).unwrap();
        for dist in all() {
            for ym in [None, Some(MatrixRef::new(&y, 20, d).unwrap())] {
                let s = dist.scores(xm, ym);
                let g: Vec<f64> = (0..s.rows() * s.cols())
                    .map(|k| ((k * 31) % 17) as f64 / 8.0 - 1.0)
                    .collect();
                let nonzeros: Vec<(usize, usize, f64)> = g
                    .iter()
                    .enumerate()
                    .map(|(k, &v)| (k / s.cols(), k % s.cols(), v))
                    .collect();
                let (mut dx1, mut dx2) = (vec![0.0; n * d], vec![0.0; n * d]);
                let (mut dy1, mut dy2) = (vec![0.0; 20 * d], vec![0.0; 20 * d]);
                let with_y = ym.is_some();
                s.dense_backward(&mut g.clone(), &mut dx1, with_y.then_some(&mut dy1[..]));
                s.sparse_backward(&nonzeros, &mut dx2, with_y.then_some(&mut dy2[..]));
                for (a, b) in dx1.iter().zip(&dx2).chain(dy1.iter().zip(&dy2)) {
                    assert!(
                        (a - b).abs() < 1e-9 * (1.0 + a.abs()),
                        "{dist:?} y={with_y}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn pair_scores_match_the_score_matrix_and_its_backward() {
        let (n, d) = (12, 4);
        let x: Vec<f64> = (0..n * d)
            .map(|k| ((k * 7919) % 53) as f64 / 13.0 - 2.0)
            .collect();
        let xm = MatrixRef::new(&x, n, d).unwrap();
        let entries = [
            (0, 3, 0.5),
            (3, 0, -0.25),
            (5, 11, 1.0),
            (7, 7, 0.3),
            (5, 11, 0.2),
        ];
        for dist in all() {
            let full = dist.scores(xm, None);
            let pairs = PairScores::new(dist, xm);
            for (i, j, _) in entries {
                let (a, b) = (full.get(i, j), pairs.get(i, j));
                assert!(
                    (a - b).abs() < 1e-9 * (1.0 + a.abs()),
                    "{dist:?}: {a} vs {b}"
                );
            }
            let mut g = vec![0.0; n * n];
            for (i, j, v) in entries {
                g[i * n + j] += v;
            }
            let want = full.backward(&mut g).x;
            let got = pairs.backward(&entries);
            for (a, b) in want.iter().zip(&got) {
                assert!(
                    (a - b).abs() < 1e-9 * (1.0 + a.abs()),
                    "{dist:?}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn column_sums_add_rows_in_order_for_any_thread_count() {
        let (n, m) = (37, 600);
        let w: Vec<f32> = (0..n * m)
            .map(|k| ((k * 7919) % 1009) as f32 * 1e-3 - 0.5)
            .collect();
        let mut want = vec![0.0f32; m];
        for row in w.chunks_exact(m) {
            want.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
        }
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            // Bitwise equal: the same additions in the same order.
            assert_eq!(pool.install(|| column_sums(&w, n, m)), want);
        }
    }

    #[test]
    fn zero_distance_has_zero_gradient() {
        let x = vec![1.0f32, 2.0, 1.0, 2.0];
        let m = MatrixRef::new(&x, 2, 2).unwrap();
        let s = Distance::Lp {
            power: LpPower::One,
            normalize: false,
        }
        .scores(m, None);
        let mut g = vec![1.0f32; 4];
        let grads = s.backward(&mut g);
        assert!(grads.x.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn margins_follow_direction() {
        let lp = Distance::PML_LP_DEFAULT;
        assert_eq!(lp.margin(3.0, 1.0), 2.0);
        assert_eq!(Distance::Cosine.margin(3.0, 1.0), -2.0);
        assert_eq!(lp.margin_slope::<f64>(), 1.0);
        assert_eq!(Distance::Cosine.margin_slope::<f64>(), -1.0);
    }
}
