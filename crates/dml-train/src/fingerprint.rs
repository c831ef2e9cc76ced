//! The data a run started with, written to its folder as `data.json` and checked when the run
//! is resumed: batches are drawn by index, so a resumed run on a dataset that gained, lost or
//! relabelled images would silently train on other batches (and end with fewer steps).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One split: how many items and classes, and a digest of every item's name and class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitFingerprint {
    /// Items (images) in the split.
    pub items: usize,
    /// Classes in the split.
    pub classes: usize,
    /// SHA-256 (hex) over every item's description, class name and size in bytes, in order.
    pub sha256: String,
}

/// One item of a split, as the fingerprint sees it.
pub struct Item<'a> {
    /// Where it comes from (a path, or a synthetic id).
    pub name: &'a str,
    /// Its class name.
    pub class: &'a str,
    /// Its size in bytes, where it is a file.
    pub bytes: Option<u64>,
}

impl SplitFingerprint {
    /// The fingerprint of `items`, which hold `classes` classes.
    pub fn of<'a>(classes: usize, items: impl IntoIterator<Item = Item<'a>>) -> Self {
        let mut hash = Sha256::new();
        let mut count = 0;
        for item in items {
            count += 1;
            // Lengths first, so no two different lists hash the same bytes.
            for field in [item.name, item.class] {
                hash.update((field.len() as u64).to_le_bytes());
                hash.update(field.as_bytes());
            }
            hash.update(item.bytes.map_or(u64::MAX, |b| b).to_le_bytes());
        }
        let sha256 = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        SplitFingerprint {
            items: count,
            classes,
            sha256,
        }
    }
}

/// Every split of a run (`train`, and `test` when it has one).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DataFingerprint(pub BTreeMap<String, SplitFingerprint>);

impl DataFingerprint {
    /// What differs between the data a run started with (`self`) and `now`, in words; `None`
    /// when they are the same.
    pub fn difference(&self, now: &DataFingerprint) -> Option<String> {
        let names = self.0.keys().chain(now.0.keys());
        for name in names {
            match (self.0.get(name), now.0.get(name)) {
                (Some(a), Some(b)) if a == b => {}
                (Some(a), Some(b)) if a.items != b.items || a.classes != b.classes => {
                    return Some(format!(
                        "the {name} split had {} images of {} classes when the run started and \
                         has {} of {} now",
                        a.items, a.classes, b.items, b.classes
                    ));
                }
                (Some(_), Some(_)) => {
                    return Some(format!(
                        "the {name} split has as many images as when the run started, but \
                         their names, classes or sizes differ"
                    ));
                }
                (Some(_), None) => return Some(format!("the {name} split is gone")),
                (None, _) => return Some(format!("the {name} split is new")),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(items: &[(&str, &str, u64)]) -> SplitFingerprint {
        SplitFingerprint::of(
            2,
            items.iter().map(|&(name, class, bytes)| Item {
                name,
                class,
                bytes: Some(bytes),
            }),
        )
    }

    fn data(train: SplitFingerprint) -> DataFingerprint {
        DataFingerprint(BTreeMap::from([("train".to_owned(), train)]))
    }

    #[test]
    fn any_change_of_name_class_size_or_count_is_a_difference() {
        let base = [("a.png", "x", 10), ("b.png", "y", 12)];
        let start = data(split(&base));
        assert_eq!(start.difference(&data(split(&base))), None);
        let changes: [&[(&str, &str, u64)]; 5] = [
            &[("a.png", "x", 10)],
            &[("a.png", "x", 10), ("c.png", "y", 12)],
            &[("a.png", "y", 10), ("b.png", "y", 12)],
            &[("a.png", "x", 11), ("b.png", "y", 12)],
            &[("b.png", "y", 12), ("a.png", "x", 10)],
        ];
        for changed in changes {
            assert!(
                start.difference(&data(split(changed))).is_some(),
                "{changed:?}"
            );
        }
        let fewer = start.difference(&data(split(&base[..1]))).unwrap();
        assert!(
            fewer.contains("had 2 images") && fewer.contains("has 1"),
            "{fewer}"
        );
    }

    #[test]
    fn field_boundaries_count() {
        let a = split(&[("ab", "c", 1)]);
        let b = split(&[("a", "bc", 1)]);
        assert_ne!(a.sha256, b.sha256);
    }

    #[test]
    fn a_split_that_appears_or_goes_is_named() {
        let start = data(split(&[("a", "x", 1)]));
        let mut now = start.clone();
        now.0.insert("test".to_owned(), split(&[("t", "x", 1)]));
        assert_eq!(start.difference(&now).unwrap(), "the test split is new");
        assert_eq!(now.difference(&start).unwrap(), "the test split is gone");
    }
}
