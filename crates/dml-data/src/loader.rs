//! The loader: batches decoded and transformed on worker threads, delivered in order.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

use crate::seed::{self, Purpose};
use crate::transform::Pipeline;
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

/// Threads and read-ahead of a [`Loader`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoaderConfig {
    /// Worker threads, each building whole batches. Default: 2.
    pub workers: usize,
    /// Batches built ahead of the consumer, at most (ready or in progress); also caps how
    /// many workers are busy at once. Default: 4.
    pub prefetch: usize,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            workers: 2,
            prefetch: 4,
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
#[derive(Clone)]
pub struct Loader {
    dataset: Arc<dyn Dataset>,
    pipeline: Arc<Pipeline>,
    config: LoaderConfig,
    augment: Augment,
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
        Ok(Self {
            dataset,
            pipeline: Arc::new(pipeline),
            config,
            augment,
        })
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
            let image = self.dataset.load(index)?;
            let mut rng = match self.augment {
                Augment::Off => None,
                Augment::Random { seed } => Some(seed::rng(
                    seed,
                    Purpose::Augment,
                    &[epoch, batch_index as u64, pos as u64],
                )),
            };
            self.pipeline.apply(&image, rng.as_mut(), out);
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
                    prefetch: 1
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
                    prefetch: 0
                }
            )
            .is_err()
        );
    }
}
