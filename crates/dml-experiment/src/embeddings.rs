//! Saved test embeddings and their labels, as referenced by [`EmbeddingFiles`].

use std::path::Path;

use crate::error::{Error, Result};
use crate::record::EmbeddingFiles;

/// Embeddings with one class index per row.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledEmbeddings {
    /// Row-major `[n, dim]`.
    pub vectors: Vec<f32>,
    /// Embedding dimension.
    pub dim: usize,
    /// Class index of each row: labels numbered by first appearance, from 0.
    pub classes: Vec<usize>,
    /// Number of distinct labels.
    pub class_count: usize,
}

impl LabelledEmbeddings {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.classes.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }
}

/// Loads a run's embeddings; paths in `files` are relative to `dir` (the results file's
/// folder). They are read by dml-eval's readers, the ones `dml eval` uses: vectors `.npy` or
/// `.safetensors` (2-D `f32`/`f64`), labels `.npy` integers or text, one per line.
pub fn load(run_id: &str, dir: &Path, files: &EmbeddingFiles) -> Result<LabelledEmbeddings> {
    let vectors_path = dir.join(&files.vectors);
    let labels_path = dir.join(&files.labels);
    let bad = |path: &Path, error: dml_eval::Error| Error::EmbeddingFile {
        run_id: run_id.to_owned(),
        path: path.to_owned(),
        reason: match error {
            // The message names the file already.
            dml_eval::Error::Npy { reason, .. } => reason,
            other => dml_core::error::chain(&other),
        },
    };
    let vectors =
        dml_eval::io::read_embeddings(&vectors_path, None).map_err(|e| bad(&vectors_path, e))?;
    let labels = dml_eval::io::read_labels(&labels_path).map_err(|e| bad(&labels_path, e))?;
    let n = vectors.rows();
    if labels.len() != n {
        return Err(Error::EmbeddingFile {
            run_id: run_id.to_owned(),
            path: labels_path,
            reason: format!("{} labels for {n} embedding rows", labels.len()),
        });
    }
    Ok(LabelledEmbeddings {
        dim: vectors.dim(),
        vectors: vectors.as_slice().to_vec(),
        classes: labels.ids().iter().map(|&c| c as usize).collect(),
        class_count: labels.num_classes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    use npyz::WriterBuilder;

    fn write_f32(path: &Path, data: &[f32], shape: &[u64]) {
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(shape)
            .writer(File::create(path).unwrap())
            .begin_nd()
            .unwrap();
        w.extend(data.iter().copied()).unwrap();
        w.finish().unwrap();
    }

    fn write_i32(path: &Path, data: &[i32]) {
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&[data.len() as u64])
            .writer(File::create(path).unwrap())
            .begin_nd()
            .unwrap();
        w.extend(data.iter().copied()).unwrap();
        w.finish().unwrap();
    }

    fn files(v: &str, l: &str) -> EmbeddingFiles {
        EmbeddingFiles {
            vectors: v.into(),
            labels: l.into(),
        }
    }

    #[test]
    fn loads_npy_vectors_with_npy_or_text_labels() {
        let dir = tempfile::tempdir().unwrap();
        write_f32(
            &dir.path().join("e.npy"),
            &[1., 2., 3., 4., 5., 6.],
            &[3, 2],
        );
        write_i32(&dir.path().join("l.npy"), &[7, 3, 7]);
        std::fs::write(dir.path().join("l.txt"), "cat\ndog\ncat\n").unwrap();
        let e = load("r", dir.path(), &files("e.npy", "l.npy")).unwrap();
        assert_eq!((e.dim, e.len(), e.class_count), (2, 3, 2));
        assert_eq!(e.classes, [0, 1, 0]);
        assert_eq!(e.vectors, [1., 2., 3., 4., 5., 6.]);
        let t = load("r", dir.path(), &files("e.npy", "l.txt")).unwrap();
        assert_eq!(t.classes, e.classes);
    }

    #[test]
    fn mismatches_and_bad_files_name_the_run_and_file() {
        let dir = tempfile::tempdir().unwrap();
        write_f32(&dir.path().join("e.npy"), &[1., 2., 3., 4.], &[2, 2]);
        write_f32(&dir.path().join("flat.npy"), &[1., 2.], &[2]);
        std::fs::write(dir.path().join("l.txt"), "a\nb\nc\n").unwrap();
        let msg = load("run-1", dir.path(), &files("e.npy", "l.txt"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("run `run-1`") && msg.contains("3 labels for 2"),
            "{msg}"
        );
        let msg = load("r", dir.path(), &files("flat.npy", "l.txt"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("flat.npy") && msg.contains("2-D"), "{msg}");
        let msg = load("r", dir.path(), &files("e.npy", "e.npy"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("1-D"), "{msg}");
        let msg = load("r", dir.path(), &files("missing.npy", "l.txt"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("missing.npy"), "{msg}");
    }

    #[test]
    fn text_labels_lose_a_byte_order_mark_and_crlf() {
        let dir = tempfile::tempdir().unwrap();
        write_f32(&dir.path().join("e.npy"), &[1., 2., 3., 4.], &[2, 2]);
        std::fs::write(dir.path().join("l.txt"), b"\xEF\xBB\xBFcat\r\ndog\r\n").unwrap();
        std::fs::write(dir.path().join("m.txt"), b"cat\ndog\n").unwrap();
        let bom = load("r", dir.path(), &files("e.npy", "l.txt")).unwrap();
        let plain = load("r", dir.path(), &files("e.npy", "m.txt")).unwrap();
        assert_eq!(bom, plain);
        std::fs::write(dir.path().join("l.txt"), b"\xFE\xFF\0c").unwrap();
        let msg = load("r", dir.path(), &files("e.npy", "l.txt"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("l.txt") && msg.contains("UTF-16BE"), "{msg}");
    }

    #[test]
    fn npy_sizes_are_checked_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.npy");
        write_f32(&p, &[1., 2., 3., 4.], &[2, 2]);
        let mut bytes = std::fs::read(&p).unwrap();
        let good = bytes.clone();
        bytes.extend_from_slice(&[0; 4]);
        std::fs::write(&p, &bytes).unwrap();
        std::fs::write(dir.path().join("l.txt"), "a\nb\n").unwrap();
        let msg = load("r", dir.path(), &files("e.npy", "l.txt"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("e.npy") && msg.contains("4 trailing bytes"),
            "{msg}"
        );
        // A shape whose product overflows: an error, not a small array.
        let header_end = good.iter().position(|&b| b == b'\n').unwrap();
        let dict = String::from_utf8_lossy(&good[10..header_end]).into_owned();
        let start = dict.find("'shape': ").unwrap() + "'shape': ".len();
        let end = start + dict[start..].find(')').unwrap() + 1;
        let huge = "(4294967296, 4294967297)";
        let mut header = format!("{}{huge}{}", &dict[..start], &dict[end..])
            .trim_end()
            .to_owned();
        while !(10 + header.len() + 1).is_multiple_of(64) {
            header.push(' ');
        }
        header.push('\n');
        let mut file = b"\x93NUMPY\x01\x00".to_vec();
        file.extend_from_slice(&(header.len() as u16).to_le_bytes());
        file.extend_from_slice(header.as_bytes());
        file.extend_from_slice(&good[header_end + 1..]);
        std::fs::write(&p, &file).unwrap();
        let msg = load("r", dir.path(), &files("e.npy", "l.txt"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("more elements than fit in 64 bits"), "{msg}");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]

            #[test]
            fn any_bytes_never_panic(
                bytes in proptest::collection::vec(any::<u8>(), 0..300),
                magic in any::<bool>(),
            ) {
                let dir = tempfile::tempdir().unwrap();
                let mut content = if magic { b"\x93NUMPY\x01\x00".to_vec() } else { Vec::new() };
                content.extend_from_slice(&bytes);
                for name in ["e.npy", "l.npy", "l.txt"] {
                    std::fs::write(dir.path().join(name), &content).unwrap();
                }
                let _ = load("r", dir.path(), &files("e.npy", "l.npy"));
                let _ = load("r", dir.path(), &files("e.npy", "l.txt"));
            }

            #[test]
            fn written_embeddings_and_labels_read_back_equal(
                rows in 1usize..6,
                dim in 1usize..5,
                seed in proptest::collection::vec(-1e6f32..1e6, 30),
                labels in proptest::collection::vec(-3i32..3, 6),
            ) {
                let dir = tempfile::tempdir().unwrap();
                let values = &seed[..rows * dim];
                write_f32(&dir.path().join("e.npy"), values, &[rows as u64, dim as u64]);
                write_i32(&dir.path().join("l.npy"), &labels[..rows]);
                let read = load("r", dir.path(), &files("e.npy", "l.npy")).unwrap();
                prop_assert_eq!(&read.vectors[..], values);
                prop_assert_eq!(read.dim, dim);
                let mut first_seen: Vec<i32> = Vec::new();
                for &l in &labels[..rows] {
                    if !first_seen.contains(&l) {
                        first_seen.push(l);
                    }
                }
                let classes: Vec<usize> = labels[..rows]
                    .iter()
                    .map(|l| first_seen.iter().position(|f| f == l).unwrap())
                    .collect();
                prop_assert_eq!(read.classes, classes);
            }
        }
    }
}
