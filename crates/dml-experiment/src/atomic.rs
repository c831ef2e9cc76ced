//! Whole-file writes that never leave a half-written file behind: dml-core's atomic writer,
//! with this crate's error.

use std::path::Path;

use crate::error::{Error, Result};

/// Replaces `path` with `bytes` atomically ([`dml_core::atomic::write_file`]): readers see
/// the old file or the new one, never a mix.
pub(crate) fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    dml_core::atomic::write_file(path, bytes).map_err(|e| Error::Io {
        path: e.path,
        source: e.source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.md");
        write(&path, b"one").unwrap();
        write(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o044, 0o044, "others cannot read: {mode:o}");
        }
    }

    #[test]
    fn missing_folder_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let msg = write(&missing.join("a.md"), b"x").unwrap_err().to_string();
        assert!(msg.contains("nope"), "{msg}");
    }
}
