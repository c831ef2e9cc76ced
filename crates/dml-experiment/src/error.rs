//! The crate's one error type: every variant names the file, line, entry or run it is about.

use std::path::PathBuf;

use crate::grid::Axis;
use crate::overrides::OverrideSource;

/// A boxed error from a caller-supplied check (see [`crate::RunCheck`]).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong while reading a plan, storing results or writing a report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read, written or created.
    #[error("{}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The plan file is not valid TOML or does not match the plan format (the message names
    /// the field and line).
    #[error("plan {}", path.display())]
    PlanSyntax {
        /// The plan file (`<inline>` for a plan given as a string).
        path: PathBuf,
        /// The parser's error, with line and column.
        source: toml::de::Error,
    },
    /// The base run config referenced by a plan is not valid TOML.
    #[error("base config {}", path.display())]
    BaseConfigSyntax {
        /// The base config file.
        path: PathBuf,
        /// The parser's error, with line and column.
        source: toml::de::Error,
    },
    /// The plan's `base` is neither a path nor a table.
    #[error(
        "plan field `base` must be a path to a TOML run config or an inline table, found a {found}"
    )]
    BaseKind {
        /// The TOML type found instead.
        found: &'static str,
    },
    /// The plan's name is empty or has characters that do not belong in an identifier.
    #[error("plan name `{name}` must be non-empty and use only letters, digits, `-`, `_` and `.`")]
    PlanName {
        /// The offending name.
        name: String,
    },
    /// An entry name is empty or has characters that do not belong in a run id or file name.
    #[error(
        "{axis} entry `{name}`: names must be non-empty and use only letters, digits, `-`, `_` and `.`"
    )]
    EntryName {
        /// The axis the entry belongs to.
        axis: Axis,
        /// The offending name.
        name: String,
    },
    /// The grid references an entry that the plan does not define.
    #[error("grid.{} names {axis} entry `{name}`, which the plan does not define (defined: {known})", axis.grid_field())]
    UnknownEntry {
        /// The axis.
        axis: Axis,
        /// The name referenced.
        name: String,
        /// The names the plan does define, comma-separated.
        known: String,
    },
    /// The same value appears twice on one grid axis.
    #[error("grid.{} lists `{value}` twice", axis.grid_field())]
    DuplicateEntry {
        /// The axis.
        axis: Axis,
        /// The repeated value, as written.
        value: String,
    },
    /// `grid = []`: the plan crosses nothing.
    #[error("the plan has no grid: add a [grid] table or [[grid]] tables")]
    NoGrid,
    /// A grid axis has no values, so the grid would be empty.
    #[error("grid.{} is empty: every axis needs at least one value", axis.grid_field())]
    EmptyAxis {
        /// The empty axis.
        axis: Axis,
    },
    /// A learning rate that is not a positive finite number.
    #[error("grid.learning_rates: {value} is not a positive finite learning rate")]
    LearningRate {
        /// The offending value.
        value: f64,
    },
    /// A batch shape that is not `PxK` with positive integers.
    #[error(
        "grid.batches: `{value}` is not a batch shape `PxK` (P classes x K samples, both >= 1)"
    )]
    BatchShape {
        /// The offending value.
        value: String,
    },
    /// A config key path with an empty segment (`a..b`, `.a`, or an empty key).
    #[error("{origin}: `{key}` is not a key path (segments must be non-empty)")]
    KeyPath {
        /// The key as written.
        key: String,
        /// Where it was written.
        origin: OverrideSource,
    },
    /// Two parts of the plan set the same config key (or one sets a key inside the other's).
    #[error("config key `{key}` is set by both {first} and {second}")]
    ConflictingOverride {
        /// The key (the longer of the two paths).
        key: String,
        /// The first setter.
        first: OverrideSource,
        /// The second setter.
        second: OverrideSource,
    },
    /// An override's key path runs through a value of the base config that is not a table.
    #[error("{origin}: cannot set `{key}`: `{blocked_at}` in the base config is not a table")]
    OverrideShape {
        /// The key being set.
        key: String,
        /// The prefix that holds a non-table value.
        blocked_at: String,
        /// Where the override came from.
        origin: OverrideSource,
    },
    /// The caller's check (for example "is this a valid trainer config") rejected a run.
    #[error("run `{run_id}` (dataset entry `{dataset}`, loss entry `{loss}`) is not a valid run")]
    RunRejected {
        /// The run's id.
        run_id: String,
        /// Its dataset entry.
        dataset: String,
        /// Its loss entry.
        loss: String,
        /// Why the check rejected it.
        source: BoxError,
    },
    /// The trainer failed on a run; runs finished before it stay recorded.
    #[error("run `{run_id}` failed")]
    RunFailed {
        /// The run's id.
        run_id: String,
        /// The trainer's error.
        source: BoxError,
    },
    /// The results folder holds runs of a different plan.
    #[error("{}: holds runs of plan `{found}`, not of plan `{expected}`; use another folder", path.display())]
    PlanMismatch {
        /// The results file.
        path: PathBuf,
        /// The plan name found there.
        found: String,
        /// The plan being run.
        expected: String,
    },
    /// A results line that is not a valid run record (and not a truncated last line).
    #[error("{}:{line}: not a run record", path.display())]
    MalformedRecord {
        /// The results file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// Two records with the same run id.
    #[error("{}:{line}: run `{run_id}` is already recorded on line {first_line}", path.display())]
    DuplicateRun {
        /// The results file.
        path: PathBuf,
        /// The run id.
        run_id: String,
        /// The line that recorded it first.
        first_line: usize,
        /// The line that repeats it (the next free line when appending).
        line: usize,
    },
    /// A record whose dataset or loss name cannot be used in file names.
    #[error("{}:{line}: {axis} name `{name}` must use only letters, digits, `-`, `_` and `.`", path.display())]
    RecordName {
        /// The results file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The axis.
        axis: Axis,
        /// The offending name.
        name: String,
    },
    /// A saved embedding or label file could not be parsed.
    #[error("run `{run_id}`: {}: {reason}", path.display())]
    EmbeddingFile {
        /// The run whose record references the file.
        run_id: String,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// t-SNE parameters that cannot work (for example too few points for the perplexity).
    #[error("t-SNE: {reason}")]
    Tsne {
        /// What is wrong.
        reason: String,
    },
    /// plotters failed to draw a figure.
    #[error("figure {}: {message}", path.display())]
    Plot {
        /// The figure being drawn.
        path: PathBuf,
        /// plotters' message (its error type is generic over the backend, so it is kept as text).
        message: String,
    },
    /// A PNG could not be encoded.
    #[error("figure {}", path.display())]
    PngEncode {
        /// The figure being written.
        path: PathBuf,
        /// The encoder's error.
        source: image::ImageError,
    },
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
