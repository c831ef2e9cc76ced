//! The `[model]` section: backbone, embedding head and size, pretrained weights.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::check;
use crate::error::ConfigError;

/// The convolutional trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackboneKind {
    /// Four conv-BN-ReLU-pool blocks, for 28-105 px inputs.
    SmallConvNet,
    /// ResNet-18 (torchvision layout).
    #[serde(rename = "resnet18")]
    ResNet18,
    /// ResNet-50 (torchvision layout).
    #[serde(rename = "resnet50")]
    ResNet50,
}

/// The survey baseline's embedding heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeadKind {
    /// One linear layer from the pooled features to the embedding.
    Direct,
    /// `direct`, then L2 normalisation.
    DirectL2,
    /// A 1024-unit hidden layer, then the embedding.
    Fc1024,
    /// `fc1024`, then L2 normalisation.
    Fc1024L2,
}

/// The embedding network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// The trunk. Default: small-conv-net.
    pub backbone: BackboneKind,
    /// The head. Default: direct-l2.
    pub head: HeadKind,
    /// Embedding size. Default: 64.
    pub embedding_dim: usize,
    /// Backbone weights to start from (.safetensors, .pt or .pth). Default: none (random).
    pub pretrained: Option<PathBuf>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            backbone: BackboneKind::SmallConvNet,
            head: HeadKind::DirectL2,
            embedding_dim: 64,
            pretrained: None,
        }
    }
}

impl ModelConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.embedding_dim >= 1,
            "model.embedding_dim",
            "must be at least 1",
        )
    }
}
