//! The run configuration: one serde tree read from TOML, overridden from the command line,
//! validated as a whole and written to the run folder as `config.json`.
//!
//! Every struct denies unknown fields, so a typo is an error naming the field (with its line
//! when it comes from a file) instead of a silently ignored setting.

mod data;
mod loss;
mod model;
mod optim;
mod overrides;
mod training;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use data::{BatchConfig, DataConfig, DatasetConfig, SamplerKind};
pub use loss::{LossConfig, NamedParams};
pub use model::ModelConfig;
pub use optim::{OptimizerConfig, ScheduleConfig};
pub use overrides::Override;
pub use training::{
    CheckpointConfig, EarlyStoppingConfig, EpisodesConfig, EvalConfig, MetricKind, SPREAD_KEYS,
    TrainConfig,
};

use crate::error::ConfigError;

/// Everything a training run needs to know. Defaults describe the README's main job: a small
/// convnet trained on built-in synthetic glyphs with a semi-hard triplet loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// The seed every random choice derives from. Default: 0.
    pub seed: u64,
    /// Worker threads for the numeric kernels. Default: all cores.
    pub threads: Option<usize>,
    /// The run folder (config, metrics log, checkpoints). Default: `runs/latest`.
    pub out: PathBuf,
    /// Data, image pipeline and sampling.
    pub data: DataConfig,
    /// The embedding network.
    pub model: ModelConfig,
    /// The loss and miner.
    pub loss: LossConfig,
    /// The optimizer.
    pub optimizer: OptimizerConfig,
    /// The learning-rate schedule.
    pub schedule: ScheduleConfig,
    /// Run length and logging.
    pub train: TrainConfig,
    /// Evaluation during training.
    pub eval: EvalConfig,
    /// Early stopping on `eval.monitor`. Default: none (train all epochs).
    pub early_stopping: Option<EarlyStoppingConfig>,
    /// Checkpoint cadence.
    pub checkpoint: CheckpointConfig,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            seed: 0,
            threads: None,
            out: PathBuf::from("runs/latest"),
            data: DataConfig::default(),
            model: ModelConfig::default(),
            loss: LossConfig::default(),
            optimizer: OptimizerConfig::default(),
            schedule: ScheduleConfig::default(),
            train: TrainConfig::default(),
            eval: EvalConfig::default(),
            early_stopping: None,
            checkpoint: CheckpointConfig::default(),
        }
    }
}

impl RunConfig {
    /// Reads a configuration from TOML text (defaults fill what it leaves out), applies the
    /// overrides in order and validates the result.
    ///
    /// `origin` names the text in error messages (usually the file path). A parse error or
    /// unknown field in the text carries its line; one introduced by an override names the
    /// override.
    pub fn resolve(
        toml_text: &str,
        origin: &str,
        overrides: &[Override],
    ) -> Result<RunConfig, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(toml_text).map_err(|e| parse_error(origin, toml_text, &e))?;
        if let Some(field) = table.iter().find_map(|(k, v)| overrides::non_finite(v, k)) {
            return Err(ConfigError::NonFinite {
                origin: origin.to_owned(),
                field,
            });
        }
        // Deserialising the text itself (not the table) keeps line numbers in its errors.
        let mut config: RunConfig =
            toml::from_str(toml_text).map_err(|e| parse_error(origin, toml_text, &e))?;
        if !overrides.is_empty() {
            for item in overrides {
                item.apply(&mut table, &config.to_toml())?;
                // A later override may complete what this one leaves incomplete (a new kind
                // and its required fields): only the final result must deserialise.
                if let Ok(next) = toml::Value::Table(table.clone()).try_into() {
                    config = next;
                }
            }
            config = toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    origin: overrides
                        .iter()
                        .map(Override::origin)
                        .collect::<Vec<_>>()
                        .join(" "),
                    line: None,
                    column: None,
                    message: e.message().to_owned(),
                })?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Reads a resolved configuration back from the JSON a run wrote (`config.json`, or the
    /// copy inside a checkpoint), and validates it.
    pub fn from_json(json: &str, origin: &str) -> Result<RunConfig, ConfigError> {
        let config: RunConfig = serde_json::from_str(json).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            line: Some(e.line()),
            column: Some(e.column()),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    fn to_toml(&self) -> toml::Table {
        toml::Table::try_from(self).expect("a RunConfig always serialises to TOML")
    }

    /// The fully resolved configuration as pretty JSON, defaults included.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a RunConfig always serialises")
    }

    /// Sets P so that P x K = `batch_size` (K = `data.batch.samples_per_class` stays).
    pub fn set_batch_size(&mut self, batch_size: usize) -> Result<(), ConfigError> {
        let k = self.data.batch.samples_per_class;
        check(
            k > 0 && batch_size.is_multiple_of(k) && batch_size / k >= 2,
            "data.batch.classes_per_batch",
            format!(
                "batch size {batch_size} must be a multiple of data.batch.samples_per_class = {k} \
                 with at least 2 classes"
            ),
        )?;
        self.data.batch.classes_per_batch = batch_size / k;
        Ok(())
    }

    /// Checks every field and the fields that constrain each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(threads) = self.threads {
            check_count("threads", threads, MAX_THREADS)?;
        }
        check(
            !self.out.as_os_str().is_empty(),
            "out",
            "must name the run folder",
        )?;
        self.data.validate()?;
        self.model.validate(self.data.channels())?;
        self.loss.validate()?;
        self.optimizer.validate()?;
        self.schedule.validate(self.optimizer.lr())?;
        self.train.validate()?;
        self.eval.validate()?;
        if let Some(early) = &self.early_stopping {
            early.validate()?;
            check(
                self.data.test.is_some() || self.data.dataset.has_test_split(),
                "early_stopping",
                "needs a held-out split to evaluate on (data.test, or a dataset with one)",
            )?;
        }
        self.checkpoint.validate()
    }

    /// The first field (dotted path) where two configurations would train differently, or
    /// `None`. `out` and `threads` are ignored: a run folder may move, and the thread count
    /// does not change what a step computes.
    pub fn first_difference(&self, other: &RunConfig) -> Option<String> {
        let strip = |config: &RunConfig| {
            let mut value = serde_json::to_value(config).expect("a RunConfig always serialises");
            if let Some(object) = value.as_object_mut() {
                object.remove("out");
                object.remove("threads");
            }
            value
        };
        first_difference(&strip(self), &strip(other), "")
    }
}

fn first_difference(a: &serde_json::Value, b: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value;
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .find_map(|key| match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => first_difference(x, y, &join(key)),
                    _ => Some(join(key)),
                })
        }
        _ if a == b => None,
        _ => Some(if path.is_empty() {
            "(root)".to_owned()
        } else {
            path.to_owned()
        }),
    }
}

fn parse_error(origin: &str, text: &str, error: &toml::de::Error) -> ConfigError {
    let (line, column) = match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            (Some(line), Some(column))
        }
        None => (None, None),
    };
    ConfigError::Parse {
        origin: origin.to_owned(),
        line,
        column,
        message: error.message().to_owned(),
    }
}

pub(crate) fn check(ok: bool, field: &str, reason: impl Into<String>) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            field: field.to_owned(),
            reason: reason.into(),
        })
    }
}

/// The most worker threads a setting may ask for. More threads than this only thrash, and a
/// typo (`--threads 10000`) would spend minutes starting threads.
pub const MAX_THREADS: usize = 1024;

/// The most images a training or evaluation batch may hold (bounds the arithmetic of batch
/// shapes; a real batch is far smaller).
pub const MAX_BATCH: usize = 1 << 16;

/// The most epochs a run may have.
pub const MAX_EPOCHS: usize = 1_000_000;

/// Checks that a count is in `1..=max`.
pub(crate) fn check_count(field: &str, value: usize, max: usize) -> Result<(), ConfigError> {
    check(
        (1..=max).contains(&value),
        field,
        format!("must be in 1..={max}, got {value}"),
    )
}

pub(crate) fn check_finite_nonneg(field: &str, value: f64) -> Result<(), ConfigError> {
    check(
        value.is_finite() && value >= 0.0,
        field,
        format!("must be a non-negative number, got {value}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_text_gives_the_valid_defaults() {
        let config = RunConfig::resolve("", "run.toml", &[]).unwrap();
        assert_eq!(config, RunConfig::default());
    }

    #[test]
    fn unknown_field_error_names_field_and_line() {
        let text = "seed = 1\n\n[train]\nepochs = 2\nepoch = 3\n";
        let err = RunConfig::resolve(text, "run.toml", &[]).unwrap_err();
        let ConfigError::Parse {
            line,
            message,
            origin,
            ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(origin, "run.toml");
        assert_eq!(*line, Some(5), "{err}");
        assert!(message.contains("epoch"), "{err}");
        assert!(err.to_string().starts_with("run.toml:5:"), "{err}");
    }

    #[test]
    fn overrides_apply_in_order_and_bad_ones_are_named() {
        let overrides = [
            Override::parse("train.epochs=3").unwrap(),
            Override::parse("optimizer.kind=sgd").unwrap(),
            Override::parse("optimizer.momentum=0.9").unwrap(),
            Override::parse("optimizer.lr=0.02").unwrap(),
        ];
        let config = RunConfig::resolve(
            "[optimizer]\nkind='adam'\nlr=0.01\n",
            "run.toml",
            &overrides,
        )
        .unwrap();
        assert_eq!(config.train.epochs, 3);
        assert!(
            matches!(config.optimizer, OptimizerConfig::Sgd { lr, momentum, .. }
            if lr == 0.02 && momentum == 0.9)
        );

        let bad = [Override::parse("train.epoch=3").unwrap()];
        let err = RunConfig::resolve("", "run.toml", &bad)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--set train.epoch=3:"), "{err}");
        assert!(err.contains("unknown field `epoch`"), "{err}");
    }

    #[test]
    fn non_finite_numbers_in_a_file_are_named() {
        let err = RunConfig::resolve("[loss.params]\nmargin = nan\n", "run.toml", &[])
            .unwrap_err()
            .to_string();
        assert_eq!(err, "run.toml: loss.params.margin must be a finite number");
        let err = RunConfig::resolve("[optimizer]\nlr = -inf\n", "run.toml", &[])
            .unwrap_err()
            .to_string();
        assert_eq!(err, "run.toml: optimizer.lr must be a finite number");
    }

    #[test]
    fn overrides_of_defaults_keep_the_other_defaults() {
        let overrides = [
            Override::new("optimizer.lr", 0.01),
            Override::new("data.dataset.test_classes", 10),
            Override::new("schedule.kind", "step"),
            Override::new("schedule.step_size", 100),
        ];
        let config = RunConfig::resolve("", "run.toml", &overrides).unwrap();
        let defaults = RunConfig::default();
        assert!(
            matches!(config.optimizer, OptimizerConfig::Adam { lr, beta2, .. }
            if lr == 0.01 && beta2 == 0.999)
        );
        let DatasetConfig::Synthetic(glyphs) = &config.data.dataset else {
            panic!("{:?}", config.data.dataset)
        };
        assert_eq!((glyphs.test_classes, glyphs.samples_per_class), (10, 20));
        assert_eq!(
            config.schedule,
            ScheduleConfig::Step {
                step_size: 100,
                gamma: 0.1,
                warmup_steps: 0
            }
        );
        assert_eq!(config.data.pipeline, defaults.data.pipeline);
    }

    #[test]
    fn invalid_values_are_named_after_overrides() {
        let bad = [Override::new("optimizer.lr", -1.0)];
        let err = RunConfig::resolve("", "run.toml", &bad).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { field, .. } if field == "optimizer.lr"),
            "{err}"
        );
    }

    #[test]
    fn json_round_trip_is_exact() {
        let mut config = RunConfig {
            seed: 42,
            early_stopping: Some(EarlyStoppingConfig::default()),
            ..RunConfig::default()
        };
        config
            .loss
            .params
            .insert("margin".into(), toml::Value::Float(0.1));
        let back = RunConfig::from_json(&config.to_json(), "config.json").unwrap();
        assert_eq!(back, config);
        assert_eq!(back.first_difference(&config), None);
    }

    #[test]
    fn first_difference_names_the_field_and_ignores_out() {
        let a = RunConfig::default();
        let mut b = a.clone();
        b.out = PathBuf::from("elsewhere");
        b.threads = Some(3);
        assert_eq!(a.first_difference(&b), None);
        b.optimizer = OptimizerConfig::Adam {
            lr: 0.5,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            weight_decay: 0.0,
        };
        assert_eq!(a.first_difference(&b).as_deref(), Some("optimizer.lr"));
    }

    #[test]
    fn shipped_configs_resolve() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                let origin = path.display().to_string();
                if let Err(err) = RunConfig::resolve(&text, &origin, &[]) {
                    panic!("{err}");
                }
                names.push(path.file_stem().unwrap().to_string_lossy().into_owned());
            }
        }
        names.sort();
        let expected = [
            "angular",
            "contrastive",
            "hard",
            "npairs",
            "omniglot",
            "semihard",
        ];
        assert!(
            expected.iter().all(|n| names.contains(&n.to_string())),
            "{names:?}"
        );
    }

    /// The dotted path of every number in `table`.
    fn number_keys(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        for (key, value) in table {
            let path = format!("{prefix}{key}");
            match value {
                toml::Value::Integer(_) | toml::Value::Float(_) => out.push(path),
                toml::Value::Table(inner) => number_keys(inner, &format!("{path}."), out),
                _ => {}
            }
        }
    }

    #[test]
    fn extreme_numbers_in_any_field_are_refused_or_bounded() {
        let mut keys = Vec::new();
        number_keys(&RunConfig::default().to_toml(), "", &mut keys);
        keys.extend(["train.max_steps", "threads", "checkpoint.every_steps"].map(String::from));
        assert!(keys.len() > 20, "{keys:?}");
        let extremes = [
            toml::Value::Integer(0),
            toml::Value::Integer(-1),
            toml::Value::Integer(i64::MAX),
            toml::Value::Float(1e308),
            toml::Value::Float(-1e308),
        ];
        for key in &keys {
            for value in &extremes {
                let item = Override::new(key, value.clone());
                if let Ok(config) = RunConfig::resolve("", "run.toml", &[item]) {
                    // What validates is small enough to run: batch shapes and counts bounded.
                    let batch = &config.data.batch;
                    assert!(batch.batch_size() <= MAX_BATCH && batch.eval_batch_size <= MAX_BATCH);
                    assert!(config.train.epochs <= MAX_EPOCHS, "{key}={value}");
                    assert!(config.threads.is_none_or(|t| t <= MAX_THREADS));
                    if let DatasetConfig::Synthetic(glyphs) = &config.data.dataset {
                        let images = glyphs.train_classes + glyphs.test_classes;
                        assert!(images.saturating_mul(glyphs.samples_per_class) <= 10_000_000);
                    }
                }
            }
        }
    }

    #[test]
    fn batch_size_sets_classes_per_batch() {
        let mut config = RunConfig::default();
        config.set_batch_size(60).unwrap();
        assert_eq!(config.data.batch.classes_per_batch, 10);
        assert!(config.set_batch_size(61).is_err());
    }
}
