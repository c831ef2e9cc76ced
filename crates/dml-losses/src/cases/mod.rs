//! PML-compatible case files: read `pml-cases.json`-style input, write `pml-expected.json`-style
//! output (docs/pml-semantics.md describes both formats).
//!
//! A case names a PML loss class with its constructor arguments, optionally a miner, fixed
//! tuples (`indices_tuple`) or proxies, and optionally its own batch. Unknown loss, miner,
//! distance, reducer or argument names are errors that list what is supported; a case that
//! fails is reported with an `error` field and the others still run.

mod params;
mod registry;
mod run;

pub use registry::{
    BuildContext, SUPPORTED_DISTANCES, SUPPORTED_LOSSES, SUPPORTED_MINERS, SUPPORTED_REDUCERS,
    build_distance, build_metric_loss, build_miner, build_reducer, build_regularizer,
};
pub use run::run_case_file;

use serde::{Deserialize, Serialize};

/// The floating-point type cases are computed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dtype {
    /// 32-bit floats (what training uses).
    F32,
    /// 64-bit floats (what the PML reference used).
    F64,
}

impl Dtype {
    /// The name case files use (`float32`, `float64`).
    pub fn pml_name(&self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
        }
    }
}
