use std::time::Instant;
use burn::tensor::{Device, Distribution, Tensor};
use burn::tensor::module::{conv2d, max_pool2d, batch_norm_train, batch_norm};
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};

fn time<F: FnMut()>(name: &str, reps: usize, mut f: F) -> f64 {
    f();
    let mut all = vec![];
    for _ in 0..reps { let t = Instant::now(); f(); all.push(t.elapsed().as_secs_f64()*1e3);}
    all.sort_by(|a,b| a.partial_cmp(b).unwrap());
    println!("{name:<40} median {:8.2} ms", all[all.len()/2]);
    all[all.len()/2]
}

fn main() {
    let d = Device::flex();
    let ad = Device::flex().autodiff();
    let mut tot = 0.0;
    for (cin, hw) in [(1usize, 28usize), (64, 14), (64, 7), (64, 3)] {
        let x = Tensor::<4>::random([128, cin, hw, hw], Distribution::Default, &d);
        let w = Tensor::<4>::random([64, cin, 3, 3], Distribution::Default, &d);
        let b = Tensor::<1>::random([64], Distribution::Default, &d);
        let opts = ConvOptions::new([1,1],[1,1],[1,1],1);
        time(&format!("conv fwd {cin}->64 @{hw}"), 5, || { let y = conv2d(x.clone(), w.clone(), Some(b.clone()), opts.clone()); let _ = y.into_data(); });
        time(&format!("conv fwd nobias {cin}->64 @{hw}"), 5, || { let y = conv2d(x.clone(), w.clone(), None, opts.clone()); let _ = y.into_data(); });
        let xa = Tensor::<4>::from_data(x.to_data(), &ad).require_grad();
        let wa = Tensor::<4>::from_data(w.to_data(), &ad).require_grad();
        let ba = Tensor::<1>::from_data(b.to_data(), &ad).require_grad();
        tot += time(&format!("conv fwd+bwd {cin}->64 @{hw}"), 5, || { let y = conv2d(xa.clone(), wa.clone(), Some(ba.clone()), opts.clone()); let g = y.sum().backward(); let _ = wa.grad(&g).unwrap().into_data(); });
        let y = conv2d(x.clone(), w.clone(), Some(b.clone()), opts.clone());
        let ya = Tensor::<4>::from_data(y.to_data(), &ad).require_grad();
        let gamma = Tensor::<1>::ones([64], &ad).require_grad();
        let beta = Tensor::<1>::zeros([64], &ad).require_grad();
        tot += time(&format!("bn-train fwd+bwd @{hw}"), 5, || { let r = batch_norm_train(ya.clone(), gamma.clone(), beta.clone(), 1e-5); let g = r.output.sum().backward(); let _ = gamma.grad(&g).unwrap().into_data(); });
        let yd = y.clone();
        let (g0, b0, m0, v0) = (Tensor::<1>::ones([64], &d), Tensor::<1>::zeros([64], &d), Tensor::<1>::zeros([64], &d), Tensor::<1>::ones([64], &d));
        time(&format!("bn-eval fwd @{hw}"), 5, || { let r = batch_norm(yd.clone(), g0.clone(), b0.clone(), m0.clone(), v0.clone(), 1e-5); let _ = r.into_data(); });
        time(&format!("relu fwd+bwd @{hw}"), 5, || { let r = burn::tensor::activation::relu(ya.clone()); let g = r.sum().backward(); let _ = ya.grad(&g).unwrap().into_data(); });
        tot += time(&format!("maxpool fwd+bwd @{hw}"), 5, || { let r = max_pool2d(ya.clone(), MaxPoolOptions::new([2,2]).with_stride([2,2])); let g = r.sum().backward(); let _ = ya.grad(&g).unwrap().into_data(); });
        time(&format!("add fwd @{hw}"), 5, || { let r = yd.clone() + yd.clone(); let _ = r.into_data(); });
    }
    println!("sum conv+bn+pool fwd+bwd: {tot:.1} ms");
}
