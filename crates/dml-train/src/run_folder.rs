//! The run folder: its layout, and how a run takes possession of it.
//!
//! A folder holds one run. A new run starts only in a folder that is missing or empty; one
//! that holds a run is continued ([`Start::Resume`]) or, when asked for, removed as a whole
//! first ([`Start::Overwrite`]), so files of two runs never mix (an old `best.ckpt` beside a
//! new `last.ckpt` would make `dml embed` use the wrong model). A folder that holds anything
//! dml did not write is never removed.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// The files of a run folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPaths {
    /// The run folder itself.
    pub dir: PathBuf,
    /// `config.json`: the resolved configuration.
    pub config: PathBuf,
    /// `data.json`: the fingerprint of the data the run started with.
    pub data: PathBuf,
    /// `metrics.jsonl`: steps, evaluations and the end of the run, one JSON object a line.
    pub metrics: PathBuf,
    /// `checkpoints/`: the checkpoints.
    pub checkpoints: PathBuf,
    /// `checkpoints/last.ckpt`: where `resume` continues from.
    pub last_checkpoint: PathBuf,
    /// `checkpoints/best.ckpt`: the best `eval.monitor` so far.
    pub best_checkpoint: PathBuf,
    /// `summary.json`: how the run ended and its evaluations (see `run::RunSummary`).
    pub summary: PathBuf,
    /// `embeddings/`: the held-out split embedded with the chosen checkpoint.
    pub embeddings: PathBuf,
    /// `gallery/`: the HTML gallery of the held-out split (`dml run`, `dml train`).
    pub gallery: PathBuf,
}

/// The entries dml writes at the top of a run folder (and their hidden temporaries).
const RUN_ENTRIES: [&str; 7] = [
    "config.json",
    "data.json",
    "metrics.jsonl",
    "checkpoints",
    "summary.json",
    "embeddings",
    "gallery",
];

impl RunPaths {
    /// The layout of the run folder `dir`.
    pub fn new(dir: &Path) -> Self {
        let checkpoints = dir.join("checkpoints");
        RunPaths {
            dir: dir.to_owned(),
            config: dir.join("config.json"),
            data: dir.join("data.json"),
            metrics: dir.join("metrics.jsonl"),
            last_checkpoint: checkpoints.join("last.ckpt"),
            best_checkpoint: checkpoints.join("best.ckpt"),
            checkpoints,
            summary: dir.join("summary.json"),
            embeddings: dir.join("embeddings"),
            gallery: dir.join("gallery"),
        }
    }

    /// Checks, without changing anything, that a run can take the folder as `start` says;
    /// true when [`Start::Overwrite`] will remove a run that is there.
    ///
    /// # Errors
    /// [`Error::RunExists`] when a new run would go into a folder that holds a run, and
    /// [`Error::ForeignFolder`] when the folder holds files dml did not write (they are never
    /// removed) or run files without a `config.json`.
    pub fn check(&self, start: Start) -> Result<bool, Error> {
        if start == Start::Resume {
            return Ok(false);
        }
        let foreign = |entry: String| Error::ForeignFolder {
            dir: self.dir.clone(),
            entry,
        };
        match self.first_entry()? {
            None => Ok(false),
            Some(entry) if !is_run_entry(&entry) => Err(foreign(entry)),
            Some(_) if start == Start::New => Err(Error::RunExists {
                dir: self.dir.clone(),
            }),
            // Run files without the run's configuration: not recognisably a run of dml.
            Some(_) if !self.config.is_file() => Err(foreign("no config.json".to_owned())),
            Some(_) => Ok(true),
        }
    }

    /// Makes the folder ready for a run started as `start` says ([`RunPaths::check`]):
    /// removes the run it holds for [`Start::Overwrite`], then creates it and `checkpoints/`.
    ///
    /// # Errors
    /// Those of [`RunPaths::check`], and I/O errors naming the path.
    pub fn prepare(&self, start: Start) -> Result<(), Error> {
        if self.check(start)? {
            std::fs::remove_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        }
        std::fs::create_dir_all(&self.checkpoints).map_err(|e| Error::io(&self.checkpoints, e))
    }

    /// The first entry of the folder (a name dml does not write if there is one), `None` for
    /// a missing folder or one that holds nothing but empty run folders (`checkpoints/` of a
    /// run that failed before it wrote anything).
    fn first_entry(&self) -> Result<Option<String>, Error> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&self.dir, e)),
        };
        let mut first = None;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_run_entry(&name) {
                return Ok(Some(name));
            }
            let empty_folder =
                std::fs::read_dir(entry.path()).is_ok_and(|mut inside| inside.next().is_none());
            if !empty_folder {
                first.get_or_insert(name);
            }
        }
        Ok(first)
    }
}

fn is_run_entry(name: &str) -> bool {
    // A hidden name after a run file is an atomic writer's temporary (`.config.json.tmp123`).
    let entry = name.strip_prefix('.').unwrap_or(name);
    RUN_ENTRIES
        .iter()
        .any(|run| entry == *run || (entry != name && entry.starts_with(run)))
}

/// How a run takes its folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A new run, in a folder that is missing or empty.
    New,
    /// A new run; a run already in the folder is removed first, the folder as a whole.
    Overwrite,
    /// The run in the folder, continued from its last checkpoint.
    Resume,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    #[test]
    fn a_new_run_takes_only_a_missing_or_empty_folder() {
        let root = tempfile::tempdir().unwrap();
        let paths = RunPaths::new(&root.path().join("run"));
        paths.prepare(Start::New).unwrap();
        assert!(paths.checkpoints.is_dir());
        paths.prepare(Start::New).unwrap();
        touch(&paths.config);
        let err = paths.prepare(Start::New).unwrap_err();
        assert!(matches!(err, Error::RunExists { .. }), "{err}");
        assert!(paths.config.exists());
    }

    #[test]
    fn overwrite_removes_the_whole_run_and_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        let paths = RunPaths::new(&root.path().join("run"));
        touch(&paths.config);
        touch(&paths.best_checkpoint);
        touch(&paths.embeddings.join("test.npy"));
        paths.prepare(Start::Overwrite).unwrap();
        assert!(!paths.best_checkpoint.exists() && !paths.config.exists());
        assert!(!paths.embeddings.exists() && paths.checkpoints.is_dir());

        touch(&paths.config);
        let notes = paths.dir.join("notes.txt");
        touch(&notes);
        for start in [Start::New, Start::Overwrite] {
            let err = paths.prepare(start).unwrap_err();
            assert!(
                matches!(&err, Error::ForeignFolder { entry, .. } if entry == "notes.txt"),
                "{err}"
            );
        }
        assert!(notes.exists() && paths.config.exists());
    }

    #[test]
    fn run_files_without_a_config_are_not_removed() {
        let root = tempfile::tempdir().unwrap();
        let paths = RunPaths::new(root.path());
        touch(&paths.metrics);
        let err = paths.prepare(Start::Overwrite).unwrap_err();
        assert!(matches!(err, Error::ForeignFolder { .. }), "{err}");
        assert!(paths.metrics.exists());
    }

    #[test]
    fn resume_keeps_everything() {
        let root = tempfile::tempdir().unwrap();
        let paths = RunPaths::new(root.path());
        touch(&paths.config);
        touch(&paths.dir.join("notes.txt"));
        paths.prepare(Start::Resume).unwrap();
        assert!(paths.config.exists());
    }
}
