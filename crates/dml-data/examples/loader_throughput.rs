//! Data pipeline throughput: how many images per second the loader delivers.
//!
//! Run with: `cargo run --release -p dml-data --example loader_throughput [WORKERS]`
//!
//! Prints one table row per measurement: synthetic glyph drawing alone, the loader on the
//! glyphs (P x K batches, 28x28 grey), the loader on the real Omniglot zip (105x105 PNG
//! decoded, resized to 28x28 or 32x32; per epoch, with the decoded-image cache off, on, and
//! on after a preload), and the two ways of sharing one zip archive between threads (the
//! store's per-read clone over positioned reads, and a single archive behind a mutex).
//! Also prints the raw-pixel 1-NN accuracy of the glyph test split, the floor a trained
//! embedding should beat.

use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use dml_data::{
    BatchSampler, Dataset, Loader, LoaderConfig, OmniglotDataset, OmniglotLabel, PipelineConfig,
    PkSamplerConfig, SyntheticGlyphsConfig,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let workers: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(2);
    let loader_config = LoaderConfig {
        workers,
        prefetch: 4,
        ..Default::default()
    };
    println!("| measurement | images | seconds | images/s |");
    println!("|---|---:|---:|---:|");
    let row = |name: &str, images: usize, secs: f64| {
        println!(
            "| {name} | {images} | {secs:.3} | {:.0} |",
            images as f64 / secs
        );
    };

    // Synthetic glyphs: drawing alone, one thread.
    let glyphs = SyntheticGlyphsConfig {
        train_classes: 200,
        test_classes: 32,
        ..Default::default()
    };
    let splits = glyphs.splits()?;
    let train = splits.train.clone();
    let t = Instant::now();
    for i in 0..train.len() {
        std::hint::black_box(train.load(i)?);
    }
    row(
        "glyphs: draw only, 1 thread",
        train.len(),
        t.elapsed().as_secs_f64(),
    );

    // Loader on the glyphs: 32 classes x 4 samples per batch, 3 epochs.
    let sampler = PkSamplerConfig::new(32, 4, 0).init(&train.labels(), train.class_names())?;
    let loader = Loader::train(
        train.clone(),
        PipelineConfig::characters(28).init()?,
        loader_config.clone(),
        0,
    )?;
    let t = Instant::now();
    let mut n = 0;
    for epoch in 0..3 {
        for batch in loader.batches(epoch, sampler.batches(epoch), 0) {
            n += std::hint::black_box(batch?).indices.len();
        }
    }
    row(
        &format!("glyphs 28x28: loader, {workers} workers"),
        n,
        t.elapsed().as_secs_f64(),
    );

    // Loader on the real Omniglot zip, 105x105 PNG -> 28x28 grey.
    let zip = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/datasets/omniglot/images_background_small1.zip");
    let omniglot: Arc<dyn Dataset> =
        Arc::new(OmniglotDataset::open(&zip, OmniglotLabel::Character, None)?);
    let sampler =
        PkSamplerConfig::new(32, 4, 0).init(&omniglot.labels(), omniglot.class_names())?;
    // Per epoch, with the decoded-image cache off and on (default budget), and on after an
    // up-front parallel preload.
    for size in [28, 32] {
        for (cache, cache_mib, preload) in [
            ("cache off", 0, false),
            ("cache on", loader_config.cache_mib, false),
            ("cache on + preload", loader_config.cache_mib, true),
        ] {
            let loader = Loader::train(
                omniglot.clone(),
                PipelineConfig::characters(size).init()?,
                LoaderConfig {
                    cache_mib,
                    ..loader_config.clone()
                },
                0,
            )?;
            if preload {
                let t = Instant::now();
                loader.preload()?;
                row(
                    &format!("omniglot zip -> {size}x{size}: preload, rayon threads"),
                    omniglot.len(),
                    t.elapsed().as_secs_f64(),
                );
            }
            for epoch in 0..3 {
                let t = Instant::now();
                let mut n = 0;
                for batch in loader.batches(epoch, sampler.batches(epoch), 0) {
                    n += std::hint::black_box(batch?).indices.len();
                }
                row(
                    &format!(
                        "omniglot zip -> {size}x{size}: loader, {workers} workers, {cache}, epoch {epoch}"
                    ),
                    n,
                    t.elapsed().as_secs_f64(),
                );
            }
        }
    }

    // Sharing one archive: the store (clone per read, positioned reads) vs one archive behind
    // a mutex; each reads and decodes every image, `workers` threads.
    let t = Instant::now();
    parallel(workers, omniglot.len(), |i| {
        omniglot.load(i).map(drop).map_err(|e| e.to_string())
    })?;
    row(
        &format!("omniglot zip read+decode: store, {workers} threads"),
        omniglot.len(),
        t.elapsed().as_secs_f64(),
    );
    let archive = Mutex::new(zip::ZipArchive::new(std::fs::File::open(&zip)?)?);
    let names: Vec<String> = archive
        .lock()
        .unwrap()
        .file_names()
        .filter(|n| n.ends_with(".png"))
        .map(str::to_owned)
        .collect();
    let t = Instant::now();
    parallel(workers, names.len(), |i| {
        let bytes = {
            let mut a = archive.lock().unwrap();
            let mut entry = a.by_name(&names[i]).map_err(|e| e.to_string())?;
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
            bytes
        };
        image::load_from_memory(&bytes)
            .map(drop)
            .map_err(|e| e.to_string())
    })?;
    row(
        &format!("omniglot zip read+decode: mutex, {workers} threads"),
        names.len(),
        t.elapsed().as_secs_f64(),
    );

    // How separable the glyph test classes are in raw pixels.
    let test = splits.get(dml_data::Split::Test)?;
    let pixels: Vec<Vec<f32>> = (0..test.len())
        .map(|i| {
            Ok(test
                .load(i)?
                .to_luma8()
                .into_raw()
                .into_iter()
                .map(f32::from)
                .collect())
        })
        .collect::<Result<_, dml_data::Error>>()?;
    let hits = (0..test.len())
        .filter(|&i| {
            let nearest = (0..test.len())
                .filter(|&j| j != i)
                .min_by(|&a, &b| {
                    dist(&pixels[i], &pixels[a]).total_cmp(&dist(&pixels[i], &pixels[b]))
                })
                .expect("more than one test image");
            test.label(nearest) == test.label(i)
        })
        .count();
    println!(
        "\nglyph test split ({} classes x {}): raw-pixel 1-NN accuracy {:.3}",
        test.class_names().len(),
        glyphs.samples_per_class,
        hits as f64 / test.len() as f64
    );
    Ok(())
}

fn dist(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Runs `f(i)` for `i` in `0..n` on `threads` threads (interleaved), stopping at an error.
fn parallel(
    threads: usize,
    n: usize,
    f: impl Fn(usize) -> Result<(), String> + Sync,
) -> Result<(), String> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let f = &f;
                s.spawn(move || (t..n).step_by(threads).try_for_each(f))
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("worker panicked"))
    })
}
