//! The `[model]` section: backbone, embedding head and size, pretrained weights.

use std::path::PathBuf;

use dml_models::{Backbone, EmbeddingNetConfig, HeadKind};
use serde::{Deserialize, Serialize};

use super::check_count;
use crate::error::ConfigError;

/// The embedding network (dml-models' [`EmbeddingNetConfig`] without the input channels,
/// which come from `data.pipeline.color`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// The trunk: `small-conv-net`, `resnet18` or `resnet50`. Default: small-conv-net.
    pub backbone: Backbone,
    /// The head: `direct`, `direct-l2`, `fc1024` or `fc1024-l2`. Default: direct-l2.
    pub head: HeadKind,
    /// Embedding size. Default: 64.
    pub embedding_dim: usize,
    /// Backbone weights to start from (.safetensors, .pt or .pth, torchvision key names).
    /// Default: none (random initialisation from the run seed).
    pub pretrained: Option<PathBuf>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            backbone: Backbone::SmallConvNet,
            head: HeadKind::DirectL2,
            embedding_dim: 64,
            pretrained: None,
        }
    }
}

impl ModelConfig {
    /// dml-models' configuration for images with `channels` channels.
    pub fn net_config(&self, channels: usize) -> EmbeddingNetConfig {
        EmbeddingNetConfig {
            backbone: self.backbone,
            head: self.head,
            embedding_dim: self.embedding_dim,
            in_channels: channels,
        }
    }

    pub(crate) fn validate(&self, channels: usize) -> Result<(), ConfigError> {
        check_count("model.embedding_dim", self.embedding_dim, 1 << 16)?;
        self.net_config(channels)
            .validate()
            .map_err(|e| ConfigError::Invalid {
                field: "model".to_owned(),
                reason: dml_core::error::chain(&e),
            })
    }
}
