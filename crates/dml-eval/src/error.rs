//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in dml-eval: bad embeddings, bad labels, impossible requests
/// and unreadable files.
///
/// Every variant names what was wrong (row, line, field, value) so the CLI can print one clear
/// line; file errors wrap the cause in [`Error::WithPath`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A set of embeddings (or labels) has no rows.
    #[error("the {what} set is empty")]
    Empty {
        /// Which set ("query", "reference", "points").
        what: &'static str,
    },
    /// Embeddings with zero columns.
    #[error("embeddings have dimension 0")]
    ZeroDimension,
    /// A flat buffer whose length is not a whole number of rows.
    #[error("{len} values do not split into rows of {dim}")]
    RaggedData {
        /// Number of values.
        len: usize,
        /// Row length asked for.
        dim: usize,
    },
    /// An embedding holds NaN or an infinity.
    #[error("row {row} column {column} is not finite ({value})")]
    NonFinite {
        /// Row (0-based) of the offending value.
        row: usize,
        /// Column (0-based) of the offending value.
        column: usize,
        /// The value itself.
        value: f64,
    },
    /// An embedding so large that its squared norm does not fit in `f32` arithmetic.
    #[error("row {row} has squared norm {squared_norm:e}, too large for f32 distances")]
    NormOverflow {
        /// Row (0-based).
        row: usize,
        /// Its squared L2 norm, computed in f64.
        squared_norm: f64,
    },
    /// Two inputs that must have matching sizes do not.
    #[error("{what}: expected {expected}, found {found}")]
    LengthMismatch {
        /// Which sizes disagree (e.g. "labels for the query embeddings").
        what: &'static str,
        /// The size that was required.
        expected: usize,
        /// The size that was given.
        found: usize,
    },
    /// A requested neighbour count that the reference set cannot supply.
    #[error("k = {k} but only {available} reference items can be neighbours of each query")]
    KTooLarge {
        /// The k asked for.
        k: usize,
        /// Reference items available to every query (one fewer in leave-one-out mode).
        available: usize,
    },
    /// A parameter outside its meaningful range.
    #[error("`{param}` = {value} is invalid: {reason}")]
    InvalidParameter {
        /// The parameter's name.
        param: &'static str,
        /// The rejected value.
        value: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// Few-shot episodes cannot be drawn from these labels.
    #[error(
        "cannot draw {ways}-way {shots}-shot episodes with {queries} queries per class: \
         no group has {ways} classes with {needed} items each"
    )]
    NotEnoughClasses {
        /// Classes per episode.
        ways: usize,
        /// Support items per class.
        shots: usize,
        /// Query items per class.
        queries: usize,
        /// Items a class needs (`shots + queries`).
        needed: usize,
    },
    /// A metric name that dml does not know.
    #[error("unknown metric `{name}`; valid metrics: {valid}")]
    UnknownMetric {
        /// What was asked for.
        name: String,
        /// The valid names, comma separated.
        valid: String,
    },
    /// A file could not be opened or read (the cause is the `source`).
    #[error("cannot read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A `.npy` file that is not a valid numpy array of a supported type.
    #[error("{}: {reason}", path.display())]
    Npy {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A `.safetensors` file that cannot be parsed or lacks the requested tensor.
    #[error("{}: {reason}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A line of a text label file that holds no label.
    #[error("{} line {line}: {reason}", path.display())]
    LabelLine {
        /// The file.
        path: PathBuf,
        /// Line number (1-based).
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A text file that is not UTF-8 (UTF-16, or bytes that are not UTF-8 on some line).
    #[error("{}", path.display())]
    Text {
        /// The file.
        path: PathBuf,
        /// What is wrong with its encoding, and on which line.
        source: dml_core::text::TextError,
    },
    /// An error about the contents of a file (a non-finite row, a ragged shape); the message
    /// is the file, the cause is the `source` (print the chain, as `anyhow`'s `{:#}` does).
    #[error("{}", path.display())]
    WithPath {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: Box<Error>,
    },
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Attaches the file this error came from.
    pub fn with_path(self, path: impl Into<PathBuf>) -> Self {
        Error::WithPath {
            path: path.into(),
            source: Box::new(self),
        }
    }
}
