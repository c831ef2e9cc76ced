//! The `[data]` section: which images to train and evaluate on, how they are decoded and
//! augmented (dml-data's [`PipelineConfig`]), how batches are sampled, how many threads
//! decode them and how much memory keeps them decoded (dml-data's [`LoaderConfig`]).

use std::path::{Path, PathBuf};

use dml_data::{
    Limits, LoaderConfig, OmniglotLabel, PipelineConfig, SmallClassPolicy, SyntheticGlyphsConfig,
};
use serde::{Deserialize, Serialize};

use super::{MAX_BATCH, MAX_THREADS, check, check_count};
use crate::error::ConfigError;

/// Training data, held-out data, image pipeline, sampling and loading.
///
/// ```toml
/// [data.dataset]
/// kind = "cub"
/// path = "/data/CUB_200_2011"
///
/// [data.pipeline]        # dml-data's PipelineConfig
/// color = "rgb"
/// resize = 256
/// crop = 227
///
/// [data.limits]          # dml-data's Limits
/// max_file_mib = 256
/// max_image_megapixels = 64
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// The dataset trained on. Kinds with a standard class-disjoint protocol (synthetic, CUB,
    /// Cars196, SOP, In-Shop) also give the held-out split.
    pub dataset: DatasetConfig,
    /// The held-out split, when it comes from elsewhere (a second CSV list, Omniglot's
    /// evaluation alphabets). Default: the dataset's own test split, if it has one; else no
    /// evaluation.
    pub test: Option<DatasetConfig>,
    /// Decoding, resizing, augmentation and normalisation (training batches are augmented,
    /// evaluation batches get the deterministic transform).
    pub pipeline: PipelineConfig,
    /// Batch composition.
    pub batch: BatchConfig,
    /// Decoding threads, read-ahead and the memory budget for keeping decoded, resized
    /// training images between epochs (`cache_mib`, default 2048; 0 turns it off).
    pub loader: LoaderConfig,
    /// The largest file (`max_file_mib`, default 256: a file, zip entry or inflated .mat
    /// variable) and image (`max_image_megapixels`, default 64, from its header) any reader
    /// accepts, so a corrupt or hostile header is an error naming the setting instead of an
    /// allocation of gigabytes. Each must be in `1..=1048576`.
    pub limits: Limits,
}

/// The largest value of a `[data.limits]` field: 1 TiB per file, 10^12 pixels per image,
/// beyond any real input; a larger value is a typo.
const MAX_LIMIT: u64 = 1 << 20;

impl Default for DataConfig {
    /// Built-in synthetic glyphs at 28 x 28: no files needed.
    fn default() -> Self {
        DataConfig {
            dataset: DatasetConfig::Synthetic(SyntheticGlyphsConfig::default()),
            test: None,
            pipeline: PipelineConfig::characters(28),
            batch: BatchConfig::default(),
            loader: LoaderConfig::default(),
            limits: Limits::default(),
        }
    }
}

/// One dataset, chosen by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DatasetConfig {
    /// Seeded random stroke glyphs drawn with jitter; needs no files. The fields are
    /// dml-data's [`SyntheticGlyphsConfig`] (`train_classes`, `test_classes`,
    /// `samples_per_class`, `modes`, `size`, `seed`, `jitter`).
    Synthetic(SyntheticGlyphsConfig),
    /// A CSV list `label,relative/path` (the survey baseline's format): one split.
    Csv {
        /// The CSV file.
        path: PathBuf,
        /// The folder (or .zip) image paths are relative to. Default: the CSV file's folder.
        #[serde(default)]
        root: Option<PathBuf>,
    },
    /// One sub-folder per class, in a folder or a .zip archive: one split.
    Folder {
        /// The folder or .zip file.
        path: PathBuf,
    },
    /// CUB-200-2011: classes 1-100 train, 101-200 test.
    Cub {
        /// The `CUB_200_2011` folder.
        path: PathBuf,
    },
    /// Cars196: classes 1-98 train, 99-196 test.
    Cars196 {
        /// The folder with `cars_annos.mat`.
        path: PathBuf,
    },
    /// Stanford Online Products (`Ebay_train.txt` / `Ebay_test.txt`).
    Sop {
        /// The `Stanford_Online_Products` folder.
        path: PathBuf,
    },
    /// In-Shop clothes retrieval: train, then query against gallery.
    InShop {
        /// The folder with `list_eval_partition.txt`.
        path: PathBuf,
    },
    /// Omniglot: `<alphabet>/<character>/<drawing>.png`, from a folder or a .zip: one split.
    Omniglot {
        /// The folder or .zip file.
        path: PathBuf,
        /// Label by character or by alphabet. Default: character.
        #[serde(default)]
        label: OmniglotLabel,
        /// Keep only these alphabets. Default: all.
        #[serde(default)]
        alphabets: Option<Vec<String>>,
    },
}

impl DatasetConfig {
    /// The file or folder the dataset is read from (none for synthetic data).
    pub fn path(&self) -> Option<&PathBuf> {
        match self {
            DatasetConfig::Synthetic(_) => None,
            DatasetConfig::Csv { path, .. }
            | DatasetConfig::Folder { path }
            | DatasetConfig::Cub { path }
            | DatasetConfig::Cars196 { path }
            | DatasetConfig::Sop { path }
            | DatasetConfig::InShop { path }
            | DatasetConfig::Omniglot { path, .. } => Some(path),
        }
    }

    /// What a user means by a bare `path` where this dataset was configured (`--data PATH`):
    /// a `.csv` file is a CSV list, a path for a kind that reads one (CUB, Omniglot, ...)
    /// keeps the kind and its settings, anything else is an image folder (or .zip).
    pub fn for_path(&self, path: &Path) -> DatasetConfig {
        let path = path.to_owned();
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        {
            return DatasetConfig::Csv { path, root: None };
        }
        let mut same_kind = self.clone();
        match &mut same_kind {
            DatasetConfig::Cub { path: p }
            | DatasetConfig::Cars196 { path: p }
            | DatasetConfig::Sop { path: p }
            | DatasetConfig::InShop { path: p }
            | DatasetConfig::Omniglot { path: p, .. } => {
                *p = path;
                same_kind
            }
            DatasetConfig::Synthetic(_)
            | DatasetConfig::Csv { .. }
            | DatasetConfig::Folder { .. } => DatasetConfig::Folder { path },
        }
    }

    /// Whether the kind has a standard held-out split of its own.
    pub fn has_test_split(&self) -> bool {
        matches!(
            self,
            DatasetConfig::Synthetic(_)
                | DatasetConfig::Cub { .. }
                | DatasetConfig::Cars196 { .. }
                | DatasetConfig::Sop { .. }
                | DatasetConfig::InShop { .. }
        )
    }

    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        match self {
            DatasetConfig::Synthetic(glyphs) => {
                glyphs.validate().map_err(|e| ConfigError::Invalid {
                    field: field.to_owned(),
                    reason: dml_core::error::chain(&e),
                })
            }
            DatasetConfig::Omniglot {
                alphabets: Some(alphabets),
                ..
            } => check(
                !alphabets.is_empty(),
                &format!("{field}.alphabets"),
                "must name at least one alphabet (leave it out for all)",
            ),
            _ => Ok(()),
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
    /// What to do with classes smaller than K. Default: error.
    pub small_classes: SmallClassPolicy,
    /// Batch size when embedding the held-out split. Default: 256.
    pub eval_batch_size: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            sampler: SamplerKind::Pk,
            classes_per_batch: 20,
            samples_per_class: 6,
            small_classes: SmallClassPolicy::Error,
            eval_batch_size: 256,
        }
    }
}

impl BatchConfig {
    /// Images per training batch, P x K.
    pub fn batch_size(&self) -> usize {
        self.classes_per_batch * self.samples_per_class
    }
}

impl DataConfig {
    /// The number of channels the pipeline produces (the model's input channels).
    pub fn channels(&self) -> usize {
        self.pipeline.color.channels()
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        self.dataset.validate("data.dataset")?;
        if let Some(test) = &self.test {
            test.validate("data.test")?;
        }
        self.pipeline.init().map_err(|e| ConfigError::Invalid {
            field: "data.pipeline".to_owned(),
            reason: dml_core::error::chain(&e),
        })?;
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
        let batch = self
            .batch
            .classes_per_batch
            .checked_mul(self.batch.samples_per_class);
        check(
            batch.is_some_and(|n| n <= MAX_BATCH),
            "data.batch.classes_per_batch",
            format!(
                "a batch of {} x {} images is more than {MAX_BATCH}",
                self.batch.classes_per_batch, self.batch.samples_per_class
            ),
        )?;
        check_count(
            "data.batch.eval_batch_size",
            self.batch.eval_batch_size,
            MAX_BATCH,
        )?;
        check_count("data.loader.workers", self.loader.workers, MAX_THREADS)?;
        check_count("data.loader.prefetch", self.loader.prefetch, MAX_BATCH)?;
        for (field, value) in [
            ("data.limits.max_file_mib", self.limits.max_file_mib),
            (
                "data.limits.max_image_megapixels",
                self.limits.max_image_megapixels,
            ),
        ] {
            check(
                (1..=MAX_LIMIT).contains(&value),
                field,
                format!("must be in 1..={MAX_LIMIT}, got {value}"),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_kinds_parse_with_their_own_fields() {
        let synthetic: DatasetConfig =
            toml::from_str("kind = 'synthetic'\ntrain_classes = 8\nmodes = 2").unwrap();
        let DatasetConfig::Synthetic(glyphs) = synthetic else {
            panic!("{synthetic:?}")
        };
        assert_eq!((glyphs.train_classes, glyphs.modes), (8, 2));
        assert_eq!(
            glyphs.test_classes,
            SyntheticGlyphsConfig::default().test_classes
        );

        let omniglot: DatasetConfig =
            toml::from_str("kind = 'omniglot'\npath = 'o.zip'\nalphabets = ['Tagalog']").unwrap();
        assert!(matches!(
            omniglot,
            DatasetConfig::Omniglot {
                label: OmniglotLabel::Character,
                ..
            }
        ));

        let err = toml::from_str::<DatasetConfig>("kind = 'cub'\npath = 'x'\nsplit = 'train'")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `split`"), "{err}");
        let err = toml::from_str::<DatasetConfig>("kind = 'synthetic'\nclasses = 3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `classes`"), "{err}");
    }

    #[test]
    fn a_bare_path_is_read_as_the_user_means() {
        let synthetic = DataConfig::default().dataset;
        assert_eq!(
            synthetic.for_path(Path::new("list.CSV")),
            DatasetConfig::Csv {
                path: "list.CSV".into(),
                root: None
            }
        );
        assert_eq!(
            synthetic.for_path(Path::new("imgs.zip")),
            DatasetConfig::Folder {
                path: "imgs.zip".into()
            }
        );
        let omniglot = DatasetConfig::Omniglot {
            path: "small1.zip".into(),
            label: OmniglotLabel::Alphabet,
            alphabets: None,
        };
        assert_eq!(
            omniglot.for_path(Path::new("small2.zip")),
            DatasetConfig::Omniglot {
                path: "small2.zip".into(),
                label: OmniglotLabel::Alphabet,
                alphabets: None
            }
        );
    }

    #[test]
    fn limits_default_parse_and_are_validated_by_name() {
        let data = DataConfig::default();
        assert_eq!(
            (data.limits.max_file_mib, data.limits.max_image_megapixels),
            (256, 64)
        );
        let data: DataConfig = toml::from_str("[limits]\nmax_file_mib = 8").unwrap();
        assert_eq!(data.limits.max_file_mib, 8);
        assert_eq!(data.limits.max_image_megapixels, 64);
        data.validate().unwrap();
        let err = toml::from_str::<DataConfig>("[limits]\nmax_file_bytes = 8")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `max_file_bytes`"), "{err}");
        for (toml, field) in [
            ("[limits]\nmax_file_mib = 0", "data.limits.max_file_mib"),
            (
                "[limits]\nmax_image_megapixels = 2000000",
                "data.limits.max_image_megapixels",
            ),
        ] {
            let data: DataConfig = toml::from_str(toml).unwrap();
            let err = data.validate().unwrap_err().to_string();
            assert!(
                err.starts_with(field) && err.contains("1..=1048576"),
                "{err}"
            );
        }
    }

    #[test]
    fn n_pair_needs_two_per_class() {
        let mut data = DataConfig::default();
        data.batch.sampler = SamplerKind::NPair;
        let err = data.validate().unwrap_err().to_string();
        assert!(err.starts_with("data.batch.samples_per_class"), "{err}");
        data.batch.samples_per_class = 2;
        data.validate().unwrap();
    }
}
