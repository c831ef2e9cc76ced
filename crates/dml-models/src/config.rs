//! The serialisable description of an embedding network, validated when it is built.

use std::fmt;
use std::str::FromStr;

use burn::tensor::{Device, Distribution, Tensor};
use serde::{Deserialize, Serialize};

use crate::backbone::{
    BackboneNet, ResNet, ResNetLayout, SMALL_CONV_MIN_SIDE, SMALL_CONV_WIDTH, SmallConvNet,
};
use crate::error::{ConfigError, Error};
use crate::head::EmbeddingHead;
use crate::init::WeightInit;
use crate::net::EmbeddingNet;

/// The network that turns images into pooled features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Backbone {
    /// Four conv-BN-ReLU-maxpool blocks of 64 channels (Prototypical Networks' encoder) for
    /// 28–105 px images; 64 features.
    #[serde(rename = "small-conv-net")]
    SmallConvNet,
    /// torchvision's ResNet-18; 512 features.
    #[serde(rename = "resnet18")]
    ResNet18,
    /// torchvision's ResNet-50 (v1.5); 2048 features.
    #[serde(rename = "resnet50")]
    ResNet50,
}

impl Backbone {
    /// Every backbone, in the order the docs list them.
    pub const ALL: [Self; 3] = [Self::SmallConvNet, Self::ResNet18, Self::ResNet50];

    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::SmallConvNet => "small-conv-net",
            Self::ResNet18 => "resnet18",
            Self::ResNet50 => "resnet50",
        }
    }

    /// Width of the pooled features the head receives.
    pub fn out_features(self) -> usize {
        match self {
            Self::SmallConvNet => SMALL_CONV_WIDTH,
            Self::ResNet18 => ResNetLayout::RESNET18.out_features(),
            Self::ResNet50 => ResNetLayout::RESNET50.out_features(),
        }
    }

    /// Smallest image height and width the backbone accepts: 16 px for the small convnet
    /// (four 2x2 max pools), 1 px for the ResNets (every strided layer is padded).
    pub fn min_image_side(self) -> usize {
        match self {
            Self::SmallConvNet => SMALL_CONV_MIN_SIDE,
            Self::ResNet18 | Self::ResNet50 => 1,
        }
    }
}

/// The embedding head on top of the backbone (the survey baseline's `--head_name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HeadKind {
    /// One linear layer to the embedding (`direct`).
    #[serde(rename = "direct")]
    Direct,
    /// One linear layer, then L2 normalisation (`direct_normalize`).
    #[serde(rename = "direct-l2", alias = "direct_normalize")]
    DirectL2,
    /// Linear to 1024, batch norm, ReLU, linear to the embedding (`fc1024`).
    #[serde(rename = "fc1024")]
    Fc1024,
    /// `fc1024`, then L2 normalisation (`fc1024_normalize`).
    #[serde(rename = "fc1024-l2", alias = "fc1024_normalize")]
    Fc1024L2,
}

impl HeadKind {
    /// Every head, in the order the docs list them.
    pub const ALL: [Self; 4] = [Self::Direct, Self::DirectL2, Self::Fc1024, Self::Fc1024L2];

    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::DirectL2 => "direct-l2",
            Self::Fc1024 => "fc1024",
            Self::Fc1024L2 => "fc1024-l2",
        }
    }

    /// Whether the head has the 1024-wide hidden layer.
    pub fn has_hidden_layer(self) -> bool {
        matches!(self, Self::Fc1024 | Self::Fc1024L2)
    }

    /// Whether embeddings come out L2-normalised (on the unit sphere).
    pub fn l2_normalizes(self) -> bool {
        matches!(self, Self::DirectL2 | Self::Fc1024L2)
    }
}

/// A name that is no [`Backbone`] or [`HeadKind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{name}` (expected one of: {expected})")]
pub struct UnknownName {
    /// `backbone` or `head`.
    pub kind: &'static str,
    /// The name given.
    pub name: String,
    /// The accepted names, comma-separated.
    pub expected: String,
}

fn parse_name<T: Copy>(
    kind: &'static str,
    s: &str,
    all: &[T],
    name: impl Fn(T) -> &'static str,
) -> Result<T, UnknownName> {
    all.iter()
        .copied()
        .find(|&v| name(v) == s)
        .ok_or_else(|| UnknownName {
            kind,
            name: s.to_string(),
            expected: all.iter().map(|&v| name(v)).collect::<Vec<_>>().join(", "),
        })
}

impl FromStr for Backbone {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_name("backbone", s, &Self::ALL, Self::name)
    }
}

impl FromStr for HeadKind {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_name("head", s, &Self::ALL, Self::name)
    }
}

impl fmt::Display for Backbone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for HeadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to build: backbone, head, embedding size and image channels.
///
/// Serialised with the names of [`Backbone::name`] and [`HeadKind::name`]; an unknown field is
/// an error naming it:
///
/// ```text
/// backbone = "resnet50"
/// head = "fc1024-l2"
/// embedding_dim = 128
/// in_channels = 3
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingNetConfig {
    /// The feature extractor.
    pub backbone: Backbone,
    /// The head from features to embeddings.
    pub head: HeadKind,
    /// Size of the embeddings (at least 1).
    pub embedding_dim: usize,
    /// Channels of the input images: 1 for grey-scale, 3 for RGB (at least 1).
    pub in_channels: usize,
}

impl EmbeddingNetConfig {
    /// Checks every field without building anything.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("embedding_dim", self.embedding_dim),
            ("in_channels", self.in_channels),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroSize { field });
            }
        }
        Ok(())
    }

    /// Checks that images of `channels x height x width` fit the network.
    pub fn check_image_shape(
        &self,
        channels: usize,
        height: usize,
        width: usize,
    ) -> Result<(), Error> {
        let error = |reason| Error::ImageShape {
            channels,
            height,
            width,
            reason,
        };
        if channels != self.in_channels {
            return Err(error(format!(
                "the network expects {}-channel images",
                self.in_channels
            )));
        }
        let min = self.backbone.min_image_side();
        if height < min || width < min {
            return Err(error(format!(
                "the {} backbone needs images of at least {min}x{min} px",
                self.backbone
            )));
        }
        Ok(())
    }

    /// Builds the network, weights drawn from the device's random generator.
    ///
    /// One `u64` is drawn from the device (so `device.seed(s)` first makes the network
    /// reproducible) and handed to [`init_seeded`](Self::init_seeded). Prefer `init_seeded`
    /// where anything else may draw from the device's generator concurrently (on Flex the
    /// generator is process-wide).
    pub fn init(&self, device: &Device) -> Result<EmbeddingNet, Error> {
        // Four 16-bit chunks, each drawn as an f32 (exact below 2^24).
        let chunks: Vec<f32> =
            Tensor::<1>::random([4], Distribution::Uniform(0.0, 65536.0), device)
                .into_data()
                .try_into_vec_as::<f32>()
                .expect("a tensor converted to f32 reads back as f32");
        let seed = chunks.iter().fold(0u64, |seed, &chunk| {
            (seed << 16) | (chunk.floor() as u64).min(0xffff)
        });
        self.init_seeded(seed, device)
    }

    /// Builds the network with every initial weight drawn from a ChaCha8 generator seeded
    /// with `seed`: the same seed gives the same weights, whatever else runs.
    ///
    /// Initialisation follows the reference implementations (see [`SmallConvNet`],
    /// [`ResNet`] and [`EmbeddingHead`]); the network starts in training mode.
    pub fn init_seeded(&self, seed: u64, device: &Device) -> Result<EmbeddingNet, Error> {
        self.validate()?;
        let mut init = WeightInit::new(seed, device);
        let backbone = match self.backbone {
            Backbone::SmallConvNet => {
                BackboneNet::SmallConvNet(SmallConvNet::new(self.in_channels, &mut init, device))
            }
            Backbone::ResNet18 => BackboneNet::ResNet(ResNet::new(
                ResNetLayout::RESNET18,
                self.in_channels,
                &mut init,
                device,
            )),
            Backbone::ResNet50 => BackboneNet::ResNet(ResNet::new(
                ResNetLayout::RESNET50,
                self.in_channels,
                &mut init,
                device,
            )),
        };
        let head = EmbeddingHead::new(
            self.backbone.out_features(),
            self.embedding_dim,
            self.head.has_hidden_layer(),
            self.head.l2_normalizes(),
            &mut init,
            device,
        );
        Ok(EmbeddingNet::new(self.clone(), backbone, head))
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;

    use super::*;
    use crate::test_support::config;

    #[test]
    fn serde_round_trip_uses_the_cli_names() {
        for backbone in Backbone::ALL {
            for head in HeadKind::ALL {
                let cfg = config(backbone, head, 64, 3);
                let json = serde_json::to_string(&cfg).unwrap();
                assert!(json.contains(&format!("\"{}\"", backbone.name())), "{json}");
                assert!(json.contains(&format!("\"{}\"", head.name())), "{json}");
                assert_eq!(
                    serde_json::from_str::<EmbeddingNetConfig>(&json).unwrap(),
                    cfg
                );
                assert_eq!(backbone.name().parse::<Backbone>().unwrap(), backbone);
                assert_eq!(head.to_string().parse::<HeadKind>().unwrap(), head);
            }
        }
    }

    #[test]
    fn survey_baseline_head_names_are_accepted() {
        let json = r#"{"backbone":"resnet50","head":"fc1024_normalize","embedding_dim":128,"in_channels":3}"#;
        let cfg: EmbeddingNetConfig = serde_json::from_str(json).unwrap();
        assert_eq!(cfg.head, HeadKind::Fc1024L2);
    }

    #[test]
    fn unknown_field_is_named() {
        let json = r#"{"backbone":"resnet18","head":"direct","embedding_dim":8,"in_channels":3,"embeding_size":4}"#;
        let err = serde_json::from_str::<EmbeddingNetConfig>(json).unwrap_err();
        assert!(err.to_string().contains("embeding_size"), "{err}");
    }

    #[test]
    fn unknown_names_list_the_choices() {
        let err = "resnet34".parse::<Backbone>().unwrap_err();
        assert_eq!(err.name, "resnet34");
        assert!(
            err.to_string()
                .contains("small-conv-net, resnet18, resnet50"),
            "{err}"
        );
        let err = "fc2048".parse::<HeadKind>().unwrap_err();
        assert!(
            err.to_string()
                .contains("direct, direct-l2, fc1024, fc1024-l2"),
            "{err}"
        );
        let json = r#"{"backbone":"vgg16","head":"direct","embedding_dim":8,"in_channels":3}"#;
        let err = serde_json::from_str::<EmbeddingNetConfig>(json).unwrap_err();
        assert!(err.to_string().contains("vgg16"), "{err}");
    }

    #[test]
    fn zero_sizes_are_rejected_by_init() {
        let device = Device::flex();
        for (cfg, field) in [
            (
                config(Backbone::SmallConvNet, HeadKind::Direct, 0, 1),
                "embedding_dim",
            ),
            (
                config(Backbone::ResNet18, HeadKind::Fc1024, 8, 0),
                "in_channels",
            ),
        ] {
            assert_eq!(cfg.validate(), Err(ConfigError::ZeroSize { field }));
            let err = cfg.init_seeded(0, &device).unwrap_err();
            assert!(matches!(err, Error::Config(ConfigError::ZeroSize { field: f }) if f == field));
            let cause = std::error::Error::source(&err).unwrap().to_string();
            assert!(cause.contains(field), "{cause}");
        }
    }

    #[test]
    fn image_shape_check_names_the_problem() {
        let grey = config(Backbone::SmallConvNet, HeadKind::Direct, 8, 1);
        assert!(grey.check_image_shape(1, 28, 28).is_ok());
        assert!(grey.check_image_shape(1, 16, 105).is_ok());
        let err = grey.check_image_shape(3, 28, 28).unwrap_err();
        assert!(
            err.to_string().contains("expects 1-channel images"),
            "{err}"
        );
        let err = grey.check_image_shape(1, 15, 28).unwrap_err();
        assert!(err.to_string().contains("at least 16x16"), "{err}");
        let rgb = config(Backbone::ResNet50, HeadKind::Direct, 8, 3);
        assert!(rgb.check_image_shape(3, 1, 1).is_ok());
    }
}
