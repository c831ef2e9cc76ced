//! The training loader's memory of prepared images: each image decoded, converted and
//! resized once, then shared by the worker threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::transform::PreparedImage;

/// One slot per dataset index.
type Slot = OnceLock<Arc<PreparedImage>>;

/// Bytes one cached image costs besides its pixel buffer: the shared allocation's two
/// reference counts and the image's header.
const ENTRY_OVERHEAD: usize = 2 * size_of::<usize>() + size_of::<PreparedImage>();

/// How full a loader's image cache is ([`crate::Loader::cache_stats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheStats {
    /// Images held.
    pub images: usize,
    /// Images in the dataset.
    pub dataset_len: usize,
    /// Bytes counted against the budget: the slot table, the pixel buffers and a fixed
    /// per-image bookkeeping cost (allocator slack is not counted).
    pub bytes: usize,
    /// The budget, bytes; `bytes` never exceeds it.
    pub budget: usize,
}

impl CacheStats {
    /// Whether every image of the dataset is held.
    pub fn is_complete(&self) -> bool {
        self.images == self.dataset_len
    }
}

/// Prepared images by dataset index, filled on first read while they fit in the budget.
///
/// Which images end up held may depend on thread timing when the budget runs out, but the
/// loader's output does not: a held image is exactly what preparing it again would give.
pub(crate) struct ImageCache {
    slots: Vec<Slot>,
    budget: usize,
    /// Bytes reserved so far, the slot table included; never above `budget`.
    used: AtomicUsize,
    images: AtomicUsize,
}

impl ImageCache {
    /// A cache for a dataset of `len` images within `budget` bytes, or `None` when the budget
    /// is 0 or the slot table alone would fill it.
    pub(crate) fn new(len: usize, budget: usize) -> Option<Self> {
        let table = len.checked_mul(size_of::<Slot>())?;
        if table >= budget {
            return None;
        }
        Some(Self {
            slots: (0..len).map(|_| OnceLock::new()).collect(),
            budget,
            used: AtomicUsize::new(table),
            images: AtomicUsize::new(0),
        })
    }

    /// The held image of `index`, if any.
    pub(crate) fn get(&self, index: usize) -> Option<&Arc<PreparedImage>> {
        self.slots.get(index)?.get()
    }

    /// Holds `image` as `index`'s if its cost fits in what is left of the budget. Returns
    /// whether `index` is held afterwards (by this call or an earlier one).
    pub(crate) fn insert(&self, index: usize, image: &Arc<PreparedImage>) -> bool {
        let Some(slot) = self.slots.get(index) else {
            return false;
        };
        if slot.get().is_some() {
            return true;
        }
        let Some(cost) = image.heap_bytes().checked_add(ENTRY_OVERHEAD) else {
            return false;
        };
        // Reserve before storing, so concurrent inserts can never overshoot the budget.
        let reserved = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(cost).filter(|&total| total <= self.budget)
            });
        if reserved.is_err() {
            return false;
        }
        if slot.set(image.clone()).is_ok() {
            self.images.fetch_add(1, Ordering::AcqRel);
        } else {
            // Another worker stored the same image first: give the reservation back.
            self.used.fetch_sub(cost, Ordering::AcqRel);
        }
        true
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            images: self.images.load(Ordering::Acquire),
            dataset_len: self.slots.len(),
            bytes: self.used.load(Ordering::Acquire),
            budget: self.budget,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::PipelineConfig;
    use image::{DynamicImage, GrayImage};

    fn prepared(side: u32) -> Arc<PreparedImage> {
        let img = DynamicImage::ImageLuma8(GrayImage::new(side, side));
        Arc::new(
            PipelineConfig::characters(side)
                .init()
                .unwrap()
                .prepare(&img),
        )
    }

    #[test]
    fn holds_images_while_they_fit_and_never_exceeds_the_budget() {
        let image = prepared(10);
        let cost = 100 + ENTRY_OVERHEAD;
        let table = 5 * size_of::<Slot>();
        // Room for two images and a bit, not three.
        let cache = ImageCache::new(5, table + 2 * cost + cost / 2).unwrap();
        assert!(cache.insert(0, &image));
        assert!(cache.insert(0, &image), "already held");
        assert!(cache.insert(3, &image));
        assert!(!cache.insert(1, &image), "over budget");
        assert!(!cache.insert(9, &image), "out of range");
        assert!(cache.get(1).is_none() && cache.get(9).is_none());
        assert!(Arc::ptr_eq(cache.get(3).unwrap(), &image));
        let stats = cache.stats();
        assert_eq!((stats.images, stats.bytes), (2, table + 2 * cost));
        assert!(stats.bytes <= stats.budget && !stats.is_complete());
        // A smaller image still fits in what is left.
        assert!(cache.insert(4, &prepared(2)));
    }

    #[test]
    fn no_cache_when_the_budget_is_zero_or_the_table_fills_it() {
        assert!(ImageCache::new(4, 0).is_none());
        assert!(ImageCache::new(4, 4 * size_of::<Slot>()).is_none());
        assert!(ImageCache::new(usize::MAX, usize::MAX).is_none());
        assert!(ImageCache::new(0, 1).is_some());
    }

    #[test]
    fn concurrent_inserts_stay_within_the_budget() {
        let image = prepared(10);
        let cost = 100 + ENTRY_OVERHEAD;
        let cache = ImageCache::new(64, 64 * size_of::<Slot>() + 7 * cost).unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let (cache, image) = (&cache, &image);
                s.spawn(move || {
                    for i in 0..64 {
                        cache.insert((i * 5 + t) % 64, image);
                    }
                });
            }
        });
        let stats = cache.stats();
        assert_eq!(stats.images, 7);
        assert_eq!(stats.bytes, stats.budget);
    }
}
