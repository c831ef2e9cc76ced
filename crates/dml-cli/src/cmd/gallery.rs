//! `dml gallery`: an HTML gallery of saved embeddings (what `dml embed` writes): the metrics
//! `dml eval` prints, a per-class table, the worst queries with their neighbours, the most
//! confused classes and a t-SNE map, in one folder that opens from disk.
//!
//! Also the gallery `dml run` and `dml train` write into the run folder after training
//! ([`write_run_gallery`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use dml_data::Dataset;
use dml_eval::{Embeddings, Labels, io};
use dml_gallery::{
    Built, DatasetImages, GalleryConfig, GalleryInput, ItemSet, PathImages, build as build_gallery,
};
use dml_train::components::data::HeldOut;
use dml_train::export::ExportPaths;
use dml_train::run::EmbeddedSplit;
use dml_train::run_folder::RunPaths;

use super::eval::{check_rows, default_config};

/// The most points the map may have: t-SNE finds every point's neighbours exactly, O(n^2).
const MAX_MAP_POINTS: u64 = 100_000;

/// The most neighbours shown per query.
const MAX_NEIGHBOURS: u64 = 1000;

/// An HTML gallery of saved embeddings: metrics, per-class table, worst queries with their
/// neighbours, confused classes and a t-SNE map.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Embeddings from `dml embed` (.npy, or .safetensors with one tensor).
    ///
    /// Without --query-embeddings they are also the queries (leave-one-out,
    /// as `dml eval`).
    #[arg(long, value_name = "PATH")]
    pub(crate) embeddings: PathBuf,
    /// Labels of --embeddings (default: E.labels.txt beside E.npy).
    #[arg(long, value_name = "PATH")]
    pub(crate) labels: Option<PathBuf>,
    /// Image paths of --embeddings, one a line (default: E.paths.txt).
    ///
    /// An empty line means the row has no image. Relative paths are taken
    /// from the working directory, as `dml embed` writes them; an image
    /// inside a zip archive is written archive.zip/entry.
    #[arg(long, value_name = "PATH")]
    pub(crate) paths: Option<PathBuf>,
    /// Separate query embeddings; --embeddings is then the set searched.
    #[arg(long, value_name = "PATH")]
    pub(crate) query_embeddings: Option<PathBuf>,
    /// Labels of --query-embeddings (default: Q.labels.txt beside Q.npy).
    #[arg(long, value_name = "PATH", requires = "query_embeddings")]
    pub(crate) query_labels: Option<PathBuf>,
    /// Image paths of --query-embeddings (default: Q.paths.txt).
    #[arg(long, value_name = "PATH", requires = "query_embeddings")]
    pub(crate) query_paths: Option<PathBuf>,
    /// Neighbours shown per query.
    #[arg(long, value_name = "NUM", default_value_t = 8,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_NEIGHBOURS))]
    pub(crate) k: usize,
    /// The queries with the lowest average precision (AP@R) shown.
    #[arg(long, value_name = "NUM", default_value_t = 50)]
    pub(crate) worst: usize,
    /// Queries drawn at random (seeded by --seed) shown.
    #[arg(long, value_name = "NUM", default_value_t = 50)]
    pub(crate) sample: usize,
    /// Show every query of this class (repeatable).
    #[arg(long = "class", value_name = "NAME")]
    pub(crate) classes: Vec<String>,
    /// Seed of the sample, the map's subsample and t-SNE.
    #[arg(long, value_name = "NUM", default_value_t = 0)]
    pub(crate) seed: u64,
    /// The most points on the map (a seeded subsample beyond; 0: no map).
    #[arg(long, value_name = "NUM", default_value_t = 10_000,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=MAX_MAP_POINTS))]
    pub(crate) map_points: usize,
    /// Output folder (index.html, thumbs/, gallery.json).
    ///
    /// Written as a whole; an existing folder is replaced only when it is
    /// empty or an earlier gallery.
    #[arg(long, short = 'o', value_name = "DIR")]
    pub(crate) out: PathBuf,
}

/// One set read from its files.
struct Loaded {
    embeddings: Embeddings,
    labels: Labels,
    labels_path: PathBuf,
    images: PathImages,
}

/// `given`, or the file `dml embed` writes beside the embeddings, which must then exist.
fn beside(
    given: Option<&Path>,
    default: PathBuf,
    npy: &Path,
    flag: &str,
) -> anyhow::Result<PathBuf> {
    match given {
        Some(path) => Ok(path.to_owned()),
        None if default.exists() => Ok(default),
        None => bail!(
            "{} has no {} beside it ({} does not exist): give {flag}",
            npy.display(),
            if flag.ends_with("labels") {
                "labels"
            } else {
                "image paths"
            },
            default.display()
        ),
    }
}

/// Reads embeddings, their labels and their image paths, checking that the three agree.
fn load(
    npy: &Path,
    labels: Option<&Path>,
    paths: Option<&Path>,
    flags: [&str; 2],
) -> anyhow::Result<Loaded> {
    let defaults = ExportPaths::new(npy);
    let labels_path = beside(labels, defaults.labels, npy, flags[0])?;
    let paths_path = beside(paths, defaults.paths, npy, flags[1])?;
    let embeddings = io::read_embeddings(npy, None)?;
    let labels = io::read_labels(&labels_path)?;
    check_rows(&labels_path, labels.len(), npy, embeddings.rows())?;
    let text = dml_core::text::read_file(&paths_path)
        .with_context(|| format!("cannot read {}", paths_path.display()))?;
    let paths: Vec<String> = dml_core::text::lines(&text).map(str::to_owned).collect();
    if paths.len() != embeddings.rows() {
        bail!(
            "{} has {} lines but {} has {} rows",
            paths_path.display(),
            paths.len(),
            npy.display(),
            embeddings.rows()
        );
    }
    Ok(Loaded {
        embeddings,
        labels,
        labels_path,
        images: PathImages::new(paths, dml_data::Limits::default()),
    })
}

/// The gallery settings of the flags, with `dml eval`'s evaluation.
fn config(args: &Args) -> GalleryConfig {
    GalleryConfig {
        eval: default_config(),
        neighbours: args.k,
        worst: args.worst,
        sample: args.sample,
        classes: args.classes.clone(),
        seed: args.seed,
        map_points: args.map_points,
        ..GalleryConfig::default()
    }
}

/// A library error, with the labels files named when it is about the classes they hold.
fn name_labels(err: dml_gallery::Error, labels: &[&Path]) -> anyhow::Error {
    match err {
        dml_gallery::Error::OneClass { .. } => {
            let files: Vec<String> = labels.iter().map(|p| p.display().to_string()).collect();
            anyhow::Error::new(err).context(files.join(" and "))
        }
        err => err.into(),
    }
}

/// Reads the files and builds the gallery; also what `dml bench gallery` times. Returns the
/// seconds spent reading beside what the build measured.
pub(crate) fn build(args: &Args) -> anyhow::Result<(Built, f64)> {
    let start = Instant::now();
    let reference = load(
        &args.embeddings,
        args.labels.as_deref(),
        args.paths.as_deref(),
        ["--labels", "--paths"],
    )?;
    let query = match &args.query_embeddings {
        Some(npy) => {
            let query = load(
                npy,
                args.query_labels.as_deref(),
                args.query_paths.as_deref(),
                ["--query-labels", "--query-paths"],
            )?;
            if query.embeddings.dim() != reference.embeddings.dim() {
                bail!(
                    "{} has dimension {} but {} has dimension {}",
                    npy.display(),
                    query.embeddings.dim(),
                    args.embeddings.display(),
                    reference.embeddings.dim()
                );
            }
            Some(query)
        }
        None => None,
    };
    fn set(l: &Loaded) -> ItemSet<'_> {
        ItemSet {
            embeddings: &l.embeddings,
            labels: &l.labels,
            images: &l.images,
        }
    }
    let input = GalleryInput {
        reference: set(&reference),
        queries: query.as_ref().map(set),
    };
    let load_seconds = start.elapsed().as_secs_f64();
    let mut labels = vec![reference.labels_path.as_path()];
    labels.extend(query.as_ref().map(|q| q.labels_path.as_path()));
    let built =
        build_gallery(&input, &config(args), &args.out).map_err(|e| name_labels(e, &labels))?;
    Ok((built, load_seconds))
}

/// Runs `dml gallery`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let (built, load_seconds) = build(&args)?;
    let e = &built.evaluation;
    let metric = |key: &str| {
        let r = e.retrieval.as_ref();
        let value = match key {
            "recall@1" => r.and_then(|r| r.recall_at_k.first().map(|&(_, v)| v)),
            _ => r.map(|r| r.map_at_r),
        };
        value.map_or("n/a".to_owned(), |v| format!("{v:.4}"))
    };
    outln!(
        "{} queries against {} items: recall@1 {}, map@r {}; {} query rows, {} thumbnails, \
         a map of {} points",
        e.num_queries,
        e.num_reference,
        metric("recall@1"),
        metric("map@r"),
        built.query_rows,
        built.thumbnails,
        built.map_points
    )?;
    if !built.missing.is_empty() {
        outln!(
            "{} images are missing or do not decode (listed on the page), e.g. {}",
            built.missing.len(),
            built.missing[0].path
        )?;
    }
    let mut seconds = vec![format!("load {load_seconds:.2}")];
    seconds.extend(built.seconds.iter().map(|(s, t)| format!("{s} {t:.2}")));
    outln!("seconds: {}", seconds.join(", "))?;
    outln!("gallery: {} (open it in a browser)", built.index.display())?;
    Ok(())
}

/// Writes the gallery of a run's held-out split, embedded with the run's chosen checkpoint,
/// into `<run>/gallery/` (replacing an earlier one): images come from the dataset itself, so
/// synthetic glyphs and images inside archives are shown. Returns the page to open.
pub(crate) fn write_run_gallery(
    run_dir: &Path,
    split: &EmbeddedSplit,
    held_out: &HeldOut,
) -> anyhow::Result<PathBuf> {
    let mut by_index: Vec<Option<(Arc<dyn Dataset>, usize)>> = Vec::new();
    for (dataset, i, index) in held_out.items() {
        if by_index.len() <= index {
            by_index.resize(index + 1, None);
        }
        by_index[index] = Some((dataset.clone(), i));
    }
    let e = &split.embeddings;
    // Queries first when the split has a separate gallery (In-Shop), as its evaluator does.
    let queries = held_out.query_count().unwrap_or(0);
    let part = |keep: &dyn Fn(usize) -> bool| -> anyhow::Result<_> {
        let rows: Vec<usize> = (0..e.len()).filter(|&r| keep(e.indices[r])).collect();
        let values: Vec<f32> = rows
            .iter()
            .flat_map(|&r| e.values[r * e.dim..(r + 1) * e.dim].iter().copied())
            .collect();
        let embeddings = Embeddings::new(values, e.dim)?;
        let labels = Labels::from_values(rows.iter().map(|&r| split.class_names[r].as_str()));
        let items = rows
            .iter()
            .map(|&r| {
                by_index
                    .get(e.indices[r])
                    .cloned()
                    .flatten()
                    .with_context(|| format!("row {r} of the embedded split has no image"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((embeddings, labels, DatasetImages::new(items)))
    };
    let reference = part(&|index| index >= queries)?;
    let query = if queries > 0 {
        Some(part(&|index| index < queries)?)
    } else {
        None
    };
    fn set(part: &(Embeddings, Labels, DatasetImages)) -> ItemSet<'_> {
        ItemSet {
            embeddings: &part.0,
            labels: &part.1,
            images: &part.2,
        }
    }
    let input = GalleryInput {
        reference: set(&reference),
        queries: query.as_ref().map(set),
    };
    // A small held-out split shows every item a query can see rather than failing on k.
    let visible = match &query {
        Some(_) => reference.0.rows(),
        None => reference.0.rows().saturating_sub(1),
    };
    let defaults = GalleryConfig::default();
    let config = GalleryConfig {
        eval: default_config(),
        neighbours: defaults.neighbours.min(visible.max(1)),
        ..defaults
    };
    let out = RunPaths::new(run_dir).gallery;
    let built = build_gallery(&input, &config, &out)
        .with_context(|| format!("the gallery of the held-out split, {}", out.display()))?;
    Ok(built.index)
}

#[cfg(test)]
mod tests {
    fn parse(extra: &[&str]) -> Result<super::Args, clap::Error> {
        let mut argv = vec!["--embeddings", "e.npy", "--out", "g"];
        argv.extend_from_slice(extra);
        crate::cmd::parse_args(&argv)
    }

    #[test]
    fn defaults_and_bounds() {
        let args = parse(&[]).unwrap();
        assert_eq!(
            (args.k, args.worst, args.sample, args.seed, args.map_points),
            (8, 50, 50, 0, 10_000)
        );
        assert!(args.labels.is_none() && args.paths.is_none() && args.classes.is_empty());
        let config = super::config(&args);
        assert_eq!(config.eval, super::default_config());
        assert!(parse(&["--k", "0"]).is_err());
        assert!(parse(&["--map-points", "100001"]).is_err());
        assert_eq!(parse(&["--map-points", "0"]).unwrap().map_points, 0);
        let classes = parse(&["--class", "a<b", "--class", "c"]).unwrap().classes;
        assert_eq!(classes, ["a<b", "c"]);
        assert!(
            parse(&["--query-labels", "q.txt"]).is_err(),
            "needs queries"
        );
        assert!(parse(&["--embeddings", "x"]).is_err(), "given twice");
    }
}
