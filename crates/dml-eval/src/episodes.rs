//! N-way K-shot episode accuracy (the Omniglot one-shot protocol) by nearest neighbour and
//! nearest class mean.
//!
//! ```text
//! episode   pick a group (e.g. an alphabet; or all items as one group), N of its classes,
//!           and for each class K support items and Q query items, all distinct
//! NN        a query's prediction is the class of its nearest support item
//! NCM       a query's prediction is the class whose support mean is nearest
//! accuracy  correct / (N Q) per episode, averaged over episodes; ci95 = 1.96 sd / sqrt(E)
//! ```
//! Ties go to the lower support position (class order, then item order), so results are
//! deterministic. Groups are chosen uniformly among those with at least N usable classes (a
//! class is usable with at least K + Q items), classes and items uniformly without
//! replacement, all from one ChaCha8 stream seeded with [`EpisodeConfig::seed`]. For cosine,
//! class means are means of the normalised supports.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::embeddings::Embeddings;
use crate::error::{Error, Result};
use crate::knn::Distance;

/// Settings of [`episode_accuracy`].
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeConfig {
    /// Classes per episode (N). Default: 20 (Omniglot 20-way).
    pub ways: usize,
    /// Support items per class (K). Default: 1.
    pub shots: usize,
    /// Query items per class. Default: 1.
    pub queries_per_class: usize,
    /// Number of episodes. Default: 1000.
    pub episodes: usize,
    /// How closeness is measured. Default: squared Euclidean.
    pub distance: Distance,
    /// Seed of every random choice. Default: 0.
    pub seed: u64,
}

impl Default for EpisodeConfig {
    fn default() -> Self {
        Self {
            ways: 20,
            shots: 1,
            queries_per_class: 1,
            episodes: 1000,
            distance: Distance::SquaredEuclidean,
            seed: 0,
        }
    }
}

/// Mean episode accuracies with their 95% confidence half-widths.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpisodeAccuracy {
    /// Accuracy of the nearest support item's class.
    pub nearest_neighbour: f64,
    /// 1.96 standard deviations of the per-episode accuracy over sqrt(episodes).
    pub nearest_neighbour_ci95: f64,
    /// Accuracy of the nearest class mean.
    pub nearest_class_mean: f64,
    /// 1.96 standard deviations of the per-episode accuracy over sqrt(episodes).
    pub nearest_class_mean_ci95: f64,
    /// Episodes drawn.
    pub episodes: usize,
}

/// One drawn episode: for each class, its support items then its query items.
struct Episode {
    items: Vec<Vec<usize>>,
}

/// Draws episodes and scores both classifiers; `groups` (one id per row, e.g. the alphabet)
/// confines each episode to one group, `None` draws across all items.
///
/// # Errors
/// Length mismatches, zero ways / shots / queries / episodes ([`Error::InvalidParameter`]),
/// and [`Error::NotEnoughClasses`] when no group has `ways` usable classes.
pub fn episode_accuracy(
    embeddings: &Embeddings,
    labels: &[u32],
    groups: Option<&[u32]>,
    config: &EpisodeConfig,
) -> Result<EpisodeAccuracy> {
    validate(embeddings, labels, groups, config)?;
    let needed = config.shots + config.queries_per_class;
    // group -> class -> items, in index order, so the draw depends only on the data.
    let mut by_group: BTreeMap<u32, BTreeMap<u32, Vec<usize>>> = BTreeMap::new();
    for (i, &label) in labels.iter().enumerate() {
        let group = groups.map_or(0, |g| g[i]);
        by_group
            .entry(group)
            .or_default()
            .entry(label)
            .or_default()
            .push(i);
    }
    let eligible: Vec<Vec<&Vec<usize>>> = by_group
        .values()
        .map(|classes| {
            classes
                .values()
                .filter(|items| items.len() >= needed)
                .collect()
        })
        .filter(|classes: &Vec<&Vec<usize>>| classes.len() >= config.ways)
        .collect();
    if eligible.is_empty() {
        return Err(Error::NotEnoughClasses {
            ways: config.ways,
            shots: config.shots,
            queries: config.queries_per_class,
            needed,
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let episodes: Vec<Episode> = (0..config.episodes)
        .map(|_| {
            let classes = &eligible[sample(&mut rng, eligible.len(), 1).index(0)];
            let items = sample(&mut rng, classes.len(), config.ways)
                .into_iter()
                .map(|c| {
                    let pool = classes[c];
                    sample(&mut rng, pool.len(), needed)
                        .into_iter()
                        .map(|i| pool[i])
                        .collect()
                })
                .collect();
            Episode { items }
        })
        .collect();
    let prepared = match config.distance {
        Distance::Cosine => std::borrow::Cow::Owned(embeddings.l2_normalized()),
        _ => std::borrow::Cow::Borrowed(embeddings),
    };
    let scores: Vec<(f64, f64)> = episodes
        .par_iter()
        .map(|e| score_episode(&prepared, e, config))
        .collect();
    let (nn, nn_ci) = mean_and_ci(scores.iter().map(|s| s.0));
    let (ncm, ncm_ci) = mean_and_ci(scores.iter().map(|s| s.1));
    Ok(EpisodeAccuracy {
        nearest_neighbour: nn,
        nearest_neighbour_ci95: nn_ci,
        nearest_class_mean: ncm,
        nearest_class_mean_ci95: ncm_ci,
        episodes: config.episodes,
    })
}

fn validate(
    embeddings: &Embeddings,
    labels: &[u32],
    groups: Option<&[u32]>,
    config: &EpisodeConfig,
) -> Result<()> {
    if embeddings.is_empty() {
        return Err(Error::Empty { what: "episode" });
    }
    if labels.len() != embeddings.rows() {
        return Err(Error::LengthMismatch {
            what: "labels for the embeddings",
            expected: embeddings.rows(),
            found: labels.len(),
        });
    }
    if let Some(g) = groups
        && g.len() != embeddings.rows()
    {
        return Err(Error::LengthMismatch {
            what: "groups for the embeddings",
            expected: embeddings.rows(),
            found: g.len(),
        });
    }
    for (param, value) in [
        ("ways", config.ways),
        ("shots", config.shots),
        ("queries_per_class", config.queries_per_class),
        ("episodes", config.episodes),
    ] {
        if value == 0 {
            return Err(Error::InvalidParameter {
                param,
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
    }
    Ok(())
}

/// "Lower is closer" score of two rows under `distance` (rows already normalised for cosine).
fn key(distance: Distance, a: &[f32], b: &[f32]) -> f32 {
    match distance {
        Distance::SquaredEuclidean => a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum(),
        Distance::InnerProduct | Distance::Cosine => {
            -a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>()
        }
    }
}

/// Position of the smallest key (ties: the first).
fn argmin(keys: impl Iterator<Item = f32>) -> usize {
    keys.enumerate()
        .fold((usize::MAX, f32::INFINITY), |(bi, bk), (i, k)| {
            if bi == usize::MAX || k < bk {
                (i, k)
            } else {
                (bi, bk)
            }
        })
        .0
}

/// (NN accuracy, NCM accuracy) of one episode.
fn score_episode(e: &Embeddings, episode: &Episode, config: &EpisodeConfig) -> (f64, f64) {
    let shots = config.shots;
    let dim = e.dim();
    let means: Vec<Vec<f32>> = episode
        .items
        .iter()
        .map(|items| {
            let mut mean = vec![0.0f64; dim];
            for &i in &items[..shots] {
                for (m, &v) in mean.iter_mut().zip(e.row(i)) {
                    *m += f64::from(v);
                }
            }
            mean.iter().map(|&m| (m / shots as f64) as f32).collect()
        })
        .collect();
    let (mut nn, mut ncm, mut total) = (0usize, 0usize, 0usize);
    for (class, items) in episode.items.iter().enumerate() {
        for &q in &items[shots..] {
            let query = e.row(q);
            let nearest = argmin(
                episode
                    .items
                    .iter()
                    .flat_map(|s| &s[..shots])
                    .map(|&s| key(config.distance, query, e.row(s))),
            );
            nn += usize::from(nearest / shots == class);
            let mean = argmin(means.iter().map(|m| key(config.distance, query, m)));
            ncm += usize::from(mean == class);
            total += 1;
        }
    }
    (nn as f64 / total as f64, ncm as f64 / total as f64)
}

fn mean_and_ci(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = values.clone().count() as f64;
    let mean = values.clone().sum::<f64>() / n;
    let var = values.map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, 1.96 * var.sqrt() / n.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Classes on separate points of a line, items of a class close together; group = class / 5.
    fn line_classes(classes: u32, per: u32) -> (Embeddings, Vec<u32>, Vec<u32>) {
        let mut data = Vec::new();
        let mut labels = Vec::new();
        for c in 0..classes {
            for i in 0..per {
                data.push(c as f32 * 10.0 + i as f32 * 0.1);
                labels.push(c);
            }
        }
        let groups = labels.iter().map(|&l| l / 5).collect();
        (Embeddings::new(data, 1).unwrap(), labels, groups)
    }

    #[test]
    fn separable_classes_score_one() {
        let (e, labels, groups) = line_classes(10, 4);
        let config = EpisodeConfig {
            ways: 5,
            shots: 2,
            queries_per_class: 2,
            episodes: 50,
            ..EpisodeConfig::default()
        };
        for g in [None, Some(groups.as_slice())] {
            let acc = episode_accuracy(&e, &labels, g, &config).unwrap();
            assert_eq!(acc.nearest_neighbour, 1.0);
            assert_eq!(acc.nearest_class_mean, 1.0);
            assert_eq!(acc.nearest_neighbour_ci95, 0.0);
        }
    }

    #[test]
    fn identical_embeddings_score_chance_by_the_tie_rule() {
        // All items equal: every query predicts the first class of its episode.
        let labels: Vec<u32> = (0..40).map(|i| i / 4).collect();
        let e = Embeddings::new(vec![1.0; 40], 1).unwrap();
        let config = EpisodeConfig {
            ways: 4,
            episodes: 30,
            ..EpisodeConfig::default()
        };
        let acc = episode_accuracy(&e, &labels, None, &config).unwrap();
        assert!((acc.nearest_neighbour - 0.25).abs() < 1e-12);
        assert!((acc.nearest_class_mean - 0.25).abs() < 1e-12);
    }

    #[test]
    fn groups_confine_episodes() {
        let (e, labels, groups) = line_classes(10, 4);
        let config = EpisodeConfig {
            ways: 6,
            ..EpisodeConfig::default()
        };
        // groups of 5 classes cannot host 6-way episodes
        assert!(matches!(
            episode_accuracy(&e, &labels, Some(&groups), &config),
            Err(Error::NotEnoughClasses { ways: 6, .. })
        ));
        assert!(episode_accuracy(&e, &labels, None, &config).is_ok());
    }

    #[test]
    fn same_seed_same_result() {
        let labels: Vec<u32> = (0..60).map(|i| i % 12).collect();
        let data: Vec<f32> = (0..120)
            .map(|i| ((i * 2_654_435_761usize) % 1000) as f32 / 100.0)
            .collect();
        let e = Embeddings::new(data, 2).unwrap();
        let config = EpisodeConfig {
            ways: 5,
            episodes: 40,
            seed: 3,
            ..EpisodeConfig::default()
        };
        let a = episode_accuracy(&e, &labels, None, &config).unwrap();
        let b = episode_accuracy(&e, &labels, None, &config).unwrap();
        assert_eq!(a, b);
        assert!(a.nearest_neighbour > 0.0 && a.nearest_neighbour < 1.0);
    }

    #[test]
    fn bad_settings_are_errors() {
        let (e, labels, _) = line_classes(3, 2);
        let config = EpisodeConfig {
            ways: 0,
            ..EpisodeConfig::default()
        };
        assert!(matches!(
            episode_accuracy(&e, &labels, None, &config),
            Err(Error::InvalidParameter { param: "ways", .. })
        ));
        assert!(matches!(
            episode_accuracy(&e, &labels[..2], None, &EpisodeConfig::default()),
            Err(Error::LengthMismatch { .. })
        ));
    }
}
