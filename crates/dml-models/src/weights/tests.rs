use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::Device;

use super::torch_file::{TorchEntry, TorchValues, write_state_dict};
use super::*;
use crate::test_support::{config, images, values};
use crate::{Backbone, HeadKind};

/// A network whose batch-norm running statistics are no longer the fresh (0, 1), so that
/// loading them is tested too: one training-mode forward pass on an autodiff device.
fn trained_net(backbone: Backbone, in_channels: usize, seed: u64) -> EmbeddingNet {
    let device = Device::flex().autodiff();
    let net = config(backbone, HeadKind::Direct, 4, in_channels)
        .init_seeded(seed, &device)
        .unwrap();
    let _ = net.forward(images(seed, [4, in_channels, 32, 32], &device));
    net.valid()
}

fn fresh_net(backbone: Backbone, in_channels: usize, seed: u64) -> EmbeddingNet {
    config(backbone, HeadKind::Direct, 4, in_channels)
        .init_seeded(seed, &Device::flex())
        .unwrap()
}

/// Evaluation-mode backbone features on fixed images.
fn features(net: &EmbeddingNet) -> Vec<f32> {
    let channels = net.config().in_channels;
    values(net.features(images(100, [2, channels, 32, 32], &Device::flex())))
}

/// The backbone's weights as `state_dict` entries with torchvision keys.
fn state_dict(net: &EmbeddingNet) -> Vec<TorchEntry> {
    net.backbone
        .collect(None, None, true)
        .into_iter()
        .map(|t| {
            let bytes = t.to_bytes().unwrap();
            TorchEntry {
                key: torch_key(&t.name),
                shape: t.shape.to_vec(),
                values: TorchValues::F32(
                    bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                        .collect(),
                ),
            }
        })
        .collect()
}

fn write_safetensors(path: &Path, entries: &[TorchEntry]) {
    let data: Vec<(String, Vec<usize>, safetensors::Dtype, Vec<u8>)> = entries
        .iter()
        .map(|e| {
            let dtype = match e.values {
                TorchValues::F32(_) => safetensors::Dtype::F32,
                TorchValues::I64(_) => safetensors::Dtype::I64,
            };
            let bytes = match &e.values {
                TorchValues::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                TorchValues::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            };
            (e.key.clone(), e.shape.clone(), dtype, bytes)
        })
        .collect();
    let views: Vec<_> = data
        .iter()
        .map(|(k, s, d, b)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, &None).unwrap()).unwrap();
}

/// Writes `entries` in the format `path`'s extension names.
fn write(path: &Path, entries: &[TorchEntry]) {
    match WeightFormat::from_path(path).unwrap() {
        WeightFormat::Safetensors => write_safetensors(path, entries),
        WeightFormat::Pytorch => write_state_dict(path, entries),
    }
}

fn file(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

#[test]
fn resnet_keys_are_torchvisions() {
    for (backbone, count) in [(Backbone::ResNet18, 100), (Backbone::ResNet50, 265)] {
        // torchvision's state_dict() without `fc.*` and the `num_batches_tracked` counters
        // (one per batch norm: 20 in ResNet-18, 53 in ResNet-50).
        let keys = expected_weights(&fresh_net(backbone, 3, 0));
        assert_eq!(keys.len(), count, "{backbone}");
        for key in [
            "conv1.weight",
            "bn1.weight",
            "bn1.bias",
            "bn1.running_mean",
            "bn1.running_var",
            "layer1.1.conv2.weight",
            "layer2.0.downsample.0.weight",
            "layer2.0.downsample.1.running_var",
            "layer4.1.bn2.bias",
        ] {
            assert!(keys.contains_key(key), "{backbone}: no {key}");
        }
    }
    let resnet50 = expected_weights(&fresh_net(Backbone::ResNet50, 3, 0));
    assert_eq!(resnet50["layer1.0.conv3.weight"].1, [256, 64, 1, 1]);
    assert_eq!(resnet50["layer3.5.bn3.weight"].1, [1024]);
    assert!(resnet50.contains_key("layer1.0.downsample.0.weight"));
}

#[test]
fn small_conv_net_keys() {
    let keys = expected_weights(&fresh_net(Backbone::SmallConvNet, 1, 0));
    assert_eq!(keys.len(), 4 * 5);
    assert_eq!(keys["blocks.0.conv.weight"].1, [64, 1, 3, 3]);
    assert_eq!(keys["blocks.3.bn.running_var"].1, [64]);
}

#[test]
fn saved_safetensors_load_into_a_fresh_network() {
    let dir = tempfile::tempdir().unwrap();
    for backbone in [Backbone::SmallConvNet, Backbone::ResNet18] {
        let source = trained_net(backbone, 3, 1);
        let path = file(&dir, &format!("{backbone}.safetensors"));
        source.save_backbone_weights(&path).unwrap();

        let mut target = fresh_net(backbone, 3, 2);
        assert_ne!(features(&source), features(&target));
        let report = target.load_backbone_weights(&path).unwrap();
        assert_eq!(report.loaded, expected_weights(&source).len());
        assert!(report.skipped.is_empty());
        assert_eq!(features(&source), features(&target), "{backbone}");
    }
}

#[test]
fn pytorch_state_dict_loads_skipping_the_classifier_and_counters() {
    let dir = tempfile::tempdir().unwrap();
    let source = trained_net(Backbone::ResNet18, 3, 3);
    let mut entries = state_dict(&source);
    entries.push(TorchEntry {
        key: "fc.weight".into(),
        shape: vec![10, 512],
        values: TorchValues::F32(vec![0.5; 5120]),
    });
    entries.push(TorchEntry {
        key: "fc.bias".into(),
        shape: vec![10],
        values: TorchValues::F32(vec![0.0; 10]),
    });
    entries.push(TorchEntry {
        key: "bn1.num_batches_tracked".into(),
        shape: vec![],
        values: TorchValues::I64(vec![7]),
    });
    let path = file(&dir, "resnet18.pth");
    write_state_dict(&path, &entries);

    let mut target = fresh_net(Backbone::ResNet18, 3, 4);
    let report = target.load_backbone_weights(&path).unwrap();
    assert_eq!(
        report.skipped,
        ["bn1.num_batches_tracked", "fc.bias", "fc.weight"]
    );
    assert_eq!(features(&source), features(&target));
}

#[test]
fn half_precision_safetensors_are_widened() {
    let dir = tempfile::tempdir().unwrap();
    let source = fresh_net(Backbone::SmallConvNet, 1, 5);
    let mut data = Vec::new();
    for t in state_dict(&source) {
        let TorchValues::F32(v) = t.values else {
            unreachable!()
        };
        let bytes: Vec<u8> = v.iter().flat_map(|x| half_bits(*x).to_le_bytes()).collect();
        data.push((t.key, t.shape, bytes));
    }
    let views: Vec<_> = data
        .iter()
        .map(|(k, s, b)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F16, s.clone(), b);
            (k.clone(), view.unwrap())
        })
        .collect();
    let path = file(&dir, "half.safetensors");
    std::fs::write(&path, safetensors::serialize(views, &None).unwrap()).unwrap();

    let mut target = fresh_net(Backbone::SmallConvNet, 1, 6);
    target.load_backbone_weights(&path).unwrap();
    let (a, b) = (features(&source), features(&target));
    // f16 keeps about 3 significant digits of each weight.
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-2 * (1.0 + x.abs()), "{x} vs {y}");
    }
}

/// IEEE half-precision bits of `x` (round to nearest; the test's weights are normal halves).
fn half_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exponent = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    if exponent <= 0 {
        return sign; // below half's normal range: flush to zero
    }
    let mantissa = bits & 0x7f_ffff;
    let rounded = (mantissa + 0x1000) >> 13;
    sign | (((exponent as u32) << 10) + rounded) as u16
}

/// Writes the network's own weights with one change, in both formats, and checks that loading
/// fails with `check` and leaves the network as it was.
fn assert_load_fails(
    backbone: Backbone,
    in_channels: usize,
    change: impl Fn(&mut Vec<TorchEntry>),
    check: impl Fn(&Error, &Path),
) {
    let dir = tempfile::tempdir().unwrap();
    let mut entries = state_dict(&fresh_net(backbone, in_channels, 7));
    change(&mut entries);
    for name in ["weights.safetensors", "weights.pt"] {
        let path = file(&dir, name);
        write(&path, &entries);
        let mut net = fresh_net(backbone, in_channels, 8);
        let before = features(&net);
        let err = net.load_backbone_weights(&path).unwrap_err();
        check(&err, &path);
        assert_eq!(features(&net), before, "{name}: the network changed");
    }
}

#[test]
fn missing_key_is_named() {
    assert_load_fails(
        Backbone::SmallConvNet,
        1,
        |e| e.retain(|t| t.key != "blocks.2.bn.running_mean"),
        |err, path| {
            assert!(
                matches!(err, Error::MissingKey { key, path: p } if key == "blocks.2.bn.running_mean" && p == path),
                "{err}"
            );
        },
    );
}

#[test]
fn unexpected_key_is_named() {
    assert_load_fails(
        Backbone::SmallConvNet,
        1,
        |e| {
            e.push(TorchEntry {
                key: "blocks.4.conv.weight".into(),
                shape: vec![2],
                values: TorchValues::F32(vec![1.0, 2.0]),
            })
        },
        |err, _| {
            assert!(
                matches!(err, Error::UnexpectedKey { key, .. } if key == "blocks.4.conv.weight"),
                "{err}"
            );
            assert!(err.to_string().contains("blocks.4.conv.weight"));
        },
    );
}

#[test]
fn classifier_keys_are_unexpected_for_the_small_conv_net() {
    assert_load_fails(
        Backbone::SmallConvNet,
        1,
        |e| {
            e.push(TorchEntry {
                key: "fc.bias".into(),
                shape: vec![1],
                values: TorchValues::F32(vec![0.0]),
            })
        },
        |err, _| {
            assert!(
                matches!(err, Error::UnexpectedKey { key, .. } if key == "fc.bias"),
                "{err}"
            )
        },
    );
}

#[test]
fn rgb_weights_for_a_grey_network_are_a_shape_mismatch() {
    let rgb: HashMap<String, (Vec<usize>, Vec<f32>)> =
        state_dict(&fresh_net(Backbone::ResNet18, 3, 9))
            .into_iter()
            .filter_map(|t| match t.values {
                TorchValues::F32(v) => Some((t.key, (t.shape, v))),
                TorchValues::I64(_) => None,
            })
            .collect();
    assert_load_fails(
        Backbone::ResNet18,
        1,
        |e| {
            let conv1 = e.iter_mut().find(|t| t.key == "conv1.weight").unwrap();
            let (shape, v) = rgb["conv1.weight"].clone();
            conv1.shape = shape;
            conv1.values = TorchValues::F32(v);
        },
        |err, _| {
            assert!(
                matches!(err, Error::ShapeMismatch { key, expected, found, .. }
                    if key == "conv1.weight" && expected == &[64, 1, 7, 7] && found == &[64, 3, 7, 7]),
                "{err}"
            );
        },
    );
}

#[test]
fn integer_weights_are_refused() {
    assert_load_fails(
        Backbone::SmallConvNet,
        1,
        |e| {
            let beta = e.iter_mut().find(|t| t.key == "blocks.0.bn.bias").unwrap();
            beta.values = TorchValues::I64(vec![1; 64]);
        },
        |err, _| {
            assert!(
                matches!(err, Error::NotFloat { key, .. } if key == "blocks.0.bn.bias"),
                "{err}"
            )
        },
    );
}

#[test]
fn unreadable_files_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = fresh_net(Backbone::SmallConvNet, 1, 10);

    let missing = file(&dir, "absent.safetensors");
    let err = net.load_backbone_weights(&missing).unwrap_err();
    assert!(
        matches!(&err, Error::ReadWeights { path, .. } if path == &missing),
        "{err}"
    );

    for name in ["garbage.safetensors", "garbage.pt"] {
        let garbage = file(&dir, name);
        std::fs::write(&garbage, b"not a weight file at all").unwrap();
        let err = net.load_backbone_weights(&garbage).unwrap_err();
        assert!(
            matches!(&err, Error::ReadWeights { path, .. } if path == &garbage),
            "{err}"
        );
        assert!(err.to_string().contains(name), "{err}");
    }

    let unknown = file(&dir, "weights.bin");
    std::fs::write(&unknown, b"").unwrap();
    let err = net.load_backbone_weights(&unknown).unwrap_err();
    assert!(
        matches!(&err, Error::UnknownWeightFormat { path } if path == &unknown),
        "{err}"
    );
    let err = net
        .save_backbone_weights(&file(&dir, "out.pt"))
        .unwrap_err();
    assert!(matches!(err, Error::UnknownWeightFormat { .. }), "{err}");
}

#[test]
fn saving_replaces_the_file_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir, "w.safetensors");
    fresh_net(Backbone::SmallConvNet, 1, 11)
        .save_backbone_weights(&path)
        .unwrap();
    let second = fresh_net(Backbone::SmallConvNet, 1, 12);
    second.save_backbone_weights(&path).unwrap();
    let mut target = fresh_net(Backbone::SmallConvNet, 1, 13);
    target.load_backbone_weights(&path).unwrap();
    assert_eq!(features(&target), features(&second));
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["w.safetensors"], "temporary files left behind");
}

#[test]
fn saving_into_a_missing_folder_fails_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/w.safetensors");
    let err = fresh_net(Backbone::SmallConvNet, 1, 14)
        .save_backbone_weights(&path)
        .unwrap_err();
    assert!(
        matches!(&err, Error::WriteWeights { path: p, .. } if p == &path),
        "{err}"
    );
}

/// The closed-form weights of fixtures/make_torchvision_features.py for the key with index
/// `t` (in sorted order), as `state_dict` entries.
fn formula_state_dict(net: &EmbeddingNet) -> Vec<TorchEntry> {
    expected_weights(net)
        .into_iter()
        .enumerate()
        .map(|(t, (key, (_, shape)))| {
            let n: usize = shape.iter().product();
            let s = |j: usize| (0.37 * j as f64 + 1.3 * t as f64).sin();
            let value = |j: usize| -> f64 {
                if shape.len() == 4 {
                    s(j) * (2.0 / (shape[1] * shape[2] * shape[3]) as f64).sqrt()
                } else if key.ends_with("running_var") {
                    1.0 + 0.5 * s(j) * s(j)
                } else if key.ends_with("running_mean") || key.ends_with("bias") {
                    0.1 * s(j)
                } else {
                    1.0 + 0.1 * s(j)
                }
            };
            TorchEntry {
                values: TorchValues::F32((0..n).map(|j| value(j) as f32).collect()),
                key,
                shape,
            }
        })
        .collect()
}

#[derive(serde::Deserialize)]
struct TorchvisionFixture {
    cases: Vec<TorchvisionCase>,
}

#[derive(serde::Deserialize)]
struct TorchvisionCase {
    backbone: String,
    input: [usize; 4],
    features: Vec<f32>,
}

/// torchvision's resnet18 and resnet50 trunks, given the same weights (through a `.pt` file)
/// and input, give the same pooled features: architecture, padding, strides, shortcuts and
/// evaluation-mode batch norm all match. Fixture: fixtures/resnet_torchvision_features.json.
#[test]
fn resnet_features_match_torchvision() {
    let fixture: TorchvisionFixture = serde_json::from_str(include_str!(
        "../../fixtures/resnet_torchvision_features.json"
    ))
    .unwrap();
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    for case in fixture.cases {
        let backbone: Backbone = case.backbone.parse().unwrap();
        let mut net = fresh_net(backbone, 3, 0);
        let path = file(&dir, &format!("{backbone}.pt"));
        write_state_dict(&path, &formula_state_dict(&net));
        net.load_backbone_weights(&path).unwrap();

        let n: usize = case.input.iter().product();
        let input: Vec<f32> = (0..n).map(|j| (0.013 * j as f64).sin() as f32).collect();
        let images = burn::tensor::Tensor::<4>::from_data(
            burn::tensor::TensorData::new(input, case.input),
            &device,
        );
        let got = values(net.features(images));
        assert_eq!(got.len(), case.features.len(), "{backbone}");
        let scale = case.features.iter().fold(0f32, |m, x| m.max(x.abs()));
        for (i, (a, b)) in got.iter().zip(&case.features).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * scale,
                "{backbone} feature {i}: dml {a}, torchvision {b} (scale {scale})"
            );
        }
    }
}
