//! ResNet-18 and ResNet-50 trunks, as torchvision builds them, without the classifier.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

use super::block::{ResidualBlock, batch_norm, conv};
use crate::init::WeightInit;
use crate::layers;

/// Which ResNet to build: block type and number of blocks per stage (He et al. 2016, table 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResNetLayout {
    pub(crate) bottleneck: bool,
    pub(crate) blocks: [usize; 4],
}

impl ResNetLayout {
    pub(crate) const RESNET18: Self = Self {
        bottleneck: false,
        blocks: [2, 2, 2, 2],
    };
    pub(crate) const RESNET50: Self = Self {
        bottleneck: true,
        blocks: [3, 4, 6, 3],
    };

    /// Channels of the pooled output: 512 for ResNet-18, 2048 for ResNet-50.
    pub(crate) fn out_features(self) -> usize {
        STAGE_WIDTHS[3] * ResidualBlock::expansion(self.bottleneck)
    }
}

/// Base width of each stage.
const STAGE_WIDTHS: [usize; 4] = [64, 128, 256, 512];

/// A ResNet trunk: `conv7x7/2 → bn → relu → maxpool3x3/2 → layer1..layer4 → global average
/// pool`, giving `[b, 512]` (ResNet-18) or `[b, 2048]` (ResNet-50) features.
///
/// Built as torchvision's `resnet18` / `resnet50` (v1.5 bottlenecks, see
/// [`Bottleneck`](super::block::Bottleneck)) with these departures, each a NOTE:
/// - NOTE: no `fc` classifier; the embedding head replaces it, and `fc.*` keys in a weight
///   file are skipped.
/// - NOTE: `conv1` takes `in_channels` channels (torchvision: always 3), so grey-scale images
///   need no copying to three channels; ImageNet weights then only load when it is 3.
///
/// - NOTE: the stem applies its ReLU after the max pool rather than before: the same function
///   (ReLU and max commute; padding counts as -inf), on a 4x smaller map.
///
/// Weight names are torchvision's (`conv1.weight`, `bn1.running_mean`,
/// `layer2.0.downsample.0.weight`, ...). Given the same weights and images, the pooled
/// features match torchvision 0.29's to 1e-4 of their largest value (test
/// `resnet_features_match_torchvision`, fixture `fixtures/resnet_torchvision_features.json`).
#[derive(Module, Debug)]
pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm,
    maxpool: MaxPool2d,
    layer1: Vec<ResidualBlock>,
    layer2: Vec<ResidualBlock>,
    layer3: Vec<ResidualBlock>,
    layer4: Vec<ResidualBlock>,
}

impl ResNet {
    /// Builds the trunk, weights initialised as torchvision's `ResNet.__init__` does
    /// (Kaiming normal with fan-out for convolutions, scale 1 and shift 0 for batch norms).
    pub(crate) fn new(
        layout: ResNetLayout,
        in_channels: usize,
        init: &mut WeightInit<'_>,
        device: &Device,
    ) -> Self {
        let conv1 = conv(init, [in_channels, STAGE_WIDTHS[0]], 7, 2);
        let bn1 = batch_norm(STAGE_WIDTHS[0], device);
        let mut channels = STAGE_WIDTHS[0];
        let mut stages = Vec::with_capacity(4);
        for (stage, (&width, &count)) in STAGE_WIDTHS.iter().zip(&layout.blocks).enumerate() {
            let first_stride = if stage == 0 { 1 } else { 2 };
            let blocks: Vec<_> = (0..count)
                .map(|i| {
                    let stride = if i == 0 { first_stride } else { 1 };
                    let block = ResidualBlock::new(
                        layout.bottleneck,
                        channels,
                        width,
                        stride,
                        init,
                        device,
                    );
                    channels = width * ResidualBlock::expansion(layout.bottleneck);
                    block
                })
                .collect();
            stages.push(blocks);
        }
        let [layer1, layer2, layer3, layer4]: [Vec<ResidualBlock>; 4] =
            stages.try_into().expect("four stages were built above");
        Self {
            conv1,
            bn1,
            maxpool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            layer1,
            layer2,
            layer3,
            layer4,
        }
    }

    /// `[b, c, h, w]` images to `[b, 512]` or `[b, 2048]` features.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        // relu(maxpool(x)) = maxpool(relu(x)); see the NOTE above.
        let x = layers::to_channels_last(images);
        let mut x = layers::conv_bn_act(x, &self.conv1, &self.bn1, None, true, Some(&self.maxpool));
        for block in [&self.layer1, &self.layer2, &self.layer3, &self.layer4]
            .into_iter()
            .flatten()
        {
            x = block.forward(x);
        }
        layers::global_average_pool(x)
    }
}
