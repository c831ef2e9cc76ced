//! The [`Dataset`] trait, split types, and one reader per on-disk layout.

mod cars196;
mod csv_list;
mod cub;
mod image_files;
mod image_folder;
mod image_list;
mod in_shop;
mod omniglot;
mod sop;
mod table;

use std::sync::Arc;

pub use cars196::Cars196Dataset;
pub use csv_list::CsvListDataset;
pub use cub::Cub200Dataset;
pub use image_files::ImageFiles;
pub use image_folder::ImageFolderDataset;
pub use image_list::{ImageEntry, ImageList};
pub use in_shop::InShopDataset;
pub use omniglot::{OmniglotDataset, OmniglotLabel};
pub use sop::SopDataset;

use rayon::prelude::*;

use crate::Error;

/// A labelled collection of images, read lazily by index.
///
/// Labels are dense class ids `0..class_names().len()`. Implementations are shared by the
/// loader's worker threads, hence `Send + Sync`; [`Dataset::load`] must be safe to call from
/// several threads at once, and return the same image for the same index every time (a
/// training [`crate::Loader`] keeps what it returned).
pub trait Dataset: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;

    /// Whether the dataset has no samples (readers never return an empty one).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Dense class id of sample `index`.
    ///
    /// # Panics
    /// If `index >= self.len()`, like slice indexing.
    fn label(&self, index: usize) -> usize;

    /// Names of the classes, indexed by dense class id.
    fn class_names(&self) -> &[String];

    /// Dense id of the coarser class sample `index` belongs to (Omniglot's alphabet, SOP's
    /// super-class, In-Shop's category), for evaluations grouped by it; `None` when the
    /// dataset has no such grouping.
    fn super_label(&self, index: usize) -> Option<usize> {
        let _ = index;
        None
    }

    /// Names of the super-classes, indexed by [`Dataset::super_label`]; empty when there are none.
    fn super_class_names(&self) -> &[String] {
        &[]
    }

    /// Reads and decodes sample `index`. Errors name the file ([`Dataset::describe`]).
    fn load(&self, index: usize) -> Result<image::DynamicImage, Error>;

    /// Where sample `index` comes from, for messages: a path, or `synthetic glyph #i ...`.
    fn describe(&self, index: usize) -> String;

    /// Checks, as cheaply as the source allows, that sample `index` will load: file-based
    /// datasets read the file and parse its image header (size within the [`crate::Limits`])
    /// without decoding pixels, so a run can find every unreadable file up front
    /// ([`crate::Loader::preload`]). A header check cannot see damage further into a file.
    /// Default: loads the sample.
    fn check_image(&self, index: usize) -> Result<(), Error> {
        self.load(index).map(drop)
    }

    /// The size in bytes of sample `index`'s file, for the fingerprint a resumed run checks
    /// its data by; `None` for samples that are not files. Default: `None`.
    fn byte_len(&self, index: usize) -> Option<u64> {
        let _ = index;
        None
    }

    /// All labels, in sample order.
    fn labels(&self) -> Vec<usize> {
        (0..self.len()).map(|i| self.label(i)).collect()
    }
}

/// Decodes every sample once, on rayon's threads, and returns the first failure: a check that
/// no corrupt image hides in a dataset before a long run meets it.
pub fn verify_images(dataset: &dyn Dataset) -> Result<(), Error> {
    (0..dataset.len())
        .into_par_iter()
        .try_for_each(|i| dataset.load(i).map(drop))
}

/// A named part of a dataset's standard protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// The training classes.
    Train,
    /// The held-out classes, every image querying all others (CUB, Cars196, SOP, Omniglot).
    Test,
    /// In-Shop's query images.
    Query,
    /// In-Shop's gallery images.
    Gallery,
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
            Split::Query => "query",
            Split::Gallery => "gallery",
        })
    }
}

/// How a dataset's held-out part is evaluated.
#[derive(Clone)]
pub enum TestSplit {
    /// Every test image is a query against all the other test images.
    Pooled(Arc<dyn Dataset>),
    /// Queries against a separate gallery (In-Shop). The two share class ids: query label `c`
    /// and gallery label `c` are the same item.
    QueryGallery {
        /// The query images.
        query: Arc<dyn Dataset>,
        /// The gallery images.
        gallery: Arc<dyn Dataset>,
    },
}

/// A dataset's standard class-disjoint protocol: training classes and held-out classes.
#[derive(Clone)]
pub struct DatasetSplits {
    /// The training split.
    pub train: Arc<dyn Dataset>,
    /// The held-out split(s).
    pub test: TestSplit,
}

/// Shows a dataset by its size, as `Dataset` has no `Debug` bound.
struct Summary<'a>(&'a dyn Dataset);

impl std::fmt::Debug for Summary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} images, {} classes",
            self.0.len(),
            self.0.class_names().len()
        )
    }
}

impl std::fmt::Debug for TestSplit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TestSplit::Pooled(d) => f.debug_tuple("Pooled").field(&Summary(&**d)).finish(),
            TestSplit::QueryGallery { query, gallery } => f
                .debug_struct("QueryGallery")
                .field("query", &Summary(&**query))
                .field("gallery", &Summary(&**gallery))
                .finish(),
        }
    }
}

impl std::fmt::Debug for DatasetSplits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatasetSplits")
            .field("train", &Summary(&*self.train))
            .field("test", &self.test)
            .finish()
    }
}

impl DatasetSplits {
    /// The split named `split`, or an error when this dataset has no such split (asking a
    /// pooled dataset for `query`, or In-Shop for `test`).
    pub fn get(&self, split: Split) -> Result<Arc<dyn Dataset>, Error> {
        match (split, &self.test) {
            (Split::Train, _) => Ok(self.train.clone()),
            (Split::Test, TestSplit::Pooled(d)) => Ok(d.clone()),
            (Split::Query, TestSplit::QueryGallery { query, .. }) => Ok(query.clone()),
            (Split::Gallery, TestSplit::QueryGallery { gallery, .. }) => Ok(gallery.clone()),
            (Split::Test, TestSplit::QueryGallery { .. }) => Err(Error::config(
                "split",
                "this dataset has query and gallery splits instead of one test split",
            )),
            (Split::Query | Split::Gallery, TestSplit::Pooled(_)) => Err(Error::config(
                "split",
                format!("this dataset has one test split, no {split} split"),
            )),
        }
    }
}
