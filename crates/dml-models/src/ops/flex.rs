//! [`NetOps`] on Flex: dml-kernels over Flex's tensor storage.
//!
//! Shapes reaching here were checked by the layers that call the operations (an image too
//! small for the network is refused by `EmbeddingNetConfig::check_image_shape` before any
//! tensor is built), so a geometry error here is a bug in dml and panics with its message.

use burn::backend::flex::FlexTensor;
use burn::backend::{DType, Flex, TensorMetadata};
use burn::tensor::{Shape, TensorData};
use dml_kernels::conv::{
    Conv2dGeometry, conv2d_backward, conv2d_forward, hwio_to_oihw, oihw_to_hwio,
};
use dml_kernels::norm::{
    ActGeometry, Affine, act_backward, act_forward, batch_norm_affine, batch_norm_backward,
    channel_moments,
};

use super::{ActSpec, ConvSpec, Maybe, NetOps};

/// A tensor's f32 values in row-major order, copied only when its layout is not already that.
fn values(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    assert_eq!(t.dtype(), DType::F32, "dml's network kernels run in f32");
    match t.as_slice::<f32>() {
        Some(v) => v.into(),
        None => t
            .to_contiguous()
            .as_slice::<f32>()
            .expect("contiguous")
            .to_vec()
            .into(),
    }
}

fn dims4(t: &FlexTensor) -> [usize; 4] {
    let s = t.shape();
    assert_eq!(
        s.num_dims(),
        4,
        "a channels-last activation has 4 dimensions"
    );
    [s[0], s[1], s[2], s[3]]
}

fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, Shape::new(shape)))
}

fn conv_geometry(x: [usize; 4], w: [usize; 4], spec: ConvSpec) -> Conv2dGeometry {
    let [b, h, wd, c] = x;
    let [out, inp, kh, kw] = w;
    assert_eq!(inp, c, "convolution: {c} input channels, weights for {inp}");
    assert_eq!(
        [kh, kw],
        spec.kernel,
        "convolution: weight and kernel sizes differ"
    );
    Conv2dGeometry::new(b, [h, wd], c, out, spec.kernel, spec.stride, spec.padding)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn act_geometry(y: [usize; 4], act: ActSpec) -> ActGeometry {
    let [b, h, w, c] = y;
    ActGeometry::new(b, [h, w], c, act.pool, act.relu).unwrap_or_else(|e| panic!("{e}"))
}

fn output_shape(y: [usize; 4], g: &ActGeometry) -> [usize; 4] {
    let [oh, ow] = g.out_size();
    [y[0], oh, ow, y[3]]
}

impl NetOps for Flex {
    fn conv2d_nhwc(
        x: FlexTensor,
        weight: FlexTensor,
        bias: Maybe<Flex>,
        spec: ConvSpec,
    ) -> FlexTensor {
        let w_dims = dims4(&weight);
        let g = conv_geometry(dims4(&x), w_dims, spec);
        let hwio = oihw_to_hwio(&values(&weight), w_dims);
        let bias = bias.into_option();
        let bias = bias.as_ref().map(values);
        let mut y = vec![0.0; g.output_len()];
        conv2d_forward(&g, &values(&x), &hwio, bias.as_deref(), &mut y);
        let [oh, ow] = g.out_size();
        tensor(y, [g.batch(), oh, ow, g.out_channels()])
    }

    fn conv2d_nhwc_backward(
        x: FlexTensor,
        weight: FlexTensor,
        grad: FlexTensor,
        spec: ConvSpec,
        input_grad: bool,
    ) -> (Option<FlexTensor>, FlexTensor) {
        let (x_dims, w_dims) = (dims4(&x), dims4(&weight));
        let g = conv_geometry(x_dims, w_dims, spec);
        let hwio = oihw_to_hwio(&values(&weight), w_dims);
        let mut dx = input_grad.then(|| vec![0.0; g.input_len()]);
        let mut dw = vec![0.0; g.weight_len()];
        conv2d_backward(
            &g,
            &values(&x),
            &hwio,
            &values(&grad),
            dx.as_deref_mut(),
            &mut dw,
            None,
        );
        (
            dx.map(|dx| tensor(dx, x_dims)),
            tensor(hwio_to_oihw(&dw, w_dims), w_dims),
        )
    }

    fn batch_norm_act(
        y: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        residual: Maybe<Flex>,
        epsilon: f64,
        act: ActSpec,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let y_dims = dims4(&y);
        let g = act_geometry(y_dims, act);
        let c = y_dims[3];
        let y = values(&y);
        let (mean, var) = channel_moments(&y, c);
        let (scale, shift) =
            batch_norm_affine(&values(&gamma), &values(&beta), &mean, &var, epsilon);
        let residual = residual.into_option();
        let residual = residual.as_ref().map(values);
        let mut z = vec![0.0; g.output_len()];
        let affine = Affine {
            scale: &scale,
            shift: &shift,
        };
        act_forward(&g, &y, Some(affine), residual.as_deref(), &mut z);
        (
            tensor(z, output_shape(y_dims, &g)),
            tensor(mean, [c]),
            tensor(var, [c]),
        )
    }

    fn batch_norm_act_backward(
        y: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        mean: FlexTensor,
        var: FlexTensor,
        residual: Maybe<Flex>,
        grad: FlexTensor,
        epsilon: f64,
        act: ActSpec,
    ) -> (FlexTensor, FlexTensor, FlexTensor, Option<FlexTensor>) {
        let y_dims = dims4(&y);
        let g = act_geometry(y_dims, act);
        let c = y_dims[3];
        let (gamma, mean, var) = (values(&gamma), values(&mean), values(&var));
        let (scale, shift) = batch_norm_affine(&gamma, &values(&beta), &mean, &var, epsilon);
        let y = values(&y);
        let residual = residual.into_option();
        let residual = residual.as_ref().map(values);
        let mut da = vec![0.0; g.input_len()];
        let affine = Affine {
            scale: &scale,
            shift: &shift,
        };
        act_backward(
            &g,
            &y,
            Some(affine),
            residual.as_deref(),
            &values(&grad),
            &mut da,
        );
        let residual_grad = residual.is_some().then(|| tensor(da.clone(), y_dims));
        let (mut dgamma, mut dbeta) = (vec![0.0; c], vec![0.0; c]);
        batch_norm_backward(
            &y,
            c,
            &gamma,
            &mean,
            &var,
            epsilon,
            &mut da,
            &mut dgamma,
            &mut dbeta,
        );
        (
            tensor(da, y_dims),
            tensor(dgamma, [c]),
            tensor(dbeta, [c]),
            residual_grad,
        )
    }

    fn act(y: FlexTensor, residual: Maybe<Flex>, act: ActSpec) -> FlexTensor {
        let y_dims = dims4(&y);
        let g = act_geometry(y_dims, act);
        let residual = residual.into_option();
        let residual = residual.as_ref().map(values);
        let mut z = vec![0.0; g.output_len()];
        act_forward(&g, &values(&y), None, residual.as_deref(), &mut z);
        tensor(z, output_shape(y_dims, &g))
    }

    fn act_backward(
        y: FlexTensor,
        residual: Maybe<Flex>,
        grad: FlexTensor,
        act: ActSpec,
    ) -> FlexTensor {
        let y_dims = dims4(&y);
        let g = act_geometry(y_dims, act);
        let residual = residual.into_option();
        let residual = residual.as_ref().map(values);
        let mut da = vec![0.0; g.input_len()];
        act_backward(
            &g,
            &values(&y),
            None,
            residual.as_deref(),
            &values(&grad),
            &mut da,
        );
        tensor(da, y_dims)
    }
}
