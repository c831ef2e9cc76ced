//! The four parts a training run is assembled from, as small traits: the model, the loss, the
//! source of batches and the evaluator. The trainer knows nothing else about them, so it can be
//! tested with tiny stand-ins and fed by any data, model, loss or metric crate.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleDisplay};
use burn::tensor::Tensor;

use crate::error::BoxError;

/// A network mapping a batch of images `[b, c, h, w]` to embeddings `[b, d]`.
pub trait EmbeddingModel: Module + ModuleDisplay + 'static {
    /// Embeds a batch of images.
    fn embed(&self, images: Tensor<4>) -> Tensor<2>;
}

/// A metric-learning loss over a batch of embeddings and their labels.
///
/// It is a [`Module`] so that losses with learnable parameters (proxies, scales) are trained
/// together with the model; a loss without parameters is a module with none.
pub trait MetricLoss: Module + ModuleDisplay + 'static {
    /// The loss of one batch: a differentiable scalar `[1]`.
    ///
    /// `seed` is fresh for every step and derived from the run seed, so a loss with random
    /// choices (a sampling miner) replays exactly when a run is resumed.
    fn loss(&self, embeddings: Tensor<2>, labels: &[i64], seed: u64)
    -> Result<Tensor<1>, BoxError>;
}

/// What the trainer optimises: the model and the loss, as one module, so one optimizer and one
/// checkpoint cover the parameters of both.
#[derive(Module, Debug)]
pub struct EmbeddingTask<M: Module, L: Module> {
    /// The embedding network.
    pub model: M,
    /// The loss (with its parameters, if it has any).
    pub loss: L,
}

/// One batch of decoded images in CHW layout with their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `shape[0] * shape[1] * shape[2] * shape[3]` floats, row-major `[b, c, h, w]`.
    pub images: Vec<f32>,
    /// `[b, c, h, w]`.
    pub shape: [usize; 4],
    /// One class label per image.
    pub labels: Vec<i64>,
    /// The dataset index of every image (kept in embedding outputs).
    pub indices: Vec<usize>,
}

impl Batch {
    /// Why the arrays disagree with `shape`, if they do.
    pub fn inconsistency(&self) -> Option<String> {
        let [b, c, h, w] = self.shape;
        if self.images.len() != b * c * h * w {
            Some(format!(
                "{} image values for shape {:?}",
                self.images.len(),
                self.shape
            ))
        } else if self.labels.len() != b || self.indices.len() != b {
            Some(format!(
                "{} labels and {} indices for {b} images",
                self.labels.len(),
                self.indices.len()
            ))
        } else {
            None
        }
    }
}

/// An iterator over batches; each item may fail (a corrupt image names its file).
pub type BatchIter<'a> = Box<dyn Iterator<Item = Result<Batch, BoxError>> + 'a>;

/// A source of batches, deterministic in `(epoch, batch index)`.
///
/// The order and the augmentation of epoch `e` must depend only on the run seed and `e`, never
/// on what was read before: a resumed run asks for epoch `e` starting at batch `b` and must get
/// exactly the batches an uninterrupted run saw from there.
pub trait BatchSource: Send + Sync {
    /// How many batches epoch `epoch` has.
    fn batches_in_epoch(&self, epoch: usize) -> usize;
    /// The batches of `epoch` from index `start` on.
    fn batches(&self, epoch: usize, start: usize) -> Result<BatchIter<'_>, BoxError>;
}

/// Metric values by their report key (`recall@1`, `map@r`, `nmi`).
pub type Metrics = BTreeMap<String, f64>;

/// The embeddings of a whole split, with labels and dataset indices, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// `len * dim` floats.
    pub values: Vec<f32>,
    /// Embedding size.
    pub dim: usize,
    /// One label per row.
    pub labels: Vec<i64>,
    /// The dataset index of every row.
    pub indices: Vec<usize>,
}

impl Embeddings {
    /// The number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Computes retrieval metrics from the embeddings of the held-out split.
///
/// The result must depend on the embeddings alone (seed any random choice, such as k-means
/// restarts, from a fixed seed): a resumed run re-evaluates and must get the same numbers.
pub trait Evaluator {
    /// The metrics of `embeddings`, keyed by report key.
    fn evaluate(&self, embeddings: &Embeddings) -> Result<Metrics, BoxError>;
}
