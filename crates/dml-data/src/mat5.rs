//! A small reader for MATLAB v5 (and v7, i.e. compressed v5) `.mat` files.
//!
//! Written by hand because the Cars196 devkit's `cars_annos.mat` is a struct array, and the
//! `matfile` crate (0.5) reads numeric arrays only ("Structure arrays: not supported"). This
//! reader covers the classes annotation files use: numeric and logical arrays, char arrays,
//! cell arrays and struct arrays, little- or big-endian, plain or zlib-compressed. Sparse
//! arrays, objects and complex numbers are rejected with an error. MATLAB 7.3 files are HDF5
//! and are rejected with a hint to re-save them with `-v7`.
//!
//! Sizes in the file are checked before they are trusted: every element must lie inside its
//! parent, counts of cells and structs must fit in the bytes that hold them, nesting is at
//! most [`MAX_DEPTH`] deep, and compressed variables inflate to at most the caller's limit
//! in all, so memory stays proportional to the file and the limit.
//!
//! Format: MathWorks, "MAT-File Format" (matfile_format.pdf), chapter 1.

use std::io::Read;

/// A parsed MATLAB value. Dimensions are MATLAB's (column-major).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum MatValue {
    /// Any numeric or logical array, widened to `f64`.
    Numeric { dims: Vec<usize>, data: Vec<f64> },
    /// A char row (or column) vector.
    Char(String),
    /// A cell array, its items in column-major order.
    Cell {
        dims: Vec<usize>,
        items: Vec<MatValue>,
    },
    /// A struct array: field names, and per element (column-major) one value per field.
    Struct {
        dims: Vec<usize>,
        fields: Vec<String>,
        items: Vec<Vec<MatValue>>,
    },
}

impl MatValue {
    /// The value as a real scalar, if it is a 1-element numeric array.
    pub(crate) fn as_scalar(&self) -> Option<f64> {
        match self {
            MatValue::Numeric { data, .. } if data.len() == 1 => Some(data[0]),
            _ => None,
        }
    }

    /// A short name of the value's kind for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            MatValue::Numeric { .. } => "numeric array",
            MatValue::Char(_) => "char array",
            MatValue::Cell { .. } => "cell array",
            MatValue::Struct { .. } => "struct array",
        }
    }
}

/// Where and why parsing failed.
#[derive(Debug)]
pub(crate) struct MatError {
    pub(crate) offset: usize,
    pub(crate) reason: String,
    /// The compressed variables, from the one at `offset` on, inflate past the limit given
    /// to [`read_variables`].
    pub(crate) too_large: bool,
}

fn fail<T>(offset: usize, reason: impl Into<String>) -> Result<T, MatError> {
    Err(MatError {
        offset,
        reason: reason.into(),
        too_large: false,
    })
}

/// How deep cells and structs may nest: far beyond any annotation file, and shallow enough
/// that a file of nested cells cannot overflow the stack of a worker thread.
const MAX_DEPTH: usize = 64;

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
const MI_UTF8: u32 = 16;
const MI_UTF16: u32 = 17;
const MI_UTF32: u32 = 18;

const MX_CELL: u32 = 1;
const MX_STRUCT: u32 = 2;
const MX_CHAR: u32 = 4;
const MX_NUMERIC: std::ops::RangeInclusive<u32> = 6..=15;
const FLAG_COMPLEX: u32 = 0x800;

/// Reads every top-level variable of a .mat file, in file order; compressed variables may
/// inflate to `max_inflated` bytes in all.
pub(crate) fn read_variables(
    bytes: &[u8],
    max_inflated: u64,
) -> Result<Vec<(String, MatValue)>, MatError> {
    if bytes.len() < 128 {
        return fail(0, "shorter than the 128-byte header");
    }
    let text = String::from_utf8_lossy(&bytes[..116]);
    if text.starts_with("MATLAB 7.3") {
        return fail(
            0,
            "MATLAB 7.3 files are HDF5, not v5; re-save the file with save(..., '-v7')",
        );
    }
    if !text.starts_with("MATLAB 5.0") {
        return fail(0, "the header does not start with \"MATLAB 5.0\"");
    }
    let big_endian = match &bytes[126..128] {
        b"IM" => false,
        b"MI" => true,
        _ => return fail(126, "bad endian indicator"),
    };
    let mut vars = Vec::new();
    let mut pos = 128;
    let mut inflate_budget = max_inflated;
    // Structs without fields cost memory per element and nothing in the file: their count is
    // bounded by the limit instead.
    let max_bytes = usize::try_from(max_inflated.max(bytes.len() as u64)).unwrap_or(usize::MAX);
    while pos < bytes.len() {
        let reader = Reader {
            bytes,
            big_endian,
            max_bytes,
        };
        let el = reader.element(pos)?;
        match el.ty {
            MI_MATRIX => vars.push(reader.matrix(el.data_start, el.data_len, 0)?),
            MI_COMPRESSED => {
                let mut inflated = Vec::new();
                flate2::read::ZlibDecoder::new(reader.data(&el))
                    .take(inflate_budget.saturating_add(1))
                    .read_to_end(&mut inflated)
                    .or_else(|e| fail(el.data_start, format!("bad compressed data: {e}")))?;
                if inflated.len() as u64 > inflate_budget {
                    return Err(MatError {
                        offset: pos,
                        reason: "compressed variables inflate past the limit".into(),
                        too_large: true,
                    });
                }
                inflate_budget -= inflated.len() as u64;
                let inner = Reader {
                    bytes: &inflated,
                    big_endian,
                    max_bytes,
                };
                let m = inner.element(0).map_err(|e| MatError {
                    reason: format!(
                        "{} (inside the compressed variable at byte {})",
                        e.reason, pos
                    ),
                    ..e
                })?;
                if m.ty != MI_MATRIX {
                    return fail(
                        pos,
                        format!("compressed element holds type {} instead of a matrix", m.ty),
                    );
                }
                vars.push(
                    inner
                        .matrix(m.data_start, m.data_len, 0)
                        .map_err(|e| MatError {
                            reason: format!(
                                "{} (inside the compressed variable at byte {})",
                                e.reason, pos
                            ),
                            ..e
                        })?,
                );
            }
            other => return fail(pos, format!("unexpected top-level element type {other}")),
        }
        // Compressed elements are not padded; matrix elements are padded to 8 bytes.
        pos = if el.ty == MI_COMPRESSED {
            el.data_start + el.data_len
        } else {
            el.next
        };
    }
    Ok(vars)
}

/// One data element's tag, resolved: its type, where its data lies, and where the next starts.
struct Element {
    ty: u32,
    data_start: usize,
    data_len: usize,
    next: usize,
}

#[derive(Clone, Copy)]
struct Reader<'a> {
    bytes: &'a [u8],
    big_endian: bool,
    /// Most bytes the element table of an array may take when its elements take no bytes of
    /// the file (structs without fields).
    max_bytes: usize,
}

impl<'a> Reader<'a> {
    fn u32_at(&self, pos: usize) -> Result<u32, MatError> {
        let Some(b) = pos.checked_add(4).and_then(|end| self.bytes.get(pos..end)) else {
            return fail(pos, "unexpected end of data");
        };
        let b = [b[0], b[1], b[2], b[3]];
        Ok(if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    /// The element whose tag starts at `pos` (normal or small-element format).
    fn element(&self, pos: usize) -> Result<Element, MatError> {
        let first = self.u32_at(pos)?;
        // `u32_at(pos)` succeeded, so `pos + 4` is in bounds and `pos + 8` cannot overflow.
        let (ty, data_start, data_len, next) = if first >> 16 != 0 {
            // Small element: size in the upper 16 bits, data in the tag's second word.
            let len = (first >> 16) as usize;
            if len > 4 {
                return fail(pos, format!("small element claims {len} bytes"));
            }
            (first & 0xffff, pos + 4, len, Some(pos + 8))
        } else {
            let len = self.u32_at(pos + 4)? as usize;
            let padded = len.div_ceil(8).checked_mul(8);
            (
                first,
                pos + 8,
                len,
                padded.and_then(|p| (pos + 8).checked_add(p)),
            )
        };
        let (Some(next), Some(_)) = (
            next,
            data_start
                .checked_add(data_len)
                .filter(|&end| end <= self.bytes.len()),
        ) else {
            return fail(
                pos,
                format!("element of {data_len} bytes runs past the end of the data"),
            );
        };
        Ok(Element {
            ty,
            data_start,
            data_len,
            next,
        })
    }

    fn data(&self, el: &Element) -> &'a [u8] {
        &self.bytes[el.data_start..el.data_start + el.data_len]
    }

    /// Reads a numeric element's data as `f64`s.
    fn numbers(&self, el: &Element) -> Result<Vec<f64>, MatError> {
        let d = self.data(el);
        let be = self.big_endian;
        macro_rules! conv {
            ($t:ty, $n:expr) => {
                d.chunks_exact($n)
                    .map(|c| {
                        let a: [u8; $n] = c.try_into().expect("chunk length");
                        (if be {
                            <$t>::from_be_bytes(a)
                        } else {
                            <$t>::from_le_bytes(a)
                        }) as f64
                    })
                    .collect()
            };
        }
        Ok(match el.ty {
            MI_INT8 => d.iter().map(|&b| b as i8 as f64).collect(),
            MI_UINT8 | MI_UTF8 => d.iter().map(|&b| b as f64).collect(),
            MI_INT16 => conv!(i16, 2),
            MI_UINT16 | MI_UTF16 => conv!(u16, 2),
            MI_INT32 => conv!(i32, 4),
            MI_UINT32 | MI_UTF32 => conv!(u32, 4),
            MI_SINGLE => conv!(f32, 4),
            MI_DOUBLE => conv!(f64, 8),
            MI_INT64 => conv!(i64, 8),
            MI_UINT64 => conv!(u64, 8),
            other => {
                return fail(
                    el.data_start,
                    format!("element type {other} is not numeric"),
                );
            }
        })
    }

    /// Parses the miMATRIX whose data is `bytes[start..start + len]` into (name, value);
    /// `depth` counts the arrays it is nested in.
    fn matrix(
        &self,
        start: usize,
        len: usize,
        depth: usize,
    ) -> Result<(String, MatValue), MatError> {
        if depth > MAX_DEPTH {
            return fail(start, format!("arrays nested more than {MAX_DEPTH} deep"));
        }
        if len == 0 {
            // MATLAB writes an empty array as a matrix element with no content.
            return Ok((
                String::new(),
                MatValue::Numeric {
                    dims: vec![0, 0],
                    data: Vec::new(),
                },
            ));
        }
        let end = start + len;
        let flags_el = self.element(start)?;
        let flags = self.u32_at(flags_el.data_start)?;
        let class = flags & 0xff;
        let dims_el = self.element(flags_el.next)?;
        let dims: Vec<usize> = self
            .numbers(&dims_el)?
            .into_iter()
            .map(|d| d as usize)
            .collect();
        let Some(count) = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) else {
            return fail(dims_el.data_start, format!("dimensions {dims:?} overflow"));
        };
        let name_el = self.element(dims_el.next)?;
        let name = String::from_utf8_lossy(self.data(&name_el)).into_owned();
        let mut pos = name_el.next;
        // Every nested element takes at least 8 bytes: a count beyond that is corrupt, and must
        // not reach an allocation.
        let room = end.saturating_sub(pos) / 8;
        let value = match class {
            MX_CELL => {
                if count > room {
                    return fail(start, format!("{count} cells cannot fit in {len} bytes"));
                }
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    let (item, next) = self.sub_matrix(pos, end, depth)?;
                    items.push(item);
                    pos = next;
                }
                MatValue::Cell { dims, items }
            }
            MX_STRUCT => {
                let width_el = self.element(pos)?;
                let width = self.u32_at(width_el.data_start)? as usize;
                let names_el = self.element(width_el.next)?;
                if width == 0 {
                    return fail(width_el.data_start, "struct field-name width is 0");
                }
                let fields: Vec<String> = self
                    .data(&names_el)
                    .chunks(width)
                    .map(|c| {
                        let n = c.iter().position(|&b| b == 0).unwrap_or(c.len());
                        String::from_utf8_lossy(&c[..n]).into_owned()
                    })
                    .collect();
                pos = names_el.next;
                if count.saturating_mul(fields.len()) > room {
                    return fail(start, format!("{count} structs cannot fit in {len} bytes"));
                }
                if fields.is_empty()
                    && count.saturating_mul(size_of::<Vec<MatValue>>()) > self.max_bytes
                {
                    return fail(
                        start,
                        format!("{count} structs without fields are too many"),
                    );
                }
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    let mut values = Vec::with_capacity(fields.len());
                    for _ in 0..fields.len() {
                        let (v, next) = self.sub_matrix(pos, end, depth)?;
                        values.push(v);
                        pos = next;
                    }
                    items.push(values);
                }
                MatValue::Struct {
                    dims,
                    fields,
                    items,
                }
            }
            MX_CHAR => {
                if dims.len() != 2 || (dims[0] > 1 && dims[1] > 1) {
                    return fail(start, format!("char array {dims:?} is not a vector"));
                }
                let el = self.element(pos)?;
                let text = match el.ty {
                    MI_UTF8 => String::from_utf8_lossy(self.data(&el)).into_owned(),
                    _ => {
                        let units: Vec<u16> =
                            self.numbers(&el)?.into_iter().map(|u| u as u16).collect();
                        String::from_utf16_lossy(&units)
                    }
                };
                MatValue::Char(text)
            }
            c if MX_NUMERIC.contains(&c) => {
                if flags & FLAG_COMPLEX != 0 {
                    return fail(start, "complex arrays are not supported");
                }
                let el = self.element(pos)?;
                let data = self.numbers(&el)?;
                if data.len() != count {
                    return fail(
                        el.data_start,
                        format!("{} values for dimensions {dims:?}", data.len()),
                    );
                }
                MatValue::Numeric { dims, data }
            }
            other => {
                return fail(
                    start,
                    format!("array class {other} (sparse or object) is not supported"),
                );
            }
        };
        Ok((name, value))
    }

    /// Parses the nested miMATRIX element at `pos`, which must end by `end`, inside an array
    /// at `depth`; returns it and the position after it.
    fn sub_matrix(
        &self,
        pos: usize,
        end: usize,
        depth: usize,
    ) -> Result<(MatValue, usize), MatError> {
        if pos >= end {
            return fail(pos, "array ends before all its elements were read");
        }
        let el = self.element(pos)?;
        if el.ty != MI_MATRIX {
            return fail(
                pos,
                format!("expected a matrix element, found type {}", el.ty),
            );
        }
        let (_, value) = self.matrix(el.data_start, el.data_len, depth + 1)?;
        Ok((value, el.next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{MatWrite, mat_file};
    use proptest::prelude::*;

    /// A limit on inflated bytes no test file reaches.
    const LIMIT: u64 = 1 << 30;

    fn annotations() -> MatWrite {
        MatWrite::Struct(
            vec!["relative_im_path", "class", "test"],
            vec![
                vec![
                    MatWrite::Char("car_ims/000001.jpg".into()),
                    MatWrite::U8(1),
                    MatWrite::U8(0),
                ],
                vec![
                    MatWrite::Char("car_ims/000002.jpg".into()),
                    MatWrite::U8(120),
                    MatWrite::U8(1),
                ],
            ],
        )
    }

    #[test]
    fn reads_struct_cell_char_and_numbers_plain_and_compressed() {
        for compressed in [false, true] {
            let bytes = mat_file(&[
                ("annotations", annotations(), compressed),
                (
                    "class_names",
                    MatWrite::Cell(vec![
                        MatWrite::Char("AM General Hummer".into()),
                        MatWrite::Char("Ümlaut".into()),
                    ]),
                    compressed,
                ),
                ("scores", MatWrite::Doubles(vec![0.5, -2.0, 1e9]), false),
            ]);
            let vars = read_variables(&bytes, LIMIT).unwrap();
            let names: Vec<_> = vars.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["annotations", "class_names", "scores"]);
            let MatValue::Struct {
                dims,
                fields,
                items,
            } = &vars[0].1
            else {
                panic!("not a struct: {:?}", vars[0].1)
            };
            assert_eq!(dims, &[1, 2]);
            assert_eq!(fields, &["relative_im_path", "class", "test"]);
            assert_eq!(items[1][0], MatValue::Char("car_ims/000002.jpg".into()));
            assert_eq!(items[1][1].as_scalar(), Some(120.0));
            let MatValue::Cell { items, .. } = &vars[1].1 else {
                panic!()
            };
            assert_eq!(items[1], MatValue::Char("Ümlaut".into()));
            assert_eq!(
                vars[2].1,
                MatValue::Numeric {
                    dims: vec![1, 3],
                    data: vec![0.5, -2.0, 1e9]
                }
            );
        }
    }

    #[test]
    fn rejects_other_formats_and_truncation_with_an_offset() {
        let mut v73 = b"MATLAB 7.3 MAT-file".to_vec();
        v73.resize(200, b' ');
        assert!(
            read_variables(&v73, LIMIT)
                .unwrap_err()
                .reason
                .contains("HDF5")
        );
        assert!(
            read_variables(b"hello", LIMIT)
                .unwrap_err()
                .reason
                .contains("header")
        );
        let bytes = mat_file(&[("annotations", annotations(), false)]);
        let err = read_variables(&bytes[..bytes.len() - 20], LIMIT).unwrap_err();
        assert!(err.offset >= 128, "{err:?}");
        // A struct claiming 2^40 elements: an error, not an allocation failure.
        let mut huge = mat_file(&[("annotations", annotations(), false)]);
        let dims_at = 128 + 8 + 16 + 8;
        assert_eq!(&huge[dims_at..dims_at + 8], &[1, 0, 0, 0, 2, 0, 0, 0]);
        huge[dims_at..dims_at + 8].copy_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        assert!(
            read_variables(&huge, LIMIT)
                .unwrap_err()
                .reason
                .contains("cannot fit")
        );
        let mut corrupt = mat_file(&[("annotations", annotations(), true)]);
        let n = corrupt.len();
        corrupt[n - 10..].fill(0xAB);
        assert!(read_variables(&corrupt, LIMIT).is_err());
    }

    #[test]
    fn compressed_variables_inflate_no_further_than_the_limit() {
        // 300,000 doubles: 2.4 MB inflated, a few KB compressed.
        let bytes = mat_file(&[("big", MatWrite::Doubles(vec![0.0; 300_000]), true)]);
        assert!(bytes.len() < 100_000);
        let err = read_variables(&bytes, 1 << 20).unwrap_err();
        assert!(err.too_large && err.offset == 128, "{err:?}");
        assert_eq!(read_variables(&bytes, 4 << 20).unwrap().len(), 1);
        // The limit holds for all compressed variables together.
        let small = MatWrite::Doubles(vec![0.0; 100_000]);
        let two = mat_file(&[
            ("a", small, true),
            ("b", MatWrite::Doubles(vec![1.0; 100_000]), true),
        ]);
        assert!(read_variables(&two, 1 << 20).unwrap_err().too_large);
    }

    #[test]
    fn deep_nesting_and_fieldless_struct_counts_are_errors_not_crashes() {
        let mut nested = MatWrite::U8(1);
        for _ in 0..100 {
            nested = MatWrite::Cell(vec![nested]);
        }
        let err = read_variables(&mat_file(&[("deep", nested, false)]), LIMIT).unwrap_err();
        assert!(err.reason.contains("nested more than 64"), "{err:?}");
        // A 1x1 struct without fields whose dimensions are patched to 2^31 x 2^31.
        let mut huge = mat_file(&[("s", MatWrite::Struct(vec![], vec![vec![]]), false)]);
        let dims_at = 128 + 8 + 16 + 8;
        assert_eq!(&huge[dims_at..dims_at + 8], &[1, 0, 0, 0, 1, 0, 0, 0]);
        huge[dims_at..dims_at + 8]
            .copy_from_slice(&[0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0x7f]);
        let err = read_variables(&huge, LIMIT).unwrap_err();
        assert!(err.reason.contains("without fields"), "{err:?}");
    }

    /// A leaf value to write, and what reading it gives.
    fn leaf() -> impl Strategy<Value = (MatWrite, MatValue)> {
        prop_oneof![
            "\\PC{0,12}".prop_map(|s| (MatWrite::Char(s.clone()), MatValue::Char(s))),
            any::<u8>().prop_map(|v| (
                MatWrite::U8(v),
                MatValue::Numeric {
                    dims: vec![1, 1],
                    data: vec![f64::from(v)]
                }
            )),
            proptest::collection::vec(-1e9f64..1e9, 0..6).prop_map(|v| (
                MatWrite::Doubles(v.clone()),
                MatValue::Numeric {
                    dims: vec![1, v.len()],
                    data: v
                }
            )),
        ]
    }

    /// A cell array of leaves and a struct array of two leaf fields.
    fn variable() -> impl Strategy<Value = (MatWrite, MatValue)> {
        prop_oneof![
            proptest::collection::vec(leaf(), 0..5).prop_map(|items| {
                let dims = vec![1, items.len()];
                let (write, read): (Vec<_>, Vec<_>) = items.into_iter().unzip();
                (MatWrite::Cell(write), MatValue::Cell { dims, items: read })
            }),
            proptest::collection::vec((leaf(), leaf()), 0..4).prop_map(|items| {
                let dims = vec![1, items.len()];
                let (write, read): (Vec<_>, Vec<_>) = items
                    .into_iter()
                    .map(|((wa, ra), (wb, rb))| (vec![wa, wb], vec![ra, rb]))
                    .unzip();
                (
                    MatWrite::Struct(vec!["a", "bee"], write),
                    MatValue::Struct {
                        dims,
                        fields: vec!["a".into(), "bee".into()],
                        items: read,
                    },
                )
            }),
        ]
    }

    proptest! {
        #[test]
        fn written_variables_read_back_equal(
            vars in proptest::collection::vec((variable(), any::<bool>()), 1..4),
        ) {
            let names = ["x", "y_1", "zed"];
            let (written, expected): (Vec<_>, Vec<_>) = vars
                .into_iter()
                .enumerate()
                .map(|(i, ((w, r), compressed))| ((names[i], w, compressed), (names[i].to_owned(), r)))
                .unzip();
            prop_assert_eq!(read_variables(&mat_file(&written), LIMIT).unwrap(), expected);
        }

        #[test]
        fn any_bytes_after_a_header_parse_or_fail_without_panicking(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            big_endian in any::<bool>(),
        ) {
            let mut bytes = mat_file(&[]);
            bytes[126..128].copy_from_slice(if big_endian { b"MI" } else { b"IM" });
            bytes.extend(body);
            let _ = read_variables(&bytes, 1 << 16);
            let _ = read_variables(&bytes[..], 0);
        }

        #[test]
        fn corrupted_files_parse_or_fail_without_panicking(
            compressed in any::<bool>(),
            flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..6),
        ) {
            let mut bytes = mat_file(&[("annotations", annotations(), compressed)]);
            for (at, value) in flips {
                let i = 128 + at.index(bytes.len() - 128);
                bytes[i] = value;
            }
            let _ = read_variables(&bytes, 1 << 16);
        }
    }
}
