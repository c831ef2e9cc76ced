//! Data for deep metric learning: datasets, the image pipeline, class-balanced samplers and
//! a prefetching loader. Produces plain `f32` arrays; it does not depend on burn.
//!
//! - [`Dataset`]: labelled images read lazily by index, shared by worker threads. Readers,
//!   each validating its input on open (missing files, malformed lines, empty classes are
//!   errors naming the file and line): [`CsvListDataset`] (`label,relative/path` lists),
//!   [`ImageFolderDataset`] (one folder per class), [`Cub200Dataset`], [`Cars196Dataset`],
//!   [`SopDataset`], [`InShopDataset`] (native layouts with their standard class-disjoint
//!   [`DatasetSplits`]), [`OmniglotDataset`], and [`ImageFiles`] (loose unlabelled images).
//!   Any of them reads from a folder or straight from a zip archive ([`ImageStore`]); a run
//!   configuration names them in dml-train's `DatasetConfig`.
//!   Text inputs go through [`dml_core::text`] (byte-order marks, UTF-16, invalid UTF-8 named
//!   by line); CSV lists follow RFC 4180 quoting.
//! - [`Limits`]: the largest file and image any reader accepts, checked against headers
//!   before anything is allocated, so a lying header costs an error, not gigabytes.
//! - [`SyntheticGlyphsConfig`]: built-in random stroke glyphs, no files needed, drawn on
//!   demand from `(seed, class, sample)`, with a `modes` knob for multi-modal classes.
//! - [`PipelineConfig`] / [`Pipeline`]: decode, grey or RGB, resize, random crop / flip /
//!   affine jitter, normalise, into CHW floats.
//! - [`BatchSampler`]: [`PkSampler`] (P classes x K samples, each sample at most once per
//!   epoch) and [`NPairSampler`]; an epoch's batches depend only on `(seed, epoch)`.
//! - [`Loader`]: builds batches on worker threads with bounded read-ahead; augmentation is
//!   seeded by `(seed, epoch, batch, position)`, so batches do not depend on thread timing
//!   and a resumed run sees the same batches. A training loader keeps decoded, resized
//!   images in memory within [`LoaderConfig::cache_mib`], so each is decoded once.
//!
//! ```
//! use dml_data::{BatchSampler, Loader, LoaderConfig, PipelineConfig, PkSamplerConfig, SyntheticGlyphsConfig};
//!
//! let glyphs = SyntheticGlyphsConfig { train_classes: 6, samples_per_class: 4, ..Default::default() };
//! let train = glyphs.splits()?.train;
//! let sampler = PkSamplerConfig::new(3, 4, 7).init(&train.labels(), train.class_names())?;
//! let loader = Loader::train(train, PipelineConfig::characters(28).init()?, LoaderConfig::default(), 7)?;
//! for batch in loader.batches(0, sampler.batches(0), 0) {
//!     let batch = batch?;
//!     assert_eq!(batch.shape, [12, 1, 28, 28]);
//!     assert_eq!(batch.images.len(), 12 * 28 * 28);
//! }
//! # Ok::<(), dml_data::Error>(())
//! ```
#![deny(missing_docs)]

mod cache;
mod dataset;
mod error;
mod glyph;
mod limits;
mod loader;
mod mat5;
mod sampler;
mod seed;
mod store;
mod transform;

#[cfg(test)]
mod test_support;

pub use cache::CacheStats;
pub use dataset::{
    Cars196Dataset, CsvListDataset, Cub200Dataset, Dataset, DatasetSplits, ImageEntry, ImageFiles,
    ImageFolderDataset, ImageList, InShopDataset, OmniglotDataset, OmniglotLabel, SopDataset,
    Split, TestSplit, verify_images,
};
pub use error::Error;
pub use glyph::{GlyphJitter, SyntheticGlyphs, SyntheticGlyphsConfig};
pub use limits::Limits;
pub use loader::{Batch, Batches, Loader, LoaderConfig};
pub use sampler::{
    BatchSampler, NPairSampler, NPairSamplerConfig, PkSampler, PkSamplerConfig, SmallClassPolicy,
    sequential_batches,
};
pub use store::ImageStore;
pub use transform::{AffineJitter, ColorMode, Pipeline, PipelineConfig, PreparedImage};
