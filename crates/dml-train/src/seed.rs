//! Seeds derived from the run seed: one independent stream per purpose, indexed by step, so
//! any step's randomness can be recomputed from `(seed, step)` alone. That is what lets a
//! resumed run replay exactly what an uninterrupted one would have done.

use rand::RngCore;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What a derived seed is for; each purpose has its own ChaCha stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedStream {
    /// Model weight initialisation (index 0).
    ModelInit,
    /// The backend's random state before each step (dropout, random layers), by step.
    Step,
    /// The loss's random choices (sampling miners), by step.
    Loss,
    /// Data order and augmentation, by epoch.
    Data,
    /// Evaluation randomness (k-means restarts, episode draws), by evaluation.
    Eval,
}

impl SeedStream {
    fn id(self) -> u64 {
        match self {
            SeedStream::ModelInit => 1,
            SeedStream::Step => 2,
            SeedStream::Loss => 3,
            SeedStream::Data => 4,
            SeedStream::Eval => 5,
        }
    }
}

/// The `index`-th seed of `stream`, from the run seed.
pub fn derive_seed(seed: u64, stream: SeedStream, index: u64) -> u64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream.id());
    // Each u64 draw consumes two 32-bit words of the stream.
    rng.set_word_pos(u128::from(index) * 2);
    rng.next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_a_function_of_seed_stream_and_index() {
        let a = derive_seed(7, SeedStream::Step, 1000);
        assert_eq!(a, derive_seed(7, SeedStream::Step, 1000));
        assert_ne!(a, derive_seed(7, SeedStream::Step, 1001));
        assert_ne!(a, derive_seed(7, SeedStream::Loss, 1000));
        assert_ne!(a, derive_seed(8, SeedStream::Step, 1000));
        // Random access equals sequential drawing.
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        rng.set_stream(SeedStream::Step.id());
        let sequential: Vec<u64> = (0..4).map(|_| rng.next_u64()).collect();
        let direct: Vec<u64> = (0..4)
            .map(|i| derive_seed(7, SeedStream::Step, i))
            .collect();
        assert_eq!(sequential, direct);
    }
}
