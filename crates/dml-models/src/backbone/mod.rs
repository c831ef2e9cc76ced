//! Backbones: networks from images `[b, c, h, w]` to pooled features `[b, f]`.

mod block;
mod resnet;
mod small_conv;

pub use block::{BasicBlock, Bottleneck, Downsample, ResidualBlock};
pub use resnet::ResNet;
pub use small_conv::{ConvBlock, SmallConvNet};

pub(crate) use resnet::ResNetLayout;
pub(crate) use small_conv::{SMALL_CONV_MIN_SIDE, SMALL_CONV_WIDTH};

use burn::module::Module;
use burn::tensor::Tensor;

/// A built backbone, one variant per architecture family.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum BackboneNet {
    /// The small convnet for 28–105 px images.
    SmallConvNet(SmallConvNet),
    /// ResNet-18 or ResNet-50.
    ResNet(ResNet),
}

impl BackboneNet {
    /// `[b, c, h, w]` images to `[b, f]` pooled features.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Self::SmallConvNet(net) => net.forward(images),
            Self::ResNet(net) => net.forward(images),
        }
    }
}
