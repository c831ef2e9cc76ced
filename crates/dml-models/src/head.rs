//! Embedding heads: pooled backbone features `[b, f]` to embeddings `[b, d]`.

use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Linear};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use crate::init::WeightInit;

/// Width of the hidden layer of the `fc1024` heads.
pub(crate) const FC_HIDDEN: usize = 1024;

/// Floor on the squared norm in L2 normalisation: TensorFlow's `tf.nn.l2_normalize` default,
/// which the survey baseline uses. A zero vector stays zero instead of becoming NaN.
const L2_EPSILON: f64 = 1e-12;

/// The survey baseline's embedding heads (ahmdtaha/tf_retrieval_baseline, `heads/`):
///
/// ```text
/// direct:            e = W f + b                      (heads/direct.py)
/// direct_normalize:  e = (W f + b) / |W f + b|        (heads/direct_normalize.py)
/// fc1024:            e = W2 relu(bn(W1 f)) + b2       (heads/fc1024.py)
/// fc1024_normalize:  e = fc1024(f) / |fc1024(f)|      (heads/fc1024_normalize.py)
/// ```
///
/// As there: `W1` (1024 wide, no bias since batch norm follows) is Xavier-uniform
/// initialised (TF-slim's default), the batch norm has epsilon 1e-5 and decay 0.9 (momentum
/// 0.1 here), `W`/`W2` are orthogonal and the biases zero. Normalisation divides by
/// `sqrt(max(|e|², 1e-12))`, as `tf.nn.l2_normalize` does.
#[derive(Module, Debug)]
pub struct EmbeddingHead {
    hidden: Option<HiddenLayer>,
    embedding: Linear,
    l2_normalize: bool,
}

/// The `fc1024` heads' `relu(bn(W1 f))` layer.
#[derive(Module, Debug)]
pub struct HiddenLayer {
    linear: Linear,
    bn: BatchNorm,
}

impl EmbeddingHead {
    /// A head from `in_features` to `embedding_dim`, with a 1024-wide hidden layer if
    /// `hidden`, normalising its output if `l2_normalize`.
    pub(crate) fn new(
        in_features: usize,
        embedding_dim: usize,
        hidden: bool,
        l2_normalize: bool,
        init: &mut WeightInit<'_>,
        device: &Device,
    ) -> Self {
        let hidden = hidden.then(|| {
            let bound = (6.0 / (in_features + FC_HIDDEN) as f64).sqrt();
            HiddenLayer {
                linear: Linear {
                    weight: init.uniform([in_features, FC_HIDDEN], bound),
                    bias: None,
                },
                bn: BatchNormConfig::new(FC_HIDDEN).init(device),
            }
        });
        let embedding_in = if hidden.is_some() { FC_HIDDEN } else { in_features };
        Self {
            hidden,
            embedding: Linear {
                weight: init.orthogonal(embedding_in, embedding_dim),
                bias: Some(init.zeros([embedding_dim])),
            },
            l2_normalize,
        }
    }

    /// `[b, f]` features to `[b, d]` embeddings.
    pub fn forward(&self, features: Tensor<2>) -> Tensor<2> {
        let x = match &self.hidden {
            Some(hidden) => relu(hidden.bn.forward(hidden.linear.forward(features))),
            None => features,
        };
        let e = self.embedding.forward(x);
        if self.l2_normalize {
            let squared_norm = e.clone().square().sum_dim(1).clamp_min(L2_EPSILON);
            e / squared_norm.sqrt()
        } else {
            e
        }
    }
}
