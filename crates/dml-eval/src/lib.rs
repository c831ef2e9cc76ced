//! Exact evaluation of embeddings: k-NN retrieval metrics, clustering metrics and few-shot
//! episodes, on `f32` rows, without a Q x R matrix.
//!
//! - [`knn`]: exact k nearest neighbours (squared Euclidean, inner product, cosine) by blocked
//!   GEMM ([`dml_core::linalg::matmul`]) with a fused per-query merge; ties go to the lower
//!   index; in [`QueryMode::LeaveOneOut`] the query's own row is excluded by index and only
//!   half of the symmetric score matrix is computed.
//! - [`retrieval_metrics`]: Recall@K (survey definition: all queries, lone queries miss),
//!   precision@1, R-precision, MAP@R, MAP and MRR (PML's `AccuracyCalculator` semantics), from
//!   the exact rank of every relevant item, in one pass; [`retrieval_per_query`] gives the
//!   per-query values they average.
//! - [`mutual_info`]: NMI and AMI with arithmetic normalisation, as scikit-learn computes them;
//!   [`kmeans`]: seeded k-means++ / Lloyd with restarts to produce the clustering.
//! - [`episode_accuracy`]: N-way K-shot accuracy by nearest neighbour and nearest class mean.
//! - [`evaluate`]: all of the above that a [`Metric`] list asks for, with stage timings.
//! - [`io`]: embeddings from `.npy` / `.safetensors`, labels from `.npy` or text.
//!
//! Inputs are validated once as [`Embeddings`] (finite values, errors name the row) and
//! [`Labels`] (dense ids with names). Every random choice takes a `u64` seed.
//!
//! ```
//! use dml_eval::{Distance, Embeddings, Labels, retrieval_metrics};
//! // two tight classes on a line
//! let e = Embeddings::new(vec![0.0, 0.1, 0.2, 5.0, 5.1, 5.2], 1).unwrap();
//! let labels = Labels::from_values(["a", "a", "a", "b", "b", "b"]);
//! let m = retrieval_metrics(&e, labels.ids(), None, Distance::SquaredEuclidean, &[1, 2]).unwrap();
//! assert_eq!(m.recall_at_k, vec![(1, 1.0), (2, 1.0)]);
//! assert_eq!((m.precision_at_1, m.map_at_r), (1.0, 1.0));
//! ```
#![deny(missing_docs)]

mod embeddings;
mod episodes;
mod error;
mod evaluate;
pub mod io;
mod kmeans;
mod knn;
mod labels;
mod mutual_info;
mod retrieval;
mod spread;

pub use embeddings::Embeddings;
pub use episodes::{EpisodeAccuracy, EpisodeConfig, episode_accuracy};
pub use error::{Error, Result};
pub use evaluate::{
    ClusteringSummary, EvalConfig, Evaluation, Metric, evaluate, evaluate_per_query,
};
pub use kmeans::{KMeans, KMeansConfig, kmeans};
pub use knn::{Distance, Neighbours, QueryMode, knn};
pub use labels::Labels;
pub use mutual_info::{MutualInfo, mutual_info};
pub use retrieval::{
    Gallery, QueryRetrieval, RetrievalMetrics, retrieval_metrics, retrieval_per_query,
};
pub use spread::Spread;
