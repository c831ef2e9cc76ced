//! NT-Xent loss (Chen et al. 2020, SimCLR; Sohn 2016), PML's form.

use dml_core::Real;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::pair_mask::LabelMask;
use super::pair_set::{PairSet, generic_pair_quirk, pair_sets, selected_pairs};
use super::{KernelInput, KernelOutput, LossKernel, LossStats, LossTerm, TermIndices};
use crate::distance::{Distance, Scores};
use crate::error::Result;
use crate::numeric::sigmoid;
use crate::reducer::Reducer;
use crate::scratch::Scratch;

/// NT-Xent (normalised temperature-scaled cross-entropy): each positive pair against its
/// anchor's negatives.
///
/// ```text
/// z_ij = -farness(s_ij) / temperature        (s / t for similarities, -d / t for distances)
/// l(a, p) = -log( e^z_ap / (e^z_ap + sum_{n in negatives of a} e^z_an) + tiny )
/// L = reduce(l over the positive pairs)
/// ```
///
/// The anchor's other positives are **not** in the denominator (that is SupCon, see
/// [`super::SupConLoss`]); `tiny` is the smallest normal float (PML's `small_val`), which caps
/// a pair's loss at about 708 (f64) or 87 (f32). PML note 19.
///
/// PML builds a dense (positive pairs x negative pairs) matrix, O(n^3) memory. Here each
/// anchor's negatives are summarised once (a running log-sum-exp), so every positive pair costs
/// O(1) and the gradient of every negative is one per-anchor coefficient times `e^z_an`:
/// O(n^2) time and memory in all, parallel over anchors.
///
/// # Shapes
/// embeddings `[n, d]`, labels `[n]`; pairs are all ordered positive / negative pairs or the
/// listed ones (duplicates count once per copy; a triplet `(a, p, n)` gives `(a, p)` and
/// `(a, n)`).
///
/// # Degenerate batches
/// No positive or no negative pair: 0. Exactly one of each: 0 (PML note 6). A positive pair
/// whose anchor has no negative has loss 0.
///
/// PML defaults (`NTXentLoss()`): `temperature = 0.07`, distance `Cosine`, reducer `Mean`.
/// Reference: PML `losses/ntxent_loss.py`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NTXentLoss {
    distance: Distance,
    temperature: f64,
}

impl NTXentLoss {
    /// An NT-Xent loss; `temperature > 0`.
    pub fn new(distance: Distance, temperature: f64) -> Result<Self> {
        crate::error::positive("NTXentLoss", "temperature", temperature)?;
        Ok(Self {
            distance,
            temperature,
        })
    }

    /// The distance pairs are scored with.
    pub fn distance(&self) -> Distance {
        self.distance
    }
}

/// The logits `z` of one anchor's negatives: `max` and `sum e^(z - max)` (duplicates counted).
#[derive(Debug, Clone, Copy)]
struct Negatives<T> {
    max: T,
    sum: T,
}

impl<T: Real> Negatives<T> {
    fn of(z: impl Iterator<Item = T> + Clone) -> Self {
        let max = z.clone().fold(T::neg_infinity(), T::max);
        if max == T::neg_infinity() {
            return Self {
                max,
                sum: T::zero(),
            };
        }
        Self {
            max,
            sum: z.map(|v| (v - max).exp()).sum(),
        }
    }
}

/// One positive pair with logit `z` against its anchor's negatives: `(loss, d loss / d z,
/// c)` where `d loss / d z_an = c * e^(z_an - negatives.max)`.
#[inline]
fn pair_loss<T: Real>(z: T, negs: Negatives<T>) -> (T, T, T) {
    let m = z.max(negs.max);
    let a = (z - m).exp();
    let b = if negs.sum == T::zero() {
        T::zero()
    } else {
        negs.sum * (negs.max - m).exp()
    };
    let d = a + b;
    // log q with q = a / d; when z is the largest logit a = 1 and log d = log1p(b).
    let log_q = if z >= negs.max {
        -b.ln_1p()
    } else {
        (z - m) - d.ln()
    };
    // -log(q + tiny) = -logaddexp(log q, log tiny); r = q / (q + tiny).
    let gap = log_q - T::min_positive_value().ln();
    let (loss, r) = if gap > T::of(40.0) {
        (-log_q, T::one())
    } else {
        (-(log_q - gap + gap.exp().ln_1p()), sigmoid(gap))
    };
    (loss, -r * b / d, r * (negs.max - m).exp() / d)
}

/// Running sums of one reduction pass.
#[derive(Debug, Clone, Copy, Default)]
struct Acc {
    sum: f64,
    kept: u64,
    active: u64,
}

impl Acc {
    fn add<T: Real>(mut self, reducer: Reducer, l: T) -> Self {
        if reducer.keeps(l) {
            self.sum += l.f64();
            self.kept += 1;
        }
        self.active += (l != T::zero()) as u64;
        self
    }

    fn merge(self, o: Self) -> Self {
        Self {
            sum: self.sum + o.sum,
            kept: self.kept + o.kept,
            active: self.active + o.active,
        }
    }
}

impl NTXentLoss {
    /// All ordered pairs by label, one pass per anchor row. Writes the gradient **unscaled**
    /// (every kept pair has the same reducer weight) and returns `(value, active, scale)`:
    /// the caller multiplies the embedding gradient by `scale`, which is cheaper than scaling
    /// the `n x n` buffer (the backward pass is linear).
    fn all_pairs<T: Real>(
        &self,
        scores: &Scores<T>,
        labels: &[i64],
        reducer: Reducer,
        grad: &mut [T],
    ) -> (T, u64, T) {
        let n = scores.rows();
        let z = self.logit::<T>();
        let dz = self.dz::<T>();
        let mask = LabelMask::all_pairs(labels, self.distance);
        let acc = grad
            .par_chunks_mut(n)
            .enumerate()
            .map_init(Vec::new, |positives, (a, g)| {
                let row = scores.row(a);
                // The negatives' exponentials are kept in the row: they are the gradient up to
                // one per-anchor factor. Other entries are 0.
                let r = mask.exp_negatives(a, row, z, T::neg_infinity(), g);
                let negs = Negatives {
                    max: r.shift,
                    sum: r.sum,
                };
                let mut acc = Acc::default();
                let mut coef = T::zero();
                positives.clear();
                for &p in mask.classmates(a).iter().filter(|&&p| p != a) {
                    let (l, dl, c) = pair_loss(z(row[p]), negs);
                    acc = acc.add(reducer, l);
                    if reducer.keeps(l) {
                        positives.push((p, dl * dz));
                        coef += c;
                    }
                }
                let coef = coef * dz;
                g.iter_mut().for_each(|gj| *gj *= coef);
                for &(p, v) in positives.iter() {
                    g[p] = v;
                }
                acc
            })
            // Collected in anchor order and merged sequentially: a parallel `reduce` would
            // add the float sums in an order that depends on thread scheduling.
            .collect::<Vec<Acc>>()
            .into_iter()
            .fold(Acc::default(), Acc::merge);
        let scale = reducer.scale::<T>(acc.kept, None);
        (T::of(acc.sum * scale.f64()), acc.active, scale)
    }

    /// Listed pairs: each positive pair against the negative pairs listed for its anchor.
    /// Returns `(value, active, per-pair losses)`.
    fn listed<T: Real>(
        &self,
        scores: &Scores<T>,
        pos: (&[u32], &[u32]),
        neg: (&[u32], &[u32]),
        reducer: Reducer,
        grad: &mut [T],
    ) -> (T, u64, Vec<T>) {
        let n = scores.rows();
        let z = self.logit::<T>();
        let mut by_anchor: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (&a, &j) in neg.0.iter().zip(neg.1) {
            by_anchor[a as usize].push(j);
        }
        let negatives: Vec<Negatives<T>> = by_anchor
            .iter()
            .enumerate()
            .map(|(a, js)| Negatives::of(js.iter().map(|&j| z(scores.get(a, j as usize)))))
            .collect();
        let pairs = || {
            pos.0
                .iter()
                .zip(pos.1)
                .map(|(&a, &p)| (a as usize, p as usize))
        };
        let losses: Vec<T> = pairs()
            .map(|(a, p)| pair_loss(z(scores.get(a, p)), negatives[a]).0)
            .collect();
        let red = reducer.reduce(&losses, None);
        let dz = self.dz::<T>();
        let mut coef = vec![T::zero(); n];
        for (a, p) in pairs() {
            let (l, dl, c) = pair_loss(z(scores.get(a, p)), negatives[a]);
            let w = reducer.weight(&red, l);
            grad[a * n + p] += w * dl * dz;
            coef[a] += w * c;
        }
        for (&a, &j) in neg.0.iter().zip(neg.1) {
            let (a, j) = (a as usize, j as usize);
            grad[a * n + j] += coef[a] * (z(scores.get(a, j)) - negatives[a].max).exp() * dz;
        }
        let active = losses.iter().filter(|&&l| l != T::zero()).count() as u64;
        (red.value, active, losses)
    }

    /// Score to logit: `-farness(s) / temperature`, written as `(±1 * s) / temperature`
    /// (the same bits) so that it vectorises without a branch on the distance.
    fn logit<T: Real>(&self) -> impl Fn(T) -> T + Sync + Copy {
        let t = T::of(self.temperature);
        let sign = -self.distance.farness(T::one());
        move |s| (sign * s) / t
    }

    /// `d logit / d score`.
    fn dz<T: Real>(&self) -> T {
        -self.distance.margin_slope::<T>() / T::of(self.temperature)
    }
}

impl LossKernel for NTXentLoss {
    fn name(&self) -> &'static str {
        "NTXentLoss"
    }

    fn pml_default_reducer(&self) -> Reducer {
        Reducer::Mean
    }

    fn compute<T: Real>(&self, input: &KernelInput<'_, T>) -> Result<KernelOutput<T>> {
        let x = input.embeddings;
        let (n, d) = (x.rows(), x.cols());
        let tuples = selected_pairs(&input.selection, self.name())?;
        let (pos, neg) = pair_sets(input.labels, tuples.as_deref());
        let total = pos.len();
        if generic_pair_quirk(&pos, &neg) || total == 0 || neg.len() == 0 {
            return Ok(KernelOutput::zero(n, d, input.params));
        }
        let scores = self.distance.scores(x, None);
        let mut grad_s = Scratch::zeroed(n * n);
        let (loss, active, losses, grad_scale) = match (pos, neg) {
            (
                PairSet::Listed { anchor, other },
                PairSet::Listed {
                    anchor: an,
                    other: ng,
                },
            ) => {
                let (loss, active, losses) = self.listed(
                    &scores,
                    (anchor, other),
                    (an, ng),
                    input.reducer,
                    &mut grad_s,
                );
                (loss, active, losses, T::one())
            }
            _ => {
                let (loss, active, scale) =
                    self.all_pairs(&scores, input.labels, input.reducer, &mut grad_s);
                (loss, active, Vec::new(), scale)
            }
        };
        let terms = if input.want_terms {
            let (anchor, positive) = pos.to_lists();
            let losses = if losses.is_empty() {
                let z = self.logit::<T>();
                anchor
                    .iter()
                    .zip(&positive)
                    .map(|(&a, &p)| {
                        let (a, p) = (a as usize, p as usize);
                        let row = scores.row(a);
                        let negs = Negatives::of(
                            (0..n)
                                .filter(|&j| input.labels[j] != input.labels[a])
                                .map(|j| z(row[j])),
                        );
                        pair_loss(z(row[p]), negs).0
                    })
                    .collect()
            } else {
                losses
            };
            vec![LossTerm {
                name: "loss",
                losses,
                indices: TermIndices::PerPosPair { anchor, positive },
            }]
        } else {
            Vec::new()
        };
        let mut grad = scores.backward(&mut grad_s).x;
        if grad_scale != T::one() {
            grad.iter_mut().for_each(|g| *g *= grad_scale);
        }
        Ok(KernelOutput {
            loss,
            grad,
            param_grad: None,
            terms,
            stats: LossStats { active, total },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::Selection;
    use crate::matrix::MatrixRef;
    use crate::tuples::{PairIndices, Tuples};

    fn cos(x: &[f64], d: usize, i: usize, j: usize) -> f64 {
        let (a, b) = (&x[i * d..(i + 1) * d], &x[j * d..(j + 1) * d]);
        let dot: f64 = a.iter().zip(b).map(|(u, v)| u * v).sum();
        let na = a.iter().map(|u| u * u).sum::<f64>().sqrt();
        let nb = b.iter().map(|u| u * u).sum::<f64>().sqrt();
        dot / (na * nb)
    }

    /// PML's formula with plain loops over every positive pair and every negative of its
    /// anchor (cosine, mean reducer).
    fn oracle(x: &[f64], labels: &[i64], d: usize, t: f64) -> f64 {
        let n = labels.len();
        let (mut total, mut count) = (0.0, 0);
        for a in 0..n {
            for p in (0..n).filter(|&p| p != a && labels[p] == labels[a]) {
                let num = (cos(x, d, a, p) / t).exp();
                let den: f64 = num
                    + (0..n)
                        .filter(|&j| labels[j] != labels[a])
                        .map(|j| (cos(x, d, a, j) / t).exp())
                        .sum::<f64>();
                total += -(num / den + f64::MIN_POSITIVE).ln();
                count += 1;
            }
        }
        total / count as f64
    }

    fn data() -> (Vec<f64>, Vec<i64>) {
        let x: Vec<f64> = (0..28)
            .map(|k| ((k * 7919) % 29) as f64 / 9.0 - 1.5)
            .collect();
        (x, vec![0, 1, 0, 2, 1, 0, 2])
    }

    fn input<'a>(
        x: &'a [f64],
        labels: &'a [i64],
        selection: Selection<'a>,
    ) -> KernelInput<'a, f64> {
        KernelInput {
            embeddings: MatrixRef::new(x, labels.len(), 4).unwrap(),
            labels,
            selection,
            params: None,
            reducer: Reducer::Mean,
            want_terms: true,
            tuple_budget: 1 << 20,
        }
    }

    #[test]
    fn matches_the_dense_formula_and_finite_differences() {
        let (x, labels) = data();
        let loss = NTXentLoss::new(Distance::Cosine, 0.3).unwrap();
        let out = loss.compute(&input(&x, &labels, Selection::All)).unwrap();
        let want = oracle(&x, &labels, 4, 0.3);
        assert!((out.loss - want).abs() < 1e-12, "{} vs {want}", out.loss);
        let mean: f64 = out.terms[0].losses.iter().sum::<f64>() / out.terms[0].losses.len() as f64;
        assert!((mean - want).abs() < 1e-12);
        let h = 1e-6;
        for k in 0..x.len() {
            let (mut up, mut down) = (x.clone(), x.clone());
            up[k] += h;
            down[k] -= h;
            let fd = (oracle(&up, &labels, 4, 0.3) - oracle(&down, &labels, 4, 0.3)) / (2.0 * h);
            assert!(
                (fd - out.grad[k]).abs() < 1e-6,
                "entry {k}: {fd} vs {}",
                out.grad[k]
            );
        }
    }

    #[test]
    fn listed_pairs_equal_all_pairs_when_they_are_all_pairs() {
        let (x, labels) = data();
        let loss = NTXentLoss::new(Distance::PML_LP_DEFAULT, 0.5).unwrap();
        let all = loss.compute(&input(&x, &labels, Selection::All)).unwrap();
        let t = Tuples::Pairs(PairIndices::all(&labels));
        let listed = loss
            .compute(&input(&x, &labels, Selection::Tuples(&t)))
            .unwrap();
        assert!((all.loss - listed.loss).abs() < 1e-12);
        assert!(
            all.grad
                .iter()
                .zip(&listed.grad)
                .all(|(a, b)| (a - b).abs() < 1e-12)
        );
        assert_eq!(all.terms, listed.terms);
    }

    #[test]
    fn extreme_pairs_are_capped_not_infinite() {
        // Every positive is opposite its anchor and a negative coincides with it: with a tiny
        // temperature q underflows and each pair's loss is -log(tiny).
        let x = [1.0f32, 0.0, -1.0, 0.0, 1.0, 0.0, -1.0, 0.0];
        let loss = NTXentLoss::new(Distance::Cosine, 1e-3).unwrap();
        let inp = KernelInput {
            embeddings: MatrixRef::new(&x, 4, 2).unwrap(),
            labels: &[0, 0, 1, 1],
            selection: Selection::All,
            params: None,
            reducer: Reducer::Mean,
            want_terms: false,
            tuple_budget: 1 << 20,
        };
        let out = loss.compute(&inp).unwrap();
        assert!(
            (out.loss + f32::MIN_POSITIVE.ln()).abs() < 1e-3,
            "{}",
            out.loss
        );
        assert!(out.grad.iter().all(|g| g.is_finite()));
    }
}
