//! DeepFashion In-Shop Clothes Retrieval in its native layout.

use std::path::Path;
use std::sync::Arc;

use crate::dataset::table::{self, UniqueIds};
use crate::dataset::{DatasetSplits, ImageEntry, ImageList, TestSplit};
use crate::store::ImageStore;
use crate::{Error, Limits};

/// Reader for In-Shop Clothes Retrieval (Liu et al., 2016).
///
/// Expects `list_eval_partition.txt` under `root` or `root/Eval` (a folder or zip): a count
/// line, the header `image_name item_id evaluation_status`, then one
/// `img/<gender>/<category>/<item>/<file>.jpg <item_id> <train|query|gallery>` per line.
/// Image paths are relative to `root`, or to `root/Img` as in the distributed archive.
///
/// Gives the training items and, for evaluation, queries searched against the gallery
/// ([`TestSplit::QueryGallery`]); query and gallery share class ids, so a query's label equals
/// the labels of its gallery matches. The super-class is the `<gender>/<category>` folder.
pub struct InShopDataset;

const PARTITION: &str = "list_eval_partition.txt";
const HEADER: [&str; 3] = ["image_name", "item_id", "evaluation_status"];

impl InShopDataset {
    /// Reads the partition file and checks that every image exists, with the default
    /// [`Limits`].
    pub fn open(root: impl AsRef<Path>) -> Result<DatasetSplits, Error> {
        Self::open_with(root, Limits::default())
    }

    /// [`InShopDataset::open`] with reads and decoding bounded by `limits`.
    pub fn open_with(root: impl AsRef<Path>, limits: Limits) -> Result<DatasetSplits, Error> {
        let root_store = ImageStore::open_with(root, limits)?;
        let rel = if root_store.contains(PARTITION) {
            PARTITION.to_owned()
        } else {
            format!("Eval/{PARTITION}")
        };
        let path = root_store.display_path(&rel);
        let text = root_store.read_text(&rel)?;

        let mut lines = dml_core::text::lines(&text);
        let count_line = lines.next().unwrap_or("").trim();
        let count: usize = count_line.parse().map_err(|_| {
            Error::malformed(
                &path,
                1,
                format!("expected the image count, found {count_line:?}"),
            )
        })?;
        let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
        if header != HEADER {
            return Err(Error::malformed(
                &path,
                2,
                format!("expected the header `{}`", HEADER.join(" ")),
            ));
        }
        let rows = table::rows(&text, &path, 2, 3)?;
        if rows.len() != count {
            return Err(Error::Mismatch {
                path,
                reason: format!(
                    "line 1 announces {count} images but {} are listed",
                    rows.len()
                ),
            });
        }

        let mut seen = UniqueIds::new(&path);
        let (mut train, mut eval, mut is_query) = (Vec::new(), Vec::new(), Vec::new());
        for row in &rows {
            let [image, item, status] = [row.fields[0], row.fields[1], row.fields[2]];
            seen.insert(image, row.line)?;
            let folders: Vec<&str> = image.split('/').collect();
            let super_class = match folders.as_slice() {
                ["img", category @ .., _item, _file] => category.join("/"),
                [category @ .., _item, _file] => category.join("/"),
                _ => String::new(),
            };
            let entry = ImageEntry {
                path: image.to_owned(),
                class: item.to_owned(),
                super_class: Some(super_class),
                origin: Some(format!("{PARTITION}:{}", row.line)),
            };
            match status {
                "train" => train.push(entry),
                "query" | "gallery" => {
                    eval.push(entry);
                    is_query.push(status == "query");
                }
                other => {
                    return Err(Error::malformed(
                        &path,
                        row.line,
                        format!(
                            "evaluation_status must be train, query or gallery, found {other:?}"
                        ),
                    ));
                }
            }
        }
        let image_root = match rows.first() {
            Some(row) if !root_store.contains(row.fields[0]) => root_store.subfolder("Img"),
            _ => root_store,
        };
        let eval = ImageList::new(image_root.clone(), eval, "In-Shop query and gallery")?;
        let split = |query: bool| -> Result<Arc<ImageList>, Error> {
            let indices: Vec<usize> = (0..is_query.len())
                .filter(|&i| is_query[i] == query)
                .collect();
            if indices.is_empty() {
                let what = if query {
                    "In-Shop query split"
                } else {
                    "In-Shop gallery split"
                };
                return Err(Error::EmptyDataset { what: what.into() });
            }
            Ok(Arc::new(eval.subset(&indices)))
        };
        Ok(DatasetSplits {
            train: Arc::new(ImageList::new(image_root, train, "In-Shop train split")?),
            test: TestSplit::QueryGallery {
                query: split(true)?,
                gallery: split(false)?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Split;
    use crate::test_support::TempTree;

    fn fabricate(tree: &TempTree, rows: &[(&str, &str, &str)]) {
        let mut text = format!("{}\nimage_name item_id evaluation_status\n", rows.len());
        for (i, (p, item, status)) in rows.iter().enumerate() {
            tree.write_png(&format!("Img/{p}"), i as u8);
            text += &format!("{p}     {item} {status}\n");
        }
        tree.write("Eval/list_eval_partition.txt", text.as_bytes());
    }

    #[test]
    fn query_and_gallery_share_item_ids() {
        let tree = TempTree::new();
        fabricate(
            &tree,
            &[
                (
                    "img/WOMEN/Dresses/id_00000002/02_1_front.jpg",
                    "id_00000002",
                    "train",
                ),
                (
                    "img/WOMEN/Dresses/id_00000002/02_2_side.jpg",
                    "id_00000002",
                    "train",
                ),
                (
                    "img/MEN/Denim/id_00000080/01_1_front.jpg",
                    "id_00000080",
                    "gallery",
                ),
                (
                    "img/MEN/Denim/id_00000009/01_1_front.jpg",
                    "id_00000009",
                    "gallery",
                ),
                (
                    "img/MEN/Denim/id_00000080/01_2_side.jpg",
                    "id_00000080",
                    "query",
                ),
            ],
        );
        let splits = InShopDataset::open(tree.root()).unwrap();
        let query = splits.get(Split::Query).unwrap();
        let gallery = splits.get(Split::Gallery).unwrap();
        assert_eq!((query.len(), gallery.len()), (1, 2));
        assert_eq!(query.label(0), gallery.label(0));
        assert_ne!(query.label(0), gallery.label(1));
        assert_eq!(query.class_names(), gallery.class_names());
        assert_eq!(query.load(0).unwrap().to_luma8().get_pixel(0, 0).0, [4]);
        let train = splits.get(Split::Train).unwrap();
        assert_eq!(train.super_class_names(), ["WOMEN/Dresses"]);
        assert!(splits.get(Split::Test).is_err());
    }

    #[test]
    fn a_partition_file_with_a_byte_order_mark_and_crlf_lines() {
        let tree = TempTree::new();
        fabricate(
            &tree,
            &[
                ("img/A/B/id_1/x.jpg", "id_1", "train"),
                ("img/A/B/id_2/y.jpg", "id_2", "query"),
                ("img/A/B/id_2/z.jpg", "id_2", "gallery"),
            ],
        );
        let text = std::fs::read_to_string(tree.path("Eval/list_eval_partition.txt")).unwrap();
        let text = format!("\u{FEFF}{}", text.replace('\n', "\r\n"));
        tree.write("Eval/list_eval_partition.txt", text.as_bytes());
        let splits = InShopDataset::open(tree.root()).unwrap();
        assert_eq!(splits.get(Split::Query).unwrap().len(), 1);
    }

    #[test]
    fn bad_status_and_wrong_count_are_errors_naming_the_line() {
        let tree = TempTree::new();
        fabricate(
            &tree,
            &[
                ("img/A/B/id_1/x.jpg", "id_1", "train"),
                ("img/A/B/id_1/y.jpg", "id_1", "validation"),
            ],
        );
        let err = InShopDataset::open(tree.root()).unwrap_err().to_string();
        assert!(
            err.contains("list_eval_partition.txt:4") && err.contains("validation"),
            "{err}"
        );
        tree.write(
            "Eval/list_eval_partition.txt",
            b"3\nimage_name item_id evaluation_status\nimg/A/B/id_1/x.jpg id_1 train\n",
        );
        let err = InShopDataset::open(tree.root()).unwrap_err().to_string();
        assert!(err.contains("announces 3"), "{err}");
    }
}
