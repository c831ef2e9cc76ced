//! Central finite differences in f64 against every kernel's analytic gradient.

use dml_losses::{Batch, MatrixRef};

use crate::common::{cases, uniform};

const LABELS: [i64; 9] = [0, 0, 1, 1, 2, 2, 0, 3, 1];
const N: usize = 9;
const D: usize = 4;
const H: f64 = 1e-6;

#[test]
fn analytic_gradients_match_finite_differences() {
    let mut failures = Vec::new();
    for case in cases().into_iter().filter(|c| c.exact_gradient) {
        for seed in [1, 2] {
            let x = uniform(N, D, seed);
            let loss_at = |x: &[f64]| {
                case.loss
                    .compute(Batch::new(MatrixRef::new(x, N, D).unwrap(), &LABELS))
                    .unwrap()
                    .loss
            };
            let out = case
                .loss
                .compute(Batch::new(MatrixRef::new(&x, N, D).unwrap(), &LABELS))
                .unwrap();
            let scale = out.grad.iter().fold(0.0f64, |m, g| m.max(g.abs()));
            for k in 0..N * D {
                let (mut up, mut down) = (x.clone(), x.clone());
                up[k] += H;
                down[k] -= H;
                let fd = (loss_at(&up) - loss_at(&down)) / (2.0 * H);
                if (fd - out.grad[k]).abs() > 1e-6 + 1e-5 * scale {
                    failures.push(format!(
                        "{} (seed {seed}) d/dx[{}][{}]: analytic {} vs finite difference {fd}",
                        case.name,
                        k / D,
                        k % D,
                        out.grad[k]
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
