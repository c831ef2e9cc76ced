//! A borrowed row-major matrix: the shape every kernel reads its embeddings in.

use crate::error::{Error, Result};
use dml_core::Real;

/// A row-major `rows x cols` matrix borrowed from a slice.
#[derive(Debug, Clone, Copy)]
pub struct MatrixRef<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
}

impl<'a, T: Real> MatrixRef<'a, T> {
    /// Wraps `data` as a `rows x cols` matrix; the length must be `rows * cols`.
    pub fn new(data: &'a [T], rows: usize, cols: usize) -> Result<Self> {
        let expected = rows.checked_mul(cols).ok_or(Error::LengthMismatch {
            what: "matrix elements (rows x cols overflows)",
            expected: usize::MAX,
            found: data.len(),
        })?;
        if data.len() != expected {
            return Err(Error::LengthMismatch {
                what: "matrix elements (rows x cols)",
                expected,
                found: data.len(),
            });
        }
        Ok(Self { data, rows, cols })
    }

    /// The elements, row after row.
    pub fn data(&self) -> &'a [T] {
        self.data
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &'a [T] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Returns [`Error::NonFinite`] naming the first NaN or infinite entry.
    pub fn check_finite(&self, what: &'static str) -> Result<()> {
        match self.data.iter().position(|v| !v.is_finite()) {
            None => Ok(()),
            Some(k) => Err(Error::NonFinite {
                what,
                row: k / self.cols.max(1),
                col: k % self.cols.max(1),
                value: self.data[k].f64(),
            }),
        }
    }
}
