//! Backbone weights in and out of files with torchvision's key names.
//!
//! burn names a weight by its path in the module tree (`layer1.0.bn1.gamma`), PyTorch by its
//! path in the `state_dict` (`layer1.0.bn1.weight`). The two differ only where burn's
//! modules name things differently ([`torch_key`]), so every backbone weight has one
//! torchvision key, and a file is checked key by key against the backbone before anything
//! is loaded.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{FloatCastAdapter, ModuleSnapshot, ModuleStore, PytorchStore, SafetensorsStore};
use burn::tensor::DType;

use crate::config::Backbone;
use crate::error::Error;
use crate::net::EmbeddingNet;

/// A weight file format, chosen by the file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// `.safetensors` (Hugging Face's format; what `timm` and `save_backbone_weights` write).
    Safetensors,
    /// `.pt` or `.pth`: a PyTorch `torch.save(model.state_dict())` file.
    Pytorch,
}

impl WeightFormat {
    /// The format a file's extension names.
    pub fn from_path(path: &Path) -> Result<Self, Error> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => Ok(Self::Safetensors),
            Some("pt" | "pth") => Ok(Self::Pytorch),
            _ => Err(Error::UnknownWeightFormat {
                path: path.to_path_buf(),
            }),
        }
    }
}

/// What [`EmbeddingNet::load_backbone_weights`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedWeights {
    /// Number of backbone tensors set from the file (all of them).
    pub loaded: usize,
    /// Keys in the file that were deliberately left out: the classifier (`fc.*`) and
    /// PyTorch's batch-norm step counters (`*.num_batches_tracked`).
    pub skipped: Vec<String>,
}

/// The torchvision key of a backbone weight, given its burn path (enum variants skipped).
fn torch_key(burn_path: &str) -> String {
    let key = burn_path
        .replace("downsample.conv.", "downsample.0.")
        .replace("downsample.bn.", "downsample.1.");
    // Only batch norms have `gamma` and `beta` in these backbones.
    if let Some(prefix) = key.strip_suffix(".gamma") {
        format!("{prefix}.weight")
    } else if let Some(prefix) = key.strip_suffix(".beta") {
        format!("{prefix}.bias")
    } else {
        key
    }
}

/// Keys a file may hold that have no place in the backbone and are skipped on purpose.
fn is_skipped_key(backbone: Backbone, key: &str) -> bool {
    let classifier = matches!(backbone, Backbone::ResNet18 | Backbone::ResNet50)
        && (key == "fc.weight" || key == "fc.bias");
    classifier || key.ends_with(".num_batches_tracked")
}

/// The backbone's weights: torchvision key to (burn path, shape).
fn expected_weights(net: &EmbeddingNet) -> BTreeMap<String, (String, Vec<usize>)> {
    net.backbone
        .collect(None, None, true)
        .into_iter()
        .map(|t| (torch_key(&t.name), (t.name.clone(), t.shape.to_vec())))
        .collect()
}

fn read_error(path: &Path, source: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::ReadWeights {
        path: path.to_path_buf(),
        source: Box::new(source),
    }
}

fn write_error(path: &Path, source: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::WriteWeights {
        path: path.to_path_buf(),
        source: Box::new(source),
    }
}

/// Every tensor in a weight file, by key.
fn read_tensors(path: &Path) -> Result<BTreeMap<String, PackTensor>, Error> {
    // burn-store reports a missing file as a parse error; say what it is.
    fs::metadata(path).map_err(|e| read_error(path, e))?;
    match WeightFormat::from_path(path)? {
        WeightFormat::Safetensors => SafetensorsStore::from_file(path)
            .get_all_tensors()
            .cloned()
            .map_err(|e| read_error(path, e)),
        WeightFormat::Pytorch => PytorchStore::from_file(path)
            // Keep the file's keys as they are: torchvision's indices are already contiguous.
            .map_indices_contiguous(false)
            .get_all_tensors()
            .cloned()
            .map_err(|e| read_error(path, e)),
    }
}

impl EmbeddingNet {
    /// Loads the backbone's weights (convolutions and batch norms, running statistics
    /// included) from a `.safetensors`, `.pt` or `.pth` file with torchvision's key names,
    /// e.g. torchvision's ImageNet `resnet50` weights for [`Backbone::ResNet50`]. The head is
    /// left as it is.
    ///
    /// The file must hold exactly the backbone's weights, plus, optionally, the classifier
    /// (`fc.*`) and `*.num_batches_tracked` counters, which are skipped. Anything else is an
    /// error naming the key: [`Error::MissingKey`], [`Error::UnexpectedKey`],
    /// [`Error::ShapeMismatch`] (e.g. 3-channel weights for a 1-channel network) or
    /// [`Error::NotFloat`]. Half and double precision weights are converted to f32. On any
    /// error the network is unchanged.
    ///
    /// PyTorch files must be a plain `state_dict` (not nested under a key such as
    /// `"state_dict"`, and without DataParallel's `module.` prefix).
    pub fn load_backbone_weights(&mut self, path: &Path) -> Result<LoadedWeights, Error> {
        let backbone = self.config().backbone;
        let mut expected = expected_weights(self);
        let mut tensors = Vec::with_capacity(expected.len());
        let mut skipped = Vec::new();
        for (key, mut tensor) in read_tensors(path)? {
            let Some((burn_path, shape)) = expected.remove(&key) else {
                if is_skipped_key(backbone, &key) {
                    skipped.push(key);
                    continue;
                }
                return Err(Error::UnexpectedKey {
                    path: path.to_path_buf(),
                    key,
                    backbone: backbone.name().to_string(),
                });
            };
            if tensor.shape.as_slice() != shape.as_slice() {
                return Err(Error::ShapeMismatch {
                    path: path.to_path_buf(),
                    key,
                    expected: shape,
                    found: tensor.shape.to_vec(),
                });
            }
            if !tensor.dtype.is_float() {
                return Err(Error::NotFloat {
                    path: path.to_path_buf(),
                    key,
                    dtype: format!("{:?}", tensor.dtype),
                });
            }
            tensor.name = burn_path;
            tensors.push(tensor);
        }
        if let Some(key) = expected.into_keys().next() {
            return Err(Error::MissingKey {
                path: path.to_path_buf(),
                key,
            });
        }

        let loaded = tensors.len();
        let mut backbone_net = self.backbone.clone();
        let result = backbone_net.apply(
            tensors,
            None,
            Some(Box::new(FloatCastAdapter::to(DType::F32))),
            true,
        );
        if let Some(error) = result.errors.into_iter().next() {
            return Err(read_error(path, error));
        }
        self.backbone = backbone_net;
        skipped.sort();
        Ok(LoadedWeights { loaded, skipped })
    }

    /// Writes the backbone's weights to a `.safetensors` file with torchvision's key names
    /// (what [`load_backbone_weights`](Self::load_backbone_weights) and `timm` read), as f32.
    ///
    /// The file is written to a temporary file beside `path` and renamed over it, so `path`
    /// holds either the old file or the complete new one.
    pub fn save_backbone_weights(&self, path: &Path) -> Result<(), Error> {
        if WeightFormat::from_path(path)? != WeightFormat::Safetensors {
            return Err(Error::UnknownWeightFormat {
                path: path.to_path_buf(),
            });
        }
        let mut weights = Vec::new();
        for tensor in self.backbone.collect(None, None, true) {
            let key = torch_key(&tensor.name);
            let shape = tensor.shape.to_vec();
            let bytes = tensor.to_bytes().map_err(|e| write_error(path, e))?;
            weights.push((key, shape, bytes));
        }
        let views = weights
            .iter()
            .map(|(key, shape, bytes)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .map(|view| (key.clone(), view))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| write_error(path, e))?;
        // The `format` entry tells Hugging Face loaders the tensors follow PyTorch's layout.
        let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
        let bytes = safetensors::serialize(views, &metadata).map_err(|e| write_error(path, e))?;
        write_atomically(path, &bytes).map_err(|e| write_error(path, e))
    }
}

/// Writes `bytes` to a temporary file in `path`'s folder, syncs it and renames it to `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp: PathBuf = path.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        // Best effort: the temporary file is garbage either way.
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod torch_file;

#[cfg(test)]
mod tests;
