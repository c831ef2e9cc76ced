//! The burn adapter: backward through `LossModule` gives exactly the kernel's gradient.

use burn::tensor::{Device, Tensor, TensorData};
use dml_losses::{
    Batch, ContrastiveLoss, Distance, LossModule, MatrixRef, MetricLoss, Reducer, TripletMarginLoss,
};

fn batch() -> (Vec<f32>, Vec<i64>) {
    let x: Vec<f32> = (0..48)
        .map(|k| (((k * 7919) % 31) as f32) / 10.0 - 1.5)
        .collect();
    (x, vec![0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 3, 0])
}

fn check(loss: MetricLoss) {
    let (x, labels) = batch();
    let kernel = loss
        .compute(Batch::new(MatrixRef::new(&x, 12, 4).unwrap(), &labels))
        .unwrap();
    let device = Device::flex().autodiff();
    let emb = Tensor::<2>::from_data(TensorData::new(x.clone(), [12, 4]), &device).require_grad();
    let module = LossModule::new(loss, 4, 0, &device);
    let out = module.forward(emb.clone(), &labels).unwrap();
    let value: f32 = out.loss.clone().into_scalar();
    assert!(
        (value - kernel.loss).abs() <= 1e-6 * (1.0 + kernel.loss.abs()),
        "{value} vs {}",
        kernel.loss
    );
    let grads = out.loss.backward();
    let g: Vec<f32> = emb.grad(&grads).unwrap().to_data().try_to_vec().unwrap();
    for (a, b) in g.iter().zip(&kernel.grad) {
        assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
    }
}

#[test]
fn contrastive_backward_is_the_kernel_gradient() {
    check(
        MetricLoss::new(
            ContrastiveLoss::new(Distance::PML_LP_DEFAULT, 0.0, 1.0).unwrap(),
            Reducer::AvgNonZero,
        )
        .unwrap(),
    );
}

#[test]
fn triplet_backward_is_the_kernel_gradient() {
    check(
        MetricLoss::new(
            TripletMarginLoss::new(Distance::Cosine, 0.2).unwrap(),
            Reducer::AvgNonZero,
        )
        .unwrap(),
    );
}

#[test]
fn f64_embeddings_run_in_f64() {
    let device = Device::flex().autodiff();
    let (x, labels) = batch();
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let emb = Tensor::<2>::from_data(
        TensorData::new(x64.clone(), [12, 4]),
        (&device, burn::tensor::DType::F64),
    )
    .require_grad();
    let loss = MetricLoss::new(
        TripletMarginLoss::new(Distance::PML_LP_DEFAULT, 0.1).unwrap(),
        Reducer::Mean,
    )
    .unwrap();
    let kernel = loss
        .compute(Batch::new(MatrixRef::new(&x64, 12, 4).unwrap(), &labels))
        .unwrap();
    let module = LossModule::new(loss, 4, 0, &device);
    let out = module.forward(emb.clone(), &labels).unwrap();
    let value: f64 = out.loss.clone().into_scalar();
    assert!((value - kernel.loss).abs() < 1e-12);
    let g: Vec<f64> = emb
        .grad(&out.loss.backward())
        .unwrap()
        .to_data()
        .try_to_vec()
        .unwrap();
    assert!(
        g.iter()
            .zip(&kernel.grad)
            .all(|(a, b)| (a - b).abs() < 1e-12)
    );
}

#[test]
fn bad_input_is_a_typed_error() {
    let device = Device::flex();
    let loss = MetricLoss::new(
        TripletMarginLoss::new(Distance::PML_LP_DEFAULT, 0.1).unwrap(),
        Reducer::Mean,
    )
    .unwrap();
    let module = LossModule::new(loss, 4, 0, &device);
    let emb = Tensor::<2>::from_data(TensorData::new(vec![0.0f32; 8], [2, 4]), &device);
    assert!(matches!(
        module.forward(emb.clone(), &[0]),
        Err(dml_losses::Error::LengthMismatch { .. })
    ));
    let nan = Tensor::<2>::from_data(TensorData::new(vec![f32::NAN; 8], [2, 4]), &device);
    assert!(matches!(
        module.forward(nan, &[0, 1]),
        Err(dml_losses::Error::NonFinite { row: 0, col: 0, .. })
    ));
    let empty = Tensor::<2>::from_data(TensorData::new(Vec::<f32>::new(), [0, 4]), &device);
    assert!(matches!(
        module.forward(empty, &[]),
        Err(dml_losses::Error::EmptyBatch)
    ));
}
