//! dml-models' [`EmbeddingNet`] as the trainer's [`EmbeddingModel`].

use burn::tensor::{Device, Tensor};
use dml_models::EmbeddingNet;

use crate::config::RunConfig;
use crate::error::Error;
use crate::seed::{SeedStream, derive_seed};
use crate::task::EmbeddingModel;

impl EmbeddingModel for EmbeddingNet {
    fn embed(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }
}

/// The run's network, initialised from the run seed. With `pretrained`, the backbone
/// weights of `model.pretrained` are loaded over the initial ones (a resumed run skips this:
/// its weights come from the checkpoint).
pub fn build_model(
    config: &RunConfig,
    device: &Device,
    pretrained: bool,
) -> Result<EmbeddingNet, Error> {
    let net_config = config.model.net_config(config.data.channels());
    let [c, h, w] = config.data.pipeline.init()?.output_shape();
    net_config.check_image_shape(c, h, w)?;
    let mut net =
        net_config.init_seeded(derive_seed(config.seed, SeedStream::ModelInit, 0), device)?;
    if let (true, Some(path)) = (pretrained, &config.model.pretrained) {
        net.load_backbone_weights(path)?;
    }
    Ok(net)
}
