//! Shared building blocks for the dml crates.
//!
//! - [`Real`]: the floating-point types dml kernels are generic over (`f32`, `f64`).
//! - [`linalg`]: safe wrappers over the `gemm` crate for row-major matrices, the one place
//!   where dml calls into BLAS-like code. Both the loss kernels (distance matrices and their
//!   gradients) and the k-NN engine go through it.
//! - [`text`]: the decoder every text input goes through (byte-order marks, UTF-16, invalid
//!   UTF-8 named by line, CRLF).
//! - [`error`]: an error with its causes on one line ([`error::chain`]); dml errors never
//!   repeat their cause in their own message.
//! - [`atomic`]: atomic replacement of one file or of a set of files (embeddings with their
//!   labels and paths), shared by every crate that writes results readers rely on.
//!
//! ```
//! use dml_core::linalg::{matmul, Transpose};
//! // [1 2; 3 4] * [1 0; 0 1]^T
//! let a = [1.0f32, 2.0, 3.0, 4.0];
//! let b = [1.0f32, 0.0, 0.0, 1.0];
//! let mut c = [0.0f32; 4];
//! matmul(&a, Transpose::No, &b, Transpose::Yes, 2, 2, 2, &mut c, 0.0, 1.0);
//! assert_eq!(c, [1.0, 2.0, 3.0, 4.0]);
//! ```
#![deny(missing_docs)]

pub mod atomic;
pub mod error;
pub mod linalg;
pub mod text;

/// A floating-point type dml kernels run in: `f32` (training) or `f64` (reference checks).
pub trait Real:
    num_traits::Float
    + num_traits::FromPrimitive
    + num_traits::ToPrimitive
    + std::iter::Sum
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
    + std::fmt::Debug
    + std::fmt::Display
    + Default
    + Send
    + Sync
    + 'static
{
    /// Converts from `f64`, rounding to the nearest representable value.
    fn of(x: f64) -> Self;
    /// Widens to `f64` exactly.
    fn f64(self) -> f64;
}

impl Real for f32 {
    #[inline]
    fn of(x: f64) -> Self {
        x as f32
    }
    #[inline]
    fn f64(self) -> f64 {
        self as f64
    }
}

impl Real for f64 {
    #[inline]
    fn of(x: f64) -> Self {
        x
    }
    #[inline]
    fn f64(self) -> f64 {
        self
    }
}
