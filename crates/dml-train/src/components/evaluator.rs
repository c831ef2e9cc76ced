//! dml-eval as the trainer's [`Evaluator`]: exact k-NN retrieval metrics, NMI/AMI of a seeded
//! k-means, and few-shot episodes, under the report keys of [`EvalConfig::metric_keys`].

use dml_eval::{EpisodeConfig, Gallery, KMeansConfig, Metric, Spread, episode_accuracy, evaluate};

use crate::components::data::HeldOut;
use crate::config::{EvalConfig, MetricKind, SPREAD_KEYS};
use crate::error::{BoxError, ConfigError};
use crate::task::{Embeddings, Evaluator, Metrics};

/// Evaluates the held-out split's embeddings. Every random choice (k-means, episodes) comes
/// from a fixed seed, so the metrics are a function of the embeddings alone.
pub struct RetrievalEvaluator {
    config: EvalConfig,
    seed: u64,
    query_count: Option<usize>,
    super_labels: Option<Vec<u32>>,
}

impl RetrievalEvaluator {
    /// An evaluator for `held_out` as `config` asks, seeded by `seed`.
    ///
    /// # Errors
    /// A Recall@K whose K is more than the items a query can retrieve: found now, not after
    /// the first epoch of training.
    pub fn new(config: &EvalConfig, seed: u64, held_out: &HeldOut) -> Result<Self, ConfigError> {
        let items = held_out.items().count();
        let query_count = held_out.query_count();
        // A pooled split retrieves from every other item; queries from the gallery.
        let references = query_count.map_or(items.saturating_sub(1), |q| items - q);
        let largest_k = config.k.iter().copied().max().unwrap_or(0);
        if config.metrics.contains(&MetricKind::RecallAtK) && largest_k > references {
            return Err(ConfigError::Invalid {
                field: "eval.k".to_owned(),
                reason: format!(
                    "K = {largest_k} is more than the {references} items a query of the \
                     held-out split can retrieve"
                ),
            });
        }
        Ok(RetrievalEvaluator {
            config: config.clone(),
            seed,
            query_count,
            super_labels: held_out.query_super_labels(),
        })
    }

    /// The dml-eval metric behind `kind` (spread is computed here, not by dml-eval).
    fn metric(kind: MetricKind) -> Option<Metric> {
        Some(match kind {
            MetricKind::RecallAtK => Metric::RecallAtK,
            MetricKind::PrecisionAt1 => Metric::PrecisionAt1,
            MetricKind::RPrecision => Metric::RPrecision,
            MetricKind::MapAtR => Metric::MapAtR,
            MetricKind::Map => Metric::Map,
            MetricKind::Mrr => Metric::Mrr,
            MetricKind::Nmi => Metric::Nmi,
            MetricKind::Ami => Metric::Ami,
            MetricKind::Spread => return None,
        })
    }
}

/// At most this many rows go into the spread statistics, which cost O(rows^2 * dim).
const SPREAD_MAX_ROWS: usize = 4096;

/// Every k-th row of `values` (k the smallest stride that keeps at most
/// [`SPREAD_MAX_ROWS`]): a fixed, evenly spread sample, so large evaluation sets (60,000
/// images) do not spend minutes on a collapse signal that a few thousand points measure well.
fn spread_sample(values: &[f32], dim: usize) -> std::borrow::Cow<'_, [f32]> {
    let rows = values.len().checked_div(dim).unwrap_or(0);
    if rows <= SPREAD_MAX_ROWS {
        return std::borrow::Cow::Borrowed(values);
    }
    let stride = rows.div_ceil(SPREAD_MAX_ROWS);
    std::borrow::Cow::Owned(
        values
            .chunks_exact(dim)
            .step_by(stride)
            .flatten()
            .copied()
            .collect(),
    )
}

/// Rows whose index is below `split` (queries) and the others (gallery), with their labels.
fn partition(e: &Embeddings, labels: &[u32], split: usize) -> [(Vec<f32>, Vec<u32>); 2] {
    let mut parts: [(Vec<f32>, Vec<u32>); 2] = Default::default();
    for (row, (&index, &label)) in e.indices.iter().zip(labels).enumerate() {
        let part = &mut parts[usize::from(index >= split)];
        part.0
            .extend_from_slice(&e.values[row * e.dim..(row + 1) * e.dim]);
        part.1.push(label);
    }
    parts
}

impl Evaluator for RetrievalEvaluator {
    fn evaluate(&self, e: &Embeddings) -> Result<Metrics, BoxError> {
        let labels = e
            .labels
            .iter()
            .map(|&l| u32::try_from(l).map_err(|_| format!("label {l} is not a class id")))
            .collect::<Result<Vec<u32>, _>>()?;
        let (query, query_labels, gallery) = match self.query_count {
            Some(split) => {
                let [(q, ql), (g, gl)] = partition(e, &labels, split);
                (q, ql, Some((g, gl)))
            }
            None => (e.values.clone(), labels, None),
        };
        let query = dml_eval::Embeddings::new(query, e.dim)?;
        let gallery = gallery
            .map(|(values, labels)| dml_eval::Embeddings::new(values, e.dim).map(|g| (g, labels)))
            .transpose()?;
        let mut metrics = Metrics::new();
        if self.config.metrics.contains(&MetricKind::Spread) {
            // Over the whole split (queries and gallery): collapse shows in either.
            if let Some(spread) = Spread::of(&spread_sample(&e.values, e.dim), e.dim) {
                let [distance, std] = SPREAD_KEYS;
                metrics.insert(distance.into(), spread.mean_pairwise_distance);
                metrics.insert(std.into(), spread.embedding_std);
            }
        }
        let eval_metrics: Vec<Metric> = self
            .config
            .metrics
            .iter()
            .filter_map(|&m| Self::metric(m))
            .collect();
        if !eval_metrics.is_empty() {
            let eval_config = dml_eval::EvalConfig {
                metrics: eval_metrics,
                recall_ks: self.config.k.clone(),
                kmeans: KMeansConfig::new(1).with_seed(self.seed),
                ..dml_eval::EvalConfig::default()
            };
            let gallery_ref = gallery
                .as_ref()
                .map(|(embeddings, labels)| Gallery { embeddings, labels });
            let result = evaluate(&query, &query_labels, gallery_ref, &eval_config)?;
            if let Some(r) = &result.retrieval {
                for kind in &self.config.metrics {
                    match kind {
                        MetricKind::RecallAtK => {
                            for &(k, value) in &r.recall_at_k {
                                metrics.insert(format!("recall@{k}"), value);
                            }
                        }
                        MetricKind::PrecisionAt1 => {
                            metrics.insert("precision@1".into(), r.precision_at_1);
                        }
                        MetricKind::RPrecision => {
                            metrics.insert("r_precision".into(), r.r_precision);
                        }
                        MetricKind::MapAtR => {
                            metrics.insert("map@r".into(), r.map_at_r);
                        }
                        MetricKind::Map => {
                            metrics.insert("map".into(), r.map);
                        }
                        MetricKind::Mrr => {
                            metrics.insert("mrr".into(), r.mrr);
                        }
                        MetricKind::Nmi | MetricKind::Ami | MetricKind::Spread => {}
                    }
                }
            }
            if let Some(mi) = &result.mutual_info {
                if self.config.metrics.contains(&MetricKind::Nmi) {
                    metrics.insert("nmi".into(), mi.nmi);
                }
                if self.config.metrics.contains(&MetricKind::Ami) {
                    metrics.insert("ami".into(), mi.ami);
                }
            }
        }
        if let Some(episodes) = &self.config.episodes {
            let groups: Option<Vec<u32>> = match (&self.super_labels, episodes.within_super_class) {
                (Some(by_index), true) => Some(
                    e.indices
                        .iter()
                        .filter(|&&i| self.query_count.is_none_or(|q| i < q))
                        .map(|&i| by_index[i])
                        .collect(),
                ),
                _ => None,
            };
            let accuracy = episode_accuracy(
                &query,
                &query_labels,
                groups.as_deref(),
                &EpisodeConfig {
                    ways: episodes.ways,
                    shots: episodes.shots,
                    queries_per_class: episodes.queries_per_class,
                    episodes: episodes.episodes,
                    seed: self.seed,
                    ..EpisodeConfig::default()
                },
            )?;
            metrics.insert("episodes_nn".into(), accuracy.nearest_neighbour);
            metrics.insert("episodes_ncm".into(), accuracy.nearest_class_mean);
        }
        Ok(metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_uses_every_row_of_small_sets_and_an_even_sample_of_large_ones() {
        let small = vec![1.0f32; 10 * 3];
        assert_eq!(spread_sample(&small, 3).len(), 30);
        let rows = 2 * SPREAD_MAX_ROWS + 1;
        let large: Vec<f32> = (0..rows).flat_map(|r| [r as f32, 0.0]).collect();
        let sample = spread_sample(&large, 2);
        assert!(sample.len() / 2 <= SPREAD_MAX_ROWS);
        // Stride 3: rows 0, 3, 6, ...
        assert_eq!(&sample[..6], &[0.0, 0.0, 3.0, 0.0, 6.0, 0.0]);
    }
}
