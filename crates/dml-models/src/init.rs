//! Seeded weight initialisation.
//!
//! Every initial weight is drawn here from one [`ChaCha8Rng`], in a fixed order, so a seed
//! gives the same network on any backend and no matter what else draws random numbers at the
//! same time. (burn's own initialisers draw from the backend's process-wide generator, which
//! concurrent code, such as parallel tests, advances in an unpredictable order.)

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// Draws initial parameter values from a seeded generator and puts them on a device.
pub(crate) struct WeightInit<'a> {
    rng: ChaCha8Rng,
    device: &'a Device,
}

impl<'a> WeightInit<'a> {
    pub(crate) fn new(seed: u64, device: &'a Device) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            device,
        }
    }

    fn param<const D: usize>(&self, values: Vec<f32>, shape: [usize; D]) -> Param<Tensor<D>> {
        Param::from_data(TensorData::new(values, shape), self.device)
    }

    /// `N(0, std²)` values.
    pub(crate) fn normal<const D: usize>(
        &mut self,
        shape: [usize; D],
        std: f64,
    ) -> Param<Tensor<D>> {
        let n = shape.iter().product();
        let values = (0..n)
            .map(|_| (self.rng.sample::<f64, _>(StandardNormal) * std) as f32)
            .collect();
        self.param(values, shape)
    }

    /// `U(-bound, bound)` values.
    pub(crate) fn uniform<const D: usize>(
        &mut self,
        shape: [usize; D],
        bound: f64,
    ) -> Param<Tensor<D>> {
        let n = shape.iter().product();
        let values = (0..n)
            .map(|_| self.rng.random_range(-bound..bound) as f32)
            .collect();
        self.param(values, shape)
    }

    /// All zeros.
    pub(crate) fn zeros<const D: usize>(&self, shape: [usize; D]) -> Param<Tensor<D>> {
        self.param(vec![0.0; shape.iter().product()], shape)
    }

    /// A convolution kernel `[c_out, c_in, kh, kw]` as torchvision initialises ResNets:
    /// Kaiming normal with fan-out and the ReLU gain, `std = sqrt(2 / (c_out·kh·kw))`.
    pub(crate) fn kaiming_normal_fan_out(&mut self, shape: [usize; 4]) -> Param<Tensor<4>> {
        let fan_out = shape[0] * shape[2] * shape[3];
        self.normal(shape, (2.0 / fan_out as f64).sqrt())
    }

    /// A semi-orthogonal `[rows, cols]` matrix (orthonormal columns if `rows >= cols`, rows
    /// otherwise), as `torch.nn.init.orthogonal_` and TensorFlow's `orthogonal_initializer`
    /// make it: the Q of a QR decomposition of a Gaussian matrix, with the signs of R's
    /// diagonal folded in so that the result is uniformly distributed.
    pub(crate) fn orthogonal(&mut self, rows: usize, cols: usize) -> Param<Tensor<2>> {
        let tall = rows >= cols;
        let (m, n) = if tall { (rows, cols) } else { (cols, rows) };
        let gaussian: Vec<f32> = (0..m * n)
            .map(|_| self.rng.sample::<f64, _>(StandardNormal) as f32)
            .collect();
        let a = Tensor::<2>::from_data(TensorData::new(gaussian, [m, n]), self.device);
        let (q, r) = burn::linalg::qr(a, true);
        let q = to_vec(q);
        let r = to_vec(r);
        // q is [m, n], r is [n, n]; flip column j of q where r[j, j] < 0.
        let mut values = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let sign = if r[j * n + j] < 0.0 { -1.0 } else { 1.0 };
                let v = sign * q[i * n + j];
                if tall {
                    values[i * n + j] = v;
                } else {
                    values[j * m + i] = v;
                }
            }
        }
        self.param(values, [rows, cols])
    }
}

fn to_vec(tensor: Tensor<2>) -> Vec<f32> {
    tensor
        .into_data()
        .try_into_vec_as::<f32>()
        .expect("a tensor converted to f32 reads back as f32")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<const D: usize>(param: Param<Tensor<D>>) -> Vec<f32> {
        param.val().into_data().try_into_vec_as::<f32>().unwrap()
    }

    #[test]
    fn same_seed_same_values_other_seed_other_values() {
        let device = Device::flex();
        let a = values(WeightInit::new(7, &device).normal([4, 5], 1.0));
        let b = values(WeightInit::new(7, &device).normal([4, 5], 1.0));
        let c = values(WeightInit::new(8, &device).normal([4, 5], 1.0));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn kaiming_normal_has_the_fan_out_std() {
        let device = Device::flex();
        let v = values(WeightInit::new(1, &device).kaiming_normal_fan_out([64, 16, 3, 3]));
        let std = (v.iter().map(|x| (x * x) as f64).sum::<f64>() / v.len() as f64).sqrt();
        let expected = (2.0f64 / (64.0 * 9.0)).sqrt();
        assert!(
            (std - expected).abs() < 0.05 * expected,
            "std {std}, expected {expected}"
        );
    }

    #[test]
    fn uniform_stays_in_bounds() {
        let device = Device::flex();
        let v = values(WeightInit::new(2, &device).uniform([1000], 0.25));
        assert!(v.iter().all(|x| (-0.25..0.25).contains(x)));
        assert!(v.iter().any(|x| *x > 0.2) && v.iter().any(|x| *x < -0.2));
    }

    fn gram(v: &[f32], rows: usize, cols: usize, of_columns: bool) -> Vec<f64> {
        let k = if of_columns { cols } else { rows };
        let at = |i: usize, j: usize| v[i * cols + j] as f64;
        let mut g = vec![0.0; k * k];
        for a in 0..k {
            for b in 0..k {
                g[a * k + b] = if of_columns {
                    (0..rows).map(|i| at(i, a) * at(i, b)).sum()
                } else {
                    (0..cols).map(|j| at(a, j) * at(b, j)).sum()
                };
            }
        }
        g
    }

    #[test]
    fn orthogonal_is_orthonormal_along_the_short_side() {
        let device = Device::flex();
        for (rows, cols) in [(12, 5), (5, 12), (6, 6)] {
            let v = values(WeightInit::new(3, &device).orthogonal(rows, cols));
            let k = rows.min(cols);
            let g = gram(&v, rows, cols, rows >= cols);
            for a in 0..k {
                for b in 0..k {
                    let expected = if a == b { 1.0 } else { 0.0 };
                    assert!(
                        (g[a * k + b] - expected).abs() < 1e-4,
                        "{rows}x{cols}: gram[{a},{b}] = {}",
                        g[a * k + b]
                    );
                }
            }
        }
    }
}
