//! Angular loss (Wang et al. 2017), PML's form.

use dml_core::Real;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::pair_set::{pair_sets, selected_pairs};
use super::{KernelInput, KernelOutput, LossKernel, LossStats, LossTerm, TermIndices};
use crate::distance::{Distance, UnitRows};
use crate::error::{Error, Result};
use crate::matrix::MatrixRef;
use crate::numeric::LogSumExp;
use crate::reducer::Reducer;

/// Angular loss over positive pairs, with every other-label sample as a negative.
///
/// ```text
/// t = tan^2(alpha),  alpha in degrees
/// f(a, p, n) = 4 t (x^_a + x^_p) . x_n - 2 (1 + t) x^_a . x^_p      x^ = x / ||x||
/// L(a, p) = log(1 + sum_{n: y_n != y_a} exp f(a, p, n))
/// L = reduce(L(a, p) over the ordered positive pairs)
/// ```
///
/// As in PML (note 14), anchors and positives are L2-normalised but **negatives are the raw
/// embeddings**, so results differ from the paper unless inputs are unit-norm. The negatives are
/// every other-label sample of the batch; a miner's negatives are ignored except that there
/// must be at least one negative pair. O(pairs * n) time, two `n x n` buffers.
///
/// # Degenerate batches
/// No positive pair, or no negative pair: 0.
///
/// PML defaults (`AngularLoss()`): `alpha = 40` degrees, reducer `Mean`; the distance must be
/// `Lp { power: One, normalize: true }` (PML asserts it; it only affects normalisation here).
/// Reference: PML `losses/angular_loss.py`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AngularLoss {
    alpha_degrees: f64,
}

impl AngularLoss {
    /// An angular loss with angle `alpha_degrees` in (0, 90).
    pub fn new(alpha_degrees: f64) -> Result<Self> {
        if !(alpha_degrees > 0.0 && alpha_degrees < 90.0) {
            return Err(Error::InvalidParameter {
                owner: "AngularLoss",
                param: "alpha",
                value: alpha_degrees,
                reason: "must be an angle in degrees strictly between 0 and 90",
            });
        }
        Ok(Self { alpha_degrees })
    }

    /// `tan^2(alpha)`.
    fn sq_tan<T: Real>(&self) -> T {
        T::of(self.alpha_degrees.to_radians().tan().powi(2))
    }
}

impl LossKernel for AngularLoss {
    fn name(&self) -> &'static str {
        "AngularLoss"
    }

    fn pml_default_reducer(&self) -> Reducer {
        Reducer::Mean
    }

    fn compute<T: Real>(&self, input: &KernelInput<'_, T>) -> Result<KernelOutput<T>> {
        let x = input.embeddings;
        let labels = input.labels;
        let (n, d) = (x.rows(), x.cols());
        let tuples = selected_pairs(&input.selection, self.name())?;
        let (pos, neg) = pair_sets(labels, tuples.as_deref());
        if pos.len() == 0 || neg.len() == 0 {
            return Ok(KernelOutput::zero(n, d, input.params));
        }
        let (anchor, positive) = pos.to_lists();
        let t = self.sq_tan::<T>();
        let (four_t, two_1t) = (T::of(4.0) * t, T::of(2.0) * (T::one() + t));
        let unit = UnitRows::new(x, true);
        // mixed[i][n] = x^_i . x_n
        let mixed = Distance::DotProduct { normalize: false }
            .scores(MatrixRef::new(unit.points(), n, d)?, Some(x));
        let xh = |i: usize| &unit.points()[i * d..(i + 1) * d];
        let cos = |a: usize, p: usize| -> T { xh(a).iter().zip(xh(p)).map(|(&u, &v)| u * v).sum() };
        // The exponents of pair k, for every negative of its anchor.
        let exponents = |a: usize, p: usize, each: &mut dyn FnMut(usize, T)| {
            let c = two_1t * cos(a, p);
            let (ra, rp) = (mixed.row(a), mixed.row(p));
            for j in 0..n {
                if labels[j] != labels[a] {
                    each(j, four_t * (ra[j] + rp[j]) - c);
                }
            }
        };
        let mut grad_mixed = vec![T::zero(); n * n];
        let mut grad_unit = vec![T::zero(); n * d];
        let (losses, value) = if tuples.is_none() {
            // All pairs: (a, p) and (p, a) have the same exponents, so each row computes its
            // own pairs once and takes both roles' gradient, in one pass with one exp per
            // (pair, negative); kept pairs share the reducer's weight, applied at the end.
            let members = class_members(labels);
            let rows: Vec<(Vec<T>, f64, u64)> = grad_mixed
                .par_chunks_mut(n)
                .zip(grad_unit.par_chunks_mut(d))
                .enumerate()
                .map(|(r, (gm, gu))| {
                    let negatives: Vec<usize> =
                        (0..n).filter(|&j| labels[j] != labels[r]).collect();
                    let mut e = vec![T::zero(); negatives.len()];
                    let (mut out, mut sum, mut kept) = (Vec::new(), 0.0f64, 0u64);
                    let two = T::of(2.0);
                    for &q in members[&labels[r]].iter().filter(|&&q| q != r) {
                        let c = two_1t * cos(r, q);
                        let (rr, rq) = (mixed.row(r), mixed.row(q));
                        let mut max = T::zero();
                        for (ek, &j) in e.iter_mut().zip(&negatives) {
                            *ek = four_t * (rr[j] + rq[j]) - c;
                            max = max.max(*ek);
                        }
                        let mut total = (-max).exp();
                        for ek in e.iter_mut() {
                            *ek = (*ek - max).exp();
                            total += *ek;
                        }
                        let l = max + total.ln();
                        out.push(l);
                        if !input.reducer.keeps(l) {
                            continue;
                        }
                        kept += 1;
                        sum += l.f64();
                        let mut mass = T::zero();
                        for (&ek, &j) in e.iter().zip(&negatives) {
                            let sigma = ek / total;
                            mass += sigma;
                            gm[j] += two * four_t * sigma;
                        }
                        let coef = -two * two_1t * mass;
                        for (g, &v) in gu.iter_mut().zip(xh(q)) {
                            *g += coef * v;
                        }
                    }
                    (out, sum, kept)
                })
                .collect();
            let kept: u64 = rows.iter().map(|r| r.2).sum();
            let scale = input.reducer.scale::<T>(kept, None);
            grad_mixed.par_iter_mut().for_each(|v| *v *= scale);
            grad_unit.iter_mut().for_each(|v| *v *= scale);
            let value = T::of(rows.iter().map(|r| r.1).sum::<f64>() * scale.f64());
            (
                rows.into_iter().flat_map(|r| r.0).collect::<Vec<T>>(),
                value,
            )
        } else {
            let losses: Vec<T> = anchor
                .par_iter()
                .zip(positive.par_iter())
                .map(|(&a, &p)| {
                    let mut lse = LogSumExp::default();
                    exponents(a as usize, p as usize, &mut |_, v| lse.add(v));
                    lse.value_plus_one()
                })
                .collect();
            let red = input.reducer.reduce(&losses, None);
            // Row r of d(mixed) collects every pair in which r is the anchor or the positive,
            // so rows are independent and run in parallel.
            let mut touching: Vec<Vec<usize>> = vec![Vec::new(); n];
            for (k, (&a, &p)) in anchor.iter().zip(&positive).enumerate() {
                touching[a as usize].push(k);
                if p != a {
                    touching[p as usize].push(k);
                }
            }
            grad_mixed
                .par_chunks_mut(n)
                .zip(grad_unit.par_chunks_mut(d))
                .enumerate()
                .for_each(|(r, (gm, gu))| {
                    for &k in &touching[r] {
                        let (a, p) = (anchor[k] as usize, positive[k] as usize);
                        let w = input.reducer.weight(&red, losses[k]);
                        if w == T::zero() {
                            continue;
                        }
                        // A pair (a, a) puts both of its roles on row a.
                        let roles = if a == p { T::of(2.0) } else { T::one() };
                        let mut mass = T::zero();
                        exponents(a, p, &mut |j, v| {
                            let sigma = (v - losses[k]).exp();
                            mass += sigma;
                            gm[j] += roles * w * four_t * sigma;
                        });
                        // d/dx^_r of -2(1+t) x^_a . x^_p: the other member of the pair.
                        let other = if r == a { p } else { a };
                        let coef = -roles * w * two_1t * mass;
                        for (g, &v) in gu.iter_mut().zip(xh(other)) {
                            *g += coef * v;
                        }
                    }
                });
            (losses, red.value)
        };
        let grads = mixed.backward(&mut grad_mixed);
        for (g, v) in grad_unit.iter_mut().zip(&grads.x) {
            *g += *v;
        }
        unit.backward(&mut grad_unit, d);
        let mut grad = grads.y.unwrap_or_else(|| vec![T::zero(); n * d]);
        grad.iter_mut().zip(&grad_unit).for_each(|(g, &u)| *g += u);
        let active = losses.iter().filter(|&&l| l != T::zero()).count() as u64;
        let terms = if input.want_terms {
            vec![LossTerm {
                name: "loss",
                losses,
                indices: TermIndices::PerPosPair { anchor, positive },
            }]
        } else {
            Vec::new()
        };
        Ok(KernelOutput {
            loss: value,
            grad,
            param_grad: None,
            terms,
            stats: LossStats {
                active,
                total: pos.len(),
            },
        })
    }
}

/// The rows of each label, in index order.
fn class_members(labels: &[i64]) -> std::collections::HashMap<i64, Vec<usize>> {
    let mut members: std::collections::HashMap<i64, Vec<usize>> = std::collections::HashMap::new();
    for (i, &l) in labels.iter().enumerate() {
        members.entry(l).or_default().push(i);
    }
    members
}
