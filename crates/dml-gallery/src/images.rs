//! Where the images of a set's rows come from: [`ImageSource`], with [`PathImages`] (the paths
//! file `dml embed` writes) and [`DatasetImages`] (a dataset opened by a run).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use dml_data::{Dataset, ImageStore, Limits};
use image::DynamicImage;

/// The image of every row of an embedding set, read only for the rows the page shows.
///
/// Called from several threads at once (thumbnails are made in parallel).
pub trait ImageSource: Sync {
    /// The rows it has images (or their absence) for: the rows of its set.
    fn rows(&self) -> usize;

    /// How row `row`'s image is named on the page (its path, in the missing-images list and
    /// placeholders); `None` when the row has no image at all (a synthetic item without a
    /// file), which is shown as a plain placeholder and is not "missing".
    fn name(&self, row: usize) -> Option<String>;

    /// Reads and decodes row `row`'s image (only called when [`ImageSource::name`] is
    /// `Some`). A failure is not an error of the gallery: the image is listed as missing.
    ///
    /// # Errors
    /// A missing file, a file over the [`Limits`], an image that does not decode.
    fn load(&self, row: usize) -> Result<DynamicImage, dml_data::Error>;
}

/// Images named by path, one per row, as in the `E.paths.txt` that `dml embed` writes: a
/// file (relative paths are taken from the working directory, as `dml embed` wrote them), or
/// an entry of a zip archive written `archive.zip/folder/image.png` (how dml names the
/// images it read from an archive). An empty path means the row has no image.
///
/// Reads hold to [`Limits`] (file size and pixel count checked before anything large is
/// allocated). Each archive is opened once and shared by every read.
#[derive(Debug)]
pub struct PathImages {
    paths: Vec<String>,
    limits: Limits,
    archives: Mutex<HashMap<PathBuf, ImageStore>>,
}

impl PathImages {
    /// The images of `paths`, read under `limits`.
    pub fn new(paths: Vec<String>, limits: Limits) -> Self {
        Self {
            paths,
            limits,
            archives: Mutex::new(HashMap::new()),
        }
    }

    /// The archive `zip` opened once, shared by every later read (a failure is not kept, so
    /// each row reports it).
    fn archive(&self, zip: &Path) -> Result<ImageStore, dml_data::Error> {
        let mut archives = self
            .archives
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(store) = archives.get(zip) {
            return Ok(store.clone());
        }
        let store = ImageStore::open_with(zip, self.limits)?;
        archives.insert(zip.to_owned(), store.clone());
        Ok(store)
    }

    /// The bytes of the file `path`, or of the zip entry it names.
    fn read(&self, path: &Path) -> Result<Vec<u8>, dml_data::Error> {
        let missing = || dml_data::Error::MissingFile {
            path: path.to_owned(),
            listed_in: None,
        };
        if path.is_file() {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(missing)?;
            let folder = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            return ImageStore::open_with(folder, self.limits)?.read(name);
        }
        let zip = path
            .ancestors()
            .skip(1)
            .find(|a| a.extension().is_some_and(|e| e.eq_ignore_ascii_case("zip")) && a.is_file())
            .ok_or_else(missing)?;
        let entry: Vec<&str> = path
            .strip_prefix(zip)
            .map_err(|_| missing())?
            .components()
            .map(|c| c.as_os_str().to_str())
            .collect::<Option<_>>()
            .ok_or_else(missing)?;
        let store = self.archive(zip)?;
        // A store roots an archive whose entries share one top folder at that folder; the
        // path dml wrote keeps the folder in (`archive.zip/top/class/image.png`).
        let full = entry.join("/");
        let below_top = entry[1..].join("/");
        let rel = if !store.contains(&full) && store.contains(&below_top) {
            below_top
        } else {
            full
        };
        store.read(&rel)
    }
}

impl ImageSource for PathImages {
    fn rows(&self) -> usize {
        self.paths.len()
    }

    fn name(&self, row: usize) -> Option<String> {
        let path = self.paths[row].as_str();
        (!path.is_empty()).then(|| path.to_owned())
    }

    fn load(&self, row: usize) -> Result<DynamicImage, dml_data::Error> {
        let path = &self.paths[row];
        let bytes = self.read(Path::new(path))?;
        self.limits.decode(&bytes, path)
    }
}

/// The images of a dataset's samples, one per row: what a run shows, where the held-out
/// split may be synthetic glyphs drawn on demand or images inside an archive.
pub struct DatasetImages {
    items: Vec<(Arc<dyn Dataset>, usize)>,
}

impl DatasetImages {
    /// Row `r` shows sample `items[r].1` of dataset `items[r].0`.
    pub fn new(items: Vec<(Arc<dyn Dataset>, usize)>) -> Self {
        Self { items }
    }
}

impl ImageSource for DatasetImages {
    fn rows(&self) -> usize {
        self.items.len()
    }

    fn name(&self, row: usize) -> Option<String> {
        let (dataset, i) = &self.items[row];
        Some(dataset.describe(*i))
    }

    fn load(&self, row: usize) -> Result<DynamicImage, dml_data::Error> {
        let (dataset, i) = &self.items[row];
        dataset.load(*i)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn png_bytes(shade: u8) -> Vec<u8> {
        let mut bytes = Vec::new();
        image::GrayImage::from_pixel(4, 3, image::Luma([shade]))
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .unwrap();
        bytes
    }

    #[test]
    fn files_zip_entries_and_rows_without_images() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a.png"), png_bytes(10)).unwrap();
        std::fs::write(d.join("bad.png"), b"not a png").unwrap();
        let zip_path = d.join("set.zip");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
        let options = zip::write::SimpleFileOptions::default();
        zip.start_file("top/c/b.png", options).unwrap();
        zip.write_all(&png_bytes(20)).unwrap();
        zip.start_file("top/c/d.png", options).unwrap();
        zip.write_all(&png_bytes(30)).unwrap();
        zip.finish().unwrap();
        let paths = [
            d.join("a.png"),
            zip_path.join("top/c/b.png"),
            zip_path.join("top/c/d.png"),
            d.join("gone.png"),
            d.join("bad.png"),
            zip_path.join("top/c/gone.png"),
        ];
        let mut paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        paths.push(String::new());
        let images = PathImages::new(paths.clone(), Limits::default());
        let shade = |row| images.load(row).unwrap().to_luma8().get_pixel(0, 0).0[0];
        assert_eq!([shade(0), shade(1), shade(2)], [10, 20, 30]);
        assert_eq!(images.name(1).as_deref(), Some(paths[1].as_str()));
        let gone = dml_core::error::chain(&images.load(3).unwrap_err());
        assert!(gone.contains("gone.png: file not found"), "{gone}");
        let bad = dml_core::error::chain(&images.load(4).unwrap_err());
        assert!(bad.contains("cannot decode image"), "{bad}");
        assert!(images.load(5).is_err());
        assert_eq!(images.name(6), None);
        assert_eq!(images.archives.lock().unwrap().len(), 1, "opened once");
    }
}
