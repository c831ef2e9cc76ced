//! Batch samplers: which sample indices make up each batch of an epoch.

mod n_pair;
mod pk;

pub use n_pair::{NPairSampler, NPairSamplerConfig};
pub use pk::{PkSampler, PkSamplerConfig, SmallClassPolicy};

/// A source of batches of sample indices, one list per epoch.
///
/// An epoch's batches depend only on the sampler's settings and the epoch number, never on
/// the epochs asked for before: a resumed run calls `batches(e)` and skips the batches it has
/// already trained on.
pub trait BatchSampler: Send + Sync {
    /// Indices per batch.
    fn batch_size(&self) -> usize;
    /// Batches in every epoch.
    fn batches_per_epoch(&self) -> usize;
    /// The batches of epoch `epoch`, in order.
    fn batches(&self, epoch: u64) -> Vec<Vec<usize>>;
}

/// All indices `0..len` in order, in batches of `batch_size` (the last one shorter): the
/// evaluation order, for embedding a whole split.
///
/// # Panics
/// If `batch_size` is 0.
pub fn sequential_batches(len: usize, batch_size: usize) -> Vec<Vec<usize>> {
    assert!(batch_size > 0, "batch size must be positive");
    (0..len)
        .step_by(batch_size)
        .map(|s| (s..(s + batch_size).min(len)).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_batches_cover_everything_in_order() {
        assert_eq!(
            sequential_batches(5, 2),
            vec![vec![0, 1], vec![2, 3], vec![4]]
        );
        assert!(sequential_batches(0, 3).is_empty());
    }
}
