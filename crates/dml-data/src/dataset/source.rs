//! [`DatasetSource`]: which dataset to open, as one serialisable value for run configs.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::dataset::{
    Cars196Dataset, CsvListDataset, Cub200Dataset, DatasetSplits, ImageFolderDataset,
    InShopDataset, OmniglotDataset, OmniglotLabel, SopDataset, TestSplit,
};
use crate::glyph::SyntheticGlyphsConfig;
use crate::transform::PipelineConfig;

/// A dataset and where it lives, tagged by `kind` (`kind = "cub200"`, `root = "..."`).
///
/// Layouts with a standard split take a `root`; the others take separate `train` and `test`
/// locations. Paths are used as given; a CLI resolves relative ones against its config file
/// first. Unknown fields are errors naming the field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DatasetSource {
    /// The built-in synthetic glyphs ([`SyntheticGlyphsConfig`]'s fields, all optional).
    Synthetic(SyntheticGlyphsConfig),
    /// `label,relative/path` lists ([`CsvListDataset`]).
    CsvList {
        /// Folder or zip archive the listed paths are relative to.
        root: PathBuf,
        /// List of the training images.
        train: PathBuf,
        /// List of the test images.
        test: PathBuf,
    },
    /// One folder per class ([`ImageFolderDataset`]), a tree each for training and test.
    ImageFolder {
        /// Training tree (folder or zip).
        train: PathBuf,
        /// Test tree (folder or zip).
        test: PathBuf,
    },
    /// CUB-200-2011 ([`Cub200Dataset`]).
    Cub200 {
        /// The `CUB_200_2011` folder (or a zip of it).
        root: PathBuf,
    },
    /// Cars196 ([`Cars196Dataset`]).
    Cars196 {
        /// The folder holding `cars_annos.mat` and `car_ims/`.
        root: PathBuf,
    },
    /// Stanford Online Products ([`SopDataset`]).
    Sop {
        /// The `Stanford_Online_Products` folder.
        root: PathBuf,
    },
    /// In-Shop Clothes Retrieval ([`InShopDataset`]).
    InShop {
        /// The folder holding `list_eval_partition.txt` (or `Eval/`) and the images.
        root: PathBuf,
    },
    /// Omniglot ([`OmniglotDataset`]), a tree or zip each for training and test.
    Omniglot {
        /// Training tree, e.g. `images_background_small1.zip`.
        train: PathBuf,
        /// Test tree, e.g. `images_background_small2.zip`.
        test: PathBuf,
        /// Class of a sample. Default: character.
        #[serde(default)]
        label: OmniglotLabel,
        /// Only these training alphabets. Default: all.
        #[serde(default)]
        train_alphabets: Option<Vec<String>>,
        /// Only these test alphabets (e.g. those of small2 that small1 lacks). Default: all.
        #[serde(default)]
        test_alphabets: Option<Vec<String>>,
    },
}

impl Default for DatasetSource {
    /// The built-in glyphs with their default settings.
    fn default() -> Self {
        DatasetSource::Synthetic(SyntheticGlyphsConfig::default())
    }
}

impl DatasetSource {
    /// Opens and validates the dataset.
    pub fn open(&self) -> Result<DatasetSplits, Error> {
        let pooled = |train, test| DatasetSplits {
            train: Arc::new(train),
            test: TestSplit::Pooled(Arc::new(test)),
        };
        Ok(match self {
            DatasetSource::Synthetic(cfg) => cfg.splits()?,
            DatasetSource::CsvList { root, train, test } => pooled(
                CsvListDataset::open(train, root)?,
                CsvListDataset::open(test, root)?,
            ),
            DatasetSource::ImageFolder { train, test } => pooled(
                ImageFolderDataset::open(train)?,
                ImageFolderDataset::open(test)?,
            ),
            DatasetSource::Cub200 { root } => Cub200Dataset::open(root)?,
            DatasetSource::Cars196 { root } => Cars196Dataset::open(root)?,
            DatasetSource::Sop { root } => SopDataset::open(root)?,
            DatasetSource::InShop { root } => InShopDataset::open(root)?,
            DatasetSource::Omniglot {
                train,
                test,
                label,
                train_alphabets,
                test_alphabets,
            } => pooled(
                OmniglotDataset::open(train, *label, train_alphabets.as_deref())?,
                OmniglotDataset::open(test, *label, test_alphabets.as_deref())?,
            ),
        })
    }

    /// The pipeline that suits the data: [`PipelineConfig::characters`] at the glyph size
    /// for glyphs, at 28 px for Omniglot, [`PipelineConfig::photos`] for everything else.
    pub fn default_pipeline(&self) -> PipelineConfig {
        match self {
            DatasetSource::Synthetic(cfg) => PipelineConfig::characters(cfg.size),
            DatasetSource::Omniglot { .. } => PipelineConfig::characters(28),
            _ => PipelineConfig::photos(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Split;
    use crate::test_support::TempTree;

    #[test]
    fn parses_from_toml_and_rejects_unknown_fields_by_name() {
        let s: DatasetSource = toml::from_str("kind = \"synthetic\"\nmodes = 3\n").unwrap();
        assert_eq!(
            s,
            DatasetSource::Synthetic(SyntheticGlyphsConfig {
                modes: 3,
                ..Default::default()
            })
        );
        let o: DatasetSource = toml::from_str(
            "kind = \"omniglot\"\ntrain = \"a.zip\"\ntest = \"b.zip\"\ntest_alphabets = [\"Tagalog\"]\n",
        )
        .unwrap();
        assert!(
            matches!(&o, DatasetSource::Omniglot { label: OmniglotLabel::Character, test_alphabets: Some(a), .. } if a == &["Tagalog"])
        );
        assert_eq!(o.default_pipeline(), PipelineConfig::characters(28));
        for bad in [
            "kind = \"synthetic\"\nmode = 3\n",
            "kind = \"cub200\"\nroot = \"x\"\nsplit = 1\n",
        ] {
            let err = toml::from_str::<DatasetSource>(bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains("unknown field"), "{err}");
        }
    }

    #[test]
    fn opens_each_kind_of_tree() {
        let tree = TempTree::new();
        for (i, p) in ["tr/a/0.png", "tr/b/1.png", "te/c/2.png", "te/d/3.png"]
            .iter()
            .enumerate()
        {
            tree.write_png(p, i as u8);
        }
        tree.write("train.csv", b"a,tr/a/0.png\nb,tr/b/1.png\n");
        tree.write("test.csv", b"c,te/c/2.png\n");
        let csv = DatasetSource::CsvList {
            root: tree.root().into(),
            train: tree.path("train.csv"),
            test: tree.path("test.csv"),
        };
        let splits = csv.open().unwrap();
        assert_eq!(splits.get(Split::Test).unwrap().class_names(), ["c"]);
        let folders = DatasetSource::ImageFolder {
            train: tree.path("tr"),
            test: tree.path("te"),
        };
        assert_eq!(folders.open().unwrap().get(Split::Test).unwrap().len(), 2);
        assert_eq!(folders.default_pipeline(), PipelineConfig::photos());
        let missing = DatasetSource::Cub200 {
            root: tree.path("nowhere"),
        };
        assert!(missing.open().unwrap_err().to_string().contains("nowhere"));
        assert_eq!(
            DatasetSource::default()
                .open()
                .unwrap()
                .train
                .class_names()
                .len(),
            64
        );
    }
}
