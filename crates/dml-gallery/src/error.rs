//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can stop a gallery from being built.
///
/// Images that are missing or cannot be decoded are not errors: the page shows a placeholder
/// and lists them. Every variant names what was wrong; causes are kept as `source()` and
/// never repeated in the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Every item has the same class: no query can be wrong, so rank metrics mean nothing
    /// (dml-eval itself would report them as perfect).
    #[error("every item has the class `{class}`: retrieval metrics need at least two classes")]
    OneClass {
        /// The only class.
        class: String,
    },
    /// Two inputs that must have matching sizes do not.
    #[error("{what}: expected {expected}, found {found}")]
    LengthMismatch {
        /// Which sizes disagree.
        what: &'static str,
        /// The size that was required (the rows of the embeddings).
        expected: usize,
        /// The size that was given.
        found: usize,
    },
    /// A setting outside its meaningful range.
    #[error("`{param}` = {value} is invalid: {reason}")]
    InvalidParameter {
        /// The setting's name.
        param: &'static str,
        /// The rejected value.
        value: String,
        /// Why it is rejected.
        reason: String,
    },
    /// A class asked for by name that no query has.
    #[error("no query has the class `{class}`")]
    UnknownClass {
        /// The name asked for.
        class: String,
    },
    /// The metrics or neighbours could not be computed.
    #[error("cannot evaluate the embeddings")]
    Eval {
        /// dml-eval's reason.
        #[from]
        source: dml_eval::Error,
    },
    /// The t-SNE map could not be computed.
    #[error("cannot draw the embedding map")]
    Map {
        /// dml-experiment's reason (boxed: it is large, and rare).
        source: Box<dml_experiment::Error>,
    },
    /// The output folder holds something that is not an earlier gallery: it is never replaced.
    #[error(
        "{} holds `{entry}`, which is not part of a gallery (only an earlier gallery is \
         replaced): give another output folder",
        dir.display()
    )]
    ForeignFolder {
        /// The output folder.
        dir: PathBuf,
        /// The entry that is not a gallery's (or why the folder is not one).
        entry: String,
    },
    /// The output path is a file (or something else that is not a folder).
    #[error("{} is not a folder: the output must be a folder (missing, empty or an earlier gallery)", path.display())]
    NotAFolder {
        /// The output path.
        path: PathBuf,
    },
    /// A file or folder could not be read, written, renamed or removed.
    #[error("cannot write {}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A thumbnail could not be encoded.
    #[error("cannot encode the thumbnail {}", path.display())]
    Thumbnail {
        /// The thumbnail file.
        path: PathBuf,
        /// The image crate's reason.
        source: image::ImageError,
    },
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<dml_experiment::Error> for Error {
    fn from(source: dml_experiment::Error) -> Self {
        Error::Map {
            source: Box::new(source),
        }
    }
}

impl Error {
    /// An I/O error about `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
