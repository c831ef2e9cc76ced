//! The crate's one error type.

/// Everything that can go wrong in dml-losses: bad batches, bad configurations, bad case files.
///
/// Every variant names what was wrong (field, row, value) so the CLI can print one clear line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The batch has no rows.
    #[error("the batch is empty (0 embeddings)")]
    EmptyBatch,
    /// The embeddings have zero columns.
    #[error("embeddings have dimension 0")]
    ZeroDimension,
    /// Two inputs that must have matching sizes do not.
    #[error("{what}: expected {expected}, found {found}")]
    LengthMismatch {
        /// Which size disagrees (e.g. "labels for 32 embeddings").
        what: &'static str,
        /// The size that was required.
        expected: usize,
        /// The size that was given.
        found: usize,
    },
    /// An input holds NaN or an infinity.
    #[error("{what} row {row} column {col} is not finite ({value})")]
    NonFinite {
        /// Which input ("embeddings", "proxies").
        what: &'static str,
        /// Row of the offending value.
        row: usize,
        /// Column of the offending value.
        col: usize,
        /// The value itself.
        value: f64,
    },
    /// A loss or miner parameter is out of its meaningful range.
    #[error("{owner}: parameter `{param}` = {value} is invalid: {reason}")]
    InvalidParameter {
        /// The loss, miner, reducer or distance that owns the parameter.
        owner: &'static str,
        /// The parameter's name.
        param: &'static str,
        /// The rejected value.
        value: f64,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A loss or miner was given a distance it is not defined for.
    #[error("{owner} requires {required}, got {given}")]
    UnsupportedDistance {
        /// The loss or miner.
        owner: &'static str,
        /// What it needs.
        required: &'static str,
        /// What it got.
        given: String,
    },
    /// A reducer cannot be used with this loss.
    #[error("{loss} cannot be reduced with {reducer}: {reason}")]
    UnsupportedReducer {
        /// The loss.
        loss: &'static str,
        /// The reducer.
        reducer: &'static str,
        /// Why not.
        reason: &'static str,
    },
    /// A tuple refers to a row the batch does not have.
    #[error("{what} index {index} is out of range for a batch of {len}")]
    IndexOutOfRange {
        /// Which index list ("anchor", "positive", ...).
        what: &'static str,
        /// The index.
        index: usize,
        /// Number of rows in the batch.
        len: usize,
    },
    /// A miner would produce more tuples than its budget allows.
    #[error(
        "{miner} would produce {needed} tuples, more than its budget of {budget}; raise \
         max_tuples or use a fused loss path that does not materialise tuples"
    )]
    TupleBudgetExceeded {
        /// The miner.
        miner: &'static str,
        /// How many tuples the batch needs.
        needed: u64,
        /// The configured budget.
        budget: u64,
    },
    /// A label cannot be used as a class index (proxy losses need labels in `0..num_classes`).
    #[error("label {label} at row {row} is not a class index in 0..{num_classes}")]
    LabelOutOfRange {
        /// The label.
        label: i64,
        /// Its row.
        row: usize,
        /// Number of classes (proxies).
        num_classes: usize,
    },
    /// The loss needs learnable parameters (proxies, beta) of a given shape.
    #[error("{loss} needs parameters of shape {expected}, got {found}")]
    ParameterShape {
        /// The loss.
        loss: &'static str,
        /// Expected shape, in words.
        expected: String,
        /// Given shape, in words.
        found: String,
    },
    /// The burn tensor holds a dtype the kernels do not run in.
    #[error("embeddings have dtype {dtype}; dml losses run in f32 or f64")]
    UnsupportedDtype {
        /// The dtype, as burn prints it.
        dtype: String,
    },
    /// A burn tensor could not be read back to the host.
    #[error("cannot read a burn tensor: {0}")]
    TensorRead(String),
    /// A loss description (a PML case, or a run config's `loss` section) is malformed or asks
    /// for something dml does not know. The message names the loss, miner or parameter; the
    /// caller adds where the description came from.
    #[error("{0}")]
    Case(String),
    /// Context: which case of a case file failed.
    #[error("case `{case}`")]
    InCase {
        /// The case name.
        case: String,
        /// What went wrong.
        source: Box<Error>,
    },
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Checks that a parameter is finite, returning [`Error::InvalidParameter`] otherwise.
pub(crate) fn finite(owner: &'static str, param: &'static str, value: f64) -> Result<f64> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(Error::InvalidParameter {
            owner,
            param,
            value,
            reason: "must be finite",
        })
    }
}

/// Checks that a parameter is finite and strictly positive.
pub(crate) fn positive(owner: &'static str, param: &'static str, value: f64) -> Result<f64> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(Error::InvalidParameter {
            owner,
            param,
            value,
            reason: "must be finite and > 0",
        })
    }
}

/// Checks that a parameter is finite and not negative.
pub(crate) fn non_negative(owner: &'static str, param: &'static str, value: f64) -> Result<f64> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(Error::InvalidParameter {
            owner,
            param,
            value,
            reason: "must be finite and >= 0",
        })
    }
}
