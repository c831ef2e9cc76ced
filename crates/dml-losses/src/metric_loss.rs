//! A loss kernel together with its reducer, optional miner and regularisers.

use dml_core::Real;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::loss::{KernelInput, LossKernel, LossKind, LossStats, LossTerm, Selection, TermIndices};
use crate::matrix::MatrixRef;
use crate::miner::{DEFAULT_TUPLE_BUDGET, Miner};
use crate::reducer::Reducer;
use crate::regularizer::LpRegularizer;
use crate::tuples::Tuples;

/// A complete loss: kernel, reducer, optional miner, optional regularisers.
///
/// This is PML's `loss_func(embeddings, labels, miner(embeddings, labels))` in one value, with
/// every choice explicit. When the kernel can evaluate the miner inline (for example
/// `TripletMarginLoss` with a `TripletMarginMiner` of the same distance) the mined tuples are
/// never materialised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricLoss {
    kind: LossKind,
    reducer: Reducer,
    miner: Option<Miner>,
    embedding_regularizer: Option<LpRegularizer>,
    weight_regularizer: Option<LpRegularizer>,
    tuple_budget: u64,
}

/// One batch to evaluate a [`MetricLoss`] on.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a, T> {
    embeddings: MatrixRef<'a, T>,
    labels: &'a [i64],
    tuples: Option<&'a Tuples>,
    params: Option<MatrixRef<'a, T>>,
    want_terms: bool,
    step: u64,
}

impl<'a, T: Real> Batch<'a, T> {
    /// Embeddings `[n, d]` with one label per row.
    pub fn new(embeddings: MatrixRef<'a, T>, labels: &'a [i64]) -> Self {
        Self {
            embeddings,
            labels,
            tuples: None,
            params: None,
            want_terms: false,
            step: 0,
        }
    }

    /// Uses these tuples instead of all tuples or the miner's (PML's `indices_tuple`).
    pub fn with_tuples(mut self, tuples: &'a Tuples) -> Self {
        self.tuples = Some(tuples);
        self
    }

    /// The loss's learnable parameters (proxies `C x d`, MarginLoss's beta).
    pub fn with_params(mut self, params: MatrixRef<'a, T>) -> Self {
        self.params = Some(params);
        self
    }

    /// Also report the unreduced per-element losses (may materialise tuples).
    pub fn with_terms(mut self) -> Self {
        self.want_terms = true;
        self
    }

    /// The training step, which varies random miners between calls under one seed.
    pub fn with_step(mut self, step: u64) -> Self {
        self.step = step;
        self
    }
}

/// The value of a [`MetricLoss`] on a batch, with its exact gradients.
#[derive(Debug, Clone)]
pub struct Computed<T> {
    /// The loss (reduced main loss plus regularisers).
    pub loss: T,
    /// `dL / d embeddings`, row-major `n x d`.
    pub grad: Vec<T>,
    /// `dL / d params` when the loss has learnable parameters.
    pub param_grad: Option<Vec<T>>,
    /// Unreduced sub-losses (only when asked for).
    pub terms: Vec<LossTerm<T>>,
    /// Counts from the kernel.
    pub stats: LossStats,
    /// Number of tuples the miner produced, when a miner ran and was not fused.
    pub mined: Option<u64>,
}

impl MetricLoss {
    /// A loss reduced with `reducer` (see each loss's docs for PML's default).
    pub fn new(kind: impl Into<LossKind>, reducer: Reducer) -> Result<Self> {
        let kind = kind.into();
        if reducer == Reducer::Divisor && !kind.supplies_divisor() {
            return Err(Error::UnsupportedReducer {
                loss: kind.name(),
                reducer: "DivisorReducer",
                reason: "this loss supplies no divisor",
            });
        }
        Ok(Self {
            kind,
            reducer,
            miner: None,
            embedding_regularizer: None,
            weight_regularizer: None,
            tuple_budget: DEFAULT_TUPLE_BUDGET,
        })
    }

    /// Mines tuples with `miner` on every batch that brings no tuples of its own.
    pub fn with_miner(mut self, miner: impl Into<Miner>) -> Self {
        self.miner = Some(miner.into());
        self
    }

    /// Adds an embedding regulariser over the whole batch (PML `embedding_regularizer`).
    pub fn with_embedding_regularizer(mut self, regularizer: LpRegularizer) -> Self {
        self.embedding_regularizer = Some(regularizer);
        self
    }

    /// Adds a regulariser over the rows of the learnable parameters (PML
    /// `weight_regularizer`); fails for losses without parameters.
    pub fn with_weight_regularizer(mut self, regularizer: LpRegularizer) -> Result<Self> {
        if self.kind.param_shape(1).is_none() {
            return Err(Error::InvalidParameter {
                owner: self.kind.name(),
                param: "weight_regularizer",
                value: regularizer.weight(),
                reason: "this loss has no learnable weights to regularise",
            });
        }
        self.weight_regularizer = Some(regularizer);
        Ok(self)
    }

    /// The loss kernel.
    pub fn kind(&self) -> &LossKind {
        &self.kind
    }

    /// The reducer.
    pub fn reducer(&self) -> Reducer {
        self.reducer
    }

    /// The miner, if any.
    pub fn miner(&self) -> Option<&Miner> {
        self.miner.as_ref()
    }

    /// Shape of the learnable parameters for embeddings of width `dim`, if the loss has any.
    pub fn param_shape(&self, dim: usize) -> Option<(usize, usize)> {
        self.kind.param_shape(dim)
    }

    /// Evaluates the loss and its gradients on a batch.
    ///
    /// Fails with a typed error on an empty batch, zero-width embeddings, a label count that
    /// differs from the row count, non-finite inputs, tuples that point outside the batch, or
    /// parameters of the wrong shape.
    pub fn compute<T: Real>(&self, batch: Batch<'_, T>) -> Result<Computed<T>> {
        let x = batch.embeddings;
        let (n, d) = (x.rows(), x.cols());
        if n == 0 {
            return Err(Error::EmptyBatch);
        }
        if d == 0 {
            return Err(Error::ZeroDimension);
        }
        if batch.labels.len() != n {
            return Err(Error::LengthMismatch {
                what: "labels (one per embedding row)",
                expected: n,
                found: batch.labels.len(),
            });
        }
        x.check_finite("embeddings")?;
        let params = self.checked_params(batch.params, d)?;
        if let Some(t) = batch.tuples {
            t.validate(n)?;
        }
        let mined;
        let mut mined_count = None;
        let selection = match (batch.tuples, &self.miner) {
            (Some(t), _) => Selection::Tuples(t),
            (None, Some(m)) if self.kind.fuses(m) => Selection::Fused(m),
            (None, Some(m)) => {
                mined = m.mine(x, batch.labels, batch.step)?;
                mined_count = Some(mined.lists()[0].len() as u64);
                Selection::Tuples(&mined)
            }
            (None, None) => Selection::All,
        };
        let input = KernelInput {
            embeddings: x,
            labels: batch.labels,
            selection,
            params,
            reducer: self.reducer,
            want_terms: batch.want_terms,
            tuple_budget: self.tuple_budget,
        };
        let mut out = self.kind.compute(&input)?;
        if let Some(reg) = &self.embedding_regularizer {
            let (v, g) = reg.compute(x);
            out.loss += v;
            out.grad.iter_mut().zip(&g).for_each(|(a, &b)| *a += b);
            if batch.want_terms {
                out.terms.push(reduced_term("embedding_reg_loss", v));
            }
        }
        if let (Some(reg), Some(p)) = (&self.weight_regularizer, params) {
            let (v, g) = reg.compute(p);
            out.loss += v;
            let pg = out
                .param_grad
                .get_or_insert_with(|| vec![T::zero(); g.len()]);
            pg.iter_mut().zip(&g).for_each(|(a, &b)| *a += b);
            if batch.want_terms {
                out.terms.push(reduced_term("weight_reg_loss", v));
            }
        }
        Ok(Computed {
            loss: out.loss,
            grad: out.grad,
            param_grad: out.param_grad,
            terms: out.terms,
            stats: out.stats,
            mined: mined_count,
        })
    }

    fn checked_params<'a, T: Real>(
        &self,
        params: Option<MatrixRef<'a, T>>,
        dim: usize,
    ) -> Result<Option<MatrixRef<'a, T>>> {
        let shape = |r: usize, c: usize| format!("{r} x {c}");
        match (self.kind.param_shape(dim), params) {
            (None, None) => Ok(None),
            (None, Some(p)) => Err(Error::ParameterShape {
                loss: self.kind.name(),
                expected: "none (this loss has no learnable parameters)".into(),
                found: shape(p.rows(), p.cols()),
            }),
            (Some((r, c)), None) => Err(Error::ParameterShape {
                loss: self.kind.name(),
                expected: shape(r, c),
                found: "none".into(),
            }),
            (Some((r, c)), Some(p)) => {
                if (p.rows(), p.cols()) != (r, c) {
                    return Err(Error::ParameterShape {
                        loss: self.kind.name(),
                        expected: shape(r, c),
                        found: shape(p.rows(), p.cols()),
                    });
                }
                p.check_finite("loss parameters")?;
                Ok(Some(p))
            }
        }
    }
}

fn reduced_term<T: Real>(name: &'static str, value: T) -> LossTerm<T> {
    LossTerm {
        name,
        losses: vec![value],
        indices: TermIndices::Reduced,
    }
}
