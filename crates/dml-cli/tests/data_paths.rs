//! `dml run` on image files as users bring them: an image folder (one sub-folder per class),
//! a CSV list `label,relative/path`, and the In-Shop layout with its query and gallery sets.
//! The images are small PNGs the test draws itself.

use std::path::Path;

use crate::common::{ONE_STEP, dml, image_folder, write_png};

fn run_ok(dir: &Path, data: &[&str]) -> String {
    let out = dir.join("run");
    let mut args = vec!["--threads", "1", "run", "--out", out.to_str().unwrap()];
    args.extend_from_slice(data);
    args.extend_from_slice(&ONE_STEP);
    let run = dml(&args);
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(out.join("embeddings/test.npy").is_file());
    stdout
}

/// The `after` Recall@1 of `dml run`'s table.
fn recall_at_1(table: &str) -> f64 {
    let row = table
        .lines()
        .find(|l| l.starts_with("recall@1 "))
        .unwrap_or_else(|| panic!("no recall@1 row in:\n{table}"));
    row.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[test]
fn an_image_folder_trains_and_a_second_folder_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = (dir.path().join("train"), dir.path().join("test"));
    image_folder(&train, 0..3, 4);
    image_folder(&test, 3..6, 3);
    let table = run_ok(
        dir.path(),
        &[
            "--data",
            train.to_str().unwrap(),
            "--set",
            "data.test.kind=folder",
            "--set",
            &format!("data.test.path={}", test.display()),
        ],
    );
    assert!((0.0..=1.0).contains(&recall_at_1(&table)), "{table}");
    let labels =
        std::fs::read_to_string(dir.path().join("run/embeddings/test.labels.txt")).unwrap();
    assert_eq!(labels.lines().count(), 9);
    assert!(
        labels.lines().all(|l| ["c3", "c4", "c5"].contains(&l)),
        "{labels}"
    );
}

#[test]
fn a_csv_list_trains_and_its_bad_line_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    image_folder(&images, 0..6, 4);
    let list = |classes: std::ops::Range<usize>| {
        let mut text = String::from("label,path\n");
        for class in classes {
            for i in 0..4 {
                text += &format!("{class},c{class}/{i}.png\n");
            }
        }
        text
    };
    let (train, test) = (dir.path().join("train.csv"), dir.path().join("test.csv"));
    std::fs::write(&train, list(0..3)).unwrap();
    std::fs::write(&test, list(3..6)).unwrap();
    let root = images.to_str().unwrap();
    let (train_path, test_path) = (
        format!("data.dataset.path={}", train.display()),
        format!("data.test.path={}", test.display()),
    );
    let (train_root, test_root) = (
        format!("data.dataset.root={root}"),
        format!("data.test.root={root}"),
    );
    let train_set = [
        "--set",
        "data.dataset.kind=csv",
        "--set",
        &train_path,
        "--set",
        &train_root,
    ];
    let test_set = [
        "--set",
        "data.test.kind=csv",
        "--set",
        &test_path,
        "--set",
        &test_root,
    ];
    let table = run_ok(dir.path(), &[&train_set[..], &test_set[..]].concat());
    assert!((0.0..=1.0).contains(&recall_at_1(&table)), "{table}");

    std::fs::write(&train, list(0..3) + "5\n").unwrap();
    let bad = dir.path().join("bad");
    let run = dml(&[
        &["train", "--out", bad.to_str().unwrap()][..],
        &train_set[..],
    ]
    .concat());
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("train.csv:14"), "{err}");
}

#[test]
fn in_shop_evaluates_queries_against_the_gallery() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("in-shop");
    let mut rows = Vec::new();
    // Items 0-2 train (4 images each); items 3-5 have 1 query and 2 gallery images each.
    for item in 0..6 {
        for i in 0..4 {
            let status = match (item < 3, i) {
                (true, _) => "train",
                (false, 0) => "query",
                (false, 1 | 2) => "gallery",
                (false, _) => continue,
            };
            let rel = format!("img/WOMEN/Dresses/id_{item:08}/{i:02}_1_front.jpg");
            write_png(&root.join("Img").join(&rel), item, i);
            rows.push(format!("{rel} id_{item:08} {status}"));
        }
    }
    let text = format!(
        "{}\nimage_name item_id evaluation_status\n{}\n",
        rows.len(),
        rows.join("\n")
    );
    std::fs::create_dir_all(root.join("Eval")).unwrap();
    std::fs::write(root.join("Eval/list_eval_partition.txt"), text).unwrap();
    let table = run_ok(
        dir.path(),
        &[
            "--set",
            "data.dataset.kind=in-shop",
            "--set",
            &format!("data.dataset.path={}", root.display()),
            "--set",
            "eval.k=[1, 2]",
        ],
    );
    // Recall@1 over 3 queries, each with its item's 2 gallery images among 6.
    let r1 = recall_at_1(&table);
    assert!(
        [0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]
            .iter()
            .any(|v| (v - r1).abs() < 1e-3),
        "{table}"
    );
    let labels =
        std::fs::read_to_string(dir.path().join("run/embeddings/test.labels.txt")).unwrap();
    assert_eq!(
        labels.lines().count(),
        9,
        "queries and gallery are both embedded"
    );
}
