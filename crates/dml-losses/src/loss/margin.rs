//! Margin loss (Wu et al. 2017, "Sampling matters in deep embedding learning"), PML's form.

use dml_core::Real;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{
    KernelInput, KernelOutput, LossKernel, LossStats, LossTerm, ParamInit, Selection, TermIndices,
};
use crate::distance::{Distance, Scores};
use crate::error::{Error, Result};
use crate::reducer::Reducer;
use crate::tuples::{TripletIndices, Tuples};

/// Margin loss: positive pairs inside `beta - margin`, negative pairs beyond `beta + margin`,
/// with a boundary `beta` that can be learned globally or per class.
///
/// ```text
/// pos(a, p) = relu(margin(d_ap, beta_a) + margin)     margin(x, y) = x - y (distances)
/// neg(a, n) = relu(margin(beta_a, d_an) + margin)                  = y - x (similarities)
/// margin_loss = reduce(pos(a, p) + neg(a, n) over the triplets,
///                      divisor = #(pos > 0) + #(neg > 0) over the triplets)
/// beta_reg_loss = nu * beta                               (learned global beta, not reduced)
///               = reduce(nu * beta_a over the triplets)   (learned per-class beta)
/// ```
///
/// This is Wu et al.'s `relu(margin + y_ij (d_ij - beta))` evaluated on triplets, as PML does:
/// with all triplets (`triplets_per_anchor = "all"`) each positive pair counts once per
/// negative of its anchor and each negative pair once per positive. `beta_a` is the global
/// beta or the beta of the anchor's class. Meant for a
/// [`crate::miner::DistanceWeightedMiner`], whose triplets it takes as listed.
///
/// All triplets, and pair tuples (crossed per anchor, PML note 5), are never materialised: per
/// anchor, counts and sums over its positives and negatives give every triplet sum, so the
/// cost is O(n^2). Listed triplets cost O(triplets). The unreduced report and
/// `ThresholdReducer` (which needs every triplet's value) materialise the triplets within the
/// tuple budget.
///
/// # Shapes
/// embeddings `[n, d]`, labels `[n]` (class indices in `0..num_classes` with per-class beta);
/// a learned beta is the kernel's parameter, `[num_classes, 1]` or `[1, 1]`, with its gradient
/// in `param_grad`.
///
/// # Degenerate batches
/// No triplet: 0, regulariser included (PML's `zero_losses`).
///
/// PML defaults (`MarginLoss()`): `margin = 0.2`, `nu = 0`, `beta = 1.2`,
/// `triplets_per_anchor = "all"`, `learn_beta = False`, `num_classes = None`, distance
/// `Lp { power: One, normalize: true }`, reducer `Divisor`.
/// Reference: PML `losses/margin_loss.py`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MarginLoss {
    distance: Distance,
    margin: f64,
    beta: f64,
    nu: f64,
    learned: Option<LearnedBeta>,
}

/// A learned beta: one for all classes, or one per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LearnedBeta {
    /// One beta shared by every class.
    Global,
    /// One beta per class; labels must be class indices.
    PerClass {
        /// Number of classes.
        num_classes: usize,
    },
}

/// Per-anchor counts and sums over its positives and negatives.
#[derive(Debug, Clone, Copy, Default)]
struct AnchorSums {
    positives: u64,
    negatives: u64,
    /// Positives / negatives with a non-zero hinge.
    pos_active: u64,
    neg_active: u64,
    pos_sum: f64,
    neg_sum: f64,
}

impl AnchorSums {
    fn triplets(&self) -> u64 {
        self.positives * self.negatives
    }

    fn loss_sum(&self) -> f64 {
        self.negatives as f64 * self.pos_sum + self.positives as f64 * self.neg_sum
    }

    fn divisor(&self) -> u64 {
        self.negatives * self.pos_active + self.positives * self.neg_active
    }

    /// Triplets whose two hinges are both 0.
    fn zero_triplets(&self) -> u64 {
        (self.positives - self.pos_active) * (self.negatives - self.neg_active)
    }
}

/// The triplets of every anchor as the cross product of its positives and negatives.
enum Cross<'a> {
    /// Positives and negatives by label.
    Labels(&'a [i64]),
    /// Listed positive and negative pairs per anchor (duplicates kept).
    Lists {
        pos: Vec<Vec<u32>>,
        neg: Vec<Vec<u32>>,
    },
}

impl Cross<'_> {
    /// Calls `f(j, is_positive)` for every positive and negative of `a`.
    fn visit(&self, a: usize, mut f: impl FnMut(usize, bool)) {
        match self {
            Cross::Labels(labels) => {
                for (j, &l) in labels.iter().enumerate() {
                    if l != labels[a] {
                        f(j, false);
                    } else if j != a {
                        f(j, true);
                    }
                }
            }
            Cross::Lists { pos, neg } => {
                pos[a].iter().for_each(|&j| f(j as usize, true));
                neg[a].iter().for_each(|&j| f(j as usize, false));
            }
        }
    }
}

impl MarginLoss {
    /// A margin loss with a fixed `beta`; `margin >= 0` and `beta` finite.
    pub fn new(distance: Distance, margin: f64, beta: f64) -> Result<Self> {
        crate::error::non_negative("MarginLoss", "margin", margin)?;
        crate::error::finite("MarginLoss", "beta", beta)?;
        Ok(Self {
            distance,
            margin,
            beta,
            nu: 0.0,
            learned: None,
        })
    }

    /// Learns beta (starting from the configured value), globally or per class (PML
    /// `learn_beta=True`, `num_classes`).
    pub fn with_learned_beta(mut self, learned: LearnedBeta) -> Result<Self> {
        if learned == (LearnedBeta::PerClass { num_classes: 0 }) {
            return Err(Error::InvalidParameter {
                owner: "MarginLoss",
                param: "num_classes",
                value: 0.0,
                reason: "must be at least 1",
            });
        }
        self.learned = Some(learned);
        Ok(self)
    }

    /// Weight `nu >= 0` of the regulariser on a learned beta (PML `nu`; no effect with a
    /// fixed beta, as in PML).
    pub fn with_nu(mut self, nu: f64) -> Result<Self> {
        self.nu = crate::error::non_negative("MarginLoss", "nu", nu)?;
        Ok(self)
    }

    /// The beta of every anchor: the fixed value, the learned global one, or its class's.
    fn anchor_betas<T: Real>(&self, input: &KernelInput<'_, T>) -> Result<Vec<T>> {
        let n = input.labels.len();
        let Some(learned) = self.learned else {
            return Ok(vec![T::of(self.beta); n]);
        };
        let rows = match learned {
            LearnedBeta::Global => 1,
            LearnedBeta::PerClass { num_classes } => num_classes,
        };
        let params = input
            .params
            .filter(|p| (p.rows(), p.cols()) == (rows, 1))
            .ok_or_else(|| Error::ParameterShape {
                loss: "MarginLoss",
                expected: format!("{rows} x 1 (learned beta)"),
                found: input
                    .params
                    .map_or("none".into(), |p| format!("{} x {}", p.rows(), p.cols())),
            })?;
        let beta = params.data();
        input
            .labels
            .iter()
            .enumerate()
            .map(|(row, &label)| match learned {
                LearnedBeta::Global => Ok(beta[0]),
                LearnedBeta::PerClass { num_classes } => usize::try_from(label)
                    .ok()
                    .filter(|&c| c < num_classes)
                    .map(|c| beta[c])
                    .ok_or(Error::LabelOutOfRange {
                        label,
                        row,
                        num_classes,
                    }),
            })
            .collect()
    }

    /// `(pos or neg hinge, d hinge / d score, d hinge / d beta)` of one pair.
    #[inline]
    fn hinge<T: Real>(&self, s: T, beta: T, positive: bool) -> (T, T, T) {
        let slope = self.distance.margin_slope::<T>();
        let v = if positive {
            self.distance.margin(s, beta)
        } else {
            self.distance.margin(beta, s)
        } + T::of(self.margin);
        if v <= T::zero() {
            return (T::zero(), T::zero(), T::zero());
        }
        if positive {
            (v, slope, -slope)
        } else {
            (v, -slope, slope)
        }
    }

    /// Index of the learned beta an anchor uses (0 for a global beta).
    fn beta_slot(&self, label: i64) -> usize {
        match self.learned {
            Some(LearnedBeta::PerClass { .. }) => label as usize,
            _ => 0,
        }
    }

    /// Every triplet of a cross structure, streamed per anchor.
    fn crossed<T: Real>(
        &self,
        scores: &Scores<T>,
        cross: &Cross<'_>,
        betas: &[T],
        input: &KernelInput<'_, T>,
        grad: &mut [T],
    ) -> Evaluation<T> {
        let n = scores.rows();
        let sums: Vec<AnchorSums> = (0..n)
            .into_par_iter()
            .map(|a| {
                let mut acc = AnchorSums::default();
                cross.visit(a, |j, positive| {
                    let l = self.hinge(scores.get(a, j), betas[a], positive).0;
                    let (count, active, sum) = if positive {
                        (&mut acc.positives, &mut acc.pos_active, &mut acc.pos_sum)
                    } else {
                        (&mut acc.negatives, &mut acc.neg_active, &mut acc.neg_sum)
                    };
                    *count += 1;
                    *active += (l > T::zero()) as u64;
                    *sum += l.f64();
                });
                acc
            })
            .collect();
        let total: u64 = sums.iter().map(AnchorSums::triplets).sum();
        let divisor: u64 = sums.iter().map(AnchorSums::divisor).sum();
        let zero: u64 = sums.iter().map(AnchorSums::zero_triplets).sum();
        let kept = match input.reducer {
            Reducer::AvgNonZero => total - zero,
            _ => total,
        };
        let scale = input.reducer.scale::<T>(kept, Some(T::of(divisor as f64)));
        let loss_sum: f64 = sums.iter().map(AnchorSums::loss_sum).sum();
        let mut beta_grad = vec![T::zero(); n];
        grad.par_chunks_mut(n)
            .zip(beta_grad.par_iter_mut())
            .enumerate()
            .for_each(|(a, (g, gb))| {
                let (p, ng) = (
                    T::of(sums[a].positives as f64),
                    T::of(sums[a].negatives as f64),
                );
                cross.visit(a, |j, positive| {
                    let (_, ds, db) = self.hinge(scores.get(a, j), betas[a], positive);
                    // A positive pair is in one triplet per negative of its anchor, and vice versa.
                    let copies = if positive { ng } else { p };
                    g[j] += scale * copies * ds;
                    *gb += scale * copies * db;
                });
            });
        // The per-class regulariser: one element nu * beta_a per triplet.
        let (mut reg_sum, mut reg_kept) = (0.0f64, 0u64);
        let nu = T::of(self.nu);
        for (a, s) in sums.iter().enumerate() {
            if input.reducer.keeps(nu * betas[a]) {
                reg_sum += s.triplets() as f64 * (nu * betas[a]).f64();
                reg_kept += s.triplets();
            }
        }
        let reg_scale = input
            .reducer
            .scale::<T>(reg_kept, Some(T::of(divisor as f64)));
        let reg_grad: Vec<T> = (0..n)
            .map(|a| {
                let kept = input.reducer.keeps(nu * betas[a]);
                if kept {
                    reg_scale * nu * T::of(sums[a].triplets() as f64)
                } else {
                    T::zero()
                }
            })
            .collect();
        Evaluation {
            loss: T::of(loss_sum * scale.f64()),
            per_class_reg: T::of(reg_sum * reg_scale.f64()),
            beta_grad,
            reg_grad,
            stats: LossStats {
                active: total - zero,
                total,
            },
            losses: Vec::new(),
            reg_losses: Vec::new(),
        }
    }

    /// Listed triplets, each evaluated (duplicates count per copy).
    fn listed<T: Real>(
        &self,
        scores: &Scores<T>,
        t: &TripletIndices,
        betas: &[T],
        reducer: Reducer,
        grad: &mut [T],
    ) -> Evaluation<T> {
        let n = scores.rows();
        let eval = |(a, p, ng): (usize, usize, usize)| {
            let pos = self.hinge(scores.get(a, p), betas[a], true);
            let neg = self.hinge(scores.get(a, ng), betas[a], false);
            (pos, neg)
        };
        let mut divisor = 0u64;
        let losses: Vec<T> = t
            .iter()
            .map(|k| {
                let (pos, neg) = eval(k);
                divisor += (pos.0 > T::zero()) as u64 + (neg.0 > T::zero()) as u64;
                pos.0 + neg.0
            })
            .collect();
        let divisor = Some(T::of(divisor as f64));
        let red = reducer.reduce(&losses, divisor);
        let nu = T::of(self.nu);
        let reg_losses: Vec<T> = t.iter().map(|(a, _, _)| nu * betas[a]).collect();
        let reg = reducer.reduce(&reg_losses, divisor);
        let mut beta_grad = vec![T::zero(); n];
        let mut reg_grad = vec![T::zero(); n];
        for (k, (l, r)) in t.iter().zip(losses.iter().zip(&reg_losses)) {
            let (a, p, ng) = k;
            let w = reducer.weight(&red, *l);
            let (pos, neg) = eval(k);
            grad[a * n + p] += w * pos.1;
            grad[a * n + ng] += w * neg.1;
            beta_grad[a] += w * (pos.2 + neg.2);
            reg_grad[a] += reducer.weight(&reg, *r) * nu;
        }
        let active = losses.iter().filter(|&&l| l > T::zero()).count() as u64;
        Evaluation {
            loss: red.value,
            per_class_reg: reg.value,
            beta_grad,
            reg_grad,
            stats: LossStats {
                active,
                total: losses.len() as u64,
            },
            losses,
            reg_losses,
        }
    }
}

/// What one evaluation found, before the learned-beta bookkeeping.
struct Evaluation<T> {
    loss: T,
    /// The reduced per-class regulariser (used only with a per-class learned beta).
    per_class_reg: T,
    /// `d margin_loss / d beta_a` per anchor.
    beta_grad: Vec<T>,
    /// `d per-class regulariser / d beta_a` per anchor.
    reg_grad: Vec<T>,
    stats: LossStats,
    /// Per-triplet losses (listed triplets only).
    losses: Vec<T>,
    reg_losses: Vec<T>,
}

impl LossKernel for MarginLoss {
    fn name(&self) -> &'static str {
        "MarginLoss"
    }

    fn pml_default_reducer(&self) -> Reducer {
        Reducer::Divisor
    }

    fn supplies_divisor(&self) -> bool {
        true
    }

    fn param_shape(&self, _dim: usize) -> Option<(usize, usize)> {
        self.learned.map(|l| match l {
            LearnedBeta::Global => (1, 1),
            LearnedBeta::PerClass { num_classes } => (num_classes, 1),
        })
    }

    fn param_init(&self, _dim: usize) -> ParamInit {
        ParamInit::Constant(self.beta)
    }

    fn compute<T: Real>(&self, input: &KernelInput<'_, T>) -> Result<KernelOutput<T>> {
        let x = input.embeddings;
        let (n, d) = (x.rows(), x.cols());
        let labels = input.labels;
        let betas = self.anchor_betas(input)?;
        let needs_list = input.want_terms || matches!(input.reducer, Reducer::Threshold(_));
        let listed: Option<std::borrow::Cow<'_, TripletIndices>> = match input.selection {
            Selection::Tuples(Tuples::Triplets(t)) => Some(std::borrow::Cow::Borrowed(t)),
            Selection::Tuples(Tuples::Pairs(p)) if needs_list => {
                Some(std::borrow::Cow::Owned(p.to_triplets(input.tuple_budget)?))
            }
            Selection::All if needs_list => Some(std::borrow::Cow::Owned(TripletIndices::all(
                labels,
                input.tuple_budget,
            )?)),
            Selection::Fused(m) => {
                return Err(Error::Case(format!(
                    "MarginLoss cannot fuse {}; mine its tuples first",
                    m.name()
                )));
            }
            _ => None,
        };
        let scores = self.distance.scores(x, None);
        let mut grad_s = vec![T::zero(); n * n];
        let eval = match (&listed, input.selection) {
            (Some(t), _) => self.listed(&scores, t, &betas, input.reducer, &mut grad_s),
            (None, Selection::Tuples(Tuples::Pairs(p))) => {
                let (mut pos, mut neg) = (vec![Vec::new(); n], vec![Vec::new(); n]);
                p.pos_pairs().for_each(|(a, j)| pos[a].push(j as u32));
                p.neg_pairs().for_each(|(a, j)| neg[a].push(j as u32));
                self.crossed(
                    &scores,
                    &Cross::Lists { pos, neg },
                    &betas,
                    input,
                    &mut grad_s,
                )
            }
            _ => self.crossed(&scores, &Cross::Labels(labels), &betas, input, &mut grad_s),
        };
        if eval.stats.total == 0 {
            return Ok(KernelOutput::zero(n, d, input.params));
        }
        let nu = T::of(self.nu);
        let (reg, param_grad) = match (self.learned, input.params) {
            (Some(learned), Some(p)) => {
                let mut pg = vec![T::zero(); p.rows()];
                for (a, &label) in labels.iter().enumerate() {
                    pg[self.beta_slot(label)] += eval.beta_grad[a];
                }
                let reg = match learned {
                    LearnedBeta::Global => {
                        pg[0] += nu;
                        nu * p.data()[0]
                    }
                    LearnedBeta::PerClass { .. } => {
                        for (a, &label) in labels.iter().enumerate() {
                            pg[self.beta_slot(label)] += eval.reg_grad[a];
                        }
                        eval.per_class_reg
                    }
                };
                (reg, Some(pg))
            }
            _ => (T::zero(), None),
        };
        let terms = match &listed {
            Some(t) if input.want_terms => {
                let mut terms = vec![LossTerm {
                    name: "margin_loss",
                    losses: eval.losses,
                    indices: TermIndices::PerTriplet(t.clone().into_owned()),
                }];
                if let Some(learned) = self.learned {
                    terms.push(match learned {
                        LearnedBeta::Global => LossTerm {
                            name: "beta_reg_loss",
                            losses: vec![reg],
                            indices: TermIndices::Reduced,
                        },
                        LearnedBeta::PerClass { .. } => LossTerm {
                            name: "beta_reg_loss",
                            losses: eval.reg_losses,
                            indices: TermIndices::PerElement(t.anchor.clone()),
                        },
                    });
                }
                terms
            }
            _ => Vec::new(),
        };
        let grads = scores.backward(&mut grad_s);
        Ok(KernelOutput {
            loss: eval.loss + reg,
            grad: grads.x,
            param_grad,
            terms,
            stats: eval.stats,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::MatrixRef;
    use crate::tuples::PairIndices;

    fn dist(x: &[f64], d: usize, i: usize, j: usize) -> f64 {
        let unit = |k: usize| {
            let r = &x[k * d..(k + 1) * d];
            let norm = r.iter().map(|v| v * v).sum::<f64>().sqrt();
            r.iter().map(move |v| v / norm)
        };
        unit(i)
            .zip(unit(j))
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>()
            .sqrt()
    }

    /// PML's MarginLoss (margin 0.2, D = 4) with DivisorReducer, plain loops over the given
    /// triplets; `beta` has one entry (global) or one per class; `nu` is given when beta is
    /// learned.
    fn oracle(x: &[f64], labels: &[i64], t: &TripletIndices, beta: &[f64], nu: Option<f64>) -> f64 {
        let (d, margin) = (4, 0.2);
        let b = |a: usize| {
            if beta.len() == 1 {
                beta[0]
            } else {
                beta[labels[a] as usize]
            }
        };
        let (mut sum, mut divisor, mut reg_sum) = (0.0, 0usize, 0.0);
        for (a, p, n) in t.iter() {
            let pos = (dist(x, d, a, p) - b(a) + margin).max(0.0);
            let neg = (b(a) - dist(x, d, a, n) + margin).max(0.0);
            divisor += (pos > 0.0) as usize + (neg > 0.0) as usize;
            sum += pos + neg;
            reg_sum += nu.unwrap_or(0.0) * b(a);
        }
        let div = |v: f64| {
            if divisor == 0 {
                0.0
            } else {
                v / divisor as f64
            }
        };
        let regulariser = match (nu, beta.len()) {
            (None, _) => 0.0,
            (Some(nu), 1) => nu * beta[0],
            (Some(_), _) => div(reg_sum),
        };
        div(sum) + regulariser
    }

    fn data() -> (Vec<f64>, Vec<i64>) {
        let x: Vec<f64> = (0..32)
            .map(|k| ((k * 7919) % 29) as f64 / 9.0 - 1.5)
            .collect();
        (x, vec![0, 1, 0, 2, 1, 0, 2, 1])
    }

    fn input<'a>(
        x: &'a [f64],
        labels: &'a [i64],
        selection: Selection<'a>,
        params: Option<&'a [f64]>,
        reducer: Reducer,
    ) -> KernelInput<'a, f64> {
        KernelInput {
            embeddings: MatrixRef::new(x, labels.len(), 4).unwrap(),
            labels,
            selection,
            params: params.map(|p| MatrixRef::new(p, p.len(), 1).unwrap()),
            reducer,
            want_terms: false,
            tuple_budget: 1 << 20,
        }
    }

    #[test]
    fn all_triplets_match_the_oracle_without_listing_them() {
        let (x, labels) = data();
        let all = TripletIndices::all(&labels, 1 << 20).unwrap();
        // beta 1.0 with margin 0.2 puts both hinges of this batch on both sides of zero.
        let loss = MarginLoss::new(Distance::PML_LP_DEFAULT, 0.2, 1.0).unwrap();
        let out = loss
            .compute(&input(&x, &labels, Selection::All, None, Reducer::Divisor))
            .unwrap();
        let want = oracle(&x, &labels, &all, &[1.0], None);
        assert!(
            want > 0.0 && (out.loss - want).abs() < 1e-12,
            "{} vs {want}",
            out.loss
        );
        assert!(out.param_grad.is_none());
        let h = 1e-6;
        for k in 0..x.len() {
            let (mut up, mut down) = (x.clone(), x.clone());
            up[k] += h;
            down[k] -= h;
            let fd = (oracle(&up, &labels, &all, &[1.0], None)
                - oracle(&down, &labels, &all, &[1.0], None))
                / (2.0 * h);
            assert!(
                (fd - out.grad[k]).abs() < 1e-6,
                "entry {k}: {fd} vs {}",
                out.grad[k]
            );
        }
    }

    #[test]
    fn learned_betas_get_the_oracle_gradient() {
        let (x, labels) = data();
        let all = TripletIndices::all(&labels, 1 << 20).unwrap();
        for (beta, learned) in [
            (vec![1.0], LearnedBeta::Global),
            (
                vec![0.9, 1.1, 1.0],
                LearnedBeta::PerClass { num_classes: 3 },
            ),
        ] {
            let loss = MarginLoss::new(Distance::PML_LP_DEFAULT, 0.2, 1.0)
                .unwrap()
                .with_nu(0.1)
                .unwrap()
                .with_learned_beta(learned)
                .unwrap();
            let out = loss
                .compute(&input(
                    &x,
                    &labels,
                    Selection::All,
                    Some(&beta),
                    Reducer::Divisor,
                ))
                .unwrap();
            let want = oracle(&x, &labels, &all, &beta, Some(0.1));
            assert!(
                (out.loss - want).abs() < 1e-12,
                "{learned:?}: {} vs {want}",
                out.loss
            );
            let pg = out.param_grad.unwrap();
            let h = 1e-6;
            for c in 0..beta.len() {
                let (mut up, mut down) = (beta.clone(), beta.clone());
                up[c] += h;
                down[c] -= h;
                let fd = (oracle(&x, &labels, &all, &up, Some(0.1))
                    - oracle(&x, &labels, &all, &down, Some(0.1)))
                    / (2.0 * h);
                assert!(
                    (fd - pg[c]).abs() < 1e-6,
                    "{learned:?} beta {c}: {fd} vs {}",
                    pg[c]
                );
            }
        }
    }

    #[test]
    fn streamed_listed_and_crossed_pairs_agree_for_every_reducer() {
        let (x, labels) = data();
        let pairs = PairIndices {
            anchor_pos: vec![0, 0, 2, 4, 0],
            positive: vec![2, 5, 0, 1, 2],
            anchor_neg: vec![0, 0, 2, 4, 4],
            negative: vec![1, 3, 7, 0, 6],
        };
        let crossed = Tuples::Pairs(pairs.clone());
        let listed = Tuples::Triplets(pairs.to_triplets(1 << 20).unwrap());
        let all = Tuples::Triplets(TripletIndices::all(&labels, 1 << 20).unwrap());
        let loss = MarginLoss::new(Distance::PML_LP_DEFAULT, 0.2, 1.0).unwrap();
        for reducer in [
            Reducer::Divisor,
            Reducer::Mean,
            Reducer::AvgNonZero,
            Reducer::Sum,
        ] {
            for (streamed, as_list) in [
                (Selection::All, Selection::Tuples(&all)),
                (Selection::Tuples(&crossed), Selection::Tuples(&listed)),
            ] {
                let a = loss
                    .compute(&input(&x, &labels, streamed, None, reducer))
                    .unwrap();
                let b = loss
                    .compute(&input(&x, &labels, as_list, None, reducer))
                    .unwrap();
                assert!(
                    (a.loss - b.loss).abs() < 1e-12,
                    "{reducer:?}: {} vs {}",
                    a.loss,
                    b.loss
                );
                assert!(
                    a.grad
                        .iter()
                        .zip(&b.grad)
                        .all(|(u, v)| (u - v).abs() < 1e-12),
                    "{reducer:?}"
                );
                assert_eq!(a.stats, b.stats, "{reducer:?}");
            }
        }
    }

    /// The pairing the loss is made for: `MetricLoss` mines with a distance-weighted miner and
    /// the loss equals the oracle on exactly the mined triplets, step after step.
    #[test]
    fn with_a_distance_weighted_miner_it_is_the_oracle_on_the_mined_triplets() {
        use crate::metric_loss::{Batch, MetricLoss};
        use crate::miner::{DistanceWeightedMiner, Miner};
        let x: Vec<f64> = (0..96)
            .map(|k| ((k * 7919) % 37) as f64 / 12.0 - 1.5)
            .collect();
        let labels: Vec<i64> = (0..24).map(|i| i / 3).collect();
        let miner = DistanceWeightedMiner::new(0.5, 1.4, 7).unwrap();
        let kernel = MarginLoss::new(Distance::PML_LP_DEFAULT, 0.2, 1.2).unwrap();
        let loss = MetricLoss::new(kernel, Reducer::Divisor)
            .unwrap()
            .with_miner(miner);
        let m = MatrixRef::new(&x, 24, 4).unwrap();
        for step in 0..3 {
            let mined = match Miner::from(miner).mine(m, &labels, step).unwrap() {
                Tuples::Triplets(t) => t,
                Tuples::Pairs(_) => panic!("the miner gives triplets"),
            };
            assert!(!mined.is_empty());
            let out = loss
                .compute(Batch::new(m, &labels).with_step(step))
                .unwrap();
            assert_eq!(out.mined, Some(mined.len() as u64));
            let want = oracle(&x, &labels, &mined, &[1.2], None);
            assert!(
                (out.loss - want).abs() < 1e-12,
                "step {step}: {} vs {want}",
                out.loss
            );
        }
    }

    #[test]
    fn no_triplets_is_zero_and_bad_parameters_are_rejected() {
        let (x, _) = data();
        let loss = MarginLoss::new(Distance::PML_LP_DEFAULT, 0.2, 1.2)
            .unwrap()
            .with_nu(0.5)
            .unwrap()
            .with_learned_beta(LearnedBeta::Global)
            .unwrap();
        let same = [3i64; 8];
        let out = loss
            .compute(&input(
                &x,
                &same,
                Selection::All,
                Some(&[1.2]),
                Reducer::Divisor,
            ))
            .unwrap();
        assert_eq!(out.loss, 0.0);
        assert!(out.param_grad.unwrap().iter().all(|&g| g == 0.0));
        assert!(matches!(
            loss.compute(&input(&x, &same, Selection::All, None, Reducer::Divisor)),
            Err(Error::ParameterShape { .. })
        ));
        let per_class = loss
            .with_learned_beta(LearnedBeta::PerClass { num_classes: 2 })
            .unwrap();
        assert!(matches!(
            per_class.compute(&input(
                &x,
                &data().1,
                Selection::All,
                Some(&[1.0, 1.0]),
                Reducer::Divisor
            )),
            Err(Error::LabelOutOfRange {
                label: 2,
                row: 3,
                ..
            })
        ));
        assert!(MarginLoss::new(Distance::PML_LP_DEFAULT, -0.1, 1.2).is_err());
        assert!(MarginLoss::new(Distance::PML_LP_DEFAULT, 0.2, f64::NAN).is_err());
        assert!(loss.with_nu(-1.0).is_err());
        assert!(
            loss.with_learned_beta(LearnedBeta::PerClass { num_classes: 0 })
                .is_err()
        );
    }
}
