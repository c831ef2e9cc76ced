//! Test helpers: seeded inputs, direct-sum references, tolerance checks, thread pools.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::conv::Conv2dGeometry;

/// `len` values uniform in `[-1, 1)`, from `seed`.
pub(crate) fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// Asserts `|a - b| <= tol * max(1, |b|)` elementwise.
pub(crate) fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * y.abs().max(1.0),
            "{what}: element {i}: {x} vs {y}"
        );
    }
}

/// Runs `f` on a fresh rayon pool of `threads` threads.
pub(crate) fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
        .install(f)
}

/// The geometry's sizes, named for the reference loops.
struct Dims {
    batch: usize,
    h: usize,
    w: usize,
    ci: usize,
    co: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    ph: usize,
    pw: usize,
    oh: usize,
    ow: usize,
}

fn dims(g: &Conv2dGeometry) -> Dims {
    Dims {
        batch: g.batch,
        h: g.in_size[0],
        w: g.in_size[1],
        ci: g.in_channels,
        co: g.out_channels,
        kh: g.kernel[0],
        kw: g.kernel[1],
        sh: g.stride[0],
        sw: g.stride[1],
        ph: g.padding[0],
        pw: g.padding[1],
        oh: g.out_size[0],
        ow: g.out_size[1],
    }
}

/// Calls `f(x index, weight index, y index)` for every multiply of the convolution.
fn for_each_tap(d: &Dims, mut f: impl FnMut(usize, usize, usize)) {
    for n in 0..d.batch {
        for oy in 0..d.oh {
            for ox in 0..d.ow {
                for ky in 0..d.kh {
                    for kx in 0..d.kw {
                        let iy = (oy * d.sh + ky) as isize - d.ph as isize;
                        let ix = (ox * d.sw + kx) as isize - d.pw as isize;
                        if iy < 0 || ix < 0 || iy >= d.h as isize || ix >= d.w as isize {
                            continue;
                        }
                        for ci in 0..d.ci {
                            for co in 0..d.co {
                                let xi = ((n * d.h + iy as usize) * d.w + ix as usize) * d.ci + ci;
                                let wi = ((ky * d.kw + kx) * d.ci + ci) * d.co + co;
                                let yi = ((n * d.oh + oy) * d.ow + ox) * d.co + co;
                                f(xi, wi, yi);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The convolution as a direct sum in f64.
pub(crate) fn reference_conv(
    g: &Conv2dGeometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let d = dims(g);
    let mut y = vec![0.0f64; g.output_len()];
    for_each_tap(&d, |xi, wi, yi| y[yi] += x[xi] as f64 * w[wi] as f64);
    if let Some(bias) = bias {
        for (i, v) in y.iter_mut().enumerate() {
            *v += bias[i % d.co] as f64;
        }
    }
    y.into_iter().map(|v| v as f32).collect()
}

/// Input and weight gradients of the direct sum, in f64.
pub(crate) fn reference_conv_backward(
    g: &Conv2dGeometry,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let d = dims(g);
    let mut dx = vec![0.0f64; g.input_len()];
    let mut dw = vec![0.0f64; g.weight_len()];
    for_each_tap(&d, |xi, wi, yi| {
        dx[xi] += dy[yi] as f64 * w[wi] as f64;
        dw[wi] += dy[yi] as f64 * x[xi] as f64;
    });
    let f = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect();
    (f(dx), f(dw))
}
