//! Stanford Online Products in its native layout.

use std::path::Path;
use std::sync::Arc;

use crate::dataset::table::{self, UniqueIds};
use crate::dataset::{DatasetSplits, ImageEntry, ImageList, TestSplit};
use crate::store::ImageStore;
use crate::{Error, Limits};

/// Reader for Stanford Online Products (Song et al., 2016).
///
/// Expects `Ebay_train.txt` and `Ebay_test.txt` under `root` (a folder or zip), each with the
/// header `image_id class_id super_class_id path` and one image per line; paths are relative
/// to `root`. The two files are the standard class-disjoint split (11,318 / 11,316 products).
/// Classes are the product ids; the super-class (one of 12 categories) is named by the image's
/// folder (`bicycle_final`).
pub struct SopDataset;

const HEADER: [&str; 4] = ["image_id", "class_id", "super_class_id", "path"];

impl SopDataset {
    /// Reads both list files and checks that every image exists, with the default
    /// [`Limits`].
    pub fn open(root: impl AsRef<Path>) -> Result<DatasetSplits, Error> {
        Self::open_with(root, Limits::default())
    }

    /// [`SopDataset::open`] with reads and decoding bounded by `limits`.
    pub fn open_with(root: impl AsRef<Path>, limits: Limits) -> Result<DatasetSplits, Error> {
        let store = ImageStore::open_with(root, limits)?;
        let train = read_split(&store, "Ebay_train.txt")?;
        let test = read_split(&store, "Ebay_test.txt")?;
        Ok(DatasetSplits {
            train: Arc::new(ImageList::new(
                store.clone(),
                train,
                "SOP train split (Ebay_train.txt)",
            )?),
            test: TestSplit::Pooled(Arc::new(ImageList::new(
                store,
                test,
                "SOP test split (Ebay_test.txt)",
            )?)),
        })
    }
}

fn read_split(store: &ImageStore, file: &str) -> Result<Vec<ImageEntry>, Error> {
    let path = store.display_path(file);
    let text = store.read_text(file)?;
    let header: Vec<&str> = dml_core::text::lines(&text)
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    if header != HEADER {
        return Err(Error::malformed(
            &path,
            1,
            format!("expected the header `{}`", HEADER.join(" ")),
        ));
    }
    let mut ids = UniqueIds::new(&path);
    let mut entries = Vec::new();
    for row in table::rows(&text, &path, 1, 4)? {
        table::id(&row, 0, "image_id", &path)?;
        table::id(&row, 1, "class_id", &path)?;
        table::id(&row, 2, "super_class_id", &path)?;
        ids.insert(row.fields[0], row.line)?;
        let rel = row.fields[3];
        let super_class = match rel.split_once('/') {
            Some((folder, _)) => folder.to_owned(),
            None => row.fields[2].to_owned(),
        };
        entries.push(ImageEntry {
            path: rel.to_owned(),
            class: row.fields[1].to_owned(),
            super_class: Some(super_class),
            origin: Some(format!("{file}:{}", row.line)),
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Split;
    use crate::test_support::TempTree;

    fn fabricate(tree: &TempTree) {
        let header = "image_id class_id super_class_id path\n";
        let mut train = header.to_owned();
        let mut test = header.to_owned();
        let rows = [
            (1, 1, 1, "bicycle_final/111_0.JPG"),
            (2, 1, 1, "bicycle_final/111_1.JPG"),
            (3, 2, 2, "cabinet_final/222_0.JPG"),
        ];
        for (id, class, sup, p) in rows {
            tree.write_png(p, id as u8);
            train += &format!("{id} {class} {sup} {p}\n");
        }
        for (id, class, sup, p) in [
            (4, 11319, 1, "bicycle_final/333_0.JPG"),
            (5, 11319, 1, "bicycle_final/333_1.JPG"),
        ] {
            tree.write_png(p, id as u8);
            test += &format!("{id} {class} {sup} {p}\n");
        }
        tree.write("Ebay_train.txt", train.as_bytes());
        tree.write("Ebay_test.txt", test.as_bytes());
    }

    #[test]
    fn reads_both_splits_with_super_classes() {
        let tree = TempTree::new();
        fabricate(&tree);
        let splits = SopDataset::open(tree.root()).unwrap();
        let train = splits.get(Split::Train).unwrap();
        assert_eq!(train.labels(), [0, 0, 1]);
        assert_eq!(train.class_names(), ["1", "2"]);
        assert_eq!(
            train.super_class_names(),
            ["bicycle_final", "cabinet_final"]
        );
        assert_eq!(train.super_label(2), Some(1));
        let test = splits.get(Split::Test).unwrap();
        assert_eq!(test.class_names(), ["11319"]);
        assert_eq!(test.load(1).unwrap().to_luma8().get_pixel(0, 0).0, [5]);
    }

    #[test]
    fn list_files_saved_with_a_byte_order_mark_or_as_utf16() {
        let tree = TempTree::new();
        fabricate(&tree);
        let train = std::fs::read(tree.path("Ebay_train.txt")).unwrap();
        tree.write(
            "Ebay_train.txt",
            &[b"\xEF\xBB\xBF".as_slice(), &train].concat(),
        );
        let splits = SopDataset::open(tree.root()).unwrap();
        assert_eq!(splits.get(Split::Train).unwrap().len(), 3);
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(
                String::from_utf8(train)
                    .unwrap()
                    .encode_utf16()
                    .flat_map(u16::to_le_bytes),
            )
            .collect();
        tree.write("Ebay_train.txt", &utf16);
        let err = dml_core::error::chain(&SopDataset::open(tree.root()).unwrap_err());
        assert!(
            err.contains("Ebay_train.txt: the text is UTF-16LE")
                && err.contains("save the file as UTF-8"),
            "{err}"
        );
    }

    #[test]
    fn bad_header_and_short_lines_name_the_line() {
        let tree = TempTree::new();
        fabricate(&tree);
        tree.write("Ebay_test.txt", b"id class path\n");
        let err = dml_core::error::chain(&SopDataset::open(tree.root()).unwrap_err());
        assert!(err.contains("Ebay_test.txt:1"), "{err}");
        tree.write(
            "Ebay_test.txt",
            b"image_id class_id super_class_id path\n4 11319 bicycle_final/333_0.JPG\n",
        );
        let err = dml_core::error::chain(&SopDataset::open(tree.root()).unwrap_err());
        assert!(
            err.contains("Ebay_test.txt:2") && err.contains("expected 4 fields"),
            "{err}"
        );
    }
}
