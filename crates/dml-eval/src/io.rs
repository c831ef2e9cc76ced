//! Reading embeddings and labels from files: the one module of this crate that touches the
//! file system.
//!
//! - Embeddings: `.npy` (2-D, `f32` or `f64`, C or Fortran order, either endianness) through
//!   the `npyz` crate, or `.safetensors` (a 2-D `F32` / `F64` tensor) through `safetensors`.
//! - Labels: `.npy` (1-D, or 2-D with one column, any integer dtype) or any other extension as
//!   text, one label per line (surrounding whitespace trimmed; any string is a label).
//!
//! Errors name the file and, where one is at fault, the row or line.

use std::fs::File;
use std::io::BufReader;
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
    if extension(path) == "npy" {
        read_npy_labels(path)
    } else {
        read_text_labels(path)
    }
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

fn open_npy(path: &Path) -> Result<NpyFile<BufReader<File>>> {
    let file = File::open(path).map_err(io_error(path))?;
    NpyFile::new(BufReader::new(file))
        .map_err(|e| npy_error(path, format!("not a valid .npy file: {e}")))
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
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    let mut labels = Vec::new();
    for (i, line) in text.lines().enumerate() {
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
}
