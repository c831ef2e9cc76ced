//! The crate's error types: [`ConfigError`] for a run configuration that cannot be used, and
//! [`Error`] for everything the trainer and the checkpoint code can meet at run time.

use std::path::PathBuf;

/// An error from a data source, a loss or an evaluator behind one of the trainer's traits.
///
/// Boxed because those parts live in other crates with their own error enums; the trainer adds
/// where it happened (epoch, batch) and keeps the cause as `source()`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A run configuration that cannot be parsed, overridden or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The TOML (or JSON) text does not parse, has an unknown field or a value of the wrong
    /// type. `message` is the parser's own, which names the field.
    #[error("{origin}{}: {message}", location(*line, *column))]
    Parse {
        /// Where the text came from: a file path, or `--set overrides`.
        origin: String,
        /// 1-based line of the offending text, when the parser knows it.
        line: Option<usize>,
        /// 1-based column of the offending text, when the parser knows it.
        column: Option<usize>,
        /// The parser's message (for an unknown field it names the field and the valid ones).
        message: String,
    },
    /// A `--set` argument is not of the form `key.path=value`.
    #[error("--set {text:?}: expected KEY.PATH=VALUE, e.g. optimizer.lr=0.001")]
    MalformedOverride {
        /// The argument as given.
        text: String,
    },
    /// A number is NaN or infinite (TOML reads `nan` and `inf`; no setting means them).
    #[error("{origin}: {field} must be a finite number")]
    NonFinite {
        /// Where the value came from: a file, `--set key=value` or a flag.
        origin: String,
        /// The dotted path of the field.
        field: String,
    },
    /// Two arguments set the same field (or one sets a table holding the other's field).
    #[error("{first} and {second} both set {field}: give one of them")]
    ConflictingSettings {
        /// The first argument, as written.
        first: String,
        /// The second argument, as written.
        second: String,
        /// The dotted path of the field.
        field: String,
    },
    /// A `--set` path goes through a value that is not a table (`train.epochs.x=1`).
    #[error("--set {key}: `{prefix}` is a value, not a table")]
    OverrideThroughValue {
        /// The full key of the override.
        key: String,
        /// The part of the key that names a non-table value.
        prefix: String,
    },
    /// A field holds a value the trainer cannot use.
    #[error("{field}: {reason}")]
    Invalid {
        /// The dotted path of the field, as in the TOML file (`optimizer.lr`).
        field: String,
        /// What is wrong and what would be accepted.
        reason: String,
    },
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(":{line}:{column}"),
        (Some(line), None) => format!(":{line}"),
        _ => String::new(),
    }
}

/// Anything that stops a training run, a checkpoint read or a checkpoint write.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The run configuration is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A dataset could not be opened or its sampler built (the message names the file, line
    /// or class).
    #[error("data")]
    Dataset(#[from] dml_data::Error),
    /// The network could not be built or its weights loaded.
    #[error("model")]
    Model(#[from] dml_models::Error),
    /// The loss could not be built (unknown name or parameter: the message lists the valid
    /// ones).
    #[error("loss")]
    LossSetup(#[from] dml_losses::Error),
    /// Embeddings could not be evaluated.
    #[error("metrics")]
    Metrics(#[from] dml_eval::Error),
    /// A file or folder could not be read, written or renamed.
    #[error("{}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint file is not a checkpoint this version of dml wrote.
    #[error("{}: not a dml checkpoint: {reason}", path.display())]
    CheckpointFormat {
        /// The checkpoint file.
        path: PathBuf,
        /// What is missing or malformed.
        reason: String,
    },
    /// burn could not encode or apply a record (model, optimizer or schedule state).
    #[error("{}: {what}", path.display())]
    Record {
        /// The checkpoint file.
        path: PathBuf,
        /// Which record: `model`, `loss`, `optimizer` or `schedule`.
        what: &'static str,
        /// burn's error.
        #[source]
        source: burn::store::RecordError,
    },
    /// `resume` was asked for but the run folder holds no checkpoint.
    #[error("{}: no checkpoint to resume from", path.display())]
    NoCheckpoint {
        /// The checkpoint file that was looked for.
        path: PathBuf,
    },
    /// A new run was asked for in a folder that already holds a run.
    #[error("{} already holds a run", dir.display())]
    RunExists {
        /// The run folder.
        dir: PathBuf,
    },
    /// The run folder holds files dml did not write; dml neither mixes a run into it nor
    /// removes it.
    #[error(
        "{} is not empty and is not a dml run folder ({entry}): choose a new or empty folder",
        dir.display()
    )]
    ForeignFolder {
        /// The folder.
        dir: PathBuf,
        /// An entry dml did not write (or what is missing for a run folder).
        entry: String,
    },
    /// The data of a resumed run is not the data it started with.
    #[error("{}: the data changed since the run started: {difference}", dir.display())]
    DataChanged {
        /// The run folder.
        dir: PathBuf,
        /// What changed.
        difference: String,
    },
    /// The checkpoint was written by a run with a different configuration.
    #[error(
        "{}: the checkpoint was written with a different configuration (first difference: {field}); \
         resume with the run's own config.json",
        path.display()
    )]
    ResumeMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// The first field that differs.
        field: String,
    },
    /// The training data source failed.
    #[error("epoch {epoch}, batch {batch}: data")]
    Data {
        /// 0-based epoch.
        epoch: usize,
        /// 0-based batch within the epoch.
        batch: usize,
        /// The data source's error (it names the file).
        #[source]
        source: BoxError,
    },
    /// A batch whose arrays do not agree with its declared shape.
    #[error("epoch {epoch}, batch {batch}: malformed batch: {reason}")]
    MalformedBatch {
        /// 0-based epoch.
        epoch: usize,
        /// 0-based batch within the epoch.
        batch: usize,
        /// Which lengths disagree.
        reason: String,
    },
    /// An epoch with no batches: the data is smaller than one batch.
    #[error("epoch {epoch}: the training data yields no batch (fewer samples than one batch?)")]
    EmptyEpoch {
        /// 0-based epoch.
        epoch: usize,
    },
    /// The data source ended an epoch before the number of batches it announced.
    #[error("epoch {epoch}: the data source gave {got} batches, but announced {expected}")]
    ShortEpoch {
        /// 0-based epoch.
        epoch: usize,
        /// Batches received.
        got: usize,
        /// Batches announced by `batches_in_epoch`.
        expected: usize,
    },
    /// The loss failed (for example an invalid batch for its miner).
    #[error("epoch {epoch}, batch {batch}: loss")]
    Loss {
        /// 0-based epoch.
        epoch: usize,
        /// 0-based batch within the epoch.
        batch: usize,
        /// The loss's error.
        #[source]
        source: BoxError,
    },
    /// The loss became NaN or infinite: the run diverged (learning rate too high?).
    #[error(
        "epoch {epoch}, batch {batch} (step {step}): the loss is {value}; lower the learning rate"
    )]
    NonFiniteLoss {
        /// 0-based epoch.
        epoch: usize,
        /// 0-based batch within the epoch.
        batch: usize,
        /// 1-based optimizer step.
        step: u64,
        /// The value (NaN or ±inf).
        value: f64,
    },
    /// Embedding or evaluating the held-out data failed.
    #[error("evaluation after {epochs} epochs")]
    Eval {
        /// Epochs completed when the evaluation ran.
        epochs: usize,
        /// The evaluator's or the data source's error.
        #[source]
        source: BoxError,
    },
    /// Embedding a split failed (a data or device error).
    #[error("embedding")]
    Embed {
        /// The data source's or the model's error.
        #[source]
        source: BoxError,
    },
    /// The monitored metric is not among those the evaluator returned.
    #[error("eval.monitor = {metric:?} is not a metric the evaluation computes ({available})")]
    MissingMetric {
        /// The monitored metric.
        metric: String,
        /// The metrics the evaluator did return, comma separated.
        available: String,
    },
    /// A tensor could not be read back from the device.
    #[error("reading {what} from the device: {reason}")]
    TensorRead {
        /// What was being read.
        what: &'static str,
        /// burn's message.
        reason: String,
    },
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
