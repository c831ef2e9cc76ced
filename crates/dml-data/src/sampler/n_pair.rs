//! N-pair batches: N classes, two samples each.

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::sampler::{BatchSampler, PkSampler, PkSamplerConfig, SmallClassPolicy};

/// Settings of [`NPairSampler`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NPairSamplerConfig {
    /// N: pairs, hence distinct classes, per batch (batch size 2N).
    pub pairs_per_batch: usize,
    /// Classes with a single sample. Default: [`SmallClassPolicy::Error`];
    /// `WithReplacement` pairs such a sample with itself.
    #[serde(default)]
    pub small_classes: SmallClassPolicy,
    /// Seed of every epoch's batch order.
    pub seed: u64,
}

impl NPairSamplerConfig {
    /// N pairs per batch, single-sample classes an error.
    pub fn new(pairs_per_batch: usize, seed: u64) -> Self {
        Self {
            pairs_per_batch,
            small_classes: SmallClassPolicy::Error,
            seed,
        }
    }

    /// Builds the sampler for `labels`; `class_names` only name classes in errors.
    pub fn init(&self, labels: &[usize], class_names: &[String]) -> Result<NPairSampler, Error> {
        if self.pairs_per_batch == 0 {
            return Err(Error::config("pairs_per_batch", "must be at least 1"));
        }
        let pk = PkSamplerConfig {
            classes_per_batch: self.pairs_per_batch,
            samples_per_class: 2,
            small_classes: self.small_classes,
            seed: self.seed,
        };
        Ok(NPairSampler {
            inner: pk.init(labels, class_names)?,
        })
    }
}

/// Batches for the N-pair loss (Sohn, 2016): N distinct classes, an (anchor, positive) pair of
/// each, laid out `[a1, p1, a2, p2, ...]`.
///
/// This is [`PkSampler`] with K = 2, and has its epoch semantics: each epoch pairs up every
/// class's shuffled samples, uses each sample at most once, and depends only on
/// `(seed, epoch)`.
#[derive(Clone, Debug)]
pub struct NPairSampler {
    inner: PkSampler,
}

impl BatchSampler for NPairSampler {
    fn batch_size(&self) -> usize {
        self.inner.batch_size()
    }

    fn batches_per_epoch(&self) -> usize {
        self.inner.batches_per_epoch()
    }

    fn batches(&self, epoch: u64) -> Vec<Vec<usize>> {
        self.inner.batches(epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_pairs_of_distinct_classes() {
        let labels: Vec<usize> = (0..40).map(|i| i / 4).collect();
        let s = NPairSamplerConfig::new(5, 9).init(&labels, &[]).unwrap();
        assert_eq!((s.batch_size(), s.batches_per_epoch()), (10, 4));
        for batch in s.batches(2) {
            let mut classes: Vec<usize> = batch
                .chunks(2)
                .map(|pair| {
                    assert_eq!(labels[pair[0]], labels[pair[1]]);
                    assert_ne!(pair[0], pair[1]);
                    labels[pair[0]]
                })
                .collect();
            classes.sort_unstable();
            classes.dedup();
            assert_eq!(classes.len(), 5);
        }
        let single: Vec<usize> = vec![0, 0, 1, 2, 2];
        assert!(matches!(
            NPairSamplerConfig::new(1, 0).init(&single, &[]),
            Err(Error::ClassTooSmall { size: 1, k: 2, .. })
        ));
        assert!(NPairSamplerConfig::new(0, 0).init(&labels, &[]).is_err());
    }
}
