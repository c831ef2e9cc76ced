//! The embedding network: a backbone and a head.

use burn::module::Module;
use burn::tensor::Tensor;

use crate::backbone::BackboneNet;
use crate::config::EmbeddingNetConfig;
use crate::head::EmbeddingHead;

/// Images `[b, c, h, w]` (f32, normalised by the data pipeline) to embeddings `[b, d]`.
///
/// Built by [`EmbeddingNetConfig::init`]. Batch norms use batch statistics (and update their
/// running averages) when the network runs on an autodiff device, and their running averages
/// otherwise, so `net.valid()` is the network in evaluation mode.
#[derive(Module, Debug)]
pub struct EmbeddingNet {
    /// The feature extractor.
    pub backbone: BackboneNet,
    /// Features to embeddings.
    pub head: EmbeddingHead,
    #[module(skip)]
    config: EmbeddingNetConfig,
}

impl EmbeddingNet {
    pub(crate) fn new(
        config: EmbeddingNetConfig,
        backbone: BackboneNet,
        head: EmbeddingHead,
    ) -> Self {
        Self {
            backbone,
            head,
            config,
        }
    }

    /// The configuration the network was built from.
    pub fn config(&self) -> &EmbeddingNetConfig {
        &self.config
    }

    /// `[b, c, h, w]` images to `[b, d]` embeddings.
    ///
    /// The image shape must pass [`EmbeddingNetConfig::check_image_shape`]; check it once when
    /// the data is set up (burn panics on a channel mismatch).
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.head.forward(self.backbone.forward(images))
    }

    /// `[b, c, h, w]` images to the backbone's `[b, f]` pooled features, before the head.
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        self.backbone.forward(images)
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;

    use crate::test_support::{config, images, values};
    use crate::{Backbone, HeadKind};

    /// The smallest input each backbone is tested at (ResNet-50 at 32 px keeps tests fast).
    fn test_input(backbone: Backbone, batch: usize) -> [usize; 4] {
        match backbone {
            Backbone::SmallConvNet => [batch, 1, 28, 28],
            Backbone::ResNet18 | Backbone::ResNet50 => [batch, 3, 32, 32],
        }
    }

    fn norms(embeddings: &[f32], dim: usize) -> Vec<f32> {
        embeddings
            .chunks(dim)
            .map(|e| e.iter().map(|x| x * x).sum::<f32>().sqrt())
            .collect()
    }

    #[test]
    fn every_backbone_and_head_gives_batch_by_embedding_dim_and_l2_heads_unit_norms() {
        let device = Device::flex();
        for backbone in Backbone::ALL {
            for head in HeadKind::ALL {
                let shape = test_input(backbone, 3);
                let net = config(backbone, head, 8, shape[1])
                    .init_seeded(1, &device)
                    .unwrap();
                let out = net.forward(images(2, shape, &device));
                assert_eq!(out.dims(), [3, 8], "{backbone} + {head}");
                let norms = norms(&values(out), 8);
                assert!(
                    norms.iter().all(|n| n.is_finite()),
                    "{backbone} + {head}: {norms:?}"
                );
                let unit = norms.iter().all(|n| (n - 1.0).abs() < 1e-5);
                assert_eq!(
                    unit,
                    head.l2_normalizes(),
                    "{backbone} + {head}: norms {norms:?}"
                );
            }
        }
    }

    #[test]
    fn features_have_the_backbone_width() {
        let device = Device::flex();
        for backbone in Backbone::ALL {
            let shape = test_input(backbone, 2);
            let net = config(backbone, HeadKind::Direct, 4, shape[1])
                .init_seeded(3, &device)
                .unwrap();
            let features = net.features(images(4, shape, &device));
            assert_eq!(features.dims(), [2, backbone.out_features()], "{backbone}");
        }
    }

    #[test]
    fn small_conv_net_takes_any_size_from_its_minimum_up() {
        let device = Device::flex();
        let net = config(Backbone::SmallConvNet, HeadKind::Direct, 4, 3)
            .init_seeded(5, &device)
            .unwrap();
        let min = Backbone::SmallConvNet.min_image_side();
        for (h, w) in [(min, min), (28, 28), (84, 84), (105, 61)] {
            let out = net.forward(images(6, [2, 3, h, w], &device));
            assert_eq!(out.dims(), [2, 4], "{h}x{w}");
        }
    }

    #[test]
    fn same_seed_same_network_other_seed_other_network() {
        let device = Device::flex();
        let cfg = config(Backbone::SmallConvNet, HeadKind::Fc1024, 8, 1);
        let x = || images(7, [4, 1, 28, 28], &device);
        let a = values(cfg.init_seeded(11, &device).unwrap().forward(x()));
        let b = values(cfg.init_seeded(11, &device).unwrap().forward(x()));
        let c = values(cfg.init_seeded(12, &device).unwrap().forward(x()));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn device_seed_makes_init_reproducible() {
        // The only test that draws from Flex's process-wide generator, so no other test can
        // advance it between the seed and the draw.
        let device = Device::flex();
        let cfg = config(Backbone::SmallConvNet, HeadKind::Direct, 8, 1);
        let x = || images(8, [2, 1, 28, 28], &device);
        device.seed(99);
        let a = values(cfg.init(&device).unwrap().forward(x()));
        device.seed(99);
        let b = values(cfg.init(&device).unwrap().forward(x()));
        let c = values(cfg.init(&device).unwrap().forward(x()));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn every_parameter_gets_a_gradient() {
        let device = Device::flex().autodiff();
        for (backbone, head) in [
            (Backbone::SmallConvNet, HeadKind::Fc1024L2),
            (Backbone::ResNet18, HeadKind::DirectL2),
        ] {
            let shape = test_input(backbone, 4);
            let net = config(backbone, head, 8, shape[1])
                .init_seeded(13, &device)
                .unwrap();
            let loss = net.forward(images(14, shape, &device)).square().sum();
            let grads = loss.backward();
            let mut missing = Vec::new();
            let mut count = 0;
            net.visit(&mut GradCheck {
                grads: &grads,
                missing: &mut missing,
                count: &mut count,
            });
            assert!(count > 0);
            assert!(
                missing.is_empty(),
                "{backbone} + {head}: no gradient for {missing:?}"
            );
        }
    }

    use burn::module::{Module, ModuleVisitor, Param};
    use burn::tensor::Gradients;
    use burn::tensor::Tensor;

    /// Counts trainable parameters and records those without a finite, non-zero gradient.
    struct GradCheck<'a> {
        grads: &'a Gradients,
        missing: &'a mut Vec<String>,
        count: &'a mut usize,
    }

    impl ModuleVisitor for GradCheck<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let tensor = param.val();
            if !tensor.is_require_grad() {
                return; // batch-norm running statistics
            }
            *self.count += 1;
            let ok = tensor.grad(self.grads).is_some_and(|g| {
                let g = values(g);
                g.iter().all(|x| x.is_finite()) && g.iter().any(|x| *x != 0.0)
            });
            if !ok {
                self.missing
                    .push(format!("{:?} {:?}", param.id, tensor.dims()));
            }
        }
    }

    #[test]
    fn training_forward_updates_running_stats_and_valid_uses_them() {
        let device = Device::flex().autodiff();
        let net = config(Backbone::SmallConvNet, HeadKind::Direct, 4, 1)
            .init_seeded(15, &device)
            .unwrap();
        let x = images(16, [8, 1, 28, 28], &device);
        let before = values(net.valid().forward(x.clone().inner()));
        let train = values(net.forward(x.clone()));
        let after = values(net.valid().forward(x.inner()));
        // Fresh running statistics (mean 0, variance 1) differ from the batch's, so evaluation
        // differs from training, and the training pass moved the running statistics.
        assert_ne!(before, train);
        assert_ne!(before, after);
    }
}
