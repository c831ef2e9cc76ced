//! Tiny stand-ins for the four parts of a run (model, loss, data, evaluator), so the trainer is
//! tested on its own, in milliseconds per step.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor, TensorData, activation::relu};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::BoxError;
use crate::task::{
    Batch, BatchIter, BatchSource, EmbeddingModel, Embeddings, Evaluator, MetricLoss, Metrics,
};

/// The images of the stand-in data: `CHANNELS x SIDE x SIDE`.
pub const SIDE: usize = 3;
/// Channels of the stand-in images.
pub const CHANNELS: usize = 1;

/// A linear embedding of the flattened image.
#[derive(Module, Debug)]
pub struct LinearEmbedder {
    pub linear: Linear,
}

impl LinearEmbedder {
    /// A fresh model, initialised from `seed`.
    ///
    /// The weights are drawn here from a generator of its own, not from the device: burn's
    /// initialisers are lazy and Flex's generator is process-wide, so tests running in
    /// parallel (and the trainer's per-step reseeding) would change what a lazy draw gets.
    pub fn new(seed: u64, dim: usize, device: &Device) -> Self {
        let inputs = CHANNELS * SIDE * SIDE;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let bound = 1.0 / (inputs as f32).sqrt();
        let mut draw = |count: usize| -> Vec<f32> {
            (0..count)
                .map(|_| rng.random_range(-bound..bound))
                .collect()
        };
        let mut linear = LinearConfig::new(inputs, dim).init(device);
        linear.weight =
            Param::from_data(TensorData::new(draw(inputs * dim), [inputs, dim]), device);
        linear.bias = Some(Param::from_data(TensorData::new(draw(dim), [dim]), device));
        LinearEmbedder { linear }
    }

    /// Every parameter value, for exact comparisons between runs.
    pub fn values(&self) -> Vec<f32> {
        let mut values = self.linear.weight.val().try_into_vec_as::<f32>().unwrap();
        if let Some(bias) = &self.linear.bias {
            values.extend(bias.val().try_into_vec_as::<f32>().unwrap());
        }
        values
    }
}

impl EmbeddingModel for LinearEmbedder {
    fn embed(&self, images: Tensor<4>) -> Tensor<2> {
        let [b, c, h, w] = images.dims();
        self.linear.forward(images.reshape([b, c * h * w]))
    }
}

/// A contrastive loss: mean squared distance of positive pairs plus mean hinge
/// `relu(margin - d^2)` of negative pairs. `nan_at_call` makes it return NaN on purpose.
#[derive(Module, Debug)]
pub struct PairLoss {
    pub margin: f64,
    pub nan: bool,
}

impl MetricLoss for PairLoss {
    fn loss(&self, x: Tensor<2>, labels: &[i64], _seed: u64) -> Result<Tensor<1>, BoxError> {
        let n = labels.len();
        let device = x.device();
        let norms = x.clone().powf_scalar(2.0).sum_dim(1);
        let dist =
            norms.clone() + norms.transpose() - x.clone().matmul(x.transpose()).mul_scalar(2.0);
        let mut pos = vec![0f32; n * n];
        let mut neg = vec![0f32; n * n];
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    let cell = if labels[i] == labels[j] {
                        &mut pos
                    } else {
                        &mut neg
                    };
                    cell[i * n + j] = 1.0;
                }
            }
        }
        let count = |mask: &[f32]| mask.iter().sum::<f32>().max(1.0) as f64;
        let (pos_count, neg_count) = (count(&pos), count(&neg));
        let pos = Tensor::<2>::from_data(TensorData::new(pos, [n, n]), &device);
        let neg = Tensor::<2>::from_data(TensorData::new(neg, [n, n]), &device);
        let attract = (dist.clone() * pos).sum().div_scalar(pos_count);
        let repel = (relu(dist.neg().add_scalar(self.margin)) * neg)
            .sum()
            .div_scalar(neg_count);
        let loss = attract + repel;
        Ok(if self.nan {
            loss.mul_scalar(f64::NAN)
        } else {
            loss
        })
    }
}

/// Gaussian blobs: `classes` random prototypes, `per_class` noisy copies of each; epoch `e`
/// visits them in a permutation drawn from `(seed, e)`, `batch` at a time.
pub struct Blobs {
    images: Vec<Vec<f32>>,
    labels: Vec<i64>,
    batch: usize,
    seed: u64,
    /// Batch index at which `batches` yields an error instead (to test error paths).
    pub fail_at: Option<usize>,
}

impl Blobs {
    pub fn new(classes: usize, per_class: usize, batch: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let size = CHANNELS * SIDE * SIDE;
        let prototypes: Vec<Vec<f32>> = (0..classes)
            .map(|_| (0..size).map(|_| rng.random_range(-1.0..1.0)).collect())
            .collect();
        let mut images = Vec::new();
        let mut labels = Vec::new();
        for (class, prototype) in prototypes.iter().enumerate() {
            for _ in 0..per_class {
                images.push(
                    prototype
                        .iter()
                        .map(|v| v + rng.random_range(-0.3..0.3))
                        .collect(),
                );
                labels.push(class as i64);
            }
        }
        Blobs {
            images,
            labels,
            batch,
            seed,
            fail_at: None,
        }
    }

    fn order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.labels.len()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ (epoch as u64).wrapping_mul(0x9E37));
        order.shuffle(&mut rng);
        order
    }

    fn make_batch(&self, indices: &[usize]) -> Batch {
        Batch {
            images: indices
                .iter()
                .flat_map(|&i| self.images[i].clone())
                .collect(),
            shape: [indices.len(), CHANNELS, SIDE, SIDE],
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            indices: indices.to_vec(),
        }
    }
}

impl BatchSource for Blobs {
    fn batches_in_epoch(&self, _epoch: usize) -> usize {
        self.labels.len() / self.batch
    }

    fn batches(&self, epoch: usize, start: usize) -> Result<BatchIter<'_>, BoxError> {
        let order = self.order(epoch);
        let batches: Vec<Vec<usize>> = order
            .chunks_exact(self.batch)
            .map(<[usize]>::to_vec)
            .collect();
        let fail_at = self.fail_at;
        Ok(Box::new(batches.into_iter().enumerate().skip(start).map(
            move |(index, indices)| {
                if Some(index) == fail_at {
                    Err("blob.png: unreadable image".into())
                } else {
                    Ok(self.make_batch(&indices))
                }
            },
        )))
    }
}

/// The held-out split: every item once, in order.
pub struct InOrder<'a>(pub &'a Blobs);

impl BatchSource for InOrder<'_> {
    fn batches_in_epoch(&self, _epoch: usize) -> usize {
        self.0.labels.len().div_ceil(self.0.batch)
    }

    fn batches(&self, _epoch: usize, start: usize) -> Result<BatchIter<'_>, BoxError> {
        let all: Vec<usize> = (0..self.0.labels.len()).collect();
        let chunks: Vec<Vec<usize>> = all.chunks(self.0.batch).map(<[usize]>::to_vec).collect();
        Ok(Box::new(
            chunks
                .into_iter()
                .skip(start)
                .map(|indices| Ok(self.0.make_batch(&indices))),
        ))
    }
}

/// Brute-force leave-one-out Recall@K; `constant` returns fixed values instead (to drive
/// early stopping deterministically).
pub struct BruteRecall {
    pub k: Vec<usize>,
    pub constant: Option<f64>,
}

impl Evaluator for BruteRecall {
    fn evaluate(&self, e: &Embeddings) -> Result<Metrics, BoxError> {
        let n = e.len();
        let row = |i: usize| &e.values[i * e.dim..(i + 1) * e.dim];
        let mut metrics = Metrics::new();
        for &k in &self.k {
            let hits = (0..n)
                .filter(|&q| {
                    let mut others: Vec<(f32, usize)> = (0..n)
                        .filter(|&r| r != q)
                        .map(|r| {
                            let d = row(q)
                                .iter()
                                .zip(row(r))
                                .map(|(a, b)| (a - b) * (a - b))
                                .sum();
                            (d, r)
                        })
                        .collect();
                    others.sort_by(|a, b| a.partial_cmp(b).unwrap());
                    others
                        .iter()
                        .take(k)
                        .any(|&(_, r)| e.labels[r] == e.labels[q])
                })
                .count();
            let value = self.constant.unwrap_or(hits as f64 / n as f64);
            metrics.insert(format!("recall@{k}"), value);
        }
        Ok(metrics)
    }
}
