//! Miners: pick informative tuples from a batch, on the detached score matrix.
//!
//! A miner never carries gradient. Its output is typed ([`Tuples::Triplets`] or
//! [`Tuples::Pairs`]) and ordered like PML's, so `dml loss` can compare it index by index.
//! Miners that could emit O(n^3) tuples stream per anchor and stop with
//! [`crate::Error::TupleBudgetExceeded`] before allocating more than their budget; losses that
//! can evaluate a miner inline (see [`crate::loss::LossKernel::fuses`]) never materialise it.

mod batch_hard;
mod distance_weighted;
mod multi_similarity;
mod semi_hard;
mod triplet_margin;

pub use batch_hard::BatchHardMiner;
pub use distance_weighted::DistanceWeightedMiner;
pub(crate) use multi_similarity::MultiSimilarityCuts;
pub use multi_similarity::MultiSimilarityMiner;
pub use semi_hard::SemiHardMiner;
pub use triplet_margin::{TripletMarginMiner, TripletType};

use dml_core::Real;
use serde::{Deserialize, Serialize};

use crate::distance::{Distance, Scores};
use crate::error::Result;
use crate::matrix::MatrixRef;
use crate::tuples::Tuples;

/// Default budget of materialised tuples: 2^26 (256 MiB of `u32` triplets).
pub const DEFAULT_TUPLE_BUDGET: u64 = 1 << 26;

/// Every miner dml implements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "miner", rename_all = "snake_case")]
pub enum Miner {
    /// See [`TripletMarginMiner`].
    TripletMargin(TripletMarginMiner),
    /// See [`BatchHardMiner`].
    BatchHard(BatchHardMiner),
    /// See [`SemiHardMiner`].
    SemiHard(SemiHardMiner),
    /// See [`MultiSimilarityMiner`].
    MultiSimilarity(MultiSimilarityMiner),
    /// See [`DistanceWeightedMiner`].
    DistanceWeighted(DistanceWeightedMiner),
}

impl Miner {
    /// PML's class name.
    pub fn name(&self) -> &'static str {
        match self {
            Miner::TripletMargin(_) => "TripletMarginMiner",
            Miner::BatchHard(_) => "BatchHardMiner",
            Miner::SemiHard(_) => "SemiHardMiner",
            Miner::MultiSimilarity(_) => "MultiSimilarityMiner",
            Miner::DistanceWeighted(_) => "DistanceWeightedMiner",
        }
    }

    /// The distance the miner scores pairs with.
    pub fn distance(&self) -> Distance {
        match self {
            Miner::TripletMargin(m) => m.distance(),
            Miner::BatchHard(m) => m.distance(),
            Miner::SemiHard(m) => m.distance(),
            Miner::MultiSimilarity(m) => m.distance(),
            Miner::DistanceWeighted(_) => DistanceWeightedMiner::DISTANCE,
        }
    }

    /// Mines tuples from a batch (`step` only varies random miners between calls).
    pub fn mine<T: Real>(
        &self,
        embeddings: MatrixRef<'_, T>,
        labels: &[i64],
        step: u64,
    ) -> Result<Tuples> {
        if let Miner::BatchHard(m) = self {
            // Keeps O(1) per anchor: streamed, never an `n x n` matrix.
            return Ok(Tuples::Triplets(m.mine_embeddings(embeddings, labels)));
        }
        let scores = self.distance().scores(embeddings, None);
        self.mine_scores(&scores, labels, embeddings.cols(), step)
    }

    /// Mines tuples from a precomputed self score matrix of [`Miner::distance`]; `dim` is the
    /// embedding width.
    pub fn mine_scores<T: Real>(
        &self,
        scores: &Scores<T>,
        labels: &[i64],
        dim: usize,
        step: u64,
    ) -> Result<Tuples> {
        Ok(match self {
            Miner::TripletMargin(m) => Tuples::Triplets(m.mine(scores, labels)?),
            Miner::BatchHard(m) => Tuples::Triplets(m.mine(scores, labels)),
            Miner::SemiHard(m) => Tuples::Triplets(m.mine(scores, labels)),
            Miner::MultiSimilarity(m) => Tuples::Pairs(m.mine(scores, labels)),
            Miner::DistanceWeighted(m) => Tuples::Triplets(m.mine(scores, labels, dim, step)),
        })
    }
}

macro_rules! impl_from_miner {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        $(impl From<$ty> for Miner {
            fn from(m: $ty) -> Self {
                Miner::$variant(m)
            }
        })*
    };
}

impl_from_miner!(
    TripletMargin(TripletMarginMiner),
    BatchHard(BatchHardMiner),
    SemiHard(SemiHardMiner),
    MultiSimilarity(MultiSimilarityMiner),
    DistanceWeighted(DistanceWeightedMiner),
);

/// A row's negatives sorted by farness (distance, or negated similarity), ascending.
///
/// Ties keep index order, so results do not depend on the sort's stability.
pub(crate) fn sorted_negatives<T: Real>(
    scores: &Scores<T>,
    labels: &[i64],
    anchor: usize,
) -> (Vec<T>, Vec<u32>) {
    let dist = scores.distance();
    let row = scores.row(anchor);
    let mut pairs: Vec<(T, u32)> = row
        .iter()
        .enumerate()
        .filter(|&(j, _)| labels[j] != labels[anchor])
        .map(|(j, &s)| (dist.farness(s), j as u32))
        .collect();
    pairs.sort_unstable_by(|a, b| {
        a.0.partial_cmp(&b.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.1.cmp(&b.1))
    });
    pairs.into_iter().unzip()
}
