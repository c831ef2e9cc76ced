//! Reading embeddings and labels from files: the one module of this crate that touches the
//! file system.
//!
//! - Embeddings: `.npy` (2-D, `f32` or `f64`, C or Fortran order, either endianness) through
//!   the `npyz` crate, or `.safetensors` (a 2-D `F32` / `F64` tensor) through `safetensors`.
//! - Labels: `.npy` (1-D, or 2-D with one column, any integer dtype) or any other extension as
//!   text, one label per line (surrounding whitespace trimmed; any string is a label), decoded
//!   by [`dml_core::text`] (a byte-order mark dropped, UTF-16 and invalid UTF-8 refused).
//!
//! A `.npy` header is checked against the file before its data is read ([`open_npy`]), so
//! memory stays proportional to the file, whatever the header claims. Errors name the file
//! and, where one is at fault, the row or line.

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use npyz::{DType, NpyFile, Order, TypeChar};
use safetensors::{Dtype, SafeTensors};

use crate::embeddings::Embeddings;
use crate::error::{Error, Result};
use crate::labels::Labels;

/// Reads an embedding matrix from a `.npy` or `.safetensors` file.
///
/// `tensor` names the tensor inside a `.safetensors` file; without it the file must hold
/// exactly one. It is an error for `.npy` files.
///
/// # Errors
/// Unreadable files, other extensions, shapes other than 2-D, unsupported dtypes, a missing
/// tensor, and non-finite values ([`Error::WithPath`] around [`Error::NonFinite`], naming the
/// row).
pub fn read_embeddings(path: &Path, tensor: Option<&str>) -> Result<Embeddings> {
    recover_set(path)?;
    match extension(path).as_str() {
        "npy" => {
            if let Some(name) = tensor {
                return Err(Error::Npy {
                    path: path.into(),
                    reason: format!("a .npy file holds one array; tensor `{name}` was asked for"),
                });
            }
            read_npy_embeddings(path)
        }
        "safetensors" => read_safetensors_embeddings(path, tensor),
        _ => Err(Error::Npy {
            path: path.into(),
            reason: "embeddings must be a .npy or .safetensors file".into(),
        }),
    }
}

/// Reads class labels from a `.npy` file (integers) or a text file (one label per line).
///
/// # Errors
/// Unreadable files, non-integer or multi-column `.npy` arrays, and empty text lines
/// ([`Error::LabelLine`] with the line number).
pub fn read_labels(path: &Path) -> Result<Labels> {
    recover_set(path)?;
    if extension(path) == "npy" {
        read_npy_labels(path)
    } else {
        read_text_labels(path)
    }
}

/// Finishes an interrupted write of the set `path` belongs to (`dml embed` writes embeddings,
/// labels and paths as one set), so that a reader never pairs new rows with old labels.
fn recover_set(path: &Path) -> Result<()> {
    dml_core::atomic::recover_set(path).map_err(|e| Error::Io {
        path: e.path,
        source: e.source,
    })
}

fn extension(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.into(),
        source,
    }
}

fn npy_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Npy {
        path: path.into(),
        reason: reason.into(),
    }
}

/// The largest `.npy` header read, numpy's own default limit (`max_header_size`): headers of
/// plain arrays take about 128 bytes, and a parser fed a huge one can be made slow or deep.
const MAX_NPY_HEADER: u64 = 10_000;

/// How deep brackets may nest in a `.npy` header: plain headers nest 2 deep.
const MAX_NPY_NESTING: usize = 16;

/// Opens a `.npy` file for reading its data, after checking its header against the file.
///
/// The shape's element count times the dtype's size, computed without overflow, must equal
/// the bytes after the header exactly: more is an error saying the file is short, less an
/// error naming the trailing bytes. Reading the data then never allocates more than the file
/// holds, and a header whose shape product overflows is an error, not a small array.
///
/// # Errors
/// Unreadable files, and headers that are not `.npy`, too large, or disagree with the
/// file's length ([`Error::Npy`]).
pub fn open_npy(path: &Path) -> Result<NpyFile<BufReader<File>>> {
    let file = File::open(path).map_err(io_error(path))?;
    let file_len = file.metadata().map_err(io_error(path))?.len();
    let mut reader = BufReader::new(file);
    let header = npy_header(&mut reader, file_len).map_err(|reason| npy_error(path, reason))?;
    reader.rewind().map_err(io_error(path))?;
    let npy =
        NpyFile::new(reader).map_err(|e| npy_error(path, format!("not a valid .npy file: {e}")))?;
    let dtype = npy.dtype();
    let declared = dtype
        .num_bytes()
        .and_then(|item| header.elements.checked_mul(item as u64))
        .ok_or_else(|| {
            npy_error(
                path,
                format!(
                    "shape {:?} of {} takes more bytes than fit in 64 bits",
                    header.shape,
                    dtype.descr()
                ),
            )
        })?;
    let available = file_len - header.data_offset;
    let what = || format!("shape {:?} of {}", header.shape, dtype.descr());
    if declared > available {
        return Err(npy_error(
            path,
            format!(
                "the header declares {} ({declared} bytes of data) but the file holds \
                 {available} bytes after its header: the file is cut short",
                what()
            ),
        ));
    }
    if declared < available {
        return Err(npy_error(
            path,
            format!(
                "{} trailing bytes after the {declared} bytes of data the header declares ({})",
                available - declared,
                what()
            ),
        ));
    }
    Ok(npy)
}

/// What a `.npy` header says about the data's size.
struct NpyHeaderSize {
    /// Byte offset of the data: the file's first byte after its header.
    data_offset: u64,
    shape: Vec<u64>,
    /// The product of `shape`; it does not overflow, nor does any partial product of its
    /// non-zero dimensions (npyz's strides).
    elements: u64,
}

/// Reads the header at the start of `reader`, a file of `file_len` bytes, with the parser
/// npyz uses, checking each size before it is used: the header must fit in the file and in
/// [`MAX_NPY_HEADER`], and its shape's product must not overflow.
fn npy_header(reader: &mut impl Read, file_len: u64) -> Result<NpyHeaderSize, String> {
    let not_npy = |why: &str| format!("not a valid .npy file: {why}");
    let mut magic = [0u8; 8];
    reader
        .read_exact(&mut magic)
        .map_err(|_| not_npy("shorter than the 8-byte magic and version"))?;
    if &magic[..6] != b"\x93NUMPY" {
        return Err(not_npy("it does not start with the magic \\x93NUMPY"));
    }
    let len_bytes = match magic[6] {
        1 => 2,
        2 | 3 => 4,
        v => return Err(not_npy(&format!("unknown format version {v}.{}", magic[7]))),
    };
    let mut len = [0u8; 4];
    reader
        .read_exact(&mut len[..len_bytes])
        .map_err(|_| not_npy("cut short in its header length"))?;
    let header_len = u64::from(u32::from_le_bytes(len));
    let data_offset = 8 + len_bytes as u64 + header_len;
    if header_len > MAX_NPY_HEADER {
        return Err(not_npy(&format!(
            "its header claims {header_len} bytes, more than numpy's limit of {MAX_NPY_HEADER}"
        )));
    }
    if data_offset > file_len {
        return Err(not_npy(&format!(
            "its header claims {header_len} bytes but the file has {file_len} in all"
        )));
    }
    let mut text = vec![0u8; header_len as usize];
    reader
        .read_exact(&mut text)
        .map_err(|e| not_npy(&format!("cannot read its header: {e}")))?;
    let mut depth = 0usize;
    for &b in &text {
        match b {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_NPY_NESTING {
            return Err(not_npy("its header nests too deep"));
        }
    }
    let text = std::str::from_utf8(text.strip_suffix(b"\n").unwrap_or(&text))
        .map_err(|_| not_npy("its header is not text"))?;
    let header: py_literal::Value = text
        .parse()
        .map_err(|e| not_npy(&format!("its header is not a Python literal: {e}")))?;
    let shape = header
        .as_dict()
        .and_then(|d| {
            d.iter()
                .find(|(k, _)| k.as_string().is_some_and(|k| k == "shape"))
        })
        .and_then(|(_, v)| v.as_tuple().or_else(|| v.as_list()))
        .ok_or_else(|| not_npy("its header has no `shape` tuple"))?
        .iter()
        .map(|d| d.as_integer().and_then(|d| u64::try_from(d).ok()))
        .collect::<Option<Vec<u64>>>()
        .ok_or_else(|| not_npy("its shape holds a value that is not a dimension"))?;
    let overflow = || format!("shape {shape:?} has more elements than fit in 64 bits");
    shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d.max(1)))
        .ok_or_else(overflow)?;
    let elements = shape.iter().product();
    Ok(NpyHeaderSize {
        data_offset,
        shape,
        elements,
    })
}

/// The element kind and byte size of a plain dtype.
fn plain(path: &Path, dtype: &DType) -> Result<(TypeChar, u64)> {
    match dtype {
        DType::Plain(t) => Ok((t.type_char(), t.size_field())),
        other => Err(npy_error(
            path,
            format!("structured dtype {} is not supported", other.descr()),
        )),
    }
}

fn read_npy_embeddings(path: &Path) -> Result<Embeddings> {
    let npy = open_npy(path)?;
    let shape = npy.shape().to_vec();
    let [rows, cols] = shape[..] else {
        return Err(npy_error(
            path,
            format!("embeddings must be a 2-D array, found shape {shape:?}"),
        ));
    };
    let (rows, cols) = (rows as usize, cols as usize);
    let order = npy.order();
    let dtype = npy.dtype();
    let read_err = |e: std::io::Error| npy_error(path, format!("cannot read the data: {e}"));
    let values: Vec<f32> = match plain(path, &dtype)? {
        (TypeChar::Float, 4) => npy.into_vec::<f32>().map_err(read_err)?,
        (TypeChar::Float, 8) => {
            let wide = npy.into_vec::<f64>().map_err(read_err)?;
            if let Some(pos) = wide.iter().position(|v| !(*v as f32).is_finite()) {
                let (row, column) = match order {
                    Order::C => (pos / cols.max(1), pos % cols.max(1)),
                    Order::Fortran => (pos % rows.max(1), pos / rows.max(1)),
                };
                return Err(Error::NonFinite {
                    row,
                    column,
                    value: wide[pos],
                }
                .with_path(path));
            }
            wide.iter().map(|&v| v as f32).collect()
        }
        _ => {
            return Err(npy_error(
                path,
                format!(
                    "embeddings must be float32 or float64, found dtype {}",
                    dtype.descr()
                ),
            ));
        }
    };
    let values = match order {
        Order::C => values,
        Order::Fortran => transpose(&values, cols, rows),
    };
    if cols == 0 {
        return Err(Error::ZeroDimension.with_path(path));
    }
    Embeddings::new(values, cols).map_err(|e| e.with_path(path))
}

/// Row-major copy of a row-major `rows x cols` matrix's transpose.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for (r, row) in values.chunks_exact(cols.max(1)).enumerate().take(rows) {
        for (c, &v) in row.iter().enumerate() {
            out[c * rows + r] = v;
        }
    }
    out
}

fn read_npy_labels(path: &Path) -> Result<Labels> {
    let npy = open_npy(path)?;
    let shape = npy.shape().to_vec();
    if !(shape.len() == 1 || (shape.len() == 2 && shape[1] == 1)) {
        return Err(npy_error(
            path,
            format!("labels must be a 1-D array, found shape {shape:?}"),
        ));
    }
    let dtype = npy.dtype();
    let read_err = |e: std::io::Error| npy_error(path, format!("cannot read the data: {e}"));
    let values: Vec<i128> = match plain(path, &dtype)? {
        (TypeChar::Int, 1) => widen(npy.into_vec::<i8>().map_err(read_err)?),
        (TypeChar::Int, 2) => widen(npy.into_vec::<i16>().map_err(read_err)?),
        (TypeChar::Int, 4) => widen(npy.into_vec::<i32>().map_err(read_err)?),
        (TypeChar::Int, 8) => widen(npy.into_vec::<i64>().map_err(read_err)?),
        (TypeChar::Uint, 1) => widen(npy.into_vec::<u8>().map_err(read_err)?),
        (TypeChar::Uint, 2) => widen(npy.into_vec::<u16>().map_err(read_err)?),
        (TypeChar::Uint, 4) => widen(npy.into_vec::<u32>().map_err(read_err)?),
        (TypeChar::Uint, 8) => widen(npy.into_vec::<u64>().map_err(read_err)?),
        _ => {
            return Err(npy_error(
                path,
                format!(
                    "labels must have an integer dtype, found {} (numpy: labels.astype(np.int64))",
                    dtype.descr()
                ),
            ));
        }
    };
    Ok(Labels::from_values(values))
}

fn widen<T: Into<i128>>(values: Vec<T>) -> Vec<i128> {
    values.into_iter().map(Into::into).collect()
}

fn read_text_labels(path: &Path) -> Result<Labels> {
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    let text = dml_core::text::decode(&bytes).map_err(|source| Error::Text {
        path: path.into(),
        source,
    })?;
    let mut labels = Vec::new();
    for (i, line) in dml_core::text::lines(text).enumerate() {
        let label = line.trim();
        if label.is_empty() {
            return Err(Error::LabelLine {
                path: path.into(),
                line: i + 1,
                reason: "empty line (one label per line expected)",
            });
        }
        labels.push(label);
    }
    Ok(Labels::from_values(labels))
}

fn read_safetensors_embeddings(path: &Path, tensor: Option<&str>) -> Result<Embeddings> {
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    let err = |reason: String| Error::Safetensors {
        path: path.into(),
        reason,
    };
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| err(format!("not a valid .safetensors file: {e}")))?;
    let mut names: Vec<&str> = file.names().into_iter().map(String::as_str).collect();
    names.sort_unstable();
    let name = match tensor {
        Some(name) => name,
        None => match names[..] {
            [only] => only,
            _ => {
                return Err(err(format!(
                    "holds {} tensors ({}); name one",
                    names.len(),
                    names.join(", ")
                )));
            }
        },
    };
    let view = file.tensor(name).map_err(|_| {
        err(format!(
            "no tensor `{name}`; it holds: {}",
            names.join(", ")
        ))
    })?;
    let shape = view.shape().to_vec();
    let [_, cols] = shape[..] else {
        return Err(err(format!(
            "tensor `{name}` must be 2-D, found shape {shape:?}"
        )));
    };
    let data = view.data();
    let values: Vec<f32> = match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F64 => {
            let wide: Vec<f64> = data
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect();
            return Embeddings::from_f64(&wide, cols).map_err(|e| e.with_path(path));
        }
        other => {
            return Err(err(format!(
                "tensor `{name}` has dtype {other:?}; F32 or F64 is needed"
            )));
        }
    };
    Embeddings::new(values, cols).map_err(|e| e.with_path(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use npyz::WriterBuilder;

    /// The error and its causes, as the CLI prints them.
    fn chain(err: Error) -> String {
        let mut text = err.to_string();
        let mut cause = std::error::Error::source(&err);
        while let Some(c) = cause {
            text = format!("{text}: {c}");
            cause = c.source();
        }
        text
    }

    fn write_npy<T: npyz::AutoSerialize + Copy>(
        path: &Path,
        shape: &[u64],
        order: Order,
        values: &[T],
    ) {
        let mut writer = npyz::WriteOptions::new()
            .default_dtype()
            .shape(shape)
            .order(order)
            .writer(File::create(path).unwrap())
            .begin_nd()
            .unwrap();
        writer.extend(values.iter().copied()).unwrap();
        writer.finish().unwrap();
    }

    #[test]
    fn npy_embeddings_in_both_orders_and_widths() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("c.npy");
        write_npy(&c, &[2, 3], Order::C, &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let e = read_embeddings(&c, None).unwrap();
        assert_eq!((e.rows(), e.dim()), (2, 3));
        assert_eq!(e.row(1), &[4.0, 5.0, 6.0]);
        // the same matrix stored column by column, as float64
        let f = dir.path().join("f.npy");
        write_npy(
            &f,
            &[2, 3],
            Order::Fortran,
            &[1.0f64, 4.0, 2.0, 5.0, 3.0, 6.0],
        );
        assert_eq!(read_embeddings(&f, None).unwrap(), e);
    }

    #[test]
    fn npy_problems_name_the_file_and_row() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nan.npy");
        write_npy(
            &p,
            &[3, 2],
            Order::C,
            &[0.0f64, 1.0, 2.0, 3.0, f64::INFINITY, 5.0],
        );
        let msg = chain(read_embeddings(&p, None).unwrap_err());
        assert!(msg.contains("nan.npy") && msg.contains("row 2"), "{msg}");
        let p = dir.path().join("flat.npy");
        write_npy(&p, &[4], Order::C, &[0.0f32; 4]);
        let msg = chain(read_embeddings(&p, None).unwrap_err());
        assert!(msg.contains("2-D"), "{msg}");
        let p = dir.path().join("ints.npy");
        write_npy(&p, &[2, 2], Order::C, &[1i32, 2, 3, 4]);
        let msg = chain(read_embeddings(&p, None).unwrap_err());
        assert!(msg.contains("float32 or float64"), "{msg}");
        let msg = chain(read_embeddings(&dir.path().join("missing.npy"), None).unwrap_err());
        assert!(msg.contains("missing.npy"), "{msg}");
        let p = dir.path().join("junk.npy");
        std::fs::write(&p, b"not numpy").unwrap();
        assert!(matches!(read_embeddings(&p, None), Err(Error::Npy { .. })));
    }

    #[test]
    fn labels_from_any_integer_npy_and_from_text() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.npy");
        write_npy(&p, &[4], Order::C, &[5u8, 2, 5, 9]);
        assert_eq!(read_labels(&p).unwrap().ids(), &[0, 1, 0, 2]);
        write_npy(&p, &[3, 1], Order::C, &[-1i64, 7, -1]);
        let l = read_labels(&p).unwrap();
        assert_eq!((l.ids(), l.names()[0].as_str()), (&[0, 1, 0][..], "-1"));
        write_npy(&p, &[2], Order::C, &[1.0f32, 2.0]);
        assert!(chain(read_labels(&p).unwrap_err()).contains("integer"));
        let t = dir.path().join("l.txt");
        std::fs::write(&t, "dog\ncat\r\n dog \n").unwrap();
        let l = read_labels(&t).unwrap();
        assert_eq!(l.ids(), &[0, 1, 0]);
        assert_eq!(l.names(), &["dog", "cat"]);
        std::fs::write(&t, "dog\n\ncat\n").unwrap();
        assert!(matches!(
            read_labels(&t),
            Err(Error::LabelLine { line: 2, .. })
        ));
    }

    #[test]
    fn safetensors_by_name_or_the_only_tensor() {
        use safetensors::tensor::TensorView;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.safetensors");
        let a: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let b: Vec<u8> = [0.5f64, f64::NAN]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let one = [("emb", TensorView::new(Dtype::F32, vec![2, 2], &a).unwrap())];
        safetensors::serialize_to_file(one, &None, &p).unwrap();
        assert_eq!(read_embeddings(&p, None).unwrap().row(1), &[3.0, 4.0]);
        let two = [
            ("emb", TensorView::new(Dtype::F32, vec![2, 2], &a).unwrap()),
            ("bad", TensorView::new(Dtype::F64, vec![2, 1], &b).unwrap()),
        ];
        safetensors::serialize_to_file(two, &None, &p).unwrap();
        let msg = chain(read_embeddings(&p, None).unwrap_err());
        assert!(
            msg.contains("2 tensors") && msg.contains("bad, emb"),
            "{msg}"
        );
        assert_eq!(read_embeddings(&p, Some("emb")).unwrap().rows(), 2);
        let msg = chain(read_embeddings(&p, Some("bad")).unwrap_err());
        assert!(msg.contains("row 1"), "{msg}");
        let msg = chain(read_embeddings(&p, Some("nope")).unwrap_err());
        assert!(msg.contains("no tensor `nope`"), "{msg}");
    }

    /// A version-1.0 `.npy` file with the header dict `dict` (padded as numpy pads it) and
    /// the bytes `data`.
    fn raw_npy(dict: &str, data: &[u8]) -> Vec<u8> {
        let mut header = dict.to_owned();
        while !(10 + header.len() + 1).is_multiple_of(64) {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn f32_dict(shape: &str) -> String {
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}")
    }

    #[test]
    fn npy_headers_are_checked_against_the_file_length_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.npy");
        let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        std::fs::write(&p, raw_npy(&f32_dict("(2, 2)"), &data)).unwrap();
        assert_eq!(read_embeddings(&p, None).unwrap().row(1), &[3.0, 4.0]);
        // A shape whose product overflows 64 bits: not a small array.
        std::fs::write(&p, raw_npy(&f32_dict("(4294967296, 4294967297)"), &data)).unwrap();
        let msg = chain(read_embeddings(&p, None).unwrap_err());
        assert!(
            msg.contains("e.npy") && msg.contains("more elements than fit in 64 bits"),
            "{msg}"
        );
        // 2^40 x 4 floats declared in a 144-byte file: an error, not a 16 TiB allocation.
        std::fs::write(&p, raw_npy(&f32_dict("(1099511627776, 4)"), &data)).unwrap();
        let msg = chain(read_embeddings(&p, None).unwrap_err());
        assert!(
            msg.contains("(17592186044416 bytes of data) but the file holds 16 bytes")
                && msg.contains("cut short"),
            "{msg}"
        );
        std::fs::write(&p, raw_npy(&f32_dict("(1, 2)"), &data)).unwrap();
        let msg = chain(read_embeddings(&p, None).unwrap_err());
        assert!(
            msg.contains("8 trailing bytes after the 8 bytes of data"),
            "{msg}"
        );
        // Labels go through the same check.
        let dict = "{'descr': '<i8', 'fortran_order': False, 'shape': (1099511627776,), }";
        std::fs::write(&p, raw_npy(dict, &[0; 8])).unwrap();
        assert!(chain(read_labels(&p).unwrap_err()).contains("cut short"));
        let mut huge_header = b"\x93NUMPY\x02\x00".to_vec();
        huge_header.extend_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&p, huge_header).unwrap();
        assert!(chain(read_labels(&p).unwrap_err()).contains("numpy's limit"));
    }

    #[test]
    fn text_labels_lose_a_byte_order_mark_and_refuse_other_encodings() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("l.txt");
        std::fs::write(&t, b"\xEF\xBB\xBFdog\r\ncat\r\ndog").unwrap();
        let l = read_labels(&t).unwrap();
        assert_eq!(l.names(), &["dog", "cat"]);
        assert_eq!(l.ids(), &[0, 1, 0]);
        std::fs::write(&t, b"\xFF\xFEd\0o\0g\0").unwrap();
        let err = read_labels(&t).unwrap_err();
        assert!(matches!(err, Error::Text { .. }), "{err:?}");
        assert!(dml_core::error::chain(&err).contains("UTF-16LE"), "{err}");
        std::fs::write(&t, b"dog\nc\xE4t\n").unwrap();
        let msg = dml_core::error::chain(&read_labels(&t).unwrap_err());
        assert!(
            msg.contains("l.txt: line 2, byte 2: not valid UTF-8"),
            "{msg}"
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            #[test]
            fn any_bytes_never_panic_as_npy_or_text(
                bytes in proptest::collection::vec(any::<u8>(), 0..300),
                magic in any::<bool>(),
            ) {
                let dir = tempfile::tempdir().unwrap();
                let mut content = if magic { b"\x93NUMPY\x01\x00".to_vec() } else { Vec::new() };
                content.extend_from_slice(&bytes);
                for name in ["x.npy", "x.txt"] {
                    let p = dir.path().join(name);
                    std::fs::write(&p, &content).unwrap();
                    let _ = read_labels(&p);
                    let _ = read_embeddings(&p, None);
                }
            }

            #[test]
            fn shapes_declaring_more_data_than_the_file_holds_are_errors(
                dims in proptest::collection::vec(1u64..=u64::MAX, 1..4),
            ) {
                let total = dims.iter().try_fold(4u64, |a, &d| a.checked_mul(d));
                prop_assume!(total.is_none_or(|t| t > 64));
                let dir = tempfile::tempdir().unwrap();
                let p = dir.path().join("e.npy");
                let shape = format!("({},)", dims.iter().map(u64::to_string).collect::<Vec<_>>().join(", "));
                std::fs::write(&p, raw_npy(&f32_dict(&shape), &[0; 64])).unwrap();
                let read = read_embeddings(&p, None);
                prop_assert!(matches!(read, Err(Error::Npy { .. })), "{:?}", read);
            }

            #[test]
            fn written_npy_embeddings_and_labels_read_back_equal(
                rows in 1usize..6,
                dim in 1usize..5,
                seed in proptest::collection::vec(-1e6f32..1e6, 30),
                labels in proptest::collection::vec(any::<i64>(), 1..20),
                fortran in any::<bool>(),
            ) {
                let dir = tempfile::tempdir().unwrap();
                let values = &seed[..rows * dim];
                let e = dir.path().join("e.npy");
                let order = if fortran { Order::Fortran } else { Order::C };
                let stored = if fortran { transpose(values, rows, dim) } else { values.to_vec() };
                write_npy(&e, &[rows as u64, dim as u64], order, &stored);
                let read = read_embeddings(&e, None).unwrap();
                prop_assert_eq!((read.rows(), read.dim()), (rows, dim));
                for r in 0..rows {
                    prop_assert_eq!(read.row(r), &values[r * dim..(r + 1) * dim]);
                }
                let l = dir.path().join("l.npy");
                write_npy(&l, &[labels.len() as u64], Order::C, &labels);
                let read = read_labels(&l).unwrap();
                let names: Vec<String> = read.ids().iter().map(|&i| read.names()[i as usize].clone()).collect();
                prop_assert_eq!(names, labels.iter().map(i64::to_string).collect::<Vec<_>>());
            }

            #[test]
            fn written_text_labels_read_back_equal(
                labels in proptest::collection::vec("[^\\s\\p{C}]([^\\p{C}]{0,8}[^\\s\\p{C}])?", 1..12),
                crlf in any::<bool>(),
                mark in any::<bool>(),
            ) {
                let dir = tempfile::tempdir().unwrap();
                let t = dir.path().join("l.txt");
                let end = if crlf { "\r\n" } else { "\n" };
                let mut text = if mark { "\u{FEFF}".to_owned() } else { String::new() };
                for l in &labels {
                    text.push_str(l);
                    text.push_str(end);
                }
                std::fs::write(&t, text).unwrap();
                let read = read_labels(&t).unwrap();
                let names: Vec<&String> = read.ids().iter().map(|&i| &read.names()[i as usize]).collect();
                prop_assert_eq!(names, labels.iter().collect::<Vec<_>>());
            }
        }
    }
}
