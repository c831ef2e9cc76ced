//! Unreduced losses: what each element (pair, triplet, row) contributed before reduction.

use crate::tuples::TripletIndices;

/// What the entries of a [`LossTerm`] are indexed by (PML's `reduction_type` + `indices`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TermIndices {
    /// One loss per listed row (PML `element`).
    PerElement(Vec<u32>),
    /// One loss per positive pair (PML `pos_pair`).
    PerPosPair {
        /// Anchors.
        anchor: Vec<u32>,
        /// Positives.
        positive: Vec<u32>,
    },
    /// One loss per negative pair (PML `neg_pair`).
    PerNegPair {
        /// Anchors.
        anchor: Vec<u32>,
        /// Negatives.
        negative: Vec<u32>,
    },
    /// One loss per triplet (PML `triplet`).
    PerTriplet(TripletIndices),
    /// A single, already reduced value (PML `already_reduced`).
    Reduced,
}

/// One named sub-loss before reduction (PML's `{"losses", "indices", "reduction_type"}`).
#[derive(Debug, Clone, PartialEq)]
pub struct LossTerm<T> {
    /// The sub-loss name (`loss`, `pos_loss`, `neg_loss`, ...).
    pub name: &'static str,
    /// The per-element losses (one value for [`TermIndices::Reduced`]).
    pub losses: Vec<T>,
    /// What the entries are indexed by.
    pub indices: TermIndices,
}

impl TermIndices {
    /// PML's `reduction_type` string.
    pub fn reduction_type(&self) -> &'static str {
        match self {
            TermIndices::PerElement(_) => "element",
            TermIndices::PerPosPair { .. } => "pos_pair",
            TermIndices::PerNegPair { .. } => "neg_pair",
            TermIndices::PerTriplet(_) => "triplet",
            TermIndices::Reduced => "already_reduced",
        }
    }
}
