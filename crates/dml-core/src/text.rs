//! The one decoder of dml's text inputs (label files, image lists, annotation tables, the
//! `.labels.txt` / `.paths.txt` files beside embeddings).
//!
//! Editors on Windows often save UTF-8 with a byte-order mark, or save UTF-16 outright; read as
//! plain bytes, the mark becomes part of the first label and UTF-16 turns into garbage. This
//! module strips a UTF-8 mark, refuses UTF-16 and UTF-32 with a message saying how to fix the
//! file, and names the line of any byte that is not UTF-8. Line ends may be `\n` or `\r\n`.
//!
//! ```
//! use dml_core::text::{decode, lines};
//! let text = decode(b"\xEF\xBB\xBFcat\r\ndog\n")?;
//! assert_eq!(lines(text).collect::<Vec<_>>(), ["cat", "dog"]);
//! assert!(decode(b"\xFF\xFEc\0a\0t\0").unwrap_err().to_string().contains("save the file as UTF-8"));
//! # Ok::<(), dml_core::text::TextError>(())
//! ```

/// Why bytes are not UTF-8 text.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TextError {
    /// The bytes start with the byte-order mark of another Unicode encoding.
    OtherEncoding {
        /// The encoding the mark announces (`"UTF-16LE"`, `"UTF-32BE"`, ...).
        encoding: &'static str,
    },
    /// A byte sequence that is not UTF-8.
    InvalidUtf8 {
        /// 1-based line of the first bad byte.
        line: usize,
        /// 1-based byte position of the first bad byte in that line.
        column: usize,
    },
}

impl std::fmt::Display for TextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TextError::OtherEncoding { encoding } => write!(
                f,
                "the text is {encoding} (it starts with a {encoding} byte-order mark), \
                 not UTF-8: save the file as UTF-8"
            ),
            TextError::InvalidUtf8 { line, column } => write!(
                f,
                "line {line}, byte {column}: not valid UTF-8: save the file as UTF-8"
            ),
        }
    }
}

impl std::error::Error for TextError {}

/// The UTF-8 byte-order mark.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Byte-order marks of the encodings dml refuses. UTF-32LE starts like UTF-16LE, so it
/// comes first.
const OTHER_BOMS: [(&[u8], &str); 4] = [
    (b"\xFF\xFE\0\0", "UTF-32LE"),
    (b"\0\0\xFE\xFF", "UTF-32BE"),
    (b"\xFF\xFE", "UTF-16LE"),
    (b"\xFE\xFF", "UTF-16BE"),
];

/// The text of `bytes`, without a leading UTF-8 byte-order mark.
///
/// # Errors
/// [`TextError::OtherEncoding`] for a UTF-16 or UTF-32 byte-order mark,
/// [`TextError::InvalidUtf8`] (naming the line) for bytes that are not UTF-8.
pub fn decode(bytes: &[u8]) -> Result<&str, TextError> {
    if let Some(rest) = bytes.strip_prefix(UTF8_BOM) {
        return utf8(rest, bytes);
    }
    if let Some((_, encoding)) = OTHER_BOMS.iter().find(|(bom, _)| bytes.starts_with(bom)) {
        return Err(TextError::OtherEncoding { encoding });
    }
    utf8(bytes, bytes)
}

/// `text` as UTF-8; positions in errors count in `whole` (the bytes with their mark), which
/// ends with `text`.
fn utf8<'a>(text: &'a [u8], whole: &[u8]) -> Result<&'a str, TextError> {
    std::str::from_utf8(text).map_err(|e| {
        let at = whole.len() - text.len() + e.valid_up_to();
        let before = &whole[..at];
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        TextError::InvalidUtf8 {
            line: before.iter().filter(|&&b| b == b'\n').count() + 1,
            column: at - line_start + 1,
        }
    })
}

/// The lines of `text`, without their `\n` or `\r\n` ends: [`str::lines`], except that a
/// `\r` ending the last line (a file cut after its `\r`) is dropped too.
pub fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
}

/// Reads the text file `path` through [`decode`], for readers whose errors are I/O errors:
/// text that is not UTF-8 is an [`std::io::ErrorKind::InvalidData`] error holding the
/// [`TextError`].
pub fn read_file(path: &std::path::Path) -> std::io::Result<String> {
    let bytes = std::fs::read(path)?;
    decode(&bytes)
        .map(str::to_owned)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn files_are_read_through_the_decoder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.toml");
        std::fs::write(&path, b"\xEF\xBB\xBFseed = 1\n").unwrap();
        assert_eq!(read_file(&path).unwrap(), "seed = 1\n");
        std::fs::write(&path, b"\xFF\xFEs\0").unwrap();
        let err = read_file(&path).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("UTF-16LE"), "{err}");
    }

    #[test]
    fn strips_a_utf8_mark_and_keeps_crlf_lines_apart() {
        assert_eq!(
            decode(b"\xEF\xBB\xBFlabel,path\r\n").unwrap(),
            "label,path\r\n"
        );
        assert_eq!(decode(b"").unwrap(), "");
        assert_eq!(decode(b"\xEF\xBB\xBF").unwrap(), "");
        let text = decode(b"a\r\nb\n\nc\r").unwrap();
        assert_eq!(lines(text).collect::<Vec<_>>(), ["a", "b", "", "c"]);
    }

    #[test]
    fn other_unicode_encodings_are_refused_by_name() {
        for (bytes, name) in [
            (&b"\xFF\xFEa\0"[..], "UTF-16LE"),
            (b"\xFE\xFF\0a", "UTF-16BE"),
            (b"\xFF\xFE\0\0a\0\0\0", "UTF-32LE"),
            (b"\0\0\xFE\xFF\0\0\0a", "UTF-32BE"),
        ] {
            let err = decode(bytes).unwrap_err();
            assert_eq!(err, TextError::OtherEncoding { encoding: name });
            let msg = err.to_string();
            assert!(
                msg.contains(name) && msg.contains("save the file as UTF-8"),
                "{msg}"
            );
        }
    }

    #[test]
    fn invalid_utf8_names_its_line_and_byte() {
        let err = decode(b"ok\nfine\r\nbad \xE9t\xE9\n").unwrap_err();
        assert_eq!(err, TextError::InvalidUtf8 { line: 3, column: 5 });
        assert_eq!(
            err.to_string(),
            "line 3, byte 5: not valid UTF-8: save the file as UTF-8"
        );
        // After a mark, positions still count from the file's first byte.
        let err = decode(b"\xEF\xBB\xBF\xFF").unwrap_err();
        assert_eq!(err, TextError::InvalidUtf8 { line: 1, column: 4 });
    }

    proptest! {
        #[test]
        fn any_bytes_decode_to_a_suffix_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            match decode(&bytes) {
                Ok(text) => {
                    prop_assert!(bytes.ends_with(text.as_bytes()));
                    prop_assert!(bytes.len() - text.len() <= UTF8_BOM.len());
                }
                Err(TextError::InvalidUtf8 { line, column }) => {
                    let newlines = bytes.iter().filter(|&&b| b == b'\n').count();
                    prop_assert!(line >= 1 && line <= newlines + 1 && column >= 1);
                }
                Err(TextError::OtherEncoding { .. }) => {}
            }
        }

        #[test]
        fn utf8_text_round_trips_with_or_without_a_mark(text in "(\\PC|\n){0,64}", mark in any::<bool>(), crlf in any::<bool>()) {
            // Text starting with U+FEFF would lose it as a mark: the writer adds one first.
            let text = text.replace(['\r', '\u{feff}'], "");
            let written = if crlf { text.replace('\n', "\r\n") } else { text.clone() };
            let mut bytes = if mark { UTF8_BOM.to_vec() } else { Vec::new() };
            bytes.extend_from_slice(written.as_bytes());
            let decoded = decode(&bytes).unwrap();
            prop_assert_eq!(decoded, written.as_str());
            prop_assert_eq!(lines(decoded).collect::<Vec<_>>(), text.lines().collect::<Vec<_>>());
        }
    }
}
