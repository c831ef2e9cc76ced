//! The `[data]` section: which images to train and evaluate on, how they are decoded and
//! augmented, and how batches are sampled.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::check;
use crate::error::ConfigError;

/// Training data, held-out data, image pipeline and batch sampling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// The training split.
    pub train: DatasetConfig,
    /// The held-out split evaluated during and after training (class-disjoint from `train` in
    /// the standard protocols). Default: none, which disables evaluation.
    pub test: Option<DatasetConfig>,
    /// Decoding and resizing.
    pub image: ImageConfig,
    /// Batch composition.
    pub batch: BatchConfig,
    /// Training-time augmentation (never applied to the held-out split).
    pub augment: AugmentConfig,
    /// Decoding threads. Default: 2.
    pub workers: usize,
    /// Ready batches kept ahead of the model. Default: 4.
    pub prefetch: usize,
}

impl Default for DataConfig {
    /// Built-in synthetic glyphs: no files needed.
    fn default() -> Self {
        DataConfig {
            train: DatasetConfig::Synthetic {
                classes: 100,
                samples_per_class: 24,
                modes: 1,
                first_class: 0,
            },
            test: Some(DatasetConfig::Synthetic {
                classes: 50,
                samples_per_class: 24,
                modes: 1,
                first_class: 100,
            }),
            image: ImageConfig::default(),
            batch: BatchConfig::default(),
            augment: AugmentConfig::default(),
            workers: 2,
            prefetch: 4,
        }
    }
}

/// Which label Omniglot images get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OmniglotLabel {
    /// One class per character (within its alphabet).
    Character,
    /// One class per alphabet.
    Alphabet,
}

/// The half of a dataset with a standard class-disjoint split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SplitName {
    /// The training classes.
    Train,
    /// The held-out classes.
    Test,
    /// In-Shop's query set.
    Query,
    /// In-Shop's gallery set.
    Gallery,
}

/// One dataset (or one split of one), chosen by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DatasetConfig {
    /// Seeded random stroke glyphs drawn with jitter; needs no files.
    Synthetic {
        /// Number of classes.
        classes: usize,
        /// Images per class.
        samples_per_class: usize,
        /// Prototypes per class: 1 = one look per class (faces, re-ID), m > 1 = a union of m
        /// distinct looks (CUB, SOP). Default: 1.
        #[serde(default = "one")]
        modes: usize,
        /// Id of the first class: a held-out split uses classes the training split lacks.
        /// Default: 0.
        #[serde(default)]
        first_class: usize,
    },
    /// A CSV list `label,relative/path` (the survey baseline's format).
    Csv {
        /// The CSV file.
        path: PathBuf,
        /// The folder image paths are relative to. Default: the CSV file's folder.
        #[serde(default)]
        root: Option<PathBuf>,
    },
    /// One sub-folder per class, in a folder or a .zip archive.
    Folder {
        /// The folder or .zip file.
        path: PathBuf,
    },
    /// CUB-200-2011 (classes 1-100 train, 101-200 test).
    Cub {
        /// The `CUB_200_2011` folder.
        path: PathBuf,
        /// Which half.
        split: SplitName,
    },
    /// Cars196 (classes 1-98 train, 99-196 test).
    Cars196 {
        /// The folder with `cars_annos.mat`.
        path: PathBuf,
        /// Which half.
        split: SplitName,
    },
    /// Stanford Online Products (`Ebay_train.txt` / `Ebay_test.txt`).
    Sop {
        /// The `Stanford_Online_Products` folder.
        path: PathBuf,
        /// Which half.
        split: SplitName,
    },
    /// In-Shop clothes retrieval (`list_eval_partition.txt`).
    InShop {
        /// The dataset folder.
        path: PathBuf,
        /// `train`, `query` or `gallery`.
        split: SplitName,
    },
    /// Omniglot: alphabet/character folders, from a folder or a .zip.
    Omniglot {
        /// The folder or .zip file.
        path: PathBuf,
        /// Label by character or by alphabet. Default: character.
        #[serde(default = "character")]
        label: OmniglotLabel,
        /// Keep only these alphabets. Default: all.
        #[serde(default)]
        alphabets: Vec<String>,
    },
}

fn one() -> usize {
    1
}

fn character() -> OmniglotLabel {
    OmniglotLabel::Character
}

impl DatasetConfig {
    /// The file or folder the dataset is read from (none for synthetic data).
    pub fn path(&self) -> Option<&PathBuf> {
        match self {
            DatasetConfig::Synthetic { .. } => None,
            DatasetConfig::Csv { path, .. }
            | DatasetConfig::Folder { path }
            | DatasetConfig::Cub { path, .. }
            | DatasetConfig::Cars196 { path, .. }
            | DatasetConfig::Sop { path, .. }
            | DatasetConfig::InShop { path, .. }
            | DatasetConfig::Omniglot { path, .. } => Some(path),
        }
    }

    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        match *self {
            DatasetConfig::Synthetic {
                classes,
                samples_per_class,
                modes,
                ..
            } => {
                check(
                    classes >= 2,
                    &format!("{field}.classes"),
                    "needs at least 2 classes",
                )?;
                check(
                    samples_per_class >= 2,
                    &format!("{field}.samples_per_class"),
                    "needs at least 2 images per class",
                )?;
                check(modes >= 1, &format!("{field}.modes"), "must be at least 1")
            }
            DatasetConfig::InShop { split, .. } => check(
                split != SplitName::Test,
                &format!("{field}.split"),
                "In-Shop's splits are train, query and gallery",
            ),
            DatasetConfig::Cub { split, .. }
            | DatasetConfig::Cars196 { split, .. }
            | DatasetConfig::Sop { split, .. } => check(
                matches!(split, SplitName::Train | SplitName::Test),
                &format!("{field}.split"),
                "must be train or test",
            ),
            DatasetConfig::Csv { .. }
            | DatasetConfig::Folder { .. }
            | DatasetConfig::Omniglot { .. } => Ok(()),
        }
    }
}

/// Decoding: every image becomes `channels x size x size` floats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageConfig {
    /// Side of the square network input, in pixels. Default: 28.
    pub size: usize,
    /// 1 (grayscale) or 3 (RGB). Default: 1.
    pub channels: usize,
}

impl Default for ImageConfig {
    fn default() -> Self {
        ImageConfig {
            size: 28,
            channels: 1,
        }
    }
}

/// How a batch is put together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SamplerKind {
    /// P classes x K samples per class.
    Pk,
    /// N-pair: P classes x 2 samples (`samples_per_class` must be 2).
    NPair,
}

/// Batch composition: `classes_per_batch` (P) classes with `samples_per_class` (K) images each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// The sampler. Default: pk.
    pub sampler: SamplerKind,
    /// P. Default: 20 (the survey's semi-hard setting).
    pub classes_per_batch: usize,
    /// K. Default: 6 (the survey's semi-hard setting).
    pub samples_per_class: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            sampler: SamplerKind::Pk,
            classes_per_batch: 20,
            samples_per_class: 6,
        }
    }
}

impl BatchConfig {
    /// Images per batch, P x K.
    pub fn batch_size(&self) -> usize {
        self.classes_per_batch * self.samples_per_class
    }
}

/// Random training-time augmentation.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Random horizontal flips (wrong for characters and glyphs). Default: false.
    pub flip: bool,
    /// Random crop after resizing to this many pixels (0 = no crop). Default: 0.
    pub crop_from: usize,
    /// Small random affine jitter (rotation, scale, shift). Default: false.
    pub jitter: bool,
}

impl DataConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        self.train.validate("data.train")?;
        if let Some(test) = &self.test {
            test.validate("data.test")?;
        }
        check(
            self.image.size >= 8,
            "data.image.size",
            format!("must be at least 8 pixels, got {}", self.image.size),
        )?;
        check(
            matches!(self.image.channels, 1 | 3),
            "data.image.channels",
            format!("must be 1 or 3, got {}", self.image.channels),
        )?;
        check(
            self.batch.classes_per_batch >= 2,
            "data.batch.classes_per_batch",
            "needs at least 2 classes per batch (a ranking loss needs negatives)",
        )?;
        check(
            self.batch.samples_per_class >= 2,
            "data.batch.samples_per_class",
            "needs at least 2 samples per class (a ranking loss needs positives)",
        )?;
        check(
            self.batch.sampler != SamplerKind::NPair || self.batch.samples_per_class == 2,
            "data.batch.samples_per_class",
            "the n-pair sampler takes exactly 2 samples per class",
        )?;
        check(
            self.augment.crop_from == 0 || self.augment.crop_from >= self.image.size,
            "data.augment.crop_from",
            format!(
                "must be 0 or at least data.image.size = {}",
                self.image.size
            ),
        )?;
        check(self.workers >= 1, "data.workers", "must be at least 1")?;
        check(self.prefetch >= 1, "data.prefetch", "must be at least 1")
    }
}
