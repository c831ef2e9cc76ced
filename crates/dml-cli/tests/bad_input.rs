//! The bad-input corpus: files and arguments a careless or hostile user gives, each run
//! through the CLI. Every case must end with exit code 2 and one message naming the file, line
//! or field (never a panic, never a hang), change nothing outside its output, and lose nothing
//! already written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::{
    ONE_STEP, arg, dml, fails, image_folder, ok, text, write_npy, write_npy_header, write_png,
};

/// Every file under `root` with its bytes: what a case may not change.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// Runs `dml args` expecting exit code 2 with a message that contains every one of `names`,
/// and checks that nothing under `root` changed.
fn refused(root: &Path, args: &[&str], names: &[&str]) -> String {
    let before = snapshot(root);
    let message = fails(args);
    for name in names {
        assert!(message.contains(name), "dml {args:?}: {message}");
    }
    assert!(
        snapshot(root) == before,
        "dml {args:?} changed files under {}",
        root.display()
    );
    message
}

/// `dml train` flags for a two-step run of the small convnet on 28 x 28 glyphs.
fn train_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--threads", "1", "train", "--out", out];
    args.extend_from_slice(&ONE_STEP);
    args.extend_from_slice(extra);
    args
}

#[test]
fn a_run_folder_is_never_overwritten_or_mixed() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    ok(&train_args(arg(&run), &[]));
    let checkpoint = run.join("checkpoints/last.ckpt");
    assert!(checkpoint.is_file());

    // A second run into the same folder, or another configuration: refused, folder intact.
    for extra in [&[][..], &["--seed", "5"][..]] {
        refused(
            dir.path(),
            &train_args(arg(&run), extra),
            &[arg(&run), "--resume", "--overwrite"],
        );
    }
    let mut run_args = vec!["--threads", "1", "run", "--out", arg(&run)];
    run_args.extend_from_slice(&ONE_STEP);
    refused(dir.path(), &run_args, &["already holds a run"]);

    // Starting over removes the old run as a whole: nothing of it is left to mix.
    let stale = run.join("embeddings/test.npy");
    std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
    std::fs::write(&stale, b"from the first run").unwrap();
    ok(&train_args(arg(&run), &["--seed", "5", "--overwrite"]));
    assert!(
        !stale.exists(),
        "a file of the old run survived --overwrite"
    );
    let config = std::fs::read_to_string(run.join("config.json")).unwrap();
    assert!(config.contains("\"seed\": 5"), "{config}");

    // A folder with files dml did not write is never used, not even with --overwrite.
    let foreign = dir.path().join("photos");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("holiday.jpg"), b"not ours").unwrap();
    for extra in [&[][..], &["--overwrite"][..]] {
        refused(
            dir.path(),
            &train_args(arg(&foreign), extra),
            &[arg(&foreign), "holiday.jpg"],
        );
    }
}

/// The resolved configuration `dml train --dry-run` prints for `args`.
fn dry_run(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["train", "--dry-run"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(&all)).unwrap()
}

#[test]
fn every_setting_takes_effect_or_is_an_error() {
    // A loss flag and its parameters, in either order.
    let set_alpha = ["--set", "loss.params.alpha=2"];
    let loss = ["--loss", "MultiSimilarityLoss"];
    for args in [[set_alpha, loss].concat(), [loss, set_alpha].concat()] {
        let config = dry_run(&args);
        assert_eq!(config["loss"]["name"], "MultiSimilarityLoss", "{args:?}");
        assert_eq!(config["loss"]["params"]["alpha"], 2, "{args:?}");
    }
    let miner = [
        "--set",
        "loss.miner.params.margin=0.3",
        "--miner",
        "TripletMarginMiner",
    ];
    let config = dry_run(&miner);
    assert_eq!(config["loss"]["miner"]["params"]["margin"], 0.3);

    // Non-finite numbers, wherever they come from.
    let dir = tempfile::tempdir().unwrap();
    for (args, names) in [
        (
            &["--set", "loss.params.margin=nan"][..],
            &["loss.params.margin"][..],
        ),
        (
            &["--set", "loss.params.margin=inf"][..],
            &["loss.params.margin"][..],
        ),
        (&["--set", "eval.k=[1, -inf]"][..], &["eval.k[1]"][..]),
        (&["--lr", "NaN"][..], &["--lr", "optimizer.lr"][..]),
        (&["--lr", "inf"][..], &["--lr"][..]),
    ] {
        let mut all = vec!["train", "--dry-run"];
        all.extend_from_slice(args);
        refused(dir.path(), &all, names);
    }
    let file = dir.path().join("nan.toml");
    std::fs::write(&file, "[loss.params]\nmargin = nan\n").unwrap();
    refused(
        dir.path(),
        &["train", "--dry-run", "--config", arg(&file)],
        &["nan.toml", "loss.params.margin"],
    );

    // A flag and a `--set` of the same field: which one was meant is unknowable.
    for (args, names) in [
        (
            &["--lr", "0.1", "--set", "optimizer.lr=0.2"][..],
            &["--lr", "optimizer.lr"][..],
        ),
        (
            &[
                "--loss",
                "ContrastiveLoss",
                "--set",
                "loss.name=TripletMarginLoss",
            ][..],
            &["--loss"][..],
        ),
        (
            &["--miner", "none", "--set", "loss.miner.params.margin=0.1"][..],
            &["--miner none"][..],
        ),
        (
            &["--batch-size", "12", "--classes-per-batch", "3"][..],
            &["--batch-size"][..],
        ),
        (
            &["--data", "x", "--set", "data.dataset.kind=folder"][..],
            &["--data"][..],
        ),
        (
            &["--threads", "2", "train", "--set", "threads=3"][..],
            &["--threads"][..],
        ),
    ] {
        let mut all = if args[0] == "--threads" {
            vec![]
        } else {
            vec!["train"]
        };
        all.extend_from_slice(args);
        all.push("--dry-run");
        refused(dir.path(), &all, names);
    }

    // Flags of other commands that would be ignored.
    let labels = dir.path().join("l.txt");
    std::fs::write(&labels, "a\nb\n").unwrap();
    for (args, names) in [
        (&["--metrics", "nmi", "--k", "1"][..], &["--k"][..]),
        (&["--metrics", "map", "--seed", "3"][..], &["--seed"][..]),
        (
            &["--cluster-labels", "c.txt", "--kmeans-iters", "3"][..],
            &["--kmeans-iters", "--cluster-labels"][..],
        ),
    ] {
        let mut all = vec!["eval", "--embeddings", "e.npy", "--labels", arg(&labels)];
        all.extend_from_slice(args);
        refused(dir.path(), &all, names);
    }
    let out = dml(&[
        "embed",
        "--checkpoint",
        "c",
        "--out",
        "e.npy",
        "--data",
        "d",
        "--split",
        "train",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--split"),
        "{}",
        text(&out.stderr)
    );

    // What ran is what config.json says: the global thread count included.
    let config = dry_run(&["--set", "data.loader.workers=1"]);
    assert_eq!(config["threads"], serde_json::Value::Null);
    let config: serde_json::Value =
        serde_json::from_str(&ok(&["--threads", "3", "train", "--dry-run"])).unwrap();
    assert_eq!(config["threads"], 3);
}

#[test]
fn sizes_and_counts_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    for (args, names) in [
        (
            &["--set", "data.batch.classes_per_batch=9223372036854775807"][..],
            &["data.batch.classes_per_batch"][..],
        ),
        (
            &["--set", "data.batch.eval_batch_size=0"][..],
            &["data.batch.eval_batch_size"][..],
        ),
        (
            &["--epochs", "18446744073709551615"][..],
            &["train.epochs"][..],
        ),
        (&["--embedding-dim", "0"][..], &["model.embedding_dim"][..]),
        (
            &["--set", "data.loader.workers=100000"][..],
            &["data.loader.workers"][..],
        ),
    ] {
        let mut all = vec!["train", "--dry-run"];
        all.extend_from_slice(args);
        refused(dir.path(), &all, names);
    }
    // A K the held-out split cannot give is found before training, not after an epoch.
    let run = dir.path().join("run");
    refused(
        dir.path(),
        &train_args(arg(&run), &["--set", "eval.k=[1, 100000]"]),
        &["eval.k", "100000"],
    );
    assert!(!run.exists());
    // Arguments outside their range are usage errors (exit code 2), never a hang or a panic.
    for args in [
        &["--threads", "10000", "train", "--dry-run"][..],
        &["--threads", "0", "train", "--dry-run"][..],
        &[
            "embed",
            "--checkpoint",
            "x",
            "--out",
            "e.npy",
            "--batch-size",
            "0",
        ][..],
        &[
            "search",
            "--index",
            "x.npy",
            "--query",
            "q.png",
            "--batch-size",
            "0",
        ][..],
    ] {
        let out = dml(args);
        assert_eq!(out.status.code(), Some(2), "dml {args:?}");
        assert!(text(&out.stderr).contains("--"), "{}", text(&out.stderr));
    }
}

#[test]
fn a_closed_or_full_stderr_loses_no_run() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full");
    let closed = dir.path().join("closed");
    for (out, stderr) in [
        (
            &full,
            Stdio::from(std::fs::File::create("/dev/full").unwrap()),
        ),
        (&closed, Stdio::piped()),
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dml"))
            .args(train_args(arg(out), &[]))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        // Closing our end of the pipe makes every write to it fail (EPIPE).
        drop(child.stderr.take());
        let done = child.wait_with_output().unwrap();
        assert_eq!(done.status.code(), Some(0), "{}", out.display());
        let stdout = text(&done.stdout);
        assert!(stdout.contains("finished: 0 epochs, 1 steps"), "{stdout}");
        assert!(out.join("summary.json").is_file());
    }
}

#[test]
fn a_resumed_run_checks_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    image_folder(&images, 0..3, 4);
    let run = dir.path().join("run");
    // Killed after its first checkpoint (simulated by --max-steps 1 of a longer run): the
    // checkpoint is what resume continues from.
    ok(&train_args(
        arg(&run),
        &["--data", arg(&images), "--epochs", "3"],
    ));
    std::fs::remove_file(images.join("c2/3.png")).unwrap();
    let message = refused(
        dir.path(),
        &["--threads", "1", "train", "--resume", arg(&run)],
        &[arg(&run), "data changed", "12 images", "11"],
    );
    assert!(message.contains("train split"), "{message}");
    // The same names, one file replaced by a different image.
    write_png(&images.join("c2/3.png"), 0, 0);
    std::fs::write(
        images.join("c1/0.png"),
        std::fs::read(images.join("c0/0.png")).unwrap(),
    )
    .unwrap();
    let bigger = std::fs::read(images.join("c1/0.png")).unwrap();
    std::fs::write(images.join("c1/0.png"), [&bigger[..], b"\0"].concat()).unwrap();
    refused(
        dir.path(),
        &["--threads", "1", "train", "--resume", arg(&run)],
        &["names, classes or sizes differ"],
    );
}

/// `dml eval` of 6 two-dimensional embeddings (two tight classes) with `labels` (bytes).
fn eval_with_labels(dir: &Path, name: &str, labels: &[u8]) -> std::process::Output {
    let embeddings = dir.join("e.npy");
    let values: Vec<f32> = [0.0, 0.1, 0.2, 5.0, 5.1, 5.2]
        .iter()
        .flat_map(|&v| [v, -v])
        .collect();
    write_npy(&embeddings, &[6, 2], &values);
    let labels_file = dir.join(name);
    std::fs::write(&labels_file, labels).unwrap();
    dml(&[
        "eval",
        "--embeddings",
        arg(&embeddings),
        "--labels",
        arg(&labels_file),
        "--k",
        "1,2",
        "--json",
    ])
}

#[test]
fn text_is_read_as_written_or_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let plain = eval_with_labels(dir.path(), "plain.txt", b"a\na\na\nb\nb\nb\n");
    let marked = eval_with_labels(
        dir.path(),
        "bom.txt",
        b"\xEF\xBB\xBFa\r\na\r\na\r\nb\r\nb\r\nb\r\n",
    );
    let metrics = |out: &std::process::Output| {
        assert!(out.status.success(), "{}", text(&out.stderr));
        let mut json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        json.as_object_mut().unwrap().remove("seconds");
        json
    };
    assert_eq!(
        metrics(&marked),
        metrics(&plain),
        "a BOM or CRLF changed the metrics"
    );
    let utf16: Vec<u8> = b"\xFF\xFE"
        .iter()
        .copied()
        .chain("a\nb\n".encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    for (name, bytes, says) in [
        ("utf16.txt", &utf16[..], "UTF-16LE"),
        ("latin1.txt", &b"a\na\na\nb\nb\n\xE9\n"[..], "line 6"),
    ] {
        let out = eval_with_labels(dir.path(), name, bytes);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(name) && stderr.contains(says), "{stderr}");
    }

    // CSV lists: quoting as RFC 4180 says; an unquoted comma is an error naming the line.
    let images = dir.path().join("images");
    for class in 0..2 {
        for i in 0..2 {
            write_png(
                &images.join(format!("c{class}/with,comma {i}.png")),
                class,
                i,
            );
        }
    }
    let list = images.join("list.csv");
    let quoted: String = (0..4)
        .map(|k| {
            format!(
                "\"class, {}\",\"c{}/with,comma {}.png\"\n",
                k / 2,
                k / 2,
                k % 2
            )
        })
        .collect();
    std::fs::write(&list, format!("\u{feff}label,path\n{quoted}")).unwrap();
    let run = dir.path().join("run");
    let mut args = train_args(arg(&run), &["--data", arg(&list)]);
    args.push("--dry-run");
    ok(&args);
    ok(&train_args(arg(&run), &["--data", arg(&list)]));
    std::fs::write(&list, "label,path\n0,c0/with,comma 0.png\n").unwrap();
    let out = dir.path().join("run2");
    refused(
        dir.path(),
        &train_args(arg(&out), &["--data", arg(&list)]),
        &["list.csv:2", "quoted"],
    );

    // A file name that is not UTF-8 is named, not reported missing.
    use std::os::unix::ffi::OsStrExt;
    let odd = images
        .join("c1")
        .join(std::ffi::OsStr::from_bytes(b"bad\xff.png"));
    std::fs::copy(images.join("c1/with,comma 0.png"), &odd).unwrap();
    refused(
        dir.path(),
        &train_args(arg(&out), &["--data", arg(&images)]),
        &["not valid UTF-8", "bad\u{FFFD}.png"],
    );
}

#[test]
fn sizes_read_from_files_are_checked_before_memory_is_reserved() {
    let dir = tempfile::tempdir().unwrap();
    // A zip whose 3 MiB entry compresses to a few KiB, against a 1 MiB limit.
    let bomb = dir.path().join("bomb.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&bomb).unwrap());
    let options = zip::write::SimpleFileOptions::default();
    for class in 0..2 {
        for i in 0..2 {
            zip.start_file(format!("c{class}/{i}.png"), options)
                .unwrap();
            std::io::Write::write_all(&mut zip, &vec![0u8; 3 << 20]).unwrap();
        }
    }
    zip.finish().unwrap();
    let out = dir.path().join("run");
    refused(
        dir.path(),
        &train_args(
            arg(&out),
            &["--data", arg(&bomb), "--set", "data.limits.max_file_mib=1"],
        ),
        &["bomb.zip", "c0/0.png", "data.limits.max_file_mib = 1"],
    );

    // .npy headers whose shape overflows or promises more data than the file holds.
    let labels = dir.path().join("labels.txt");
    std::fs::write(&labels, "a\nb\n").unwrap();
    for (shape, says) in [
        ("(4294967296, 4294967297)", "more elements than fit"),
        ("(1099511627776, 4)", "cut short"),
        ("(2, 2)", "cut short"),
    ] {
        let npy = dir.path().join("e.npy");
        write_npy_header(&npy, "<f4", shape, &[0u8; 8]);
        refused(
            dir.path(),
            &["eval", "--embeddings", arg(&npy), "--labels", arg(&labels)],
            &["e.npy", says],
        );
    }
}

#[test]
fn every_bad_image_is_found_before_training_starts() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    image_folder(&images, 0..3, 4);
    std::fs::write(images.join("c0/1.png"), b"\x89PNG\r\n\x1a\n not really").unwrap();
    std::fs::write(images.join("c2/3.png"), b"").unwrap();
    let run = dir.path().join("run");
    for cache in ["0", "64"] {
        let set = format!("data.loader.cache_mib={cache}");
        refused(
            dir.path(),
            &train_args(arg(&run), &["--data", arg(&images), "--set", &set]),
            &["2 images", "c0/1.png", "c2/3.png"],
        );
        assert!(
            !run.exists(),
            "the run started before its images were checked"
        );
    }
}
