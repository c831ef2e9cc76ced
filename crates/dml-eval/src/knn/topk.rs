//! [`TopK`]: a bounded max-heap keeping one query's `k` best candidates.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::scan::Sink;

/// A candidate neighbour, ordered by `(key, index)`: lower key first, then lower index, which
/// is the deterministic tie rule of every dml ranking.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pub key: f32,
    pub index: u32,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key
            .total_cmp(&other.key)
            .then(self.index.cmp(&other.index))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

/// The `k` smallest candidates seen so far; the heap's top is the worst of them.
pub(crate) struct TopK {
    k: usize,
    heap: BinaryHeap<Candidate>,
}

impl TopK {
    /// An empty list keeping `k >= 1` candidates.
    pub fn new(k: usize) -> Self {
        debug_assert!(k > 0);
        Self {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    /// The kept candidates, best first.
    pub fn into_sorted(self) -> Vec<Candidate> {
        self.heap.into_sorted_vec()
    }
}

impl Sink for TopK {
    fn bound(&self) -> f32 {
        match self.heap.peek() {
            Some(worst) if self.heap.len() == self.k => worst.key,
            _ => f32::INFINITY,
        }
    }

    fn offer(&mut self, key: f32, index: u32) {
        let candidate = Candidate { key, index };
        if self.heap.len() < self.k {
            self.heap.push(candidate);
        } else if let Some(mut worst) = self.heap.peek_mut()
            && candidate < *worst
        {
            *worst = candidate;
        }
    }

    fn blank(&self) -> Self {
        TopK::new(self.k)
    }

    fn absorb(&mut self, other: Self) {
        for c in other.heap {
            if c.key <= self.bound() {
                self.offer(c.key, c.index);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_k_best_with_ties_to_the_lower_index() {
        let mut top = TopK::new(3);
        for (i, key) in [5.0, 1.0, 3.0, 1.0, 0.5, 3.0, 9.0].into_iter().enumerate() {
            if key <= top.bound() {
                top.offer(key, i as u32);
            }
        }
        let kept: Vec<(f32, u32)> = top.into_sorted().iter().map(|c| (c.key, c.index)).collect();
        assert_eq!(kept, vec![(0.5, 4), (1.0, 1), (1.0, 3)]);
    }

    /// Two copies that saw disjoint halves, absorbed, keep what one list seeing all keeps.
    #[test]
    fn absorbing_a_copy_equals_seeing_everything() {
        let keys = [4.0, 2.0, 2.0, 7.0, 1.0, 2.0, 0.5, 9.0, 2.0];
        let mut whole = TopK::new(4);
        let mut left = whole.blank();
        let mut right = whole.blank();
        for (i, &key) in keys.iter().enumerate() {
            for top in [&mut whole, if i % 2 == 0 { &mut left } else { &mut right }] {
                if key <= top.bound() {
                    top.offer(key, i as u32);
                }
            }
        }
        left.absorb(right);
        assert_eq!(left.into_sorted(), whole.into_sorted());
    }

    #[test]
    fn a_tie_with_the_worst_replaces_it_only_from_a_lower_index() {
        let mut top = TopK::new(1);
        top.offer(2.0, 5);
        top.offer(2.0, 7);
        assert_eq!(top.bound(), 2.0);
        top.offer(2.0, 3);
        assert_eq!(top.into_sorted()[0].index, 3);
    }
}
