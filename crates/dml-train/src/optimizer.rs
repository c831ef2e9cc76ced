//! Builds burn's optimizer from the `[optimizer]` section.

use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, AdamWConfig, ModuleOptimizer, RmsPropConfig, SgdConfig};

use crate::config::OptimizerConfig;

/// The burn optimizer for `config`. The learning rate is not part of it: the schedule gives
/// one per step.
pub fn build_optimizer(config: &OptimizerConfig) -> ModuleOptimizer {
    // burn treats a zero L2 penalty as "no decay" only if it is absent; keep the two the same.
    let decay = |penalty: f64| (penalty > 0.0).then(|| WeightDecayConfig::new(penalty as f32));
    match *config {
        OptimizerConfig::Sgd {
            momentum,
            dampening,
            nesterov,
            weight_decay,
            ..
        } => SgdConfig::new()
            .with_momentum((momentum > 0.0).then_some(MomentumConfig {
                momentum,
                dampening,
                nesterov,
            }))
            .with_weight_decay(decay(weight_decay))
            .init(),
        OptimizerConfig::Adam {
            beta1,
            beta2,
            epsilon,
            weight_decay,
            ..
        } => AdamConfig::new()
            .with_beta_1(beta1 as f32)
            .with_beta_2(beta2 as f32)
            .with_epsilon(epsilon as f32)
            .with_weight_decay(decay(weight_decay))
            .init(),
        OptimizerConfig::AdamW {
            beta1,
            beta2,
            epsilon,
            weight_decay,
            ..
        } => AdamWConfig::new()
            .with_beta_1(beta1 as f32)
            .with_beta_2(beta2 as f32)
            .with_epsilon(epsilon as f32)
            .with_weight_decay(weight_decay as f32)
            .init(),
        OptimizerConfig::RmsProp {
            alpha,
            momentum,
            epsilon,
            centered,
            weight_decay,
            ..
        } => RmsPropConfig::new()
            .with_alpha(alpha as f32)
            .with_momentum(momentum as f32)
            .with_epsilon(epsilon as f32)
            .with_centered(centered)
            .with_weight_decay(decay(weight_decay))
            .init(),
    }
}
