//! Bounds of PML's `ThresholdReducer`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// An open window `(low, high)`; a missing bound is unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ThresholdBounds {
    low: Option<f64>,
    high: Option<f64>,
}

impl ThresholdBounds {
    /// A window; fails unless the given bounds are finite and `low < high`.
    pub fn new(low: Option<f64>, high: Option<f64>) -> Result<Self> {
        for (param, v) in [("low", low), ("high", high)] {
            if let Some(v) = v {
                crate::error::finite("ThresholdReducer", param, v)?;
            }
        }
        if let (Some(l), Some(h)) = (low, high)
            && l >= h
        {
            return Err(Error::InvalidParameter {
                owner: "ThresholdReducer",
                param: "high",
                value: h,
                reason: "must be greater than low",
            });
        }
        Ok(Self { low, high })
    }

    /// The lower bound, if any.
    pub fn low(&self) -> Option<f64> {
        self.low
    }

    /// The upper bound, if any.
    pub fn high(&self) -> Option<f64> {
        self.high
    }
}
