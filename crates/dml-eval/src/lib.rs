//! dml-eval (being written).
#![deny(missing_docs)]

mod embeddings;
mod error;
pub mod knn;
mod labels;

pub use embeddings::Embeddings;
pub use error::{Error, Result};
pub use knn::{Distance, Neighbours, QueryMode, knn};
pub use labels::Labels;
