//! Image folders: one sub-folder per class, from a directory or a zip archive.

use std::collections::BTreeMap;
use std::path::Path;

use crate::dataset::{ImageEntry, ImageList};
use crate::store::{ImageStore, is_hidden, is_image_path};
use crate::{Error, Limits};

/// Reader for `root/<class>/.../<image>` trees (torchvision's `ImageFolder` layout).
///
/// The class of an image is the first folder under the root; images deeper inside a class
/// folder belong to it too. PNG and JPEG files count as images; other files and hidden
/// folders (`.git`, `__MACOSX`) are ignored. `root` may be a zip archive of such a tree (see
/// [`ImageStore::open`] for how a single wrapping folder is skipped).
pub struct ImageFolderDataset;

impl ImageFolderDataset {
    /// Lists the tree under `root`, with the default [`Limits`]. A class folder without
    /// images, an image outside any class folder, or a class folder or image whose name is
    /// not UTF-8 ([`ImageStore::files`]) is an error naming it.
    pub fn open(root: impl AsRef<Path>) -> Result<ImageList, Error> {
        Self::open_with(root, Limits::default())
    }

    /// [`ImageFolderDataset::open`] with reads and decoding bounded by `limits`.
    pub fn open_with(root: impl AsRef<Path>, limits: Limits) -> Result<ImageList, Error> {
        let root = root.as_ref();
        let store = ImageStore::open_with(root, limits)?;
        let mut by_class: BTreeMap<String, Vec<String>> = store
            .folders()?
            .into_iter()
            .map(|f| (f, Vec::new()))
            .collect();
        for file in store.files()? {
            if !is_image_path(&file) {
                continue;
            }
            match file.split_once('/') {
                None => {
                    return Err(Error::Layout {
                        path: store.display_path(&file),
                        reason: "image outside any class folder; expected root/<class>/<image>"
                            .into(),
                    });
                }
                Some((class, _)) if !is_hidden(class) => {
                    by_class
                        .entry(class.to_owned())
                        .or_default()
                        .push(file.clone());
                }
                Some(_) => {}
            }
        }
        if by_class.is_empty() {
            return Err(Error::Layout {
                path: root.to_path_buf(),
                reason: "no class folders; expected root/<class>/<image>".into(),
            });
        }
        let mut entries = Vec::new();
        for (class, files) in by_class {
            if files.is_empty() {
                return Err(Error::EmptyClass {
                    path: store.display_path(&class),
                    class,
                });
            }
            entries.extend(files.into_iter().map(|path| ImageEntry {
                path,
                class: class.clone(),
                super_class: None,
                origin: None,
            }));
        }
        ImageList::new(store, entries, &root.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Dataset;
    use crate::test_support::{TempTree, png_bytes, write_zip};

    #[test]
    fn directory_and_zip_give_the_same_dataset() {
        let tree = TempTree::new();
        tree.write_png("data/cat/1.png", 10);
        tree.write_png("data/cat/sub/2.PNG", 20);
        tree.write_png("data/dog/3.png", 30);
        tree.write("data/dog/notes.txt", b"not an image");
        tree.write_png("data/.hidden/4.png", 40);
        let png = |v| png_bytes(3, 3, v);
        let (a, b, c) = (png(10), png(20), png(30));
        write_zip(
            &tree.path("data.zip"),
            &[
                ("wrap/cat/1.png", &a),
                ("wrap/cat/sub/2.PNG", &b),
                ("wrap/dog/3.png", &c),
                ("__MACOSX/wrap/dog/._3.png", b"junk"),
            ],
        );
        let dir = ImageFolderDataset::open(tree.path("data")).unwrap();
        let zip = ImageFolderDataset::open(tree.path("data.zip")).unwrap();
        for list in [&dir, &zip] {
            assert_eq!(list.class_names(), ["cat", "dog"]);
            assert_eq!(list.labels(), [0, 0, 1]);
            assert_eq!(list.load(1).unwrap().to_luma8().get_pixel(0, 0).0, [20]);
        }
        assert!(
            zip.describe(2).ends_with("data.zip/wrap/dog/3.png"),
            "{}",
            zip.describe(2)
        );
    }

    #[cfg(unix)]
    #[test]
    fn an_image_named_in_bytes_that_are_not_utf8_is_named_not_reported_missing() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let tree = TempTree::new();
        tree.write_png("data/cat/1.png", 1);
        let bad = tree
            .path("data/cat")
            .join(OsStr::from_bytes(b"bad\xff.png"));
        std::fs::write(bad, png_bytes(2, 2, 0)).unwrap();
        let err = ImageFolderDataset::open(tree.path("data")).unwrap_err();
        assert!(matches!(err, Error::NonUtf8Names { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "{}: file name is not valid UTF-8: cat/bad\u{FFFD}.png",
                tree.path("data").display()
            )),
            "{msg}"
        );
    }

    #[test]
    fn empty_class_and_loose_images_are_errors_naming_them() {
        let tree = TempTree::new();
        tree.write_png("a/cat/1.png", 1);
        tree.write("a/empty/readme.txt", b"x");
        let err = ImageFolderDataset::open(tree.path("a")).unwrap_err();
        assert!(
            matches!(&err, Error::EmptyClass { class, .. } if class == "empty"),
            "{err:?}"
        );
        tree.write_png("b/cat/1.png", 1);
        tree.write_png("b/loose.png", 1);
        let err = ImageFolderDataset::open(tree.path("b"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("loose.png"), "{err}");
        std::fs::create_dir_all(tree.path("c")).unwrap();
        assert!(ImageFolderDataset::open(tree.path("c")).is_err());
    }
}
