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

use crate::Error;

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
/// Cloning is cheap and clones share the open archive; every thread can read at once.
#[derive(Clone, Debug)]
pub struct ImageStore {
    kind: StoreKind,
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
    /// Opens `path`: a directory, or a `.zip` archive.
    ///
    /// When every entry of an archive lies under one top-level folder that holds no image
    /// directly (`omniglot_small1/Greek/...`, `CUB_200_2011/images.txt`), that folder becomes
    /// the root, as if the archive had been unpacked and the folder given.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
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
        })
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
        Self { kind }
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

    /// Reads the whole file `rel`.
    pub fn read(&self, rel: &str) -> Result<Vec<u8>, Error> {
        let missing = || Error::MissingFile {
            path: self.display_path(rel),
            listed_in: None,
        };
        match &self.kind {
            StoreKind::Directory(root) => {
                let path = root.join(rel);
                std::fs::read(&path).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => missing(),
                    _ => Error::io(path, e),
                })
            }
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
                let mut bytes = Vec::with_capacity(entry.size() as usize);
                entry
                    .read_to_end(&mut bytes)
                    .map_err(|e| Error::io(self.display_path(rel), e))?;
                Ok(bytes)
            }
        }
    }

    /// Reads the file `rel` as UTF-8 text.
    pub fn read_text(&self, rel: &str) -> Result<String, Error> {
        let bytes = self.read(rel)?;
        String::from_utf8(bytes).map_err(|e| {
            Error::io(
                self.display_path(rel),
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })
    }

    /// The names of the folders directly under the root, sorted, hidden ones left out.
    pub fn folders(&self) -> Result<Vec<String>, Error> {
        let mut folders: Vec<String> = match &self.kind {
            StoreKind::Directory(root) => {
                let mut out = Vec::new();
                for entry in std::fs::read_dir(root).map_err(|e| Error::io(root, e))? {
                    let entry = entry.map_err(|e| Error::io(root, e))?;
                    if entry.path().is_dir() {
                        out.push(entry.file_name().to_string_lossy().into_owned());
                    }
                }
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
    pub fn files(&self) -> Result<Vec<String>, Error> {
        let mut files = match &self.kind {
            StoreKind::Directory(root) => {
                let mut files = Vec::new();
                for entry in walkdir::WalkDir::new(root).follow_links(true) {
                    let entry = entry.map_err(|e| {
                        let path = e.path().unwrap_or(root).to_path_buf();
                        Error::io(path, e.into())
                    })?;
                    if !entry.file_type().is_file() {
                        continue;
                    }
                    let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
                    let parts: Vec<_> = rel
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy())
                        .collect();
                    files.push(parts.join("/"));
                }
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
}
