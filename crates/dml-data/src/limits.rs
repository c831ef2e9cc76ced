//! [`Limits`]: how large one file or image may be, and the readers that hold to it.
//!
//! Headers can claim any size: a 50 KB zip entry may declare 4 GiB, a PNG 100000 x 100000
//! pixels, a compressed .mat variable may inflate a thousandfold. Every reader checks such a
//! claim before it allocates and stops reading where the data runs past the limit, so memory
//! stays bounded by the limits and not by what a file says about itself.

use std::io::{Cursor, Read};
use std::path::Path;

use image::{DynamicImage, ImageError, ImageReader};
use serde::{Deserialize, Serialize};

use crate::Error;

/// The largest input dml reads: the `[data.limits]` table of a run configuration.
///
/// ```toml
/// [data.limits]
/// max_file_mib = 256          # per file, zip entry or inflated .mat variable
/// max_image_megapixels = 64   # per image, checked from its header before decoding
/// ```
///
/// An input over a limit is an error that names the file and the setting to raise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest file, zip entry or inflated .mat variable, in MiB (2^20 bytes). Default: 256,
    /// far above any image or annotation file of the usual benchmarks (the largest, a
    /// Cars196 `cars_annos.mat`, is under 1 MiB) while a lying header costs little.
    pub max_file_mib: u64,
    /// Largest image, in megapixels (10^6 pixels). Default: 64 (8000 x 8000), several times
    /// the largest photographs of CUB, Cars196, SOP or In-Shop; a decoded RGB image that
    /// size takes about 200 MB.
    pub max_image_megapixels: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_file_mib: 256,
            max_image_megapixels: 64,
        }
    }
}

/// Bytes per MiB.
const MIB: u64 = 1 << 20;

/// The most bytes a decoded pixel takes (16-bit RGBA), for the decoder's allocation limit.
const MAX_BYTES_PER_PIXEL: u64 = 8;

impl Limits {
    /// [`Limits::max_file_mib`] in bytes.
    pub(crate) fn max_file_bytes(&self) -> u64 {
        self.max_file_mib.saturating_mul(MIB)
    }

    /// [`Limits::max_image_megapixels`] in pixels.
    fn max_image_pixels(&self) -> u64 {
        self.max_image_megapixels.saturating_mul(1_000_000)
    }

    /// The error for `path`, whose size `detail` describes ("is 300 MiB").
    pub(crate) fn file_too_large(
        &self,
        path: impl Into<std::path::PathBuf>,
        detail: String,
    ) -> Error {
        Error::FileTooLarge {
            path: path.into(),
            detail,
            limit_mib: self.max_file_mib,
        }
    }

    /// An error when `size` bytes, what `path` declares or holds, is over the file limit.
    pub(crate) fn check_size(&self, path: &Path, size: u64) -> Result<(), Error> {
        if size > self.max_file_bytes() {
            return Err(self.file_too_large(path, format!("is {}", mib(size))));
        }
        Ok(())
    }

    /// All of `reader`, which `path` names in errors, reading no more than the file limit
    /// plus one byte. `declared` is the size a header claims, checked first; it only sizes
    /// the buffer, never beyond the limit.
    pub(crate) fn read_all(
        &self,
        reader: impl Read,
        declared: u64,
        path: &Path,
    ) -> Result<Vec<u8>, Error> {
        self.check_size(path, declared)?;
        let limit = self.max_file_bytes();
        let capacity = usize::try_from(declared.min(limit)).unwrap_or(0);
        let mut bytes = Vec::with_capacity(capacity);
        reader
            .take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(path, e))?;
        if bytes.len() as u64 > limit {
            return Err(self.file_too_large(path, format!("is more than {}", mib(limit))));
        }
        Ok(bytes)
    }

    /// The image crate's limits: no side longer than the pixel limit, no buffer larger than
    /// the pixel limit's widest pixels.
    fn image_limits(&self) -> image::Limits {
        let pixels = self.max_image_pixels();
        let side = u32::try_from(pixels).unwrap_or(u32::MAX);
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(side);
        limits.max_image_height = Some(side);
        limits.max_alloc = Some(pixels.saturating_mul(MAX_BYTES_PER_PIXEL));
        limits
    }

    /// An image reader over `bytes` under `limits`, its format guessed from its content.
    fn reader(bytes: &[u8], limits: image::Limits) -> ImageReader<Cursor<&[u8]>> {
        let mut reader = ImageReader::new(Cursor::new(bytes));
        // Guessing only reads the first 16 bytes of memory: it cannot fail. Without a guess,
        // decoding fails with "unsupported format", naming the file.
        reader = match reader.with_guessed_format() {
            Ok(reader) => reader,
            Err(_) => ImageReader::new(Cursor::new(bytes)),
        };
        reader.limits(limits);
        reader
    }

    /// The image's `(width, height)` from its header, checked against the pixel limit; the
    /// pixels are not decoded. `path` names the image in errors.
    pub(crate) fn image_dimensions(
        &self,
        bytes: &[u8],
        path: &dyn Fn() -> String,
    ) -> Result<(u32, u32), Error> {
        // The sides are left to the pixel check below, which names them; the allocation
        // limit still bounds what the decoder may reserve while reading the header.
        let mut header_limits = self.image_limits();
        header_limits.max_image_width = None;
        header_limits.max_image_height = None;
        let (width, height) = Self::reader(bytes, header_limits)
            .into_dimensions()
            .map_err(|e| self.image_error(e, path, None))?;
        if u64::from(width) * u64::from(height) > self.max_image_pixels() {
            return Err(self.image_too_large(path(), Some((width, height))));
        }
        Ok((width, height))
    }

    /// Decodes `bytes`, whose header is checked against the pixel limit first.
    pub(crate) fn decode_image(
        &self,
        bytes: &[u8],
        path: &dyn Fn() -> String,
    ) -> Result<DynamicImage, Error> {
        let size = self.image_dimensions(bytes, path)?;
        Self::reader(bytes, self.image_limits())
            .decode()
            .map_err(|e| self.image_error(e, path, Some(size)))
    }

    /// Decodes the image file `bytes` (PNG or JPEG), named `name` in errors, under these
    /// limits (its header checked against the pixel limit first): the way to decode an image
    /// read outside a [`crate::Dataset`], such as the files `dml gallery` makes thumbnails of
    /// (read with [`crate::ImageStore::read`], which holds to the file limit).
    ///
    /// # Errors
    /// [`Error::ImageTooLarge`] and [`Error::Decode`], naming `name`.
    pub fn decode(&self, bytes: &[u8], name: &str) -> Result<DynamicImage, Error> {
        self.decode_image(bytes, &|| name.to_owned())
    }

    fn image_too_large(&self, path: String, size: Option<(u32, u32)>) -> Error {
        Error::ImageTooLarge {
            path,
            size,
            limit_megapixels: self.max_image_megapixels,
        }
    }

    /// The image crate's refusal as dml's error: a limit it hit names the setting.
    fn image_error(
        &self,
        e: ImageError,
        path: &dyn Fn() -> String,
        size: Option<(u32, u32)>,
    ) -> Error {
        match e {
            ImageError::Limits(_) => self.image_too_large(path(), size),
            source => Error::Decode {
                path: path(),
                source,
            },
        }
    }
}

/// `bytes` as a size beside a MiB limit: `4096 MiB` when whole, else exact with the MiB
/// rounded beside it (`1048586 bytes (1.0 MiB)`), so a size just over a limit never reads
/// as equal to it.
pub(crate) fn mib(bytes: u64) -> String {
    if bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes ({:.1} MiB)", bytes as f64 / MIB as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{png_bytes, png_claiming};

    #[test]
    fn defaults_and_toml_fields() {
        let limits: Limits = toml::from_str("max_file_mib = 8").unwrap();
        assert_eq!(limits.max_file_mib, 8);
        assert_eq!(limits.max_image_megapixels, 64);
        assert_eq!(Limits::default().max_file_bytes(), 256 << 20);
        let err = toml::from_str::<Limits>("max_file_bytes = 8")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `max_file_bytes`"), "{err}");
        assert_eq!(mib(4 << 30), "4096 MiB");
        assert_eq!(mib(3 << 19), "1572864 bytes (1.5 MiB)");
    }

    #[test]
    fn an_image_claiming_too_many_pixels_is_refused_before_decoding() {
        let name = || "imgs/huge.png".to_owned();
        let limits = Limits::default();
        let huge = png_claiming(100_000, 100_000);
        for err in [
            limits.decode_image(&huge, &name).unwrap_err(),
            limits.image_dimensions(&huge, &name).unwrap_err(),
        ] {
            assert_eq!(
                err.to_string(),
                "imgs/huge.png is 100000 x 100000 pixels, above data.limits.max_image_megapixels = 64"
            );
        }
        let err = limits
            .image_dimensions(&png_claiming(u32::MAX >> 1, 1), &name)
            .unwrap_err()
            .to_string();
        // Its rows alone would pass the decoder's allocation limit: refused while reading the
        // header, before its size is known.
        assert_eq!(
            err,
            "imgs/huge.png is too large to decode, above data.limits.max_image_megapixels = 64"
        );
        let img = limits.decode_image(&png_bytes(5, 3, 9), &name).unwrap();
        assert_eq!((img.width(), img.height()), (5, 3));
        let img = limits.decode(&png_bytes(5, 3, 9), "a.png").unwrap();
        assert_eq!((img.width(), img.height()), (5, 3));
        let err = limits
            .decode(&huge, "imgs/huge.png")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("imgs/huge.png is 100000 x 100000 pixels"),
            "{err}"
        );
        let err = limits
            .decode(b"not an image", "x.png")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cannot decode image x.png"), "{err}");
        let tight = Limits {
            max_image_megapixels: 0,
            ..limits
        };
        assert!(matches!(
            tight.decode_image(&png_bytes(5, 3, 9), &name),
            Err(Error::ImageTooLarge { .. })
        ));
    }

    #[test]
    fn reads_stop_at_the_limit_whatever_the_header_says() {
        let limits = Limits {
            max_file_mib: 1,
            ..Limits::default()
        };
        let path = Path::new("a.zip/big.png");
        let data = vec![7u8; (1 << 20) + 1];
        let err = limits
            .read_all(&data[..], 4 << 30, path)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "a.zip/big.png is 4096 MiB, above data.limits.max_file_mib = 1"
        );
        let err = limits
            .read_all(&data[..], 10, path)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "a.zip/big.png is more than 1 MiB, above data.limits.max_file_mib = 1"
        );
        assert_eq!(
            limits.read_all(&data[..1 << 20], 10, path).unwrap().len(),
            1 << 20
        );
    }
}
