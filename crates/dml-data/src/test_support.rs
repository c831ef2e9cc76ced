//! Helpers for tests: fabricated file trees, tiny images, zip archives and MATLAB v5 files.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A temporary directory that files are written into by relative path.
pub(crate) struct TempTree {
    dir: tempfile::TempDir,
}

impl TempTree {
    pub(crate) fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn root(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub(crate) fn write(&self, rel: &str, bytes: &[u8]) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// Writes a small grey PNG whose pixels encode `value`.
    pub(crate) fn write_png(&self, rel: &str, value: u8) {
        self.write(rel, &png_bytes(6, 4, value));
    }
}

/// A `width` x `height` 8-bit grey PNG filled with `value`.
pub(crate) fn png_bytes(width: u32, height: u32, value: u8) -> Vec<u8> {
    let img = image::GrayImage::from_pixel(width, height, image::Luma([value]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A PNG whose header claims `width` x `height` pixels, with no valid pixel data after it.
pub(crate) fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut png = png_bytes(1, 1, 0);
    // IHDR's data starts at byte 16: width, height (big-endian); its CRC is at 29.
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

/// The CRC-32 of PNG chunks (ISO 3309), bit by bit.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Writes a deflate-compressed zip archive holding `entries` (name, contents).
pub(crate) fn write_zip(path: &Path, entries: &[(&str, &[u8])]) {
    let file = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in entries {
        zip.start_file(*name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

/// A MATLAB value to write into a fabricated v5 .mat file.
#[derive(Debug)]
pub(crate) enum MatWrite {
    /// A 1xN char array stored as UTF-16 code units (what MATLAB writes).
    Char(String),
    /// A 1x1 uint8 scalar (small-element format: the byte fits in the tag).
    U8(u8),
    /// A 1xN double row vector.
    Doubles(Vec<f64>),
    /// A 1xN cell array.
    Cell(Vec<MatWrite>),
    /// A 1xN struct array: field names, then per element one value per field.
    Struct(Vec<&'static str>, Vec<Vec<MatWrite>>),
}

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_DOUBLE: u32 = 9;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;

/// One data element (tag + data + padding to 8 bytes), little-endian; data of at most 4 bytes
/// uses the small-element format, as MATLAB does.
fn element(ty: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if !data.is_empty() && data.len() <= 4 {
        out.extend_from_slice(&(ty | ((data.len() as u32) << 16)).to_le_bytes());
        out.extend_from_slice(data);
        out.resize(8, 0);
        return out;
    }
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    out.resize(8 + data.len().div_ceil(8) * 8, 0);
    out
}

fn matrix(name: &str, value: &MatWrite) -> Vec<u8> {
    let (class, n, body): (u32, usize, Vec<u8>) = match value {
        MatWrite::Char(s) => {
            let units: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
            (4, s.encode_utf16().count(), element(MI_UINT16, &units))
        }
        MatWrite::U8(v) => (9, 1, element(MI_UINT8, &[*v])),
        MatWrite::Doubles(v) => {
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            (6, v.len(), element(MI_DOUBLE, &bytes))
        }
        MatWrite::Cell(items) => (
            1,
            items.len(),
            items.iter().flat_map(|i| matrix("", i)).collect(),
        ),
        MatWrite::Struct(fields, items) => {
            let width = 32usize;
            let mut names = Vec::new();
            for f in fields {
                let mut b = f.as_bytes().to_vec();
                b.resize(width, 0);
                names.extend(b);
            }
            let mut body = element(MI_INT32, &(width as i32).to_le_bytes());
            body.extend(element(MI_INT8, &names));
            for item in items {
                for v in item {
                    body.extend(matrix("", v));
                }
            }
            (2, items.len(), body)
        }
    };
    let mut flags = Vec::new();
    flags.extend_from_slice(&class.to_le_bytes());
    flags.extend_from_slice(&0u32.to_le_bytes());
    let mut dims = Vec::new();
    dims.extend_from_slice(&1i32.to_le_bytes());
    dims.extend_from_slice(&(n as i32).to_le_bytes());
    let mut inner = element(MI_UINT32, &flags);
    inner.extend(element(MI_INT32, &dims));
    inner.extend(element(MI_INT8, name.as_bytes()));
    inner.extend(body);
    element(MI_MATRIX, &inner)
}

/// The bytes of a little-endian MATLAB v5 .mat file holding `vars`; each variable marked
/// `true` is wrapped in a zlib-compressed element, as MATLAB's default `-v7` does.
pub(crate) fn mat_file(vars: &[(&str, MatWrite, bool)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut text = b"MATLAB 5.0 MAT-file, written by a dml-data test".to_vec();
    text.resize(116, b' ');
    out.extend(text);
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(&0x0100u16.to_le_bytes());
    out.extend_from_slice(b"IM");
    for (name, value, compressed) in vars {
        let m = matrix(name, value);
        if *compressed {
            let mut enc =
                flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(&m).unwrap();
            let z = enc.finish().unwrap();
            out.extend_from_slice(&MI_COMPRESSED.to_le_bytes());
            out.extend_from_slice(&(z.len() as u32).to_le_bytes());
            out.extend(z);
        } else {
            out.extend(m);
        }
    }
    out
}
