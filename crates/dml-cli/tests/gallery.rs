//! `dml gallery` on small PNGs and hand-placed embeddings: the files it writes, the page's DOM
//! contract (checked as text), metrics equal to `dml eval`'s, replacement of an earlier
//! gallery, bad inputs as one-line errors that write nothing, and the galleries `dml run` and
//! `dml train` write into their run folders.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{arg, dml, fails, image_folder, ok, text, write_npy};

/// A class name with every character HTML cares about.
const HOSTILE: &str = "c1 <i>&\"'";

/// Everything under `dir`, as relative paths (the check that nothing else was written).
fn tree(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            out.insert(path.strip_prefix(root).unwrap().display().to_string());
            if path.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// 3 classes of 4 PNGs and their 2-d embeddings as `dml embed` writes them (`e.npy`,
/// `e.labels.txt`, `e.paths.txt`). Class c sits near (10c, 0); the last item of class 2 sits
/// among class 0, so it is the worst query and its first class mate is at rank 9. Row 5's
/// image has been deleted and row 6's is not an image.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    npy: PathBuf,
    paths: Vec<String>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    image_folder(&root.join("images"), 0..3, 4);
    let mut values = Vec::new();
    let mut labels = String::new();
    let mut paths = Vec::new();
    for class in 0..3 {
        for i in 0..4 {
            let offset = 0.1 * i as f32;
            values.extend([10.0 * class as f32 + offset, offset]);
            labels.push_str(&format!("{}\n", ["c0", HOSTILE, "c2"][class]));
            let png = root.join(format!("images/c{class}/{i}.png"));
            paths.push(png.display().to_string());
        }
    }
    values[22] = 0.35;
    values[23] = 0.0;
    std::fs::remove_file(&paths[5]).unwrap();
    std::fs::write(&paths[6], b"not a png").unwrap();
    let npy = root.join("e.npy");
    write_npy(&npy, &[12, 2], &values);
    std::fs::write(root.join("e.labels.txt"), labels).unwrap();
    std::fs::write(root.join("e.paths.txt"), paths.join("\n") + "\n").unwrap();
    Fixture {
        _dir: dir,
        root,
        npy,
        paths,
    }
}

/// The text between `start` (exclusive) and the next `end`.
fn between<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
    let from = html.find(start).unwrap_or_else(|| panic!("no {start}")) + start.len();
    let len = html[from..]
        .find(end)
        .unwrap_or_else(|| panic!("no {end} after {start}"));
    &html[from..from + len]
}

/// The value of attribute `name` in the tag text `tag`.
fn attr<'a>(tag: &'a str, name: &str) -> &'a str {
    between(tag, &format!(" {name}=\""), "\"")
}

/// What HTML-escaping makes of `s`.
fn escaped(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[test]
fn a_gallery_of_embeddings_keeps_the_page_contract() {
    let f = fixture();
    let out = f.root.join("gallery");
    let before = tree(&f.root);
    let printed = ok(&[
        "gallery",
        "--embeddings",
        arg(&f.npy),
        "--k",
        "3",
        "--worst",
        "5",
        "--sample",
        "4",
        "--class",
        "c0",
        "--out",
        arg(&out),
    ]);
    let last = printed.lines().last().unwrap();
    assert_eq!(
        last,
        format!(
            "gallery: {} (open it in a browser)",
            out.join("index.html").display()
        )
    );
    assert!(printed.contains("2 images are missing"), "{printed}");

    // Files: the page, the marker, one thumbnail per image shown that exists; nothing else,
    // and nothing outside --out.
    let after = tree(&f.root);
    let added: Vec<&String> = after.difference(&before).collect();
    assert!(added.iter().all(|p| p.starts_with("gallery")), "{added:?}");
    let mut want: BTreeSet<String> = ["index.html", "gallery.json", "thumbs"]
        .map(String::from)
        .into();
    want.extend(
        (0..12)
            .filter(|r| ![5, 6].contains(r))
            .map(|r| format!("thumbs/{r}.jpg")),
    );
    assert_eq!(tree(&out), want);
    let thumb = image::open(out.join("thumbs/0.jpg")).unwrap();
    assert_eq!(
        (thumb.width(), thumb.height()),
        (32, 32),
        "small images stay as they are"
    );
    let marker: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("gallery.json")).unwrap()).unwrap();
    assert_eq!(marker["format"], "dml-gallery");

    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    // Self-contained: no network, no external script, style or font.
    for external in [
        "http://",
        "https://",
        "<script src",
        "<link",
        "@import",
        "url(",
    ] {
        assert!(!html.contains(external), "{external}");
    }

    // Summary: dml eval's numbers, 4 decimals.
    let eval: Value = serde_json::from_str(&ok(&[
        "eval",
        "--embeddings",
        arg(&f.npy),
        "--labels",
        arg(&f.root.join("e.labels.txt")),
        "--json",
    ]))
    .unwrap();
    let metrics = between(&html, "<section id=\"metrics\">", "</section>");
    let mut keys = Vec::new();
    for (key, value) in [
        ("recall@1", &eval["recall_at_k"]["1"]),
        ("recall@2", &eval["recall_at_k"]["2"]),
        ("recall@4", &eval["recall_at_k"]["4"]),
        ("recall@8", &eval["recall_at_k"]["8"]),
        ("precision@1", &eval["precision_at_1"]),
        ("r_precision", &eval["r_precision"]),
        ("map@r", &eval["map_at_r"]),
        ("nmi", &eval["nmi"]),
    ] {
        let row = format!(
            "<tr data-metric=\"{key}\"><td>{key}</td><td class=\"value\">{:.4}</td></tr>",
            value.as_f64().unwrap()
        );
        assert!(metrics.contains(&row), "{row} in {metrics}");
        keys.push(key);
    }
    assert_eq!(metrics.matches("<tr data-metric=").count(), keys.len());

    // The per-class table: sortable headers, one row per class, worst first.
    let classes = between(&html, "<table id=\"classes\">", "</table>");
    let head = between(classes, "<thead>", "</thead>");
    for key in ["class", "size", "recall@1", "map@r"] {
        assert!(head.contains(&format!("<th data-key=\"{key}\">")), "{key}");
    }
    let rows: Vec<&str> = classes.split("<tr data-class=\"").skip(1).collect();
    let names: Vec<&str> = rows.iter().map(|r| &r[..r.find('"').unwrap()]).collect();
    // c2 misses one query in four at rank 1; c0 and the hostile class miss none (ties by
    // MAP@R, then by name: c0's MAP@R is lowered by row 11, which sits among it).
    assert_eq!(names[0], "c2", "{names:?}");
    assert_eq!(names.len(), 3);
    assert!(names.contains(&escaped(HOSTILE).as_str()), "{names:?}");
    for row in &rows {
        assert_eq!(row.matches("<td data-value=\"").count(), 4, "{row}");
    }
    let c2 = rows[0];
    assert!(
        c2.contains("<td data-value=\"4\">4</td><td data-value=\"0.75\">0.7500</td>"),
        "{c2}"
    );

    // Query rows: the 5 worst, a sample of 4, the 4 queries of c0; 3 neighbours each.
    let queries = between(&html, "<section id=\"queries\">", "</section>");
    let blocks: Vec<&str> = queries.split("<div class=\"query\" ").skip(1).collect();
    let group = |g: &str| {
        blocks
            .iter()
            .filter(|b| b.contains(&format!("data-group=\"{g}\"")))
            .count()
    };
    assert_eq!((group("worst"), group("sample"), group("class")), (5, 4, 4));
    for block in &blocks {
        let figures: Vec<&str> = block.split("<figure class=\"neighbour\"").skip(1).collect();
        assert_eq!(figures.len(), 3, "{block}");
        for (rank, figure) in figures.iter().enumerate() {
            let tag = &figure[..figure.find('>').unwrap()];
            assert_eq!(attr(tag, "data-rank"), (rank + 1).to_string());
            assert!(["true", "false"].contains(&attr(tag, "data-same")), "{tag}");
            let distance: f64 = attr(tag, "data-distance").parse().unwrap();
            assert!(distance >= 0.0);
            assert!(figure.contains("<figcaption>"), "{figure}");
        }
        assert!(
            block.contains("<img class=\"query-image\" src=\"thumbs/")
                || block.contains("<div class=\"missing\" title=\""),
            "{block}"
        );
    }
    // The worst query is row 11 (class c2 among c0): three c0 neighbours, first c2 at 9.
    let worst = blocks[0];
    assert!(
        worst.starts_with("data-row=\"11\" data-label=\"c2\" data-group=\"worst\">"),
        "{worst}"
    );
    assert!(
        worst.contains("data-row=\"2\" data-rank=\"1\" data-same=\"false\""),
        "{worst}"
    );
    assert!(
        worst.contains("<span class=\"first-correct\" data-rank=\"9\">"),
        "{worst}"
    );
    assert!(worst.contains("<img class=\"query-image\" src=\"thumbs/11.jpg\""));
    assert!(
        !html.contains(HOSTILE),
        "the raw class name never reaches the page"
    );

    // Confusions: row 11's three c0 neighbours, and row 11 among the neighbours of each of
    // the four c0 queries, merged into one pair.
    let confusions = between(&html, "<table id=\"confusions\">", "</table>");
    let pair = "<tr data-a=\"c0\" data-b=\"c2\" data-count=\"7\"><td>c0</td><td>c2</td>";
    assert!(confusions.contains(pair), "{confusions}");

    // Missing images: placeholders where their <img> would be, each path listed once.
    let listed = between(&html, "<ul id=\"missing-images\">", "</ul>");
    for row in [5, 6] {
        let path = escaped(&f.paths[row]);
        assert_eq!(
            listed.matches(&format!(">{path}</li>")).count(),
            1,
            "{listed}"
        );
        assert!(html.contains(&format!("<div class=\"missing\" title=\"{path}\">")));
    }
    assert_eq!(listed.matches("<li").count(), 2);

    // The map: every item, with the JSON the canvas draws.
    assert!(html.contains("<canvas id=\"map\" width=\"720\" height=\"720\" data-points=\"12\">"));
    assert!(html.contains("<div id=\"map-info\">"));
    let json: Value = serde_json::from_str(between(
        &html,
        "<script id=\"map-data\" type=\"application/json\">",
        "</script>",
    ))
    .unwrap();
    assert_eq!(json["classes"][1], HOSTILE);
    let points = json["points"].as_array().unwrap();
    assert_eq!(points.len(), 12);
    for p in points {
        let p = p.as_array().unwrap();
        assert_eq!(p.len(), 5);
        assert!((0.0..=1.0).contains(&p[0].as_f64().unwrap()));
        let row = p[3].as_u64().unwrap();
        match row {
            5 | 6 => assert!(p[4].is_null()),
            _ => assert_eq!(p[4], format!("thumbs/{row}.jpg").as_str()),
        }
    }
    assert!(html.contains("document.body.dataset.ready = 'true'"));
}

#[test]
fn a_second_build_replaces_the_first_as_a_whole() {
    let f = fixture();
    let out = f.root.join("gallery");
    let build = |extra: &[&str]| {
        let mut argv = vec!["gallery", "--embeddings", arg(&f.npy), "--out", arg(&out)];
        argv.extend_from_slice(extra);
        ok(&argv)
    };
    build(&["--k", "2"]);
    assert_eq!(tree(&out.join("thumbs")).len(), 10);
    // The second shows two images (the worst query and its nearest item, no map): the other
    // thumbnails must not stay behind.
    build(&[
        "--k",
        "1",
        "--worst",
        "1",
        "--sample",
        "0",
        "--map-points",
        "0",
    ]);
    let second = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(second.contains("data-points=\"0\""));
    let thumbs: Vec<String> = tree(&out.join("thumbs")).into_iter().collect();
    assert_eq!(thumbs, ["11.jpg", "2.jpg"]);
    let hidden: Vec<String> = tree(&f.root)
        .into_iter()
        .filter(|p| p.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "temporaries left: {hidden:?}");
}

#[test]
fn bad_inputs_are_one_line_errors_that_write_nothing() {
    let f = fixture();
    let root = &f.root;
    let out = root.join("gallery");
    let labels = root.join("e.labels.txt");
    let paths = root.join("e.paths.txt");
    let gallery = |extra: &[&str]| {
        let mut argv = vec!["gallery", "--embeddings", arg(&f.npy), "--out", arg(&out)];
        argv.extend_from_slice(extra);
        let before = tree(root);
        let err = fails(&argv);
        assert_eq!(tree(root), before, "dml {argv:?} wrote something");
        err
    };
    let moved = root.join("elsewhere.txt");

    // Labels or paths neither given nor beside the embeddings.
    std::fs::rename(&labels, &moved).unwrap();
    let err = gallery(&[]);
    assert!(
        err.contains(&labels.display().to_string()) && err.contains("--labels"),
        "{err}"
    );
    std::fs::rename(&moved, &labels).unwrap();
    std::fs::rename(&paths, &moved).unwrap();
    let err = gallery(&[]);
    assert!(
        err.contains(&paths.display().to_string()) && err.contains("--paths"),
        "{err}"
    );
    let err = gallery(&["--paths", arg(&root.join("nope.txt"))]);
    assert!(err.contains("nope.txt"), "{err}");
    std::fs::rename(&moved, &paths).unwrap();

    // Line counts that differ from the rows: both files and both counts named.
    let short = root.join("short.txt");
    std::fs::write(&short, "a\nb\n").unwrap();
    let npy = f.npy.display().to_string();
    let err = gallery(&["--labels", arg(&short)]);
    assert!(
        err.contains(&format!(
            "{} has 2 labels but {npy} has 12 rows",
            short.display()
        )),
        "{err}"
    );
    let err = gallery(&["--paths", arg(&short)]);
    assert!(
        err.contains(&format!(
            "{} has 2 lines but {npy} has 12 rows",
            short.display()
        )),
        "{err}"
    );

    // One class only.
    let one = root.join("one.txt");
    std::fs::write(&one, "same\n".repeat(12)).unwrap();
    let err = gallery(&["--labels", arg(&one)]);
    assert!(
        err.contains(&one.display().to_string()) && err.contains("two classes"),
        "{err}"
    );

    // Settings: too many neighbours, a class no query has.
    let err = gallery(&["--k", "12"]);
    assert!(err.contains("11 items a query can see"), "{err}");
    let err = gallery(&["--class", "nope"]);
    assert!(err.contains("no query has the class `nope`"), "{err}");

    // An output folder that holds something else, or is a file: refused, left as it was.
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("mine.txt"), "keep").unwrap();
    let err = gallery(&[]);
    assert!(
        err.contains(&out.display().to_string()) && err.contains("`mine.txt`"),
        "{err}"
    );
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::write(&out, "a file").unwrap();
    let err = gallery(&[]);
    assert!(err.contains("not a folder"), "{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "a file");
}

/// The tiny synthetic job: 4 training and 3 held-out classes of 6 glyphs.
const TINY: &str = r#"
seed = 5

[data.dataset]
kind = "synthetic"
train_classes = 4
test_classes = 3
samples_per_class = 6

[data.batch]
classes_per_batch = 2
samples_per_class = 3
eval_batch_size = 32

[model]
embedding_dim = 8

[train]
epochs = 1

[eval]
k = [1, 2]
metrics = ["recall@k", "map@r"]
"#;

#[test]
fn run_and_train_write_the_gallery_of_their_held_out_split() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tiny.toml");
    std::fs::write(&config, TINY).unwrap();
    for command in ["run", "train"] {
        let run = dir.path().join(command);
        let printed = ok(&[command, "--config", arg(&config), "--out", arg(&run)]);
        let page = run.join("gallery/index.html");
        assert_eq!(
            printed.lines().last().unwrap(),
            format!("gallery: {} (open it in a browser)", page.display()),
            "dml {command}"
        );
        let html = std::fs::read_to_string(&page).unwrap();
        // The glyphs are drawn, not files: every one of the 18 has a thumbnail.
        assert!(html.contains("data-points=\"18\""));
        assert!(
            html.contains("<ul id=\"missing-images\">\n</ul>"),
            "dml {command}"
        );
        assert_eq!(tree(&run.join("gallery/thumbs")).len(), 18);
    }
    // The run folder is still one dml recognises: a new run into it is refused as a run.
    let run = dir.path().join("run");
    let out = dml(&["run", "--config", arg(&config), "--out", arg(&run)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("already holds a run"),
        "{}",
        text(&out.stderr)
    );
    // The same gallery as `dml gallery` of the run's embeddings computes (same metrics).
    let embeddings = run.join("embeddings/test.npy");
    let separate = dir.path().join("separate");
    ok(&[
        "gallery",
        "--embeddings",
        arg(&embeddings),
        "--out",
        arg(&separate),
    ]);
    let metrics = |page: &Path| {
        let html = std::fs::read_to_string(page).unwrap();
        between(&html, "<section id=\"metrics\">", "</section>").to_owned()
    };
    assert_eq!(
        metrics(&run.join("gallery/index.html")),
        metrics(&separate.join("index.html"))
    );
}
