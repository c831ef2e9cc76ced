//! `dml search`: the nearest indexed items of query images or query embeddings, exactly.
//!
//! The index is what `dml embed` writes: `E.npy` with `E.labels.txt` and `E.paths.txt`
//! beside it. Any `.npy` / `.safetensors` embeddings serve; without those two files the
//! neighbours are shown by row. Queries are images (files, folders, zip archives) embedded
//! with the checkpoint that embedded the index, or one file of embeddings.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use dml_eval::{Embeddings, Neighbours, QueryMode, io, knn};
use dml_train::checkpoint::Checkpoint;
use dml_train::components::data::open_images;
use dml_train::export::ExportPaths;
use dml_train::run::{embed_split, model_from_checkpoint};
use serde_json::{Value, json};

use super::eval::DistanceArg;
use super::train::checkpoint_file;
use crate::device::DeviceArg;

/// Arguments of `dml search`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The index: embeddings written by `dml embed` (.npy or .safetensors).
    ///
    /// Its labels and paths files (E.labels.txt, E.paths.txt) are read when
    /// they are there.
    #[arg(long, value_name = "PATH")]
    index: PathBuf,
    /// Query images, folders or .zip archives of images (needs --checkpoint),
    /// or one .npy / .safetensors file of query embeddings.
    #[arg(long, value_name = "PATH", num_args = 1.., required = true)]
    query: Vec<PathBuf>,
    /// Checkpoint (.ckpt) or run folder that embeds query images; it must be
    /// the one that embedded the index.
    #[arg(long, value_name = "PATH")]
    checkpoint: Option<PathBuf>,
    /// Neighbours per query.
    #[arg(short, long, value_name = "NUM", default_value_t = 5,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    k: usize,
    /// How closeness is measured.
    #[arg(long, value_name = "DIST", default_value = "squared-euclidean")]
    distance: DistanceArg,
    /// Tensor to read from .safetensors files (default: the only one).
    #[arg(long, value_name = "NAME")]
    tensor: Option<String>,
    /// Query images per forward pass (default: the checkpoint's).
    #[arg(long, value_name = "NUM", value_parser = super::batch_size_arg())]
    batch_size: Option<usize>,
    /// Print one JSON object instead of a table.
    ///
    /// Keys: index, distance, k, queries (a list of objects: query, neighbours:
    /// a list of objects: rank, row, score, label, path; label and path are
    /// null when the index has no such file).
    #[arg(long)]
    json: bool,
}

/// Embeddings with a name for every row, when there is one.
struct Named {
    embeddings: Embeddings,
    labels: Option<Vec<String>>,
    paths: Option<Vec<String>>,
}

/// Runs `dml search`.
pub fn run(args: Args, device: DeviceArg) -> anyhow::Result<()> {
    let index = read_named(&args.index, args.tensor.as_deref())?;
    let queries = read_queries(&args, device)?;
    let (rows, dim) = (index.embeddings.rows(), index.embeddings.dim());
    if queries.embeddings.dim() != dim {
        bail!(
            "the queries have dimension {} but the index {} has dimension {dim}",
            queries.embeddings.dim(),
            args.index.display()
        );
    }
    let k = args.k;
    if k > rows {
        bail!(
            "-k {k}: the index {} has only {rows} rows",
            args.index.display()
        );
    }
    let distance = args.distance.into();
    let neighbours = knn(
        &queries.embeddings,
        QueryMode::Gallery(&index.embeddings),
        distance,
        k,
    )?;
    let results = Results {
        index: &index,
        queries: &queries,
        neighbours: &neighbours,
    };
    if args.json {
        let out = json!({
            "index": args.index.display().to_string(),
            "distance": distance.name(),
            "k": k,
            "queries": results.json(),
        });
        outln!("{}", serde_json::to_string_pretty(&out)?)?;
    } else {
        outln!(
            "{} quer{}, {k} nearest of {rows} indexed items by {}\n",
            queries.embeddings.rows(),
            if queries.embeddings.rows() == 1 {
                "y"
            } else {
                "ies"
            },
            distance.name()
        )?;
        out!("{}", results.table())?;
    }
    Ok(())
}

/// The queries: one file of embeddings, or images embedded with the checkpoint.
fn read_queries(args: &Args, device: DeviceArg) -> anyhow::Result<Named> {
    match args.query.as_slice() {
        [one] if is_embeddings_file(one) => {
            for (given, flag) in [
                (args.checkpoint.is_some(), "--checkpoint"),
                (args.batch_size.is_some(), "--batch-size"),
            ] {
                if given {
                    bail!(
                        "{flag} applies to query images, but {} already holds embeddings",
                        one.display()
                    );
                }
            }
            read_named(one, args.tensor.as_deref())
        }
        paths => {
            if let Some(file) = paths.iter().find(|p| is_embeddings_file(p)) {
                bail!(
                    "--query {}: a file of query embeddings must be the only query",
                    file.display()
                );
            }
            embed_images(args, paths, device)
        }
    }
}

/// Whether a query path is a file of embeddings rather than an image.
fn is_embeddings_file(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy") || e.eq_ignore_ascii_case("safetensors"))
}

/// Embeddings and, when `dml embed` wrote them beside, their labels and paths.
fn read_named(path: &Path, tensor: Option<&str>) -> anyhow::Result<Named> {
    let embeddings = io::read_embeddings(path, tensor)?;
    let beside = ExportPaths::new(path);
    let lines = |file: &Path| -> anyhow::Result<Option<Vec<String>>> {
        if !file.is_file() {
            return Ok(None);
        }
        let bytes =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let text = dml_core::text::decode(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let lines: Vec<String> = dml_core::text::lines(text).map(str::to_owned).collect();
        if lines.len() != embeddings.rows() {
            bail!(
                "{} has {} lines but {} has {} rows",
                file.display(),
                lines.len(),
                path.display(),
                embeddings.rows()
            );
        }
        Ok(Some(lines))
    };
    let labels = lines(&beside.labels)?;
    let paths = lines(&beside.paths)?;
    Ok(Named {
        embeddings,
        labels,
        paths,
    })
}

/// Query images embedded with the checkpoint's model and evaluation transform.
fn embed_images(args: &Args, images: &[PathBuf], device: DeviceArg) -> anyhow::Result<Named> {
    let Some(checkpoint) = &args.checkpoint else {
        bail!("--checkpoint is needed to embed query images (or give one .npy file of embeddings)");
    };
    let checkpoint = Checkpoint::read(&checkpoint_file(checkpoint)?)?;
    let mut data = checkpoint.config.data.clone();
    if let Some(batch_size) = args.batch_size {
        data.batch.eval_batch_size = batch_size;
    }
    let device = device.device()?;
    let images = open_images(&data, images)?;
    let model = model_from_checkpoint(&checkpoint, &device)?;
    let embedded = embed_split(&model, &images, &device)?;
    Ok(Named {
        embeddings: Embeddings::new(embedded.embeddings.values, embedded.embeddings.dim)?,
        labels: None,
        paths: Some(embedded.paths),
    })
}

/// Every query's neighbours, with what the index knows of them.
struct Results<'a> {
    index: &'a Named,
    queries: &'a Named,
    neighbours: &'a Neighbours,
}

impl Results<'_> {
    /// How query or index row `row` of `set` is shown: its path, else its row number.
    fn name(set: &Named, row: usize) -> String {
        match &set.paths {
            Some(paths) => paths[row].clone(),
            None => format!("row {row}"),
        }
    }

    fn json(&self) -> Value {
        let n = self.neighbours;
        (0..n.num_queries())
            .map(|q| {
                let neighbours: Vec<Value> = n
                    .indices(q)
                    .iter()
                    .zip(n.scores(q))
                    .enumerate()
                    .map(|(rank, (&row, &score))| {
                        let row = row as usize;
                        json!({
                            "rank": rank + 1,
                            "row": row,
                            "score": score,
                            "label": self.index.labels.as_ref().map(|l| &l[row]),
                            "path": self.index.paths.as_ref().map(|p| &p[row]),
                        })
                    })
                    .collect();
                json!({ "query": Self::name(self.queries, q), "neighbours": neighbours })
            })
            .collect()
    }

    fn table(&self) -> String {
        let n = self.neighbours;
        let label_width = self.index.labels.as_ref().map_or(0, |labels| {
            labels
                .iter()
                .map(|l| l.chars().count())
                .max()
                .unwrap_or(0)
                .max(5)
        });
        let mut out = String::new();
        for q in 0..n.num_queries() {
            out.push_str(&format!("query {}\n", Self::name(self.queries, q)));
            out.push_str(&format!("{:>6} {:>12}", "rank", "score"));
            if label_width > 0 {
                out.push_str(&format!("  {:<label_width$}", "label"));
            }
            out.push_str("  item\n");
            for (rank, (&row, &score)) in n.indices(q).iter().zip(n.scores(q)).enumerate() {
                let row = row as usize;
                out.push_str(&format!("{:>6} {score:>12.6}", rank + 1));
                if let Some(labels) = &self.index.labels {
                    out.push_str(&format!("  {:<label_width$}", labels[row]));
                }
                out.push_str(&format!("  {}\n", Self::name(self.index, row)));
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    fn parse(argv: &[&str]) -> Result<super::Args, clap::Error> {
        crate::cmd::parse_args(argv)
    }

    #[test]
    fn queries_are_one_or_more_paths_and_k_is_positive() {
        let args = parse(&["--index", "e.npy", "--query", "a.png", "dir", "-k", "3"]).unwrap();
        assert_eq!(args.query.len(), 2);
        assert_eq!(args.k, 3);
        assert_eq!(
            parse(&["--index", "e.npy", "--query", "q.npy"]).unwrap().k,
            5
        );
        assert!(parse(&["--index", "e.npy"]).is_err());
        assert!(parse(&["--index", "e.npy", "--query", "q.npy", "-k", "0"]).is_err());
    }

    #[test]
    fn embeddings_files_are_told_from_images_by_extension() {
        use std::path::Path;
        assert!(super::is_embeddings_file(Path::new("q.NPY")));
        assert!(super::is_embeddings_file(Path::new("q.safetensors")));
        assert!(!super::is_embeddings_file(Path::new("q.png")));
        assert!(!super::is_embeddings_file(Path::new("folder")));
    }

    /// A two-row index `e.npy` in `dir`, with its labels and paths (`a`, `b`).
    fn two_row_index(dir: &std::path::Path) -> std::path::PathBuf {
        let npy = dir.join("e.npy");
        let embeddings = dml_train::task::Embeddings {
            values: vec![0.5; 4],
            dim: 2,
            labels: vec![0, 1],
            indices: vec![0, 1],
        };
        let names = ["a".to_owned(), "b".to_owned()];
        dml_train::export::write_embeddings(&npy, &embeddings, &names, &names).unwrap();
        npy
    }

    /// Sidecars saved with a byte-order mark and CRLF line ends read as written; UTF-16 ones
    /// are refused with a message saying how to fix them.
    #[test]
    fn sidecars_lose_a_byte_order_mark_and_utf16_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let npy = two_row_index(dir.path());
        let labels = dir.path().join("e.labels.txt");
        std::fs::write(&labels, b"\xEF\xBB\xBFcat\r\ndog\r\n").unwrap();
        let named = super::read_named(&npy, None).unwrap();
        assert_eq!(named.labels.unwrap(), ["cat", "dog"]);
        std::fs::write(&labels, b"\xFF\xFEc\0a\0t\0\n\0").unwrap();
        let err = super::read_named(&npy, None).err().unwrap().to_string();
        assert!(
            err.starts_with(&format!("{}: the text is UTF-16LE", labels.display()))
                && err.ends_with("save the file as UTF-8"),
            "{err}"
        );
    }

    /// Embeddings beside a labels file from another write (a mixed set) are refused.
    #[test]
    fn sidecars_that_disagree_with_the_rows_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let npy = two_row_index(dir.path());
        assert!(super::read_named(&npy, None).is_ok());
        let labels = dir.path().join("e.labels.txt");
        std::fs::write(&labels, "a\nb\nc\n").unwrap();
        let err = super::read_named(&npy, None).err().unwrap().to_string();
        let says = format!(
            "{} has 3 lines but {} has 2 rows",
            labels.display(),
            npy.display()
        );
        assert_eq!(err, says);
    }
}
