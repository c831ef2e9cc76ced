//! Summary statistics over seeds.

/// Mean, spread and range of a set of values (one per seed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// How many values.
    pub n: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation (divides by n - 1); `None` for a single value.
    pub std: Option<f64>,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl Summary {
    /// Summarises the finite values among `values`; `None` if there are none.
    pub fn of(values: impl IntoIterator<Item = Option<f64>>) -> Option<Self> {
        let v: Vec<f64> = values
            .into_iter()
            .flatten()
            .filter(|x| x.is_finite())
            .collect();
        if v.is_empty() {
            return None;
        }
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let std = (n > 1)
            .then(|| (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt());
        Some(Self {
            n,
            mean,
            std,
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_std_min_max_and_missing_values() {
        let s = Summary::of([Some(1.0), None, Some(3.0), Some(f64::NAN), Some(5.0)]).unwrap();
        assert_eq!((s.n, s.mean, s.min, s.max), (3, 3.0, 1.0, 5.0));
        assert!((s.std.unwrap() - 2.0).abs() < 1e-12);
        assert_eq!(Summary::of([Some(2.0)]).unwrap().std, None);
        assert_eq!(Summary::of([None]), None);
    }
}
