//! The loader: batches decoded and transformed on worker threads, delivered in order.
//!
//! A training loader keeps each image it has decoded and resized ([`Pipeline::prepare`]) in
//! a cache bounded by [`LoaderConfig::cache_mib`], so later epochs only run the random half
//! of the pipeline ([`Pipeline::augment`]) on the workers.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::cache::{CacheStats, ImageCache};
use crate::seed::{self, Purpose};
use crate::transform::{Pipeline, PreparedImage};
use crate::{Dataset, Error};

/// One batch of transformed images, ready to become a tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Images, `[b, c, h, w]` row-major.
    pub images: Vec<f32>,
    /// `[b, c, h, w]`.
    pub shape: [usize; 4],
    /// Dense class id of each image.
    pub labels: Vec<i64>,
    /// Dataset index of each image.
    pub indices: Vec<usize>,
    /// The epoch it belongs to.
    pub epoch: u64,
    /// Its position in the epoch's batch list.
    pub batch_index: usize,
}

/// Threads, read-ahead and image cache of a [`Loader`]: the `[data.loader]` table of a run
/// configuration.
///
/// ```toml
/// [data.loader]
/// workers = 2
/// prefetch = 4
/// cache_mib = 2048   # 0: decode every image every time it is used
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoaderConfig {
    /// Worker threads, each building whole batches. Default: 2.
    pub workers: usize,
    /// Batches built ahead of the consumer, at most (ready or in progress); also caps how
    /// many workers are busy at once. Default: 4.
    pub prefetch: usize,
    /// Memory, in MiB (2^20 bytes), for keeping training images decoded and resized after
    /// their first read, so later epochs skip reading, decoding and resizing them. The random
    /// crop, flip, affine jitter and normalisation still run for every sample, on the
    /// workers, from the kept image, so batches are bit-identical with the cache on or off.
    /// 0 turns the cache off.
    ///
    /// The count covers the pixel buffers, a fixed per-image bookkeeping cost and a slot per
    /// dataset image (16 bytes), and never exceeds the budget. When the dataset does not fit,
    /// the first images read are kept until the budget is full and the others are decoded
    /// each time they are used, as without a cache (so a too-small budget costs nothing over
    /// none). Only training loaders ([`Loader::train`]) cache; evaluation loaders keep nothing.
    ///
    /// Default: 2048 (2 GiB). Omniglot or the synthetic glyphs at 28 x 28 grey need a few
    /// MiB and CUB-200's training half at `resize = 256` RGB about 1.6 GiB, so the small
    /// benchmarks fit whole, while 2 GiB stays a modest share of a training machine's
    /// memory; Cars196, SOP and In-Shop at 256 are kept in part.
    pub cache_mib: u64,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            workers: 2,
            prefetch: 4,
            cache_mib: 2048,
        }
    }
}

/// Whether samples are augmented, and with which seed.
#[derive(Clone, Copy, Debug)]
enum Augment {
    Off,
    Random { seed: u64 },
}

/// Builds batches of a dataset through a pipeline, on worker threads with bounded read-ahead.
///
/// A training loader ([`Loader::train`]) draws each sample's augmentation from a generator
/// seeded by `(seed, epoch, batch index, position in batch)`, so a batch's content never
/// depends on thread timing or worker count, and a run resumed at batch `b` of epoch `e`
/// sees the batches an uninterrupted run saw. An evaluation loader ([`Loader::eval`]) applies
/// the deterministic evaluation transform.
///
/// A training loader caches prepared images ([`LoaderConfig::cache_mib`]); clones share the
/// cache. [`Loader::preload`] fills it up front and checks what it does not hold.
#[derive(Clone)]
pub struct Loader {
    dataset: Arc<dyn Dataset>,
    pipeline: Arc<Pipeline>,
    config: LoaderConfig,
    augment: Augment,
    cache: Option<Arc<ImageCache>>,
}

impl Loader {
    /// A loader applying the training (random) transform, seeded by `seed`.
    pub fn train(
        dataset: Arc<dyn Dataset>,
        pipeline: Pipeline,
        config: LoaderConfig,
        seed: u64,
    ) -> Result<Self, Error> {
        Self::new(dataset, pipeline, config, Augment::Random { seed })
    }

    /// A loader applying the evaluation (deterministic) transform.
    pub fn eval(
        dataset: Arc<dyn Dataset>,
        pipeline: Pipeline,
        config: LoaderConfig,
    ) -> Result<Self, Error> {
        Self::new(dataset, pipeline, config, Augment::Off)
    }

    fn new(
        dataset: Arc<dyn Dataset>,
        pipeline: Pipeline,
        config: LoaderConfig,
        augment: Augment,
    ) -> Result<Self, Error> {
        if config.workers == 0 {
            return Err(Error::config("workers", "must be at least 1"));
        }
        if config.prefetch == 0 {
            return Err(Error::config("prefetch", "must be at least 1"));
        }
        let budget = config
            .cache_mib
            .checked_mul(1 << 20)
            .and_then(|bytes| usize::try_from(bytes).ok())
            .ok_or_else(|| {
                Error::config(
                    "cache_mib",
                    format!("{} MiB does not fit in memory", config.cache_mib),
                )
            })?;
        let cache = match augment {
            Augment::Random { .. } => ImageCache::new(dataset.len(), budget).map(Arc::new),
            Augment::Off => None,
        };
        Ok(Self {
            dataset,
            pipeline: Arc::new(pipeline),
            config,
            augment,
            cache,
        })
    }

    /// How full the image cache is; `None` when the loader has none (an evaluation loader,
    /// `cache_mib = 0`, or a budget smaller than the dataset's slot table).
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.cache.as_ref().map(|c| c.stats())
    }

    /// Reads the whole dataset up front, on rayon's threads, so an unreadable image is
    /// reported before the first batch instead of when its batch comes up hours later.
    /// Returns how full the cache is then (`None` without a cache).
    ///
    /// With a cache, images are decoded and prepared into it until one does not fit in what
    /// is left of the budget (the rest would be decoded again at every use anyway). Every
    /// image the cache does not hold then (all of them without a cache, as in an evaluation
    /// loader) gets a header check ([`Dataset::check_image`]): its file is read and its
    /// header parsed, within the [`crate::Limits`], without decoding pixels. Unreadable
    /// images are all reported at once, in dataset order ([`Error::UnreadableImages`], or
    /// the one error when there is one). Batches do not depend on whether or how far it ran.
    pub fn preload(&self) -> Result<Option<CacheStats>, Error> {
        let len = self.dataset.len();
        let mut failed: Vec<(usize, Error)> = match &self.cache {
            Some(cache) => {
                let full = AtomicBool::new(false);
                (0..len)
                    .into_par_iter()
                    .filter_map(|index| {
                        if full.load(Ordering::Relaxed) {
                            return None;
                        }
                        match self.prepared(cache, index) {
                            Ok((_, true)) => None,
                            Ok((_, false)) => {
                                full.store(true, Ordering::Relaxed);
                                None
                            }
                            Err(e) => Some((index, e)),
                        }
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        let decoded = |index: usize| {
            self.cache.as_ref().is_some_and(|c| c.get(index).is_some())
                || failed.binary_search_by_key(&index, |(i, _)| *i).is_ok()
        };
        let unchecked: Vec<usize> = (0..len).filter(|&i| !decoded(i)).collect();
        let checked: Vec<(usize, Error)> = unchecked
            .into_par_iter()
            .filter_map(|index| self.dataset.check_image(index).err().map(|e| (index, e)))
            .collect();
        failed.extend(checked);
        failed.sort_by_key(|(index, _)| *index);
        let mut errors: Vec<Error> = failed.into_iter().map(|(_, e)| e).collect();
        match errors.len() {
            0 => Ok(self.cache_stats()),
            1 => Err(errors.remove(0)),
            _ => Err(Error::UnreadableImages { errors }),
        }
    }

    /// Sample `index` prepared, from the cache or read and prepared now (and then kept if it
    /// fits); the flag says whether it is held in the cache.
    fn prepared(
        &self,
        cache: &ImageCache,
        index: usize,
    ) -> Result<(Arc<PreparedImage>, bool), Error> {
        if let Some(image) = cache.get(index) {
            return Ok((image.clone(), true));
        }
        let image = Arc::new(self.pipeline.prepare(&self.dataset.load(index)?));
        let held = cache.insert(index, &image);
        Ok((image, held))
    }

    /// The dataset it reads.
    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.dataset
    }

    /// The pipeline it applies.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Builds batch `batch_index` of `epoch` from the samples `indices`, on the calling thread.
    /// The workers run exactly this, so the result is the one [`Loader::batches`] yields.
    pub fn load_batch(
        &self,
        epoch: u64,
        batch_index: usize,
        indices: &[usize],
    ) -> Result<Batch, Error> {
        let [c, h, w] = self.pipeline.output_shape();
        let per_image = c * h * w;
        let mut images = vec![0.0f32; indices.len() * per_image];
        let mut labels = Vec::with_capacity(indices.len());
        for (pos, (&index, out)) in indices
            .iter()
            .zip(images.chunks_exact_mut(per_image))
            .enumerate()
        {
            if index >= self.dataset.len() {
                return Err(Error::IndexOutOfRange {
                    index,
                    len: self.dataset.len(),
                });
            }
            let mut rng = match self.augment {
                Augment::Off => None,
                Augment::Random { seed } => Some(seed::rng(
                    seed,
                    Purpose::Augment,
                    &[epoch, batch_index as u64, pos as u64],
                )),
            };
            match &self.cache {
                // `apply` is `prepare` then `augment`, bit for bit, so a cached image gives
                // the output reading it again would.
                Some(cache) => {
                    let (image, _) = self.prepared(cache, index)?;
                    self.pipeline.augment(&image, rng.as_mut(), out);
                }
                None => self
                    .pipeline
                    .apply(&self.dataset.load(index)?, rng.as_mut(), out),
            }
            labels.push(self.dataset.label(index) as i64);
        }
        Ok(Batch {
            images,
            shape: [indices.len(), c, h, w],
            labels,
            indices: indices.to_vec(),
            epoch,
            batch_index,
        })
    }

    /// Yields the batches `batches[first_batch..]` of `epoch`, in order, built ahead on the
    /// worker threads. After an error (a missing or corrupt image, named in the error) the
    /// iterator ends. Dropping it stops the workers.
    pub fn batches(&self, epoch: u64, batches: Vec<Vec<usize>>, first_batch: usize) -> Batches {
        let total = batches.len().saturating_sub(first_batch);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_claim: 0,
                delivered: 0,
                stop: false,
            }),
            wake: Condvar::new(),
        });
        let (tx, rx) = channel();
        let plan = Arc::new(Plan {
            loader: self.clone(),
            epoch,
            batches,
            first_batch,
            total,
            prefetch: self.config.prefetch,
        });
        // A thread the OS refuses is one worker fewer; with none at all, the channel closes
        // and the iterator reports `WorkerFailed`.
        let workers = (0..self.config.workers.min(total))
            .filter_map(|i| {
                let (plan, shared, tx) = (plan.clone(), shared.clone(), tx.clone());
                std::thread::Builder::new()
                    .name(format!("dml-data-{i}"))
                    .spawn(move || work(&plan, &shared, &tx))
                    .ok()
            })
            .collect();
        Batches {
            shared,
            rx,
            pending: BTreeMap::new(),
            next: 0,
            total,
            done: total == 0,
            workers,
        }
    }
}

/// What the workers build: the batches of one epoch from `first_batch` on.
struct Plan {
    loader: Loader,
    epoch: u64,
    batches: Vec<Vec<usize>>,
    first_batch: usize,
    total: usize,
    prefetch: usize,
}

/// Coordination between the consumer and the workers; positions count from `first_batch`.
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

struct State {
    /// Next position a worker will build.
    next_claim: usize,
    /// Positions the consumer has taken.
    delivered: usize,
    /// The consumer is gone.
    stop: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The lock is never held across user code, so a poisoned lock means the state is
        // still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

type Built = (usize, Result<Batch, Error>);

/// A worker: claims the next position within the read-ahead window, builds it, sends it.
fn work(plan: &Plan, shared: &Shared, tx: &Sender<Built>) {
    loop {
        let pos = {
            let mut s = shared.lock();
            while !s.stop
                && s.next_claim < plan.total
                && s.next_claim >= s.delivered + plan.prefetch
            {
                s = shared.wake.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            if s.stop || s.next_claim >= plan.total {
                return;
            }
            s.next_claim += 1;
            s.next_claim - 1
        };
        let batch_index = plan.first_batch + pos;
        let indices = &plan.batches[batch_index];
        // A panic would leave this position unfilled and the consumer waiting for it forever;
        // turn it into an error for that batch instead.
        let built = catch_unwind(AssertUnwindSafe(|| {
            plan.loader.load_batch(plan.epoch, batch_index, indices)
        }))
        .unwrap_or(Err(Error::WorkerFailed));
        if tx.send((pos, built)).is_err() {
            return;
        }
    }
}

/// The batches of one epoch, in order; see [`Loader::batches`].
pub struct Batches {
    shared: Arc<Shared>,
    rx: Receiver<Built>,
    /// Batches that arrived before their turn.
    pending: BTreeMap<usize, Result<Batch, Error>>,
    /// Position of the next batch to yield.
    next: usize,
    total: usize,
    done: bool,
    workers: Vec<JoinHandle<()>>,
}

impl Batches {
    /// Batches left to yield (fewer if an error ends the epoch early).
    pub fn remaining(&self) -> usize {
        if self.done { 0 } else { self.total - self.next }
    }
}

impl Iterator for Batches {
    type Item = Result<Batch, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let result = loop {
            if let Some(r) = self.pending.remove(&self.next) {
                break r;
            }
            match self.rx.recv() {
                Ok((pos, r)) => {
                    self.pending.insert(pos, r);
                }
                Err(_) => break Err(Error::WorkerFailed),
            }
        };
        self.next += 1;
        self.done = result.is_err() || self.next == self.total;
        self.shared.lock().delivered = self.next;
        self.shared.wake.notify_all();
        Some(result)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining()))
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            // A worker that panicked outside `catch_unwind` has nothing left to report.
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::ImageEntry;
    use crate::glyph::SyntheticGlyphsConfig;
    use crate::sampler::{BatchSampler, PkSamplerConfig, sequential_batches};
    use crate::transform::{AffineJitter, PipelineConfig};
    use crate::{ImageList, ImageStore, test_support::TempTree};

    fn glyphs() -> Arc<dyn Dataset> {
        let cfg = SyntheticGlyphsConfig {
            train_classes: 8,
            samples_per_class: 6,
            ..Default::default()
        };
        cfg.splits().unwrap().train
    }

    fn jittered() -> Pipeline {
        PipelineConfig {
            affine: Some(AffineJitter {
                max_rotation_deg: 10.0,
                max_scale: 0.1,
                max_shift: 0.1,
            }),
            random_crop: true,
            resize: 32,
            ..PipelineConfig::characters(28)
        }
        .init()
        .unwrap()
    }

    fn collect(loader: &Loader, epoch: u64, batches: Vec<Vec<usize>>, first: usize) -> Vec<Batch> {
        loader
            .batches(epoch, batches, first)
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn same_batches_for_any_worker_count_and_when_resumed() {
        let ds = glyphs();
        let sampler = PkSamplerConfig::new(4, 3, 5)
            .init(&ds.labels(), ds.class_names())
            .unwrap();
        let plan = sampler.batches(2);
        assert_eq!(plan.len(), 4);
        let one = Loader::train(
            ds.clone(),
            jittered(),
            LoaderConfig {
                workers: 1,
                prefetch: 1,
                ..Default::default()
            },
            11,
        )
        .unwrap();
        let three = Loader::train(
            ds.clone(),
            jittered(),
            LoaderConfig {
                workers: 3,
                prefetch: 2,
                ..Default::default()
            },
            11,
        )
        .unwrap();
        let a = collect(&one, 2, plan.clone(), 0);
        let b = collect(&three, 2, plan.clone(), 0);
        assert_eq!(a, b);
        assert_eq!(a.len(), 4);
        assert_eq!(a[1].shape, [12, 1, 28, 28]);
        assert_eq!(a[1].indices, plan[1]);
        assert_eq!(
            a[1].labels,
            plan[1]
                .iter()
                .map(|&i| ds.label(i) as i64)
                .collect::<Vec<_>>()
        );
        // Resuming at batch 2 gives batches 2 and 3 exactly.
        let resumed = collect(&three, 2, plan.clone(), 2);
        assert_eq!(resumed, a[2..]);
        // Augmentation differs between epochs and seeds.
        let other_epoch = collect(&one, 3, plan.clone(), 0);
        assert_ne!(other_epoch[0].images, a[0].images);
        let other_seed =
            Loader::train(ds.clone(), jittered(), LoaderConfig::default(), 12).unwrap();
        assert_ne!(collect(&other_seed, 2, plan, 0)[0].images, a[0].images);
    }

    /// A dataset that counts its reads.
    struct Counting {
        inner: Arc<dyn Dataset>,
        loads: std::sync::atomic::AtomicUsize,
    }

    impl Counting {
        fn new(inner: Arc<dyn Dataset>) -> Arc<Self> {
            Arc::new(Self {
                inner,
                loads: Default::default(),
            })
        }

        fn loads(&self) -> usize {
            self.loads.load(Ordering::SeqCst)
        }
    }

    impl Dataset for Counting {
        fn len(&self) -> usize {
            self.inner.len()
        }
        fn label(&self, index: usize) -> usize {
            self.inner.label(index)
        }
        fn class_names(&self) -> &[String] {
            self.inner.class_names()
        }
        fn load(&self, index: usize) -> Result<image::DynamicImage, Error> {
            self.loads.fetch_add(1, Ordering::SeqCst);
            self.inner.load(index)
        }
        fn describe(&self, index: usize) -> String {
            self.inner.describe(index)
        }
    }

    fn cached(cache_mib: u64, workers: usize) -> LoaderConfig {
        LoaderConfig {
            workers,
            prefetch: 2,
            cache_mib,
        }
    }

    /// Epochs 0 and 1 of the P x K plan over the glyphs, which reads every sample once per
    /// epoch.
    fn two_epochs(loader: &Loader) -> Vec<Batch> {
        let ds = loader.dataset();
        let sampler = PkSamplerConfig::new(4, 3, 5)
            .init(&ds.labels(), ds.class_names())
            .unwrap();
        (0..2)
            .flat_map(|epoch| collect(loader, epoch, sampler.batches(epoch), 0))
            .collect()
    }

    fn flipped(resize: u32) -> Pipeline {
        PipelineConfig {
            horizontal_flip: true,
            resize,
            ..jittered().config().clone()
        }
        .init()
        .unwrap()
    }

    #[test]
    fn cache_on_and_off_give_identical_batches_over_two_epochs() {
        let (off_ds, on_ds) = (Counting::new(glyphs()), Counting::new(glyphs()));
        let off = Loader::train(off_ds.clone(), flipped(32), cached(0, 1), 11).unwrap();
        let on = Loader::train(on_ds.clone(), flipped(32), cached(2048, 3), 11).unwrap();
        assert!(off.cache_stats().is_none());
        let (a, b) = (two_epochs(&off), two_epochs(&on));
        assert_eq!(a.len(), 8);
        assert_ne!(a[0].images, a[4].images, "epochs differ");
        let bits = |b: &[Batch]| -> Vec<Vec<u32>> {
            b.iter()
                .map(|b| b.images.iter().map(|v| v.to_bits()).collect())
                .collect()
        };
        assert_eq!(bits(&a), bits(&b));
        assert_eq!(a, b);
        // Uncached: every sample read each epoch; cached: each image read once.
        assert_eq!((off_ds.loads(), on_ds.loads()), (96, 48));
        let stats = on.cache_stats().unwrap();
        assert!(
            stats.is_complete() && stats.bytes <= stats.budget,
            "{stats:?}"
        );
        assert_eq!(stats.budget, 2048 << 20);
    }

    #[test]
    fn a_partial_cache_keeps_what_fits_and_gives_the_same_batches() {
        // 48 glyphs resized to 256 x 256 grey are 64 KiB each, 3 MiB in all; 1 MiB holds 15.
        let (off_ds, on_ds) = (Counting::new(glyphs()), Counting::new(glyphs()));
        let off = Loader::train(off_ds.clone(), flipped(256), cached(0, 2), 4).unwrap();
        let on = Loader::train(on_ds.clone(), flipped(256), cached(1, 3), 4).unwrap();
        assert_eq!(two_epochs(&off), two_epochs(&on));
        let stats = on.cache_stats().unwrap();
        assert_eq!(stats.images, 15, "{stats:?}");
        assert!(stats.bytes <= stats.budget && stats.budget == 1 << 20);
        assert_eq!(on_ds.loads(), 96 - 15);
    }

    #[test]
    fn preload_fills_the_cache_and_reports_every_bad_image() {
        let ds = Counting::new(glyphs());
        let loader = Loader::train(ds.clone(), flipped(32), cached(64, 2), 3).unwrap();
        let stats = loader.preload().unwrap().unwrap();
        assert!(stats.is_complete(), "{stats:?}");
        assert_eq!(ds.loads(), 48);
        let uncached = Loader::train(glyphs(), flipped(32), cached(0, 2), 3).unwrap();
        assert_eq!(two_epochs(&loader), two_epochs(&uncached));
        assert_eq!(ds.loads(), 48, "no reads after the preload");
        // No cache, nothing to do.
        assert_eq!(uncached.preload().unwrap(), None);
        let eval = Loader::eval(glyphs(), flipped(32), cached(64, 2)).unwrap();
        assert!(eval.cache_stats().is_none() && eval.preload().unwrap().is_none());

        let tree = TempTree::new();
        let list = |n: usize| -> Arc<dyn Dataset> {
            let store = ImageStore::open(tree.root()).unwrap();
            let entries = (0..n)
                .map(|i| ImageEntry {
                    path: format!("a/{i}.png"),
                    class: "a".into(),
                    super_class: None,
                    origin: None,
                })
                .collect();
            Arc::new(ImageList::new(store, entries, "t").unwrap())
        };
        let p = || PipelineConfig::characters(4).init().unwrap();
        for (i, bad) in [false, true, false, true, false].into_iter().enumerate() {
            if bad {
                tree.write(&format!("a/{i}.png"), b"garbage");
            } else {
                tree.write_png(&format!("a/{i}.png"), i as u8);
            }
        }
        let one_bad = Loader::train(list(2), p(), LoaderConfig::default(), 0).unwrap();
        let err = one_bad.preload().unwrap_err();
        assert!(matches!(err, Error::Decode { ref path, .. } if path.ends_with("1.png")));
        let two_bad = Loader::train(list(5), p(), LoaderConfig::default(), 0).unwrap();
        let err = two_bad.preload().unwrap_err();
        let msg = err.to_string();
        let Error::UnreadableImages { errors } = err else {
            panic!("{msg}")
        };
        assert_eq!(errors.len(), 2);
        let (first, second) = (msg.find("1.png").unwrap(), msg.find("3.png").unwrap());
        assert!(
            msg.starts_with("2 images cannot be read") && first < second,
            "{msg}"
        );
        // The good ones are kept.
        assert_eq!(two_bad.cache_stats().unwrap().images, 3);
    }

    /// A list of `a/{i}.png` for each `i` of `images`, each a good PNG or, where `bad`, the
    /// given bytes.
    fn folder_list(tree: &TempTree, images: &[Option<&[u8]>]) -> Arc<dyn Dataset> {
        for (i, bad) in images.iter().enumerate() {
            match bad {
                Some(bytes) => tree.write(&format!("a/{i}.png"), bytes),
                None => tree.write_png(&format!("a/{i}.png"), i as u8),
            }
        }
        let store = ImageStore::open(tree.root()).unwrap();
        let entries = (0..images.len())
            .map(|i| ImageEntry {
                path: format!("a/{i}.png"),
                class: "a".into(),
                super_class: None,
                origin: None,
            })
            .collect();
        Arc::new(ImageList::new(store, entries, "t").unwrap())
    }

    #[test]
    fn without_a_cache_preload_checks_every_header_and_reports_all_bad_files_at_once() {
        let tree = TempTree::new();
        let truncated = &crate::test_support::png_bytes(6, 4, 0)[..20];
        let ds = folder_list(
            &tree,
            &[None, Some(truncated), None, None, Some(b"garbage"), None],
        );
        let p = || PipelineConfig::characters(4).init().unwrap();
        for loader in [
            Loader::train(ds.clone(), p(), cached(0, 1), 0).unwrap(),
            Loader::eval(ds.clone(), p(), LoaderConfig::default()).unwrap(),
        ] {
            let err = loader.preload().unwrap_err();
            let msg = err.to_string();
            let Error::UnreadableImages { errors } = &err else {
                panic!("{msg}")
            };
            assert_eq!(errors.len(), 2, "{msg}");
            assert!(
                msg.starts_with("2 images cannot be read: cannot decode image")
                    && msg.contains("a/1.png")
                    && msg.contains("a/4.png"),
                "{msg}"
            );
        }
        // A cache too small for the whole dataset: what it does not hold is checked too.
        let ds = folder_list(&tree, &[None, None, None, Some(b"garbage")]);
        let small = PipelineConfig::characters(256).init().unwrap();
        let partial = Loader::train(ds, small, cached(1, 1), 0).unwrap();
        let err = partial.preload().unwrap_err();
        assert!(err.to_string().contains("a/3.png"), "{err}");
        assert!(!partial.cache_stats().unwrap().is_complete());
    }

    #[test]
    fn the_header_check_does_not_decode_and_long_error_lists_are_cut() {
        let ds = Counting::new(glyphs());
        let loader = Loader::eval(ds.clone(), flipped(32), LoaderConfig::default()).unwrap();
        assert_eq!(loader.preload().unwrap(), None);
        // `Counting` has no cheaper check than loading: the default loads each image once.
        assert_eq!(ds.loads(), 48);

        let tree = TempTree::new();
        let bad: Vec<Option<&[u8]>> = vec![Some(b"garbage"); 25];
        let loader = Loader::eval(
            folder_list(&tree, &bad),
            PipelineConfig::characters(4).init().unwrap(),
            LoaderConfig::default(),
        )
        .unwrap();
        let msg = loader.preload().unwrap_err().to_string();
        assert!(msg.starts_with("25 images cannot be read: "), "{msg}");
        assert!(
            msg.contains("a/19.png") && !msg.contains("a/20.png"),
            "{msg}"
        );
        assert!(msg.ends_with("; and 5 more"), "{msg}");
    }

    #[test]
    fn cache_setting_defaults_parses_and_rejects_an_impossible_budget() {
        let parsed: LoaderConfig = toml::from_str("workers = 3").unwrap();
        assert_eq!(parsed.cache_mib, 2048);
        let parsed: LoaderConfig = toml::from_str("cache_mib = 0").unwrap();
        assert_eq!(parsed.cache_mib, 0);
        let huge: LoaderConfig = toml::from_str("cache_mib = 9223372036854775807").unwrap();
        let err = Loader::train(glyphs(), flipped(32), huge, 0).err().unwrap();
        assert!(
            matches!(
                err,
                Error::InvalidConfig {
                    field: "cache_mib",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn eval_loader_is_the_deterministic_transform() {
        let ds = glyphs();
        let loader = Loader::eval(ds.clone(), jittered(), LoaderConfig::default()).unwrap();
        let batches = collect(&loader, 0, sequential_batches(ds.len(), 20), 0);
        assert_eq!(
            batches.iter().map(|b| b.indices.len()).collect::<Vec<_>>(),
            [20, 20, 8]
        );
        let again = collect(&loader, 5, sequential_batches(ds.len(), 20), 0);
        assert_eq!(batches[2].images, again[2].images);
    }

    #[test]
    fn corrupt_image_ends_the_epoch_with_an_error_naming_it() {
        let tree = TempTree::new();
        tree.write_png("a/0.png", 0);
        tree.write_png("a/1.png", 1);
        tree.write("a/2.png", b"garbage");
        let store = ImageStore::open(tree.root()).unwrap();
        let entries = (0..3)
            .map(|i| ImageEntry {
                path: format!("a/{i}.png"),
                class: "a".into(),
                super_class: None,
                origin: None,
            })
            .collect();
        let ds: Arc<dyn Dataset> = Arc::new(ImageList::new(store, entries, "t").unwrap());
        let loader = Loader::train(
            ds,
            PipelineConfig::characters(4).init().unwrap(),
            LoaderConfig::default(),
            0,
        )
        .unwrap();
        let mut it = loader.batches(0, vec![vec![0], vec![1], vec![2], vec![0]], 0);
        assert!(it.next().unwrap().is_ok());
        assert!(it.next().unwrap().is_ok());
        let err = it.next().unwrap().unwrap_err();
        assert!(
            matches!(err, Error::Decode { .. }) && err.to_string().contains("2.png"),
            "{err}"
        );
        assert!(it.next().is_none());
        let err = loader
            .batches(0, vec![vec![7]], 0)
            .next()
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, Error::IndexOutOfRange { index: 7, len: 3 }));
    }

    #[test]
    fn dropping_early_stops_the_workers_and_bad_settings_are_errors() {
        let ds = glyphs();
        let loader = Loader::train(
            ds.clone(),
            jittered(),
            LoaderConfig {
                workers: 2,
                prefetch: 1,
                ..Default::default()
            },
            0,
        )
        .unwrap();
        let mut it = loader.batches(0, sequential_batches(ds.len(), 4), 0);
        assert_eq!(it.remaining(), 12);
        assert!(it.next().unwrap().is_ok());
        drop(it);
        assert!(loader.batches(0, vec![], 0).next().is_none());
        let p = || PipelineConfig::default().init().unwrap();
        assert!(
            Loader::eval(
                ds.clone(),
                p(),
                LoaderConfig {
                    workers: 0,
                    prefetch: 1,
                    ..Default::default()
                }
            )
            .is_err()
        );
        assert!(
            Loader::eval(
                ds,
                p(),
                LoaderConfig {
                    workers: 1,
                    prefetch: 0,
                    ..Default::default()
                }
            )
            .is_err()
        );
    }
}
