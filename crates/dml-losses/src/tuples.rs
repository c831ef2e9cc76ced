//! Mined tuples as types: triplets `(anchor, positive, negative)` and pair sets
//! `(anchor_pos, positive, anchor_neg, negative)`.
//!
//! Indices are `u32` (half the memory of `usize`; a batch has far fewer than 2^32 rows).
//! Conversions are explicit and state their cost; the "all tuples" generators exist for small
//! batches and reports, the losses themselves never need them.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Triplets in three parallel lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TripletIndices {
    /// Anchor rows.
    pub anchor: Vec<u32>,
    /// Positive rows (same label as the anchor).
    pub positive: Vec<u32>,
    /// Negative rows (another label).
    pub negative: Vec<u32>,
}

/// Positive pairs and negative pairs in four parallel lists (PML's `(a1, p, a2, n)`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairIndices {
    /// Anchors of the positive pairs.
    pub anchor_pos: Vec<u32>,
    /// Positives.
    pub positive: Vec<u32>,
    /// Anchors of the negative pairs.
    pub anchor_neg: Vec<u32>,
    /// Negatives.
    pub negative: Vec<u32>,
}

/// What a miner produces, or what a caller hands a loss instead of a miner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tuples {
    /// `(anchor, positive, negative)` triplets.
    Triplets(TripletIndices),
    /// Positive and negative pairs.
    Pairs(PairIndices),
}

impl TripletIndices {
    /// Number of triplets.
    pub fn len(&self) -> usize {
        self.anchor.len()
    }

    /// True when there are no triplets.
    pub fn is_empty(&self) -> bool {
        self.anchor.is_empty()
    }

    /// Appends one triplet.
    pub fn push(&mut self, a: usize, p: usize, n: usize) {
        self.anchor.push(a as u32);
        self.positive.push(p as u32);
        self.negative.push(n as u32);
    }

    /// Iterates the triplets as `usize` indices.
    pub fn iter(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        self.anchor
            .iter()
            .zip(&self.positive)
            .zip(&self.negative)
            .map(|((&a, &p), &n)| (a as usize, p as usize, n as usize))
    }

    /// Every triplet `(a, p, n)` with `p != a` of `a`'s label and `n` of another label, in
    /// lexicographic order (PML's `get_all_triplets_indices`, note 4).
    ///
    /// Costs O(output); fails with [`Error::TupleBudgetExceeded`] before allocating when the
    /// batch has more than `budget` triplets.
    pub fn all(labels: &[i64], budget: u64) -> Result<Self> {
        let classes = LabelCounts::new(labels);
        let needed: u64 = labels
            .iter()
            .map(|&l| {
                let same = classes.count(l) as u64;
                (same - 1) * (labels.len() as u64 - same)
            })
            .sum();
        if needed > budget {
            return Err(Error::TupleBudgetExceeded {
                miner: "all triplets",
                needed,
                budget,
            });
        }
        let mut out = TripletIndices::default();
        for (a, &la) in labels.iter().enumerate() {
            for (p, &lp) in labels.iter().enumerate() {
                if p == a || lp != la {
                    continue;
                }
                for (n, &ln) in labels.iter().enumerate() {
                    if ln != la {
                        out.push(a, p, n);
                    }
                }
            }
        }
        Ok(out)
    }
}

impl PairIndices {
    /// Number of positive pairs.
    pub fn num_pos(&self) -> usize {
        self.anchor_pos.len()
    }

    /// Number of negative pairs.
    pub fn num_neg(&self) -> usize {
        self.anchor_neg.len()
    }

    /// Positive pairs as `usize` indices.
    pub fn pos_pairs(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.anchor_pos
            .iter()
            .zip(&self.positive)
            .map(|(&a, &p)| (a as usize, p as usize))
    }

    /// Negative pairs as `usize` indices.
    pub fn neg_pairs(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.anchor_neg
            .iter()
            .zip(&self.negative)
            .map(|(&a, &n)| (a as usize, n as usize))
    }

    /// Every ordered positive pair `(i, j)`, `i != j`, and every ordered negative pair, in
    /// row-major order (PML's `get_all_pairs_indices`). Costs O(n^2) time and O(output) memory.
    pub fn all(labels: &[i64]) -> Self {
        let mut out = PairIndices::default();
        for (i, &li) in labels.iter().enumerate() {
            for (j, &lj) in labels.iter().enumerate() {
                if li == lj {
                    if i != j {
                        out.anchor_pos.push(i as u32);
                        out.positive.push(j as u32);
                    }
                } else {
                    out.anchor_neg.push(i as u32);
                    out.negative.push(j as u32);
                }
            }
        }
        out
    }

    /// Crosses every positive pair with every negative pair of the same anchor (PML's
    /// `convert_to_triplets` on a pair tuple, note 5): for positive pair `k` in order, the
    /// negatives of its anchor in order. Costs O(output); fails with
    /// [`Error::TupleBudgetExceeded`] before allocating when that exceeds `budget`.
    pub fn to_triplets(&self, budget: u64) -> Result<TripletIndices> {
        let mut by_anchor: std::collections::HashMap<u32, Vec<u32>> =
            std::collections::HashMap::new();
        for (&a, &n) in self.anchor_neg.iter().zip(&self.negative) {
            by_anchor.entry(a).or_default().push(n);
        }
        let needed: u64 = self
            .anchor_pos
            .iter()
            .map(|a| by_anchor.get(a).map_or(0, |v| v.len() as u64))
            .sum();
        if needed > budget {
            return Err(Error::TupleBudgetExceeded {
                miner: "pairs to triplets",
                needed,
                budget,
            });
        }
        let mut out = TripletIndices::default();
        for (&a, &p) in self.anchor_pos.iter().zip(&self.positive) {
            for &n in by_anchor.get(&a).map_or(&[][..], |v| v.as_slice()) {
                out.anchor.push(a);
                out.positive.push(p);
                out.negative.push(n);
            }
        }
        Ok(out)
    }
}

impl From<&TripletIndices> for PairIndices {
    /// `(a, p, n)` becomes the pairs `(a, p)` and `(a, n)`, duplicates kept (PML note 5).
    /// Costs O(triplets).
    fn from(t: &TripletIndices) -> Self {
        PairIndices {
            anchor_pos: t.anchor.clone(),
            positive: t.positive.clone(),
            anchor_neg: t.anchor.clone(),
            negative: t.negative.clone(),
        }
    }
}

impl Tuples {
    /// The index lists in PML's order: 3 lists for triplets, 4 for pairs.
    pub fn lists(&self) -> Vec<&[u32]> {
        match self {
            Tuples::Triplets(t) => vec![&t.anchor, &t.positive, &t.negative],
            Tuples::Pairs(p) => vec![&p.anchor_pos, &p.positive, &p.anchor_neg, &p.negative],
        }
    }

    /// Checks list lengths and that every index is a row of a batch of `n`.
    pub fn validate(&self, n: usize) -> Result<()> {
        let names: &[&'static str] = match self {
            Tuples::Triplets(_) => &["anchor", "positive", "negative"],
            Tuples::Pairs(_) => &["anchor_pos", "positive", "anchor_neg", "negative"],
        };
        let lists = self.lists();
        let same_length: &[(usize, usize)] = match self {
            Tuples::Triplets(_) => &[(0, 1), (0, 2)],
            Tuples::Pairs(_) => &[(0, 1), (2, 3)],
        };
        for &(i, j) in same_length {
            if lists[i].len() != lists[j].len() {
                return Err(Error::LengthMismatch {
                    what: "tuple index lists that must be parallel",
                    expected: lists[i].len(),
                    found: lists[j].len(),
                });
            }
        }
        for (list, what) in lists.iter().zip(names) {
            if let Some(&bad) = list.iter().find(|&&v| v as usize >= n) {
                return Err(Error::IndexOutOfRange {
                    what,
                    index: bad as usize,
                    len: n,
                });
            }
        }
        Ok(())
    }

    /// As positive and negative pairs (triplets are split, duplicates kept). Costs a copy.
    pub fn to_pairs(&self) -> PairIndices {
        match self {
            Tuples::Triplets(t) => PairIndices::from(t),
            Tuples::Pairs(p) => p.clone(),
        }
    }

    /// How often each row appears anywhere in the tuple, divided by the largest count: PML's
    /// `convert_to_weights`, used by proxy losses to weight mined samples. All ones when the
    /// tuple is empty.
    pub fn row_weights<T: dml_core::Real>(&self, n: usize) -> Vec<T> {
        let mut counts = vec![0u64; n];
        for list in self.lists() {
            for &i in list {
                counts[i as usize] += 1;
            }
        }
        let max = counts.iter().copied().max().unwrap_or(0);
        if max == 0 {
            return vec![T::one(); n];
        }
        counts
            .iter()
            .map(|&c| T::of(c as f64) / T::of(max as f64))
            .collect()
    }
}

/// Class sizes of a label vector, for "how many positives / negatives does row i have".
#[derive(Debug, Clone)]
pub struct LabelCounts {
    counts: std::collections::HashMap<i64, usize>,
}

impl LabelCounts {
    /// Counts every label.
    pub fn new(labels: &[i64]) -> Self {
        let mut counts = std::collections::HashMap::new();
        for &l in labels {
            *counts.entry(l).or_insert(0) += 1;
        }
        Self { counts }
    }

    /// Number of rows carrying `label`.
    pub fn count(&self, label: i64) -> usize {
        self.counts.get(&label).copied().unwrap_or(0)
    }

    /// Number of distinct labels.
    pub fn num_classes(&self) -> usize {
        self.counts.len()
    }
}

/// Labels as dense class ids (`u32`, so that a vector of ids is as wide as a vector of `f32`
/// scores), with each class's rows: for kernels that visit a row's positives directly and mask
/// its negatives in vectorised loops.
#[derive(Debug, Clone)]
pub(crate) struct Classes {
    /// The class id of each row (ids in order of first appearance).
    pub ids: Vec<u32>,
    /// The rows of each class, ascending.
    members: Vec<Vec<u32>>,
}

impl Classes {
    /// Numbers the labels.
    pub fn new(labels: &[i64]) -> Self {
        let mut id_of: std::collections::HashMap<i64, u32> = std::collections::HashMap::new();
        let mut members: Vec<Vec<u32>> = Vec::new();
        let ids = labels
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                let id = *id_of.entry(l).or_insert_with(|| {
                    members.push(Vec::new());
                    (members.len() - 1) as u32
                });
                members[id as usize].push(i as u32);
                id
            })
            .collect();
        Self { ids, members }
    }

    /// The rows of class `id`, ascending.
    pub fn members(&self, id: u32) -> &[u32] {
        &self.members[id as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_triplets_are_lexicographic_and_counted() {
        let labels = [0, 1, 0, 1, 2];
        let t = TripletIndices::all(&labels, 1000).unwrap();
        let v: Vec<_> = t.iter().collect();
        assert_eq!(v.len(), 2 * 3 * 2);
        assert!(v.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(v[0], (0, 2, 1));
        assert!(matches!(
            TripletIndices::all(&labels, 5),
            Err(Error::TupleBudgetExceeded { needed: 12, .. })
        ));
    }

    #[test]
    fn pairs_cross_into_triplets_per_anchor() {
        let p = PairIndices {
            anchor_pos: vec![0, 1],
            positive: vec![1, 0],
            anchor_neg: vec![0, 0, 2],
            negative: vec![2, 3, 0],
        };
        let t = p.to_triplets(100).unwrap();
        assert_eq!(t.iter().collect::<Vec<_>>(), vec![(0, 1, 2), (0, 1, 3)]);
    }

    #[test]
    fn validate_names_the_bad_index() {
        let t = Tuples::Triplets(TripletIndices {
            anchor: vec![0],
            positive: vec![1],
            negative: vec![9],
        });
        assert!(matches!(
            t.validate(4),
            Err(Error::IndexOutOfRange {
                what: "negative",
                index: 9,
                len: 4
            })
        ));
    }

    #[test]
    fn row_weights_follow_counts() {
        let t = Tuples::Triplets(TripletIndices {
            anchor: vec![0, 0],
            positive: vec![1, 1],
            negative: vec![2, 3],
        });
        assert_eq!(t.row_weights::<f64>(5), vec![1.0, 1.0, 0.5, 0.5, 0.0]);
    }

    #[test]
    fn classes_number_labels_and_list_rows() {
        let c = Classes::new(&[7, -2, 7, 5, -2]);
        assert_eq!(c.ids, vec![0, 1, 0, 2, 1]);
        assert_eq!(c.members(0), &[0, 2]);
        assert_eq!(c.members(1), &[1, 4]);
        assert_eq!(c.members(2), &[3]);
    }
}
