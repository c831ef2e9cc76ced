//! The bridge to burn: a [`MetricLoss`] as a burn [`Module`] whose output is a differentiable
//! scalar tensor on any backend.
//!
//! The kernel computes the loss `L` and its exact gradient `G = dL/dX` on the host. The graph
//! then gets the linear surrogate
//!
//! ```text
//! loss = sum(X * G) + (L - <X, G>)      G, L constants
//! ```
//!
//! whose value is `L` and whose gradient with respect to `X` is exactly `G`. The same is done
//! for learnable parameters (proxies, beta), which the module owns as a burn [`Param`] so an
//! optimizer trains them. The graph holds O(n * d), whatever the loss.

use burn::module::{Module, Param};
use burn::tensor::{DType, Device, Tensor, TensorData};
use dml_core::Real;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::loss::{LossKernel, LossStats, ParamInit};
use crate::matrix::MatrixRef;
use crate::metric_loss::{Batch, MetricLoss};

/// A [`MetricLoss`] as a burn module (with its learnable parameters, if any).
#[derive(Module, Debug)]
pub struct LossModule {
    #[module(skip)]
    loss: MetricLoss,
    /// Proxies `C x d` or MarginLoss's beta; trained by the optimizer like model weights.
    params: Option<Param<Tensor<2>>>,
}

/// The result of [`LossModule::forward`].
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// The loss, shape `[1]`, differentiable with respect to the embeddings and parameters.
    pub loss: Tensor<1>,
    /// Counts from the kernel (active and total tuples or rows).
    pub stats: LossStats,
    /// Tuples the miner produced (when one ran without being fused).
    pub mined: Option<u64>,
}

impl LossModule {
    /// Wraps `loss` for embeddings of width `embedding_dim`; learnable parameters, if the loss
    /// has any, are initialised from `seed` as the loss prescribes.
    pub fn new(loss: MetricLoss, embedding_dim: usize, seed: u64, device: &Device) -> Self {
        let params = loss.param_shape(embedding_dim).map(|(rows, cols)| {
            let values: Vec<f32> = match loss.kind().param_init(embedding_dim) {
                ParamInit::Constant(v) => vec![v as f32; rows * cols],
                ParamInit::Normal { std } => {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed);
                    (0..rows * cols)
                        .map(|_| (std * standard_normal(&mut rng)) as f32)
                        .collect()
                }
            };
            Param::from_tensor(Tensor::from_data(
                TensorData::new(values, [rows, cols]),
                device,
            ))
        });
        Self { loss, params }
    }

    /// Wraps `loss` with given parameters (for example proxies loaded from a checkpoint).
    pub fn with_params(loss: MetricLoss, params: Tensor<2>) -> Result<Self> {
        let [rows, cols] = params.dims();
        match loss.param_shape(cols) {
            Some(shape) if shape == (rows, cols) => Ok(Self {
                loss,
                params: Some(Param::from_tensor(params)),
            }),
            expected => Err(Error::ParameterShape {
                loss: loss.kind().name(),
                expected: expected.map_or("none".into(), |(r, c)| format!("{r} x {c}")),
                found: format!("{rows} x {cols}"),
            }),
        }
    }

    /// The wrapped loss.
    pub fn loss(&self) -> &MetricLoss {
        &self.loss
    }

    /// The learnable parameters, if any.
    pub fn params(&self) -> Option<Tensor<2>> {
        self.params.as_ref().map(Param::val)
    }

    /// The loss of a batch: embeddings `[n, d]` (f32 or f64; other float dtypes are computed
    /// in f32) and one label per row.
    pub fn forward(&self, embeddings: Tensor<2>, labels: &[i64]) -> Result<LossOutput> {
        self.forward_inner(embeddings, labels, 0)
    }

    /// The loss of training step `step` (random miners draw a different stream per step).
    pub fn forward_step(
        &self,
        embeddings: Tensor<2>,
        labels: &[i64],
        step: u64,
    ) -> Result<LossOutput> {
        self.forward_inner(embeddings, labels, step)
    }

    fn forward_inner(
        &self,
        embeddings: Tensor<2>,
        labels: &[i64],
        step: u64,
    ) -> Result<LossOutput> {
        match embeddings.dtype() {
            DType::F64 => self.run::<f64>(embeddings, labels, step),
            DType::F32 | DType::Flex32 | DType::F16 | DType::BF16 => {
                self.run::<f32>(embeddings, labels, step)
            }
            other => Err(Error::UnsupportedDtype {
                dtype: format!("{other:?}"),
            }),
        }
    }

    fn run<T: Real + burn::tensor::Element>(
        &self,
        embeddings: Tensor<2>,
        labels: &[i64],
        step: u64,
    ) -> Result<LossOutput> {
        let [n, d] = embeddings.dims();
        let x: Vec<T> = read(&embeddings)?;
        let params = self.params.as_ref().map(Param::val);
        let p: Option<(Vec<T>, usize, usize)> = params
            .as_ref()
            .map(|t| {
                let [r, c] = t.dims();
                read::<T>(t).map(|v| (v, r, c))
            })
            .transpose()?;
        let mut batch = Batch::new(MatrixRef::new(&x, n, d)?, labels).with_step(step);
        if let Some((pv, r, c)) = &p {
            batch = batch.with_params(MatrixRef::new(pv, *r, *c)?);
        }
        let out = self.loss.compute(batch)?;
        let device = embeddings.device();
        let dtype = embeddings.dtype();
        // <X, G> and <P, Gp> in f64, so the constant restores L up to one rounding.
        let mut offset = out.loss.f64() - dot(&x, &out.grad);
        let mut loss = surrogate(embeddings, out.grad, [n, d], &device, dtype);
        if let (Some(t), Some((pv, r, c)), Some(pg)) = (params, &p, out.param_grad) {
            offset -= dot(pv, &pg);
            let pdtype = t.dtype();
            loss = loss.add(surrogate(t, pg, [*r, *c], &device, pdtype));
        }
        Ok(LossOutput {
            loss: loss.add_scalar(offset),
            stats: out.stats,
            mined: out.mined,
        })
    }
}

/// `sum(x * g)` with `g` a constant of `x`'s dtype.
fn surrogate<T: Real + burn::tensor::Element>(
    x: Tensor<2>,
    g: Vec<T>,
    shape: [usize; 2],
    device: &Device,
    dtype: DType,
) -> Tensor<1> {
    let g = Tensor::<2>::from_data(TensorData::new(g, shape), (device, dtype));
    x.mul(g).sum()
}

fn read<T: Real + burn::tensor::Element>(t: &Tensor<2>) -> Result<Vec<T>> {
    t.try_to_vec_as::<T>()
        .map_err(|e| Error::TensorRead(e.to_string()))
}

fn dot<T: Real>(a: &[T], b: &[T]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x.f64() * y.f64()).sum()
}

/// One standard normal draw (Box-Muller): rand 0.9 has no normal distribution and one draw
/// does not justify another dependency.
fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}
