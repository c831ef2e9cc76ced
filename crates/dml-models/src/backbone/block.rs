//! ResNet's residual blocks, as torchvision builds them.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

use crate::init::WeightInit;
use crate::layers::conv_bn_act;

/// A bias-free `k x k` convolution with padding `k / 2`, Kaiming-normal (fan-out) initialised
/// as in torchvision's `ResNet.__init__`.
pub(crate) fn conv(
    init: &mut WeightInit<'_>,
    channels: [usize; 2],
    kernel: usize,
    stride: usize,
) -> Conv2d {
    let pad = kernel / 2;
    Conv2d {
        weight: init.kaiming_normal_fan_out([channels[1], channels[0], kernel, kernel]),
        bias: None,
        stride: [stride, stride],
        kernel_size: [kernel, kernel],
        dilation: [1, 1],
        groups: 1,
        padding: PaddingConfig2d::Explicit(pad, pad, pad, pad),
    }
}

/// A batch norm with torchvision's settings (eps 1e-5, momentum 0.1, scale 1, shift 0).
pub(crate) fn batch_norm(channels: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(channels).init(device)
}

/// One residual block; the variant decides the block type of the whole network.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum ResidualBlock {
    /// Two 3x3 convolutions (ResNet-18 and -34).
    Basic(BasicBlock),
    /// 1x1 → 3x3 → 1x1 convolutions with a 4x wider output (ResNet-50 and deeper).
    Bottleneck(Bottleneck),
}

impl ResidualBlock {
    /// Output channels per base width of a block of this kind (torchvision's `expansion`).
    pub(crate) fn expansion(bottleneck: bool) -> usize {
        if bottleneck { 4 } else { 1 }
    }

    /// A block taking `in_channels`, with base width `width` and the given stride; it gets a
    /// projection shortcut when the stride or the channel count changes (torchvision's rule).
    pub(crate) fn new(
        bottleneck: bool,
        in_channels: usize,
        width: usize,
        stride: usize,
        init: &mut WeightInit<'_>,
        device: &Device,
    ) -> Self {
        let out_channels = width * Self::expansion(bottleneck);
        let project = stride != 1 || in_channels != out_channels;
        if bottleneck {
            let conv1 = conv(init, [in_channels, width], 1, 1);
            let bn1 = batch_norm(width, device);
            let conv2 = conv(init, [width, width], 3, stride);
            let bn2 = batch_norm(width, device);
            let conv3 = conv(init, [width, out_channels], 1, 1);
            let bn3 = batch_norm(out_channels, device);
            let downsample =
                project.then(|| Downsample::new(in_channels, out_channels, stride, init, device));
            Self::Bottleneck(Bottleneck {
                conv1,
                bn1,
                conv2,
                bn2,
                conv3,
                bn3,
                downsample,
            })
        } else {
            let conv1 = conv(init, [in_channels, width], 3, stride);
            let bn1 = batch_norm(width, device);
            let conv2 = conv(init, [width, width], 3, 1);
            let bn2 = batch_norm(width, device);
            let downsample =
                project.then(|| Downsample::new(in_channels, out_channels, stride, init, device));
            Self::Basic(BasicBlock {
                conv1,
                bn1,
                conv2,
                bn2,
                downsample,
            })
        }
    }

    /// `relu(residual(x) + shortcut(x))`, channels-last.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Self::Basic(block) => block.forward(x),
            Self::Bottleneck(block) => block.forward(x),
        }
    }
}

/// torchvision's `BasicBlock`: `conv3x3 (stride) → bn → relu → conv3x3 → bn`, plus shortcut.
#[derive(Module, Debug)]
pub struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    downsample: Option<Downsample>,
}

impl BasicBlock {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let shortcut = match &self.downsample {
            Some(downsample) => downsample.forward(x.clone()),
            None => x.clone(),
        };
        let out = conv_bn_act(x, &self.conv1, &self.bn1, None, true, None);
        conv_bn_act(out, &self.conv2, &self.bn2, Some(shortcut), true, None)
    }
}

/// torchvision's `Bottleneck`: `conv1x1 → bn → relu → conv3x3 (stride) → bn → relu →
/// conv1x1 (4x width) → bn`, plus shortcut.
///
/// NOTE: the stride sits on the 3x3 convolution (ResNet v1.5, as in torchvision), not on the
/// first 1x1 convolution as in He et al. 2016; v1.5 is slightly more accurate and slower.
#[derive(Module, Debug)]
pub struct Bottleneck {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    conv3: Conv2d,
    bn3: BatchNorm,
    downsample: Option<Downsample>,
}

impl Bottleneck {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let shortcut = match &self.downsample {
            Some(downsample) => downsample.forward(x.clone()),
            None => x.clone(),
        };
        let out = conv_bn_act(x, &self.conv1, &self.bn1, None, true, None);
        let out = conv_bn_act(out, &self.conv2, &self.bn2, None, true, None);
        conv_bn_act(out, &self.conv3, &self.bn3, Some(shortcut), true, None)
    }
}

/// The projection shortcut: a strided 1x1 convolution and a batch norm (torchvision's
/// `downsample`, an `nn.Sequential` whose weights are named `downsample.0` and `downsample.1`).
#[derive(Module, Debug)]
pub struct Downsample {
    conv: Conv2d,
    bn: BatchNorm,
}

impl Downsample {
    fn new(
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        init: &mut WeightInit<'_>,
        device: &Device,
    ) -> Self {
        Self {
            conv: conv(init, [in_channels, out_channels], 1, stride),
            bn: batch_norm(out_channels, device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv_bn_act(x, &self.conv, &self.bn, None, false, None)
    }
}
