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

#[cfg(test)]
mod tests {
    use burn::module::{Module, Param};
    use burn::nn::pool::MaxPool2dConfig;
    use burn::nn::{BatchNormConfig, conv::Conv2dConfig};
    use burn::tensor::{Device, Gradients, Tensor, TensorData};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::test_support::{images, values};

    /// One layer to compare: input `[b, h, w, c_in]`, output channels, kernel, stride,
    /// padding, the pool as `(window, stride, padding)`, ReLU, residual.
    #[derive(Debug, Clone, Copy)]
    struct Case {
        input: [usize; 4],
        out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        pool: Option<(usize, usize, usize)>,
        relu: bool,
        residual: bool,
    }

    /// Batch 1, odd sides, stride 2, padding edges, channel counts that are not multiples of
    /// a vector width, and every layer shape of the small convnet and the ResNets.
    const CASES: [Case; 6] = [
        Case {
            input: [1, 7, 5, 3],
            out: 5,
            kernel: 3,
            stride: 1,
            padding: 1,
            pool: Some((2, 2, 0)),
            relu: true,
            residual: false,
        },
        Case {
            input: [2, 9, 9, 4],
            out: 6,
            kernel: 3,
            stride: 2,
            padding: 1,
            pool: None,
            relu: true,
            residual: true,
        },
        Case {
            input: [3, 6, 7, 5],
            out: 7,
            kernel: 1,
            stride: 1,
            padding: 0,
            pool: None,
            relu: false,
            residual: false,
        },
        Case {
            input: [2, 8, 7, 3],
            out: 4,
            kernel: 1,
            stride: 2,
            padding: 0,
            pool: None,
            relu: false,
            residual: false,
        },
        Case {
            input: [2, 13, 11, 3],
            out: 17,
            kernel: 7,
            stride: 2,
            padding: 3,
            pool: Some((3, 2, 1)),
            relu: true,
            residual: false,
        },
        Case {
            input: [4, 3, 3, 9],
            out: 3,
            kernel: 3,
            stride: 1,
            padding: 1,
            pool: Some((2, 2, 0)),
            relu: true,
            residual: true,
        },
    ];

    struct Layer {
        conv: Conv2d,
        bn: BatchNorm,
        pool: Option<MaxPool2d>,
    }

    fn seeded(seed: u64, len: usize, lo: f32, hi: f32) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..len).map(|_| rng.random_range(lo..hi)).collect()
    }

    /// The case's modules with seeded parameters and running statistics, built afresh for
    /// each side (running statistics are shared state, so the sides must not share them).
    fn layer(case: &Case, device: &Device) -> Layer {
        let c_in = case.input[3];
        let mut conv = Conv2dConfig::new([c_in, case.out], [case.kernel, case.kernel])
            .with_stride([case.stride, case.stride])
            .with_padding(PaddingConfig2d::Explicit(
                case.padding,
                case.padding,
                case.padding,
                case.padding,
            ))
            .with_bias(false)
            .init(device);
        let shape = [case.out, c_in, case.kernel, case.kernel];
        let w = seeded(1, shape.iter().product(), -0.5, 0.5);
        conv.weight = Param::from_data(TensorData::new(w, shape), device);
        let mut bn = BatchNormConfig::new(case.out).init(device);
        let param = |seed, lo, hi| TensorData::new(seeded(seed, case.out, lo, hi), [case.out]);
        bn.gamma = Param::from_data(param(2, 0.5, 1.5), device);
        bn.beta = Param::from_data(param(3, -0.5, 0.5), device);
        bn.running_mean
            .update(Tensor::from_data(param(4, -0.2, 0.2), device));
        bn.running_var
            .update(Tensor::from_data(param(5, 0.5, 2.0), device));
        let pool = case.pool.map(|(k, s, p)| {
            MaxPool2dConfig::new([k, k])
                .with_strides([s, s])
                .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                .init()
        });
        Layer { conv, bn, pool }
    }

    fn output_shape(case: &Case) -> [usize; 4] {
        let [b, h, w, _] = case.input;
        let conv = |s: usize| (s + 2 * case.padding - case.kernel) / case.stride + 1;
        let pool = |s: usize| match case.pool {
            Some((k, st, p)) => (s + 2 * p - k) / st + 1,
            None => s,
        };
        [b, pool(conv(h)), pool(conv(w)), case.out]
    }

    /// Forward values, then the gradients of `sum(out * weights)` with respect to the input,
    /// the residual, the weights, gamma and beta, then the running statistics afterwards.
    fn run(case: &Case, device: &Device, composed: bool) -> Vec<(&'static str, Vec<f32>)> {
        let l = layer(case, device);
        let tracked = |t: Tensor<4>| {
            if device.is_autodiff() {
                t.require_grad()
            } else {
                t
            }
        };
        let x = tracked(images(6, case.input, device));
        let [b, h, w, _] = case.input;
        let conv_side = |s: usize| (s + 2 * case.padding - case.kernel) / case.stride + 1;
        let residual = case
            .residual
            .then(|| tracked(images(7, [b, conv_side(h), conv_side(w), case.out], device)));
        let forward = || {
            conv_bn_act(
                x.clone(),
                &l.conv,
                &l.bn,
                residual.clone(),
                case.relu,
                l.pool.as_ref(),
            )
        };
        let out = if composed {
            ops::with_composed_ops(forward)
        } else {
            forward()
        };
        assert_eq!(out.dims(), output_shape(case), "{case:?}");
        let mut result = vec![("output", values(out.clone()))];
        if device.is_autodiff() {
            let weights = images(8, output_shape(case), device);
            let grads: Gradients = (out * weights).sum().backward();
            let grad = |t: Tensor<4>| values(t.grad(&grads).expect("a gradient"));
            result.push(("input grad", grad(x)));
            if let Some(r) = residual {
                result.push(("residual grad", grad(r)));
            }
            result.push(("weight grad", grad(l.conv.weight.val())));
            let grad1 = |t: Tensor<1>| values(t.grad(&grads).expect("a gradient"));
            result.push(("gamma grad", grad1(l.bn.gamma.val())));
            result.push(("beta grad", grad1(l.bn.beta.val())));
        }
        result.push(("running mean", values(l.bn.running_mean.value())));
        result.push(("running var", values(l.bn.running_var.value())));
        result
    }

    /// `|a - b| <= 1e-5 * max(|b|, largest |b| of the tensor / 10)`: relative, with a floor
    /// for the entries that cancel to near zero.
    fn assert_equivalent(kernels: &[(&str, Vec<f32>)], composed: &[(&str, Vec<f32>)], what: &str) {
        assert_eq!(kernels.len(), composed.len(), "{what}");
        for ((name, a), (_, b)) in kernels.iter().zip(composed) {
            let largest = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                let tol = 1e-5 * y.abs().max(largest / 10.0).max(f32::MIN_POSITIVE);
                assert!(
                    (x - y).abs() <= tol,
                    "{what} {name}[{i}]: kernels {x}, burn {y}"
                );
            }
        }
    }

    #[test]
    fn training_layers_equal_burns_composed_ops_forward_and_every_gradient() {
        let device = Device::flex().autodiff();
        for case in &CASES {
            let kernels = run(case, &device, false);
            let composed = run(case, &device, true);
            assert_equivalent(&kernels, &composed, &format!("training {case:?}"));
        }
    }

    #[test]
    fn evaluation_layers_with_folded_batch_norm_equal_burns_composed_ops() {
        let device = Device::flex();
        for case in &CASES {
            let kernels = run(case, &device, false);
            let composed = run(case, &device, true);
            assert_equivalent(&kernels, &composed, &format!("evaluation {case:?}"));
        }
    }

    #[test]
    fn frozen_batch_norm_on_an_autodiff_device_is_evaluation_and_still_differentiable() {
        // A frozen layer on the training device takes the folded path, whose convolution has a
        // bias: gradients reach the input and the weights through it.
        let device = Device::flex().autodiff();
        for case in &CASES[..2] {
            let freeze = |composed| {
                let mut l = layer(case, &device);
                l.bn = l.bn.freeze();
                let x = images(6, case.input, &device).require_grad();
                let forward =
                    || conv_bn_act(x.clone(), &l.conv, &l.bn, None, case.relu, l.pool.as_ref());
                let out = if composed {
                    ops::with_composed_ops(forward)
                } else {
                    forward()
                };
                let grads = out.clone().sum().backward();
                vec![
                    ("output", values(out)),
                    ("input grad", values(x.grad(&grads).unwrap())),
                    (
                        "weight grad",
                        values(l.conv.weight.val().grad(&grads).unwrap()),
                    ),
                ]
            };
            if !case.residual {
                assert_equivalent(&freeze(false), &freeze(true), &format!("frozen {case:?}"));
            }
        }
    }
}
