//! Writing embeddings for other tools: `E.npy` (f32, `[n, d]`, C order) with
//! `E.labels.txt` (one class name per row) and `E.paths.txt` (one image per row) beside it,
//! which `dml eval --embeddings E.npy --labels E.labels.txt` reads back.
//!
//! The three files are one set, written with [`atomic::write_set`]: a full disk or a crash
//! never leaves new embeddings beside old labels. Readers call
//! [`dml_core::atomic::recover_set`] before they open any of them.

use std::path::{Path, PathBuf};

use npyz::WriterBuilder;

use crate::atomic::{self, Contents};
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

/// Writes `embeddings` with a class name and a path per row, the three files as one atomic
/// set (see the module documentation).
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
    let (labels, paths) = (lines(class_names), lines(paths));
    atomic::write_set(&[
        (&files.embeddings, Contents::Bytes(&bytes)),
        (&files.labels, Contents::Bytes(labels.as_bytes())),
        (&files.paths, Contents::Bytes(paths.as_bytes())),
    ])?;
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

    #[test]
    fn a_new_set_replaces_all_three_files_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let npy = dir.path().join("e.npy");
        let embeddings = |rows: usize| Embeddings {
            values: vec![0.5; rows * 2],
            dim: 2,
            labels: vec![0; rows],
            indices: (0..rows).collect(),
        };
        let names = |rows: usize| vec!["c".to_owned(); rows];
        write_embeddings(&npy, &embeddings(3), &names(3), &names(3)).unwrap();
        let files = write_embeddings(&npy, &embeddings(1), &names(1), &names(1)).unwrap();
        let array = npyz::NpyFile::new(std::fs::File::open(&npy).unwrap()).unwrap();
        assert_eq!(array.shape(), [1, 2]);
        assert_eq!(std::fs::read_to_string(&files.labels).unwrap(), "c\n");
        assert_eq!(std::fs::read_to_string(&files.paths).unwrap(), "c\n");
        // No temporary and no journal is left beside them.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    }

    /// A write that crashed after its journal (hand-made here in the journal format of
    /// `dml_core::atomic`) is finished by the first reader, whichever file it opens.
    #[test]
    fn readers_finish_a_set_whose_write_crashed_during_the_renames() {
        let dir = tempfile::tempdir().unwrap();
        let npy = dir.path().join("e.npy");
        let files = ExportPaths::new(&npy);
        let embeddings = Embeddings {
            values: vec![0.5; 4],
            dim: 2,
            labels: vec![0, 1],
            indices: vec![0, 1],
        };
        let old = ["a".to_owned(), "b".to_owned()];
        write_embeddings(&npy, &embeddings, &old, &old).unwrap();
        let new_npy = std::fs::read(&npy).unwrap();
        let mut journal = "dml atomic set v1\n".to_owned();
        for (name, bytes) in [
            ("e.npy", &new_npy[..]),
            ("e.labels.txt", b"x\ny\n"),
            ("e.paths.txt", b"p\nq\n"),
        ] {
            let temp = format!(".{name}.tmp1");
            std::fs::write(dir.path().join(&temp), bytes).unwrap();
            journal.push_str(&format!("{temp}\t{name}\n"));
        }
        std::fs::write(dir.path().join(".e.npy.set"), journal).unwrap();
        // The crash came after the first rename.
        std::fs::rename(dir.path().join(".e.npy.tmp1"), &npy).unwrap();

        let labels = dml_eval::io::read_labels(&files.labels).unwrap();
        assert_eq!(labels.len(), 2);
        assert_eq!(std::fs::read_to_string(&files.labels).unwrap(), "x\ny\n");
        assert_eq!(std::fs::read_to_string(&files.paths).unwrap(), "p\nq\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
        assert_eq!(dml_eval::io::read_embeddings(&npy, None).unwrap().rows(), 2);
    }
}
