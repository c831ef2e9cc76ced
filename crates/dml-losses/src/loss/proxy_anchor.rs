//! Proxy-anchor loss (Kim et al. 2020), PML's form.

use dml_core::Real;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::proxies::proxy_batch;
use super::{KernelInput, KernelOutput, LossKernel, LossStats, LossTerm, ParamInit, TermIndices};
use crate::distance::Distance;
use crate::error::{Error, Result};
use crate::numeric::LogSumExp;
use crate::reducer::Reducer;

/// Proxy-anchor loss: every class proxy is an anchor pulling its samples and pushing the rest.
///
/// ```text
/// v_ic = alpha * margin(s_ic, margin) + (w_i - 1)        margin(x, y) = y - x (similarities)
/// u_ic = alpha * margin(-margin, s_ic) + (w_i - 1)                    = x - y (distances)
/// pos_c = log(1 + sum_{i: y_i = c} exp(v_ic))     0 for a class absent from the batch
/// neg_c = log(1 + sum_{i: y_i != c} exp(u_ic))
/// L = reduce(pos, divisor = #classes in the batch) + reduce(neg, divisor = num_classes)
/// ```
///
/// With cosine this is `log(1 + sum exp(-alpha (s - margin)))` and
/// `log(1 + sum exp(alpha (s + margin)))` (PML note 21). `s_ic` scores sample `i` against
/// proxy `c`; `w_i` is 1 without a miner, else PML's miner weight (appearances in the tuples
/// divided by the largest count), added inside the exponent minus 1, so un-mined samples are
/// scaled by e^-1, not dropped.
///
/// # Shapes
/// embeddings `[n, d]`, labels `[n]` in `0..num_classes`, proxies (the kernel's learnable
/// parameters) `[num_classes, d]`; their gradient is returned in `param_grad`. O(n * C * d).
///
/// # Degenerate batches
/// Always defined: classes without samples have `pos_c = 0`.
///
/// PML defaults (`ProxyAnchorLoss(num_classes, embedding_size)`): `margin = 0.1`,
/// `alpha = 32`, distance `Cosine`, reducer `Divisor`; proxies start as
/// `kaiming_normal_(mode="fan_out")`, i.e. N(0, 2 / num_classes).
/// Reference: PML `losses/proxy_anchor_loss.py`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProxyAnchorLoss {
    distance: Distance,
    num_classes: usize,
    margin: f64,
    alpha: f64,
}

impl ProxyAnchorLoss {
    /// A proxy-anchor loss over `num_classes >= 1` proxies; `margin >= 0`, `alpha > 0`.
    pub fn new(distance: Distance, num_classes: usize, margin: f64, alpha: f64) -> Result<Self> {
        if num_classes == 0 {
            return Err(Error::InvalidParameter {
                owner: "ProxyAnchorLoss",
                param: "num_classes",
                value: 0.0,
                reason: "must be at least 1",
            });
        }
        crate::error::non_negative("ProxyAnchorLoss", "margin", margin)?;
        crate::error::positive("ProxyAnchorLoss", "alpha", alpha)?;
        Ok(Self {
            distance,
            num_classes,
            margin,
            alpha,
        })
    }

    /// Number of proxies (classes).
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }
}

impl LossKernel for ProxyAnchorLoss {
    fn name(&self) -> &'static str {
        "ProxyAnchorLoss"
    }

    fn pml_default_reducer(&self) -> Reducer {
        Reducer::Divisor
    }

    fn param_shape(&self, dim: usize) -> Option<(usize, usize)> {
        Some((self.num_classes, dim))
    }

    fn param_init(&self, _dim: usize) -> ParamInit {
        ParamInit::Normal {
            std: (2.0 / self.num_classes as f64).sqrt(),
        }
    }

    fn supplies_divisor(&self) -> bool {
        true
    }

    fn compute<T: Real>(&self, input: &KernelInput<'_, T>) -> Result<KernelOutput<T>> {
        let x = input.embeddings;
        let n = x.rows();
        let c = self.num_classes;
        let batch = proxy_batch(input, self.name(), c)?;
        let labels = input.labels;
        let dist = self.distance;
        let (alpha, margin) = (T::of(self.alpha), T::of(self.margin));
        let shift = |i: usize| batch.weight(i) - T::one();
        // Rows are classes: each class's two log-sum-exps read one contiguous row.
        let scores = dist.scores(batch.proxies, Some(x));
        let pos_exp = move |s: T| alpha * dist.margin(s, margin);
        let neg_exp = move |s: T| alpha * dist.margin(-margin, s);
        let terms: Vec<(T, T)> = (0..c)
            .into_par_iter()
            .map(|k| {
                let (mut pos, mut neg) = (LogSumExp::default(), LogSumExp::default());
                for (i, &s) in scores.row(k).iter().enumerate() {
                    if labels[i] as usize == k {
                        pos.add(pos_exp(s) + shift(i));
                    } else {
                        neg.add(neg_exp(s) + shift(i));
                    }
                }
                (pos.value_plus_one(), neg.value_plus_one())
            })
            .collect();
        let (pos, neg): (Vec<T>, Vec<T>) = terms.into_iter().unzip();
        let mut present = vec![false; c];
        labels.iter().for_each(|&l| present[l as usize] = true);
        let with_pos = present.iter().filter(|&&p| p).count();
        let reducer = input.reducer;
        let rp = reducer.reduce(&pos, Some(T::of(with_pos as f64)));
        let rn = reducer.reduce(&neg, Some(T::of(c as f64)));
        // d log(1 + sum e^v) / d v_i = e^(v_i - value); d v / d s = alpha * slope.
        let slope = alpha * dist.margin_slope::<T>();
        let mut grad_s = vec![T::zero(); c * n];
        grad_s.par_chunks_mut(n).enumerate().for_each(|(k, g)| {
            let (wp, wn) = (reducer.weight(&rp, pos[k]), reducer.weight(&rn, neg[k]));
            for (i, (gi, &s)) in g.iter_mut().zip(scores.row(k)).enumerate() {
                *gi = if labels[i] as usize == k {
                    wp * slope * (pos_exp(s) + shift(i) - pos[k]).exp()
                } else {
                    -wn * slope * (neg_exp(s) + shift(i) - neg[k]).exp()
                };
            }
        });
        let grads = scores.backward(&mut grad_s);
        let active = pos.iter().chain(&neg).filter(|&&l| l != T::zero()).count() as u64;
        let terms = if input.want_terms {
            let classes: Vec<u32> = (0..c as u32).collect();
            vec![
                LossTerm {
                    name: "pos_loss",
                    losses: pos,
                    indices: TermIndices::PerElement(classes.clone()),
                },
                LossTerm {
                    name: "neg_loss",
                    losses: neg,
                    indices: TermIndices::PerElement(classes),
                },
            ]
        } else {
            Vec::new()
        };
        Ok(KernelOutput {
            loss: rp.value + rn.value,
            grad: grads.y.unwrap_or_default(),
            param_grad: Some(grads.x),
            terms,
            stats: LossStats {
                active,
                total: 2 * c as u64,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::Selection;
    use crate::matrix::MatrixRef;
    use crate::tuples::{TripletIndices, Tuples};

    fn unit(v: &[f64]) -> Vec<f64> {
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        v.iter().map(|a| a / norm).collect()
    }

    /// The formula with plain loops, cosine, Divisor reducer, optional miner weights.
    fn oracle(x: &[f64], labels: &[i64], p: &[f64], d: usize, m: f64, a: f64, w: &[f64]) -> f64 {
        let c = p.len() / d;
        let cos = |i: usize, k: usize| {
            let (xi, pk) = (unit(&x[i * d..(i + 1) * d]), unit(&p[k * d..(k + 1) * d]));
            xi.iter().zip(&pk).map(|(u, v)| u * v).sum::<f64>()
        };
        let (mut pos, mut neg, mut present) = (0.0, 0.0, 0);
        for k in 0..c {
            let (mut sp, mut sn, mut any) = (0.0, 0.0, false);
            for i in 0..labels.len() {
                if labels[i] as usize == k {
                    any = true;
                    sp += (-a * (cos(i, k) - m) + w[i] - 1.0).exp();
                } else {
                    sn += (a * (cos(i, k) + m) + w[i] - 1.0).exp();
                }
            }
            present += any as usize;
            pos += if any { sp.ln_1p() } else { 0.0 };
            neg += sn.ln_1p();
        }
        pos / present as f64 + neg / c as f64
    }

    fn data() -> (Vec<f64>, Vec<i64>, Vec<f64>) {
        let x: Vec<f64> = (0..24)
            .map(|k| ((k * 7919) % 29) as f64 / 9.0 - 1.5)
            .collect();
        let p: Vec<f64> = (0..16)
            .map(|k| ((k * 104_729) % 31) as f64 / 11.0 - 1.3)
            .collect();
        (x, vec![0, 1, 0, 2, 1, 0], p)
    }

    fn run(
        loss: &ProxyAnchorLoss,
        x: &[f64],
        labels: &[i64],
        p: &[f64],
        sel: Selection<'_>,
    ) -> KernelOutput<f64> {
        loss.compute(&KernelInput {
            embeddings: MatrixRef::new(x, 6, 4).unwrap(),
            labels,
            selection: sel,
            params: Some(MatrixRef::new(p, 4, 4).unwrap()),
            reducer: Reducer::Divisor,
            want_terms: false,
            tuple_budget: 1 << 20,
        })
        .unwrap()
    }

    #[test]
    fn matches_the_formula_with_and_without_miner_weights() {
        let (x, labels, p) = data();
        let loss = ProxyAnchorLoss::new(Distance::Cosine, 4, 0.1, 8.0).unwrap();
        let got = run(&loss, &x, &labels, &p, Selection::All).loss;
        let want = oracle(&x, &labels, &p, 4, 0.1, 8.0, &[1.0; 6]);
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        let t = Tuples::Triplets(TripletIndices {
            anchor: vec![0, 0],
            positive: vec![2, 2],
            negative: vec![1, 3],
        });
        let got = run(&loss, &x, &labels, &p, Selection::Tuples(&t)).loss;
        let want = oracle(
            &x,
            &labels,
            &p,
            4,
            0.1,
            8.0,
            &[1.0, 0.5, 1.0, 0.5, 0.0, 0.0],
        );
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }

    #[test]
    fn proxy_gradient_matches_finite_differences() {
        let (x, labels, p) = data();
        let loss = ProxyAnchorLoss::new(Distance::Cosine, 4, 0.1, 8.0).unwrap();
        let out = run(&loss, &x, &labels, &p, Selection::All);
        let pg = out.param_grad.unwrap();
        let h = 1e-6;
        for k in [0, 5, 13] {
            let (mut up, mut down) = (p.clone(), p.clone());
            up[k] += h;
            down[k] -= h;
            let fd = (oracle(&x, &labels, &up, 4, 0.1, 8.0, &[1.0; 6])
                - oracle(&x, &labels, &down, 4, 0.1, 8.0, &[1.0; 6]))
                / (2.0 * h);
            assert!(
                (fd - pg[k]).abs() < 1e-6,
                "proxy entry {k}: {fd} vs {}",
                pg[k]
            );
        }
    }

    #[test]
    fn rejects_labels_without_a_proxy_and_bad_parameters() {
        let (x, _, p) = data();
        let loss = ProxyAnchorLoss::new(Distance::Cosine, 4, 0.1, 8.0).unwrap();
        let input = KernelInput {
            embeddings: MatrixRef::new(&x, 6, 4).unwrap(),
            labels: &[0, 1, 4, 0, 1, 2],
            selection: Selection::All,
            params: Some(MatrixRef::new(&p, 4, 4).unwrap()),
            reducer: Reducer::Divisor,
            want_terms: false,
            tuple_budget: 1 << 20,
        };
        assert!(matches!(
            loss.compute(&input),
            Err(Error::LabelOutOfRange {
                label: 4,
                row: 2,
                ..
            })
        ));
        assert!(matches!(
            loss.compute(&KernelInput {
                params: None,
                ..input
            }),
            Err(Error::ParameterShape { .. })
        ));
        assert!(ProxyAnchorLoss::new(Distance::Cosine, 0, 0.1, 8.0).is_err());
        assert!(ProxyAnchorLoss::new(Distance::Cosine, 3, -0.1, 8.0).is_err());
        assert!(ProxyAnchorLoss::new(Distance::Cosine, 3, 0.1, 0.0).is_err());
    }
}
