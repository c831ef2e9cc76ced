//! Miners: pick informative tuples from a batch, on the detached score matrix.
//!
//! A miner never carries gradient. Its output is typed ([`Tuples::Triplets`] or
//! [`Tuples::Pairs`]) and ordered like PML's, so `dml loss` can compare it index by index.
//! Miners that could emit O(n^3) tuples stream per anchor and stop with
//! [`crate::Error::TupleBudgetExceeded`] before allocating more than their budget; losses that
//! can evaluate a miner inline (see [`crate::loss::LossKernel::fuses`]) never materialise it.

mod batch_hard;
mod triplet_margin;

pub use batch_hard::BatchHardMiner;
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
}

impl Miner {
    /// PML's class name.
    pub fn name(&self) -> &'static str {
        match self {
            Miner::TripletMargin(_) => "TripletMarginMiner",
            Miner::BatchHard(_) => "BatchHardMiner",
        }
    }

    /// The distance the miner scores pairs with.
    pub fn distance(&self) -> Distance {
        match self {
            Miner::TripletMargin(m) => m.distance(),
            Miner::BatchHard(m) => m.distance(),
        }
    }

    /// Mines tuples from a batch (`step` only varies random miners between calls).
    pub fn mine<T: Real>(
        &self,
        embeddings: MatrixRef<'_, T>,
        labels: &[i64],
        step: u64,
    ) -> Result<Tuples> {
        let scores = self.distance().scores(embeddings, None);
        self.mine_scores(&scores, labels, step)
    }

    /// Mines tuples from a precomputed self score matrix of [`Miner::distance`].
    pub fn mine_scores<T: Real>(
        &self,
        scores: &Scores<T>,
        labels: &[i64],
        _step: u64,
    ) -> Result<Tuples> {
        match self {
            Miner::TripletMargin(m) => m.mine(scores, labels).map(Tuples::Triplets),
            Miner::BatchHard(m) => Ok(Tuples::Triplets(m.mine(scores, labels))),
        }
    }
}

impl From<TripletMarginMiner> for Miner {
    fn from(m: TripletMarginMiner) -> Self {
        Miner::TripletMargin(m)
    }
}

impl From<BatchHardMiner> for Miner {
    fn from(m: BatchHardMiner) -> Self {
        Miner::BatchHard(m)
    }
}

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
    pairs.sort_unstable_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal).then(a.1.cmp(&b.1)));
    pairs.into_iter().unzip()
}
