//! Writing embeddings for other tools: `E.npy` (f32, `[n, d]`, C order) with
//! `E.labels.txt` (one class name per row) and `E.paths.txt` (one image per row) beside it,
//! which `dml eval --embeddings E.npy --labels E.labels.txt` reads back.

use std::path::{Path, PathBuf};

use npyz::WriterBuilder;

use crate::atomic;
use crate::error::Error;
use crate::task::Embeddings;

/// The files written for embeddings at `npy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportPaths {
    /// The embeddings, `.npy`.
    pub embeddings: PathBuf,
    /// Class names, one line per row.
    pub labels: PathBuf,
    /// Image paths (or synthetic ids), one line per row.
    pub paths: PathBuf,
}

impl ExportPaths {
    /// `E.npy` gives `E.labels.txt` and `E.paths.txt` in the same folder.
    pub fn new(npy: &Path) -> Self {
        let stem = npy
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        ExportPaths {
            embeddings: npy.to_owned(),
            labels: npy.with_file_name(format!("{stem}.labels.txt")),
            paths: npy.with_file_name(format!("{stem}.paths.txt")),
        }
    }
}

/// Writes `embeddings` with a class name and a path per row, each file atomically.
pub fn write_embeddings(
    npy: &Path,
    embeddings: &Embeddings,
    class_names: &[String],
    paths: &[String],
) -> Result<ExportPaths, Error> {
    let files = ExportPaths::new(npy);
    let rows = embeddings.len();
    let mut bytes = Vec::new();
    let io = |e| Error::io(npy, e);
    let mut writer = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(&[rows as u64, embeddings.dim as u64])
        .writer(&mut bytes)
        .begin_nd()
        .map_err(io)?;
    writer
        .extend(embeddings.values.iter().copied())
        .map_err(io)?;
    writer.finish().map_err(io)?;
    atomic::write_file(&files.embeddings, &bytes)?;
    atomic::write_file(&files.labels, lines(class_names).as_bytes())?;
    atomic::write_file(&files.paths, lines(paths).as_bytes())?;
    Ok(files)
}

fn lines(items: &[String]) -> String {
    let mut text = String::new();
    for item in items {
        // One row per line: a name with a line break would shift every later row.
        text.push_str(&item.replace(['\n', '\r'], " "));
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_npy_labels_and_paths_that_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let npy = dir.path().join("test.npy");
        let embeddings = Embeddings {
            values: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            dim: 3,
            labels: vec![0, 1],
            indices: vec![0, 1],
        };
        let names = ["cat".to_owned(), "two\nlines".to_owned()];
        let paths = ["a.png".to_owned(), "b.png".to_owned()];
        let files = write_embeddings(&npy, &embeddings, &names, &paths).unwrap();
        assert_eq!(files.labels, dir.path().join("test.labels.txt"));
        let array = npyz::NpyFile::new(std::fs::File::open(&npy).unwrap()).unwrap();
        assert_eq!(array.shape(), [2, 3]);
        assert_eq!(array.into_vec::<f32>().unwrap(), embeddings.values);
        let labels = std::fs::read_to_string(&files.labels).unwrap();
        assert_eq!(labels, "cat\ntwo lines\n");
        assert_eq!(
            std::fs::read_to_string(&files.paths).unwrap(),
            "a.png\nb.png\n"
        );
    }
}
