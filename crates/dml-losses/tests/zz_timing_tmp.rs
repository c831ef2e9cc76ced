//! TEMPORARY: manual timing, removed before hand-off.
use dml_losses::{Batch, MatrixRef};
use std::time::Instant;

fn hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("VmHWM") || l.starts_with("VmRSS"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
#[ignore]
fn timing() {
    let n: usize = std::env::var("N")
        .map(|v| v.parse().unwrap())
        .unwrap_or(1024);
    let which = std::env::var("WHICH").unwrap_or_default();
    let d = 128;
    let x32: Vec<f32> = crate::common::uniform(n, d, 3)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let labels: Vec<i64> = (0..n as i64).map(|i| i / 4).collect();
    eprintln!("start {}", hwm());
    for case in crate::common::cases() {
        if !which.is_empty() && !case.name.contains(&which) {
            continue;
        }
        let t = Instant::now();
        let out = case
            .loss
            .compute(Batch::new(MatrixRef::new(&x32, n, d).unwrap(), &labels))
            .unwrap();
        eprintln!(
            "{:40} n={n} {:8.1} ms loss {} {}",
            case.name,
            t.elapsed().as_secs_f64() * 1e3,
            out.loss,
            hwm()
        );
    }
}

#[test]
#[ignore]
fn phases() {
    let n: usize = std::env::var("N")
        .map(|v| v.parse().unwrap())
        .unwrap_or(1024);
    let d = 128;
    let x32: Vec<f32> = crate::common::uniform(n, d, 3)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let m = MatrixRef::new(&x32, n, d).unwrap();
    for dist in [
        dml_losses::Distance::PML_LP_DEFAULT,
        dml_losses::Distance::Cosine,
    ] {
        for _ in 0..2 {
            let t = Instant::now();
            let s = dist.scores(m, None);
            let t1 = t.elapsed().as_secs_f64() * 1e3;
            let mut g = vec![1e-3f32; n * n];
            let t = Instant::now();
            let gr = s.backward(&mut g);
            let t2 = t.elapsed().as_secs_f64() * 1e3;
            let mut c = vec![0f32; n * n];
            let t = Instant::now();
            dml_core::linalg::matmul(
                &x32,
                dml_core::linalg::Transpose::No,
                &x32,
                dml_core::linalg::Transpose::Yes,
                n,
                n,
                d,
                &mut c,
                0.0,
                1.0,
            );
            let t3 = t.elapsed().as_secs_f64() * 1e3;
            eprintln!(
                "{dist:?}: scores {t1:.1} ms backward {t2:.1} ms raw gemm {t3:.1} ms {}",
                gr.x[0]
            );
        }
    }
}
