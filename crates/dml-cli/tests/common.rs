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

/// Writes `values` as a `.npy` array of `shape`.
#[allow(dead_code)]
pub fn write_npy<T: npyz::AutoSerialize + Copy>(path: &Path, shape: &[u64], values: &[T]) {
    use npyz::WriterBuilder;
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(std::fs::File::create(path).unwrap())
        .begin_nd()
        .unwrap();
    writer.extend(values.iter().copied()).unwrap();
    writer.finish().unwrap();
}

/// A `.npy` file (format 1.0) whose header says `descr` and `shape` (a Python tuple, written
/// as given, so it may lie), followed by `data`.
#[allow(dead_code)]
pub fn write_npy_header(path: &Path, descr: &str, shape: &str, data: &[u8]) {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + length (2) + header + '\n' must be a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}
