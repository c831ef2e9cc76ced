//! The one error type of dml-data.

use std::path::PathBuf;

/// Everything that can go wrong while reading, decoding, sampling or loading data.
///
/// Variants carry the file, line, class or field they are about, so the CLI can print one
/// clear line and callers can match on the cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or folder could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A file that a list or annotation names does not exist.
    #[error("{path}: file not found{}", listed_in.as_ref().map(|l| format!(" (listed in {l})")).unwrap_or_default())]
    MissingFile {
        /// The missing file (inside a zip archive: `archive.zip/entry`).
        path: PathBuf,
        /// The list, with its line, that named it, when there is one.
        listed_in: Option<String>,
    },
    /// A zip archive could not be opened or one of its entries could not be read.
    #[error("zip archive {path}")]
    Zip {
        /// The archive (and entry, when the entry failed).
        path: PathBuf,
        /// The zip crate's reason.
        source: zip::result::ZipError,
    },
    /// An image file is corrupt or in a format dml cannot decode (PNG and JPEG are supported).
    #[error("cannot decode image {path}")]
    Decode {
        /// The image (see [`crate::Dataset::describe`]).
        path: String,
        /// The image crate's reason.
        source: image::ImageError,
    },
    /// A line of a list or annotation file does not have the expected form.
    #[error("{}:{line}: {reason}", path.display())]
    MalformedLine {
        /// The text file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// An id appears twice in a list file.
    #[error("{}:{line}: id {id} already appeared on line {first_line}", path.display())]
    DuplicateId {
        /// The text file.
        path: PathBuf,
        /// 1-based line of the repeat.
        line: usize,
        /// 1-based line of the first occurrence.
        first_line: usize,
        /// The repeated id.
        id: String,
    },
    /// Two annotation files of one dataset disagree (an id listed in one but not the other).
    #[error("{}: {reason}", path.display())]
    Mismatch {
        /// The file where the disagreement shows.
        path: PathBuf,
        /// Which ids disagree.
        reason: String,
    },
    /// A folder tree does not have the layout its reader expects.
    #[error("{}: {reason}", path.display())]
    Layout {
        /// The folder or file that breaks the layout.
        path: PathBuf,
        /// What the reader expected.
        reason: String,
    },
    /// A class folder holds no images.
    #[error("class {class:?} has no images ({})", path.display())]
    EmptyClass {
        /// The class name.
        class: String,
        /// Its folder.
        path: PathBuf,
    },
    /// A dataset, split or filter selected no images at all.
    #[error("{what}: no images")]
    EmptyDataset {
        /// Which dataset or split.
        what: String,
    },
    /// A MATLAB .mat file could not be parsed.
    #[error("{}: not a readable MATLAB v5 file at byte {offset}: {reason}", path.display())]
    MatFormat {
        /// The .mat file.
        path: PathBuf,
        /// Byte offset of the problem (inside the decompressed variable for compressed files).
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// A .mat file lacks a variable or field a reader needs, or it has the wrong type.
    #[error("{}: {reason}", path.display())]
    MatContent {
        /// The .mat file.
        path: PathBuf,
        /// What is missing or wrong (names the variable, field and element).
        reason: String,
    },
    /// A name given in a filter (an Omniglot alphabet) does not exist in the data.
    #[error("unknown {kind} {name:?}; available: {}", available.join(", "))]
    UnknownName {
        /// What kind of name ("alphabet").
        kind: &'static str,
        /// The unknown name.
        name: String,
        /// The names that exist.
        available: Vec<String>,
    },
    /// The P x K sampler met a class with fewer than K samples under [`crate::SmallClassPolicy::Error`].
    #[error(
        "class {class:?} has {size} samples, fewer than the {k} per class a batch needs; \
         lower K, or set the small-class policy to skip or with-replacement"
    )]
    ClassTooSmall {
        /// Name of the class.
        class: String,
        /// Its number of samples.
        size: usize,
        /// Samples per class per batch.
        k: usize,
    },
    /// Fewer classes can fill a batch than the batch needs.
    #[error("a batch needs {needed} distinct classes but only {available} have enough samples")]
    NotEnoughClasses {
        /// P, the classes per batch.
        needed: usize,
        /// Classes that have enough samples.
        available: usize,
    },
    /// A configuration value is out of its valid range.
    #[error("invalid {field}: {reason}")]
    InvalidConfig {
        /// The field, as named in the config.
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// A batch named a sample index past the end of the dataset.
    #[error("sample index {index} is out of range for a dataset of {len} samples")]
    IndexOutOfRange {
        /// The bad index.
        index: usize,
        /// The dataset's length.
        len: usize,
    },
    /// A text file is not UTF-8 (UTF-16, or bytes that are not UTF-8 on some line).
    #[error("{}", path.display())]
    Text {
        /// The text file.
        path: PathBuf,
        /// What is wrong with its encoding, and on which line.
        source: dml_core::text::TextError,
    },
    /// Files in a folder whose names are not UTF-8: dml names files by UTF-8 paths, so they
    /// could neither be listed nor opened again by name.
    #[error("{}: {}", folder.display(), non_utf8(names))]
    NonUtf8Names {
        /// The folder listed.
        folder: PathBuf,
        /// Each such path, relative to the folder, with its bad bytes shown as U+FFFD.
        names: Vec<String>,
    },
    /// A file, zip entry or inflated .mat variable is larger than [`crate::Limits::max_file_mib`]
    /// allows (by its own header or by what it holds).
    #[error("{} {detail}, above data.limits.max_file_mib = {limit_mib}", path.display())]
    FileTooLarge {
        /// The file (inside a zip archive: `archive.zip/entry`).
        path: PathBuf,
        /// Its size, as far as it was read ("is 4096 MiB", "is more than 256 MiB").
        detail: String,
        /// The limit, MiB.
        limit_mib: u64,
    },
    /// An image whose header claims more pixels than [`crate::Limits::max_image_megapixels`]
    /// allows; it is refused before its pixels are decoded.
    #[error("{path} is {}, above data.limits.max_image_megapixels = {limit_megapixels}", size.map_or("too large to decode".to_owned(), |(w, h)| format!("{w} x {h} pixels")))]
    ImageTooLarge {
        /// The image (see [`crate::Dataset::describe`]).
        path: String,
        /// Width and height from its header, when the decoder got that far.
        size: Option<(u32, u32)>,
        /// The limit, megapixels.
        limit_megapixels: u64,
    },
    /// Several images of a dataset cannot be read or decoded ([`crate::Loader::preload`]);
    /// each error names its file, in dataset order. The message shows the first 20 and
    /// counts the rest.
    #[error("{} images cannot be read: {}", errors.len(), first_errors(errors))]
    UnreadableImages {
        /// One error per bad image (at least two; a single one is returned as itself).
        errors: Vec<Error>,
    },
    /// A loader worker thread panicked (a bug, not bad input) or could not be started.
    #[error("a data loader worker thread panicked or could not be started")]
    WorkerFailed,
}

/// How many errors of [`Error::UnreadableImages`] its message lists.
const SHOWN_ERRORS: usize = 20;

/// The first [`SHOWN_ERRORS`] errors, then how many more there are.
fn first_errors(errors: &[Error]) -> String {
    let mut text: Vec<String> = errors
        .iter()
        .take(SHOWN_ERRORS)
        .map(|e| dml_core::error::chain(e))
        .collect();
    if errors.len() > SHOWN_ERRORS {
        text.push(format!("and {} more", errors.len() - SHOWN_ERRORS));
    }
    text.join("; ")
}

/// "file name is not valid UTF-8: x" or "3 file names are not valid UTF-8: x, y, z".
fn non_utf8(names: &[String]) -> String {
    let what = match names.len() {
        1 => "file name is".to_owned(),
        n => format!("{n} file names are"),
    };
    let mut shown: Vec<&str> = names
        .iter()
        .take(SHOWN_ERRORS)
        .map(String::as_str)
        .collect();
    let more = format!("and {} more", names.len().saturating_sub(SHOWN_ERRORS));
    if names.len() > SHOWN_ERRORS {
        shown.push(&more);
    }
    format!(
        "{what} not valid UTF-8: {} (rename them: dml names files by UTF-8 paths)",
        shown.join(", ")
    )
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn text(path: impl Into<PathBuf>, source: dml_core::text::TextError) -> Self {
        Error::Text {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn malformed(
        path: impl Into<PathBuf>,
        line: usize,
        reason: impl Into<String>,
    ) -> Self {
        Error::MalformedLine {
            path: path.into(),
            line,
            reason: reason.into(),
        }
    }

    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidConfig {
            field,
            reason: reason.into(),
        }
    }
}
