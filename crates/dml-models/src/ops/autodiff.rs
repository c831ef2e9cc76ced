//! [`NetOps`] on `Autodiff<B>`: each operation runs on `B` and records a hand-written backward
//! that calls `B`'s backward operation.
//!
//! The inputs a backward needs are kept as `B` primitives in the node's state (no gradient
//! checkpointing: recomputing a convolution would cost more than keeping its input). The
//! batch statistics come back as untracked tensors: they feed the running averages only.
//! The backward operations themselves are not differentiated again (first-order only, as
//! burn's own backward operations): called on autodiff tensors they return constants.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{AutodiffBackend, Backend, TensorMetadata};
use burn::tensor::Shape;

use super::{ActSpec, ConvSpec, Maybe, NetOps};

type Primitive<B> = <B as burn::backend::BackendTypes>::FloatTensorPrimitive;

/// Registers `grad` for a parent node that takes part in the backward pass.
fn register<B: Backend>(grads: &mut Gradients, node: Option<NodeId>, grad: Option<Primitive<B>>) {
    if let (Some(node), Some(grad)) = (node, grad) {
        grads.register::<B>(node, grad);
    }
}

#[derive(Debug)]
struct Conv;

impl<B: Backend + NetOps> Backward<B, 2> for Conv {
    type State = (Primitive<B>, Primitive<B>, ConvSpec);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, weight, spec) = ops.state;
        let (dx, dw) = B::conv2d_nhwc_backward(x, weight, grad, spec, node_x.is_some());
        register::<B>(grads, node_x.map(|n| n.id), dx);
        register::<B>(grads, node_w.map(|n| n.id), Some(dw));
    }
}

/// State of a batch norm + activation node: `y, gamma, beta, mean, var, residual`.
type NormState<B> = (
    Primitive<B>,
    Primitive<B>,
    Primitive<B>,
    Primitive<B>,
    Primitive<B>,
    Option<Primitive<B>>,
    f64,
    ActSpec,
);

/// Batch norm + activation gradients: `[dy, dgamma, dbeta, dresidual]`.
fn norm_backward<B: Backend + NetOps>(
    state: NormState<B>,
    grad: Primitive<B>,
) -> [Option<Primitive<B>>; 4] {
    let (y, gamma, beta, mean, var, residual, epsilon, act) = state;
    let (dy, dgamma, dbeta, dresidual) = B::batch_norm_act_backward(
        y,
        gamma,
        beta,
        mean,
        var,
        residual.into(),
        grad,
        epsilon,
        act,
    );
    [Some(dy), Some(dgamma), Some(dbeta), dresidual]
}

#[derive(Debug)]
struct NormAct;

impl<B: Backend + NetOps> Backward<B, 3> for NormAct {
    type State = NormState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let [dy, dgamma, dbeta, _] = norm_backward::<B>(ops.state, grad);
        let [node_y, node_gamma, node_beta] = ops.parents;
        register::<B>(grads, node_y.map(|n| n.id), dy);
        register::<B>(grads, node_gamma.map(|n| n.id), dgamma);
        register::<B>(grads, node_beta.map(|n| n.id), dbeta);
    }
}

#[derive(Debug)]
struct NormActResidual;

impl<B: Backend + NetOps> Backward<B, 4> for NormActResidual {
    type State = NormState<B>;

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let [dy, dgamma, dbeta, dresidual] = norm_backward::<B>(ops.state, grad);
        let [node_y, node_gamma, node_beta, node_residual] = ops.parents;
        register::<B>(grads, node_y.map(|n| n.id), dy);
        register::<B>(grads, node_gamma.map(|n| n.id), dgamma);
        register::<B>(grads, node_beta.map(|n| n.id), dbeta);
        register::<B>(grads, node_residual.map(|n| n.id), dresidual);
    }
}

/// State of an activation node: `y, residual`.
type ActState<B> = (Primitive<B>, Option<Primitive<B>>, ActSpec);

#[derive(Debug)]
struct Act;

impl<B: Backend + NetOps> Backward<B, 1> for Act {
    type State = ActState<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (y, residual, act) = ops.state;
        let [node_y] = ops.parents;
        register::<B>(
            grads,
            node_y.map(|n| n.id),
            Some(B::act_backward(y, residual.into(), grad, act)),
        );
    }
}

#[derive(Debug)]
struct ActResidual;

impl<B: Backend + NetOps> Backward<B, 2> for ActResidual {
    type State = ActState<B>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (y, residual, act) = ops.state;
        let da = B::act_backward(y, residual.into(), grad, act);
        let [node_y, node_residual] = ops.parents;
        register::<B>(grads, node_y.map(|n| n.id), Some(da.clone()));
        register::<B>(grads, node_residual.map(|n| n.id), Some(da));
    }
}

impl<B: Backend + NetOps, C: CheckpointStrategy> NetOps for Autodiff<B, C> {
    fn conv2d_nhwc(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Maybe<Self>,
        spec: ConvSpec,
    ) -> FloatTensor<Self> {
        let out = match Conv
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (x, weight) = (x.into_primitive(), weight.into_primitive());
                let y = B::conv2d_nhwc(x.clone(), weight.clone(), None.into(), spec);
                prep.finish((x, weight, spec), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::conv2d_nhwc(
                x.into_primitive(),
                weight.into_primitive(),
                None.into(),
                spec,
            )),
        };
        // The bias (evaluation with batch norm folded in) is a broadcast add, differentiated
        // by burn; training convolutions have none.
        match bias.into_option() {
            Some(bias) => {
                let channels = bias.shape()[0];
                let bias = Self::float_reshape(bias, Shape::new([1, 1, 1, channels]));
                Self::float_add(out, bias)
            }
            None => out,
        }
    }

    fn conv2d_nhwc_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        spec: ConvSpec,
        input_grad: bool,
    ) -> (Option<FloatTensor<Self>>, FloatTensor<Self>) {
        let (dx, dw) = B::conv2d_nhwc_backward(
            x.into_primitive(),
            weight.into_primitive(),
            grad.into_primitive(),
            spec,
            input_grad,
        );
        (dx.map(Self::from_inner), Self::from_inner(dw))
    }

    fn batch_norm_act(
        y: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        residual: Maybe<Self>,
        epsilon: f64,
        act: ActSpec,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let forward = |y: &Primitive<B>,
                       gamma: &Primitive<B>,
                       beta: &Primitive<B>,
                       residual: &Option<Primitive<B>>| {
            B::batch_norm_act(
                y.clone(),
                gamma.clone(),
                beta.clone(),
                residual.clone().into(),
                epsilon,
                act,
            )
        };
        let stats =
            |mean: Primitive<B>, var: Primitive<B>| (Self::from_inner(mean), Self::from_inner(var));
        let nodes3 = [y.node(), gamma.node(), beta.node()];
        let (y, gamma, beta) = (
            y.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
        );
        match residual.into_option() {
            None => match NormAct.prepare::<C>(nodes3).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let (z, mean, var) = forward(&y, &gamma, &beta, &None);
                    let state = (
                        y,
                        gamma,
                        beta,
                        mean.clone(),
                        var.clone(),
                        None,
                        epsilon,
                        act,
                    );
                    let (mean, var) = stats(mean, var);
                    (prep.finish(state, z), mean, var)
                }
                OpsKind::UnTracked(prep) => {
                    let (z, mean, var) = forward(&y, &gamma, &beta, &None);
                    let (mean, var) = stats(mean, var);
                    (prep.finish(z), mean, var)
                }
            },
            Some(residual) => {
                let [ny, ng, nb] = nodes3;
                let nodes = [ny, ng, nb, residual.node()];
                let residual = Some(residual.into_primitive());
                match NormActResidual
                    .prepare::<C>(nodes)
                    .compute_bound()
                    .stateful()
                {
                    OpsKind::Tracked(prep) => {
                        let (z, mean, var) = forward(&y, &gamma, &beta, &residual);
                        let state = (
                            y,
                            gamma,
                            beta,
                            mean.clone(),
                            var.clone(),
                            residual,
                            epsilon,
                            act,
                        );
                        let (mean, var) = stats(mean, var);
                        (prep.finish(state, z), mean, var)
                    }
                    OpsKind::UnTracked(prep) => {
                        let (z, mean, var) = forward(&y, &gamma, &beta, &residual);
                        let (mean, var) = stats(mean, var);
                        (prep.finish(z), mean, var)
                    }
                }
            }
        }
    }

    fn batch_norm_act_backward(
        y: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        residual: Maybe<Self>,
        grad: FloatTensor<Self>,
        epsilon: f64,
        act: ActSpec,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        Option<FloatTensor<Self>>,
    ) {
        let (dy, dgamma, dbeta, dresidual) = B::batch_norm_act_backward(
            y.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
            mean.into_primitive(),
            var.into_primitive(),
            residual.into_option().map(|r| r.into_primitive()).into(),
            grad.into_primitive(),
            epsilon,
            act,
        );
        (
            Self::from_inner(dy),
            Self::from_inner(dgamma),
            Self::from_inner(dbeta),
            dresidual.map(Self::from_inner),
        )
    }

    fn act(y: FloatTensor<Self>, residual: Maybe<Self>, act: ActSpec) -> FloatTensor<Self> {
        match residual.into_option() {
            None => match Act.prepare::<C>([y.node()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let y = y.into_primitive();
                    let z = B::act(y.clone(), None.into(), act);
                    prep.finish((y, None, act), z)
                }
                OpsKind::UnTracked(prep) => {
                    prep.finish(B::act(y.into_primitive(), None.into(), act))
                }
            },
            Some(residual) => {
                let nodes = [y.node(), residual.node()];
                let (y, residual) = (y.into_primitive(), Some(residual.into_primitive()));
                match ActResidual.prepare::<C>(nodes).compute_bound().stateful() {
                    OpsKind::Tracked(prep) => {
                        let z = B::act(y.clone(), residual.clone().into(), act);
                        prep.finish((y, residual, act), z)
                    }
                    OpsKind::UnTracked(prep) => prep.finish(B::act(y, residual.into(), act)),
                }
            }
        }
    }

    fn act_backward(
        y: FloatTensor<Self>,
        residual: Maybe<Self>,
        grad: FloatTensor<Self>,
        act: ActSpec,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::act_backward(
            y.into_primitive(),
            residual.into_option().map(|r| r.into_primitive()).into(),
            grad.into_primitive(),
            act,
        ))
    }
}
