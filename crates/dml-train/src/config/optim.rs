//! The `[optimizer]` and `[schedule]` sections.
//!
//! Defaults follow PyTorch's (`torch.optim`), which is what users coming from
//! pytorch-metric-learning expect, where burn's differ (burn: SGD dampening 0.1, Adam
//! epsilon 1e-5, RMSprop momentum 0.9).

use serde::{Deserialize, Serialize};

use super::{check, check_finite_nonneg};
use crate::error::ConfigError;

/// The optimizer: `kind` picks the algorithm, the other fields are its hyper-parameters.
///
/// ```toml
/// [optimizer]
/// kind = "adam"
/// lr = 1e-4
/// weight_decay = 5e-4
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum OptimizerConfig {
    /// Stochastic gradient descent, optionally with (Nesterov) momentum.
    Sgd {
        /// Learning rate (the peak of the schedule). Default: 1e-3 (PyTorch).
        #[serde(default = "default_lr")]
        lr: f64,
        /// Momentum factor. Default: 0 (PyTorch).
        #[serde(default)]
        momentum: f64,
        /// Momentum dampening. Default: 0 (PyTorch; burn's is 0.1).
        #[serde(default)]
        dampening: f64,
        /// Nesterov momentum. Default: false (PyTorch).
        #[serde(default)]
        nesterov: bool,
        /// L2 penalty added to the gradient. Default: 0 (PyTorch).
        #[serde(default)]
        weight_decay: f64,
    },
    /// Adam (Kingma & Ba, 2015), weight decay as an L2 term in the gradient.
    Adam {
        /// Learning rate (the peak of the schedule). Default: 1e-3 (PyTorch).
        #[serde(default = "default_lr")]
        lr: f64,
        /// First-moment decay. Default: 0.9 (PyTorch).
        #[serde(default = "default_beta1")]
        beta1: f64,
        /// Second-moment decay. Default: 0.999 (PyTorch).
        #[serde(default = "default_beta2")]
        beta2: f64,
        /// Denominator guard. Default: 1e-8 (PyTorch; burn's is 1e-5).
        #[serde(default = "default_epsilon")]
        epsilon: f64,
        /// L2 penalty added to the gradient. Default: 0 (PyTorch).
        #[serde(default)]
        weight_decay: f64,
    },
    /// AdamW (Loshchilov & Hutter, 2019): decoupled weight decay.
    #[serde(rename = "adamw")]
    AdamW {
        /// Learning rate (the peak of the schedule). Default: 1e-3 (PyTorch).
        #[serde(default = "default_lr")]
        lr: f64,
        /// First-moment decay. Default: 0.9 (PyTorch).
        #[serde(default = "default_beta1")]
        beta1: f64,
        /// Second-moment decay. Default: 0.999 (PyTorch).
        #[serde(default = "default_beta2")]
        beta2: f64,
        /// Denominator guard. Default: 1e-8 (PyTorch).
        #[serde(default = "default_epsilon")]
        epsilon: f64,
        /// Decoupled weight decay. Default: 0.01 (PyTorch).
        #[serde(default = "default_adamw_decay")]
        weight_decay: f64,
    },
    /// RMSprop (Hinton's lecture 6e).
    #[serde(rename = "rmsprop")]
    RmsProp {
        /// Learning rate (the peak of the schedule). Default: 1e-2 (PyTorch).
        #[serde(default = "default_rmsprop_lr")]
        lr: f64,
        /// Smoothing constant of the squared-gradient average. Default: 0.99 (PyTorch).
        #[serde(default = "default_alpha")]
        alpha: f64,
        /// Momentum factor. Default: 0 (PyTorch; burn's is 0.9).
        #[serde(default)]
        momentum: f64,
        /// Denominator guard. Default: 1e-8 (PyTorch).
        #[serde(default = "default_epsilon")]
        epsilon: f64,
        /// Normalise by the centred second moment. Default: false (PyTorch).
        #[serde(default)]
        centered: bool,
        /// L2 penalty added to the gradient. Default: 0 (PyTorch).
        #[serde(default)]
        weight_decay: f64,
    },
}

fn default_lr() -> f64 {
    1e-3
}
fn default_rmsprop_lr() -> f64 {
    1e-2
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_epsilon() -> f64 {
    1e-8
}
fn default_adamw_decay() -> f64 {
    0.01
}
fn default_alpha() -> f64 {
    0.99
}

impl Default for OptimizerConfig {
    /// Adam at 1e-3: a safe start for small embedding networks.
    fn default() -> Self {
        OptimizerConfig::Adam {
            lr: 1e-3,
            beta1: default_beta1(),
            beta2: default_beta2(),
            epsilon: default_epsilon(),
            weight_decay: 0.0,
        }
    }
}

impl OptimizerConfig {
    /// The (peak) learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerConfig::Sgd { lr, .. }
            | OptimizerConfig::Adam { lr, .. }
            | OptimizerConfig::AdamW { lr, .. }
            | OptimizerConfig::RmsProp { lr, .. } => *lr,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let lr = self.lr();
        check(
            lr.is_finite() && lr > 0.0,
            "optimizer.lr",
            format!("must be a positive number, got {lr}"),
        )?;
        match *self {
            OptimizerConfig::Sgd {
                momentum,
                dampening,
                nesterov,
                weight_decay,
                ..
            } => {
                check_unit("optimizer.momentum", momentum)?;
                check_unit("optimizer.dampening", dampening)?;
                check(
                    !nesterov || (momentum > 0.0 && dampening == 0.0),
                    "optimizer.nesterov",
                    "Nesterov momentum needs momentum > 0 and dampening = 0",
                )?;
                check_finite_nonneg("optimizer.weight_decay", weight_decay)
            }
            OptimizerConfig::Adam {
                beta1,
                beta2,
                epsilon,
                weight_decay,
                ..
            }
            | OptimizerConfig::AdamW {
                beta1,
                beta2,
                epsilon,
                weight_decay,
                ..
            } => {
                check_unit_open("optimizer.beta1", beta1)?;
                check_unit_open("optimizer.beta2", beta2)?;
                check_positive("optimizer.epsilon", epsilon)?;
                check_finite_nonneg("optimizer.weight_decay", weight_decay)
            }
            OptimizerConfig::RmsProp {
                alpha,
                momentum,
                epsilon,
                weight_decay,
                ..
            } => {
                check_unit_open("optimizer.alpha", alpha)?;
                check_unit("optimizer.momentum", momentum)?;
                check_positive("optimizer.epsilon", epsilon)?;
                check_finite_nonneg("optimizer.weight_decay", weight_decay)
            }
        }
    }
}

/// The learning-rate schedule, stepped once per optimizer step.
///
/// Every kind can start with a linear warm-up of `warmup_steps` steps from `lr / warmup_steps`
/// up to the optimizer's `lr`; the schedule proper starts after it.
///
/// ```toml
/// [schedule]
/// kind = "cosine"
/// warmup_steps = 100
/// min_lr = 1e-6
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ScheduleConfig {
    /// The optimizer's `lr` throughout (after the warm-up).
    Constant {
        /// Linear warm-up length in steps. Default: 0.
        #[serde(default)]
        warmup_steps: usize,
    },
    /// `lr * gamma^(n / step_size)` after `n` post-warm-up steps (PyTorch's `StepLR`, in steps).
    Step {
        /// Steps between two decays.
        step_size: usize,
        /// Decay factor. Default: 0.1 (PyTorch).
        #[serde(default = "default_gamma")]
        gamma: f64,
        /// Linear warm-up length in steps. Default: 0.
        #[serde(default)]
        warmup_steps: usize,
    },
    /// Cosine annealing from `lr` to `min_lr` over the rest of the run (PyTorch's
    /// `CosineAnnealingLR` with `T_max` = the post-warm-up steps).
    Cosine {
        /// The final learning rate. Default: 0 (PyTorch).
        #[serde(default)]
        min_lr: f64,
        /// Linear warm-up length in steps. Default: 0.
        #[serde(default)]
        warmup_steps: usize,
    },
}

fn default_gamma() -> f64 {
    0.1
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig::Constant { warmup_steps: 0 }
    }
}

impl ScheduleConfig {
    /// The warm-up length in steps.
    pub fn warmup_steps(&self) -> usize {
        match self {
            ScheduleConfig::Constant { warmup_steps }
            | ScheduleConfig::Step { warmup_steps, .. }
            | ScheduleConfig::Cosine { warmup_steps, .. } => *warmup_steps,
        }
    }

    pub(crate) fn validate(&self, lr: f64) -> Result<(), ConfigError> {
        // burn's linear and cosine schedulers accept learning rates in (0, 1] only.
        let needs_unit_lr =
            self.warmup_steps() > 0 || matches!(self, ScheduleConfig::Cosine { .. });
        check(
            !needs_unit_lr || lr <= 1.0,
            "optimizer.lr",
            format!("must be at most 1 with a warm-up or a cosine schedule, got {lr}"),
        )?;
        match *self {
            ScheduleConfig::Constant { .. } => Ok(()),
            ScheduleConfig::Step {
                step_size, gamma, ..
            } => {
                check(step_size > 0, "schedule.step_size", "must be at least 1")?;
                check(
                    gamma.is_finite() && gamma > 0.0 && gamma <= 1.0,
                    "schedule.gamma",
                    format!("must be in (0, 1], got {gamma}"),
                )
            }
            ScheduleConfig::Cosine { min_lr, .. } => check(
                min_lr.is_finite() && (0.0..=lr).contains(&min_lr),
                "schedule.min_lr",
                format!("must be in [0, optimizer.lr = {lr}], got {min_lr}"),
            ),
        }
    }
}

fn check_unit(field: &str, value: f64) -> Result<(), ConfigError> {
    check(
        (0.0..=1.0).contains(&value),
        field,
        format!("must be in [0, 1], got {value}"),
    )
}

fn check_unit_open(field: &str, value: f64) -> Result<(), ConfigError> {
    check(
        (0.0..1.0).contains(&value),
        field,
        format!("must be in [0, 1), got {value}"),
    )
}

fn check_positive(field: &str, value: f64) -> Result<(), ConfigError> {
    check(
        value.is_finite() && value > 0.0,
        field,
        format!("must be a positive number, got {value}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optimizer_defaults_are_pytorch_defaults() {
        let sgd: OptimizerConfig = toml::from_str("kind = 'sgd'\nlr = 0.1").unwrap();
        assert_eq!(
            sgd,
            OptimizerConfig::Sgd {
                lr: 0.1,
                momentum: 0.0,
                dampening: 0.0,
                nesterov: false,
                weight_decay: 0.0
            }
        );
        let adamw: OptimizerConfig = toml::from_str("kind = 'adamw'\nlr = 0.1").unwrap();
        assert!(
            matches!(adamw, OptimizerConfig::AdamW { weight_decay, epsilon, .. }
            if weight_decay == 0.01 && epsilon == 1e-8)
        );
    }

    #[test]
    fn unknown_optimizer_field_is_named() {
        let err = toml::from_str::<OptimizerConfig>("kind = 'adam'\nlr = 0.1\nmomentum = 0.9")
            .unwrap_err()
            .to_string();
        assert!(err.contains("momentum"), "{err}");
    }

    #[test]
    fn nesterov_without_momentum_is_rejected() {
        let sgd = OptimizerConfig::Sgd {
            lr: 0.1,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: true,
            weight_decay: 0.0,
        };
        let err = sgd.validate().unwrap_err().to_string();
        assert!(err.starts_with("optimizer.nesterov"), "{err}");
    }

    #[test]
    fn cosine_min_lr_above_lr_is_rejected() {
        let schedule = ScheduleConfig::Cosine {
            min_lr: 0.5,
            warmup_steps: 0,
        };
        assert!(schedule.validate(0.1).is_err());
        assert!(schedule.validate(0.5).is_ok());
        let err = schedule.validate(2.0).unwrap_err().to_string();
        assert!(err.starts_with("optimizer.lr"), "{err}");
    }
}
