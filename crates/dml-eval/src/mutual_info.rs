//! NMI and AMI of a clustering against class labels, computed exactly as scikit-learn does.
//!
//! ```text
//! MI   = sum_ij (n_ij / N) ln(N n_ij / (a_i b_j))          a, b: row and column sums
//! H(U) = -sum_i (a_i / N) ln(a_i / N)
//! NMI  = MI / mean(H(U), H(V))                             (arithmetic normalisation)
//! EMI  = sum_ij sum_{n=max(1, a_i+b_j-N)}^{min(a_i,b_j)} (n/N) ln(N n / (a_i b_j))
//!        * a_i! b_j! (N-a_i)! (N-b_j)! / (N! n! (a_i-n)! (b_j-n)! (N-a_i-b_j+n)!)
//! AMI  = (MI - EMI) / (mean(H(U), H(V)) - EMI)
//! ```
//! Special cases follow `sklearn.metrics` (1.x): both labellings with a single (or no) class
//! give 1; MI = 0 gives NMI 0; the AMI denominator keeps its sign but is at least machine
//! epsilon in size; per-cell MI terms below epsilon are dropped. The EMI terms depend only on
//! the pair (a_i, b_j), so they are summed once per distinct pair and weighted by its
//! multiplicity: with 12,000 classes of ~5 items that is a handful of pairs instead of
//! 144 million (sklearn's `_expected_mutual_info_fast` loops over all of them).

use std::collections::{BTreeMap, HashMap};

use crate::error::{Error, Result};

/// NMI and AMI of one clustering.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MutualInfo {
    /// Normalised mutual information, arithmetic mean normalisation.
    pub nmi: f64,
    /// Adjusted mutual information, arithmetic mean normalisation.
    pub ami: f64,
}

/// NMI and AMI of `clusters` against `classes` (any ids; only equality matters), as
/// `sklearn.metrics.normalized_mutual_info_score` and `adjusted_mutual_info_score` with
/// `average_method="arithmetic"`.
///
/// ```
/// let perfect = dml_eval::mutual_info(&[0, 0, 1, 1], &[5, 5, 3, 3]).unwrap();
/// assert_eq!((perfect.nmi, perfect.ami), (1.0, 1.0));
/// ```
///
/// # Errors
/// [`Error::LengthMismatch`] when the two labellings have different lengths.
pub fn mutual_info(classes: &[u32], clusters: &[u32]) -> Result<MutualInfo> {
    if classes.len() != clusters.len() {
        return Err(Error::LengthMismatch {
            what: "cluster labels for the class labels",
            expected: classes.len(),
            found: clusters.len(),
        });
    }
    let table = Contingency::new(classes, clusters);
    let (rows, cols) = (table.row_sums.len(), table.col_sums.len());
    if (rows == 1 && cols == 1) || (rows == 0 && cols == 0) {
        return Ok(MutualInfo { nmi: 1.0, ami: 1.0 });
    }
    let mi = table.mutual_info();
    let normalizer = (entropy(&table.row_sums) + entropy(&table.col_sums)) / 2.0;
    let nmi = if mi == 0.0 { 0.0 } else { mi / normalizer };
    let emi = table.expected_mutual_info();
    let denominator = normalizer - emi;
    let denominator = if denominator < 0.0 {
        denominator.min(-f64::EPSILON)
    } else {
        denominator.max(f64::EPSILON)
    };
    Ok(MutualInfo {
        nmi,
        ami: (mi - emi) / denominator,
    })
}

/// The non-zero cells of the class x cluster contingency table and its margins.
struct Contingency {
    n: u64,
    row_sums: Vec<u64>,
    col_sums: Vec<u64>,
    /// `(row, column, count)` of the non-zero cells, row-major.
    cells: Vec<(usize, usize, u64)>,
}

impl Contingency {
    fn new(classes: &[u32], clusters: &[u32]) -> Self {
        let rows = dense(classes);
        let cols = dense(clusters);
        let mut row_sums = vec![0u64; rows.iter().max().map_or(0, |&m| m + 1)];
        let mut col_sums = vec![0u64; cols.iter().max().map_or(0, |&m| m + 1)];
        let mut counts: BTreeMap<(usize, usize), u64> = BTreeMap::new();
        for (&r, &c) in rows.iter().zip(&cols) {
            row_sums[r] += 1;
            col_sums[c] += 1;
            *counts.entry((r, c)).or_default() += 1;
        }
        Self {
            n: classes.len() as u64,
            row_sums,
            col_sums,
            cells: counts.into_iter().map(|((r, c), n)| (r, c, n)).collect(),
        }
    }

    /// sklearn's `mutual_info_score` on the sparse table, term for term.
    fn mutual_info(&self) -> f64 {
        if self.row_sums.len() == 1 || self.col_sums.len() == 1 {
            return 0.0;
        }
        let n = self.n as f64;
        let log_n = n.ln();
        let mi: f64 = self
            .cells
            .iter()
            .map(|&(r, c, count)| {
                let count = count as f64;
                let p = count / n;
                let outer = (self.row_sums[r] * self.col_sums[c]) as f64;
                let log_outer = -outer.ln() + log_n + log_n;
                let term = p * (count.ln() - log_n) + p * log_outer;
                if term.abs() < f64::EPSILON { 0.0 } else { term }
            })
            .sum();
        mi.max(0.0)
    }

    /// sklearn's `expected_mutual_information`, summed once per distinct (a, b) margin pair.
    fn expected_mutual_info(&self) -> f64 {
        if self.row_sums.len() == 1 || self.col_sums.len() == 1 {
            return 0.0;
        }
        let n = self.n;
        let nf = n as f64;
        let multiplicity = |sums: &[u64]| {
            let mut m: BTreeMap<u64, u64> = BTreeMap::new();
            for &s in sums {
                *m.entry(s).or_default() += 1;
            }
            m
        };
        let rows = multiplicity(&self.row_sums);
        let cols = multiplicity(&self.col_sums);
        let lgamma = |x: u64| libm::lgamma(x as f64);
        let gln_n = lgamma(n + 1);
        let mut emi = 0.0;
        for (&a, &ma) in &rows {
            for (&b, &mb) in &cols {
                let (af, bf) = (a as f64, b as f64);
                let fixed = lgamma(a + 1) + lgamma(b + 1) + lgamma(n - a + 1) + lgamma(n - b + 1);
                let start = (a + b).saturating_sub(n).max(1);
                let end = a.min(b);
                let mut pair = 0.0;
                for nij in start..=end {
                    let nijf = nij as f64;
                    let term1 = nijf / nf;
                    let term2 = (nf.ln() + nijf.ln()) - af.ln() - bf.ln();
                    let gln = fixed
                        - (lgamma(nij + 1) + gln_n)
                        - lgamma(a - nij + 1)
                        - lgamma(b - nij + 1)
                        - lgamma(n + nij - a - b + 1);
                    pair += term1 * term2 * gln.exp();
                }
                emi += pair * (ma * mb) as f64;
            }
        }
        emi
    }
}

/// Maps arbitrary ids to `0..distinct` in order of first appearance.
fn dense(ids: &[u32]) -> Vec<usize> {
    let mut map: HashMap<u32, usize> = HashMap::new();
    ids.iter()
        .map(|&id| {
            let next = map.len();
            *map.entry(id).or_insert(next)
        })
        .collect()
}

/// sklearn's `entropy` of a labelling given its class counts (natural log).
fn entropy(counts: &[u64]) -> f64 {
    let counts: Vec<f64> = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| c as f64)
        .collect();
    if counts.len() <= 1 {
        return 0.0;
    }
    let total: f64 = counts.iter().sum();
    -counts
        .iter()
        .map(|&c| (c / total) * (c.ln() - total.ln()))
        .sum::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook definitions, one (i, j) cell at a time, in f64.
    fn naive(classes: &[u32], clusters: &[u32]) -> (f64, f64) {
        let n = classes.len() as f64;
        let uc: Vec<u32> = {
            let mut v = classes.to_vec();
            v.sort();
            v.dedup();
            v
        };
        let uk: Vec<u32> = {
            let mut v = clusters.to_vec();
            v.sort();
            v.dedup();
            v
        };
        let count = |f: &dyn Fn(usize) -> bool| (0..classes.len()).filter(|&i| f(i)).count();
        let a: Vec<usize> = uc.iter().map(|&c| count(&|i| classes[i] == c)).collect();
        let b: Vec<usize> = uk.iter().map(|&k| count(&|i| clusters[i] == k)).collect();
        let h = |s: &[usize]| {
            -s.iter()
                .map(|&x| x as f64 / n * (x as f64 / n).ln())
                .sum::<f64>()
        };
        let mut mi = 0.0;
        for (i, &c) in uc.iter().enumerate() {
            for (j, &k) in uk.iter().enumerate() {
                let nij = count(&|t| classes[t] == c && clusters[t] == k) as f64;
                if nij > 0.0 {
                    mi += nij / n * (n * nij / (a[i] * b[j]) as f64).ln();
                }
            }
        }
        let ln_fact = |x: usize| (1..=x).map(|v| (v as f64).ln()).sum::<f64>();
        let nn = classes.len();
        let mut emi = 0.0;
        for &ai in &a {
            for &bj in &b {
                for nij in (ai + bj).saturating_sub(nn).max(1)..=ai.min(bj) {
                    let x = nij as f64;
                    let log_p = ln_fact(ai) + ln_fact(bj) + ln_fact(nn - ai) + ln_fact(nn - bj)
                        - ln_fact(nn)
                        - ln_fact(nij)
                        - ln_fact(ai - nij)
                        - ln_fact(bj - nij)
                        - ln_fact(nn - ai - bj + nij);
                    emi += x / n * (n * x / (ai * bj) as f64).ln() * log_p.exp();
                }
            }
        }
        let mean_h = (h(&a) + h(&b)) / 2.0;
        (mi / mean_h, (mi - emi) / (mean_h - emi))
    }

    #[test]
    fn matches_the_textbook_formulas() {
        let classes = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3];
        let clusters = [1, 1, 0, 0, 0, 2, 2, 2, 1, 3, 3, 3];
        let got = mutual_info(&classes, &clusters).unwrap();
        let (nmi, ami) = naive(&classes, &clusters);
        assert!((got.nmi - nmi).abs() < 1e-12, "{} vs {nmi}", got.nmi);
        assert!((got.ami - ami).abs() < 1e-12, "{} vs {ami}", got.ami);
    }

    #[test]
    fn scikit_learn_special_cases() {
        // one class and one cluster: 1 by convention
        assert_eq!(mutual_info(&[3, 3, 3], &[1, 1, 1]).unwrap().nmi, 1.0);
        // empty: 1 by convention
        assert_eq!(mutual_info(&[], &[]).unwrap().ami, 1.0);
        // one cluster against several classes: MI = 0
        let m = mutual_info(&[0, 1, 2, 0], &[7, 7, 7, 7]).unwrap();
        assert_eq!(m.nmi, 0.0);
        assert_eq!(m.ami, 0.0);
        // a renamed perfect clustering
        let p = mutual_info(&[0, 0, 1, 1, 2], &[9, 9, 4, 4, 0]).unwrap();
        assert!((p.nmi - 1.0).abs() < 1e-15 && (p.ami - 1.0).abs() < 1e-15);
    }

    #[test]
    fn lengths_must_agree() {
        assert!(matches!(
            mutual_info(&[0, 1], &[0]),
            Err(Error::LengthMismatch { .. })
        ));
    }
}
