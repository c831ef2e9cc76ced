//! [`ImageList`]: the dataset every file-based reader produces.

use std::collections::BTreeMap;

use rayon::prelude::*;

use crate::store::ImageStore;
use crate::{Dataset, Error};

/// One image of a list, before class names become dense ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageEntry {
    /// Path relative to the store's root, `/`-separated.
    pub path: String,
    /// Class name.
    pub class: String,
    /// Super-class name (alphabet, product category), when the layout has one.
    pub super_class: Option<String>,
    /// The list file and line that named this image (`images.txt:12`), for error messages.
    pub origin: Option<String>,
}

/// A validated list of labelled images in an [`ImageStore`].
///
/// Class ids are dense and follow the class names' order: names that are all digits come
/// first in numeric order, then the others in byte order. Image order is the order given.
#[derive(Clone, Debug)]
pub struct ImageList {
    store: ImageStore,
    paths: Vec<String>,
    labels: Vec<usize>,
    class_names: Vec<String>,
    super_labels: Option<Vec<usize>>,
    super_class_names: Vec<String>,
}

/// Sort key of a class name: numbers numerically, before all other names.
fn class_key(name: &str) -> (bool, u128, &str) {
    match name.parse::<u128>() {
        Ok(n) if name.bytes().all(|b| b.is_ascii_digit()) => (false, n, name),
        _ => (true, 0, name),
    }
}

/// Dense ids for `names`, in [`class_key`] order.
fn dense_ids<'a>(names: impl Iterator<Item = &'a str>) -> (BTreeMap<&'a str, usize>, Vec<String>) {
    let mut unique: Vec<&str> = names.collect();
    unique.sort_by_key(|n| class_key(n));
    unique.dedup();
    let ids = unique.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    (ids, unique.into_iter().map(str::to_owned).collect())
}

impl ImageList {
    /// Builds a list from `entries`, checking that every file exists in `store`.
    ///
    /// `what` names the dataset or split in the error for an empty list. Either every entry
    /// has a super-class or none does.
    pub fn new(store: ImageStore, entries: Vec<ImageEntry>, what: &str) -> Result<Self, Error> {
        if entries.is_empty() {
            return Err(Error::EmptyDataset {
                what: what.to_owned(),
            });
        }
        if let Some(e) = entries.par_iter().find_first(|e| !store.contains(&e.path)) {
            return Err(Error::MissingFile {
                path: store.display_path(&e.path),
                listed_in: e.origin.clone(),
            });
        }
        let (class_ids, class_names) = dense_ids(entries.iter().map(|e| e.class.as_str()));
        let labels = entries
            .iter()
            .map(|e| class_ids[e.class.as_str()])
            .collect();
        let (super_labels, super_class_names) = if entries.iter().all(|e| e.super_class.is_some()) {
            let (ids, names) = dense_ids(entries.iter().filter_map(|e| e.super_class.as_deref()));
            let labels = entries
                .iter()
                .filter_map(|e| e.super_class.as_deref())
                .map(|s| ids[s])
                .collect();
            (Some(labels), names)
        } else {
            (None, Vec::new())
        };
        Ok(Self {
            paths: entries.into_iter().map(|e| e.path).collect(),
            store,
            labels,
            class_names,
            super_labels,
            super_class_names,
        })
    }

    /// The samples at `indices`, in that order, keeping this list's class and super-class ids
    /// and names: labels stay comparable with the full list's (In-Shop's query and gallery
    /// share item ids), and a class may have no sample in the subset.
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn subset(&self, indices: &[usize]) -> ImageList {
        ImageList {
            store: self.store.clone(),
            paths: indices.iter().map(|&i| self.paths[i].clone()).collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            class_names: self.class_names.clone(),
            super_labels: self
                .super_labels
                .as_ref()
                .map(|s| indices.iter().map(|&i| s[i]).collect()),
            super_class_names: self.super_class_names.clone(),
        }
    }

    /// The store the images are read from.
    pub fn store(&self) -> &ImageStore {
        &self.store
    }

    /// Path of sample `index` relative to the store's root.
    pub fn path(&self, index: usize) -> &str {
        &self.paths[index]
    }
}

impl Dataset for ImageList {
    fn len(&self) -> usize {
        self.paths.len()
    }

    fn label(&self, index: usize) -> usize {
        self.labels[index]
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }

    fn super_label(&self, index: usize) -> Option<usize> {
        self.super_labels.as_ref().map(|s| s[index])
    }

    fn super_class_names(&self) -> &[String] {
        &self.super_class_names
    }

    fn load(&self, index: usize) -> Result<image::DynamicImage, Error> {
        let bytes = self.store.read(&self.paths[index])?;
        self.store
            .limits()
            .decode_image(&bytes, &|| self.describe(index))
    }

    fn check_image(&self, index: usize) -> Result<(), Error> {
        let bytes = self.store.read(&self.paths[index])?;
        self.store
            .limits()
            .image_dimensions(&bytes, &|| self.describe(index))
            .map(drop)
    }

    fn byte_len(&self, index: usize) -> Option<u64> {
        self.store.size(&self.paths[index])
    }

    fn describe(&self, index: usize) -> String {
        self.store
            .display_path(&self.paths[index])
            .display()
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempTree;

    fn entry(path: &str, class: &str, super_class: Option<&str>) -> ImageEntry {
        ImageEntry {
            path: path.into(),
            class: class.into(),
            super_class: super_class.map(str::to_owned),
            origin: Some(format!("list.txt:{path}")),
        }
    }

    #[test]
    fn dense_labels_follow_numeric_then_name_order() {
        let tree = TempTree::new();
        for (i, p) in ["a.png", "b.png", "c.png", "d.png"].iter().enumerate() {
            tree.write_png(p, i as u8 * 10);
        }
        let store = ImageStore::open(tree.root()).unwrap();
        let list = ImageList::new(
            store,
            vec![
                entry("a.png", "10", Some("z")),
                entry("b.png", "9", Some("y")),
                entry("c.png", "cat", Some("z")),
                entry("d.png", "9", Some("y")),
            ],
            "test list",
        )
        .unwrap();
        assert_eq!(list.class_names(), ["9", "10", "cat"]);
        assert_eq!(list.labels(), [1, 0, 2, 0]);
        assert_eq!(list.super_class_names(), ["y", "z"]);
        assert_eq!(list.super_label(2), Some(1));
        let img = list.load(1).unwrap().to_luma8();
        assert_eq!(img.get_pixel(0, 0).0, [10]);
        assert!(list.describe(3).ends_with("d.png"));
    }

    #[test]
    fn an_image_claiming_too_many_pixels_is_an_error_naming_it_and_the_setting() {
        let tree = TempTree::new();
        tree.write(
            "huge.png",
            &crate::test_support::png_claiming(100_000, 100_000),
        );
        let store = ImageStore::open(tree.root()).unwrap();
        let list = ImageList::new(store, vec![entry("huge.png", "a", None)], "x").unwrap();
        let want = format!(
            "{} is 100000 x 100000 pixels, above data.limits.max_image_megapixels = 64",
            tree.path("huge.png").display()
        );
        assert_eq!(list.load(0).unwrap_err().to_string(), want);
        assert_eq!(list.check_image(0).unwrap_err().to_string(), want);
    }

    #[test]
    fn missing_file_names_file_and_list_line_and_corrupt_image_names_file() {
        let tree = TempTree::new();
        tree.write("bad.png", b"\x89PNG but not really");
        let store = ImageStore::open(tree.root()).unwrap();
        let err = ImageList::new(store.clone(), vec![entry("gone.png", "a", None)], "x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("gone.png") && err.contains("list.txt:gone.png"),
            "{err}"
        );
        let list = ImageList::new(store.clone(), vec![entry("bad.png", "a", None)], "x").unwrap();
        let err = list.load(0).unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{err:?}");
        assert!(err.to_string().contains("bad.png"), "{err}");
        assert!(crate::verify_images(&list).is_err());
        let err = ImageList::new(store, vec![], "empty split")
            .unwrap_err()
            .to_string();
        assert!(err.contains("empty split"), "{err}");
    }
}
