//! An HTML gallery of a retrieval evaluation: the page a person opens to see *which* queries
//! fail and why, next to the numbers `dml eval` prints.
//!
//! [`build`] evaluates a set of embeddings (leave-one-out, or queries against a separate
//! reference set) and writes one self-contained folder: `index.html` (inline CSS and script,
//! no network), `thumbs/` (a small JPEG per image shown) and `gallery.json` (the marker that
//! lets a later build replace it, with the summary numbers). The page holds:
//!
//! - the summary metrics, from [`dml_eval::evaluate_per_query`] with the caller's
//!   [`EvalConfig`] (the one `dml eval` uses), so they are `dml eval`'s numbers;
//! - a per-class table (size, Recall@1, MAP@R), sortable, worst first;
//! - query rows: each query's image with its k nearest items, their distances and whether
//!   they share its class, for the worst queries, a seeded sample and chosen classes;
//! - the class pairs most often retrieved for each other;
//! - a t-SNE map ([`dml_experiment::tsne`]) of up to [`GalleryConfig::map_points`] items on
//!   a canvas.
//!
//! Images come from an [`ImageSource`]: [`PathImages`] for the paths `dml embed` writes,
//! [`DatasetImages`] for a dataset a run opened. Missing or undecodable images are shown as
//! placeholders and listed, never an error. The folder is written as a whole: built in a
//! hidden temporary sibling and renamed into place; an existing `out` is replaced only when it
//! is empty or holds an earlier gallery (its `gallery.json` says `"format": "dml-gallery"`).
//!
//! ```
//! use dml_eval::{Embeddings, Labels};
//! use dml_gallery::{GalleryConfig, GalleryInput, ItemSet, PathImages, build};
//!
//! let e = Embeddings::new(vec![0.0, 0.1, 0.2, 5.0, 5.1, 5.2], 1)?;
//! let labels = Labels::from_values(["a", "a", "a", "b", "b", "b"]);
//! let images = PathImages::new(vec![String::new(); 6], dml_data::Limits::default());
//! let input = GalleryInput {
//!     reference: ItemSet { embeddings: &e, labels: &labels, images: &images },
//!     queries: None,
//! };
//! let config = GalleryConfig { neighbours: 2, ..GalleryConfig::default() };
//! let dir = tempfile::tempdir()?;
//! let built = build(&input, &config, &dir.path().join("gallery"))?;
//! assert!(built.index.ends_with("gallery/index.html"));
//! assert_eq!(built.evaluation.retrieval.unwrap().recall_at_k[0], (1, 1.0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod analysis;
mod error;
mod html;
mod images;
mod map;
mod thumbs;
mod write;

use std::path::{Path, PathBuf};
use std::time::Instant;

use dml_eval::{
    Distance, Embeddings, EvalConfig, Evaluation, Gallery, Labels, Metric, QueryMode,
    evaluate_per_query, knn,
};

pub use error::{Error, Result};
pub use images::{DatasetImages, ImageSource, PathImages};
pub use thumbs::MissingImage;

use crate::html::{Group, Page};
use crate::thumbs::{Item, Side};

/// One set of items: embeddings, a label per row, and where each row's image is.
#[derive(Clone, Copy)]
pub struct ItemSet<'a> {
    /// One embedding per row.
    pub embeddings: &'a Embeddings,
    /// One label per row.
    pub labels: &'a Labels,
    /// The image of each row.
    pub images: &'a dyn ImageSource,
}

/// What a gallery shows: the reference set, and the queries searched against it (`None`:
/// the reference set is its own query set, leave-one-out, as `dml eval` without query
/// embeddings).
#[derive(Clone, Copy)]
pub struct GalleryInput<'a> {
    /// The items searched (the index).
    pub reference: ItemSet<'a>,
    /// Separate queries.
    pub queries: Option<ItemSet<'a>>,
}

/// Settings of [`build`].
#[derive(Debug, Clone, PartialEq)]
pub struct GalleryConfig {
    /// The evaluation behind the summary and the rankings (pass `dml eval`'s); Recall@K
    /// values whose K exceeds the items a query can see are left out (a small set), the
    /// distance also ranks the neighbours shown. Default: [`EvalConfig::default`].
    pub eval: EvalConfig,
    /// Neighbours shown per query, k. Default: 8.
    pub neighbours: usize,
    /// The queries with the lowest average precision at R shown. Default: 50.
    pub worst: usize,
    /// Queries drawn at random (with [`GalleryConfig::seed`]) shown. Default: 50.
    pub sample: usize,
    /// Classes, by name, whose every query is shown. Default: none.
    pub classes: Vec<String>,
    /// Seed of the sample, of the map's subsample and of t-SNE. Default: 0.
    pub seed: u64,
    /// The most points on the map; more reference items are subsampled (seeded), 0 draws no
    /// map. Default: 10,000 (t-SNE of 10,000 points takes seconds, and the page stays
    /// responsive).
    pub map_points: usize,
    /// t-SNE gradient steps. Default: 1,000 (van der Maaten's).
    pub map_iterations: usize,
    /// Largest side of a thumbnail, pixels. Default: 96.
    pub thumb_size: u32,
}

impl Default for GalleryConfig {
    fn default() -> Self {
        Self {
            eval: EvalConfig::default(),
            neighbours: 8,
            worst: 50,
            sample: 50,
            classes: Vec::new(),
            seed: 0,
            map_points: 10_000,
            map_iterations: 1000,
            thumb_size: 96,
        }
    }
}

/// What [`build`] wrote and measured.
#[derive(Debug, Clone)]
pub struct Built {
    /// The page to open: `<out>/index.html`.
    pub index: PathBuf,
    /// The evaluation behind the summary (the metrics `dml eval` prints).
    pub evaluation: Evaluation,
    /// Query rows on the page (a query in two groups counts twice).
    pub query_rows: usize,
    /// Points on the map.
    pub map_points: usize,
    /// Thumbnails written.
    pub thumbnails: usize,
    /// The images that could not be shown.
    pub missing: Vec<MissingImage>,
    /// Seconds per stage (`evaluate`, `neighbours`, `map`, `thumbnails`, `write`), in order.
    pub seconds: Vec<(&'static str, f64)>,
}

/// The set's row count must be its labels' and its images'.
fn check_set(set: &ItemSet<'_>, what: [&'static str; 2]) -> Result<()> {
    if set.labels.len() != set.embeddings.rows() {
        return Err(Error::LengthMismatch {
            what: what[0],
            expected: set.embeddings.rows(),
            found: set.labels.len(),
        });
    }
    if set.images.rows() != set.embeddings.rows() {
        return Err(Error::LengthMismatch {
            what: what[1],
            expected: set.embeddings.rows(),
            found: set.images.rows(),
        });
    }
    Ok(())
}

/// Builds the gallery of `input` into the folder `out`, written as a whole: built beside it
/// in a hidden temporary folder and renamed into place. `out` may be missing, empty or an
/// earlier gallery (replaced); anything else is refused before any work.
///
/// # Errors
/// [`Error::ForeignFolder`] for an `out` that is not a gallery ([`Error::NotAFolder`] for a
/// file); [`Error::OneClass`] when all items share one class; [`Error::LengthMismatch`] for
/// labels or images that do not match the rows; [`Error::InvalidParameter`] (`k`) for 0
/// neighbours or more than a query can have; [`Error::UnknownClass`] for a class no query
/// has; evaluation, t-SNE and I/O errors.
pub fn build(input: &GalleryInput<'_>, config: &GalleryConfig, out: &Path) -> Result<Built> {
    let reference = input.reference;
    check_set(
        &reference,
        [
            "labels of the reference rows",
            "images of the reference rows",
        ],
    )?;
    if let Some(q) = &input.queries {
        check_set(q, ["labels of the query rows", "images of the query rows"])?;
    }
    let (reference_labels, query_labels) = match &input.queries {
        None => (reference.labels.clone(), reference.labels.clone()),
        Some(q) => reference.labels.unify(q.labels),
    };
    let names = query_labels.names().to_vec();
    let used = |l: &Labels| {
        l.ids()
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
    };
    let mut classes = used(&reference_labels);
    classes.extend(used(&query_labels));
    if classes.len() < 2 {
        let class = classes
            .first()
            .map_or_else(String::new, |&c| names[c as usize].clone());
        return Err(Error::OneClass { class });
    }
    let query = input.queries.unwrap_or(reference);
    let query_side = match input.queries {
        Some(_) => Side::Query,
        None => Side::Reference,
    };
    let available = match input.queries {
        Some(_) => reference.embeddings.rows(),
        None => reference.embeddings.rows().saturating_sub(1),
    };
    let k = config.neighbours;
    if k == 0 || k > available {
        return Err(Error::InvalidParameter {
            param: "k",
            value: k.to_string(),
            reason: format!("it must be from 1 to the {available} items a query can see"),
        });
    }
    let chosen_classes = config
        .classes
        .iter()
        .map(|name| {
            names
                .iter()
                .position(|n| n == name)
                .map(|c| c as u32)
                .filter(|c| query_labels.ids().contains(c))
                .ok_or_else(|| Error::UnknownClass {
                    class: name.clone(),
                })
        })
        .collect::<Result<Vec<u32>>>()?;
    // After the checks of the inputs, before any work: a foreign `out` is refused up front.
    let staging = write::Staging::new(out)?;

    let mut seconds = Vec::new();
    let mut clock = Instant::now();
    let mut lap = |stage: &'static str| {
        seconds.push((stage, clock.elapsed().as_secs_f64()));
        clock = Instant::now();
    };
    let mut eval = config.eval.clone();
    eval.recall_ks.retain(|&k| k <= available);
    let gallery = input.queries.map(|_| Gallery {
        embeddings: reference.embeddings,
        labels: reference_labels.ids(),
    });
    let (evaluation, per_query) =
        evaluate_per_query(query.embeddings, query_labels.ids(), gallery, &eval)?;
    let per_query = match per_query {
        Some(p) => p,
        // The page is about rankings: compute them when the configuration asked for none.
        None => dml_eval::retrieval_per_query(
            query.embeddings,
            query_labels.ids(),
            gallery,
            eval.distance,
        )?,
    };
    lap("evaluate");
    let mode = match input.queries {
        Some(_) => QueryMode::Gallery(reference.embeddings),
        None => QueryMode::LeaveOneOut,
    };
    let neighbours = knn(query.embeddings, mode, eval.distance, k)?;
    lap("neighbours");

    let class_rows = analysis::per_class(query_labels.ids(), &per_query, &names);
    let mut groups = vec![
        (Group::Worst, analysis::worst(&per_query, config.worst)),
        (
            Group::Sample,
            analysis::sample(per_query.len(), config.sample, config.seed),
        ),
    ];
    for &c in &chosen_classes {
        groups.push((Group::Class(c), analysis::of_class(query_labels.ids(), c)));
    }
    groups.retain(|(_, rows)| !rows.is_empty());
    let confusions = analysis::confusions(
        query_labels.ids(),
        reference_labels.ids(),
        &neighbours,
        &names,
        CONFUSIONS_SHOWN,
    );
    let map_rows = map::choose_rows(reference.embeddings.rows(), config.map_points, config.seed);
    let map = map::layout(
        reference.embeddings,
        &map_rows,
        config.map_iterations,
        config.seed,
    )?;
    lap("map");

    let mut items: Vec<Item> = Vec::new();
    for (_, rows) in &groups {
        for &q in rows {
            items.push((query_side, q));
            items.extend(
                neighbours
                    .indices(q)
                    .iter()
                    .map(|&r| (Side::Reference, r as usize)),
            );
        }
    }
    items.extend(map.iter().map(|p| (Side::Reference, p.row)));
    let thumbs = thumbs::make(
        &items,
        query.images,
        reference.images,
        &staging.folder().join("thumbs"),
        config.thumb_size,
    )?;
    lap("thumbnails");

    let metrics = summary_metrics(&evaluation);
    let page = Page {
        description: describe(&evaluation, input.queries.is_none(), eval.distance, k),
        metrics: metrics.clone(),
        names: &names,
        classes: &class_rows,
        groups: groups.clone(),
        query_side,
        query_labels: query_labels.ids(),
        reference_labels: reference_labels.ids(),
        per_query: &per_query,
        neighbours: &neighbours,
        confusions: &confusions,
        map: &map,
        thumbs: &thumbs,
    };
    let index = staging.folder().join("index.html");
    std::fs::write(&index, page.render()).map_err(|e| Error::io(&index, e))?;
    let marker = serde_json::json!({
        "format": write::FORMAT,
        "version": 1,
        "leave_one_out": input.queries.is_none(),
        "num_queries": evaluation.num_queries,
        "num_reference": evaluation.num_reference,
        "neighbours": k,
        "metrics": metrics
            .iter()
            .map(|(key, value)| (key.clone(), serde_json::Value::from(*value)))
            .collect::<serde_json::Map<_, _>>(),
        "map_points": map.len(),
        "missing_images": thumbs.missing.iter().map(|m| m.path.as_str()).collect::<Vec<_>>(),
    });
    let marker_path = staging.folder().join(write::MARKER);
    let text = serde_json::to_string_pretty(&marker).unwrap_or_default();
    std::fs::write(&marker_path, text).map_err(|e| Error::io(&marker_path, e))?;
    staging.commit()?;
    lap("write");
    Ok(Built {
        index: out.join("index.html"),
        evaluation,
        query_rows: groups.iter().map(|(_, rows)| rows.len()).sum(),
        map_points: map.len(),
        thumbnails: thumbs.written,
        missing: thumbs.missing,
        seconds,
    })
}

/// Confused class pairs listed.
const CONFUSIONS_SHOWN: usize = 50;

/// The summary table's `(key, value)` pairs: `recall@K` for each K, `precision@1`,
/// `r_precision`, `map@r`, `nmi` (those the evaluation computed).
fn summary_metrics(e: &Evaluation) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    if let Some(r) = &e.retrieval {
        if e.metrics.contains(&Metric::RecallAtK) {
            out.extend(
                r.recall_at_k
                    .iter()
                    .map(|&(k, v)| (format!("recall@{k}"), v)),
            );
        }
        let single = [
            (Metric::PrecisionAt1, "precision@1", r.precision_at_1),
            (Metric::RPrecision, "r_precision", r.r_precision),
            (Metric::MapAtR, "map@r", r.map_at_r),
        ];
        for (metric, key, value) in single {
            if e.metrics.contains(&metric) {
                out.push((key.to_owned(), value));
            }
        }
    }
    if let Some(mi) = &e.mutual_info
        && e.metrics.contains(&Metric::Nmi)
    {
        out.push(("nmi".to_owned(), mi.nmi));
    }
    out
}

/// The page's one-sentence description of what was evaluated.
fn describe(e: &Evaluation, leave_one_out: bool, distance: Distance, k: usize) -> String {
    let mode = if leave_one_out {
        "leave-one-out: each item queries all the others".to_owned()
    } else {
        format!("against a separate set of {} items", e.num_reference)
    };
    format!(
        "{} queries, {mode}; {} distance; {k} nearest neighbours shown per query.",
        e.num_queries,
        distance.name()
    )
}

#[cfg(test)]
mod tests;
