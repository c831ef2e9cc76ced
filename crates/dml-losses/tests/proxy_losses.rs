//! Losses with learnable parameters (ProxyAnchor, ProxyNCA, ArcFace, MarginLoss's beta):
//! finite differences for the embeddings and the parameters, degenerate batches, and the burn
//! adapter owning the parameters so an optimizer trains them.

use burn::module::Module;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Tensor, TensorData};
use dml_losses::loss::{ArcFaceLoss, LearnedBeta, MarginLoss, ProxyAnchorLoss, ProxyNCALoss};
use dml_losses::miner::{MultiSimilarityMiner, TripletMarginMiner, TripletType};
use dml_losses::{
    Batch, Distance, LossModule, LpPower, LpRegularizer, MatrixRef, MetricLoss, Reducer,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

use crate::common::uniform;

const N: usize = 9;
const D: usize = 4;
const CLASSES: usize = 4;
const LABELS: [i64; N] = [0, 0, 1, 1, 2, 2, 0, 3, 1];

/// A loss with learnable parameters, named for failure messages.
struct ParamCase {
    name: &'static str,
    loss: MetricLoss,
}

fn param_cases() -> Vec<ParamCase> {
    let squared = Distance::Lp {
        power: LpPower::Two,
        normalize: true,
    };
    let case = |name, loss| ParamCase { name, loss };
    let anchor = ProxyAnchorLoss::new(Distance::Cosine, CLASSES, 0.1, 8.0).unwrap();
    vec![
        case(
            "proxy anchor",
            MetricLoss::new(anchor, Reducer::Divisor).unwrap(),
        ),
        case(
            "proxy anchor + miner weights",
            MetricLoss::new(anchor, Reducer::Divisor)
                .unwrap()
                .with_miner(MultiSimilarityMiner::new(Distance::Cosine, 0.1).unwrap()),
        ),
        case(
            "proxy nca + weight regulariser",
            MetricLoss::new(
                ProxyNCALoss::new(squared, CLASSES, 2.0).unwrap(),
                Reducer::Mean,
            )
            .unwrap()
            .with_weight_regularizer(LpRegularizer::new(2.0, 1.0, 0.1).unwrap())
            .unwrap(),
        ),
        case(
            "proxy nca + semihard miner weights",
            MetricLoss::new(
                ProxyNCALoss::new(Distance::Cosine, CLASSES, 4.0).unwrap(),
                Reducer::Mean,
            )
            .unwrap()
            .with_miner(
                TripletMarginMiner::new(Distance::PML_LP_DEFAULT, 0.2, TripletType::SemiHard)
                    .unwrap(),
            ),
        ),
        case(
            "arcface",
            MetricLoss::new(
                ArcFaceLoss::new(Distance::Cosine, CLASSES, 28.6, 8.0).unwrap(),
                Reducer::Mean,
            )
            .unwrap(),
        ),
        case(
            "margin, learned global beta",
            MetricLoss::new(
                MarginLoss::new(Distance::PML_LP_DEFAULT, 0.2, 1.0)
                    .unwrap()
                    .with_nu(0.1)
                    .unwrap()
                    .with_learned_beta(LearnedBeta::Global)
                    .unwrap(),
                Reducer::Divisor,
            )
            .unwrap(),
        ),
        case(
            "margin, learned per-class beta",
            MetricLoss::new(
                MarginLoss::new(Distance::PML_LP_DEFAULT, 0.2, 1.0)
                    .unwrap()
                    .with_nu(0.1)
                    .unwrap()
                    .with_learned_beta(LearnedBeta::PerClass {
                        num_classes: CLASSES,
                    })
                    .unwrap(),
                Reducer::Divisor,
            )
            .unwrap(),
        ),
    ]
}

/// Parameters for `case` at width `d`: seeded uniform proxies, or betas around 1.
fn params(case: &ParamCase, d: usize, seed: u64) -> (Vec<f64>, usize, usize) {
    let (rows, cols) = case.loss.param_shape(d).expect("a loss with parameters");
    let values = if cols == 1 {
        (0..rows).map(|c| 0.9 + 0.05 * c as f64).collect()
    } else {
        uniform(rows, cols, seed + 100)
    };
    (values, rows, cols)
}

fn compute<T: dml_core::Real>(
    case: &ParamCase,
    x: &[T],
    labels: &[i64],
    d: usize,
    p: &[T],
    shape: (usize, usize),
) -> dml_losses::Computed<T> {
    let batch = Batch::new(MatrixRef::new(x, labels.len(), d).unwrap(), labels)
        .with_params(MatrixRef::new(p, shape.0, shape.1).unwrap());
    case.loss
        .compute(batch)
        .unwrap_or_else(|e| panic!("{}: {e}", case.name))
}

#[test]
fn embedding_and_parameter_gradients_match_finite_differences() {
    let h = 1e-6;
    let mut failures = Vec::new();
    for case in param_cases() {
        for seed in [1, 2] {
            let x = uniform(N, D, seed);
            let (p, rows, cols) = params(&case, D, seed);
            let out = compute(&case, &x, &LABELS, D, &p, (rows, cols));
            let pg = out.param_grad.clone().expect("a parameter gradient");
            let scale = out
                .grad
                .iter()
                .chain(&pg)
                .fold(0.0f64, |m, g| m.max(g.abs()));
            let at = |x: &[f64], p: &[f64]| compute(&case, x, &LABELS, D, p, (rows, cols)).loss;
            let mut check = |what: &str, k: usize, fd: f64, analytic: f64| {
                if (fd - analytic).abs() > 1e-6 + 1e-5 * scale {
                    failures.push(format!(
                        "{} (seed {seed}) d/d{what}[{k}]: analytic {analytic} vs {fd}",
                        case.name
                    ));
                }
            };
            for k in 0..x.len() {
                let (mut up, mut down) = (x.clone(), x.clone());
                up[k] += h;
                down[k] -= h;
                check(
                    "x",
                    k,
                    (at(&up, &p) - at(&down, &p)) / (2.0 * h),
                    out.grad[k],
                );
            }
            for k in 0..p.len() {
                let (mut up, mut down) = (p.clone(), p.clone());
                up[k] += h;
                down[k] -= h;
                check(
                    "params",
                    k,
                    (at(&x, &up) - at(&x, &down)) / (2.0 * h),
                    pg[k],
                );
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A batch with one of the awkward cases of the property tests (duplicates, one class, all
/// classes distinct, zero vectors, a zero proxy) at a scale from 1e-3 to 1e3.
#[derive(Debug, Clone)]
struct Awkward {
    x: Vec<f64>,
    labels: Vec<i64>,
    d: usize,
    zero_param_row: bool,
}

fn awkward() -> impl Strategy<Value = Awkward> {
    (2usize..10, 1usize..5, -3i32..=3, 0u8..5).prop_flat_map(|(n, d, log_scale, twist)| {
        (
            proptest::collection::vec(-1.0f64..1.0, n * d),
            proptest::collection::vec(0..CLASSES as i64, n),
        )
            .prop_map(move |(mut x, mut labels)| {
                x.iter_mut().for_each(|v| *v *= 10f64.powi(log_scale));
                match twist {
                    0 => {
                        let row = x[..d].to_vec();
                        x[d..2 * d].copy_from_slice(&row);
                        labels[1] = labels[0];
                    }
                    1 => x[..d].iter_mut().for_each(|v| *v = 0.0),
                    2 => labels.iter_mut().for_each(|l| *l = 2),
                    3 => labels
                        .iter_mut()
                        .enumerate()
                        .for_each(|(i, l)| *l = (i % CLASSES) as i64),
                    _ => {}
                }
                Awkward {
                    x,
                    labels,
                    d,
                    zero_param_row: twist == 4,
                }
            })
    })
}

#[test]
fn awkward_batches_give_finite_losses_and_gradients() {
    let mut runner = TestRunner::new(Config {
        cases: 48,
        rng_seed: RngSeed::Fixed(20_261_128),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&awkward(), |input| {
            for case in param_cases() {
                let (mut p, rows, cols) = params(&case, input.d, 7);
                if input.zero_param_row {
                    p[..cols].iter_mut().for_each(|v| *v = 0.0);
                }
                let out = compute(&case, &input.x, &input.labels, input.d, &p, (rows, cols));
                let pg = out.param_grad.unwrap_or_default();
                prop_assert!(
                    out.loss.is_finite() && out.loss >= 0.0,
                    "{}: {}",
                    case.name,
                    out.loss
                );
                prop_assert!(
                    out.grad.iter().chain(&pg).all(|g| g.is_finite()),
                    "{}: gradient not finite",
                    case.name
                );
                let x32: Vec<f32> = input.x.iter().map(|&v| v as f32).collect();
                let p32: Vec<f32> = p.iter().map(|&v| v as f32).collect();
                let out = compute(&case, &x32, &input.labels, input.d, &p32, (rows, cols));
                let pg = out.param_grad.unwrap_or_default();
                prop_assert!(
                    out.loss.is_finite() && out.grad.iter().chain(&pg).all(|g| g.is_finite()),
                    "{} f32: not finite",
                    case.name
                );
            }
            Ok(())
        })
        .unwrap();
}

/// The adapter owns the proxies as a `Param`: backward gives the kernel's proxy gradient, and
/// one SGD step moves the proxies by exactly `-lr * gradient`.
#[test]
fn the_adapter_trains_the_proxies_with_a_burn_optimizer() {
    let device = Device::flex().autodiff();
    let loss = MetricLoss::new(
        ProxyAnchorLoss::new(Distance::Cosine, CLASSES, 0.1, 8.0).unwrap(),
        Reducer::Divisor,
    )
    .unwrap();
    let x: Vec<f32> = uniform(N, D, 3).iter().map(|&v| v as f32).collect();
    let module = LossModule::new(loss.clone(), D, 11, &device);
    let proxies: Vec<f32> = module.params().unwrap().to_data().try_to_vec().unwrap();
    let kernel = loss
        .compute(
            Batch::new(MatrixRef::new(&x, N, D).unwrap(), &LABELS)
                .with_params(MatrixRef::new(&proxies, CLASSES, D).unwrap()),
        )
        .unwrap();
    let emb = Tensor::<2>::from_data(TensorData::new(x.clone(), [N, D]), &device).require_grad();
    let out = module.forward(emb, &LABELS).unwrap();
    let value: f32 = out.loss.clone().into_scalar();
    assert!((value - kernel.loss).abs() <= 1e-5 * (1.0 + kernel.loss.abs()));
    let grads = GradientsParams::from_grads(out.loss.backward(), &module);
    let lr = 0.5;
    let mut optimizer = SgdConfig::new().init();
    let trained = optimizer.step(lr, module, grads);
    let after: Vec<f32> = trained.params().unwrap().to_data().try_to_vec().unwrap();
    let pg = kernel.param_grad.unwrap();
    assert!(pg.iter().any(|g| g.abs() > 1e-3), "a gradient to follow");
    for k in 0..after.len() {
        let want = proxies[k] - lr as f32 * pg[k];
        assert!(
            (after[k] - want).abs() <= 1e-5,
            "proxy entry {k}: {} vs {want}",
            after[k]
        );
    }
    assert_eq!(trained.num_params(), CLASSES * D);
}
