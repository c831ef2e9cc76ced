//! The crate's error types: one [`Error`] for everything that can fail, [`ConfigError`] for a
//! model configuration that cannot be built.

use std::path::PathBuf;

/// Everything that can go wrong building a model or moving its weights to and from files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The model configuration is invalid (the cause says how).
    #[error("invalid model config")]
    Config(#[from] ConfigError),
    /// Images of this shape do not fit the network.
    #[error("images of {channels}x{height}x{width} do not fit the network: {reason}")]
    ImageShape {
        /// Channels of the images.
        channels: usize,
        /// Height of the images, in pixels.
        height: usize,
        /// Width of the images, in pixels.
        width: usize,
        /// What is wrong with them.
        reason: String,
    },
    /// A weight file's extension names no format this crate reads or writes.
    #[error("{path}: unknown weight file format (expected .safetensors, .pt or .pth)")]
    UnknownWeightFormat {
        /// The weight file.
        path: PathBuf,
    },
    /// A weight file could not be read or parsed (the cause says why).
    #[error("{path}: cannot read weights")]
    ReadWeights {
        /// The weight file.
        path: PathBuf,
        /// What the reader reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A weight file could not be written (the cause says why).
    #[error("{path}: cannot write weights")]
    WriteWeights {
        /// The weight file.
        path: PathBuf,
        /// What the writer reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A weight the backbone needs is not in the file.
    #[error("{path}: missing key `{key}`")]
    MissingKey {
        /// The weight file.
        path: PathBuf,
        /// The missing key, in the file's (torchvision) naming.
        key: String,
    },
    /// The file holds a weight the backbone has no place for.
    #[error("{path}: unexpected key `{key}` (the {backbone} backbone has no such weight)")]
    UnexpectedKey {
        /// The weight file.
        path: PathBuf,
        /// The unexpected key, in the file's naming.
        key: String,
        /// The backbone's name, as in the config.
        backbone: String,
    },
    /// A weight in the file has a different shape than the backbone's.
    #[error("{path}: key `{key}` has shape {found:?}, the backbone expects {expected:?}")]
    ShapeMismatch {
        /// The weight file.
        path: PathBuf,
        /// The key, in the file's naming.
        key: String,
        /// The backbone's shape for it.
        expected: Vec<usize>,
        /// The file's shape for it.
        found: Vec<usize>,
    },
    /// A weight in the file is not a floating-point tensor.
    #[error("{path}: key `{key}` holds {dtype} values, expected floating point")]
    NotFloat {
        /// The weight file.
        path: PathBuf,
        /// The key, in the file's naming.
        key: String,
        /// The element type found, as burn names it.
        dtype: String,
    },
}

/// A model configuration that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A size field is zero.
    #[error("`{field}` must be at least 1, got 0")]
    ZeroSize {
        /// The field, as named in the config.
        field: &'static str,
    },
}
