//! Helpers shared by the CLI integration tests.

use std::path::{Path, PathBuf};

use image::{GrayImage, Luma};
use std::process::{Command, Output};

/// Runs the freshly built `dml` binary with `args`.
pub fn dml(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dml"))
        .args(args)
        .output()
        .expect("the dml binary runs")
}

/// Text of a command's output.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A path as a command-line argument.
pub fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Runs `dml` and returns its stdout, failing the test with stderr if it fails.
pub fn ok(args: &[&str]) -> String {
    let out = dml(args);
    assert!(out.status.success(), "dml {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// Runs `dml`, expects exit code 2 and one error line, and returns that line.
pub fn fails(args: &[&str]) -> String {
    let out = dml(args);
    assert_eq!(
        out.status.code(),
        Some(2),
        "dml {args:?}: {}",
        text(&out.stdout)
    );
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("dml: error: "), "{stderr}");
    stderr
}

/// `dml run` / `dml train` flags for one training step of the small convnet at 28 x 28.
pub const ONE_STEP: [&str; 12] = [
    "--max-steps",
    "1",
    "--classes-per-batch",
    "2",
    "--samples-per-class",
    "2",
    "--embedding-dim",
    "8",
    "--set",
    "data.pipeline.resize=28",
    "--set",
    "data.pipeline.crop=28",
];

/// The repository root (fixtures live there).
#[allow(dead_code)]
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The read-only shared data folder beside the repository (present in CI too).
#[allow(dead_code)]
pub fn shared_dir() -> PathBuf {
    repo_root().join("../shared")
}

/// A 32 x 32 grey image whose pattern depends on `class` and varies a little with `sample`.
pub fn write_png(path: &Path, class: usize, sample: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let image = GrayImage::from_fn(32, 32, |x, y| {
        let stripe = (x as usize * (class + 1) + y as usize * (2 * class + 1)) % 16 < 8;
        let jitter = ((x as usize + 3 * y as usize + 7 * sample) % 5) as u8 * 6;
        Luma([if stripe { 220 - jitter } else { 20 + jitter }])
    });
    image.save(path).unwrap();
}

/// `root/<class>/<i>.png` for `classes` classes of `per_class` images.
pub fn image_folder(root: &Path, classes: std::ops::Range<usize>, per_class: usize) {
    for class in classes {
        for i in 0..per_class {
            write_png(&root.join(format!("c{class}/{i}.png")), class, i);
        }
    }
}
