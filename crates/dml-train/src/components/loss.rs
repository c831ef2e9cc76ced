//! dml-losses' [`LossModule`] as the trainer's [`MetricLoss`], built from the `[loss]`
//! section's PML class names and parameters.

use burn::tensor::{Device, Tensor};
use dml_losses::LossModule;
use dml_losses::cases::{BuildContext, build_metric_loss};

use crate::config::LossConfig;
use crate::error::BoxError;
use crate::task::MetricLoss;

impl MetricLoss for LossModule {
    fn loss(
        &self,
        embeddings: Tensor<2>,
        labels: &[i64],
        seed: u64,
    ) -> Result<Tensor<1>, BoxError> {
        Ok(self.forward_step(embeddings, labels, seed)?.loss)
    }
}

/// The loss kernel, reducer and miner the section names, without any tensor (what
/// configuration validation checks); `proxies` is `(classes, embedding_dim)` for losses with
/// proxies.
pub fn build_metric_loss_of(
    config: &LossConfig,
    proxies: Option<(usize, usize)>,
) -> Result<dml_losses::MetricLoss, dml_losses::Error> {
    let json = |table: &toml::Table| serde_json::to_value(table).expect("a TOML table is JSON");
    let params = json(&config.params);
    let miner_params = config.miner.as_ref().map(|miner| json(&miner.params));
    let miner = config
        .miner
        .as_ref()
        .zip(miner_params.as_ref())
        .map(|(miner, params)| (miner.name.as_str(), Some(params)));
    build_metric_loss(&config.name, Some(&params), miner, BuildContext { proxies })
}

/// The loss as a burn module; learnable parameters (proxies) are initialised from `seed`.
pub fn build_loss(
    config: &LossConfig,
    classes: usize,
    embedding_dim: usize,
    seed: u64,
    device: &Device,
) -> Result<LossModule, dml_losses::Error> {
    let loss = build_metric_loss_of(config, Some((classes, embedding_dim)))?;
    Ok(LossModule::new(loss, embedding_dim, seed, device))
}
