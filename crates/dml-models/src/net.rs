//! The embedding network: a backbone and a head.

use burn::module::Module;
use burn::tensor::Tensor;

use crate::backbone::BackboneNet;
use crate::config::EmbeddingNetConfig;
use crate::head::EmbeddingHead;

/// Images `[b, c, h, w]` (f32, normalised by the data pipeline) to embeddings `[b, d]`.
///
/// Built by [`EmbeddingNetConfig::init`]. Batch norms use batch statistics (and update their
/// running averages) when the network runs on an autodiff device, and their running averages
/// otherwise, so `net.valid()` is the network in evaluation mode.
#[derive(Module, Debug)]
pub struct EmbeddingNet {
    /// The feature extractor.
    pub backbone: BackboneNet,
    /// Features to embeddings.
    pub head: EmbeddingHead,
    #[module(skip)]
    config: EmbeddingNetConfig,
}

impl EmbeddingNet {
    pub(crate) fn new(config: EmbeddingNetConfig, backbone: BackboneNet, head: EmbeddingHead) -> Self {
        Self {
            backbone,
            head,
            config,
        }
    }

    /// The configuration the network was built from.
    pub fn config(&self) -> &EmbeddingNetConfig {
        &self.config
    }

    /// `[b, c, h, w]` images to `[b, d]` embeddings.
    ///
    /// The image shape must pass [`EmbeddingNetConfig::check_image_shape`]; check it once when
    /// the data is set up (burn panics on a channel mismatch).
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.head.forward(self.backbone.forward(images))
    }

    /// `[b, c, h, w]` images to the backbone's `[b, f]` pooled features, before the head.
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        self.backbone.forward(images)
    }
}
