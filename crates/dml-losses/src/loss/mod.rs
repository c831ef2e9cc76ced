//! Loss kernels: plain-Rust numeric code that computes a loss and its exact gradient in one
//! pass over the score matrix.
//!
//! Every loss is a small config struct implementing [`LossKernel`]. A kernel receives a
//! [`KernelInput`] (embeddings, labels, which tuples to use, learnable parameters, the reducer)
//! and returns a [`KernelOutput`] (reduced value, `dL/d embeddings`, `dL/d parameters`,
//! optional unreduced terms, statistics). [`LossKind`] gathers all kernels for dispatch, and
//! [`crate::MetricLoss`] adds miners and regularisers around them. See
//! `docs/losses-framework.md` for how to add one.

mod angular;
mod angular_mc;
mod arc_face;
mod circle;
mod contrastive;
mod generalized_lifted_structure;
mod lifted_structure;
mod margin;
mod multi_similarity;
mod n_pair_angular;
mod n_pairs;
mod nt_xent;
mod pair_mask;
mod pair_set;
mod proxies;
mod proxy_anchor;
mod proxy_nca;
mod sup_con;
mod terms;
mod triplet_margin;
mod triplet_window;

pub use angular::AngularLoss;
pub use angular_mc::AngularMcLoss;
pub use arc_face::ArcFaceLoss;
pub use circle::CircleLoss;
pub use contrastive::ContrastiveLoss;
pub use generalized_lifted_structure::GeneralizedLiftedStructureLoss;
pub use lifted_structure::LiftedStructureLoss;
pub use margin::{LearnedBeta, MarginLoss};
pub use multi_similarity::MultiSimilarityLoss;
pub use n_pair_angular::NPairAngularLoss;
pub use n_pairs::NPairsLoss;
pub use nt_xent::NTXentLoss;
pub use proxy_anchor::ProxyAnchorLoss;
pub use proxy_nca::ProxyNCALoss;
pub use sup_con::SupConLoss;
pub use terms::{LossTerm, TermIndices};
pub use triplet_margin::TripletMarginLoss;

use dml_core::Real;
use serde::{Deserialize, Serialize};

use crate::distance::{ScoreGradients, Scores};
use crate::error::Result;
use crate::matrix::MatrixRef;
use crate::miner::Miner;
use crate::reducer::Reducer;
use crate::tuples::Tuples;

/// Which tuples a kernel uses.
#[derive(Debug, Clone, Copy)]
pub enum Selection<'a> {
    /// Every valid pair / triplet of the batch (PML note 4), never materialised.
    All,
    /// Tuples a caller gave or a miner produced.
    Tuples(&'a Tuples),
    /// A miner the kernel evaluates inline instead of materialising its output (only passed to
    /// kernels whose [`LossKernel::fuses`] accepts it).
    Fused(&'a Miner),
}

/// Everything a kernel reads.
#[derive(Debug, Clone, Copy)]
pub struct KernelInput<'a, T> {
    /// The batch, `n x d` (raw: normalisation belongs to the distance).
    pub embeddings: MatrixRef<'a, T>,
    /// One label per row.
    pub labels: &'a [i64],
    /// Which tuples to use.
    pub selection: Selection<'a>,
    /// Learnable parameters (proxies `C x d`, MarginLoss's beta `k x 1`), when the loss has any.
    pub params: Option<MatrixRef<'a, T>>,
    /// How per-element losses become one number.
    pub reducer: Reducer,
    /// Whether to report the unreduced per-element losses (may materialise tuples).
    pub want_terms: bool,
    /// Largest tuple list the kernel may materialise (see [`crate::Error::TupleBudgetExceeded`]).
    pub tuple_budget: u64,
}

/// Counts a kernel reports about one evaluation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LossStats {
    /// Elements (pairs, triplets, rows, classes) with a non-zero loss.
    pub active: u64,
    /// Elements the loss looked at.
    pub total: u64,
}

/// What a kernel returns.
#[derive(Debug, Clone)]
pub struct KernelOutput<T> {
    /// The reduced loss (sum over sub-losses of each one's reduction).
    pub loss: T,
    /// `dL / d embeddings`, row-major `n x d`.
    pub grad: Vec<T>,
    /// `dL / d params`, same shape as [`KernelInput::params`].
    pub param_grad: Option<Vec<T>>,
    /// Unreduced sub-losses, only when [`KernelInput::want_terms`] was set.
    pub terms: Vec<LossTerm<T>>,
    /// Counts for logging.
    pub stats: LossStats,
}

impl<T: Real> KernelOutput<T> {
    /// A zero loss with zero gradient (PML's `zero_losses`), for `n x d` embeddings.
    pub fn zero(n: usize, d: usize, params: Option<MatrixRef<'_, T>>) -> Self {
        Self {
            loss: T::zero(),
            grad: vec![T::zero(); n * d],
            param_grad: params.map(|p| vec![T::zero(); p.data().len()]),
            terms: Vec::new(),
            stats: LossStats::default(),
        }
    }

    /// The output of a per-row loss whose `grad_s` holds `dL/dS` without the reducer's
    /// weight. The backward pass is linear, so the reducer's common scale is applied to the
    /// `n x d` result instead of the `n x n` buffer.
    pub fn scaled_rows(
        input: &KernelInput<'_, T>,
        scores: &Scores<T>,
        grad_s: &mut [T],
        losses: Vec<T>,
    ) -> Self {
        let red = input.reducer.reduce(&losses, None);
        let mut grads = scores.backward(grad_s);
        grads.x.iter_mut().for_each(|g| *g *= red.scale);
        let rows = losses.len() as u64;
        Self::per_element(red.value, grads, losses, rows, input.want_terms)
    }

    /// The output of a loss with one sub-loss per embedding: `losses` are those sub-losses
    /// unreduced, `total` how many rows had something to score (for [`LossStats`]).
    pub fn per_element(
        loss: T,
        grads: ScoreGradients<T>,
        losses: Vec<T>,
        total: u64,
        want_terms: bool,
    ) -> Self {
        let stats = LossStats {
            active: losses.iter().filter(|&&l| l != T::zero()).count() as u64,
            total,
        };
        let terms = if want_terms {
            let indices = TermIndices::PerElement((0..losses.len() as u32).collect());
            vec![LossTerm {
                name: "loss",
                losses,
                indices,
            }]
        } else {
            Vec::new()
        };
        Self {
            loss,
            grad: grads.x,
            param_grad: grads.y,
            terms,
            stats,
        }
    }
}

/// A loss kernel: one loss's math, generic over `f32` / `f64`.
pub trait LossKernel {
    /// PML's class name (also the name `dml loss` case files use).
    fn name(&self) -> &'static str;

    /// The reducer PML uses when none is given (note 7); informational: dml's API takes the
    /// reducer explicitly.
    fn pml_default_reducer(&self) -> Reducer;

    /// Computes the loss, its gradient and, if asked, its unreduced terms.
    fn compute<T: Real>(&self, input: &KernelInput<'_, T>) -> Result<KernelOutput<T>>;

    /// Whether this kernel can evaluate `miner` inline ([`Selection::Fused`]) instead of
    /// receiving its materialised tuples.
    fn fuses(&self, _miner: &Miner) -> bool {
        false
    }

    /// Shape `(rows, cols)` of the learnable parameters for embeddings of width `dim`.
    fn param_shape(&self, _dim: usize) -> Option<(usize, usize)> {
        None
    }

    /// How to initialise the learnable parameters (PML's `weight_init_func`).
    fn param_init(&self, _dim: usize) -> ParamInit {
        ParamInit::Normal { std: 1.0 }
    }

    /// Whether the kernel's terms carry divisors (so [`Reducer::Divisor`] applies).
    fn supplies_divisor(&self) -> bool {
        false
    }
}

/// How a loss's learnable parameters start out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamInit {
    /// Independent normal draws with mean 0 (seeded by the caller).
    Normal {
        /// Standard deviation.
        std: f64,
    },
    /// Every entry equal to this value.
    Constant(f64),
}

/// Every loss dml implements, for dispatch without trait objects (kernels are generic).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "loss", rename_all = "snake_case")]
pub enum LossKind {
    /// See [`ContrastiveLoss`].
    Contrastive(ContrastiveLoss),
    /// See [`TripletMarginLoss`].
    TripletMargin(TripletMarginLoss),
    /// See [`NPairsLoss`].
    NPairs(NPairsLoss),
    /// See [`AngularLoss`].
    Angular(AngularLoss),
    /// See [`NPairAngularLoss`].
    NPairAngular(NPairAngularLoss),
    /// See [`AngularMcLoss`].
    AngularMc(AngularMcLoss),
    /// See [`MultiSimilarityLoss`].
    MultiSimilarity(MultiSimilarityLoss),
    /// See [`LiftedStructureLoss`].
    LiftedStructure(LiftedStructureLoss),
    /// See [`GeneralizedLiftedStructureLoss`].
    GeneralizedLiftedStructure(GeneralizedLiftedStructureLoss),
    /// See [`ProxyAnchorLoss`].
    ProxyAnchor(ProxyAnchorLoss),
    /// See [`ProxyNCALoss`].
    ProxyNca(ProxyNCALoss),
    /// See [`ArcFaceLoss`].
    ArcFace(ArcFaceLoss),
    /// See [`NTXentLoss`].
    NtXent(NTXentLoss),
    /// See [`CircleLoss`].
    Circle(CircleLoss),
    /// See [`SupConLoss`].
    SupCon(SupConLoss),
    /// See [`MarginLoss`].
    Margin(MarginLoss),
}

/// Calls `$body` with `$k` bound to the kernel inside any [`LossKind`] variant.
macro_rules! with_kernel {
    ($kind:expr, $k:ident => $body:expr) => {
        match $kind {
            LossKind::Contrastive($k) => $body,
            LossKind::TripletMargin($k) => $body,
            LossKind::NPairs($k) => $body,
            LossKind::Angular($k) => $body,
            LossKind::NPairAngular($k) => $body,
            LossKind::AngularMc($k) => $body,
            LossKind::MultiSimilarity($k) => $body,
            LossKind::LiftedStructure($k) => $body,
            LossKind::GeneralizedLiftedStructure($k) => $body,
            LossKind::ProxyAnchor($k) => $body,
            LossKind::ProxyNca($k) => $body,
            LossKind::ArcFace($k) => $body,
            LossKind::NtXent($k) => $body,
            LossKind::Circle($k) => $body,
            LossKind::SupCon($k) => $body,
            LossKind::Margin($k) => $body,
        }
    };
}

impl LossKernel for LossKind {
    fn name(&self) -> &'static str {
        with_kernel!(self, k => k.name())
    }

    fn pml_default_reducer(&self) -> Reducer {
        with_kernel!(self, k => k.pml_default_reducer())
    }

    fn compute<T: Real>(&self, input: &KernelInput<'_, T>) -> Result<KernelOutput<T>> {
        with_kernel!(self, k => k.compute(input))
    }

    fn fuses(&self, miner: &Miner) -> bool {
        with_kernel!(self, k => k.fuses(miner))
    }

    fn param_shape(&self, dim: usize) -> Option<(usize, usize)> {
        with_kernel!(self, k => k.param_shape(dim))
    }

    fn param_init(&self, dim: usize) -> ParamInit {
        with_kernel!(self, k => k.param_init(dim))
    }

    fn supplies_divisor(&self) -> bool {
        with_kernel!(self, k => k.supplies_divisor())
    }
}

macro_rules! impl_from_kernel {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        $(impl From<$ty> for LossKind {
            fn from(k: $ty) -> Self {
                LossKind::$variant(k)
            }
        })*
    };
}

impl_from_kernel!(
    Contrastive(ContrastiveLoss),
    TripletMargin(TripletMarginLoss),
    NPairs(NPairsLoss),
    Angular(AngularLoss),
    NPairAngular(NPairAngularLoss),
    AngularMc(AngularMcLoss),
    MultiSimilarity(MultiSimilarityLoss),
    LiftedStructure(LiftedStructureLoss),
    GeneralizedLiftedStructure(GeneralizedLiftedStructureLoss),
    ProxyAnchor(ProxyAnchorLoss),
    ProxyNca(ProxyNCALoss),
    ArcFace(ArcFaceLoss),
    NtXent(NTXentLoss),
    Circle(CircleLoss),
    SupCon(SupConLoss),
    Margin(MarginLoss),
);

/// Test helpers shared by the kernels' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Deterministic pseudo-random points in [-1, 1).
    pub fn points(n: usize, d: usize, seed: u64) -> Vec<f64> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
            | 1;
        (0..n * d)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
            })
            .collect()
    }

    /// A kernel input without parameters or terms.
    pub fn input<'a>(
        x: &'a [f64],
        d: usize,
        labels: &'a [i64],
        selection: Selection<'a>,
        reducer: Reducer,
    ) -> KernelInput<'a, f64> {
        KernelInput {
            embeddings: MatrixRef::new(x, labels.len(), d).unwrap(),
            labels,
            selection,
            params: None,
            reducer,
            want_terms: false,
            tuple_budget: 1 << 20,
        }
    }

    /// The loss and gradient bits of `loss` on `f32` points, computed with `threads` threads
    /// (reducer `Mean`): results must not depend on the thread count.
    pub fn bits_on_threads<K: LossKernel + Sync>(
        loss: &K,
        x: &[f32],
        labels: &[i64],
        selection: Selection<'_>,
        threads: usize,
    ) -> (u32, Vec<u32>) {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let inp = KernelInput {
            embeddings: MatrixRef::new(x, labels.len(), x.len() / labels.len()).unwrap(),
            labels,
            selection,
            params: None,
            reducer: Reducer::Mean,
            want_terms: false,
            tuple_budget: 1 << 20,
        };
        let out = pool.install(|| loss.compute(&inp).unwrap());
        (
            out.loss.to_bits(),
            out.grad.iter().map(|g| g.to_bits()).collect(),
        )
    }

    /// Asserts that `loss` over every tuple of the batch (the streamed path) equals `loss`
    /// over the same tuples listed, in loss, gradient and active count, and returns the
    /// streamed output for further checks.
    pub fn assert_all_equals_listed<K: LossKernel>(
        loss: &K,
        x: &[f64],
        d: usize,
        labels: &[i64],
        listed: &Tuples,
        reducer: Reducer,
        what: &str,
    ) -> KernelOutput<f64> {
        let want = loss
            .compute(&input(x, d, labels, Selection::Tuples(listed), reducer))
            .unwrap();
        let got = loss
            .compute(&input(x, d, labels, Selection::All, reducer))
            .unwrap();
        assert_same(&got, &want, what);
        assert_eq!(got.stats.active, want.stats.active, "{what}: active");
        got
    }

    /// Asserts two outputs agree in loss and gradient.
    pub fn assert_same(a: &KernelOutput<f64>, b: &KernelOutput<f64>, what: &str) {
        assert!(
            (a.loss - b.loss).abs() < 1e-12 * (1.0 + a.loss.abs()),
            "{what}: loss {} vs {}",
            a.loss,
            b.loss
        );
        for (x, y) in a.grad.iter().zip(&b.grad) {
            assert!((x - y).abs() < 1e-12, "{what}: gradient {x} vs {y}");
        }
    }
}
