//! The network operations dml computes with its own CPU kernels, as a burn backend extension.
//!
//! [`NetOps`] is a `#[backend_extension]` trait with two implementations: Flex's
//! (`ops/flex.rs`, the kernels of `dml-kernels` on Flex's tensors) and `Autodiff`'s (`ops/autodiff.rs`,
//! which records each operation with a hand-written backward that calls the Flex backward
//! kernels). Parameters stay burn `Param`s of burn modules (`Conv2d`, `BatchNorm`), so
//! optimisers, checkpoints and weight files see no difference.
//!
//! Activations between these operations are channels-last, `[batch, h, w, channels]`
//! (the layers in `layers.rs`). Other backends (wgpu) take burn's composed operations instead,
//! chosen per call by [`uses_kernels`]: the same computation in burn's NCHW layout, which is
//! what the GPU kernels are built for.

mod autodiff;
mod flex;

use std::cell::Cell;

use burn::backend::{
    Backend, DispatchDevice, ExtensionType, backend_extension, tensor::FloatTensor,
};
use burn::tensor::{Device, Tensor};
pub use dml_kernels::norm::Pool;

/// Kernel, stride and padding of a convolution (the batch and channel counts come from the
/// tensors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvSpec {
    /// `[kh, kw]`.
    pub kernel: [usize; 2],
    /// `[sh, sw]`.
    pub stride: [usize; 2],
    /// `[ph, pw]`, the same on both sides.
    pub padding: [usize; 2],
}

/// What follows the per-channel map: a ReLU or not, then a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ActSpec {
    /// Whether a ReLU is applied.
    pub relu: bool,
    /// The pool after it.
    pub pool: Pool,
}

/// An optional tensor input: `#[backend_extension]` routes enums of tensors, not `Option`s.
#[derive(ExtensionType)]
pub enum Maybe<B: Backend> {
    /// A tensor.
    Given(FloatTensor<B>),
    /// No tensor.
    Absent,
}

impl<B: Backend> Maybe<B> {
    /// The tensor, if any.
    pub fn into_option(self) -> Option<FloatTensor<B>> {
        match self {
            Self::Given(t) => Some(t),
            Self::Absent => None,
        }
    }
}

impl<B: Backend> From<Option<FloatTensor<B>>> for Maybe<B> {
    fn from(t: Option<FloatTensor<B>>) -> Self {
        t.map_or(Self::Absent, Self::Given)
    }
}

/// dml's fused network operations on channels-last activations.
#[backend_extension(Flex, Autodiff)]
pub trait NetOps: Backend {
    /// Convolution of `x` `[b, h, w, in]` with `weight` `[out, in, kh, kw]` plus `bias`
    /// `[out]`: `[b, oh, ow, out]`.
    fn conv2d_nhwc(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        #[extension_type] bias: Maybe<Self>,
        spec: ConvSpec,
    ) -> FloatTensor<Self>;

    /// Gradients of [`NetOps::conv2d_nhwc`] without bias with respect to `x` (when
    /// `input_grad`) and `weight`, given the output's gradient.
    fn conv2d_nhwc_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        spec: ConvSpec,
        input_grad: bool,
    ) -> (Option<FloatTensor<Self>>, FloatTensor<Self>);

    /// Training batch norm of `y` `[b, h, w, c]` with batch statistics, plus `residual`,
    /// then the activation: `(output, batch mean, biased batch variance)`.
    fn batch_norm_act(
        y: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        #[extension_type] residual: Maybe<Self>,
        epsilon: f64,
        act: ActSpec,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// Gradients of [`NetOps::batch_norm_act`] with respect to `y`, `gamma`, `beta` (and the
    /// residual, which equals the gradient before batch norm: returned when `residual` is
    /// given), given the output's gradient and the batch statistics the forward returned.
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_act_backward(
        y: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        #[extension_type] residual: Maybe<Self>,
        grad: FloatTensor<Self>,
        epsilon: f64,
        act: ActSpec,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        Option<FloatTensor<Self>>,
    );

    /// The activation alone, `pool(relu(y + residual))`: after a convolution that has its
    /// batch norm folded in (evaluation).
    fn act(
        y: FloatTensor<Self>,
        #[extension_type] residual: Maybe<Self>,
        act: ActSpec,
    ) -> FloatTensor<Self>;

    /// Gradient of [`NetOps::act`] with respect to `y` (the residual's too), given the
    /// output's gradient.
    fn act_backward(
        y: FloatTensor<Self>,
        #[extension_type] residual: Maybe<Self>,
        grad: FloatTensor<Self>,
        act: ActSpec,
    ) -> FloatTensor<Self>;
}

thread_local! {
    /// Set inside [`with_composed_ops`].
    static COMPOSED: Cell<bool> = const { Cell::new(false) };
    /// Operations of the convolutions run on this thread, for [`count_flops`].
    static FLOPS: Cell<u64> = const { Cell::new(0) };
}

/// Runs `f` with burn's composed operations on every backend, dml's kernels off: the
/// baseline of `dml bench train` and of the equivalence tests. Scoped to the calling thread,
/// where a network's forward pass runs.
pub fn with_composed_ops<R>(f: impl FnOnce() -> R) -> R {
    let before = COMPOSED.replace(true);
    let result = f();
    COMPOSED.set(before);
    result
}

/// Runs `f` and returns the floating-point operations (two per multiply-add) of the
/// convolutions it ran through dml's kernels on this thread.
pub fn count_flops<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = FLOPS.replace(0);
    let result = f();
    (result, FLOPS.replace(before))
}

/// Whether tensors on `device` go through [`NetOps`] (Flex, with or without autodiff) rather
/// than burn's composed operations.
pub fn uses_kernels(device: &Device) -> bool {
    !COMPOSED.get()
        && matches!(
            device.clone().inner().as_dispatch(),
            DispatchDevice::Flex(_)
        )
}

type Dispatch = burn::backend::Dispatch;

/// [`NetOps::conv2d_nhwc`] on tensors.
pub(crate) fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    spec: ConvSpec,
) -> Tensor<4> {
    let [b, h, w, c] = x.dims();
    let [out, _, kh, kw] = weight.dims();
    let [oh, ow] = [0, 1].map(|a| {
        let side = [h, w][a] + 2 * spec.padding[a];
        side.saturating_sub(spec.kernel[a]) / spec.stride[a] + 1
    });
    let flops = 2 * (b * oh * ow) as u64 * (kh * kw * c * out) as u64;
    FLOPS.set(FLOPS.get().saturating_add(flops));
    Tensor::from_dispatch(<Dispatch as NetOps>::conv2d_nhwc(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.map(Tensor::into_dispatch).into(),
        spec,
    ))
}

/// [`NetOps::batch_norm_act`] on tensors: `(output, batch mean, batch variance)`.
pub(crate) fn batch_norm_act(
    y: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    residual: Option<Tensor<4>>,
    epsilon: f64,
    act: ActSpec,
) -> (Tensor<4>, Tensor<1>, Tensor<1>) {
    let (z, mean, var) = <Dispatch as NetOps>::batch_norm_act(
        y.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        residual.map(Tensor::into_dispatch).into(),
        epsilon,
        act,
    );
    (
        Tensor::from_dispatch(z),
        Tensor::from_dispatch(mean),
        Tensor::from_dispatch(var),
    )
}

/// [`NetOps::act`] on tensors.
pub(crate) fn act(y: Tensor<4>, residual: Option<Tensor<4>>, act: ActSpec) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as NetOps>::act(
        y.into_dispatch(),
        residual.map(Tensor::into_dispatch).into(),
        act,
    ))
}
