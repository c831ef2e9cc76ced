//! Helpers shared by the unit tests.

use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Backbone, EmbeddingNetConfig, HeadKind};

/// A config with the given parts.
pub(crate) fn config(
    backbone: Backbone,
    head: HeadKind,
    embedding_dim: usize,
    in_channels: usize,
) -> EmbeddingNetConfig {
    EmbeddingNetConfig {
        backbone,
        head,
        embedding_dim,
        in_channels,
    }
}

/// Seeded `U(-1, 1)` images (drawn here, not from the backend's process-wide generator, so
/// tests running in parallel cannot disturb each other's numbers).
pub(crate) fn images(seed: u64, shape: [usize; 4], device: &Device) -> Tensor<4> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let values: Vec<f32> = (0..shape.iter().product())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// A tensor's values, row-major.
pub(crate) fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor.into_data().try_into_vec_as::<f32>().unwrap()
}
