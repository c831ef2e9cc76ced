//! `dml search`: a checkpoint embeds an image folder into an index with `dml embed`; query
//! images, folders and embedding files find their nearest indexed images; mistakes are
//! one-line errors naming what is wrong.

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::common::{ONE_STEP, arg, fails, image_folder, ok, text};

/// The neighbours' `key` values of query `q` in `dml search --json` output.
fn column<'a>(json: &'a Value, q: usize, key: &str) -> Vec<&'a Value> {
    json["queries"][q]["neighbours"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n[key])
        .collect()
}

#[test]
fn indexed_images_find_themselves_first_and_mistakes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let gallery = dir.path().join("gallery");
    image_folder(&gallery, 0..4, 3);
    let run = dir.path().join("run");
    let folder = format!("data.test.path={}", gallery.display());
    let flags = [
        &[
            "--threads",
            "1",
            "run",
            "--out",
            arg(&run),
            "--data",
            arg(&gallery),
        ][..],
        &["--set", "data.test.kind=folder", "--set", &folder],
        &ONE_STEP,
    ];
    ok(&flags.concat());
    let index = dir.path().join("index.npy");
    let said = ok(&[
        "embed",
        "--checkpoint",
        arg(&run),
        "--data",
        arg(&gallery),
        "--out",
        arg(&index),
    ]);
    assert!(said.starts_with("12 x 8 embeddings"), "{said}");

    // One indexed image and a folder holding a copy of another: each finds its original.
    let query = gallery.join("c2/1.png");
    let copies = dir.path().join("copies");
    std::fs::create_dir(&copies).unwrap();
    std::fs::copy(gallery.join("c3/0.png"), copies.join("copy.png")).unwrap();
    let search = |extra: &[&str]| {
        let mut args = vec!["search", "--index", arg(&index), "-k", "3"];
        args.extend_from_slice(extra);
        ok(&args)
    };
    let images = [arg(&query), arg(&copies)];
    let json: Value = serde_json::from_str(&search(
        &[
            &["--checkpoint", arg(&run), "--json", "--query"],
            &images[..],
        ]
        .concat(),
    ))
    .unwrap();
    assert_eq!(json["k"], 3);
    assert_eq!(json["distance"], "squared-euclidean");
    assert_eq!(json["queries"][0]["query"], arg(&query));
    assert_eq!(json["queries"][1]["query"], arg(&copies.join("copy.png")));
    for (q, original, label) in [
        (0, gallery.join("c2/1.png"), "c2"),
        (1, gallery.join("c3/0.png"), "c3"),
    ] {
        assert_eq!(*column(&json, q, "path")[0], arg(&original), "{json}");
        assert_eq!(*column(&json, q, "label")[0], label, "{json}");
        let scores: Vec<f64> = column(&json, q, "score")
            .iter()
            .map(|s| s.as_f64().unwrap())
            .collect();
        assert!(scores[0] < 1e-4, "{scores:?}");
        assert!(scores.windows(2).all(|w| w[0] <= w[1]), "{scores:?}");
        let ranks: Vec<u64> = column(&json, q, "rank")
            .iter()
            .map(|r| r.as_u64().unwrap())
            .collect();
        assert_eq!(ranks, [1, 2, 3]);
    }

    // The index's own embeddings as queries: every row is its own nearest item.
    let json: Value = serde_json::from_str(&search(&[
        "--query",
        arg(&index),
        "--distance",
        "cosine",
        "--json",
    ]))
    .unwrap();
    let paths = std::fs::read_to_string(dir.path().join("index.paths.txt")).unwrap();
    for (q, path) in paths.lines().enumerate() {
        assert_eq!(json["queries"][q]["query"], path);
        assert_eq!(*column(&json, q, "row")[0], q, "{json}");
    }

    // `dml search ... | head`: a reader that goes away early ends the command quietly.
    let mut child = Command::new(env!("CARGO_BIN_EXE_dml"))
        .args(["search", "--index", arg(&index), "--query", arg(&index)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let closed = child.wait_with_output().unwrap();
    assert!(closed.status.success(), "{}", text(&closed.stderr));
    assert!(closed.stderr.is_empty(), "{}", text(&closed.stderr));

    // The table names the query and shows rank, score, label and item.
    let table = search(&["--checkpoint", arg(&run), "--query", arg(&query)]);
    assert!(
        table.starts_with("1 query, 3 nearest of 12 indexed items by squared-euclidean"),
        "{table}"
    );
    assert!(
        table.contains(&format!("query {}\n", query.display())),
        "{table}"
    );
    let first = table.lines().find(|l| l.starts_with("     1 ")).unwrap();
    assert!(
        first.contains(" c2 ") && first.ends_with(arg(&query)),
        "{table}"
    );

    let bad = dir.path().join("bad.png");
    std::fs::write(&bad, "not a png").unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let run = arg(&run);
    let cases = [
        (
            vec!["-k", "3", "--query", arg(&query)],
            "--checkpoint is needed".to_owned(),
        ),
        (
            vec!["--query", arg(&bad), "--checkpoint", run],
            format!("cannot decode image {}", bad.display()),
        ),
        (
            vec!["--query", arg(&empty), "--checkpoint", run],
            format!("{}: no images", empty.display()),
        ),
        (
            vec!["-k", "13", "--query", arg(&index)],
            format!("-k 13: the index {} has only 12 rows", index.display()),
        ),
        (
            vec!["--query", arg(&index), arg(&query)],
            "must be the only query".to_owned(),
        ),
    ];
    for (extra, says) in cases {
        let args = [&["search", "--index", arg(&index)][..], &extra[..]].concat();
        let err = fails(&args);
        assert!(err.contains(&says), "{args:?}: {err}");
    }
}
