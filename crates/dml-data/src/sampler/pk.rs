//! P classes x K samples per batch.

use std::collections::BinaryHeap;

use rand::Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::sampler::BatchSampler;
use crate::seed::{self, Purpose};

/// What the P x K sampler does with a class that has fewer than K samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmallClassPolicy {
    /// Refuse to build the sampler ([`Error::ClassTooSmall`] names the class). Default: a
    /// silent change to the data should be the user's decision.
    #[default]
    Error,
    /// Leave such classes out of training batches.
    Skip,
    /// Use all of the class's samples and draw the missing ones again, with replacement, so
    /// the class still contributes one group of K per epoch (with repeated images).
    WithReplacement,
}

/// Settings of [`PkSampler`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PkSamplerConfig {
    /// P: distinct classes per batch.
    pub classes_per_batch: usize,
    /// K: samples per class per batch.
    pub samples_per_class: usize,
    /// Classes with fewer than K samples. Default: [`SmallClassPolicy::Error`].
    #[serde(default)]
    pub small_classes: SmallClassPolicy,
    /// Seed of every epoch's batch order.
    pub seed: u64,
}

impl PkSamplerConfig {
    /// P classes x K samples per batch, small classes an error.
    pub fn new(classes_per_batch: usize, samples_per_class: usize, seed: u64) -> Self {
        Self {
            classes_per_batch,
            samples_per_class,
            small_classes: SmallClassPolicy::Error,
            seed,
        }
    }

    /// The same with another small-class policy.
    pub fn with_small_classes(self, small_classes: SmallClassPolicy) -> Self {
        Self {
            small_classes,
            ..self
        }
    }

    /// Builds the sampler for a dataset with these `labels` (dense ids); `class_names`,
    /// indexed by label, only name classes in errors.
    pub fn init(&self, labels: &[usize], class_names: &[String]) -> Result<PkSampler, Error> {
        let (p, k) = (self.classes_per_batch, self.samples_per_class);
        if p == 0 {
            return Err(Error::config("classes_per_batch", "must be at least 1"));
        }
        if k == 0 {
            return Err(Error::config("samples_per_class", "must be at least 1"));
        }
        let n_classes = labels.iter().max().map_or(0, |&m| m + 1);
        let mut by_class = vec![Vec::new(); n_classes];
        for (i, &l) in labels.iter().enumerate() {
            by_class[l].push(i);
        }
        let mut classes = Vec::new();
        for (c, members) in by_class.into_iter().enumerate() {
            if members.is_empty() {
                continue;
            }
            if members.len() < k {
                match self.small_classes {
                    SmallClassPolicy::Error => {
                        return Err(Error::ClassTooSmall {
                            class: class_names
                                .get(c)
                                .cloned()
                                .unwrap_or_else(|| format!("#{c}")),
                            size: members.len(),
                            k,
                        });
                    }
                    SmallClassPolicy::Skip => continue,
                    SmallClassPolicy::WithReplacement => {}
                }
            }
            classes.push(members);
        }
        if classes.len() < p {
            return Err(Error::NotEnoughClasses {
                needed: p,
                available: classes.len(),
            });
        }
        Ok(PkSampler {
            config: self.clone(),
            classes,
        })
    }
}

/// Class-balanced batches: P distinct classes, K samples of each, every sample used at most
/// once per epoch.
///
/// Epoch `e` is built as follows, from a generator seeded by `(seed, e)` alone, so any epoch
/// can be produced again without the epochs before it (a resumed run asks for epoch `e` and
/// skips the batches it has done):
///
/// 1. Every class's samples are shuffled and cut into groups of K. The last `n mod K` samples
///    of a class (a different random subset each epoch) wait for a later epoch. A class with
///    fewer than K samples follows [`SmallClassPolicy`].
/// 2. Batches are assembled greedily: each takes one group from each of the P classes with
///    the most groups left, ties broken at random. This yields as many batches as the group
///    counts allow ([`PkSampler::batches_per_epoch`], the same every epoch) and lets the same
///    classes meet in varying company.
/// 3. Groups left when fewer than P classes still have one are not used this epoch.
/// 4. The batch order is shuffled. Within a batch, each class's K samples are consecutive.
///
/// So each epoch every sample appears at most once (exactly once when every class size is a
/// multiple of K and the classes are balanced enough to fill batches), and every batch holds
/// P x K indices from P distinct classes.
#[derive(Clone, Debug)]
pub struct PkSampler {
    config: PkSamplerConfig,
    /// Sample indices of each class that takes part, in dataset order.
    classes: Vec<Vec<usize>>,
}

impl PkSampler {
    /// The settings it was built from.
    pub fn config(&self) -> &PkSamplerConfig {
        &self.config
    }

    /// Groups of K each class contributes per epoch.
    fn group_counts(&self) -> impl Iterator<Item = usize> + '_ {
        let k = self.config.samples_per_class;
        self.classes.iter().map(move |c| (c.len() / k).max(1))
    }
}

impl BatchSampler for PkSampler {
    fn batch_size(&self) -> usize {
        self.config.classes_per_batch * self.config.samples_per_class
    }

    /// The largest `t` with `sum_c min(groups_c, t) >= P t`: each batch needs P groups from
    /// distinct classes, so a class gives at most one group per batch.
    fn batches_per_epoch(&self) -> usize {
        let p = self.config.classes_per_batch;
        let total: usize = self.group_counts().sum();
        let feasible = |t: usize| self.group_counts().map(|g| g.min(t)).sum::<usize>() >= p * t;
        let (mut lo, mut hi) = (0, total / p);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if feasible(mid) {
                lo = mid
            } else {
                hi = mid - 1
            }
        }
        lo
    }

    fn batches(&self, epoch: u64) -> Vec<Vec<usize>> {
        let (p, k) = (self.config.classes_per_batch, self.config.samples_per_class);
        let mut rng = seed::rng(self.config.seed, Purpose::Sampler, &[epoch]);
        let mut groups: Vec<Vec<Vec<usize>>> = self
            .classes
            .iter()
            .map(|members| {
                let mut s = members.clone();
                s.shuffle(&mut rng);
                if s.len() < k {
                    let missing: Vec<usize> = (0..k - s.len())
                        .map(|_| s[rng.random_range(0..s.len())])
                        .collect();
                    s.extend(missing);
                }
                s.chunks_exact(k).map(<[usize]>::to_vec).collect()
            })
            .collect();
        // Max-heap on (groups left, random tie-break); the tie-break is redrawn whenever a class
        // is put back, so equal classes meet in changing company.
        let mut heap: BinaryHeap<(usize, u64, usize)> = groups
            .iter()
            .enumerate()
            .map(|(c, g)| (g.len(), rng.random(), c))
            .collect();
        let mut batches = Vec::with_capacity(self.batches_per_epoch());
        let mut taken = Vec::with_capacity(p);
        while heap.len() >= p {
            let mut batch = Vec::with_capacity(p * k);
            taken.clear();
            for _ in 0..p {
                let (left, _, c) = heap.pop().expect("heap holds at least p classes");
                batch.extend(
                    groups[c]
                        .pop()
                        .expect("a class in the heap has a group left"),
                );
                taken.push((left - 1, c));
            }
            for &(left, c) in &taken {
                if left > 0 {
                    heap.push((left, rng.random(), c));
                }
            }
            batches.push(batch);
        }
        batches.shuffle(&mut rng);
        batches
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels_of(sizes: &[usize]) -> Vec<usize> {
        sizes
            .iter()
            .enumerate()
            .flat_map(|(c, &n)| std::iter::repeat_n(c, n))
            .collect()
    }

    #[test]
    fn balanced_classes_use_every_sample_exactly_once() {
        let labels = labels_of(&[6; 10]);
        let s = PkSamplerConfig::new(5, 3, 1).init(&labels, &[]).unwrap();
        let batches = s.batches(0);
        assert_eq!(batches.len(), 4);
        assert_eq!(s.batches_per_epoch(), 4);
        let mut all: Vec<usize> = batches.concat();
        all.sort_unstable();
        assert_eq!(all, (0..60).collect::<Vec<_>>());
    }

    #[test]
    fn epochs_depend_only_on_seed_and_epoch() {
        let labels = labels_of(&[7, 9, 4, 12, 5, 8]);
        let cfg = PkSamplerConfig::new(3, 2, 42);
        let a = cfg.init(&labels, &[]).unwrap();
        let b = cfg.init(&labels, &[]).unwrap();
        // b has produced other epochs first: no effect on epoch 3.
        let _ = (b.batches(0), b.batches(7));
        assert_eq!(a.batches(3), b.batches(3));
        assert_ne!(a.batches(3), a.batches(4));
        let other = PkSamplerConfig::new(3, 2, 43).init(&labels, &[]).unwrap();
        assert_ne!(a.batches(3), other.batches(3));
    }

    #[test]
    fn small_classes_error_skip_or_draw_with_replacement() {
        let labels = labels_of(&[4, 4, 1, 4]);
        let names: Vec<String> = ["ant", "bee", "cat", "dog"].map(String::from).to_vec();
        let err = PkSamplerConfig::new(2, 2, 0)
            .init(&labels, &names)
            .unwrap_err();
        assert!(
            matches!(&err, Error::ClassTooSmall { class, size: 1, k: 2 } if class == "cat"),
            "{err:?}"
        );
        assert!(err.to_string().contains("\"cat\" has 1 samples"), "{err}");

        let skip = PkSamplerConfig::new(2, 2, 0).with_small_classes(SmallClassPolicy::Skip);
        let batches = skip.init(&labels, &names).unwrap().batches(0);
        assert!(batches.concat().iter().all(|&i| labels[i] != 2));

        let repl =
            PkSamplerConfig::new(4, 2, 0).with_small_classes(SmallClassPolicy::WithReplacement);
        let s = repl.init(&labels, &names).unwrap();
        // The single "cat" sample (index 8) fills both of its slots.
        for batch in s.batches(0) {
            let cats: Vec<_> = batch.iter().filter(|&&i| labels[i] == 2).collect();
            assert_eq!(cats, [&8, &8]);
        }

        let err = PkSamplerConfig::new(4, 2, 0)
            .with_small_classes(SmallClassPolicy::Skip)
            .init(&labels, &names);
        assert!(matches!(
            err,
            Err(Error::NotEnoughClasses {
                needed: 4,
                available: 3
            })
        ));
        assert!(PkSamplerConfig::new(0, 2, 0).init(&labels, &names).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, rng_seed: proptest::test_runner::RngSeed::Fixed(7), ..ProptestConfig::default() })]

        /// Every batch has P distinct classes with K samples each, no index repeats within an
        /// epoch, and the batch count reaches the upper bound `batches_per_epoch` (no assembly
        /// can do better: a class gives at most one group per batch).
        #[test]
        fn batches_are_p_by_k_without_repeats(
            sizes in proptest::collection::vec(1usize..15, 2..12),
            p in 1usize..5,
            k in 1usize..5,
            seed in any::<u64>(),
            epoch in 0u64..1000,
        ) {
            let labels = labels_of(&sizes);
            let cfg = PkSamplerConfig::new(p, k, seed).with_small_classes(SmallClassPolicy::Skip);
            let Ok(s) = cfg.init(&labels, &[]) else {
                let eligible = sizes.iter().filter(|&&n| n >= k).count();
                prop_assert!(eligible < p);
                return Ok(());
            };
            let batches = s.batches(epoch);
            prop_assert_eq!(batches.len(), s.batches_per_epoch());
            let mut seen = vec![false; labels.len()];
            for batch in &batches {
                prop_assert_eq!(batch.len(), p * k);
                for (g, group) in batch.chunks(k).enumerate() {
                    prop_assert!(group.iter().all(|&i| labels[i] == labels[group[0]]));
                    prop_assert!(batch.chunks(k).skip(g + 1).all(|o| labels[o[0]] != labels[group[0]]));
                }
                for &i in batch {
                    prop_assert!(!seen[i], "index {} twice", i);
                    seen[i] = true;
                }
            }
        }
    }
}
