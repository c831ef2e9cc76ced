//! Embedding a whole split with a trained model (for evaluation during training and for
//! `dml embed`).

use burn::tensor::{Device, Tensor, TensorData};

use crate::error::BoxError;
use crate::task::{Batch, BatchSource, EmbeddingModel, Embeddings};

/// Embeds every batch of `source` (epoch 0, from its first batch) with `model` in inference
/// mode (no autodiff, batch-norm running statistics). Inputs are created on `device`, which
/// must be the model's device.
pub fn embed_source<M: EmbeddingModel>(
    model: &M,
    source: &dyn BatchSource,
    device: &Device,
) -> Result<Embeddings, BoxError> {
    let model = model.valid();
    let mut out = Embeddings {
        values: Vec::new(),
        dim: 0,
        labels: Vec::new(),
        indices: Vec::new(),
    };
    for batch in source.batches(0, 0)? {
        let batch = batch?;
        if let Some(reason) = batch.inconsistency() {
            return Err(format!("malformed batch: {reason}").into());
        }
        let Batch {
            images,
            shape,
            labels,
            indices,
        } = batch;
        let input = Tensor::<4>::from_data(TensorData::new(images, shape), device);
        let embeddings = model.embed(input);
        let [rows, dim] = embeddings.dims();
        if rows != labels.len() {
            return Err(format!(
                "the model returned {rows} embeddings for {} images",
                labels.len()
            )
            .into());
        }
        let values = embeddings
            .try_into_vec_as::<f32>()
            .map_err(|e| format!("reading embeddings from the device: {e:?}"))?;
        if out.dim != 0 && out.dim != dim {
            return Err(format!("embedding size changed from {} to {dim}", out.dim).into());
        }
        out.dim = dim;
        out.values.extend(values);
        out.labels.extend(labels);
        out.indices.extend(indices);
    }
    Ok(out)
}
