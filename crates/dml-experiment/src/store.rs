//! `results.jsonl`: one [`RunRecord`] per line, appended as runs finish.
//!
//! A line is written with a single `write` of the JSON and its newline, then `fsync`ed, so a
//! killed experiment leaves at worst one unfinished last line. Readers drop such a line (one
//! with no newline that does not parse) and say so in [`TruncatedTail`]; any other bad line is
//! an error with its line number. [`ResultsStore`] is for a single writer: a resumed
//! experiment opens it, skips the runs it already holds and appends the rest.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::grid::{Axis, is_valid_name};
use crate::record::RunRecord;

/// An unfinished last line (from a killed run) that was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TruncatedTail {
    /// Its 1-based line number.
    pub line: usize,
    /// How many bytes it had.
    pub bytes: usize,
}

/// The records of a results file.
#[derive(Debug, Clone)]
pub struct LoadedResults {
    /// The records, in file order.
    pub records: Vec<RunRecord>,
    /// The unfinished last line that was dropped, if there was one.
    pub truncated_tail: Option<TruncatedTail>,
}

/// Reads a results file without changing it.
pub fn load(path: &Path) -> Result<LoadedResults> {
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    Ok(parse(path, &bytes)?.loaded)
}

/// A parsed results file and what an appender needs to continue it.
struct Parsed {
    loaded: LoadedResults,
    /// The line each run id is recorded on.
    lines: HashMap<String, usize>,
    /// Length of the well-formed prefix (everything but a truncated tail).
    good_len: u64,
    /// Whether that prefix ends in a complete record whose newline never got written.
    missing_newline: bool,
    /// Lines in that prefix.
    line_count: usize,
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Parsed> {
    let mut records = Vec::new();
    let mut first_line: HashMap<String, usize> = HashMap::new();
    let mut truncated_tail = None;
    let mut good_len = 0u64;
    let mut missing_newline = false;
    let mut start = 0usize;
    let mut line = 0usize;
    while start < bytes.len() {
        line += 1;
        let (end, terminated) = match bytes[start..].iter().position(|&b| b == b'\n') {
            Some(i) => (start + i, true),
            None => (bytes.len(), false),
        };
        let text = &bytes[start..end];
        let next = if terminated { end + 1 } else { end };
        if text.iter().all(u8::is_ascii_whitespace) {
            good_len = next as u64;
            start = next;
            continue;
        }
        match serde_json::from_slice::<RunRecord>(text) {
            Ok(record) => {
                check_names(path, line, &record)?;
                if let Some(&first) = first_line.get(&record.run_id) {
                    return Err(Error::DuplicateRun {
                        path: path.to_owned(),
                        run_id: record.run_id,
                        first_line: first,
                        line,
                    });
                }
                first_line.insert(record.run_id.clone(), line);
                records.push(record);
                good_len = next as u64;
                missing_newline = !terminated;
            }
            Err(_) if !terminated => {
                truncated_tail = Some(TruncatedTail {
                    line,
                    bytes: text.len(),
                });
            }
            Err(source) => {
                return Err(Error::MalformedRecord {
                    path: path.to_owned(),
                    line,
                    source,
                });
            }
        }
        start = next;
    }
    let line_count = if truncated_tail.is_some() {
        line - 1
    } else {
        line
    };
    Ok(Parsed {
        loaded: LoadedResults {
            records,
            truncated_tail,
        },
        lines: first_line,
        good_len,
        missing_newline,
        line_count,
    })
}

/// Dataset and loss names end up in figure file names, so they must be plain names.
fn check_names(path: &Path, line: usize, record: &RunRecord) -> Result<()> {
    for (axis, name) in [
        (Axis::Dataset, &record.axes.dataset),
        (Axis::Loss, &record.axes.loss),
    ] {
        if !is_valid_name(name) {
            return Err(Error::RecordName {
                path: path.to_owned(),
                line,
                axis,
                name: name.clone(),
            });
        }
    }
    Ok(())
}

/// An open results file that finished runs are appended to.
#[derive(Debug)]
pub struct ResultsStore {
    path: PathBuf,
    file: File,
    loaded: LoadedResults,
    lines: HashMap<String, usize>,
    next_line: usize,
}

impl ResultsStore {
    /// Opens (or creates) a results file for appending.
    ///
    /// An unfinished last line left by a killed run is cut off the file, so the next record
    /// starts on a line of its own; [`ResultsStore::truncated_tail`] reports it.
    pub fn open(path: &Path) -> Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(Error::io(path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(Error::io(path))?;
        let parsed = parse(path, &bytes)?;
        let cut = parsed.good_len < bytes.len() as u64;
        if cut {
            file.set_len(parsed.good_len).map_err(Error::io(path))?;
        }
        if parsed.missing_newline {
            file.write_all(b"\n").map_err(Error::io(path))?;
        }
        if cut || parsed.missing_newline {
            file.sync_all().map_err(Error::io(path))?;
        }
        Ok(Self {
            path: path.to_owned(),
            file,
            loaded: parsed.loaded,
            lines: parsed.lines,
            next_line: parsed.line_count + 1,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The records held, in file order (those loaded, then those appended).
    pub fn records(&self) -> &[RunRecord] {
        &self.loaded.records
    }

    /// The unfinished last line dropped when the file was opened, if any.
    pub fn truncated_tail(&self) -> Option<TruncatedTail> {
        self.loaded.truncated_tail
    }

    /// Whether a run with this id is already recorded (a resumed experiment skips it).
    pub fn contains(&self, run_id: &str) -> bool {
        self.lines.contains_key(run_id)
    }

    /// Appends one record as one line, durably (`fsync`) before returning.
    pub fn append(&mut self, record: RunRecord) -> Result<()> {
        if let Some(&first_line) = self.lines.get(&record.run_id) {
            return Err(Error::DuplicateRun {
                path: self.path.clone(),
                run_id: record.run_id,
                first_line,
                line: self.next_line,
            });
        }
        let mut line = serde_json::to_vec(&record).map_err(|source| Error::MalformedRecord {
            path: self.path.clone(),
            line: self.next_line,
            source,
        })?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(Error::io(&self.path))?;
        self.file.sync_data().map_err(Error::io(&self.path))?;
        self.lines.insert(record.run_id.clone(), self.next_line);
        self.loaded.records.push(record);
        self.next_line += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::RunAxes;
    use crate::record::{CurvePoint, FinalMetrics};

    fn record(seed: u64) -> RunRecord {
        let axes = RunAxes {
            dataset: "glyphs-1mode".into(),
            loss: "triplet-hard".into(),
            lr: 1e-3,
            batch: "4x2".parse().unwrap(),
            seed,
        };
        RunRecord {
            run_id: axes.run_id(),
            plan_name: "t".into(),
            axes,
            config: serde_json::json!({"seed": seed}),
            curve: vec![CurvePoint {
                step: 0,
                recall_at_1: Some(0.1),
                ..CurvePoint::default()
            }],
            final_metrics: FinalMetrics::default(),
            wall_seconds: 1.5,
            collapsed: false,
            embeddings: None,
        }
    }

    #[test]
    fn appended_records_reload_and_finished_runs_are_known() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.jsonl");
        let mut store = ResultsStore::open(&path).unwrap();
        store.append(record(1)).unwrap();
        store.append(record(2)).unwrap();
        drop(store);
        let store = ResultsStore::open(&path).unwrap();
        assert!(store.contains(&record(1).run_id) && store.contains(&record(2).run_id));
        assert!(!store.contains(&record(3).run_id));
        assert_eq!(store.records(), [record(1), record(2)]);
        assert_eq!(load(&path).unwrap().records, [record(1), record(2)]);
    }

    #[test]
    fn appending_a_finished_run_again_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.jsonl");
        let mut store = ResultsStore::open(&path).unwrap();
        store.append(record(1)).unwrap();
        let msg = store.append(record(1)).unwrap_err().to_string();
        assert!(
            msg.contains("already recorded on line 1") && msg.contains(":2:"),
            "{msg}"
        );
    }

    #[test]
    fn truncated_last_line_is_dropped_reported_and_cut_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.jsonl");
        let mut store = ResultsStore::open(&path).unwrap();
        store.append(record(1)).unwrap();
        drop(store);
        let full = serde_json::to_string(&record(2)).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&full.as_bytes()[..full.len() / 2]).unwrap();
        drop(f);

        let loaded = load(&path).unwrap();
        assert_eq!(loaded.records, [record(1)]);
        let tail = loaded.truncated_tail.unwrap();
        assert_eq!((tail.line, tail.bytes), (2, full.len() / 2));

        let mut store = ResultsStore::open(&path).unwrap();
        assert_eq!(store.truncated_tail(), Some(tail));
        assert!(!store.contains(&record(2).run_id));
        store.append(record(2)).unwrap();
        drop(store);
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.records, [record(1), record(2)]);
        assert_eq!(loaded.truncated_tail, None);
    }

    #[test]
    fn complete_last_record_without_newline_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.jsonl");
        std::fs::write(&path, serde_json::to_string(&record(1)).unwrap()).unwrap();
        let mut store = ResultsStore::open(&path).unwrap();
        assert_eq!(store.truncated_tail(), None);
        store.append(record(2)).unwrap();
        assert_eq!(load(&path).unwrap().records, [record(1), record(2)]);
    }

    #[test]
    fn malformed_middle_line_is_an_error_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.jsonl");
        let one = serde_json::to_string(&record(1)).unwrap();
        std::fs::write(&path, format!("{one}\n{{\"run_id\": 3\n")).unwrap();
        let msg = load(&path).unwrap_err().to_string();
        assert!(msg.contains("results.jsonl:2: not a run record"), "{msg}");
        assert!(ResultsStore::open(&path).is_err());
    }

    #[test]
    fn duplicate_run_ids_in_a_file_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.jsonl");
        let one = serde_json::to_string(&record(1)).unwrap();
        std::fs::write(&path, format!("{one}\n\n{one}\n")).unwrap();
        let msg = load(&path).unwrap_err().to_string();
        assert!(
            msg.contains(":3:") && msg.contains("already recorded on line 1"),
            "{msg}"
        );
    }

    #[test]
    fn record_names_that_cannot_be_file_names_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.jsonl");
        let mut bad = record(1);
        bad.axes.loss = "../x".into();
        std::fs::write(&path, serde_json::to_string(&bad).unwrap() + "\n").unwrap();
        let msg = load(&path).unwrap_err().to_string();
        assert!(msg.contains(":1: loss name `../x`"), "{msg}");
    }
}
