//! dml-data as the trainer's [`BatchSource`]s: the training loader driven by a P x K or
//! N-pair sampler, and the held-out split read in order (query then gallery for In-Shop).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dml_data::{
    BatchSampler, Cars196Dataset, CsvListDataset, Cub200Dataset, Dataset, DatasetSplits,
    ImageFiles, ImageFolderDataset, InShopDataset, Loader, NPairSamplerConfig, OmniglotDataset,
    Pipeline, PkSamplerConfig, SopDataset, TestSplit, sequential_batches,
};

use crate::config::{DataConfig, DatasetConfig, SamplerKind};
use crate::error::{BoxError, Error};
use crate::seed::{SeedStream, derive_seed};
use crate::task::{Batch, BatchIter, BatchSource};

/// What a dataset configuration opens to: a dataset with its standard splits, or one list.
enum Opened {
    Splits(DatasetSplits),
    Single(Arc<dyn Dataset>),
}

fn open(config: &DatasetConfig) -> Result<Opened, dml_data::Error> {
    let single = |list: dml_data::ImageList| Opened::Single(Arc::new(list));
    Ok(match config {
        DatasetConfig::Synthetic(glyphs) => Opened::Splits(glyphs.splits()?),
        DatasetConfig::Csv { path, root } => {
            let root = root
                .clone()
                .unwrap_or_else(|| path.parent().unwrap_or(Path::new(".")).to_owned());
            single(CsvListDataset::open(path, root)?)
        }
        DatasetConfig::Folder { path } => single(ImageFolderDataset::open(path)?),
        DatasetConfig::Cub { path } => Opened::Splits(Cub200Dataset::open(path)?),
        DatasetConfig::Cars196 { path } => Opened::Splits(Cars196Dataset::open(path)?),
        DatasetConfig::Sop { path } => Opened::Splits(SopDataset::open(path)?),
        DatasetConfig::InShop { path } => Opened::Splits(InShopDataset::open(path)?),
        DatasetConfig::Omniglot {
            path,
            label,
            alphabets,
        } => single(OmniglotDataset::open(path, *label, alphabets.as_deref())?),
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
    /// builds the samplers and loaders, seeded from `seed`.
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

/// Which split to read in order (for embedding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitChoice {
    /// The training split.
    Train,
    /// The held-out split.
    Test,
}

/// One split of `config`'s data, read in order with the evaluation transform.
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
/// `config`'s evaluation transform: the queries of a search.
pub fn open_images(config: &DataConfig, paths: &[PathBuf]) -> Result<HeldOut, Error> {
    let pipeline = config.pipeline.init()?;
    let images: Arc<dyn Dataset> = Arc::new(ImageFiles::open(paths)?);
    HeldOut::new(config, TestSplit::Pooled(images), pipeline)
}

/// The training dataset and the held-out split: `data.test` if given, else the dataset's own.
fn open_splits(config: &DataConfig) -> Result<(Arc<dyn Dataset>, Option<TestSplit>), Error> {
    let (train, native_test) = match open(&config.dataset)? {
        Opened::Splits(splits) => (splits.train, Some(splits.test)),
        Opened::Single(dataset) => (dataset, None),
    };
    let test = match &config.test {
        Some(test) => Some(match open(test)? {
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
        // Decode the training images into the loader's cache now, in parallel: when they fit,
        // every corrupt file is reported (all at once) before training starts.
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
