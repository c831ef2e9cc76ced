//! Thumbnails: one small JPEG under `thumbs/` for every image the page shows, made in
//! parallel; images that are missing or do not decode are collected instead.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use image::DynamicImage;
use image::codecs::jpeg::JpegEncoder;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::images::ImageSource;

/// JPEG quality of the thumbnails: small files, no visible blocks at 96 px.
const JPEG_QUALITY: u8 = 85;

/// Which set a row belongs to: the queries (only when they are separate from the reference
/// set) or the reference set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Side {
    /// A row of the separate query set.
    Query,
    /// A row of the reference set (also the queries in leave-one-out mode).
    Reference,
}

/// One row of one set.
pub(crate) type Item = (Side, usize);

/// What the page shows for an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Thumb {
    /// The row has no image (no path): a plain placeholder.
    NoImage,
    /// The thumbnail, as a path relative to the page (`thumbs/12.jpg`).
    File(String),
    /// The image is named but missing or undecodable: the placeholder carries its name.
    Missing(String),
}

/// An image that could not be shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingImage {
    /// Its name (path) as the image source gives it.
    pub path: String,
    /// Why: the error and its causes on one line.
    pub reason: String,
}

/// The thumbnails of a page and the images that were missing (each once, in the order the
/// items were given).
#[derive(Debug, Default)]
pub(crate) struct Thumbs {
    by_item: HashMap<Item, Thumb>,
    pub missing: Vec<MissingImage>,
    pub written: usize,
}

impl Thumbs {
    /// What to show for `item` (no image for an item that was not asked for).
    pub fn get(&self, item: Item) -> &Thumb {
        self.by_item.get(&item).unwrap_or(&Thumb::NoImage)
    }
}

/// The file name of an item's thumbnail, inside `thumbs/`: no user text ever goes into it.
fn file_name(item: Item) -> String {
    match item {
        (Side::Query, row) => format!("q{row}.jpg"),
        (Side::Reference, row) => format!("{row}.jpg"),
    }
}

/// Makes the thumbnail (at most `size` pixels a side) of every item in `items` (duplicates
/// are made once) into `folder`, reading images from `query` or `reference` by side.
///
/// # Errors
/// A thumbnail that cannot be written or encoded; missing images are not errors.
pub(crate) fn make(
    items: &[Item],
    query: &dyn ImageSource,
    reference: &dyn ImageSource,
    folder: &Path,
    size: u32,
) -> Result<Thumbs> {
    let mut seen = HashSet::new();
    let unique: Vec<Item> = items.iter().copied().filter(|i| seen.insert(*i)).collect();
    if unique.is_empty() {
        return Ok(Thumbs::default());
    }
    let outcomes: Vec<(Thumb, Option<MissingImage>)> = unique
        .par_iter()
        .map(|&item| {
            let source = match item.0 {
                Side::Query => query,
                Side::Reference => reference,
            };
            let Some(name) = source.name(item.1) else {
                return Ok((Thumb::NoImage, None));
            };
            match source.load(item.1) {
                Ok(image) => {
                    let file = file_name(item);
                    // Made by the first thumbnail: a page without images has no folder.
                    std::fs::create_dir_all(folder).map_err(|e| Error::io(folder, e))?;
                    write_thumbnail(&image, &folder.join(&file), size)?;
                    Ok((Thumb::File(format!("thumbs/{file}")), None))
                }
                Err(e) => {
                    let reason = dml_core::error::chain(&e);
                    let missing = MissingImage {
                        path: name.clone(),
                        reason,
                    };
                    Ok((Thumb::Missing(name), Some(missing)))
                }
            }
        })
        .collect::<Result<_>>()?;
    let mut thumbs = Thumbs::default();
    let mut listed = HashSet::new();
    for (item, (thumb, missing)) in unique.into_iter().zip(outcomes) {
        thumbs.written += usize::from(matches!(thumb, Thumb::File(_)));
        if let Some(m) = missing
            && listed.insert(m.path.clone())
        {
            thumbs.missing.push(m);
        }
        thumbs.by_item.insert(item, thumb);
    }
    Ok(thumbs)
}

/// Writes `image` shrunk to fit `size` x `size` (never enlarged: the page scales it) as a
/// JPEG at `path`.
fn write_thumbnail(image: &DynamicImage, path: &Path, size: u32) -> Result<()> {
    let small = if image.width() > size || image.height() > size {
        image.thumbnail(size, size)
    } else {
        image.clone()
    };
    // JPEG holds 8-bit grey or RGB, without alpha.
    let small = if small.color().has_color() {
        DynamicImage::ImageRgb8(small.to_rgb8())
    } else {
        DynamicImage::ImageLuma8(small.to_luma8())
    };
    let mut bytes = Vec::new();
    small
        .write_with_encoder(JpegEncoder::new_with_quality(&mut bytes, JPEG_QUALITY))
        .map_err(|source| Error::Thumbnail {
            path: path.to_owned(),
            source,
        })?;
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Row 0: a 300 x 150 image; row 1: missing; row 2: no image; row 3: a 10 x 10 image.
    struct Fake;

    impl ImageSource for Fake {
        fn rows(&self) -> usize {
            4
        }

        fn name(&self, row: usize) -> Option<String> {
            (row != 2).then(|| format!("img<{row}>.png"))
        }

        fn load(&self, row: usize) -> Result<DynamicImage, dml_data::Error> {
            match row {
                0 => Ok(DynamicImage::ImageRgba8(image::RgbaImage::new(300, 150))),
                3 => Ok(DynamicImage::ImageLuma8(image::GrayImage::new(10, 10))),
                _ => Err(dml_data::Error::MissingFile {
                    path: format!("img<{row}>.png").into(),
                    listed_in: None,
                }),
            }
        }
    }

    #[test]
    fn shrinks_lists_missing_once_and_skips_rows_without_images() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("thumbs");
        let r = Side::Reference;
        let items = [(r, 0), (r, 1), (r, 2), (Side::Query, 1), (r, 1), (r, 3)];
        let thumbs = make(&items, &Fake, &Fake, &folder, 96).unwrap();
        assert_eq!(thumbs.get((r, 0)), &Thumb::File("thumbs/0.jpg".into()));
        assert_eq!(thumbs.get((r, 1)), &Thumb::Missing("img<1>.png".into()));
        assert_eq!(thumbs.get((r, 2)), &Thumb::NoImage);
        assert_eq!(thumbs.get((r, 9)), &Thumb::NoImage);
        assert_eq!(thumbs.written, 2);
        assert_eq!(thumbs.missing.len(), 1, "{:?}", thumbs.missing);
        assert!(thumbs.missing[0].reason.contains("file not found"));
        let big = image::open(folder.join("0.jpg")).unwrap();
        assert_eq!((big.width(), big.height()), (96, 48));
        let small = image::open(folder.join("3.jpg")).unwrap();
        assert_eq!((small.width(), small.height()), (10, 10));
        let mut names: Vec<_> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["0.jpg", "3.jpg"]);
    }
}
