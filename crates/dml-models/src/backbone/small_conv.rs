//! The small convnet: Prototypical Networks' Omniglot encoder with a global average pool.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

use crate::init::WeightInit;
use crate::layers;

/// Channels of every block (Snell et al. 2017, section 3.2: "64 filters").
pub(crate) const SMALL_CONV_WIDTH: usize = 64;
/// Number of conv blocks; each halves the image side.
const SMALL_CONV_BLOCKS: usize = 4;
/// Smallest image side the four 2x2 max pools leave at least one pixel of.
pub(crate) const SMALL_CONV_MIN_SIDE: usize = 1 << SMALL_CONV_BLOCKS;

/// Four `conv3x3 (pad 1) → batch norm → ReLU → max pool 2x2` blocks of 64 channels, then a
/// global average pool to 64 features.
///
/// This is the embedding network of Prototypical Networks (Snell et al. 2017, code:
/// jakesnell/prototypical-networks, `protonets/models/few_shot.py`), built for 28–105 px
/// images. NOTE: the original flattens the last feature map (64 features at 28 px, 1600 at
/// 84 px); this one averages it instead, so the output has 64 features at any input size of
/// at least 16 px.
///
/// NOTE: the convolutions have no bias (the original's have one). A batch norm follows each,
/// whose mean subtraction cancels a bias exactly and whose shift plays its role, so the bias
/// only cost time.
///
/// NOTE: each block applies the ReLU after the max pool rather than before. The two orders
/// compute the same function (ReLU and max commute), and this one runs the ReLU on a 4x
/// smaller map.
///
/// Weight names (for [`load_backbone_weights`](crate::EmbeddingNet::load_backbone_weights)):
/// `blocks.{i}.conv.weight` and `blocks.{i}.bn.{weight,bias,running_mean,running_var}`
/// for `i` in `0..4`.
#[derive(Module, Debug)]
pub struct SmallConvNet {
    blocks: Vec<ConvBlock>,
    pool: MaxPool2d,
}

/// One `conv3x3 → batch norm` stage of [`SmallConvNet`] (which adds the pool and ReLU).
#[derive(Module, Debug)]
pub struct ConvBlock {
    conv: Conv2d,
    bn: BatchNorm,
}

impl SmallConvNet {
    /// Builds the network for `in_channels`-channel images, weights drawn from `init` as
    /// PyTorch's defaults draw them (the reference trained from those): conv weights
    /// `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, batch norm scale 1 and shift 0.
    pub(crate) fn new(in_channels: usize, init: &mut WeightInit<'_>, device: &Device) -> Self {
        let blocks = (0..SMALL_CONV_BLOCKS)
            .map(|i| {
                let c_in = if i == 0 {
                    in_channels
                } else {
                    SMALL_CONV_WIDTH
                };
                let bound = 1.0 / ((c_in * 9) as f64).sqrt();
                ConvBlock {
                    conv: Conv2d {
                        weight: init.uniform([SMALL_CONV_WIDTH, c_in, 3, 3], bound),
                        bias: None,
                        stride: [1, 1],
                        kernel_size: [3, 3],
                        dilation: [1, 1],
                        groups: 1,
                        padding: PaddingConfig2d::Explicit(1, 1, 1, 1),
                    },
                    bn: BatchNormConfig::new(SMALL_CONV_WIDTH).init(device),
                }
            })
            .collect();
        Self {
            blocks,
            pool: MaxPool2dConfig::new([2, 2]).init(),
        }
    }

    /// `[b, c, h, w]` images to `[b, 64]` features.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = layers::to_channels_last(images);
        for block in &self.blocks {
            x = layers::conv_bn_act(x, &block.conv, &block.bn, None, true, Some(&self.pool));
        }
        layers::global_average_pool(x)
    }
}
