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
        let embedding_in = if hidden.is_some() {
            FC_HIDDEN
        } else {
            in_features
        };
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

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Tensor, TensorData};

    use super::*;
    use crate::test_support::values;

    fn features(device: &Device) -> Tensor<2> {
        let v: Vec<f32> = (0..3 * 6)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0)
            .collect();
        Tensor::from_data(TensorData::new(v, [3, 6]), device)
    }

    fn head(hidden: bool, l2: bool, device: &Device) -> EmbeddingHead {
        EmbeddingHead::new(6, 4, hidden, l2, &mut WeightInit::new(21, device), device)
    }

    #[test]
    fn direct_head_is_affine_in_the_features() {
        let device = Device::flex();
        let h = head(false, false, &device);
        let w = values(h.embedding.weight.val()); // [6, 4]
        let b = values(h.embedding.bias.as_ref().unwrap().val());
        let f = values(features(&device));
        let out = values(h.forward(features(&device)));
        for row in 0..3 {
            for col in 0..4 {
                let expected: f32 =
                    b[col] + (0..6).map(|k| f[row * 6 + k] * w[k * 4 + col]).sum::<f32>();
                assert!((out[row * 4 + col] - expected).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn normalised_heads_are_the_plain_heads_divided_by_their_norm() {
        let device = Device::flex().autodiff();
        for hidden in [false, true] {
            let plain = values(head(hidden, false, &device).forward(features(&device)));
            let unit = values(head(hidden, true, &device).forward(features(&device)));
            for (p, u) in plain.chunks(4).zip(unit.chunks(4)) {
                let norm = p.iter().map(|x| x * x).sum::<f32>().sqrt();
                for (x, y) in p.iter().zip(u) {
                    assert!(
                        (x / norm - y).abs() < 1e-5,
                        "hidden {hidden}: {p:?} vs {u:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_zero_embedding_stays_zero_when_normalised() {
        let device = Device::flex();
        let out = values(head(false, true, &device).forward(Tensor::zeros([2, 6], &device)));
        assert!(out.iter().all(|x| *x == 0.0), "{out:?}");
    }
}
