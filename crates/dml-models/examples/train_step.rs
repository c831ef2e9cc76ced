//! Throughput of one training step (forward, backward, Adam) on burn's Flex backend.
//!
//! Run with:
//!
//! ```text
//! cargo run --release -p dml-models --example train_step -- [small|resnet18|all] [STEPS]
//! ```
//!
//! For each model it times `STEPS` steps (default 10, after 2 warm-up steps) of
//! `loss = mean(e²)` over the embeddings `e` of a fixed random batch (a stand-in for a metric
//! loss, whose cost is negligible next to the network's), and prints the median time of the
//! forward pass, the backward pass and the Adam step, and images per second. Data loading is
//! not included: the batch is built once. `RAYON_NUM_THREADS` sets the thread count.
//! scripts/bench_torch_train_step.py times the same step in PyTorch.

use std::time::{Duration, Instant};

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor};
use dml_models::{Backbone, EmbeddingNetConfig, HeadKind};

/// One benchmarked model: its config and batch shape.
struct Case {
    name: &'static str,
    config: EmbeddingNetConfig,
    batch: [usize; 4],
}

fn cases(which: &str) -> Vec<Case> {
    let small = Case {
        name: "small-conv-net",
        config: EmbeddingNetConfig {
            backbone: Backbone::SmallConvNet,
            head: HeadKind::Direct,
            embedding_dim: 128,
            in_channels: 1,
        },
        batch: [128, 1, 28, 28],
    };
    let resnet18 = Case {
        name: "resnet18",
        config: EmbeddingNetConfig {
            backbone: Backbone::ResNet18,
            head: HeadKind::Direct,
            embedding_dim: 128,
            in_channels: 3,
        },
        batch: [32, 3, 224, 224],
    };
    match which {
        "small" => vec![small],
        "resnet18" => vec![resnet18],
        _ => vec![small, resnet18],
    }
}

fn median(mut times: Vec<Duration>) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1e3
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().map(String::as_str).unwrap_or("all");
    let steps: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let warmup = 2;
    let device = Device::flex().autodiff();
    println!(
        "threads: {}, steps: {steps} (after {warmup} warm-up)",
        rayon_threads()
    );
    println!(
        "{:<16} {:>14} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "model", "batch", "fwd ms", "bwd ms", "adam ms", "step ms", "img/s"
    );
    for case in cases(which) {
        let mut net = case.config.init_seeded(0, &device).expect("valid config");
        let mut optim = AdamConfig::new().init();
        device.seed(0);
        let images = Tensor::<4>::random(case.batch, Distribution::Normal(0.0, 1.0), &device);
        let (mut fwd, mut bwd, mut adam, mut total) = (vec![], vec![], vec![], vec![]);
        for step in 0..warmup + steps {
            let t0 = Instant::now();
            let loss = net.forward(images.clone()).square().mean();
            // Flex runs eagerly; reading the loss back waits for the whole forward pass.
            let _ = loss.clone().into_scalar::<f32>();
            let t1 = Instant::now();
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            let t2 = Instant::now();
            net = optim.step(1e-4, net, grads);
            device.sync().expect("device sync");
            let t3 = Instant::now();
            if step >= warmup {
                fwd.push(t1 - t0);
                bwd.push(t2 - t1);
                adam.push(t3 - t2);
                total.push(t3 - t0);
            }
        }
        let step_ms = median(total);
        println!(
            "{:<16} {:>14} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>9.1}",
            case.name,
            format!("{:?}", case.batch).replace(' ', ""),
            median(fwd),
            median(bwd),
            median(adam),
            step_ms,
            case.batch[0] as f64 / step_ms * 1e3,
        );
        // Keep the parameter count in the output so a table row says what was measured.
        println!("{:<16} {} parameters", "", net.num_params());
    }
}

fn rayon_threads() -> String {
    std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all cores".to_string())
}
