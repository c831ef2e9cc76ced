//! Ranking losses, miners, reducers and regularisers for deep metric learning, with
//! pytorch-metric-learning's (PML's) numbers and without its memory blow-ups.
//!
//! Losses are numeric kernels in plain Rust, generic over [`dml_core::Real`] (`f32` to train,
//! `f64` to check), that compute the loss value and its exact gradient in one fused pass over
//! the score matrix:
//!
//! - [`Distance`]: Lp (p = 2, power 1 or 2), cosine and dot-product scores with PML's
//!   direction-aware margins; one GEMM forward, GEMMs backward.
//! - [`loss`]: the kernels ([`ContrastiveLoss`], [`TripletMarginLoss`], ...) and
//!   [`LossKind`], which gathers them.
//! - [`miner`]: miners producing typed [`Tuples`], streaming and budgeted.
//! - [`Reducer`] and [`LpRegularizer`]: explicit reduction and regularisation.
//! - [`MetricLoss`]: kernel + reducer + miner + regularisers, evaluated on a [`Batch`].
//! - [`burn_adapter`]: [`LossModule`], which attaches the kernel's gradient to a burn autodiff
//!   graph, so any burn backend trains with these losses.
//! - [`cases`]: reads PML-style case files and writes PML-style results (`dml loss`).
//!
//! Comments cite PML's behaviour as "PML note N": note N of the repository's
//! `docs/pml-semantics.md`, which records what PML 2.9 computes and what the fixtures hold.
//!
//! ```
//! use dml_losses::{Batch, ContrastiveLoss, Distance, MatrixRef, MetricLoss, Reducer};
//!
//! // PML's ContrastiveLoss(): normalised Euclidean distance, margins 0 and 1, AvgNonZero.
//! let kernel = ContrastiveLoss::new(Distance::PML_LP_DEFAULT, 0.0, 1.0)?;
//! let loss = MetricLoss::new(kernel, Reducer::AvgNonZero)?;
//! let x = [1.0f64, 0.0, 0.9, 0.1, 0.0, 1.0, 0.1, 0.9];
//! let out = loss.compute(Batch::new(MatrixRef::new(&x, 4, 2)?, &[0, 0, 1, 1]))?;
//! assert!(out.loss > 0.0 && out.grad.len() == 8);
//! # Ok::<(), dml_losses::Error>(())
//! ```
#![deny(missing_docs)]

pub mod burn_adapter;
pub mod cases;
pub mod distance;
mod error;
pub mod loss;
mod matrix;
mod metric_loss;
pub mod miner;
pub mod numeric;
pub mod reducer;
pub mod regularizer;
pub mod scratch;
pub mod tuples;

pub use burn_adapter::{LossModule, LossOutput};
pub use distance::{Distance, LpPower, Scores};
pub use error::{Error, Result};
pub use loss::{ContrastiveLoss, LossKernel, LossKind, LossStats, TripletMarginLoss};
pub use matrix::MatrixRef;
pub use metric_loss::{Batch, Computed, MetricLoss};
pub use miner::Miner;
pub use reducer::Reducer;
pub use regularizer::LpRegularizer;
pub use scratch::release_scratch_memory;
pub use tuples::{PairIndices, TripletIndices, Tuples};
