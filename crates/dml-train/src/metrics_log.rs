//! `metrics.jsonl`: one JSON object per line, for steps (every `train.log_every_steps`),
//! evaluations and the end of the run. Written by the library so every run folder has it,
//! whatever front end drove the run.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::Error;

/// An append-only JSONL file whose length is known, so that a checkpoint can record it and a
/// resumed run can cut off what was logged after that checkpoint.
pub(crate) struct MetricsLog {
    writer: BufWriter<File>,
    path: PathBuf,
    bytes: u64,
}

impl MetricsLog {
    /// Starts an empty log (replacing an old one).
    pub(crate) fn create(path: &Path) -> Result<Self, Error> {
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        Ok(MetricsLog {
            writer: BufWriter::new(file),
            path: path.to_owned(),
            bytes: 0,
        })
    }

    /// Reopens a log, cut back to its first `bytes` bytes (its length at the checkpoint a run
    /// resumes from). A log shorter than that (lost to a power failure before it reached the
    /// disk) is kept as it is.
    pub(crate) fn resume(path: &Path, bytes: u64) -> Result<Self, Error> {
        let io = |e| Error::io(path, e);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io)?;
        let length = file.metadata().map_err(io)?.len();
        if length > bytes {
            file.set_len(bytes).map_err(io)?;
        }
        let end = file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok(MetricsLog {
            writer: BufWriter::new(file),
            path: path.to_owned(),
            bytes: end,
        })
    }

    /// Appends one line.
    pub(crate) fn append(&mut self, line: &serde_json::Value) -> Result<(), Error> {
        let mut text = serde_json::to_string(line).expect("a JSON value always serialises");
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .map_err(|e| Error::io(&self.path, e))?;
        self.bytes += text.len() as u64;
        Ok(())
    }

    /// Pushes buffered lines to the file and returns its length (recorded in checkpoints).
    pub(crate) fn flush(&mut self) -> Result<u64, Error> {
        self.writer.flush().map_err(|e| Error::io(&self.path, e))?;
        Ok(self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resume_cuts_lines_written_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let mut log = MetricsLog::create(&path).unwrap();
        log.append(&json!({"step": 1})).unwrap();
        let at_checkpoint = log.flush().unwrap();
        log.append(&json!({"step": 2})).unwrap();
        log.flush().unwrap();
        drop(log);

        let mut log = MetricsLog::resume(&path, at_checkpoint).unwrap();
        log.append(&json!({"step": 2, "resumed": true})).unwrap();
        log.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(
            lines,
            [json!({"step": 1}), json!({"step": 2, "resumed": true})]
        );
    }
}
