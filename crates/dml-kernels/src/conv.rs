//! 2-D convolution of channels-last activations: im2col tiles times the weights.
//!
//! Shapes: input `x` is `[batch, h, w, in_channels]`, output `y` is `[batch, oh, ow,
//! out_channels]`, and the weights are `[kh, kw, in_channels, out_channels]` ("HWIO": row
//! `(ky * kw + kx) * in_channels + ci` of a `depth x out_channels` matrix), so that one output
//! pixel is one im2col row times that matrix. [`oihw_to_hwio`] and [`hwio_to_oihw`] convert
//! from and to the `[out, in, kh, kw]` layout burn and PyTorch store.
//!
//! Output rows (pixels) are processed in tiles of [`Conv2dGeometry::tile_rows`]: each tile's
//! im2col rows are built in a per-thread buffer and multiplied at once, so the im2col matrix
//! is never materialised whole and stays in cache. A 1x1 convolution with stride 1 and no
//! padding needs no im2col: the input already is that matrix.

use dml_core::linalg::{Transpose, matmul_serial};
use rayon::prelude::*;

use crate::{GeometryError, checked_product, scratch, window_output};

/// The sizes of one convolution; built by [`Conv2dGeometry::new`], which checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv2dGeometry {
    pub(crate) batch: usize,
    pub(crate) in_size: [usize; 2],
    pub(crate) in_channels: usize,
    pub(crate) out_channels: usize,
    pub(crate) kernel: [usize; 2],
    pub(crate) stride: [usize; 2],
    pub(crate) padding: [usize; 2],
    pub(crate) out_size: [usize; 2],
}

impl Conv2dGeometry {
    /// A convolution of `batch` images of `in_size` (`[h, w]`) with `in_channels` channels to
    /// `out_channels`, with the given kernel, stride and (symmetric) padding per axis.
    ///
    /// Fails when a size is zero, the kernel does not fit the padded input, or a tensor's
    /// element count overflows.
    pub fn new(
        batch: usize,
        in_size: [usize; 2],
        in_channels: usize,
        out_channels: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> Result<Self, GeometryError> {
        if batch == 0 || in_channels == 0 || out_channels == 0 {
            return Err(GeometryError::new(
                "convolution",
                format!(
                    "batch {batch}, in_channels {in_channels} and out_channels {out_channels} must be positive"
                ),
            ));
        }
        let mut out_size = [0; 2];
        for axis in 0..2 {
            out_size[axis] =
                window_output(in_size[axis], kernel[axis], stride[axis], padding[axis])
                    .ok_or_else(|| {
                        GeometryError::new(
                            "convolution",
                            format!(
                                "kernel {kernel:?} with stride {stride:?} and padding {padding:?} does not fit an input of {in_size:?}"
                            ),
                        )
                    })?;
        }
        let geometry = Self {
            batch,
            in_size,
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
            out_size,
        };
        checked_product(
            "convolution input",
            &[batch, in_size[0], in_size[1], in_channels],
        )?;
        checked_product(
            "convolution output",
            &[batch, out_size[0], out_size[1], out_channels],
        )?;
        checked_product(
            "convolution weights",
            &[kernel[0], kernel[1], in_channels, out_channels],
        )?;
        Ok(geometry)
    }

    /// Images in the batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Output `[oh, ow]`.
    pub fn out_size(&self) -> [usize; 2] {
        self.out_size
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// Elements of the input.
    pub fn input_len(&self) -> usize {
        self.batch * self.in_size[0] * self.in_size[1] * self.in_channels
    }

    /// Elements of the output.
    pub fn output_len(&self) -> usize {
        self.rows() * self.out_channels
    }

    /// Elements of the weights.
    pub fn weight_len(&self) -> usize {
        self.depth() * self.out_channels
    }

    /// Output pixels over the batch: rows of the im2col matrix.
    fn rows(&self) -> usize {
        self.batch * self.out_size[0] * self.out_size[1]
    }

    /// Output pixels of one image.
    fn rows_per_image(&self) -> usize {
        self.out_size[0] * self.out_size[1]
    }

    /// Length of an im2col row: `kh * kw * in_channels`.
    fn depth(&self) -> usize {
        self.kernel[0] * self.kernel[1] * self.in_channels
    }

    /// Whether the input already is the im2col matrix (1x1, stride 1, no padding).
    fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.padding == [0, 0]
    }

    /// Output pixels per tile.
    ///
    /// At least 256 rows, so that packing the weights (which `gemm` does once per call, and
    /// which costs `depth * out_channels` copies) stays small beside the tile's product; more
    /// when rows are short, so that a tile holds about 64 Ki im2col values (256 KiB, an L2
    /// cache).
    pub fn tile_rows(&self) -> usize {
        (65_536 / self.depth()).max(256)
    }

    /// Runs `f` on the im2col rows `row0..row0 + rows` of `x`: the input itself for a
    /// pointwise convolution, else built in a per-thread buffer.
    fn with_im2col<R>(
        &self,
        x: &[f32],
        row0: usize,
        rows: usize,
        f: impl FnOnce(&[f32]) -> R,
    ) -> R {
        let k = self.depth();
        if self.is_pointwise() {
            return f(&x[row0 * k..(row0 + rows) * k]);
        }
        scratch::with_buffer(rows * k, |col| {
            self.im2col(x, row0, col);
            f(col)
        })
    }

    /// Writes the im2col rows `row0..row0 + col.len() / depth` of `x` into `col`.
    fn im2col(&self, x: &[f32], row0: usize, col: &mut [f32]) {
        let depth = self.depth();
        for (r, dst) in col.chunks_exact_mut(depth).enumerate() {
            self.for_each_window_run(row0 + r, |dst_range, src| match src {
                Some(src) => dst[dst_range.clone()].copy_from_slice(&x[src..src + dst_range.len()]),
                None => dst[dst_range].fill(0.0),
            });
        }
    }

    /// Adds the im2col rows in `col` (starting at row `row0`) back into their input pixels
    /// of `dx`: the adjoint of [`Self::im2col`].
    fn col2im_add(&self, col: &[f32], row0: usize, dx: &mut [f32], dx_offset: usize) {
        let depth = self.depth();
        for (r, src) in col.chunks_exact(depth).enumerate() {
            self.for_each_window_run(row0 + r, |range, dst| {
                if let Some(dst) = dst {
                    let dst = dst - dx_offset;
                    for (d, s) in dx[dst..dst + range.len()].iter_mut().zip(&src[range]) {
                        *d += s;
                    }
                }
            });
        }
    }

    /// Calls `f(range in the im2col row, Some(start in x) or None for padding)` for each run
    /// of the receptive field of output pixel `row` that is contiguous in `x`: a whole kernel
    /// row at once when it lies inside the image and the stride is 1, else one pixel at a time.
    fn for_each_window_run(
        &self,
        row: usize,
        mut f: impl FnMut(std::ops::Range<usize>, Option<usize>),
    ) {
        let [h, w] = self.in_size;
        let c = self.in_channels;
        let [kh, kw] = self.kernel;
        let (img, pixel) = (row / self.rows_per_image(), row % self.rows_per_image());
        let (oy, ox) = (pixel / self.out_size[1], pixel % self.out_size[1]);
        let image_base = img * h * w * c;
        let x0 = (ox * self.stride[1]) as isize - self.padding[1] as isize;
        for ky in 0..kh {
            let start = ky * kw * c;
            let iy = (oy * self.stride[0] + ky) as isize - self.padding[0] as isize;
            if iy < 0 || iy >= h as isize {
                f(start..start + kw * c, None);
                continue;
            }
            let line = image_base + iy as usize * w * c;
            if x0 >= 0 && x0 as usize + kw <= w {
                // The whole kernel row is inside the image: one contiguous run.
                f(start..start + kw * c, Some(line + x0 as usize * c));
                continue;
            }
            for kx in 0..kw {
                let ix = x0 + kx as isize;
                let range = start + kx * c..start + (kx + 1) * c;
                if ix < 0 || ix >= w as isize {
                    f(range, None);
                } else {
                    f(range, Some(line + ix as usize * c));
                }
            }
        }
    }
}

/// `y = conv(x, weight) + bias`: `x` `[batch, h, w, in]`, `weight` HWIO, `bias` `[out]`,
/// `y` `[batch, oh, ow, out]` (overwritten).
///
/// # Panics
/// If a slice's length does not match the geometry (a bug in the caller).
pub fn conv2d_forward(
    g: &Conv2dGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    assert_eq!(x.len(), g.input_len(), "conv2d input length");
    assert_eq!(weight.len(), g.weight_len(), "conv2d weight length");
    assert_eq!(y.len(), g.output_len(), "conv2d output length");
    if let Some(bias) = bias {
        assert_eq!(bias.len(), g.out_channels, "conv2d bias length");
    }
    let (n, k) = (g.out_channels, g.depth());
    let tile = g.tile_rows();
    y.par_chunks_mut(tile * n)
        .enumerate()
        .for_each(|(t, y_tile)| {
            let (row0, rows) = (t * tile, y_tile.len() / n);
            g.with_im2col(x, row0, rows, |a| {
                matmul_serial(
                    a,
                    Transpose::No,
                    weight,
                    Transpose::No,
                    rows,
                    n,
                    k,
                    y_tile,
                    0.0,
                    1.0,
                )
            });
            if let Some(bias) = bias {
                for pixel in y_tile.chunks_exact_mut(n) {
                    for (v, b) in pixel.iter_mut().zip(bias) {
                        *v += b;
                    }
                }
            }
        });
}

/// Gradients of [`conv2d_forward`] given `dy`, the gradient of its output: `dx` (when asked
/// for: the first layer's input needs none), `dweight` (HWIO) and `dbias`, all overwritten.
///
/// The batch is split into one contiguous run of images per thread; each run's tiles add to
/// that run's own weight gradient and write only that run's input gradient, and the runs'
/// weight gradients are summed in order.
///
/// # Panics
/// If a slice's length does not match the geometry (a bug in the caller).
pub fn conv2d_backward(
    g: &Conv2dGeometry,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dweight: &mut [f32],
    dbias: Option<&mut [f32]>,
) {
    assert_eq!(x.len(), g.input_len(), "conv2d input length");
    assert_eq!(weight.len(), g.weight_len(), "conv2d weight length");
    assert_eq!(dy.len(), g.output_len(), "conv2d output-gradient length");
    assert_eq!(
        dweight.len(),
        g.weight_len(),
        "conv2d weight-gradient length"
    );
    let (n, k) = (g.out_channels, g.depth());
    let parts = rayon::current_num_threads().clamp(1, g.batch);
    let images_per_part = g.batch.div_ceil(parts);
    let image_len = g.in_size[0] * g.in_size[1] * g.in_channels;
    let dx_parts: Vec<Option<&mut [f32]>> = match dx {
        Some(dx) => {
            assert_eq!(dx.len(), g.input_len(), "conv2d input-gradient length");
            dx.chunks_mut(images_per_part * image_len)
                .map(Some)
                .collect()
        }
        None => (0..g.batch.div_ceil(images_per_part))
            .map(|_| None)
            .collect(),
    };
    let partials: Vec<Vec<f32>> = dx_parts
        .into_par_iter()
        .enumerate()
        .map(|(part, mut dx_part)| {
            let first_image = part * images_per_part;
            let images = images_per_part.min(g.batch - first_image);
            let rows_begin = first_image * g.rows_per_image();
            let rows_end = rows_begin + images * g.rows_per_image();
            let dx_offset = first_image * image_len;
            if let Some(dx) = dx_part.as_deref_mut()
                && !g.is_pointwise()
            {
                dx.fill(0.0);
            }
            let mut dw = vec![0.0f32; k * n];
            let tile = g.tile_rows();
            let mut row0 = rows_begin;
            while row0 < rows_end {
                let rows = tile.min(rows_end - row0);
                let dy_tile = &dy[row0 * n..(row0 + rows) * n];
                let accumulate = if row0 == rows_begin { 0.0 } else { 1.0 };
                g.with_im2col(x, row0, rows, |a| {
                    let dw = &mut dw;
                    matmul_serial(
                        a,
                        Transpose::Yes,
                        dy_tile,
                        Transpose::No,
                        k,
                        n,
                        rows,
                        dw,
                        accumulate,
                        1.0,
                    )
                });
                if let Some(dx) = dx_part.as_deref_mut() {
                    // Input-gradient rows `dy * W^T`: written in place for a pointwise
                    // convolution, else built per tile and added back into their pixels.
                    let dx_rows = |dst: &mut [f32]| {
                        matmul_serial(
                            dy_tile,
                            Transpose::No,
                            weight,
                            Transpose::Yes,
                            rows,
                            k,
                            n,
                            dst,
                            0.0,
                            1.0,
                        )
                    };
                    if g.is_pointwise() {
                        dx_rows(&mut dx[row0 * k - dx_offset..(row0 + rows) * k - dx_offset]);
                    } else {
                        scratch::with_buffer(rows * k, |dcol| {
                            dx_rows(dcol);
                            g.col2im_add(dcol, row0, dx, dx_offset);
                        });
                    }
                }
                row0 += rows;
            }
            dw
        })
        .collect();
    dweight.fill(0.0);
    for partial in &partials {
        for (d, p) in dweight.iter_mut().zip(partial) {
            *d += p;
        }
    }
    if let Some(dbias) = dbias {
        assert_eq!(dbias.len(), n, "conv2d bias-gradient length");
        crate::norm::column_sums(dy, n, dbias);
    }
}

/// `[out, in, kh, kw]` weights (burn's and PyTorch's layout) to HWIO.
pub fn oihw_to_hwio(weight: &[f32], dims: [usize; 4]) -> Vec<f32> {
    let mut hwio = vec![0.0; weight.len()];
    permute_weights(dims, |oihw, hwio_index| hwio[hwio_index] = weight[oihw]);
    hwio
}

/// HWIO weights back to `[out, in, kh, kw]`: the inverse of [`oihw_to_hwio`].
pub fn hwio_to_oihw(hwio: &[f32], dims: [usize; 4]) -> Vec<f32> {
    let mut weight = vec![0.0; hwio.len()];
    permute_weights(dims, |oihw, hwio_index| weight[oihw] = hwio[hwio_index]);
    weight
}

/// Output channels per block of [`permute_weights`]: the source lines of a block stay in
/// cache across the kernel positions.
const PERMUTE_BLOCK: usize = 64;

/// Calls `f(OIHW index, HWIO index)` for every weight, blocked over output channels so that
/// both layouts are walked through cached lines (a plain loop strides one of them by
/// `in * out` floats per step: 2.5% of a ResNet-18 step).
fn permute_weights([out, inp, kh, kw]: [usize; 4], mut f: impl FnMut(usize, usize)) {
    let taps = kh * kw;
    for o0 in (0..out).step_by(PERMUTE_BLOCK) {
        let block = o0..(o0 + PERMUTE_BLOCK).min(out);
        for i in 0..inp {
            for t in 0..taps {
                for o in block.clone() {
                    f((o * inp + i) * taps + t, (t * inp + i) * out + o);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, random, reference_conv, with_threads};

    /// Geometries the networks use and their edges: 1x1 / 3x3 / 7x7 kernels, strides 1 and
    /// 2, odd sides, batch 1, channel counts that are not multiples of a vector width.
    fn geometries() -> Vec<Conv2dGeometry> {
        [
            (2, [5, 7], 3, 5, [3, 3], [1, 1], [1, 1]),
            (1, [9, 6], 4, 3, [3, 3], [2, 2], [1, 1]),
            (3, [6, 6], 5, 7, [1, 1], [1, 1], [0, 0]),
            (2, [7, 5], 6, 4, [1, 1], [2, 2], [0, 0]),
            (1, [11, 13], 3, 2, [7, 7], [2, 2], [3, 3]),
            (2, [4, 4], 1, 17, [3, 3], [1, 1], [1, 1]),
            (2, [3, 2], 2, 3, [2, 3], [1, 2], [0, 1]),
        ]
        .into_iter()
        .map(|(b, s, ci, co, k, st, p)| Conv2dGeometry::new(b, s, ci, co, k, st, p).unwrap())
        .collect()
    }

    #[test]
    fn forward_equals_the_direct_sum() {
        for g in geometries() {
            let x = random(g.input_len(), 1);
            let w = random(g.weight_len(), 2);
            let bias = random(g.out_channels, 3);
            let mut y = vec![f32::NAN; g.output_len()];
            conv2d_forward(&g, &x, &w, Some(&bias), &mut y);
            let expected = reference_conv(&g, &x, &w, Some(&bias));
            assert_close(&y, &expected, 1e-5, &format!("{g:?}"));
        }
    }

    #[test]
    fn backward_is_the_adjoint_of_forward() {
        // For any dy: <dy, conv(x, w)> differentiated by x and by w, computed from the direct
        // sum in f64: dx[i] = sum dy * dconv/dx[i] and dw likewise.
        for g in geometries() {
            let x = random(g.input_len(), 4);
            let w = random(g.weight_len(), 5);
            let dy = random(g.output_len(), 6);
            let mut dx = vec![f32::NAN; g.input_len()];
            let mut dw = vec![f32::NAN; g.weight_len()];
            let mut db = vec![f32::NAN; g.out_channels];
            conv2d_backward(&g, &x, &w, &dy, Some(&mut dx), &mut dw, Some(&mut db));
            let (dx_ref, dw_ref) = crate::testing::reference_conv_backward(&g, &x, &w, &dy);
            assert_close(&dx, &dx_ref, 1e-5, &format!("dx {g:?}"));
            assert_close(&dw, &dw_ref, 1e-5, &format!("dw {g:?}"));
            let mut db_ref = vec![0.0f64; g.out_channels];
            for pixel in dy.chunks(g.out_channels) {
                for (d, v) in db_ref.iter_mut().zip(pixel) {
                    *d += *v as f64;
                }
            }
            let db_ref: Vec<f32> = db_ref.iter().map(|v| *v as f32).collect();
            assert_close(&db, &db_ref, 1e-5, &format!("db {g:?}"));
        }
    }

    #[test]
    fn weight_gradient_without_input_gradient_is_the_same() {
        let g = geometries()[0];
        let x = random(g.input_len(), 7);
        let w = random(g.weight_len(), 8);
        let dy = random(g.output_len(), 9);
        let mut dx = vec![0.0; g.input_len()];
        let (mut dw_a, mut dw_b) = (vec![0.0; g.weight_len()], vec![0.0; g.weight_len()]);
        conv2d_backward(&g, &x, &w, &dy, Some(&mut dx), &mut dw_a, None);
        conv2d_backward(&g, &x, &w, &dy, None, &mut dw_b, None);
        assert_eq!(dw_a, dw_b);
    }

    #[test]
    fn same_threads_same_bits() {
        // Large enough for several tiles and several images per thread.
        let g = Conv2dGeometry::new(6, [20, 20], 8, 16, [3, 3], [1, 1], [1, 1]).unwrap();
        let x = random(g.input_len(), 10);
        let w = random(g.weight_len(), 11);
        let dy = random(g.output_len(), 12);
        let run = || {
            let mut y = vec![0.0; g.output_len()];
            let mut dx = vec![0.0; g.input_len()];
            let mut dw = vec![0.0; g.weight_len()];
            conv2d_forward(&g, &x, &w, None, &mut y);
            conv2d_backward(&g, &x, &w, &dy, Some(&mut dx), &mut dw, None);
            (y, dx, dw)
        };
        for threads in [1, 2, 3] {
            assert_eq!(
                with_threads(threads, run),
                with_threads(threads, run),
                "{threads} threads"
            );
        }
    }

    #[test]
    fn weight_layouts_round_trip() {
        let dims = [5, 3, 2, 4];
        let w = random(5 * 3 * 2 * 4, 13);
        assert_eq!(hwio_to_oihw(&oihw_to_hwio(&w, dims), dims), w);
        // Element (o=1, i=2, y=1, x=3) lands at row (y * kw + x) * in + i, column o.
        let hwio = oihw_to_hwio(&w, dims);
        assert_eq!(
            hwio[((4 + 3) * 3 + 2) * 5 + 1],
            w[((3 + 2) * 2 + 1) * 4 + 3]
        );
    }

    #[test]
    fn impossible_geometries_are_errors() {
        assert!(Conv2dGeometry::new(0, [4, 4], 1, 1, [3, 3], [1, 1], [1, 1]).is_err());
        assert!(Conv2dGeometry::new(1, [2, 2], 1, 1, [5, 5], [1, 1], [1, 1]).is_err());
        assert!(Conv2dGeometry::new(1, [4, 4], 1, 1, [3, 3], [0, 1], [1, 1]).is_err());
        let err =
            Conv2dGeometry::new(usize::MAX / 2, [4, 4], 3, 1, [1, 1], [1, 1], [0, 0]).unwrap_err();
        assert!(err.to_string().contains("overflows"), "{err}");
    }
}
