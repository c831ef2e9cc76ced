//! N-pair-angular loss (Wang et al. 2017): N-pairs plus lambda times angular-mc.

use dml_core::Real;
use dml_core::linalg::{Transpose, matmul};
use serde::{Deserialize, Serialize};

use super::angular_mc::{AngularMcTerms, NPairBlock, check_alpha};
use super::n_pairs::diagonal_cross_entropy;
use super::{KernelInput, KernelOutput, LossKernel, LossStats, LossTerm, TermIndices};
use crate::error::Result;
use crate::reducer::Reducer;

/// Wang et al.'s combination of the multi-class N-pair loss and the angular loss.
///
/// ```text
/// one pair (f_i, p_i) per label (as NPairsLoss)
/// npair_i   = log sum_j exp(f_i . p_j) - f_i . p_i
/// angular_i = log(1 + sum_{j != i} exp(4 t (f_i + p_i) . p_j - 2 (1 + t) f_i . p_i))
/// L_i = npair_i + lambda * angular_i,      L = reduce(L_i)
/// ```
///
/// Both terms use the same points, L2-normalised when `normalize`, and dot products.
///
/// # Degenerate batches
/// No class with two samples: 0.
///
/// Paper defaults: `lambda = 2`, `alpha` between 36 and 55 degrees (45 in the survey's code).
/// Reference: Wang et al., "Deep Metric Learning with Angular Loss", ICCV 2017, eq. (11).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NPairAngularLoss {
    alpha_degrees: f64,
    lambda: f64,
    normalize: bool,
}

impl NPairAngularLoss {
    /// The combination with angle `alpha_degrees` in (0, 90) and weight `lambda >= 0`.
    pub fn new(alpha_degrees: f64, lambda: f64, normalize: bool) -> Result<Self> {
        check_alpha("NPairAngularLoss", alpha_degrees)?;
        crate::error::non_negative("NPairAngularLoss", "lambda", lambda)?;
        Ok(Self {
            alpha_degrees,
            lambda,
            normalize,
        })
    }
}

impl LossKernel for NPairAngularLoss {
    fn name(&self) -> &'static str {
        "NPairAngularLoss"
    }

    fn pml_default_reducer(&self) -> Reducer {
        Reducer::Mean
    }

    fn compute<T: Real>(&self, input: &KernelInput<'_, T>) -> Result<KernelOutput<T>> {
        let (n, d) = (input.embeddings.rows(), input.embeddings.cols());
        let block = NPairBlock::new(input, self.normalize, self.name())?;
        let k = block.k;
        if k == 0 {
            return Ok(KernelOutput::zero(n, d, input.params));
        }
        let (f, p) = (block.f.points(), block.p.points());
        let mut z = vec![T::zero(); k * k];
        matmul(
            f,
            Transpose::No,
            p,
            Transpose::Yes,
            k,
            k,
            d,
            &mut z,
            T::zero(),
            T::one(),
        );
        let mut dz = vec![T::zero(); k * k];
        let npair = diagonal_cross_entropy(&z, k, &mut dz);
        let angular = AngularMcTerms::new(&block, self.alpha_degrees);
        let lambda = T::of(self.lambda);
        let losses: Vec<T> = npair
            .iter()
            .zip(&angular.losses)
            .map(|(&a, &b)| a + lambda * b)
            .collect();
        let red = input.reducer.reduce(&losses, None);
        let w: Vec<T> = losses
            .iter()
            .map(|&l| input.reducer.weight(&red, l))
            .collect();
        for i in 0..k {
            dz[i * k..(i + 1) * k].iter_mut().for_each(|v| *v *= w[i]);
        }
        let (mut df, mut dp) = (vec![T::zero(); k * d], vec![T::zero(); k * d]);
        // z = F P^T
        matmul(
            &dz,
            Transpose::No,
            p,
            Transpose::No,
            k,
            d,
            k,
            &mut df,
            T::zero(),
            T::one(),
        );
        matmul(
            &dz,
            Transpose::Yes,
            f,
            Transpose::No,
            k,
            d,
            k,
            &mut dp,
            T::zero(),
            T::one(),
        );
        let wl: Vec<T> = w.iter().map(|&v| v * lambda).collect();
        angular.backward(&block, &wl, &mut df, &mut dp);
        let grad = block.backward(df, dp, n);
        let active = losses.iter().filter(|&&l| l != T::zero()).count() as u64;
        Ok(KernelOutput {
            loss: red.value,
            grad,
            param_grad: None,
            terms: if input.want_terms {
                vec![LossTerm {
                    name: "loss",
                    losses,
                    indices: TermIndices::PerElement(block.anchors),
                }]
            } else {
                Vec::new()
            },
            stats: LossStats {
                active,
                total: k as u64,
            },
        })
    }
}
