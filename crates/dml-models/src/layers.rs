//! Layer forward passes on channels-last activations `[batch, h, w, channels]`.
//!
//! The backbones keep every activation channels-last from the input image to the pooled
//! features; each `convolution -> batch norm -> (+ residual) -> ReLU -> (max pool)` sequence
//! is one call of [`conv_bn_act`]. On Flex it runs dml's kernels ([`crate::ops`]): one
//! convolution, then one fused pass for the rest; in evaluation the batch norm is folded into
//! the convolution's weights and bias, so only the activation pass is left. On other backends
//! (wgpu) the same function is computed with burn's modules in NCHW.
//!
//! The parameters are the burn modules' own (`Conv2d`, `BatchNorm`, and `MaxPool2d`'s
//! settings), so checkpoints and weight files are unchanged. Batch norm's training rule is
//! burn's: batch statistics when the device is an autodiff device and the layer is not
//! frozen, and the running averages updated from them with burn's momentum.

use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;

use crate::ops::{self, ActSpec, ConvSpec, Pool};

/// `[b, c, h, w]` images to the channels-last layout.
pub(crate) fn to_channels_last(images: Tensor<4>) -> Tensor<4> {
    images.permute([0, 2, 3, 1])
}

/// Mean over the spatial axes of a channels-last map: `[b, h, w, c]` to `[b, c]`.
pub(crate) fn global_average_pool(x: Tensor<4>) -> Tensor<2> {
    let [b, h, w, c] = x.dims();
    x.reshape([b, h * w, c]).mean_dim(1).reshape([b, c])
}

/// `pool(relu(batch_norm(conv(x)) + residual))` on channels-last tensors; `relu` and `pool`
/// are optional.
pub(crate) fn conv_bn_act(
    x: Tensor<4>,
    conv: &Conv2d,
    bn: &BatchNorm,
    residual: Option<Tensor<4>>,
    relu: bool,
    pool: Option<&MaxPool2d>,
) -> Tensor<4> {
    let specs = conv_spec(conv).zip(act_spec(relu, pool));
    match specs {
        Some((conv_spec, act)) if ops::uses_kernels(&x.device()) => {
            fused(x, conv, bn, residual, conv_spec, act)
        }
        _ => composed(x, conv, bn, residual, relu, pool),
    }
}

/// dml's kernels: the convolution, then batch norm, residual, ReLU and pool in one pass.
fn fused(
    x: Tensor<4>,
    conv: &Conv2d,
    bn: &BatchNorm,
    residual: Option<Tensor<4>>,
    conv_spec: ConvSpec,
    act: ActSpec,
) -> Tensor<4> {
    let device = x.device();
    let bias = conv.bias.as_ref().map(|b| b.val());
    if device.is_autodiff() && bn.training.is_enabled() {
        let y = ops::conv2d(x, conv.weight.val(), bias, conv_spec);
        let (z, mean, var) =
            ops::batch_norm_act(y, bn.gamma.val(), bn.beta.val(), residual, bn.epsilon, act);
        update_running_stats(bn, mean, var);
        return z;
    }
    // Evaluation: batch norm is `y * scale + shift` per output channel, so it folds into the
    // convolution: weights scaled per output channel, `shift` (plus the scaled bias) as bias.
    let running_var = bn.running_var.value().to_device(&device);
    let running_mean = bn.running_mean.value().to_device(&device);
    let scale = bn.gamma.val() / running_var.add_scalar(bn.epsilon).sqrt();
    let mut shift = bn.beta.val() - running_mean * scale.clone();
    if let Some(bias) = bias {
        shift = shift + bias * scale.clone();
    }
    let [out, ..] = conv.weight.dims();
    let weight = conv.weight.val() * scale.reshape([out, 1, 1, 1]);
    ops::act(
        ops::conv2d(x, weight, Some(shift), conv_spec),
        residual,
        act,
    )
}

/// burn's rule: `running = (1 - momentum) * running + momentum * batch`, detached.
fn update_running_stats(bn: &BatchNorm, mean: Tensor<1>, var: Tensor<1>) {
    let momentum = bn.momentum;
    for (running, batch) in [(&bn.running_mean, mean), (&bn.running_var, var)] {
        let value = running.value_sync().to_device(&batch.device());
        let value = value
            .mul_scalar(1.0 - momentum)
            .add(batch.detach().mul_scalar(momentum));
        running.update(value.detach());
    }
}

/// burn's modules in NCHW, for backends without dml's kernels.
fn composed(
    x: Tensor<4>,
    conv: &Conv2d,
    bn: &BatchNorm,
    residual: Option<Tensor<4>>,
    apply_relu: bool,
    pool: Option<&MaxPool2d>,
) -> Tensor<4> {
    let mut a = bn.forward(conv.forward(x.permute([0, 3, 1, 2])));
    if let Some(residual) = residual {
        a = a + residual.permute([0, 3, 1, 2]);
    }
    if apply_relu {
        a = relu(a);
    }
    if let Some(pool) = pool {
        a = pool.forward(a);
    }
    a.permute([0, 2, 3, 1])
}

/// The kernel's description of `conv`, or `None` for what it does not compute (dilation,
/// groups, asymmetric or "same" padding).
fn conv_spec(conv: &Conv2d) -> Option<ConvSpec> {
    if conv.dilation != [1, 1] || conv.groups != 1 {
        return None;
    }
    Some(ConvSpec {
        kernel: conv.kernel_size,
        stride: conv.stride,
        padding: symmetric_padding(&conv.padding)?,
    })
}

/// The kernel's description of the activation, or `None` for a pool it does not compute
/// (non-square, dilated, ceil mode, asymmetric padding).
fn act_spec(relu: bool, pool: Option<&MaxPool2d>) -> Option<ActSpec> {
    let pool = match pool {
        None => Pool::None,
        Some(pool) => {
            let [kh, kw] = pool.kernel_size;
            let [sh, sw] = pool.stride;
            let [ph, pw] = symmetric_padding(&pool.padding)?;
            if kh != kw || sh != sw || ph != pw || pool.dilation != [1, 1] || pool.ceil_mode {
                return None;
            }
            Pool::Max {
                kernel: kh,
                stride: sh,
                padding: ph,
            }
        }
    };
    Some(ActSpec { relu, pool })
}

fn symmetric_padding(padding: &PaddingConfig2d) -> Option<[usize; 2]> {
    match *padding {
        PaddingConfig2d::Valid => Some([0, 0]),
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            Some([top, left])
        }
        _ => None,
    }
}
