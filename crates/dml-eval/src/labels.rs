//! [`Labels`]: class labels as dense ids plus the names they came from.

use std::collections::HashMap;
use std::hash::Hash;

/// Class labels of a set of items: one dense id per item, ids numbered in order of first
/// appearance, and the original name of every id.
///
/// Metrics only compare ids; names are kept so reports can print the user's own labels
/// (integers from `.npy`, strings from text files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    ids: Vec<u32>,
    names: Vec<String>,
}

impl Labels {
    /// Numbers distinct values in order of first appearance; each value's `to_string` is its
    /// name.
    ///
    /// ```
    /// let l = dml_eval::Labels::from_values(["cat", "dog", "cat"]);
    /// assert_eq!(l.ids(), &[0, 1, 0]);
    /// assert_eq!(l.names(), &["cat".to_string(), "dog".to_string()]);
    /// ```
    pub fn from_values<T: Hash + Eq + ToString>(values: impl IntoIterator<Item = T>) -> Self {
        let mut seen: HashMap<T, u32> = HashMap::new();
        let mut names = Vec::new();
        let ids = values
            .into_iter()
            .map(|v| {
                let next = seen.len() as u32;
                *seen.entry(v).or_insert_with_key(|v| {
                    names.push(v.to_string());
                    next
                })
            })
            .collect();
        Self { ids, names }
    }

    /// The dense id of every item.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// The name of every id (`names()[id]`).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Number of distinct labels.
    pub fn num_classes(&self) -> usize {
        self.names.len()
    }

    /// Puts `self` (the reference set) and `other` (the queries) in one id space: equal names
    /// get equal ids, and names only `other` has get new ids after `self`'s.
    ///
    /// Needed because each file numbers its labels by first appearance on its own.
    pub fn unify(&self, other: &Labels) -> (Labels, Labels) {
        let mut index: HashMap<&str, u32> = self
            .names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i as u32))
            .collect();
        let mut names = self.names.clone();
        let remap: Vec<u32> = other
            .names
            .iter()
            .map(|n| {
                let next = index.len() as u32;
                *index.entry(n.as_str()).or_insert_with(|| {
                    names.push(n.clone());
                    next
                })
            })
            .collect();
        let other_ids = other.ids.iter().map(|&i| remap[i as usize]).collect();
        (
            Labels {
                ids: self.ids.clone(),
                names: names.clone(),
            },
            Labels {
                ids: other_ids,
                names,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_numbered_by_first_appearance() {
        let l = Labels::from_values([7i64, -1, 7, 3]);
        assert_eq!(l.ids(), &[0, 1, 0, 2]);
        assert_eq!(l.names(), &["7", "-1", "3"]);
        assert_eq!(l.num_classes(), 3);
    }

    #[test]
    fn unify_shares_ids_by_name() {
        let reference = Labels::from_values(["a", "b", "c"]);
        let query = Labels::from_values(["c", "z", "a"]);
        let (r, q) = reference.unify(&query);
        assert_eq!(r.ids(), &[0, 1, 2]);
        assert_eq!(q.ids(), &[2, 3, 0]);
        assert_eq!(q.names()[3], "z");
        assert_eq!(r.names(), q.names());
    }
}
