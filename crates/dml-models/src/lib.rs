//! Embedding networks for deep metric learning, on burn.
//!
//! - [`EmbeddingNetConfig`] describes a network: a [`Backbone`] (the small convnet of
//!   Prototypical Networks, torchvision's ResNet-18 or ResNet-50), a [`HeadKind`] (the survey
//!   baseline's `direct`, `direct_normalize`, `fc1024` and `fc1024_normalize` heads), the
//!   embedding size and the image channels. It is serde-serialisable and validated by `init`.
//! - [`EmbeddingNet`] is the built burn module: images `[b, c, h, w]` to embeddings `[b, d]`.
//!   Initial weights come from a seed ([`EmbeddingNetConfig::init_seeded`]).
//! - [`EmbeddingNet::load_backbone_weights`] loads backbone weights with torchvision's key
//!   names from `.safetensors` or PyTorch `.pt`/`.pth` files; a missing, unexpected or
//!   wrongly shaped key is an [`Error`] naming it. [`EmbeddingNet::save_backbone_weights`]
//!   writes them as `.safetensors`.
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use dml_models::{Backbone, EmbeddingNetConfig, HeadKind};
//!
//! let config = EmbeddingNetConfig {
//!     backbone: Backbone::SmallConvNet,
//!     head: HeadKind::DirectL2,
//!     embedding_dim: 16,
//!     in_channels: 1,
//! };
//! let device = Device::flex();
//! let net = config.init_seeded(42, &device)?;
//! let embeddings = net.forward(Tensor::zeros([2, 1, 28, 28], &device));
//! assert_eq!(embeddings.dims(), [2, 16]);
//! # Ok::<(), dml_models::Error>(())
//! ```
#![deny(missing_docs)]

mod backbone;
mod config;
mod error;
mod head;
mod init;
mod layers;
mod net;
pub mod ops;
mod weights;

#[cfg(test)]
mod test_support;

pub use backbone::{
    BackboneNet, BasicBlock, Bottleneck, ConvBlock, Downsample, ResNet, ResidualBlock, SmallConvNet,
};
pub use config::{Backbone, EmbeddingNetConfig, HeadKind, UnknownName};
pub use error::{ConfigError, Error};
pub use head::{EmbeddingHead, HiddenLayer};
pub use net::EmbeddingNet;
pub use weights::{LoadedWeights, WeightFormat};
