//! dml-data as the trainer's [`BatchSource`]s: the training loader driven by a P x K or
//! N-pair sampler, and the held-out split read in order (query then gallery for In-Shop).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dml_data::{
    BatchSampler, Cars196Dataset, CsvListDataset, Cub200Dataset, Dataset, DatasetSplits,
    ImageFiles, ImageFolderDataset, InShopDataset, Limits, Loader, NPairSamplerConfig,
    OmniglotDataset, Pipeline, PkSamplerConfig, SopDataset, TestSplit, sequential_batches,
};

use crate::config::{DataConfig, DatasetConfig, SamplerKind};
use crate::error::{BoxError, Error};
use crate::fingerprint::{DataFingerprint, Item, SplitFingerprint};
use crate::seed::{SeedStream, derive_seed};
use crate::task::{Batch, BatchIter, BatchSource};

/// What a dataset configuration opens to: a dataset with its standard splits, or one list.
enum Opened {
    Splits(DatasetSplits),
    Single(Arc<dyn Dataset>),
}

/// Opens `config`'s dataset, every read and decode bounded by `limits`.
fn open(config: &DatasetConfig, limits: Limits) -> Result<Opened, dml_data::Error> {
    let single = |list: dml_data::ImageList| Opened::Single(Arc::new(list));
    Ok(match config {
        DatasetConfig::Synthetic(glyphs) => Opened::Splits(glyphs.splits()?),
        DatasetConfig::Csv { path, root } => {
            let root = root
                .clone()
                .unwrap_or_else(|| path.parent().unwrap_or(Path::new(".")).to_owned());
            single(CsvListDataset::open_with(path, root, limits)?)
        }
        DatasetConfig::Folder { path } => single(ImageFolderDataset::open_with(path, limits)?),
        DatasetConfig::Cub { path } => Opened::Splits(Cub200Dataset::open_with(path, limits)?),
        DatasetConfig::Cars196 { path } => Opened::Splits(Cars196Dataset::open_with(path, limits)?),
        DatasetConfig::Sop { path } => Opened::Splits(SopDataset::open_with(path, limits)?),
        DatasetConfig::InShop { path } => Opened::Splits(InShopDataset::open_with(path, limits)?),
        DatasetConfig::Omniglot {
            path,
            label,
            alphabets,
        } => single(OmniglotDataset::open_with(
            path,
            *label,
            alphabets.as_deref(),
            limits,
        )?),
    })
}

/// The training split and the held-out split of a run's data, opened and validated.
pub struct RunData {
    /// Training batches.
    pub train: TrainBatches,
    /// The held-out split, if the configuration has one.
    pub test: Option<HeldOut>,
}

impl RunData {
    /// Opens the datasets `config` names (errors name the missing or malformed file) and
    /// builds the samplers and loaders, seeded from `seed`. Every image of both splits is
    /// read up front (decoded into the cache, or header-checked; [`Loader::preload`]), so an
    /// unreadable file fails here, with all the others, and not hours into training.
    pub fn open(config: &DataConfig, seed: u64) -> Result<RunData, Error> {
        let pipeline = config.pipeline.init()?;
        let (train, test) = open_splits(config)?;
        let train = TrainBatches::new(config, train, pipeline.clone(), seed)?;
        let test = test
            .map(|split| HeldOut::new(config, split, pipeline))
            .transpose()?;
        Ok(RunData { train, test })
    }
}

impl RunData {
    /// The fingerprint of both splits, which a resumed run checks.
    pub fn fingerprint(&self) -> DataFingerprint {
        let split = |items: Vec<(&Arc<dyn Dataset>, usize)>, classes: usize| {
            let described: Vec<(String, &str, Option<u64>)> = items
                .iter()
                .map(|(dataset, i)| {
                    let class = dataset.class_names()[dataset.label(*i)].as_str();
                    (dataset.describe(*i), class, dataset.byte_len(*i))
                })
                .collect();
            SplitFingerprint::of(
                classes,
                described.iter().map(|(name, class, bytes)| Item {
                    name,
                    class,
                    bytes: *bytes,
                }),
            )
        };
        let train = self.train.dataset();
        let mut splits = BTreeMap::from([(
            "train".to_owned(),
            split(
                (0..train.len()).map(|i| (train, i)).collect(),
                train.class_names().len(),
            ),
        )]);
        if let Some(test) = &self.test {
            let items: Vec<_> = test.items().map(|(dataset, i, _)| (dataset, i)).collect();
            let classes: std::collections::BTreeSet<&str> = items
                .iter()
                .map(|(dataset, i)| dataset.class_names()[dataset.label(*i)].as_str())
                .collect();
            splits.insert("test".to_owned(), split(items, classes.len()));
        }
        DataFingerprint(splits)
    }
}

/// Which split to read in order (for embedding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitChoice {
    /// The training split.
    Train,
    /// The held-out split.
    Test,
}

/// One split of `config`'s data, read in order with the evaluation transform; every image's
/// header is checked first, so all unreadable files are reported before any is embedded.
pub fn open_split(config: &DataConfig, split: SplitChoice) -> Result<HeldOut, Error> {
    let pipeline = config.pipeline.init()?;
    let (train, test) = open_splits(config)?;
    let split = match split {
        SplitChoice::Train => TestSplit::Pooled(train),
        SplitChoice::Test => test.ok_or_else(|| {
            Error::Config(crate::error::ConfigError::Invalid {
                field: "data.test".to_owned(),
                reason: "the data has no held-out split (set data.test)".to_owned(),
            })
        })?,
    };
    HeldOut::new(config, split, pipeline)
}

/// Loose images (files, folders, zip archives; see [`ImageFiles::open`]), read in order with
/// `config`'s evaluation transform, their headers checked first: the queries of a search.
pub fn open_images(config: &DataConfig, paths: &[PathBuf]) -> Result<HeldOut, Error> {
    let pipeline = config.pipeline.init()?;
    let images: Arc<dyn Dataset> = Arc::new(ImageFiles::open_with(paths, config.limits)?);
    HeldOut::new(config, TestSplit::Pooled(images), pipeline)
}

/// The training dataset and the held-out split: `data.test` if given, else the dataset's own.
fn open_splits(config: &DataConfig) -> Result<(Arc<dyn Dataset>, Option<TestSplit>), Error> {
    let (train, native_test) = match open(&config.dataset, config.limits)? {
        Opened::Splits(splits) => (splits.train, Some(splits.test)),
        Opened::Single(dataset) => (dataset, None),
    };
    let test = match &config.test {
        Some(test) => Some(match open(test, config.limits)? {
            Opened::Splits(splits) => splits.test,
            Opened::Single(dataset) => TestSplit::Pooled(dataset),
        }),
        None => native_test,
    };
    Ok((train, test))
}

/// Training batches: dml-data's loader (augmenting, on worker threads) over the batches of a
/// P x K or N-pair sampler. Epoch `e`'s batches depend only on the seed and `e`.
pub struct TrainBatches {
    loader: Loader,
    sampler: Box<dyn BatchSampler>,
}

impl TrainBatches {
    fn new(
        config: &DataConfig,
        dataset: Arc<dyn Dataset>,
        pipeline: Pipeline,
        seed: u64,
    ) -> Result<Self, Error> {
        let labels = dataset.labels();
        let names = dataset.class_names();
        let batch = &config.batch;
        let sampler_seed = derive_seed(seed, SeedStream::Data, 0);
        let sampler: Box<dyn BatchSampler> = match batch.sampler {
            SamplerKind::Pk => Box::new(
                PkSamplerConfig::new(
                    batch.classes_per_batch,
                    batch.samples_per_class,
                    sampler_seed,
                )
                .with_small_classes(batch.small_classes)
                .init(&labels, names)?,
            ),
            SamplerKind::NPair => Box::new(
                NPairSamplerConfig {
                    small_classes: batch.small_classes,
                    ..NPairSamplerConfig::new(batch.classes_per_batch, sampler_seed)
                }
                .init(&labels, names)?,
            ),
        };
        let augment_seed = derive_seed(seed, SeedStream::Data, 1);
        let loader = Loader::train(dataset, pipeline, config.loader.clone(), augment_seed)?;
        // Decode the training images into the loader's cache now, in parallel, and check the
        // headers of those it cannot hold: every unreadable file is reported (all at once)
        // before training starts.
        loader.preload()?;
        Ok(TrainBatches { loader, sampler })
    }

    /// The training dataset.
    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        self.loader.dataset()
    }
}

impl BatchSource for TrainBatches {
    fn batches_in_epoch(&self, epoch: usize) -> usize {
        self.sampler.batches(epoch as u64).len()
    }

    fn batches(&self, epoch: usize, start: usize) -> Result<BatchIter<'_>, BoxError> {
        let plan = self.sampler.batches(epoch as u64);
        Ok(Box::new(
            self.loader
                .batches(epoch as u64, plan, start)
                .map(|batch| batch.map(from_data_batch).map_err(BoxError::from)),
        ))
    }
}

fn from_data_batch(batch: dml_data::Batch) -> Batch {
    Batch {
        images: batch.images,
        shape: batch.shape,
        labels: batch.labels,
        indices: batch.indices,
    }
}

/// The held-out split, read in order with the deterministic evaluation transform. For a
/// query/gallery protocol the queries come first; gallery rows get indices offset by the
/// number of queries.
pub struct HeldOut {
    parts: Vec<Loader>,
    batch_size: usize,
}

impl HeldOut {
    fn new(config: &DataConfig, split: TestSplit, pipeline: Pipeline) -> Result<Self, Error> {
        let datasets = match split {
            TestSplit::Pooled(dataset) => vec![dataset],
            TestSplit::QueryGallery { query, gallery } => vec![query, gallery],
        };
        let parts = datasets
            .into_iter()
            .map(|dataset| Loader::eval(dataset, pipeline.clone(), config.loader.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        // An evaluation loader keeps nothing: this checks every image's header, so an
        // unreadable file is reported (with all the others) before training or embedding.
        for part in &parts {
            part.preload()?;
        }
        Ok(HeldOut {
            parts,
            batch_size: config.batch.eval_batch_size,
        })
    }

    /// The number of queries when queries and gallery are separate (In-Shop); `None` when every
    /// item queries all the others.
    pub fn query_count(&self) -> Option<usize> {
        (self.parts.len() > 1).then(|| self.parts[0].dataset().len())
    }

    /// The query dataset (the pooled one when there is no gallery).
    pub fn queries(&self) -> &Arc<dyn Dataset> {
        self.parts[0].dataset()
    }

    /// The super-class of every query (Omniglot's alphabet), if the dataset has them.
    pub fn query_super_labels(&self) -> Option<Vec<u32>> {
        let dataset = self.queries();
        (0..dataset.len())
            .map(|i| dataset.super_label(i).map(|s| s as u32))
            .collect()
    }

    /// Every item of the split: `(dataset, index in it, index in the split)`.
    pub fn items(&self) -> impl Iterator<Item = (&Arc<dyn Dataset>, usize, usize)> {
        let mut offset = 0;
        self.parts.iter().flat_map(move |part| {
            let dataset = part.dataset();
            let start = offset;
            offset += dataset.len();
            (0..dataset.len()).map(move |i| (dataset, i, start + i))
        })
    }
}

impl BatchSource for HeldOut {
    fn batches_in_epoch(&self, _epoch: usize) -> usize {
        self.parts
            .iter()
            .map(|part| part.dataset().len().div_ceil(self.batch_size))
            .sum()
    }

    fn batches(&self, _epoch: usize, start: usize) -> Result<BatchIter<'_>, BoxError> {
        let mut offset = 0;
        let mut skip = start;
        let mut iters: Vec<BatchIter<'_>> = Vec::new();
        for part in &self.parts {
            let plan = sequential_batches(part.dataset().len(), self.batch_size);
            let first = skip.min(plan.len());
            skip -= first;
            let base = offset;
            offset += part.dataset().len();
            iters.push(Box::new(part.batches(0, plan, first).map(move |batch| {
                let mut batch = from_data_batch(batch?);
                batch.indices.iter_mut().for_each(|i| *i += base);
                Ok(batch)
            })));
        }
        Ok(Box::new(iters.into_iter().flatten()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(path: &Path, shade: u8) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::GrayImage::from_pixel(6, 4, image::Luma([shade]))
            .save(path)
            .unwrap();
    }

    /// `root/{a,b}/{0,1,2}.png`, of which `a/1.png` is cut short and `b/2.png` is not an
    /// image.
    fn folder_with_two_corrupt_images(root: &Path) {
        for class in ["a", "b"] {
            for i in 0..3 {
                png(&root.join(format!("{class}/{i}.png")), i);
            }
        }
        let good = std::fs::read(root.join("a/0.png")).unwrap();
        std::fs::write(root.join("a/1.png"), &good[..20]).unwrap();
        std::fs::write(root.join("b/2.png"), b"not a png").unwrap();
    }

    fn assert_names_both(err: Error, root: &Path) {
        let msg = dml_core::error::chain(&err);
        assert!(
            msg.starts_with("data: 2 images cannot be read: ")
                && msg.contains(&root.join("a/1.png").display().to_string())
                && msg.contains(&root.join("b/2.png").display().to_string()),
            "{msg}"
        );
    }

    fn folder(path: &Path) -> DatasetConfig {
        DatasetConfig::Folder {
            path: path.to_owned(),
        }
    }

    #[test]
    fn embedding_checks_every_image_before_the_first_batch() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("imgs");
        folder_with_two_corrupt_images(&root);
        let config = DataConfig {
            dataset: folder(&root),
            ..DataConfig::default()
        };
        assert_names_both(
            open_split(&config, SplitChoice::Train).err().unwrap(),
            &root,
        );
        let queries = open_images(&config, std::slice::from_ref(&root))
            .err()
            .unwrap();
        assert_names_both(queries, &root);
    }

    #[test]
    fn a_run_checks_both_splits_up_front_with_the_cache_on_or_off() {
        let dir = tempfile::tempdir().unwrap();
        let (good, bad) = (dir.path().join("good"), dir.path().join("bad"));
        folder_with_two_corrupt_images(&bad);
        for class in ["a", "b"] {
            for i in 0..3 {
                png(&good.join(format!("{class}/{i}.png")), i);
            }
        }
        let mut config = DataConfig::default();
        config.batch.classes_per_batch = 2;
        config.batch.samples_per_class = 2;
        for cache_mib in [0, 64] {
            config.loader.cache_mib = cache_mib;
            config.dataset = folder(&good);
            config.test = Some(folder(&bad));
            assert_names_both(RunData::open(&config, 1).err().unwrap(), &bad);
            config.dataset = folder(&bad);
            config.test = Some(folder(&good));
            assert_names_both(RunData::open(&config, 1).err().unwrap(), &bad);
            config.dataset = folder(&good);
            assert!(RunData::open(&config, 1).is_ok());
        }
    }

    #[test]
    fn the_limits_reach_the_readers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("imgs");
        png(&root.join("a/0.png"), 0);
        let big = image::GrayImage::new(1001, 1000);
        std::fs::create_dir_all(root.join("b")).unwrap();
        big.save(root.join("b/big.png")).unwrap();
        let mut config = DataConfig {
            dataset: folder(&root),
            ..DataConfig::default()
        };
        assert!(open_split(&config, SplitChoice::Train).is_ok());
        config.limits.max_image_megapixels = 1;
        let msg = dml_core::error::chain(&open_split(&config, SplitChoice::Train).err().unwrap());
        assert_eq!(
            msg,
            format!(
                "data: {} is 1001 x 1000 pixels, above data.limits.max_image_megapixels = 1",
                root.join("b/big.png").display()
            )
        );
    }
}
