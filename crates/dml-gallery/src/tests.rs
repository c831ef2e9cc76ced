//! Whole-gallery tests: the page's contract on a hand-made set, hostile names, separate
//! queries and the errors that stop a build.

use std::path::Path;

use dml_data::Limits;
use dml_eval::{Embeddings, EvalConfig, Labels, evaluate};

use super::*;

/// A 1-D set: class `<b>&"x'` at 0, 0.1, 0.2 and 7.3; class `plain` at 5, 5.1, 5.2 (so the
/// last item of the first class is nearer the second class).
fn set() -> (Embeddings, Labels) {
    let e = Embeddings::new(vec![0.0, 0.1, 0.2, 5.0, 5.1, 5.2, 7.3], 1).unwrap();
    let hostile = "<b>&\"x'";
    let labels = Labels::from_values([
        hostile, hostile, hostile, "plain", "plain", "plain", hostile,
    ]);
    (e, labels)
}

fn png(path: &Path, shade: u8) {
    image::GrayImage::from_pixel(120, 60, image::Luma([shade]))
        .save(path)
        .unwrap();
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

fn small() -> GalleryConfig {
    GalleryConfig {
        neighbours: 2,
        worst: 3,
        sample: 2,
        ..GalleryConfig::default()
    }
}

#[test]
fn the_page_keeps_its_contract_and_escapes_every_name() {
    let dir = tempfile::tempdir().unwrap();
    let (e, labels) = set();
    let mut paths: Vec<String> = (0..6)
        .map(|i| {
            let p = dir.path().join(format!("{i}.png"));
            png(&p, 40 * i as u8);
            p.display().to_string()
        })
        .collect();
    let gone = dir
        .path()
        .join("gone <&> \"quoted\".png")
        .display()
        .to_string();
    paths.push(gone.clone());
    let images = PathImages::new(paths, Limits::default());
    let input = GalleryInput {
        reference: ItemSet {
            embeddings: &e,
            labels: &labels,
            images: &images,
        },
        queries: None,
    };
    let out = dir.path().join("gallery");
    let config = GalleryConfig {
        classes: vec!["plain".into()],
        ..small()
    };
    let built = build(&input, &config, &out).unwrap();
    let html = read(&out.join("index.html"));

    // The metrics are dml eval's (the same evaluation, Recall@K up to the 5 items a query
    // sees): 4 decimals.
    let want = evaluate(
        &e,
        labels.ids(),
        None,
        &EvalConfig {
            recall_ks: vec![1, 2, 4],
            ..EvalConfig::default()
        },
    )
    .unwrap();
    let r = want.retrieval.unwrap();
    for (key, value) in [
        ("recall@1", r.recall_at_k[0].1),
        ("recall@2", r.recall_at_k[1].1),
        ("recall@4", r.recall_at_k[2].1),
        ("precision@1", r.precision_at_1),
        ("r_precision", r.r_precision),
        ("map@r", r.map_at_r),
        ("nmi", want.mutual_info.unwrap().nmi),
    ] {
        let row = format!(
            "<tr data-metric=\"{key}\"><td>{key}</td><td class=\"value\">{value:.4}</td></tr>"
        );
        assert!(html.contains(&row), "{row}");
    }
    assert!(!html.contains("data-metric=\"recall@8\""));
    assert_eq!(built.evaluation.retrieval.unwrap().map_at_r, r.map_at_r);

    // No user string reaches the page unescaped.
    assert!(!html.contains("<b>&\"x'"), "raw class name");
    assert!(!html.contains("gone <&>"), "raw path");
    let escaped = "&lt;b&gt;&amp;&quot;x&#39;";
    assert!(html.contains(&format!("<tr data-class=\"{escaped}\">")));
    assert!(html.contains(&format!("data-label=\"{escaped}\"")));
    assert!(
        html.contains("\\u003cb\\u003e\\u0026\\\"x'"),
        "the map's JSON"
    );
    let gone_escaped = super::html::escape(&gone);
    assert!(html.contains(&format!("<div class=\"missing\" title=\"{gone_escaped}\">")));
    let listed = format!(">{gone_escaped}</li>");
    assert_eq!(html.matches(&listed).count(), 1, "listed once");
    assert_eq!(built.missing.len(), 1);

    // Groups: the 3 worst, a sample of 2, and the 3 queries of `plain`.
    assert_eq!(html.matches("data-group=\"worst\"").count(), 3);
    assert_eq!(html.matches("data-group=\"sample\"").count(), 2);
    assert_eq!(html.matches("data-group=\"class\"").count(), 3);
    assert_eq!(built.query_rows, 8);
    assert_eq!(html.matches("class=\"neighbour\"").count(), 8 * 2);
    // Item 6 (at 7.3) is the worst query: its neighbours are 5 and 4 (class plain), its
    // class mates are at ranks 5, 6, 7 minus itself: first correct at rank 4.
    let worst = html
        .split("<div class=\"query\" data-row=\"6\"")
        .nth(1)
        .unwrap();
    let worst = worst.split("<div class=\"query\"").next().unwrap();
    assert!(worst.contains("data-group=\"worst\""));
    assert!(worst.contains(
        "<figure class=\"neighbour\" data-row=\"5\" data-rank=\"1\" data-same=\"false\""
    ));
    assert!(worst.contains("<span class=\"first-correct\" data-rank=\"4\">"));
    assert!(
        worst.contains("<div class=\"missing\""),
        "its image is the missing one"
    );

    // Thumbnails: one per image shown, shrunk to 96 px.
    let thumb = image::open(out.join("thumbs/0.jpg")).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (96, 48));
    assert_eq!(built.thumbnails, 6);
    assert!(html.contains("<canvas id=\"map\" width=\"720\" height=\"720\" data-points=\"7\">"));
    assert!(html.contains("<table id=\"confusions\">"));
    assert!(html.contains(&format!(
        "<tr data-a=\"{escaped}\" data-b=\"plain\" data-count="
    )));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no network"
    );

    let marker: serde_json::Value = serde_json::from_str(&read(&out.join("gallery.json"))).unwrap();
    assert_eq!(marker["format"], "dml-gallery");
    assert_eq!(marker["missing_images"][0], gone.as_str());
}

#[test]
fn separate_queries_search_the_reference_set() {
    let dir = tempfile::tempdir().unwrap();
    let (e, labels) = set();
    let q = Embeddings::new(vec![0.05, 5.05, 9.0], 1).unwrap();
    let q_labels = Labels::from_values(["plain", "plain", "new"]);
    let none = PathImages::new(vec![String::new(); 7], Limits::default());
    let q_images = PathImages::new(vec![String::new(); 3], Limits::default());
    let input = GalleryInput {
        reference: ItemSet {
            embeddings: &e,
            labels: &labels,
            images: &none,
        },
        queries: Some(ItemSet {
            embeddings: &q,
            labels: &q_labels,
            images: &q_images,
        }),
    };
    let out = dir.path().join("g");
    let config = GalleryConfig {
        sample: 3,
        ..small()
    };
    let built = build(&input, &config, &out).unwrap();
    let html = read(&out.join("index.html"));
    let r = built.evaluation.retrieval.unwrap();
    assert_eq!(
        (r.num_queries, r.num_reference, r.num_lone_queries),
        (3, 7, 1)
    );
    // Query 0 (plain, at 0.05) finds 3 items of the other class first: rank 4.
    assert!(html.contains("data-row=\"0\" data-label=\"plain\" data-group=\"worst\""));
    assert!(html.contains("<span class=\"first-correct\" data-rank=\"4\">"));
    assert!(
        html.contains("no other item of its class"),
        "the lone query, in the sample"
    );
    assert_eq!(built.thumbnails, 0);
    assert!(built.missing.is_empty());
    assert!(!out.join("thumbs").exists(), "no images, no thumbnails");
    assert!(html.contains("<ul id=\"missing-images\">\n</ul>"));
}

#[test]
fn bad_builds_are_errors_that_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (e, labels) = set();
    let none = PathImages::new(vec![String::new(); 7], Limits::default());
    let one = Labels::from_values(["only"; 7]);
    let input = |labels| GalleryInput {
        reference: ItemSet {
            embeddings: &e,
            labels,
            images: &none,
        },
        queries: None,
    };
    let out = dir.path().join("g");
    let err = build(&input(&one), &small(), &out).unwrap_err();
    assert!(
        matches!(&err, Error::OneClass { class } if class == "only"),
        "{err}"
    );
    let short = Labels::from_values(["a", "b"]);
    let err = build(&input(&short), &small(), &out)
        .unwrap_err()
        .to_string();
    assert_eq!(err, "labels of the reference rows: expected 7, found 2");
    let far = GalleryConfig {
        neighbours: 7,
        ..small()
    };
    let err = build(&input(&labels), &far, &out).unwrap_err().to_string();
    assert!(err.contains("the 6 items a query can see"), "{err}");
    let unknown = GalleryConfig {
        classes: vec!["nope".into()],
        ..small()
    };
    let err = build(&input(&labels), &unknown, &out)
        .unwrap_err()
        .to_string();
    assert_eq!(err, "no query has the class `nope`");
    let few_images = PathImages::new(vec![String::new(); 6], Limits::default());
    let mut short_images = input(&labels);
    short_images.reference.images = &few_images;
    let err = build(&short_images, &small(), &out)
        .unwrap_err()
        .to_string();
    assert_eq!(err, "images of the reference rows: expected 7, found 6");
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(names.is_empty(), "nothing written: {names:?}");

    // A folder of other files is refused, and kept as it was.
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let err = build(&input(&labels), &small(), &out).unwrap_err();
    assert!(matches!(err, Error::ForeignFolder { .. }), "{err}");
    assert_eq!(read(&out.join("keep.txt")), "mine");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
