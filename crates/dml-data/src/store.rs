//! Where a dataset's files live: a directory or a zip archive, behind one interface.
//!
//! Readers name files by relative `/`-separated paths and never care which of the two holds
//! them, so every layout (CSV list, image folder, CUB, Omniglot...) can be read straight from a
//! zip archive as well as from an unpacked folder.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zip::ZipArchive;
use zip::result::ZipError;

use crate::{Error, Limits};

/// File extensions (lower case) of the image formats dml decodes.
pub(crate) const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Whether a relative path names an image dml can decode, judged by its extension.
pub(crate) fn is_image_path(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    if name.starts_with('.') {
        return false;
    }
    match name.rsplit_once('.') {
        Some((_, ext)) => IMAGE_EXTENSIONS.iter().any(|e| ext.eq_ignore_ascii_case(e)),
        None => false,
    }
}

/// A directory or a zip archive that holds a dataset's files.
///
/// Cloning is cheap and clones share the open archive; every thread can read at once. Every
/// read holds to the store's [`Limits`]: no file or entry is read past
/// [`Limits::max_file_mib`], whatever its header declares.
#[derive(Clone, Debug)]
pub struct ImageStore {
    kind: StoreKind,
    limits: Limits,
}

#[derive(Clone, Debug)]
enum StoreKind {
    Directory(PathBuf),
    Zip(ZipStore),
}

/// A zip archive opened once; its central directory is parsed once and shared.
#[derive(Clone, Debug)]
struct ZipStore {
    path: PathBuf,
    archive: ZipArchive<PositionedFile>,
    /// Entry-name prefix of the store's root inside the archive: "" or "folder/".
    prefix: String,
}

impl ImageStore {
    /// Opens `path`: a directory, or a `.zip` archive, with the default [`Limits`].
    ///
    /// When every entry of an archive lies under one top-level folder that holds no image
    /// directly (`omniglot_small1/Greek/...`, `CUB_200_2011/images.txt`), that folder becomes
    /// the root, as if the archive had been unpacked and the folder given.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::open_with(path, Limits::default())
    }

    /// [`ImageStore::open`] with reads and decoding bounded by `limits`.
    pub fn open_with(path: impl AsRef<Path>, limits: Limits) -> Result<Self, Error> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::MissingFile {
                path: path.to_path_buf(),
                listed_in: None,
            },
            _ => Error::io(path, e),
        })?;
        if meta.is_dir() {
            return Ok(Self {
                kind: StoreKind::Directory(path.to_path_buf()),
                limits,
            });
        }
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let reader = PositionedFile {
            file: Arc::new(file),
            len: meta.len(),
            pos: 0,
        };
        let archive = ZipArchive::new(reader).map_err(|source| Error::Zip {
            path: path.to_path_buf(),
            source,
        })?;
        let prefix = single_top_folder(archive.file_names()).unwrap_or_default();
        Ok(Self {
            kind: StoreKind::Zip(ZipStore {
                path: path.to_path_buf(),
                archive,
                prefix,
            }),
            limits,
        })
    }

    /// The limits its reads hold to.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The same store rooted at its sub-folder `sub` (relative, `/`-separated).
    pub fn subfolder(&self, sub: &str) -> Self {
        let sub = sub.trim_matches('/');
        let kind = match &self.kind {
            StoreKind::Directory(root) => StoreKind::Directory(root.join(sub)),
            StoreKind::Zip(z) => StoreKind::Zip(ZipStore {
                prefix: format!("{}{sub}/", z.prefix),
                ..z.clone()
            }),
        };
        Self {
            kind,
            limits: self.limits,
        }
    }

    /// The path a user would recognise for `rel`: `root/rel`, or `archive.zip/entry`.
    pub fn display_path(&self, rel: &str) -> PathBuf {
        match &self.kind {
            StoreKind::Directory(root) => root.join(rel),
            StoreKind::Zip(z) => z.path.join(format!("{}{rel}", z.prefix)),
        }
    }

    /// Whether `rel` exists as a file in the store.
    pub fn contains(&self, rel: &str) -> bool {
        match &self.kind {
            StoreKind::Directory(root) => root.join(rel).is_file(),
            StoreKind::Zip(z) => z
                .archive
                .index_for_name(&format!("{}{rel}", z.prefix))
                .is_some(),
        }
    }

    /// The size in bytes of the file `rel` (a zip entry's uncompressed size), `None` when it
    /// is missing.
    pub fn size(&self, rel: &str) -> Option<u64> {
        match &self.kind {
            StoreKind::Directory(root) => std::fs::metadata(root.join(rel)).ok().map(|m| m.len()),
            StoreKind::Zip(z) => {
                let index = z.archive.index_for_name(&format!("{}{rel}", z.prefix))?;
                let mut archive = z.archive.clone();
                archive.by_index_raw(index).ok().map(|entry| entry.size())
            }
        }
    }

    /// Reads the whole file `rel`.
    ///
    /// # Errors
    /// A missing file, and a file or zip entry larger than [`Limits::max_file_mib`] (by its
    /// declared size, before anything is allocated, or by what it holds, read no further).
    pub fn read(&self, rel: &str) -> Result<Vec<u8>, Error> {
        let missing = || Error::MissingFile {
            path: self.display_path(rel),
            listed_in: None,
        };
        match &self.kind {
            StoreKind::Directory(root) => read_file(&root.join(rel), &self.limits),
            StoreKind::Zip(z) => {
                // A clone shares the parsed central directory and the open file; it only owns
                // its read position, so threads never wait for each other (see PositionedFile).
                let mut archive = z.archive.clone();
                let mut entry = archive.by_name(&format!("{}{rel}", z.prefix)).map_err(
                    |source| match source {
                        ZipError::FileNotFound => missing(),
                        source => Error::Zip {
                            path: self.display_path(rel),
                            source,
                        },
                    },
                )?;
                let declared = entry.size();
                self.limits
                    .read_all(&mut entry, declared, &self.display_path(rel))
            }
        }
    }

    /// Reads the file `rel` as UTF-8 text ([`dml_core::text::decode`]: a byte-order mark is
    /// dropped, UTF-16 and invalid UTF-8 are errors naming the file and line).
    pub fn read_text(&self, rel: &str) -> Result<String, Error> {
        let bytes = self.read(rel)?;
        dml_core::text::decode(&bytes)
            .map(str::to_owned)
            .map_err(|e| Error::text(self.display_path(rel), e))
    }

    /// The names of the folders directly under the root, sorted, hidden ones left out.
    ///
    /// # Errors
    /// Folder names that are not UTF-8 ([`Error::NonUtf8Names`], listing every one): such a
    /// folder could be neither named in a class list nor opened again by its name, so it is
    /// refused rather than skipped (which would drop its images silently) or renamed.
    pub fn folders(&self) -> Result<Vec<String>, Error> {
        let mut folders: Vec<String> = match &self.kind {
            StoreKind::Directory(root) => {
                let (mut out, mut bad) = (Vec::new(), Vec::new());
                for entry in std::fs::read_dir(root).map_err(|e| Error::io(root, e))? {
                    let entry = entry.map_err(|e| Error::io(root, e))?;
                    if entry.path().is_dir() {
                        let name = entry.file_name();
                        match name.to_str() {
                            Some(name) => out.push(name.to_owned()),
                            None => {
                                let lossy = name.to_string_lossy().into_owned();
                                if !is_hidden(&lossy) {
                                    bad.push(lossy);
                                }
                            }
                        }
                    }
                }
                non_utf8_names(root, bad)?;
                out
            }
            StoreKind::Zip(z) => z
                .archive
                .file_names()
                .filter_map(|n| n.strip_prefix(z.prefix.as_str()))
                .filter_map(|n| n.split_once('/').map(|(first, _)| first.to_owned()))
                .collect(),
        };
        folders.retain(|f| !is_hidden(f));
        folders.sort();
        folders.dedup();
        Ok(folders)
    }

    /// Every file under the root, as sorted relative `/`-separated paths.
    ///
    /// # Errors
    /// Images (by extension, outside hidden folders) whose path is not UTF-8
    /// ([`Error::NonUtf8Names`], listing every one): dml names files by UTF-8 paths, so such
    /// an image could not be opened again by its name, and skipping it would drop it
    /// silently. Other files with such names are left out, as every reader ignores them.
    pub fn files(&self) -> Result<Vec<String>, Error> {
        let mut files = match &self.kind {
            StoreKind::Directory(root) => {
                let (mut files, mut bad) = (Vec::new(), Vec::new());
                for entry in walkdir::WalkDir::new(root).follow_links(true) {
                    let entry = entry.map_err(|e| {
                        let path = e.path().unwrap_or(root).to_path_buf();
                        Error::io(path, e.into())
                    })?;
                    if !entry.file_type().is_file() {
                        continue;
                    }
                    let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
                    let parts: Option<Vec<&str>> =
                        rel.components().map(|c| c.as_os_str().to_str()).collect();
                    match parts {
                        Some(parts) => files.push(parts.join("/")),
                        None => {
                            let lossy: Vec<_> = rel
                                .components()
                                .map(|c| c.as_os_str().to_string_lossy())
                                .collect();
                            let lossy = lossy.join("/");
                            if is_image_path(&lossy) && !lossy.split('/').any(is_hidden) {
                                bad.push(lossy);
                            }
                        }
                    }
                }
                non_utf8_names(root, bad)?;
                files
            }
            StoreKind::Zip(z) => z
                .archive
                .file_names()
                .filter(|n| !n.ends_with('/'))
                .filter_map(|n| n.strip_prefix(z.prefix.as_str()))
                .map(str::to_owned)
                .collect(),
        };
        files.sort();
        Ok(files)
    }
}

/// Reads the file `path` whole, within [`Limits::max_file_mib`]; a missing file is
/// [`Error::MissingFile`].
pub(crate) fn read_file(path: &Path, limits: &Limits) -> Result<Vec<u8>, Error> {
    let file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::MissingFile {
            path: path.to_path_buf(),
            listed_in: None,
        },
        _ => Error::io(path, e),
    })?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    limits.read_all(file, len, path)
}

/// The error for the names in `folder` that are not UTF-8, if there are any.
fn non_utf8_names(folder: &Path, mut names: Vec<String>) -> Result<(), Error> {
    if names.is_empty() {
        return Ok(());
    }
    names.sort();
    Err(Error::NonUtf8Names {
        folder: folder.to_path_buf(),
        names,
    })
}

/// Whether a file or folder name is hidden or an archiver's metadata (`.git`, `__MACOSX`).
pub(crate) fn is_hidden(name: &str) -> bool {
    name.starts_with('.') || name == "__MACOSX"
}

/// The single top-level folder (as `"name/"`) of an archive's entries, when there is exactly
/// one and no image sits directly inside it.
fn single_top_folder<'a>(names: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut top: Option<&str> = None;
    for name in names {
        let (first, rest) = name.split_once('/')?;
        if is_hidden(first) {
            continue;
        }
        match top {
            None => top = Some(first),
            Some(t) if t != first => return None,
            Some(_) => {}
        }
        if !rest.contains('/') && is_image_path(rest) {
            return None;
        }
    }
    top.map(|t| format!("{t}/"))
}

/// A shared open file with a private read position.
///
/// `ZipArchive` needs a `Read + Seek + Clone` reader to be cloned per thread. A `File` clone
/// (`try_clone`) shares one OS cursor, so concurrent seeks would race; this reader instead
/// reads with positioned reads (`pread`), which take the offset as an argument and leave no
/// shared state. The alternative, one archive behind a mutex, serialises decompression across
/// workers (see `examples/loader_throughput.rs` for the measurement).
#[derive(Clone, Debug)]
struct PositionedFile {
    file: Arc<File>,
    len: u64,
    pos: u64,
}

impl Read for PositionedFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        #[cfg(unix)]
        let n = std::os::unix::fs::FileExt::read_at(&*self.file, buf, self.pos)?;
        #[cfg(windows)]
        let n = std::os::windows::fs::FileExt::seek_read(&*self.file, buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for PositionedFile {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the start of the file",
            )
        })?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{TempTree, write_zip};
    use proptest::prelude::*;

    #[test]
    fn directory_and_zip_read_the_same_files() {
        let tree = TempTree::new();
        tree.write("a/x.png", b"one");
        tree.write("b/c/y.jpg", b"two");
        let zip = tree.path("data.zip");
        write_zip(
            &zip,
            &[
                ("top/a/x.png", b"one".as_slice()),
                ("top/b/c/y.jpg", b"two"),
            ],
        );

        let dir = ImageStore::open(tree.root()).unwrap();
        let archive = ImageStore::open(&zip).unwrap();
        let dir_files: Vec<_> = dir
            .files()
            .unwrap()
            .into_iter()
            .filter(|f| f != "data.zip")
            .collect();
        assert_eq!(dir_files, vec!["a/x.png", "b/c/y.jpg"]);
        assert_eq!(archive.files().unwrap(), dir_files);
        for store in [&dir, &archive] {
            assert_eq!(store.read("b/c/y.jpg").unwrap(), b"two");
            assert!(store.contains("a/x.png"));
            assert!(!store.contains("a/nope.png"));
            assert_eq!(
                (store.size("a/x.png"), store.size("a/nope.png")),
                (Some(3), None)
            );
            assert_eq!(store.subfolder("b").read("c/y.jpg").unwrap(), b"two");
        }
        assert_eq!(archive.display_path("a/x.png"), zip.join("top/a/x.png"));
    }

    #[test]
    fn missing_entries_and_paths_name_the_file() {
        let tree = TempTree::new();
        let zip = tree.path("d.zip");
        write_zip(&zip, &[("k/x.png", b"1".as_slice())]);
        let store = ImageStore::open(&zip).unwrap();
        // "k/" holds an image directly, so it stays part of the names.
        let err = store.read("k/gone.png").unwrap_err().to_string();
        assert!(err.contains("d.zip") && err.contains("k/gone.png"), "{err}");
        let err = ImageStore::open(tree.path("nowhere"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nowhere") && err.contains("not found"),
            "{err}"
        );
        tree.write("bad.zip", b"not a zip");
        let err = ImageStore::open(tree.path("bad.zip"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.zip"), "{err}");
    }

    #[test]
    fn zip_reads_from_many_threads_at_once() {
        let tree = TempTree::new();
        let zip = tree.path("d.zip");
        let contents: Vec<(String, Vec<u8>)> = (0..64)
            .map(|i| (format!("f{i}.png"), vec![i as u8; 100 + i]))
            .collect();
        let entries: Vec<(&str, &[u8])> = contents
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        write_zip(&zip, &entries);
        let store = ImageStore::open(&zip).unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let store = &store;
                let contents = &contents;
                s.spawn(move || {
                    for (name, bytes) in contents.iter().skip(t).step_by(2) {
                        assert_eq!(&store.read(name).unwrap(), bytes);
                    }
                });
            }
        });
    }

    /// `zip` with the uncompressed size of its first entry patched to `size` in both the
    /// local header and the central directory.
    fn declare_size(zip: &mut [u8], size: u32) {
        let find = |sig: &[u8]| zip.windows(4).position(|w| w == sig).unwrap();
        let local = find(b"PK\x03\x04");
        let central = find(b"PK\x01\x02");
        zip[local + 22..local + 26].copy_from_slice(&size.to_le_bytes());
        zip[central + 24..central + 28].copy_from_slice(&size.to_le_bytes());
    }

    fn one_mib() -> Limits {
        Limits {
            max_file_mib: 1,
            ..Limits::default()
        }
    }

    #[test]
    fn a_zip_entry_declaring_4_gib_is_refused_before_anything_is_allocated() {
        let tree = TempTree::new();
        let path = tree.path("d.zip");
        write_zip(&path, &[("x.png", b"small".as_slice())]);
        let mut bytes = std::fs::read(&path).unwrap();
        declare_size(&mut bytes, 0xF000_0000);
        std::fs::write(&path, &bytes).unwrap();
        let err = ImageStore::open(&path).unwrap().read("x.png").unwrap_err();
        assert!(
            matches!(err, Error::FileTooLarge { limit_mib: 256, .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "{} is 3840 MiB, above data.limits.max_file_mib = 256",
                path.join("x.png").display()
            )
        );
    }

    #[test]
    fn entries_and_files_larger_than_the_limit_are_not_read_past_it() {
        let tree = TempTree::new();
        let zeros = vec![0u8; (1 << 20) + 10];
        let path = tree.path("bomb.zip");
        write_zip(&path, &[("z.png", zeros.as_slice())]);
        assert!(std::fs::metadata(&path).unwrap().len() < 10_000);
        let err = ImageStore::open_with(&path, one_mib())
            .unwrap()
            .read("z.png")
            .unwrap_err();
        assert!(
            err.to_string()
                .ends_with("is 1048586 bytes (1.0 MiB), above data.limits.max_file_mib = 1"),
            "{err}"
        );
        // A header that understates the size: reading stops one byte past the limit.
        let mut bytes = std::fs::read(&path).unwrap();
        declare_size(&mut bytes, 100);
        std::fs::write(&path, &bytes).unwrap();
        let err = ImageStore::open_with(&path, one_mib())
            .unwrap()
            .read("z.png")
            .unwrap_err();
        assert!(matches!(err, Error::FileTooLarge { .. }), "{err:?}");
        tree.write("dir/big.png", &zeros);
        let err = ImageStore::open_with(tree.path("dir"), one_mib())
            .unwrap()
            .read("big.png")
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("big.png is 1048586 bytes (1.0 MiB), above data.limits.max_file_mib = 1"),
            "{err}"
        );
        assert_eq!(
            ImageStore::open(tree.path("dir"))
                .unwrap()
                .read("big.png")
                .unwrap(),
            zeros
        );
    }

    #[test]
    fn text_loses_its_byte_order_mark_and_utf16_is_refused() {
        let tree = TempTree::new();
        tree.write("a.txt", b"\xEF\xBB\xBF1 x.png\r\n");
        tree.write("b.txt", b"\xFF\xFE1\0 \0");
        let store = ImageStore::open(tree.root()).unwrap();
        assert_eq!(store.read_text("a.txt").unwrap(), "1 x.png\r\n");
        let err = store.read_text("b.txt").unwrap_err();
        assert!(matches!(err, Error::Text { .. }), "{err:?}");
        assert!(
            dml_core::error::chain(&err).contains("b.txt: the text is UTF-16LE"),
            "{err}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn names_that_are_not_utf8_are_errors_naming_them_not_missing_files() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let tree = TempTree::new();
        tree.write_png("cat/good.png", 1);
        let bad = tree.path("cat").join(OsStr::from_bytes(b"bad\xff.png"));
        std::fs::write(&bad, crate::test_support::png_bytes(2, 2, 0)).unwrap();
        // Other files with such names are ignored, as every reader ignores them.
        std::fs::write(
            tree.path("cat").join(OsStr::from_bytes(b"notes\xff.txt")),
            b"x",
        )
        .unwrap();
        let store = ImageStore::open(tree.root()).unwrap();
        let err = store.files().unwrap_err();
        assert!(
            matches!(&err, Error::NonUtf8Names { names, .. } if names == &["cat/bad\u{FFFD}.png"]),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "{}: file name is not valid UTF-8: cat/bad\u{FFFD}.png (rename them: dml names files by UTF-8 paths)",
                tree.root().display()
            )
        );
        assert_eq!(store.folders().unwrap(), ["cat"]);
        std::fs::create_dir(tree.path("cat").join(OsStr::from_bytes(b".hidden\xff"))).unwrap();
        std::fs::create_dir(tree.root().join(OsStr::from_bytes(b"dog\xfe"))).unwrap();
        let err = store.folders().unwrap_err().to_string();
        assert!(err.ends_with("file name is not valid UTF-8: dog\u{FFFD} (rename them: dml names files by UTF-8 paths)"), "{err}");
    }

    /// A zip entry name: one to three `/`-separated parts, none hidden (hidden top folders
    /// are not candidates for the archive's wrapping folder).
    fn entry_name() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_-][a-zA-Z0-9_.-]{0,7}(/[a-zA-Z0-9_-][a-zA-Z0-9_.-]{0,7}){0,2}"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn written_zip_entries_list_and_read_back_equal(
            entries in proptest::collection::btree_map(
                entry_name(),
                proptest::collection::vec(any::<u8>(), 0..300),
                1..6,
            ),
        ) {
            // A name may not be both a file and a folder of another file.
            let names: Vec<&String> = entries.keys().collect();
            prop_assume!(!names.iter().any(|a| names.iter().any(|b| b.starts_with(&format!("{a}/")))));
            let tree = TempTree::new();
            let path = tree.path("t.zip");
            let list: Vec<(&str, &[u8])> = entries
                .iter()
                .map(|(n, b)| (n.as_str(), b.as_slice()))
                .collect();
            write_zip(&path, &list);
            let store = ImageStore::open(&path).unwrap();
            let files = store.files().unwrap();
            prop_assert_eq!(files.len(), entries.len());
            for file in &files {
                let original = entries
                    .iter()
                    .find(|(n, _)| path.join(n) == store.display_path(file))
                    .map(|(_, b)| b)
                    .unwrap();
                prop_assert_eq!(&store.read(file).unwrap(), original);
            }
        }

        #[test]
        fn any_bytes_as_a_zip_open_list_and_read_without_panicking(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
            flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 0..8),
        ) {
            let tree = TempTree::new();
            let path = tree.path("t.zip");
            // Half the cases: a real archive with a few bytes changed; else arbitrary bytes.
            let bytes = if flips.is_empty() {
                bytes
            } else {
                write_zip(&path, &[("a/x.png", bytes.as_slice()), ("b.txt", b"text")]);
                let mut zip = std::fs::read(&path).unwrap();
                for (at, value) in flips {
                    let i = at.index(zip.len());
                    zip[i] = value;
                }
                zip
            };
            std::fs::write(&path, &bytes).unwrap();
            if let Ok(store) = ImageStore::open_with(&path, one_mib()) {
                if let Ok(files) = store.files() {
                    for file in files {
                        let _ = store.read(&file);
                        let _ = store.read_text(&file);
                    }
                }
                let _ = store.folders();
            }
        }
    }
}
