//! Builds burn's learning-rate scheduler from the `[schedule]` section.
//!
//! The scheduler is stepped once per optimizer step and its record (step counters) is saved in
//! every checkpoint, so a resumed run continues the schedule where it stopped.

use burn::lr_scheduler::LrSchedulerConfig;
use burn::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::lr_scheduler::linear::LinearLrSchedulerConfig;
use burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::lr_scheduler::sequential::SequentialLrSchedulerConfig;
use burn::lr_scheduler::step::StepLrSchedulerConfig;

use crate::config::ScheduleConfig;
use crate::error::ConfigError;

/// The scheduler for a run of `total_steps` optimizer steps with peak learning rate `lr`.
///
/// Warm-up: step `k` of `warmup_steps` (1-based) uses `lr * k / warmup_steps`; the schedule
/// proper starts at `lr` on the step after.
pub fn build_schedule(
    config: &ScheduleConfig,
    lr: f64,
    total_steps: u64,
) -> Result<ModuleLrScheduler, ConfigError> {
    let warmup = config.warmup_steps();
    let after_warmup = (total_steps as usize).saturating_sub(warmup).max(1);
    let main = match *config {
        ScheduleConfig::Constant { .. } => LrSchedulerConfig::Constant(lr),
        ScheduleConfig::Step {
            step_size, gamma, ..
        } => LrSchedulerConfig::Step(StepLrSchedulerConfig::new(lr, step_size).with_gamma(gamma)),
        ScheduleConfig::Cosine { min_lr, .. } => LrSchedulerConfig::Cosine(
            CosineAnnealingLrSchedulerConfig::new(lr, after_warmup).with_min_lr(min_lr),
        ),
    };
    let schedule = match warmup {
        0 => main,
        1 => LrSchedulerConfig::Sequential(SequentialLrSchedulerConfig::new(
            vec![LrSchedulerConfig::Constant(lr), main],
            vec![1],
        )),
        // burn's linear scheduler gives `initial + (k - 1) * (final - initial) / num_iters` at
        // step k; with these ends that is lr * k / warmup.
        _ => LrSchedulerConfig::Sequential(SequentialLrSchedulerConfig::new(
            vec![
                LrSchedulerConfig::Linear(LinearLrSchedulerConfig::new(
                    lr / warmup as f64,
                    lr,
                    warmup - 1,
                )),
                main,
            ],
            vec![warmup],
        )),
    };
    burn::lr_scheduler::module_lr_scheduler::ModuleLrSchedulerConfig::new(schedule)
        .init()
        .map_err(|reason| ConfigError::Invalid {
            field: "schedule".to_owned(),
            reason,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(config: &ScheduleConfig, lr: f64, total: u64) -> Vec<f64> {
        let mut schedule = build_schedule(config, lr, total).unwrap();
        (0..total).map(|_| schedule.step().base()).collect()
    }

    fn assert_close(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn warmup_rises_linearly_to_lr() {
        let config = ScheduleConfig::Constant { warmup_steps: 4 };
        assert_close(&rates(&config, 0.4, 6), &[0.1, 0.2, 0.3, 0.4, 0.4, 0.4]);
        let one = ScheduleConfig::Constant { warmup_steps: 1 };
        assert_close(&rates(&one, 0.4, 2), &[0.4, 0.4]);
    }

    #[test]
    fn step_decays_every_step_size_steps_after_warmup() {
        let config = ScheduleConfig::Step {
            step_size: 2,
            gamma: 0.5,
            warmup_steps: 2,
        };
        assert_close(
            &rates(&config, 0.8, 7),
            &[0.4, 0.8, 0.8, 0.8, 0.4, 0.4, 0.2],
        );
    }

    #[test]
    fn cosine_follows_pytorch_cosine_annealing() {
        let config = ScheduleConfig::Cosine {
            min_lr: 0.0,
            warmup_steps: 0,
        };
        let got = rates(&config, 1.0, 5);
        // PyTorch's CosineAnnealingLR with T_max = 5: the cosine of k pi / 5, k = 0..4.
        let want: Vec<f64> = (0..5)
            .map(|k| 0.5 * (1.0 + (k as f64 * std::f64::consts::PI / 5.0).cos()))
            .collect();
        assert_close(&got, &want);
    }

    #[test]
    fn record_restores_the_position() {
        let config = ScheduleConfig::Cosine {
            min_lr: 0.01,
            warmup_steps: 3,
        };
        let mut first = build_schedule(&config, 0.5, 20).unwrap();
        for _ in 0..7 {
            first.step();
        }
        let record = first.to_record();
        let mut second = build_schedule(&config, 0.5, 20)
            .unwrap()
            .load_record(record);
        for _ in 0..10 {
            assert_eq!(first.step().base(), second.step().base());
        }
    }
}
