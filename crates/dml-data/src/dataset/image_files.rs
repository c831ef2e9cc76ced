//! [`ImageFiles`]: loose, unlabelled images (the queries of a search).

use std::path::{Path, PathBuf};

use crate::store::{ImageStore, is_hidden, is_image_path, read_file};
use crate::{Dataset, Error, Limits};

/// Where one image is read from.
#[derive(Clone, Debug)]
enum Entry {
    /// A file named on its own.
    File(PathBuf),
    /// A file found in a folder or zip archive: the store's index and the relative path.
    Stored(usize, String),
}

/// Images named one by one or found in folders and zip archives, without labels: every image
/// has class 0, named `""`. Samples keep the order the paths were given in; the images of one
/// folder follow in path order.
///
/// ```no_run
/// use dml_data::{Dataset, ImageFiles};
/// let queries = ImageFiles::open(&["photo.jpg".into(), "more_photos/".into()])?;
/// println!("{} images, the first is {}", queries.len(), queries.describe(0));
/// # Ok::<(), dml_data::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct ImageFiles {
    stores: Vec<ImageStore>,
    entries: Vec<Entry>,
    class_names: Vec<String>,
    limits: Limits,
}

impl ImageFiles {
    /// Collects the images of `paths`, with the default [`Limits`]. A file is taken as an
    /// image whatever its name (a corrupt one fails when it is checked or loaded, naming
    /// it); a folder or `.zip` adds every PNG and JPEG file in it, hidden folders (`.git`,
    /// `__MACOSX`) skipped.
    ///
    /// # Errors
    /// A path that does not exist, a folder or archive without images, or no paths at all;
    /// images in a folder whose names are not UTF-8 ([`ImageStore::files`]).
    pub fn open(paths: &[PathBuf]) -> Result<Self, Error> {
        Self::open_with(paths, Limits::default())
    }

    /// [`ImageFiles::open`] with reads and decoding bounded by `limits`.
    pub fn open_with(paths: &[PathBuf], limits: Limits) -> Result<Self, Error> {
        let mut stores = Vec::new();
        let mut entries = Vec::new();
        for path in paths {
            if path.is_file() && !is_zip(path) {
                entries.push(Entry::File(path.clone()));
                continue;
            }
            if !path.exists() {
                return Err(Error::MissingFile {
                    path: path.clone(),
                    listed_in: None,
                });
            }
            let store = ImageStore::open_with(path, limits)?;
            let images: Vec<String> = store
                .files()?
                .into_iter()
                .filter(|f| is_image_path(f) && !f.split('/').any(is_hidden))
                .collect();
            if images.is_empty() {
                return Err(Error::EmptyDataset {
                    what: path.display().to_string(),
                });
            }
            entries.extend(images.into_iter().map(|f| Entry::Stored(stores.len(), f)));
            stores.push(store);
        }
        if entries.is_empty() {
            return Err(Error::EmptyDataset {
                what: "the image list".to_owned(),
            });
        }
        Ok(ImageFiles {
            stores,
            entries,
            class_names: vec![String::new()],
            limits,
        })
    }

    /// The bytes of sample `index`.
    fn read(&self, index: usize) -> Result<Vec<u8>, Error> {
        match &self.entries[index] {
            Entry::File(path) => read_file(path, &self.limits),
            Entry::Stored(store, rel) => self.stores[*store].read(rel),
        }
    }
}

fn is_zip(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("zip"))
}

impl Dataset for ImageFiles {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn label(&self, index: usize) -> usize {
        // Unlabelled: one class. The indexing keeps the trait's out-of-range panic.
        let _ = &self.entries[index];
        0
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }

    fn load(&self, index: usize) -> Result<image::DynamicImage, Error> {
        let bytes = self.read(index)?;
        self.limits.decode_image(&bytes, &|| self.describe(index))
    }

    fn check_image(&self, index: usize) -> Result<(), Error> {
        let bytes = self.read(index)?;
        self.limits
            .image_dimensions(&bytes, &|| self.describe(index))
            .map(drop)
    }

    fn describe(&self, index: usize) -> String {
        match &self.entries[index] {
            Entry::File(path) => path.display().to_string(),
            Entry::Stored(store, rel) => {
                self.stores[*store].display_path(rel).display().to_string()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(path: &Path, shade: u8) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::GrayImage::from_pixel(3, 2, image::Luma([shade]))
            .save(path)
            .unwrap();
    }

    #[test]
    fn files_and_folders_keep_the_given_order_and_skip_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        png(&d.join("one.png"), 10);
        png(&d.join("set/b/2.png"), 20);
        png(&d.join("set/a.jpg.png"), 30);
        png(&d.join("set/.git/x.png"), 40);
        std::fs::write(d.join("set/notes.txt"), "not an image").unwrap();
        let files = ImageFiles::open(&[d.join("set"), d.join("one.png")]).unwrap();
        let described: Vec<String> = (0..files.len()).map(|i| files.describe(i)).collect();
        let want = [
            d.join("set/a.jpg.png"),
            d.join("set/b/2.png"),
            d.join("one.png"),
        ];
        assert_eq!(described, want.map(|p| p.display().to_string()));
        assert_eq!(files.labels(), vec![0, 0, 0]);
        assert_eq!(files.class_names(), [String::new()]);
        let shades: Vec<u8> = (0..3)
            .map(|i| files.load(i).unwrap().to_luma8().get_pixel(0, 0).0[0])
            .collect();
        assert_eq!(shades, [30, 20, 10]);
    }

    #[cfg(unix)]
    #[test]
    fn folder_images_whose_names_are_not_utf8_are_named() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        png(&dir.path().join("q/ok.png"), 1);
        png(
            &dir.path().join("q").join(OsStr::from_bytes(b"bad\xff.png")),
            2,
        );
        let err = ImageFiles::open(&[dir.path().join("q")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("file name is not valid UTF-8: bad\u{FFFD}.png"),
            "{err}"
        );
        // A file named on its own is opened by its path, whatever its bytes.
        let files =
            ImageFiles::open(&[dir.path().join("q").join(OsStr::from_bytes(b"bad\xff.png"))])
                .unwrap();
        assert_eq!(files.load(0).unwrap().to_luma8().get_pixel(0, 0).0, [2]);
    }

    #[test]
    fn bad_paths_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let missing = ImageFiles::open(&[d.join("nope.png")]).unwrap_err();
        assert!(missing.to_string().contains("nope.png"), "{missing}");
        std::fs::create_dir(d.join("empty")).unwrap();
        let empty = ImageFiles::open(&[d.join("empty")]).unwrap_err();
        assert!(empty.to_string().contains("empty: no images"), "{empty}");
        assert!(ImageFiles::open(&[]).is_err());
        std::fs::write(d.join("bad.png"), "not a png").unwrap();
        let files = ImageFiles::open(&[d.join("bad.png")]).unwrap();
        let corrupt = files.load(0).unwrap_err();
        assert!(
            corrupt.to_string().starts_with(&format!(
                "cannot decode image {}",
                d.join("bad.png").display()
            )),
            "{corrupt}"
        );
    }
}
