//! CSV image lists: `label,relative/path` per line (the survey baseline's format).

use std::path::Path;

use crate::Error;
use crate::dataset::{ImageEntry, ImageList};
use crate::store::ImageStore;

/// Reader for CSV image lists.
///
/// Each line is `label,relative/path`; the path is relative to a root folder (or zip archive)
/// and may itself contain commas (the line is cut at its first comma). Spaces around fields,
/// blank lines and one optional header line `label,path` are ignored. Labels are class names:
/// numbers or any other text.
pub struct CsvListDataset;

impl CsvListDataset {
    /// Reads the list file `list` and checks that each image exists under `root`.
    ///
    /// A line without a comma, or with an empty label or path, is an error naming the line.
    pub fn open(list: impl AsRef<Path>, root: impl AsRef<Path>) -> Result<ImageList, Error> {
        let list = list.as_ref();
        let text = std::fs::read_to_string(list).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::MissingFile {
                path: list.to_path_buf(),
                listed_in: None,
            },
            _ => Error::io(list, e),
        })?;
        let store = ImageStore::open(root)?;
        let mut entries = Vec::new();
        let file_name = list
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            if line.trim().is_empty() {
                continue;
            }
            let Some((label, path)) = line.split_once(',') else {
                return Err(Error::malformed(
                    list,
                    line_no,
                    format!("expected `label,relative/path`, found one field: {line:?}"),
                ));
            };
            let (label, path) = (label.trim(), path.trim());
            if entries.is_empty()
                && label.eq_ignore_ascii_case("label")
                && path.eq_ignore_ascii_case("path")
            {
                continue;
            }
            if label.is_empty() || path.is_empty() {
                return Err(Error::malformed(
                    list,
                    line_no,
                    format!("empty label or path: {line:?}"),
                ));
            }
            entries.push(ImageEntry {
                path: path.to_owned(),
                class: label.to_owned(),
                super_class: None,
                origin: Some(format!("{file_name}:{line_no}")),
            });
        }
        ImageList::new(store, entries, &list.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Dataset;
    use crate::test_support::TempTree;

    #[test]
    fn reads_labels_and_paths_with_header_blank_lines_and_commas() {
        let tree = TempTree::new();
        tree.write_png("imgs/a,1.png", 1);
        tree.write_png("imgs/b.png", 2);
        tree.write_png("imgs/c.png", 3);
        tree.write(
            "list.csv",
            b"label,path\n3, imgs/a,1.png\n\n1,imgs/b.png\r\n3,imgs/c.png\n",
        );
        let list = CsvListDataset::open(tree.path("list.csv"), tree.root()).unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list.class_names(), ["1", "3"]);
        assert_eq!(list.labels(), [1, 0, 1]);
        assert_eq!(list.path(0), "imgs/a,1.png");
        assert_eq!(list.load(2).unwrap().to_luma8().get_pixel(0, 0).0, [3]);
    }

    #[test]
    fn errors_name_the_line_or_the_file() {
        let tree = TempTree::new();
        tree.write_png("x.png", 0);
        tree.write("short.csv", b"0,x.png\n0 x.png\n");
        let err = CsvListDataset::open(tree.path("short.csv"), tree.root()).unwrap_err();
        assert!(
            matches!(err, Error::MalformedLine { line: 2, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("short.csv:2"), "{err}");

        tree.write("empty_label.csv", b"0,x.png\n ,x.png\n");
        let err = CsvListDataset::open(tree.path("empty_label.csv"), tree.root()).unwrap_err();
        assert!(err.to_string().contains("empty_label.csv:2"), "{err}");

        tree.write("gone.csv", b"0,x.png\n1,missing.png\n");
        let err = CsvListDataset::open(tree.path("gone.csv"), tree.root())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing.png") && err.contains("gone.csv:2"),
            "{err}"
        );

        let err = CsvListDataset::open(tree.path("nope.csv"), tree.root())
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.csv"), "{err}");
    }
}
