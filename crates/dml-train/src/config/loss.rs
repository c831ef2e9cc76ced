//! The `[loss]` section: a loss and an optional miner, each named as in
//! pytorch-metric-learning with its constructor parameters.
//!
//! The parameter tables are checked by the losses crate when the loss is built, which rejects
//! unknown names and lists the supported ones (a typo never silently means a default).

use serde::{Deserialize, Serialize};

use super::check;
use crate::error::ConfigError;

/// A loss or miner: its class name and constructor parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedParams {
    /// The class name, as in pytorch-metric-learning (`TripletMarginMiner`).
    pub name: String,
    /// Constructor parameters (`{ margin = 0.2, type_of_triplets = "semihard" }`).
    #[serde(default)]
    pub params: toml::Table,
}

/// The training loss.
///
/// ```toml
/// [loss]
/// name = "TripletMarginLoss"
/// params = { margin = 0.2 }
/// miner = { name = "TripletMarginMiner", params = { margin = 0.2, type_of_triplets = "semihard" } }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    /// The loss class name.
    pub name: String,
    /// Its constructor parameters.
    #[serde(default)]
    pub params: toml::Table,
    /// The miner that picks the tuples the loss sees. Default: none (all tuples).
    #[serde(default)]
    pub miner: Option<NamedParams>,
}

impl Default for LossConfig {
    /// Triplet loss with semi-hard mining, margin 0.2: the survey's FaceNet setting.
    fn default() -> Self {
        let margin = || toml::Table::from_iter([("margin".to_owned(), toml::Value::Float(0.2))]);
        let mut miner_params = margin();
        miner_params.insert(
            "type_of_triplets".to_owned(),
            toml::Value::String("semihard".to_owned()),
        );
        LossConfig {
            name: "TripletMarginLoss".to_owned(),
            params: margin(),
            miner: Some(NamedParams {
                name: "TripletMarginMiner".to_owned(),
                params: miner_params,
            }),
        }
    }
}

impl LossConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        check(!self.name.is_empty(), "loss.name", "must name a loss")?;
        if let Some(miner) = &self.miner {
            check(
                !miner.name.is_empty(),
                "loss.miner.name",
                "must name a miner",
            )?;
        }
        // Unknown loss, miner or parameter names fail here, before any data is read.
        crate::components::loss::build_metric_loss_of(self, None)
            .map(drop)
            .map_err(|e| ConfigError::Invalid {
                field: "loss".to_owned(),
                reason: dml_core::error::chain(&e),
            })
    }
}
