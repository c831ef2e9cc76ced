//! CUB-200-2011 in its native layout.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::dataset::table::{self, UniqueIds};
use crate::dataset::{DatasetSplits, ImageEntry, ImageList, TestSplit};
use crate::store::ImageStore;
use crate::{Error, Limits};

/// Reader for CUB-200-2011 (Wah et al., 2011) with the deep metric learning split.
///
/// Expects the archive's layout under `root` (a folder or a zip): `images.txt`
/// (`<image id> <relative path>`), `image_class_labels.txt` (`<image id> <class id>`) and
/// `images/<relative path>`. Classes 1-100 are the training split and 101-200 the test
/// split (Song et al., 2016), so `train_test_split.txt` is not read. Each class is named by
/// its image folder (`001.Black_footed_Albatross`).
///
/// Unlike readers that skip rows whose ids do not match, an image id that appears in one
/// file and not the other is an error naming the file and line.
pub struct Cub200Dataset;

/// Last class id of the training split.
const LAST_TRAIN_CLASS: u64 = 100;

impl Cub200Dataset {
    /// Reads and validates the annotation files and checks that every image exists, with
    /// the default [`Limits`].
    pub fn open(root: impl AsRef<Path>) -> Result<DatasetSplits, Error> {
        Self::open_with(root, Limits::default())
    }

    /// [`Cub200Dataset::open`] with reads and decoding bounded by `limits`.
    pub fn open_with(root: impl AsRef<Path>, limits: Limits) -> Result<DatasetSplits, Error> {
        let store = ImageStore::open_with(root, limits)?;
        let images_path = store.display_path("images.txt");
        let labels_path = store.display_path("image_class_labels.txt");
        let images_text = store.read_text("images.txt")?;
        let labels_text = store.read_text("image_class_labels.txt")?;

        let mut class_of: HashMap<u64, (u64, usize)> = HashMap::new();
        let mut seen = UniqueIds::new(&labels_path);
        for row in table::rows(&labels_text, &labels_path, 0, 2)? {
            let image = table::id(&row, 0, "image id", &labels_path)?;
            let class = table::id(&row, 1, "class id", &labels_path)?;
            seen.insert(row.fields[0], row.line)?;
            class_of.insert(image, (class, row.line));
        }

        let (mut train, mut test) = (Vec::new(), Vec::new());
        let mut seen = UniqueIds::new(&images_path);
        for row in table::rows(&images_text, &images_path, 0, 2)? {
            let image = table::id(&row, 0, "image id", &images_path)?;
            seen.insert(row.fields[0], row.line)?;
            let Some((class, _)) = class_of.remove(&image) else {
                return Err(Error::Mismatch {
                    path: labels_path,
                    reason: format!(
                        "has no class for image {image} (images.txt line {})",
                        row.line
                    ),
                });
            };
            let rel = row.fields[1];
            let class_name = match rel.rsplit_once('/') {
                Some((folder, _)) => folder.to_owned(),
                None => class.to_string(),
            };
            let entry = ImageEntry {
                path: format!("images/{rel}"),
                class: class_name,
                super_class: None,
                origin: Some(format!("images.txt:{}", row.line)),
            };
            if class <= LAST_TRAIN_CLASS {
                train.push(entry);
            } else {
                test.push(entry);
            }
        }
        if let Some((image, (_, line))) = class_of.into_iter().min_by_key(|(_, (_, line))| *line) {
            return Err(Error::Mismatch {
                path: images_path,
                reason: format!("has no image {image} (image_class_labels.txt line {line})"),
            });
        }
        Ok(DatasetSplits {
            train: Arc::new(ImageList::new(
                store.clone(),
                train,
                "CUB-200-2011 train split (classes 1-100)",
            )?),
            test: TestSplit::Pooled(Arc::new(ImageList::new(
                store,
                test,
                "CUB-200-2011 test split (classes 101-200)",
            )?)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Split;
    use crate::test_support::TempTree;

    /// A CUB tree with classes 1, 2, 101 and 150, two images each.
    fn fabricate(tree: &TempTree) {
        let classes = [
            (1, "001.Black_footed_Albatross"),
            (2, "002.Laysan_Albatross"),
            (101, "101.White_Pelican"),
            (150, "150.Sage_Thrasher"),
        ];
        let (mut images, mut labels) = (String::new(), String::new());
        let mut id = 0;
        for (class, folder) in classes {
            for k in 0..2 {
                id += 1;
                let rel = format!("{folder}/img_{k}.jpg");
                tree.write_png(&format!("CUB_200_2011/images/{rel}"), id as u8);
                images += &format!("{id} {rel}\n");
                labels += &format!("{id} {class}\n");
            }
        }
        tree.write("CUB_200_2011/images.txt", images.as_bytes());
        tree.write("CUB_200_2011/image_class_labels.txt", labels.as_bytes());
    }

    #[test]
    fn class_disjoint_split_at_class_100() {
        let tree = TempTree::new();
        fabricate(&tree);
        let splits = Cub200Dataset::open(tree.path("CUB_200_2011")).unwrap();
        let train = splits.get(Split::Train).unwrap();
        let test = splits.get(Split::Test).unwrap();
        assert_eq!(
            train.class_names(),
            ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
        );
        assert_eq!(
            test.class_names(),
            ["101.White_Pelican", "150.Sage_Thrasher"]
        );
        assert_eq!(train.labels(), [0, 0, 1, 1]);
        assert_eq!(test.len(), 4);
        // Image 5 is the first test image; its pixels hold its id (a PNG named .jpg decodes by content).
        assert_eq!(test.load(0).unwrap().to_luma8().get_pixel(0, 0).0, [5]);
        assert!(splits.get(Split::Query).is_err());
    }

    #[test]
    fn annotation_files_with_byte_order_marks_or_bad_bytes() {
        let tree = TempTree::new();
        fabricate(&tree);
        let root = tree.path("CUB_200_2011");
        for file in ["images.txt", "image_class_labels.txt"] {
            let text = std::fs::read(root.join(file)).unwrap();
            tree.write(
                &format!("CUB_200_2011/{file}"),
                &[b"\xEF\xBB\xBF".as_slice(), &text].concat(),
            );
        }
        let splits = Cub200Dataset::open(&root).unwrap();
        assert_eq!(splits.get(Split::Train).unwrap().len(), 4);
        let labels = std::fs::read(root.join("image_class_labels.txt")).unwrap();
        tree.write(
            "CUB_200_2011/image_class_labels.txt",
            &[labels.as_slice(), b"9 \xC3(\n"].concat(),
        );
        let err = dml_core::error::chain(&Cub200Dataset::open(&root).unwrap_err());
        assert!(
            err.contains("image_class_labels.txt: line 9, byte 3: not valid UTF-8"),
            "{err}"
        );
    }

    #[test]
    fn mismatched_ids_duplicates_and_missing_images_are_errors() {
        let tree = TempTree::new();
        fabricate(&tree);
        let root = tree.path("CUB_200_2011");
        let labels = std::fs::read_to_string(root.join("image_class_labels.txt")).unwrap();
        tree.write(
            "CUB_200_2011/image_class_labels.txt",
            labels.replace("3 2\n", "").as_bytes(),
        );
        let err = dml_core::error::chain(&Cub200Dataset::open(&root).unwrap_err());
        assert!(
            err.contains("image_class_labels.txt")
                && err.contains("image 3")
                && err.contains("line 3"),
            "{err}"
        );

        tree.write(
            "CUB_200_2011/image_class_labels.txt",
            format!("{labels}9 1\n").as_bytes(),
        );
        let err = dml_core::error::chain(&Cub200Dataset::open(&root).unwrap_err());
        assert!(
            err.contains("images.txt") && err.contains("image 9"),
            "{err}"
        );

        tree.write(
            "CUB_200_2011/image_class_labels.txt",
            format!("{labels}2 1\n").as_bytes(),
        );
        let err = dml_core::error::chain(&Cub200Dataset::open(&root).unwrap_err());
        assert!(
            err.contains("image_class_labels.txt:9") && err.contains("line 2"),
            "{err}"
        );

        tree.write("CUB_200_2011/image_class_labels.txt", labels.as_bytes());
        std::fs::remove_file(root.join("images/101.White_Pelican/img_0.jpg")).unwrap();
        let err = dml_core::error::chain(&Cub200Dataset::open(&root).unwrap_err());
        assert!(
            err.contains("101.White_Pelican/img_0.jpg") && err.contains("images.txt:5"),
            "{err}"
        );
    }
}
