//! Angular loss (Wang et al. 2017), PML's form.

use dml_core::Real;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::pair_set::{pair_sets, selected_pairs};
use super::{KernelInput, KernelOutput, LossKernel, LossStats, LossTerm, TermIndices};
use dml_core::linalg::{Transpose, matmul, matmul_serial};

use crate::distance::{Distance, Scores, UnitRows};
use crate::error::{Error, Result};
use crate::matrix::MatrixRef;
use crate::numeric::{dot, exp_in_place, log_one_plus_exp, max, sigmoid, sum};
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
/// must be at least one negative pair.
///
/// All pairs take O(n^2 (d + class size)) time, one exponential per (row, column), and
/// O(n d) memory: the `n x n` matrices are produced, used and multiplied back a panel of
/// classes at a time. Listed pairs take O(pairs * n) time and two `n x n` buffers.
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
        let t = self.sq_tan::<T>();
        let coefs = Coefs {
            four_t: T::of(4.0) * t,
            two_1t: T::of(2.0) * (T::one() + t),
        };
        let unit = UnitRows::new(x, true);
        let mut out = match tuples.as_deref() {
            None => ClassOrder::new(unit.points(), x.data(), labels, d, coefs)
                .all_pairs(input.reducer, PANEL_BYTES),
            Some(_) => {
                let (anchor, positive) = pos.to_lists();
                listed_pairs(
                    x,
                    unit.points(),
                    labels,
                    coefs,
                    (&anchor, &positive),
                    input.reducer,
                )?
            }
        };
        unit.backward(&mut out.grad_unit, d);
        // Every backward map is linear, so the reducer's common weight is applied here, to
        // `n x d` numbers.
        let grad = out
            .grad_raw
            .iter()
            .zip(&out.grad_unit)
            .map(|(&g, &u)| (g + u) * out.scale)
            .collect();
        let active = out.losses.iter().filter(|&&l| l != T::zero()).count() as u64;
        let terms = if input.want_terms {
            let (anchor, positive) = pos.to_lists();
            vec![LossTerm {
                name: "loss",
                losses: out.losses,
                indices: TermIndices::PerPosPair { anchor, positive },
            }]
        } else {
            Vec::new()
        };
        Ok(KernelOutput {
            loss: out.value,
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

/// The constants of every exponent `4 t (x^_a + x^_p) . x_n - 2 (1 + t) x^_a . x^_p`.
#[derive(Debug, Clone, Copy)]
struct Coefs<T> {
    /// `4 tan^2(alpha)`.
    four_t: T,
    /// `2 (1 + tan^2(alpha))`.
    two_1t: T,
}

/// The losses of the positive pairs and the gradient of the kept ones, before the
/// normalisation's backward pass and without the reducer's common weight.
struct PairsOutput<T> {
    /// Per ordered positive pair, in `PairSet::to_lists` order.
    losses: Vec<T>,
    /// The reduced loss.
    value: T,
    /// The reducer's weight of every kept pair.
    scale: T,
    /// `dL / d x^` (row-major `n x d`, input order).
    grad_unit: Vec<T>,
    /// `dL / d x` through the negatives (row-major `n x d`, input order).
    grad_raw: Vec<T>,
}

/// The loss of one positive pair and what its gradient needs.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PairLoss<T> {
    loss: T,
    /// `sum_n sigma_n`, the negatives' softmax mass (`sigma_n = d loss / d f_n`).
    mass: T,
    /// `sigma_n = weight * E_a[n] E_p[n]` in the factored form; `None` when the pair was
    /// computed from its own exponents.
    weight: Option<T>,
}

/// A pair's loss from its exponents `f_n` in `exps` (`-inf` for columns that are not
/// negatives): `log(1 + sum_n e^f_n)`. Leaves `e^(f_n - shift)` in `exps` and returns the loss
/// and `total` (`sigma_n = exps[n] / total`).
fn loss_from_exponents<T: Real>(exps: &mut [T]) -> (PairLoss<T>, T) {
    // The "1" is e^0: the shift is at least 0.
    let shift = max(exps).max(T::zero());
    exps.iter_mut().for_each(|v| *v -= shift);
    exp_in_place(exps);
    let negatives = sum(exps);
    let total = (-shift).exp() + negatives;
    let pair = PairLoss {
        loss: shift + total.ln(),
        mass: negatives / total,
        weight: None,
    };
    (pair, total)
}

/// The batch regrouped by class for the all-pairs path: rows **and** columns permuted so that
/// every class is a contiguous range (classes in order of first appearance, rows ascending).
///
/// With `M = x^ x^T` (normalised rows against raw rows) and `E_i[n] = e^(4 t M_in - m_i)`
/// (`m_i` the row's largest exponent over its negatives, `E_i` 0 on its own class), pair
/// `(a, p)` sums `e^(m_a + m_p - 2 (1 + t) x^_a . x^_p) sum_n E_a[n] E_p[n]`: one exponential
/// per entry instead of one per (pair, negative), and `(a, p)` and `(p, a)` share it. Rows of
/// `M` are computed a panel of whole classes at a time (one GEMM), turned into `E` and then
/// into `dL/dM` in place, and multiplied back into the gradient (two GEMMs) before the next
/// panel: the `n x n` matrices never exist in full.
struct ClassOrder<T> {
    /// `x^` in class order.
    unit: Vec<T>,
    /// `x` in class order.
    raw: Vec<T>,
    /// Class `c` holds positions `bounds[c]..bounds[c + 1]`.
    bounds: Vec<usize>,
    /// The input row at each position.
    rows: Vec<usize>,
    /// The class and the position within it of every input row.
    slot: Vec<(usize, usize)>,
    d: usize,
    coefs: Coefs<T>,
}

/// Bytes of one panel of `M` rows: a GEMM this size runs at full speed and the panel stays
/// in the last-level cache between the GEMMs and the kernel.
const PANEL_BYTES: usize = 8 << 20;

/// Length of the column blocks of [`ClassOrder::class_pairs`] for a class of two (halved as
/// the class doubles): the copied block stays in the first-level cache.
const BLOCK_LEN: usize = 1024;

impl<T: Real> ClassOrder<T> {
    fn new(unit: &[T], raw: &[T], labels: &[i64], d: usize, coefs: Coefs<T>) -> Self {
        let mut index = std::collections::HashMap::new();
        let mut members: Vec<Vec<usize>> = Vec::new();
        for (i, &l) in labels.iter().enumerate() {
            let c = *index.entry(l).or_insert_with(|| {
                members.push(Vec::new());
                members.len() - 1
            });
            members[c].push(i);
        }
        let rows: Vec<usize> = members.concat();
        let mut bounds = vec![0];
        let mut slot = vec![(0, 0); labels.len()];
        for (c, m) in members.iter().enumerate() {
            for (a, &i) in m.iter().enumerate() {
                slot[i] = (c, a);
            }
            bounds.push(bounds[c] + m.len());
        }
        let gather = |v: &[T]| -> Vec<T> {
            rows.iter()
                .flat_map(|&i| &v[i * d..(i + 1) * d])
                .copied()
                .collect()
        };
        Self {
            unit: gather(unit),
            raw: gather(raw),
            bounds,
            rows,
            slot,
            d,
            coefs,
        }
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    fn unit_row(&self, i: usize) -> &[T] {
        &self.unit[i * self.d..(i + 1) * self.d]
    }

    /// Every positive pair by label, in panels of about `panel_bytes` of `M`.
    fn all_pairs(&self, reducer: Reducer, panel_bytes: usize) -> PairsOutput<T> {
        let (n, d) = (self.len(), self.d);
        let classes = self.bounds.len() - 1;
        let target = (panel_bytes / (n * std::mem::size_of::<T>())).max(1);
        // Panels of whole classes: `(first class, end class)`.
        let mut panels = Vec::new();
        let mut first = 0;
        for c in 0..classes {
            if self.bounds[c + 1] - self.bounds[first] > target && c > first {
                panels.push((first, c));
                first = c;
            }
        }
        panels.push((first, classes));
        let widest = panels
            .iter()
            .map(|&(a, b)| self.bounds[b] - self.bounds[a])
            .max()
            .unwrap_or(0);
        let mut panel = vec![T::zero(); widest * n];
        let mut grad_unit = vec![T::zero(); n * d];
        let mut grad_raw = vec![T::zero(); n * d];
        let mut class_losses: Vec<Vec<T>> = Vec::with_capacity(classes);
        for (c0, c1) in panels {
            let (start, end) = (self.bounds[c0], self.bounds[c1]);
            let rows = end - start;
            let g = &mut panel[..rows * n];
            let unit = &self.unit[start * d..end * d];
            matmul(
                unit,
                Transpose::No,
                &self.raw,
                Transpose::Yes,
                rows,
                n,
                d,
                g,
                T::zero(),
                T::one(),
            );
            let mut jobs = Vec::with_capacity(c1 - c0);
            let (mut rest_g, mut rest_u) = (&mut g[..], &mut grad_unit[start * d..end * d]);
            for c in c0..c1 {
                let k = self.bounds[c + 1] - self.bounds[c];
                let (gc, tail_g) = std::mem::take(&mut rest_g).split_at_mut(k * n);
                let (uc, tail_u) = std::mem::take(&mut rest_u).split_at_mut(k * d);
                (rest_g, rest_u) = (tail_g, tail_u);
                jobs.push((c, gc, uc));
            }
            class_losses.par_extend(
                jobs.into_par_iter()
                    .map_init(Vec::new, |scratch, (c, gc, uc)| {
                        self.class_pairs(c, gc, uc, reducer, scratch)
                    }),
            );
            // dL/dx^ += (dL/dM) x and dL/dx += (dL/dM)^T x^, in class order.
            let g = &panel[..rows * n];
            matmul(
                g,
                Transpose::No,
                &self.raw,
                Transpose::No,
                rows,
                d,
                n,
                &mut grad_unit[start * d..end * d],
                T::one(),
                T::one(),
            );
            matmul(
                g,
                Transpose::Yes,
                unit,
                Transpose::No,
                n,
                d,
                rows,
                &mut grad_raw,
                T::one(),
                T::one(),
            );
        }
        // Assembled row by row: the order of `PairSet::to_lists`, and a fixed order of
        // addition whatever the threads did.
        let (mut losses, mut total, mut kept) = (Vec::new(), 0.0f64, 0u64);
        for &(c, a) in &self.slot {
            let k = self.bounds[c + 1] - self.bounds[c];
            for b in (0..k).filter(|&b| b != a) {
                let l = class_losses[c][a * k + b];
                losses.push(l);
                if reducer.keeps(l) {
                    total += l.f64();
                    kept += 1;
                }
            }
        }
        let scale = reducer.scale::<T>(kept, None);
        let scatter = |v: &[T]| {
            let mut out = vec![T::zero(); n * d];
            for (p, &i) in self.rows.iter().enumerate() {
                out[i * d..(i + 1) * d].copy_from_slice(&v[p * d..(p + 1) * d]);
            }
            out
        };
        PairsOutput {
            losses,
            value: T::of(total * scale.f64()),
            scale,
            grad_unit: scatter(&grad_unit),
            grad_raw: scatter(&grad_raw),
        }
    }

    /// The pairs of class `c`, given its rows of `M` in `g` (`k x n`): returns their `k x k`
    /// symmetric loss matrix and leaves `dL/dM` of the kept pairs in `g` and their `dL/dx^`
    /// through `x^_a . x^_p` in `grad_unit` (`k x d`). Both orders of a pair have the same
    /// loss, so a kept pair counts twice.
    fn class_pairs(
        &self,
        c: usize,
        g: &mut [T],
        grad_unit: &mut [T],
        reducer: Reducer,
        scratch: &mut Vec<T>,
    ) -> Vec<T> {
        let (n, d) = (self.len(), self.d);
        let (lo, hi) = (self.bounds[c], self.bounds[c + 1]);
        let k = hi - lo;
        let Coefs { four_t, two_1t } = self.coefs;
        let mut losses = vec![T::zero(); k * k];
        if k < 2 {
            g.fill(T::zero());
            return losses;
        }
        // E_a over its row of M, and its shift m_a: 4 t > 0, so the largest exponent is 4 t
        // times the largest score (rounding is monotone).
        let shift: Vec<T> = g
            .chunks_mut(n)
            .map(|e| {
                let m = four_t * max(&e[..lo]).max(max(&e[hi..]));
                e.iter_mut().for_each(|v| *v = four_t * *v - m);
                exp_in_place(e);
                e[lo..hi].fill(T::zero());
                m
            })
            .collect();
        // Below this, products that underflowed (each under ~ T::MIN_POSITIVE) could add up
        // to more than the last bits of the sum: such pairs are computed directly.
        let exact_above = T::of(8.0 * n as f64) * T::min_positive_value() / T::epsilon();
        let two = T::of(2.0);
        let mut weight = vec![T::zero(); k * k];
        let mut direct = Vec::new();
        // Column blocks of the gradient pass: about 2 * BLOCK_LEN copied values in all.
        let block = (BLOCK_LEN * 2 / k).max(16);
        scratch.resize(n.max(k * block), T::zero());
        for a in 0..k {
            for b in a + 1..k {
                let offset = two_1t * dot(self.unit_row(lo + a), self.unit_row(lo + b));
                let s = dot(&g[a * n..(a + 1) * n], &g[b * n..(b + 1) * n]);
                let pair = if s >= exact_above {
                    let exponent = shift[a] + shift[b] - offset + s.ln();
                    let mass = sigmoid(exponent);
                    PairLoss {
                        loss: log_one_plus_exp(exponent),
                        mass,
                        weight: Some(mass / s),
                    }
                } else {
                    let exps = &mut scratch[..n];
                    self.exponents(lo + a, lo + b, offset, exps);
                    loss_from_exponents(exps).0
                };
                losses[a * k + b] = pair.loss;
                losses[b * k + a] = pair.loss;
                if !reducer.keeps(pair.loss) {
                    continue;
                }
                match pair.weight {
                    Some(w) => {
                        weight[a * k + b] = w;
                        weight[b * k + a] = w;
                    }
                    None => direct.push((a, b, offset)),
                }
                // d/dx^_a of -2 (1 + t) x^_a . x^_p, for both orders of the pair.
                let coef = -two * two_1t * pair.mass;
                for (u, v) in [(a, b), (b, a)] {
                    for (gu, &x) in grad_unit[u * d..(u + 1) * d]
                        .iter_mut()
                        .zip(self.unit_row(lo + v))
                    {
                        *gu += coef * x;
                    }
                }
            }
        }
        // dL/dM_an = 4 t sigma_n for each order: row a gets 8 t E_a[n] sum_b weight_ab E_b[n].
        // In column blocks, so that the class's E columns are copied out before their rows
        // are overwritten.
        let eight_t = two * four_t;
        let copy = &mut scratch[..k * block];
        for start in (0..n).step_by(block) {
            let len = block.min(n - start);
            for (a, e) in g.chunks(n).enumerate() {
                copy[a * block..a * block + len].copy_from_slice(&e[start..start + len]);
            }
            for (a, row) in g.chunks_mut(n).enumerate() {
                let out = &mut row[start..start + len];
                out.fill(T::zero());
                for (b, &w) in weight[a * k..(a + 1) * k].iter().enumerate() {
                    if w != T::zero() {
                        for (o, &e) in out.iter_mut().zip(&copy[b * block..b * block + len]) {
                            *o += w * e;
                        }
                    }
                }
                for (o, &e) in out.iter_mut().zip(&copy[a * block..a * block + len]) {
                    *o = eight_t * e * *o;
                }
            }
        }
        // Pairs computed directly: sigma_n = e^(f_n - shift) / total.
        for (a, b, offset) in direct {
            let exps = &mut scratch[..n];
            self.exponents(lo + a, lo + b, offset, exps);
            let total = loss_from_exponents(exps).1;
            let coef = eight_t / total;
            for r in [a, b] {
                for (o, &e) in g[r * n..(r + 1) * n].iter_mut().zip(exps.iter()) {
                    *o += coef * e;
                }
            }
        }
        losses
    }

    /// The exponents `f_n` of the pair at positions `(a, p)` of one class, recomputed from
    /// `x` (`-inf` on the class's own columns): for the rare pairs the factored form cannot
    /// represent.
    fn exponents(&self, a: usize, p: usize, offset: T, out: &mut [T]) {
        let n = self.len();
        let both: Vec<T> = self
            .unit_row(a)
            .iter()
            .zip(self.unit_row(p))
            .map(|(&u, &v)| u + v)
            .collect();
        matmul_serial(
            &both,
            Transpose::No,
            &self.raw,
            Transpose::Yes,
            1,
            n,
            self.d,
            out,
            T::zero(),
            self.coefs.four_t,
        );
        out.iter_mut().for_each(|v| *v -= offset);
        let c = self.slot[self.rows[a]].0;
        out[self.bounds[c]..self.bounds[c + 1]].fill(T::neg_infinity());
    }
}

/// Listed pairs, each from its own exponents over all other-label samples, with the full
/// `n x n` matrix `M = x^ x^T`: row `r` of `dL/dM` collects every pair in which `r` is the
/// anchor or the positive, so rows run in parallel.
fn listed_pairs<T: Real>(
    x: MatrixRef<'_, T>,
    unit: &[T],
    labels: &[i64],
    coefs: Coefs<T>,
    (anchor, positive): (&[u32], &[u32]),
    reducer: Reducer,
) -> Result<PairsOutput<T>> {
    let (n, d) = (x.rows(), x.cols());
    let Coefs { four_t, two_1t } = coefs;
    let mixed: Scores<T> =
        Distance::DotProduct { normalize: false }.scores(MatrixRef::new(unit, n, d)?, Some(x));
    let unit_row = |i: usize| &unit[i * d..(i + 1) * d];
    let offset = |a: usize, p: usize| two_1t * dot(unit_row(a), unit_row(p));
    // The exponents of pair (a, p), `-inf` off its negatives, less `shift`.
    let exponents = |a: usize, p: usize, shift: T, out: &mut [T]| {
        let base = offset(a, p) + shift;
        for (((o, &u), &v), &l) in out
            .iter_mut()
            .zip(mixed.row(a))
            .zip(mixed.row(p))
            .zip(labels)
        {
            *o = if l != labels[a] {
                four_t * (u + v) - base
            } else {
                T::neg_infinity()
            };
        }
    };
    let losses: Vec<T> = anchor
        .par_iter()
        .zip(positive.par_iter())
        .map_init(Vec::new, |exps, (&a, &p)| {
            exps.resize(n, T::zero());
            exponents(a as usize, p as usize, T::zero(), exps);
            loss_from_exponents(exps).0.loss
        })
        .collect();
    let red = reducer.reduce(&losses, None);
    let mut touching: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (k, (&a, &p)) in anchor.iter().zip(positive).enumerate() {
        touching[a as usize].push(k);
        if p != a {
            touching[p as usize].push(k);
        }
    }
    let mut grad_mixed = vec![T::zero(); n * n];
    let mut grad_unit = vec![T::zero(); n * d];
    grad_mixed
        .par_chunks_mut(n)
        .zip(grad_unit.par_chunks_mut(d))
        .enumerate()
        .for_each_init(Vec::new, |sigma, (r, (gm, gu))| {
            sigma.resize(n, T::zero());
            for &k in &touching[r] {
                let (a, p) = (anchor[k] as usize, positive[k] as usize);
                let w = reducer.weight(&red, losses[k]);
                if w == T::zero() {
                    continue;
                }
                // A pair (a, a) puts both of its roles on row a.
                let roles = if a == p { T::of(2.0) } else { T::one() };
                exponents(a, p, losses[k], sigma);
                exp_in_place(sigma);
                let coef = roles * w * four_t;
                for (g, &s) in gm.iter_mut().zip(sigma.iter()) {
                    *g += coef * s;
                }
                // d/dx^_r of -2 (1 + t) x^_a . x^_p: the other member of the pair.
                let other = if r == a { p } else { a };
                let coef = -roles * w * two_1t * sum(sigma);
                for (g, &v) in gu.iter_mut().zip(unit_row(other)) {
                    *g += coef * v;
                }
            }
        });
    let grads = mixed.backward(&mut grad_mixed);
    for (g, v) in grad_unit.iter_mut().zip(&grads.x) {
        *g += *v;
    }
    Ok(PairsOutput {
        losses,
        value: red.value,
        scale: T::one(),
        grad_unit,
        grad_raw: grads.y.unwrap_or_else(|| vec![T::zero(); n * d]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::Selection;
    use crate::loss::testing::{assert_same, bits_on_threads, input, points};
    use crate::reducer::ThresholdBounds;
    use crate::tuples::{PairIndices, Tuples};

    /// PML's formula with plain loops: `log(1 + sum_n e^f(a, p, n))` over the ordered
    /// positive pairs, averaged.
    fn oracle(x: &[f64], d: usize, labels: &[i64], alpha: f64) -> f64 {
        let t = alpha.to_radians().tan().powi(2);
        let unit = |i: usize| -> Vec<f64> {
            let r = &x[i * d..(i + 1) * d];
            let norm = r.iter().map(|v| v * v).sum::<f64>().sqrt();
            r.iter().map(|v| v / norm).collect()
        };
        let dot = |u: &[f64], v: &[f64]| -> f64 { u.iter().zip(v).map(|(a, b)| a * b).sum() };
        let (mut total, mut count) = (0.0, 0);
        for a in 0..labels.len() {
            for p in (0..labels.len()).filter(|&p| p != a && labels[p] == labels[a]) {
                let (ua, up) = (unit(a), unit(p));
                let sum: f64 = (0..labels.len())
                    .filter(|&j| labels[j] != labels[a])
                    .map(|j| {
                        let xn = &x[j * d..(j + 1) * d];
                        (4.0 * t * (dot(&ua, xn) + dot(&up, xn)) - 2.0 * (1.0 + t) * dot(&ua, &up))
                            .exp()
                    })
                    .sum();
                total += sum.ln_1p();
                count += 1;
            }
        }
        total / count as f64
    }

    #[test]
    fn all_pairs_match_the_formula() {
        let labels = [0, 1, 0, 2, 1, 0, 2, 1, 3, 0];
        let x: Vec<f64> = points(10, 3, 7).iter().map(|v| v * 3.0).collect();
        let loss = AngularLoss::new(40.0).unwrap();
        let got = loss
            .compute(&input(&x, 3, &labels, Selection::All, Reducer::Mean))
            .unwrap();
        let want = oracle(&x, 3, &labels, 40.0);
        assert!(
            (got.loss - want).abs() < 1e-12 * want,
            "{} vs {want}",
            got.loss
        );
    }

    /// The factored all-pairs path against the listed path (each pair from its own exponents),
    /// with small and large classes (the latter take several column blocks) and singletons.
    #[test]
    fn all_pairs_equal_the_same_pairs_listed() {
        let mut big = vec![0i64; 60];
        big.extend(std::iter::repeat_n(1, 30));
        big.extend([2, 3, 3]);
        let small = vec![0, 1, 0, 2, 1, 0, 2, 1, 3, 0, 4, 4, 1];
        for labels in [small, big] {
            let n = labels.len();
            let x: Vec<f64> = points(n, 4, 11).iter().map(|v| v * 2.0).collect();
            let listed = Tuples::Pairs(PairIndices::all(&labels));
            let loss = AngularLoss::new(35.0).unwrap();
            let low_high = ThresholdBounds::new(Some(2.0), Some(6.0)).unwrap();
            for reducer in [
                Reducer::Mean,
                Reducer::Sum,
                Reducer::AvgNonZero,
                Reducer::Threshold(low_high),
            ] {
                let mut all = input(&x, 4, &labels, Selection::All, reducer);
                all.want_terms = true;
                let mut pairs = input(&x, 4, &labels, Selection::Tuples(&listed), reducer);
                pairs.want_terms = true;
                let (got, want) = (loss.compute(&all).unwrap(), loss.compute(&pairs).unwrap());
                assert_same(&got, &want, &format!("n {n} {reducer:?}"));
                assert_eq!(got.stats.active, want.stats.active, "n {n} {reducer:?}");
                for (a, b) in got.terms[0].losses.iter().zip(&want.terms[0].losses) {
                    assert!((a - b).abs() < 1e-12 * (1.0 + b.abs()), "{a} vs {b}");
                }
                assert_eq!(got.terms[0].indices, want.terms[0].indices);
                assert_eq!(got.stats, want.stats);
            }
        }
    }

    /// Panels of one class each (several GEMMs, classes of several sizes) give the result of
    /// one panel for the whole batch.
    #[test]
    fn panels_of_classes_add_up_to_the_whole() {
        let labels = [0, 1, 0, 2, 1, 0, 2, 1, 3, 0, 4, 4, 1, 5, 5, 5, 5, 5, 5];
        let n = labels.len();
        let x: Vec<f64> = points(n, 3, 5).iter().map(|v| v * 2.0).collect();
        let coefs = Coefs {
            four_t: 2.0,
            two_1t: 3.0,
        };
        let unit = UnitRows::new(MatrixRef::new(&x, n, 3).unwrap(), true);
        let order = ClassOrder::new(unit.points(), &x, &labels, 3, coefs);
        let whole = order.all_pairs(Reducer::Mean, 1 << 20);
        let split = order.all_pairs(Reducer::Mean, 1);
        assert_eq!(whole.losses.len(), split.losses.len());
        for (a, b) in whole.losses.iter().zip(&split.losses) {
            assert!((a - b).abs() < 1e-12 * (1.0 + a.abs()), "{a} vs {b}");
        }
        assert!((whole.value - split.value).abs() < 1e-12 * whole.value);
        let pairs = whole.grad_unit.iter().zip(&split.grad_unit);
        for (a, b) in pairs.chain(whole.grad_raw.iter().zip(&split.grad_raw)) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
    }

    /// Two unit anchors whose negatives are far along different axes: in f32 the products of
    /// their exponential rows underflow to 0, so the pair must be summed directly.
    #[test]
    fn underflowing_products_fall_back_to_the_direct_sum() {
        let x64 = [1.0, 0.0, 0.0, 1.0, 40.0, 0.0, 0.0, 40.0];
        let x32 = x64.map(|v| v as f32);
        let labels = [0, 0, 1, 1];
        let loss = AngularLoss::new(40.0).unwrap();
        let four_t = 4.0 * 40f64.to_radians().tan().powi(2);
        // E_a = [1, e^(-160 t)] and E_b the reverse: the f32 products are 0.
        let e_far = ((-four_t * 40.0) as f32).exp();
        let s = 2.0 * e_far;
        assert!(s < 8.0 * 4.0 * f32::MIN_POSITIVE / f32::EPSILON, "{s}");
        let input32 = KernelInput {
            embeddings: MatrixRef::new(&x32, 4, 2).unwrap(),
            labels: &labels,
            selection: Selection::All,
            params: None,
            reducer: Reducer::Mean,
            want_terms: true,
            tuple_budget: 1 << 20,
        };
        let got = loss.compute(&input32).unwrap();
        let want = loss
            .compute(&input(&x64, 2, &labels, Selection::All, Reducer::Mean))
            .unwrap();
        // f64 takes the factored form here (its products do not underflow).
        let oracle = oracle(&x64, 2, &labels, 40.0);
        assert!((want.loss - oracle).abs() < 1e-12 * oracle);
        assert!(
            (got.loss as f64 - oracle).abs() < 1e-6 * oracle,
            "{} vs {oracle}",
            got.loss
        );
        let pair = (four_t * 40.0 + 2f64.ln()).max(0.0);
        assert!((got.terms[0].losses[0] as f64 - pair).abs() < 1e-5 * pair);
        let scale = want.grad.iter().fold(0.0f64, |m, g| m.max(g.abs()));
        for (g, w) in got.grad.iter().zip(&want.grad) {
            assert!((*g as f64 - w).abs() < 1e-5 * scale, "{g} vs {w}");
        }
    }

    /// Classes run in parallel and the GEMMs thread, but every sum has a fixed order.
    #[test]
    fn results_do_not_depend_on_the_threads() {
        let n = 240;
        let labels: Vec<i64> = (0..n as i64).map(|i| (i * 7) % 60).collect();
        let x: Vec<f32> = points(n, 8, 13).iter().map(|&v| v as f32).collect();
        let loss = AngularLoss::new(40.0).unwrap();
        let run = |threads: usize| bits_on_threads(&loss, &x, &labels, Selection::All, threads);
        let once = run(2);
        assert_eq!(run(2), once);
        assert_eq!(run(1), once);
        assert_eq!(run(3), once);
    }

    #[test]
    fn degenerate_batches_are_zero() {
        let x = points(4, 3, 1);
        let loss = AngularLoss::new(40.0).unwrap();
        for labels in [[0, 0, 0, 0], [0, 1, 2, 3]] {
            let out = loss
                .compute(&input(&x, 3, &labels, Selection::All, Reducer::Mean))
                .unwrap();
            assert_eq!(out.loss, 0.0);
            assert!(out.grad.iter().all(|&g| g == 0.0));
        }
    }
}
