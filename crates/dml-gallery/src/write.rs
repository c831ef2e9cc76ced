//! The output folder, written as a whole: the gallery is built in a hidden temporary sibling
//! of the target and renamed into place, so a reader sees the old gallery or the new one,
//! never a mix, and a failed build leaves the old one untouched.
//!
//! A folder is replaced only when it is missing, empty, or an earlier gallery: it holds
//! [`MARKER`] with the format tag [`FORMAT`] and nothing but the entries a gallery has. Any
//! other folder (or a file) is refused, naming what is in the way.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// The file that marks a folder as a gallery: JSON with `"format":` [`FORMAT`].
pub const MARKER: &str = "gallery.json";

/// The format tag in [`MARKER`].
pub const FORMAT: &str = "dml-gallery";

/// The entries of a gallery folder.
const ENTRIES: [&str; 3] = ["index.html", MARKER, "thumbs"];

/// Makes the temporary names of one process distinct.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// What is at the output path now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existing {
    /// Nothing: the gallery is renamed into place.
    Nothing,
    /// An empty folder or an earlier gallery: moved aside, replaced, then removed.
    Replaceable,
}

/// Checks what is at `out`.
fn existing(out: &Path) -> Result<Existing> {
    let foreign = |entry: String| Error::ForeignFolder {
        dir: out.to_owned(),
        entry,
    };
    let meta = match std::fs::symlink_metadata(out) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::Nothing),
        Err(e) => return Err(Error::io(out, e)),
    };
    if !meta.is_dir() {
        return Err(Error::NotAFolder {
            path: out.to_owned(),
        });
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(out).map_err(|e| Error::io(out, e))? {
        let entry = entry.map_err(|e| Error::io(out, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    if names.is_empty() {
        return Ok(Existing::Replaceable);
    }
    if let Some(other) = names.iter().find(|n| !ENTRIES.contains(&n.as_str())) {
        return Err(foreign(other.clone()));
    }
    let marker = out.join(MARKER);
    let tagged = std::fs::read(&marker)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|v| v["format"] == FORMAT);
    if !tagged {
        return Err(foreign(format!(
            "no {MARKER} with \"format\": \"{FORMAT}\""
        )));
    }
    Ok(Existing::Replaceable)
}

/// A gallery being built: a hidden temporary folder beside the output folder, removed on
/// drop unless [`Staging::commit`] moved it into place.
#[derive(Debug)]
pub(crate) struct Staging {
    out: PathBuf,
    temporary: PathBuf,
    committed: bool,
}

/// A hidden sibling of `out` for `purpose` (`tmp`, `old`), unique to this process and call.
fn sibling(out: &Path, name: &str, purpose: &str) -> PathBuf {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    out.with_file_name(format!(".{name}.{purpose}-{}-{n}", std::process::id()))
}

impl Staging {
    /// Checks that `out` may be replaced and creates the temporary folder beside it (and
    /// `out`'s missing parent folders).
    ///
    /// # Errors
    /// [`Error::ForeignFolder`] for an output that is not missing, empty or a gallery,
    /// [`Error::NotAFolder`] for a file; [`Error::InvalidParameter`] for a path without a folder name (`/`, `..`); I/O errors.
    pub fn new(out: &Path) -> Result<Self> {
        let name =
            out.file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| Error::InvalidParameter {
                    param: "out",
                    value: out.display().to_string(),
                    reason: "it must end in a folder name (UTF-8)".to_owned(),
                })?;
        existing(out)?;
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let temporary = sibling(out, name, "tmp");
        std::fs::create_dir(&temporary).map_err(|e| Error::io(&temporary, e))?;
        Ok(Self {
            out: out.to_owned(),
            temporary,
            committed: false,
        })
    }

    /// The folder to build the gallery in.
    pub fn folder(&self) -> &Path {
        &self.temporary
    }

    /// Moves the built gallery into place: an earlier gallery (checked again, in case
    /// something else appeared meanwhile) is moved aside, the new one renamed in, the old one
    /// removed. If the rename fails the old gallery is put back.
    ///
    /// # Errors
    /// Those of [`Staging::new`]'s check, and I/O errors.
    pub fn commit(mut self) -> Result<()> {
        let name = self
            .out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match existing(&self.out)? {
            Existing::Nothing => {
                std::fs::rename(&self.temporary, &self.out).map_err(|e| Error::io(&self.out, e))?;
            }
            Existing::Replaceable => {
                let old = sibling(&self.out, &name, "old");
                std::fs::rename(&self.out, &old).map_err(|e| Error::io(&self.out, e))?;
                if let Err(e) = std::fs::rename(&self.temporary, &self.out) {
                    // Best effort: the error about the new gallery is the one to report.
                    let _ = std::fs::rename(&old, &self.out);
                    return Err(Error::io(&self.out, e));
                }
                std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
            }
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: a leftover hidden folder is all a failure here leaves.
            let _ = std::fs::remove_dir_all(&self.temporary);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn build(out: &Path, page: &str) -> Result<()> {
        let staging = Staging::new(out)?;
        std::fs::write(staging.folder().join("index.html"), page).unwrap();
        std::fs::write(
            staging.folder().join(MARKER),
            format!("{{\"format\": \"{FORMAT}\"}}"),
        )
        .unwrap();
        staging.commit()
    }

    #[test]
    fn a_gallery_is_created_then_replaced_as_a_whole() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("deep/gal");
        build(&out, "one").unwrap();
        std::fs::create_dir(out.join("thumbs")).unwrap();
        std::fs::write(out.join("thumbs/old.jpg"), "x").unwrap();
        build(&out, "two").unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("index.html")).unwrap(),
            "two"
        );
        assert_eq!(names(&out), ["gallery.json", "index.html"], "no old thumbs");
        assert_eq!(
            names(&dir.path().join("deep")),
            ["gal"],
            "no temporaries left"
        );
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        build(&empty, "three").unwrap();
        assert_eq!(names(&empty), ["gallery.json", "index.html"]);
    }

    #[test]
    fn anything_else_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("notes.txt"), "mine").unwrap();
        let err = build(&other, "x").unwrap_err().to_string();
        assert!(
            err.contains("other") && err.contains("`notes.txt`"),
            "{err}"
        );
        assert_eq!(names(&other), ["notes.txt"]);
        // Gallery names without the marker (or with another format) are not a gallery.
        let fake = dir.path().join("fake");
        std::fs::create_dir(&fake).unwrap();
        std::fs::write(fake.join("index.html"), "mine").unwrap();
        let err = build(&fake, "x").unwrap_err().to_string();
        assert!(err.contains("no gallery.json"), "{err}");
        std::fs::write(fake.join(MARKER), "{\"format\": \"something\"}").unwrap();
        assert!(build(&fake, "x").is_err());
        assert_eq!(
            std::fs::read_to_string(fake.join("index.html")).unwrap(),
            "mine"
        );
        let file = dir.path().join("file");
        std::fs::write(&file, "mine").unwrap();
        let err = build(&file, "x").unwrap_err().to_string();
        assert!(err.contains("not a folder"), "{err}");
        assert!(Staging::new(Path::new("/")).is_err());
        assert_eq!(
            names(dir.path()),
            ["fake", "file", "other"],
            "nothing written beside"
        );
    }

    #[test]
    fn a_failed_build_leaves_the_old_gallery_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("gal");
        build(&out, "one").unwrap();
        let staging = Staging::new(&out).unwrap();
        std::fs::write(staging.folder().join("index.html"), "half").unwrap();
        drop(staging);
        assert_eq!(
            std::fs::read_to_string(out.join("index.html")).unwrap(),
            "one"
        );
        assert_eq!(names(dir.path()), ["gal"]);
    }
}
