//! Atomic file replacement, of one file or of a set of files that belong together.
//!
//! # One file
//!
//! [`write_file`] and [`write_with`] write a temporary file in the target's folder, flush it to
//! disk, rename it over the target and flush the folder. A failure at any point (disk full, a
//! kill) leaves the previous file as it was; readers never see a half-written one.
//!
//! # A set of files
//!
//! [`write_set`] replaces several files of one folder (embeddings with their labels and paths)
//! so that, once [`recover_set`] has run, readers see either every old member or every new
//! one, whatever failed or crashed:
//!
//! 1. Every member is written to its temporary file and flushed to disk. A failure here (this
//!    is where a full disk fails) removes every temporary; the old files are untouched.
//! 2. A journal, `.<first member>.set` in the same folder, lists the temporary-to-final
//!    renames: the line `dml atomic set v1`, then `<temporary>\t<member>` per member (file
//!    names, relative to the folder). It is itself written atomically and flushed with its
//!    folder: once it is in place the new set is committed.
//! 3. The temporaries are renamed over the members, and the folder is flushed.
//! 4. The journal is removed.
//!
//! A crash (or an error) after step 2 leaves the journal behind. [`recover_set`], given any
//! member, rolls every journal of the folder that names it forward: it renames the
//! temporaries that are still there (the missing ones were renamed before the crash) and
//! removes the journal; a journal whose temporaries are all gone is stale and only removed.
//! Readers call it before they open a member, and [`write_set`] calls it before it starts.
//!
//! Not covered: two processes writing one set at the same time, and a reader that opens the
//! members while a writer is between steps 2 and 4 (it may read old and new members). Readers
//! should therefore still check that the members agree (for embeddings: as many label lines
//! as rows).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// An I/O error with the file or folder it concerns.
#[derive(Debug)]
pub struct Error {
    /// The file or folder (for a set: the member, or the journal).
    pub path: PathBuf,
    /// The operating system's error.
    pub source: io::Error,
}

impl Error {
    fn new(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error {
            path: path.into(),
            source,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path.display())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// What a member of a set holds.
pub enum Contents<'a> {
    /// These bytes.
    Bytes(&'a [u8]),
    /// What the function writes into the (empty) temporary file.
    With(&'a dyn Fn(&mut File) -> io::Result<()>),
}

impl Contents<'_> {
    fn fill(&self, file: &mut File) -> io::Result<()> {
        match self {
            Contents::Bytes(bytes) => file.write_all(bytes),
            Contents::With(fill) => fill(file),
        }
    }
}

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
    let temp = temp_path(path);
    let result = (|| {
        write_synced(&temp, fill)?;
        std::fs::rename(&temp, path)?;
        // The rename itself lives in the folder: flush it too, so that after a crash the
        // folder names the new file, not a vanished temporary one.
        sync_dir(folder(path))
    })();
    result.map_err(|source| {
        // Best effort: the write already failed, and a leftover temporary is harmless.
        let _ = std::fs::remove_file(&temp);
        Error::new(path, source)
    })
}

/// Replaces every member of `members` (files of one folder) so that readers that call
/// [`recover_set`] first see either all old members or all new ones (see the module
/// documentation for how).
///
/// # Errors
/// Members in different folders, repeated members and names that a journal cannot hold (not
/// UTF-8, or with a tab or line break) are [`io::ErrorKind::InvalidInput`] errors naming the
/// member, before anything is written. An error before the journal is in place (a full disk)
/// leaves every old member as it was and removes the temporaries; once it is in place, an
/// error leaves the journal, and the next [`recover_set`] finishes the set.
pub fn write_set(members: &[(&Path, Contents<'_>)]) -> Result<(), Error> {
    let Some(&(first, _)) = members.first() else {
        return Ok(());
    };
    let names = member_names(members)?;
    let dir = folder(first);
    // A crash of an earlier write of these files is finished first, so that its journal can
    // never name the temporaries this write is about to fill.
    recover_names(dir, &names)?;
    let renames = stage(members, &names)?;
    let journal = journal_path(first);
    write_journal(&journal, &renames)?;
    apply(dir, &journal, &renames)
}

/// Finishes an interrupted [`write_set`] that `member` belongs to, if there is one (see the
/// module documentation); does nothing otherwise. Readers of a set call it before they open
/// a member.
///
/// # Errors
/// A folder that cannot be listed (a missing one is not an error: there is nothing to
/// recover), a journal that cannot be read or parsed, and a rename or removal that fails.
pub fn recover_set(member: &Path) -> Result<(), Error> {
    match journal_name(member) {
        Some(name) => recover_names(folder(member), &[name]),
        None => Ok(()),
    }
}

/// One pending rename of a set: file names in the set's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rename {
    temp: String,
    target: String,
}

/// The first line of every journal, so that other `.*.set` files are left alone.
const JOURNAL_HEADER: &str = "dml atomic set v1";

/// Rolls forward every journal of `dir` that names one of `names`.
fn recover_names(dir: &Path, names: &[String]) -> Result<(), Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::new(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::new(dir, e))?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        if !(name.starts_with('.') && name.ends_with(".set")) || entry.path().is_dir() {
            continue;
        }
        let journal = dir.join(name);
        let Some(renames) = read_journal(&journal)? else {
            continue;
        };
        if renames.iter().any(|r| names.contains(&r.target)) {
            apply(dir, &journal, &renames)?;
        }
    }
    Ok(())
}

/// The file names of a set's members, checked: one folder, no name twice, each one a
/// journal line can hold.
fn member_names(members: &[(&Path, Contents<'_>)]) -> Result<Vec<String>, Error> {
    let dir = members.first().map(|&(path, _)| folder(path));
    let mut names = Vec::with_capacity(members.len());
    for &(path, _) in members {
        let invalid =
            |why: &str| Error::new(path, io::Error::new(io::ErrorKind::InvalidInput, why));
        if Some(folder(path)) != dir {
            return Err(invalid("the members of a set must share one folder"));
        }
        let name = journal_name(path).ok_or_else(|| {
            invalid("a set member needs a UTF-8 file name without tabs or line breaks")
        })?;
        if names.contains(&name) {
            return Err(invalid("a file is named twice in one set"));
        }
        names.push(name);
    }
    Ok(names)
}

/// Step 1: every member (named `names`) written to its temporary and flushed. On failure
/// every temporary is removed.
fn stage(members: &[(&Path, Contents<'_>)], names: &[String]) -> Result<Vec<Rename>, Error> {
    let mut renames: Vec<Rename> = Vec::with_capacity(members.len());
    for ((path, contents), name) in members.iter().zip(names) {
        let temp_file = temp_name(name);
        let temp = path.with_file_name(&temp_file);
        // Listed before it is written, so that a failure removes a half-written one too.
        renames.push(Rename {
            temp: temp_file,
            target: name.clone(),
        });
        if let Err(e) = write_synced(&temp, |file| contents.fill(file)) {
            discard(folder(path), &renames);
            return Err(Error::new(path, e));
        }
    }
    Ok(renames)
}

/// Step 2: the journal, written atomically. If it cannot be put in place the staged
/// temporaries are removed; once it is in place the set is committed.
fn write_journal(journal: &Path, renames: &[Rename]) -> Result<(), Error> {
    let dir = folder(journal);
    let mut text = format!("{JOURNAL_HEADER}\n");
    for r in renames {
        text.push_str(&format!("{}\t{}\n", r.temp, r.target));
    }
    let temp = temp_path(journal);
    let placed = write_synced(&temp, |file| file.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&temp, journal));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&temp);
        discard(dir, renames);
        return Err(Error::new(journal, e));
    }
    // The journal must be on disk before the first member is renamed.
    sync_dir(dir).map_err(|e| Error::new(journal, e))
}

/// Steps 3 and 4: the renames that are still to do, then the journal's removal.
fn apply(dir: &Path, journal: &Path, renames: &[Rename]) -> Result<(), Error> {
    for r in renames {
        let (temp, target) = (dir.join(&r.temp), dir.join(&r.target));
        match std::fs::rename(&temp, &target) {
            Ok(()) => {}
            // Renamed before a crash, or just now by a reader's recovery.
            Err(e) if e.kind() == io::ErrorKind::NotFound && !temp.exists() => {}
            Err(e) => return Err(Error::new(target, e)),
        }
    }
    // Every rename must be on disk before the journal goes: a journal that outlives its
    // temporaries is harmless, a set half renamed without its journal is not.
    sync_dir(dir).map_err(|e| Error::new(dir, e))?;
    match std::fs::remove_file(journal) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::new(journal, e)),
        _ => Ok(()),
    }
}

/// The renames a journal lists; `None` for a `.*.set` file that is not a journal.
fn read_journal(journal: &Path) -> Result<Option<Vec<Rename>>, Error> {
    let text = match std::fs::read_to_string(journal) {
        Ok(text) => text,
        // Removed by a concurrent recovery or writer since the folder was listed.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // Not UTF-8: not one of ours.
        Err(e) if e.kind() == io::ErrorKind::InvalidData => return Ok(None),
        Err(e) => return Err(Error::new(journal, e)),
    };
    let mut lines = text.lines();
    if lines.next() != Some(JOURNAL_HEADER) {
        return Ok(None);
    }
    let malformed = |line: &str| {
        Error::new(
            journal,
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("malformed set journal line {line:?}"),
            ),
        )
    };
    lines
        .map(|line| {
            let (temp, target) = line.split_once('\t').ok_or_else(|| malformed(line))?;
            if !is_plain_name(temp) || !is_plain_name(target) {
                return Err(malformed(line));
            }
            Ok(Rename {
                temp: temp.to_owned(),
                target: target.to_owned(),
            })
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

/// Removes staged temporaries after a failure (best effort: the failure is what is reported,
/// and a leftover temporary that no journal names is harmless).
fn discard(dir: &Path, renames: &[Rename]) {
    for r in renames {
        let _ = std::fs::remove_file(dir.join(&r.temp));
    }
}

/// Creates `path`, lets `fill` write it and flushes it to disk.
fn write_synced(path: &Path, fill: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    let mut file = File::create(path)?;
    fill(&mut file)?;
    file.flush()?;
    file.sync_all()
}

/// Flushes a folder's entries (renames, removals) to disk.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The folder a path is in (`.` for a bare file name).
fn folder(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// A path's file name as a journal line can hold it: UTF-8, without tabs or line breaks.
fn journal_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    is_plain_name(name).then(|| name.to_owned())
}

/// A single file name (no folder part) that a journal line can hold.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\t', '\n', '\r'])
}

/// `.<first member>.set`, beside the members.
fn journal_path(first: &Path) -> PathBuf {
    let name = first.file_name().unwrap_or_default().to_string_lossy();
    first.with_file_name(format!(".{name}.set"))
}

/// `<dir>/.<name>.tmp<pid>` (see [`temp_name`]).
fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(temp_name(&name))
}

/// `.<name>.tmp<pid>`: hidden, meant for the same folder (rename is atomic only within one
/// file system), and distinct per process.
fn temp_name(name: &str) -> String {
    format!(".{name}.tmp{}", std::process::id())
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

    /// The names and contents of every file in `dir`, sorted: what a reader could see.
    fn listing(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.file_name().into_string().unwrap();
                (name, std::fs::read(e.path()).unwrap())
            })
            .collect();
        files.sort();
        files
    }

    /// The three files of an embeddings set, and a write of `tag`'s versions of them.
    fn set_paths(dir: &Path) -> [PathBuf; 3] {
        ["E.npy", "E.labels.txt", "E.paths.txt"].map(|n| dir.join(n))
    }

    fn contents(tag: &str) -> [Vec<u8>; 3] {
        [
            format!("{tag} embeddings, a longer file").into_bytes(),
            format!("{tag} labels\n").into_bytes(),
            format!("{tag} paths\n").into_bytes(),
        ]
    }

    fn write_tagged(dir: &Path, tag: &str) {
        let paths = set_paths(dir);
        let bytes = contents(tag);
        let members: Vec<(&Path, Contents<'_>)> = paths
            .iter()
            .zip(&bytes)
            .map(|(p, b)| (p.as_path(), Contents::Bytes(b)))
            .collect();
        write_set(&members).unwrap();
    }

    fn assert_set(dir: &Path, tag: &str) {
        let expected: Vec<Vec<u8>> = contents(tag).into();
        let found: Vec<Vec<u8>> = set_paths(dir)
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        assert_eq!(found, expected, "the set is not all {tag}");
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
        assert_eq!(err.path, path);
        assert!(err.to_string().ends_with("last.ckpt"), "{err}");
        let chain = crate::error::chain(&err);
        assert!(chain.contains("No space left"), "{chain}");
        assert_eq!(std::fs::read(&path).unwrap(), b"previous checkpoint");
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_folder_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("x.json");
        let err = write_file(&path, b"{}").unwrap_err();
        assert_eq!(err.path, path, "{err}");
        assert_eq!(err.source.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_set_is_replaced_whole_and_leaves_no_journal() {
        let dir = tempfile::tempdir().unwrap();
        write_tagged(dir.path(), "old");
        write_tagged(dir.path(), "new");
        assert_set(dir.path(), "new");
        assert_eq!(listing(dir.path()).len(), 3, "{:?}", listing(dir.path()));
    }

    #[test]
    fn disk_full_at_any_member_and_byte_leaves_the_old_set_byte_identical() {
        let dir = tempfile::tempdir().unwrap();
        write_tagged(dir.path(), "old");
        let before = listing(dir.path());
        let paths = set_paths(dir.path());
        let new = contents("new");
        for failing in 0..paths.len() {
            for room in [0, 1, new[failing].len() / 2, new[failing].len() - 1] {
                let full =
                    |file: &mut File| FullDisk { inner: file, room }.write_all(&new[failing]);
                let members: Vec<(&Path, Contents<'_>)> = paths
                    .iter()
                    .zip(&new)
                    .enumerate()
                    .map(|(i, (p, b))| {
                        let c = if i == failing {
                            Contents::With(&full)
                        } else {
                            Contents::Bytes(b)
                        };
                        (p.as_path(), c)
                    })
                    .collect();
                let err = write_set(&members).unwrap_err();
                assert_eq!(err.path, paths[failing], "member {failing}, room {room}");
                assert_eq!(err.source.kind(), io::ErrorKind::StorageFull);
                // Same names (no temporary, no journal) and the same bytes.
                assert_eq!(listing(dir.path()), before, "member {failing}, room {room}");
            }
        }
    }

    /// Steps 1 and 2 of a write of `tag`, then a "crash": the journal and the temporaries.
    fn crash_after_journal(dir: &Path, tag: &str) -> (PathBuf, Vec<Rename>) {
        let paths = set_paths(dir);
        let bytes = contents(tag);
        let members: Vec<(&Path, Contents<'_>)> = paths
            .iter()
            .zip(&bytes)
            .map(|(p, b)| (p.as_path(), Contents::Bytes(b)))
            .collect();
        let names = member_names(&members).unwrap();
        let renames = stage(&members, &names).unwrap();
        let journal = journal_path(&paths[0]);
        write_journal(&journal, &renames).unwrap();
        (journal, renames)
    }

    #[test]
    fn a_journal_left_by_a_crash_is_rolled_forward_from_any_member() {
        for member in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            write_tagged(dir.path(), "old");
            let (journal, _) = crash_after_journal(dir.path(), "new");
            assert!(journal.exists());
            // Before recovery the folder still holds the old set.
            assert_set(dir.path(), "old");
            recover_set(&set_paths(dir.path())[member]).unwrap();
            assert_set(dir.path(), "new");
            assert_eq!(listing(dir.path()).len(), 3, "{:?}", listing(dir.path()));
        }
    }

    #[test]
    fn a_crash_half_way_through_the_renames_is_finished() {
        let dir = tempfile::tempdir().unwrap();
        write_tagged(dir.path(), "old");
        let (_, renames) = crash_after_journal(dir.path(), "new");
        let first = &renames[0];
        std::fs::rename(dir.path().join(&first.temp), dir.path().join(&first.target)).unwrap();
        recover_set(&set_paths(dir.path())[2]).unwrap();
        assert_set(dir.path(), "new");
        assert_eq!(listing(dir.path()).len(), 3);
    }

    #[test]
    fn a_stale_journal_without_temporaries_is_removed_and_the_files_kept() {
        let dir = tempfile::tempdir().unwrap();
        write_tagged(dir.path(), "old");
        let (journal, renames) = crash_after_journal(dir.path(), "new");
        discard(dir.path(), &renames);
        recover_set(&set_paths(dir.path())[1]).unwrap();
        assert!(!journal.exists());
        assert_set(dir.path(), "old");
        assert_eq!(listing(dir.path()).len(), 3);
    }

    #[test]
    fn the_next_write_finishes_an_interrupted_one_first() {
        let dir = tempfile::tempdir().unwrap();
        write_tagged(dir.path(), "old");
        crash_after_journal(dir.path(), "middle");
        write_tagged(dir.path(), "new");
        assert_set(dir.path(), "new");
        assert_eq!(listing(dir.path()).len(), 3);
    }

    #[test]
    fn recovery_leaves_other_sets_and_foreign_files_alone() {
        let dir = tempfile::tempdir().unwrap();
        write_tagged(dir.path(), "old");
        let (journal, _) = crash_after_journal(dir.path(), "new");
        let foreign = dir.path().join(".notes.set");
        std::fs::write(&foreign, "someone else's file\n").unwrap();
        std::fs::create_dir(dir.path().join(".folder.set")).unwrap();
        let other = dir.path().join("other.npy");
        std::fs::write(&other, "x").unwrap();
        recover_set(&other).unwrap();
        assert!(
            journal.exists(),
            "a journal not naming other.npy was applied"
        );
        assert_eq!(std::fs::read(&foreign).unwrap(), b"someone else's file\n");
        // A member in a folder that does not exist has nothing to recover.
        recover_set(&dir.path().join("none").join("E.npy")).unwrap();
    }

    #[test]
    fn a_malformed_journal_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join(".E.npy.set");
        std::fs::write(&journal, format!("{JOURNAL_HEADER}\n../escape\tE.npy\n")).unwrap();
        let err = recover_set(&dir.path().join("E.npy")).unwrap_err();
        assert_eq!(err.path, journal);
        assert_eq!(err.source.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn sets_across_folders_or_with_a_repeated_member_are_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let (a, b) = (dir.path().join("a"), sub.join("b"));
        let err =
            write_set(&[(&a, Contents::Bytes(b"1")), (&b, Contents::Bytes(b"2"))]).unwrap_err();
        assert_eq!(
            (err.path.as_path(), err.source.kind()),
            (b.as_path(), io::ErrorKind::InvalidInput)
        );
        let err =
            write_set(&[(&a, Contents::Bytes(b"1")), (&a, Contents::Bytes(b"2"))]).unwrap_err();
        assert_eq!(err.source.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        write_set(&[]).unwrap();
    }
}
