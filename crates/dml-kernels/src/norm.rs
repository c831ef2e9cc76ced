//! Batch norm, residual add, ReLU and max pool over channels-last activations, fused.
//!
//! The forward pass is one sweep: `z = pool(relu(y * scale + shift + residual))` per channel,
//! where `scale` and `shift` are batch norm's `gamma / sqrt(var + eps)` and `beta - mean *
//! scale` (or any per-channel affine map, or none). Pooling before or after the ReLU is the
//! same function (both are monotone), so one window maximum serves both orders.
//!
//! The backward pass is two sweeps: [`act_backward`] routes the output gradient to each
//! window's maximum and through the ReLU (recomputing the forward values rather than storing
//! indices), and [`batch_norm_backward`] turns that into the gradient of the batch-norm input
//! with the per-channel sums it needs.

use rayon::prelude::*;

use crate::{GeometryError, checked_product, window_output};

/// Rows per chunk of the per-channel reductions: fixed, so the sums are the same for any
/// thread count; small, so the f32 sums within a chunk lose little.
const REDUCE_ROWS: usize = 256;

/// Pooling after the activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pool {
    /// No pooling.
    None,
    /// Max pool over square `kernel` windows with `stride` and `padding` (padding never wins).
    Max {
        /// Window side.
        kernel: usize,
        /// Step between windows.
        stride: usize,
        /// Implicit `-inf` border on each side.
        padding: usize,
    },
}

/// Sizes of one fused activation: input `[batch, h, w, channels]`, output pooled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ActGeometry {
    batch: usize,
    size: [usize; 2],
    channels: usize,
    pool: Pool,
    relu: bool,
    out_size: [usize; 2],
}

impl ActGeometry {
    /// The activation of `batch` maps of `size` (`[h, w]`) with `channels` channels.
    ///
    /// Fails when a size is zero, the pool window does not fit, padding is not smaller than
    /// the window (a window of padding only would have no maximum), or a count overflows.
    pub fn new(
        batch: usize,
        size: [usize; 2],
        channels: usize,
        pool: Pool,
        relu: bool,
    ) -> Result<Self, GeometryError> {
        if batch == 0 || channels == 0 || size.contains(&0) {
            return Err(GeometryError::new(
                "activation",
                format!("batch {batch}, size {size:?} and channels {channels} must be positive"),
            ));
        }
        let out_size = match pool {
            Pool::None => size,
            Pool::Max {
                kernel,
                stride,
                padding,
            } => {
                let fits = |side| window_output(side, kernel, stride, padding);
                match (fits(size[0]), fits(size[1])) {
                    (Some(h), Some(w)) if padding < kernel => [h, w],
                    _ => {
                        return Err(GeometryError::new(
                            "max pool",
                            format!(
                                "window {kernel}, stride {stride}, padding {padding} does not fit a map of {size:?}"
                            ),
                        ));
                    }
                }
            }
        };
        checked_product("activation input", &[batch, size[0], size[1], channels])?;
        Ok(Self {
            batch,
            size,
            channels,
            pool,
            relu,
            out_size,
        })
    }

    /// Output `[oh, ow]` (the input's size without pooling).
    pub fn out_size(&self) -> [usize; 2] {
        self.out_size
    }

    /// Elements of the input.
    pub fn input_len(&self) -> usize {
        self.batch * self.size[0] * self.size[1] * self.channels
    }

    /// Elements of the output.
    pub fn output_len(&self) -> usize {
        self.batch * self.out_size[0] * self.out_size[1] * self.channels
    }

    fn image_len(&self) -> usize {
        self.size[0] * self.size[1] * self.channels
    }

    fn out_image_len(&self) -> usize {
        self.out_size[0] * self.out_size[1] * self.channels
    }

    /// Input pixels `(iy, ix)` of output pixel `(oy, ox)`'s window, in row-major order.
    fn window(&self, oy: usize, ox: usize) -> impl Iterator<Item = (usize, usize)> + use<> {
        let (kernel, stride, padding) = match self.pool {
            Pool::None => (1, 1, 0),
            Pool::Max {
                kernel,
                stride,
                padding,
            } => (kernel, stride, padding),
        };
        let [h, w] = self.size;
        let span = |o: usize, side: usize| {
            let start = (o * stride) as isize - padding as isize;
            let lo = start.max(0) as usize;
            let hi = ((start + kernel as isize) as usize).min(side);
            lo..hi
        };
        let (rows, cols) = (span(oy, h), span(ox, w));
        rows.flat_map(move |iy| cols.clone().map(move |ix| (iy, ix)))
    }
}

/// The per-channel map applied before the ReLU: `y * scale + shift`.
#[derive(Debug, Clone, Copy)]
pub struct Affine<'a> {
    /// Per-channel factor.
    pub scale: &'a [f32],
    /// Per-channel offset.
    pub shift: &'a [f32],
}

/// Pre-activation values of one pixel's channels: `y * scale + shift + residual`.
struct PreActivation<'a> {
    y: &'a [f32],
    affine: Option<Affine<'a>>,
    residual: Option<&'a [f32]>,
    channels: usize,
}

impl PreActivation<'_> {
    #[inline]
    fn pixel(&self, offset: usize, out: &mut [f32]) {
        let y = &self.y[offset..offset + self.channels];
        match self.affine {
            Some(Affine { scale, shift }) => {
                for (((o, y), s), t) in out.iter_mut().zip(y).zip(scale).zip(shift) {
                    *o = y * s + t;
                }
            }
            None => out.copy_from_slice(y),
        }
        if let Some(residual) = self.residual {
            for (o, r) in out
                .iter_mut()
                .zip(&residual[offset..offset + self.channels])
            {
                *o += r;
            }
        }
    }
}

/// `z = pool(relu(y * scale + shift + residual))`, `y` and `residual` `[batch, h, w, c]`, `z`
/// `[batch, oh, ow, c]` (overwritten). Without `affine` the map is the identity.
///
/// # Panics
/// If a slice's length does not match the geometry (a bug in the caller).
pub fn act_forward(
    g: &ActGeometry,
    y: &[f32],
    affine: Option<Affine<'_>>,
    residual: Option<&[f32]>,
    z: &mut [f32],
) {
    check_lengths(g, y, affine, residual);
    assert_eq!(z.len(), g.output_len(), "activation output length");
    let c = g.channels;
    let pre = PreActivation {
        y,
        affine,
        residual,
        channels: c,
    };
    let floor = if g.relu { 0.0 } else { f32::NEG_INFINITY };
    z.par_chunks_mut(g.out_image_len())
        .enumerate()
        .for_each(|(img, z_img)| {
            let base = img * g.image_len();
            let mut values = vec![0.0f32; c];
            for (p, out) in z_img.chunks_exact_mut(c).enumerate() {
                let (oy, ox) = (p / g.out_size[1], p % g.out_size[1]);
                out.fill(f32::NEG_INFINITY);
                for (iy, ix) in g.window(oy, ox) {
                    pre.pixel(base + (iy * g.size[1] + ix) * c, &mut values);
                    for (o, v) in out.iter_mut().zip(&values) {
                        *o = o.max(*v);
                    }
                }
                for o in out.iter_mut() {
                    *o = o.max(floor);
                }
            }
        });
}

/// Gradient of [`act_forward`]'s pre-activation `a = y * scale + shift + residual`, given
/// `dz`, the gradient of its output: each window's gradient goes to its first maximum, and
/// nowhere where the ReLU cut it (`a <= 0`). `da` `[batch, h, w, c]` is overwritten; it is
/// also the residual's gradient.
///
/// # Panics
/// If a slice's length does not match the geometry (a bug in the caller).
pub fn act_backward(
    g: &ActGeometry,
    y: &[f32],
    affine: Option<Affine<'_>>,
    residual: Option<&[f32]>,
    dz: &[f32],
    da: &mut [f32],
) {
    check_lengths(g, y, affine, residual);
    assert_eq!(
        dz.len(),
        g.output_len(),
        "activation output-gradient length"
    );
    assert_eq!(da.len(), g.input_len(), "activation input-gradient length");
    let c = g.channels;
    let pre = PreActivation {
        y,
        affine,
        residual,
        channels: c,
    };
    da.par_chunks_mut(g.image_len())
        .enumerate()
        .for_each(|(img, da_img)| {
            let base = img * g.image_len();
            let dz_img = &dz[img * g.out_image_len()..(img + 1) * g.out_image_len()];
            if g.pool == Pool::None {
                let mut values = vec![0.0f32; c];
                for (p, (da, dz)) in da_img
                    .chunks_exact_mut(c)
                    .zip(dz_img.chunks_exact(c))
                    .enumerate()
                {
                    pre.pixel(base + p * c, &mut values);
                    for ((d, g_out), v) in da.iter_mut().zip(dz).zip(&values) {
                        *d = if g.relu && *v <= 0.0 { 0.0 } else { *g_out };
                    }
                }
                return;
            }
            da_img.fill(0.0);
            let (mut values, mut best) = (vec![0.0f32; c], vec![0.0f32; c]);
            let mut arg = vec![0u32; c];
            let mut offsets = Vec::new();
            for (p, dz) in dz_img.chunks_exact(c).enumerate() {
                let (oy, ox) = (p / g.out_size[1], p % g.out_size[1]);
                best.fill(f32::NEG_INFINITY);
                offsets.clear();
                for (k, (iy, ix)) in g.window(oy, ox).enumerate() {
                    let offset = (iy * g.size[1] + ix) * c;
                    offsets.push(offset);
                    pre.pixel(base + offset, &mut values);
                    // Branch-free first maximum, so the channel loop vectorises.
                    for ((b, a), v) in best.iter_mut().zip(arg.iter_mut()).zip(&values) {
                        let better = *v > *b;
                        *b = if better { *v } else { *b };
                        *a = if better { k as u32 } else { *a };
                    }
                }
                for (ch, ((b, a), dz)) in best.iter().zip(&arg).zip(dz).enumerate() {
                    if !(g.relu && *b <= 0.0) {
                        da_img[offsets[*a as usize] + ch] += dz;
                    }
                }
            }
        });
}

fn check_lengths(g: &ActGeometry, y: &[f32], affine: Option<Affine<'_>>, residual: Option<&[f32]>) {
    assert_eq!(y.len(), g.input_len(), "activation input length");
    if let Some(Affine { scale, shift }) = affine {
        assert_eq!(scale.len(), g.channels, "activation scale length");
        assert_eq!(shift.len(), g.channels, "activation shift length");
    }
    if let Some(residual) = residual {
        assert_eq!(residual.len(), g.input_len(), "activation residual length");
    }
}

/// Per-channel batch mean and biased variance of `y` `[rows, channels]`.
///
/// Sums run over `y - y[0]` (the first row as a shift, so that `E[d^2] - E[d]^2` does not
/// cancel when the mean is large beside the spread), in f32 within a chunk and f64 across.
pub fn channel_moments(y: &[f32], channels: usize) -> (Vec<f32>, Vec<f32>) {
    let shift = &y[..channels];
    let sums = chunked_sums(y, channels, 2, |row, acc| {
        let (sum, squares) = acc.split_at_mut(channels);
        for (((s, q), v), k) in sum.iter_mut().zip(squares).zip(row).zip(shift) {
            let d = v - k;
            *s += d;
            *q += d * d;
        }
    });
    let rows = (y.len() / channels) as f64;
    let mut mean = Vec::with_capacity(channels);
    let mut var = Vec::with_capacity(channels);
    for ch in 0..channels {
        let d_mean = sums[ch] / rows;
        mean.push((shift[ch] as f64 + d_mean) as f32);
        var.push((sums[channels + ch] / rows - d_mean * d_mean).max(0.0) as f32);
    }
    (mean, var)
}

/// Batch norm's `(scale, shift)`: `gamma / sqrt(var + eps)` and `beta - mean * scale`.
pub fn batch_norm_affine(
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    epsilon: f64,
) -> (Vec<f32>, Vec<f32>) {
    let scale: Vec<f32> = gamma
        .iter()
        .zip(var)
        .map(|(g, v)| (*g as f64 / (*v as f64 + epsilon).sqrt()) as f32)
        .collect();
    let shift = beta
        .iter()
        .zip(mean)
        .zip(&scale)
        .map(|((b, m), s)| b - m * s)
        .collect();
    (scale, shift)
}

/// Turns `da`, the gradient of batch norm's output (from [`act_backward`]), into the gradient
/// of its input `y` in place, and writes the gradients of `gamma` and `beta`.
///
/// With `x_hat = (y - mean) / sqrt(var + eps)` over `m` rows: `dbeta = sum da`, `dgamma = sum
/// da * x_hat`, `dy = gamma / sqrt(var + eps) * (da - dbeta / m - x_hat * dgamma / m)`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward(
    y: &[f32],
    channels: usize,
    gamma: &[f32],
    mean: &[f32],
    var: &[f32],
    epsilon: f64,
    da: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    assert_eq!(y.len(), da.len(), "batch-norm gradient length");
    let inv_std: Vec<f32> = var
        .iter()
        .map(|v| (1.0 / (*v as f64 + epsilon).sqrt()) as f32)
        .collect();
    let sums = chunked_sums_pair(y, da, channels, |y_row, da_row, acc| {
        let (sum, dot) = acc.split_at_mut(channels);
        let per_channel = sum.iter_mut().zip(dot).zip(mean.iter().zip(&inv_std));
        for (((s, d), (m, i)), (y, g)) in per_channel.zip(y_row.iter().zip(da_row)) {
            *s += g;
            *d += g * ((y - m) * i);
        }
    });
    let rows = y.len() / channels;
    for ch in 0..channels {
        dbeta[ch] = sums[ch] as f32;
        dgamma[ch] = sums[channels + ch] as f32;
    }
    // dy = scale * (da - mean_da - x_hat * mean_da_x) = da * scale + (y - mean) * k + b per
    // channel, with the constants folded: one multiply-add pair per element.
    let mut slope = Vec::with_capacity(channels);
    let mut offset = Vec::with_capacity(channels);
    for ch in 0..channels {
        let scale = gamma[ch] as f64 * inv_std[ch] as f64;
        let mean_da = sums[ch] / rows as f64;
        let mean_da_x = sums[channels + ch] / rows as f64;
        let k = -scale * mean_da_x * inv_std[ch] as f64;
        slope.push((scale as f32, k as f32));
        offset.push((-scale * mean_da - k * mean[ch] as f64) as f32);
    }
    da.par_chunks_mut(REDUCE_ROWS * channels)
        .zip(y.par_chunks(REDUCE_ROWS * channels))
        .for_each(|(da, y)| {
            for (da, y) in da.chunks_exact_mut(channels).zip(y.chunks_exact(channels)) {
                for ((d, y), ((s, k), b)) in da.iter_mut().zip(y).zip(slope.iter().zip(&offset)) {
                    *d = *d * s + y * k + b;
                }
            }
        });
}

/// Per-column sums of a row-major `[rows, columns]` matrix, written as f32.
pub fn column_sums(m: &[f32], columns: usize, out: &mut [f32]) {
    let sums = chunked_sums(m, columns, 1, |row, acc| {
        for (a, v) in acc.iter_mut().zip(row) {
            *a += v;
        }
    });
    for (o, s) in out.iter_mut().zip(sums) {
        *o = s as f32;
    }
}

/// Sums `width * accumulators` values over fixed chunks of rows: within a chunk in f32 (one
/// vector lane per channel), chunk totals in f64, added in chunk order.
fn chunked_sums(
    m: &[f32],
    width: usize,
    accumulators: usize,
    per_row: impl Fn(&[f32], &mut [f32]) + Sync,
) -> Vec<f64> {
    let partials: Vec<Vec<f32>> = m
        .par_chunks(REDUCE_ROWS * width)
        .map(|chunk| {
            let mut acc = vec![0.0f32; width * accumulators];
            for row in chunk.chunks_exact(width) {
                per_row(row, &mut acc);
            }
            acc
        })
        .collect();
    add_in_order(partials, width * accumulators)
}

/// [`chunked_sums`] over two matrices of the same shape read together.
fn chunked_sums_pair(
    a: &[f32],
    b: &[f32],
    width: usize,
    per_row: impl Fn(&[f32], &[f32], &mut [f32]) + Sync,
) -> Vec<f64> {
    let partials: Vec<Vec<f32>> = a
        .par_chunks(REDUCE_ROWS * width)
        .zip(b.par_chunks(REDUCE_ROWS * width))
        .map(|(a, b)| {
            let mut acc = vec![0.0f32; width * 2];
            for (a, b) in a.chunks_exact(width).zip(b.chunks_exact(width)) {
                per_row(a, b, &mut acc);
            }
            acc
        })
        .collect();
    add_in_order(partials, width * 2)
}

fn add_in_order(partials: Vec<Vec<f32>>, len: usize) -> Vec<f64> {
    let mut total = vec![0.0f64; len];
    for partial in partials {
        for (t, p) in total.iter_mut().zip(partial) {
            *t += p as f64;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, random, with_threads};

    fn geometries() -> Vec<ActGeometry> {
        let max = |kernel, stride, padding| Pool::Max {
            kernel,
            stride,
            padding,
        };
        [
            (2, [6, 6], 3, max(2, 2, 0), true),
            (1, [7, 5], 5, max(2, 2, 0), true),
            (2, [7, 7], 4, max(3, 2, 1), true),
            (3, [3, 3], 2, max(2, 2, 0), false),
            (2, [5, 4], 17, Pool::None, true),
            (1, [4, 3], 3, Pool::None, false),
        ]
        .into_iter()
        .map(|(b, s, c, p, r)| ActGeometry::new(b, s, c, p, r).unwrap())
        .collect()
    }

    /// The forward pass written out per element, in f64.
    fn reference_act(g: &ActGeometry, a: &[f64]) -> Vec<f64> {
        let c = g.channels;
        let mut z = vec![0.0; g.output_len()];
        for img in 0..g.batch {
            for oy in 0..g.out_size[0] {
                for ox in 0..g.out_size[1] {
                    for ch in 0..c {
                        let m = g
                            .window(oy, ox)
                            .map(|(iy, ix)| a[img * g.image_len() + (iy * g.size[1] + ix) * c + ch])
                            .fold(f64::NEG_INFINITY, f64::max);
                        z[img * g.out_image_len() + (oy * g.out_size[1] + ox) * c + ch] =
                            if g.relu { m.max(0.0) } else { m };
                    }
                }
            }
        }
        z
    }

    #[test]
    fn forward_equals_the_elementwise_definition() {
        for g in geometries() {
            let y = random(g.input_len(), 1);
            let r = random(g.input_len(), 2);
            let scale = random(g.channels, 3);
            let shift = random(g.channels, 4);
            let affine = Affine {
                scale: &scale,
                shift: &shift,
            };
            let mut z = vec![f32::NAN; g.output_len()];
            act_forward(&g, &y, Some(affine), Some(&r), &mut z);
            let c = g.channels;
            let a: Vec<f64> = (0..y.len())
                .map(|i| y[i] as f64 * scale[i % c] as f64 + shift[i % c] as f64 + r[i] as f64)
                .collect();
            let expected: Vec<f32> = reference_act(&g, &a).iter().map(|v| *v as f32).collect();
            assert_close(&z, &expected, 1e-6, &format!("{g:?}"));
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        // The pre-activations are spread apart (no ties, none near zero), so the function is
        // smooth at the test point and central differences are exact up to rounding.
        for g in geometries() {
            let n = g.input_len();
            let y: Vec<f32> = (0..n)
                .map(|i| ((i * 7919) % n) as f32 * 0.37 - n as f32 * 0.17 + 0.05)
                .collect();
            let dz = random(g.output_len(), 5);
            let mut da = vec![f32::NAN; n];
            act_backward(&g, &y, None, None, &dz, &mut da);
            let loss = |y: &[f32]| {
                let mut z = vec![0.0; g.output_len()];
                act_forward(&g, y, None, None, &mut z);
                z.iter()
                    .zip(&dz)
                    .map(|(z, d)| *z as f64 * *d as f64)
                    .sum::<f64>()
            };
            for i in 0..n {
                let (mut plus, mut minus) = (y.clone(), y.clone());
                plus[i] += 0.01;
                minus[i] -= 0.01;
                let numeric = (loss(&plus) - loss(&minus)) / 0.02;
                assert!(
                    (numeric - da[i] as f64).abs() < 1e-3,
                    "{g:?} element {i}: numeric {numeric}, analytic {}",
                    da[i]
                );
            }
        }
    }

    #[test]
    fn batch_norm_backward_matches_finite_differences() {
        let (rows, c) = (37, 5);
        let y: Vec<f32> = random(rows * c, 6).iter().map(|v| v * 3.0 + 1.0).collect();
        let gamma = random(c, 7);
        let beta = random(c, 8);
        let dz = random(rows * c, 9);
        let eps = 1e-5;
        // loss(y, gamma, beta) = sum dz * batch_norm(y), in f64 through the public kernels.
        let loss = |y: &[f32], gamma: &[f32], beta: &[f32]| {
            let (mean, var) = channel_moments(y, c);
            let (scale, shift) = batch_norm_affine(gamma, beta, &mean, &var, eps);
            y.iter()
                .enumerate()
                .map(|(i, v)| (v * scale[i % c] + shift[i % c]) as f64 * dz[i] as f64)
                .sum::<f64>()
        };
        let (mean, var) = channel_moments(&y, c);
        let mut dy = dz.clone();
        let (mut dgamma, mut dbeta) = (vec![0.0; c], vec![0.0; c]);
        batch_norm_backward(
            &y,
            c,
            &gamma,
            &mean,
            &var,
            eps,
            &mut dy,
            &mut dgamma,
            &mut dbeta,
        );
        let h = 1e-2f32;
        let numeric = |f: &dyn Fn(f32) -> f64| (f(h) - f(-h)) / (2.0 * h as f64);
        for i in (0..rows * c).step_by(7) {
            let n = numeric(&|d| {
                let mut y2 = y.clone();
                y2[i] += d;
                loss(&y2, &gamma, &beta)
            });
            assert!((n - dy[i] as f64).abs() < 2e-3, "dy[{i}]: {n} vs {}", dy[i]);
        }
        for ch in 0..c {
            let n = numeric(&|d| {
                let mut g2 = gamma.clone();
                g2[ch] += d;
                loss(&y, &g2, &beta)
            });
            assert!(
                (n - dgamma[ch] as f64).abs() < 2e-3,
                "dgamma[{ch}]: {n} vs {}",
                dgamma[ch]
            );
            let n = numeric(&|d| {
                let mut b2 = beta.clone();
                b2[ch] += d;
                loss(&y, &gamma, &b2)
            });
            assert!(
                (n - dbeta[ch] as f64).abs() < 2e-3,
                "dbeta[{ch}]: {n} vs {}",
                dbeta[ch]
            );
        }
    }

    #[test]
    fn moments_are_the_mean_and_biased_variance() {
        let y = [1.0, 10.0, 3.0, 20.0, 5.0, 60.0];
        let (mean, var) = channel_moments(&y, 2);
        assert_close(&mean, &[3.0, 30.0], 1e-7, "mean");
        assert_close(&var, &[8.0 / 3.0, 1400.0 / 3.0], 1e-6, "var");
    }

    #[test]
    fn reductions_do_not_depend_on_threads() {
        let (rows, c) = (5000, 7);
        let y = random(rows * c, 10);
        let run = || {
            let (mean, var) = channel_moments(&y, c);
            let mut sums = vec![0.0; c];
            column_sums(&y, c, &mut sums);
            (mean, var, sums)
        };
        assert_eq!(with_threads(1, run), with_threads(3, run));
    }

    #[test]
    fn pools_that_do_not_fit_are_errors() {
        let max = Pool::Max {
            kernel: 3,
            stride: 2,
            padding: 3,
        };
        assert!(ActGeometry::new(1, [4, 4], 1, max, true).is_err());
        let two = Pool::Max {
            kernel: 2,
            stride: 2,
            padding: 0,
        };
        assert!(ActGeometry::new(1, [1, 4], 1, two, true).is_err());
        assert_eq!(
            ActGeometry::new(1, [7, 3], 1, two, true)
                .unwrap()
                .out_size(),
            [3, 1]
        );
    }
}
