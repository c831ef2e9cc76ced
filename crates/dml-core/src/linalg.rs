//! Row-major matrix products through the `gemm` crate.
//!
//! `gemm` dispatches at run time to AVX-512, AVX2+FMA or scalar kernels and threads with
//! rayon, which is why dml does not hand-write its own micro-kernels.

use crate::Real;

/// Whether an operand is used as stored or transposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transpose {
    /// Use the matrix as stored.
    No,
    /// Use its transpose.
    Yes,
}

/// Strides `(row_stride, col_stride)` of a row-major `rows x cols` matrix, possibly transposed.
fn strides(cols_stored: usize, t: Transpose) -> (isize, isize) {
    match t {
        Transpose::No => (cols_stored as isize, 1),
        Transpose::Yes => (1, cols_stored as isize),
    }
}

/// `c = beta * op(a) * op(b) + alpha * c`, all row-major.
///
/// `op(a)` is `m x k` and `op(b)` is `k x n`; `c` is `m x n`. When `alpha` is zero `c` is not
/// read (it may hold garbage). Threads with rayon over the current pool.
///
/// # Panics
/// If a slice is shorter than its shape requires: callers own the shapes, and a mismatch is a
/// bug in dml, not bad user input.
#[allow(clippy::too_many_arguments)]
pub fn matmul<T: Real>(
    a: &[T],
    ta: Transpose,
    b: &[T],
    tb: Transpose,
    m: usize,
    n: usize,
    k: usize,
    c: &mut [T],
    alpha: T,
    beta: T,
) {
    let threads = if m * n * k < 32 * 32 * 32 {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(rayon_threads())
    };
    product(a, ta, b, tb, (m, n, k), c, alpha, beta, threads);
}

/// [`matmul`] on the calling thread only.
///
/// For callers that already run one product per rayon task (many independent tiles): a
/// product that forks inside a task would only add synchronisation, and a task that holds a
/// lock must not let rayon run other tasks on its thread meanwhile.
#[allow(clippy::too_many_arguments)]
pub fn matmul_serial<T: Real>(
    a: &[T],
    ta: Transpose,
    b: &[T],
    tb: Transpose,
    m: usize,
    n: usize,
    k: usize,
    c: &mut [T],
    alpha: T,
    beta: T,
) {
    product(
        a,
        ta,
        b,
        tb,
        (m, n, k),
        c,
        alpha,
        beta,
        gemm::Parallelism::None,
    );
}

#[allow(clippy::too_many_arguments)]
fn product<T: Real>(
    a: &[T],
    ta: Transpose,
    b: &[T],
    tb: Transpose,
    (m, n, k): (usize, usize, usize),
    c: &mut [T],
    alpha: T,
    beta: T,
    threads: gemm::Parallelism,
) {
    assert!(a.len() >= m * k, "lhs too short: {} < {m}x{k}", a.len());
    assert!(b.len() >= k * n, "rhs too short: {} < {k}x{n}", b.len());
    assert!(c.len() >= m * n, "dst too short: {} < {m}x{n}", c.len());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for x in &mut c[..m * n] {
            *x = if alpha == T::zero() {
                T::zero()
            } else {
                *x * alpha
            };
        }
        return;
    }
    let a_cols = if ta == Transpose::No { k } else { m };
    let b_cols = if tb == Transpose::No { n } else { k };
    let (a_rs, a_cs) = strides(a_cols, ta);
    let (b_rs, b_cs) = strides(b_cols, tb);
    // SAFETY: the asserts above bound every index gemm touches: op(a) is m x k with the
    // strides computed from its stored width, likewise op(b) and the contiguous m x n dst.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            alpha != T::zero(),
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            alpha,
            beta,
            false,
            false,
            false,
            threads,
        );
    }
}

/// Threads of the current rayon pool, so `--threads` and `RAYON_NUM_THREADS` apply to GEMM too.
fn rayon_threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// Squared L2 norm of each row of a row-major `rows x d` matrix.
pub fn row_sq_norms<T: Real>(x: &[T], d: usize) -> Vec<T> {
    if d == 0 {
        return Vec::new();
    }
    x.chunks_exact(d)
        .map(|r| r.iter().map(|&v| v * v).sum())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f64], b: &[f64], m: usize, n: usize, k: usize) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum();
            }
        }
        c
    }

    fn transpose(x: &[f64], rows: usize, cols: usize) -> Vec<f64> {
        let mut t = vec![0.0; x.len()];
        for i in 0..rows {
            for j in 0..cols {
                t[j * rows + i] = x[i * cols + j];
            }
        }
        t
    }

    #[test]
    fn all_transpositions_match_naive_product() {
        let (m, n, k) = (37, 41, 53);
        let a: Vec<f64> = (0..m * k)
            .map(|i| ((i * 7919) % 101) as f64 / 50.0 - 1.0)
            .collect();
        let b: Vec<f64> = (0..k * n)
            .map(|i| ((i * 104729) % 97) as f64 / 48.0 - 1.0)
            .collect();
        let want = naive(&a, &b, m, n, k);
        let at = transpose(&a, m, k);
        let bt = transpose(&b, k, n);
        for (aa, ta) in [(&a, Transpose::No), (&at, Transpose::Yes)] {
            for (bb, tb) in [(&b, Transpose::No), (&bt, Transpose::Yes)] {
                let mut c = vec![f64::NAN; m * n];
                matmul(aa, ta, bb, tb, m, n, k, &mut c, 0.0, 1.0);
                for (x, y) in c.iter().zip(&want) {
                    assert!((x - y).abs() < 1e-9, "{ta:?} {tb:?}: {x} vs {y}");
                }
                let mut serial = vec![f64::NAN; m * n];
                matmul_serial(aa, ta, bb, tb, m, n, k, &mut serial, 0.0, 1.0);
                for (x, y) in serial.iter().zip(&want) {
                    assert!((x - y).abs() < 1e-9, "serial {ta:?} {tb:?}: {x} vs {y}");
                }
            }
        }
    }

    #[test]
    fn accumulates_into_destination() {
        let a = [1.0f32, 2.0];
        let b = [3.0f32, 4.0];
        let mut c = [10.0f32];
        matmul(
            &a,
            Transpose::No,
            &b,
            Transpose::Yes,
            1,
            1,
            2,
            &mut c,
            0.5,
            2.0,
        );
        assert_eq!(c, [5.0 + 22.0]);
    }

    #[test]
    fn empty_inner_dimension_scales_destination() {
        let mut c = [3.0f32, 4.0];
        matmul::<f32>(
            &[],
            Transpose::No,
            &[],
            Transpose::No,
            1,
            2,
            0,
            &mut c,
            0.0,
            1.0,
        );
        assert_eq!(c, [0.0, 0.0]);
    }

    #[test]
    fn row_norms() {
        assert_eq!(row_sq_norms(&[3.0f32, 4.0, 1.0, 0.0], 2), vec![25.0, 1.0]);
    }
}
