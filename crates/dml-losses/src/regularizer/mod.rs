//! Regularisers added to a loss: PML's `embedding_regularizer` and `weight_regularizer`.

mod lp;

pub use lp::LpRegularizer;
