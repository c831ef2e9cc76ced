//! Atomic writes of one file or of a set of files: [`dml_core::atomic`] (whose documentation
//! states the guarantee), with its errors as this crate's [`Error::Io`].

use std::path::Path;

pub use dml_core::atomic::Contents;

use crate::error::Error;

/// Replaces `path` with `contents` atomically.
pub fn write_file(path: &Path, contents: &[u8]) -> Result<(), Error> {
    dml_core::atomic::write_file(path, contents).map_err(io)
}

/// Replaces every member of `members` (files of one folder) so that readers that call
/// [`dml_core::atomic::recover_set`] first see either all old members or all new ones.
pub fn write_set(members: &[(&Path, Contents<'_>)]) -> Result<(), Error> {
    dml_core::atomic::write_set(members).map_err(io)
}

fn io(e: dml_core::atomic::Error) -> Error {
    Error::io(e.path, e.source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("x.json");
        let err = write_file(&path, b"{}").unwrap_err();
        assert!(
            matches!(&err, Error::Io { path: p, .. } if *p == path),
            "{err}"
        );
        let err = write_set(&[(&path, Contents::Bytes(b"{}"))]).unwrap_err();
        assert!(
            matches!(&err, Error::Io { path: p, .. } if *p == path),
            "{err}"
        );
    }
}
