//! [`Embeddings`]: a validated row-major `f32` matrix, the input of every metric.

use crate::error::{Error, Result};

/// A row-major `rows x dim` matrix of finite `f32` values.
///
/// Construction checks every value once, so the k-NN engine and k-means never meet NaN or an
/// infinity, and errors name the row (PML would silently rank NaN rows).
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    data: Vec<f32>,
    dim: usize,
}

/// Largest squared norm accepted: distances `|x|^2 + |y|^2 - 2 x.y` stay below `f32::MAX`.
const MAX_SQUARED_NORM: f64 = f32::MAX as f64 / 8.0;

impl Embeddings {
    /// Wraps `data` (row-major, `dim` columns) after checking that every value is finite.
    ///
    /// An empty buffer is a valid 0-row matrix; the metrics reject it with [`Error::Empty`].
    pub fn new(data: Vec<f32>, dim: usize) -> Result<Self> {
        if dim == 0 {
            return Err(Error::ZeroDimension);
        }
        if !data.len().is_multiple_of(dim) {
            return Err(Error::RaggedData {
                len: data.len(),
                dim,
            });
        }
        for (row, values) in data.chunks_exact(dim).enumerate() {
            let mut squared_norm = 0.0f64;
            for (column, &v) in values.iter().enumerate() {
                if !v.is_finite() {
                    return Err(Error::NonFinite {
                        row,
                        column,
                        value: f64::from(v),
                    });
                }
                squared_norm += f64::from(v) * f64::from(v);
            }
            if squared_norm > MAX_SQUARED_NORM {
                return Err(Error::NormOverflow { row, squared_norm });
            }
        }
        Ok(Self { data, dim })
    }

    /// Converts `f64` values (row-major, `dim` columns) to `f32`, checking them as [`Self::new`].
    ///
    /// A finite `f64` too large for `f32` is reported as non-finite at its row.
    pub fn from_f64(data: &[f64], dim: usize) -> Result<Self> {
        if dim == 0 {
            return Err(Error::ZeroDimension);
        }
        if let Some(pos) = data.iter().position(|v| !(*v as f32).is_finite()) {
            return Err(Error::NonFinite {
                row: pos / dim,
                column: pos % dim,
                value: data[pos],
            });
        }
        Self::new(data.iter().map(|&v| v as f32).collect(), dim)
    }

    /// Builds a matrix from equal-length rows.
    pub fn from_rows<R: AsRef<[f32]>>(rows: &[R]) -> Result<Self> {
        let dim = rows.first().map_or(0, |r| r.as_ref().len());
        let mut data = Vec::with_capacity(rows.len() * dim);
        for row in rows {
            let row = row.as_ref();
            if row.len() != dim {
                return Err(Error::LengthMismatch {
                    what: "values in every row",
                    expected: dim,
                    found: row.len(),
                });
            }
            data.extend_from_slice(row);
        }
        Self::new(data, dim)
    }

    /// Number of rows (items).
    pub fn rows(&self) -> usize {
        self.data.len() / self.dim
    }

    /// Number of columns (embedding dimension).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The row-major values.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// Row `i`.
    ///
    /// # Panics
    /// If `i >= self.rows()`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// A copy with every row scaled to unit L2 norm (`x / max(|x|, 1e-12)`, as PML and torch).
    pub fn l2_normalized(&self) -> Self {
        let mut data = self.data.clone();
        for row in data.chunks_exact_mut(self.dim) {
            let norm = row
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>()
                .sqrt()
                .max(1e-12);
            for v in row {
                *v = (f64::from(*v) / norm) as f32;
            }
        }
        Self {
            data,
            dim: self.dim,
        }
    }

    /// The row-major values of rows `start..end`.
    pub(crate) fn slice_rows(&self, start: usize, end: usize) -> &[f32] {
        &self.data[start * self.dim..end * self.dim]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_rows() {
        let e = Embeddings::new(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3).unwrap();
        assert_eq!((e.rows(), e.dim()), (2, 3));
        assert_eq!(e.row(1), &[4.0, 5.0, 6.0]);
    }

    #[test]
    fn non_finite_value_names_its_row_and_column() {
        let err = Embeddings::new(vec![1.0, 2.0, 3.0, f32::NAN], 2).unwrap_err();
        assert!(
            matches!(
                err,
                Error::NonFinite {
                    row: 1,
                    column: 1,
                    ..
                }
            ),
            "{err}"
        );
        let err = Embeddings::from_f64(&[0.0, 1e300], 1).unwrap_err();
        assert!(
            matches!(
                err,
                Error::NonFinite {
                    row: 1,
                    column: 0,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn ragged_and_zero_width_are_rejected() {
        assert!(matches!(
            Embeddings::new(vec![1.0; 5], 2),
            Err(Error::RaggedData { len: 5, dim: 2 })
        ));
        assert!(matches!(
            Embeddings::new(vec![], 0),
            Err(Error::ZeroDimension)
        ));
        assert!(matches!(
            Embeddings::from_rows(&[vec![1.0f32, 2.0], vec![3.0]]),
            Err(Error::LengthMismatch { .. })
        ));
    }

    #[test]
    fn huge_rows_are_rejected_before_they_overflow_distances() {
        let err = Embeddings::new(vec![1e19, 1e19], 2).unwrap_err();
        assert!(matches!(err, Error::NormOverflow { row: 0, .. }), "{err}");
    }

    #[test]
    fn normalisation_gives_unit_rows_and_keeps_zero_rows() {
        let e = Embeddings::new(vec![3.0, 4.0, 0.0, 0.0], 2).unwrap();
        let n = e.l2_normalized();
        assert!((n.row(0)[0] - 0.6).abs() < 1e-7 && (n.row(0)[1] - 0.8).abs() < 1e-7);
        assert_eq!(n.row(1), &[0.0, 0.0]);
    }
}
