//! Atomic file replacement: write a temporary file in the same folder, flush it to disk, then
//! rename it over the target. A failure at any point (disk full, a kill) leaves the previous
//! file as it was; readers never see a half-written one.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::Error;

/// Replaces `path` with `contents` atomically.
pub fn write_file(path: &Path, contents: &[u8]) -> Result<(), Error> {
    write_with(path, |file| file.write_all(contents))
}

/// Replaces `path` with what `fill` writes, atomically. If `fill` or any later step fails, the
/// temporary file is removed and `path` is untouched.
pub fn write_with(
    path: &Path,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), Error> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let temp = temp_path(path);
    let result = (|| {
        let mut file = File::create(&temp)?;
        fill(&mut file)?;
        file.flush()?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, path)?;
        // The rename itself lives in the folder: flush it too, so that after a crash the
        // folder names the new file, not a vanished temporary one.
        File::open(dir)?.sync_all()
    })();
    result.map_err(|source| {
        // Best effort: the write already failed, and a leftover temporary is harmless.
        let _ = std::fs::remove_file(&temp);
        Error::io(path, source)
    })
}

/// `<dir>/.<name>.tmp<pid>`: hidden, in the same folder (rename is atomic only within one file
/// system), and distinct per process.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that accepts `room` bytes and then fails like a full disk.
    struct FullDisk<'a> {
        inner: &'a mut File,
        room: usize,
    }

    impl Write for FullDisk<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "No space left on device",
                ));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.inner.write(&buf[..n])
        }
        fn flush(&mut self) -> io::Result<()> {
            self.inner.flush()
        }
    }

    #[test]
    fn replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        write_file(&path, b"first").unwrap();
        write_file(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn disk_full_mid_write_keeps_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.ckpt");
        write_file(&path, b"previous checkpoint").unwrap();
        let err = write_with(&path, |file| {
            FullDisk {
                inner: file,
                room: 4,
            }
            .write_all(b"a much longer new checkpoint")
        })
        .unwrap_err();
        assert!(err.to_string().contains("last.ckpt"), "{err}");
        assert!(err.to_string().contains("No space left"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"previous checkpoint");
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_folder_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("x.json");
        let err = write_file(&path, b"{}").unwrap_err();
        assert!(
            matches!(&err, Error::Io { path: p, .. } if *p == path),
            "{err}"
        );
    }
}
