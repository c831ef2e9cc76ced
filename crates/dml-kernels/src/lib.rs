//! dml's CPU kernels for the layers of its networks, forward and backward, on `f32`
//! activations kept channels-last (`[batch, height, width, channels]`, "NHWC").
//!
//! Why dml has its own: burn's Flex backend computes a 2-D convolution as a 3-D one with
//! NCHW/NHWC copies around it, composes batch norm from about twenty element-wise passes and
//! pools through a generic 3-D kernel; on dml's networks that made a training step 2-3x
//! slower than PyTorch's (docs/benchmarks.md, "Model throughput"). Here:
//!
//! - [`conv`]: 2-D convolution of any kernel size, stride and padding as tiles of im2col rows
//!   multiplied by the weights with the `gemm` crate (AVX-512 / AVX2 / scalar chosen at run
//!   time, through [`dml_core::linalg`]); the backward pass computes the input and weight
//!   gradients in one sweep over the same tiles. A tile fits in the core's cache, so the
//!   im2col matrix is never materialised whole.
//! - [`norm`]: batch statistics, and one pass for batch norm (or any per-channel affine map),
//!   residual add, ReLU and max pool together; its backward is two passes.
//!
//! Channels-last lets every kernel run over contiguous channel vectors, and a convolution's
//! GEMM output is already the next layer's input layout: no transposing copy anywhere.
//!
//! Every reduction runs over fixed chunks combined in a fixed order, so results depend on the
//! inputs and the rayon thread count only: the same seed and threads give the same bits.
//!
//! ```
//! use dml_kernels::conv::{Conv2dGeometry, conv2d_forward};
//! // One 3x3 image, one channel, a 3x3 kernel of ones with padding 1: sums of neighbourhoods.
//! let g = Conv2dGeometry::new(1, [3, 3], 1, 1, [3, 3], [1, 1], [1, 1]).unwrap();
//! let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
//! let w = vec![1.0f32; 9];
//! let mut y = vec![0.0; g.output_len()];
//! conv2d_forward(&g, &x, &w, None, &mut y);
//! assert_eq!(y[4], 45.0); // the centre sees the whole image
//! assert_eq!(y[0], 1.0 + 2.0 + 4.0 + 5.0);
//! ```
#![deny(missing_docs)]

pub mod conv;
pub mod norm;
mod scratch;

use thiserror::Error;

/// A layer geometry that cannot be computed: a zero or overflowing size, or an output with no
/// pixel.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{what}: {why}")]
pub struct GeometryError {
    /// The layer kind and the quantity at fault.
    pub what: &'static str,
    /// Why it is invalid, with the numbers.
    pub why: String,
}

impl GeometryError {
    fn new(what: &'static str, why: impl Into<String>) -> Self {
        Self {
            what,
            why: why.into(),
        }
    }
}

/// Product of sizes, or an error naming what overflowed.
fn checked_product(what: &'static str, sizes: &[usize]) -> Result<usize, GeometryError> {
    sizes.iter().try_fold(1usize, |acc, &s| {
        acc.checked_mul(s)
            .ok_or_else(|| GeometryError::new(what, format!("{sizes:?} overflows usize")))
    })
}

/// Output side of a sliding window: `(input + 2 padding - kernel) / stride + 1`, or `None` when
/// the window does not fit once.
fn window_output(input: usize, kernel: usize, stride: usize, padding: usize) -> Option<usize> {
    let padded = input.checked_add(padding.checked_mul(2)?)?;
    if kernel == 0 || stride == 0 || padded < kernel {
        return None;
    }
    Some((padded - kernel) / stride + 1)
}

#[cfg(test)]
mod testing;
