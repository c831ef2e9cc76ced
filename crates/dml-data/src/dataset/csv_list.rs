//! CSV image lists: `label,relative/path` per line (the survey baseline's format).

use std::path::Path;

use crate::dataset::{ImageEntry, ImageList};
use crate::store::{ImageStore, read_file};
use crate::{Error, Limits};

/// Reader for CSV image lists.
///
/// Each record is `label,relative/path`; the path is relative to a root folder (or zip
/// archive). Fields follow RFC 4180 quoting: a label or path holding a comma or a quote is
/// quoted (`lbl,"dir/with,comma.png"`, `"say ""hi""",x.png`), the opening quote right after
/// the comma. An unquoted line with more than two fields is an error, since guessing where
/// the path ends would read the wrong file. Spaces around fields, blank lines, a UTF-8
/// byte-order mark, `\r\n` line ends and one optional header line `label,path` are ignored.
/// Labels are class names: numbers or any other text.
pub struct CsvListDataset;

impl CsvListDataset {
    /// Reads the list file `list` and checks that each image exists under `root`, with the
    /// default [`Limits`].
    ///
    /// A line with one field or more than two, an empty label or path, a quoted field
    /// running over several lines (a closing quote missing) or text that is not UTF-8 is an
    /// error naming the line.
    pub fn open(list: impl AsRef<Path>, root: impl AsRef<Path>) -> Result<ImageList, Error> {
        Self::open_with(list, root, Limits::default())
    }

    /// [`CsvListDataset::open`] with reads and decoding bounded by `limits`.
    pub fn open_with(
        list: impl AsRef<Path>,
        root: impl AsRef<Path>,
        limits: Limits,
    ) -> Result<ImageList, Error> {
        let list = list.as_ref();
        let bytes = read_file(list, &limits)?;
        let store = ImageStore::open_with(root, limits)?;
        let file_name = list
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let entries = parse(&bytes, list)?
            .into_iter()
            .map(|row| ImageEntry {
                path: row.path,
                class: row.label,
                super_class: None,
                origin: Some(format!("{file_name}:{}", row.line)),
            })
            .collect();
        ImageList::new(store, entries, &list.display().to_string())
    }
}

/// One image of a list.
#[derive(Debug, PartialEq, Eq)]
struct Row {
    /// 1-based line its record starts on.
    line: usize,
    label: String,
    path: String,
}

/// The images listed in `bytes`, the contents of the list file `list` (named in errors).
fn parse(bytes: &[u8], list: &Path) -> Result<Vec<Row>, Error> {
    let text = dml_core::text::decode(bytes).map_err(|e| Error::text(list, e))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut rows = Vec::new();
    let mut record = csv::StringRecord::new();
    let mut first = true;
    loop {
        let more = reader.read_record(&mut record).map_err(|e| {
            let line = e.position().map_or(0, |p| p.line() as usize);
            Error::malformed(list, line, format!("not a valid CSV record: {e}"))
        })?;
        if !more {
            break;
        }
        let line = record.position().map_or(0, |p| p.line() as usize);
        let fields: Vec<&str> = record.iter().collect();
        if fields == [""] {
            // A line of spaces.
            continue;
        }
        if fields.iter().any(|f| f.contains(['\n', '\r'])) {
            return Err(Error::malformed(
                list,
                line,
                "a quoted field runs over several lines (is its closing quote missing?)",
            ));
        }
        let [label, path] = fields[..] else {
            return Err(Error::malformed(list, line, field_count_reason(&fields)));
        };
        let header =
            first && label.eq_ignore_ascii_case("label") && path.eq_ignore_ascii_case("path");
        first = false;
        if header {
            continue;
        }
        if label.is_empty() || path.is_empty() {
            return Err(Error::malformed(
                list,
                line,
                format!("empty label or path: {fields:?}"),
            ));
        }
        rows.push(Row {
            line,
            label: label.to_owned(),
            path: path.to_owned(),
        });
    }
    Ok(rows)
}

/// Why a record that is not two fields is wrong, and how to write it.
fn field_count_reason(fields: &[&str]) -> String {
    if fields.len() == 1 {
        return format!(
            "expected `label,relative/path`, found one field: {:?}",
            fields[0]
        );
    }
    let hint = if fields.iter().any(|f| f.starts_with('"')) {
        "a quote opens a field only right after the comma, with no space before it"
    } else {
        "a label or path holding commas must be quoted: `label,\"dir/with,comma.png\"`"
    };
    format!(
        "expected `label,relative/path`, found {} fields {fields:?}; {hint}",
        fields.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Dataset;
    use crate::test_support::TempTree;
    use proptest::prelude::*;

    #[test]
    fn reads_labels_and_paths_with_header_blank_lines_and_quoted_commas() {
        let tree = TempTree::new();
        tree.write_png("imgs/a,1.png", 1);
        tree.write_png("imgs/b.png", 2);
        tree.write_png("imgs/c.png", 3);
        tree.write(
            "list.csv",
            b"label,path\n3,\"imgs/a,1.png\"\n\n1, imgs/b.png \r\n3,imgs/c.png\n",
        );
        let list = CsvListDataset::open(tree.path("list.csv"), tree.root()).unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list.class_names(), ["1", "3"]);
        assert_eq!(list.labels(), [1, 0, 1]);
        assert_eq!(list.path(0), "imgs/a,1.png");
        assert_eq!(list.load(2).unwrap().to_luma8().get_pixel(0, 0).0, [3]);
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_field() {
        let tree = TempTree::new();
        tree.write_png("x.png", 0);
        tree.write("header.csv", b"\xEF\xBB\xBFlabel,path\r\n7,x.png\r\n");
        let list = CsvListDataset::open(tree.path("header.csv"), tree.root()).unwrap();
        assert_eq!(list.class_names(), ["7"]);
        tree.write("plain.csv", b"\xEF\xBB\xBF7,x.png\n");
        let list = CsvListDataset::open(tree.path("plain.csv"), tree.root()).unwrap();
        assert_eq!(list.class_names(), ["7"]);
    }

    #[test]
    fn quoted_fields_follow_rfc_4180() {
        let p = Path::new("l.csv");
        let rows = parse(
            b"\"a,b\",dir/x.png\nlbl,\"dir/with,comma.png\"\n\"say \"\"hi\"\"\",\"q\"\"uote.png\"\n",
            p,
        )
        .unwrap();
        let got: Vec<(usize, &str, &str)> = rows
            .iter()
            .map(|r| (r.line, r.label.as_str(), r.path.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (1, "a,b", "dir/x.png"),
                (2, "lbl", "dir/with,comma.png"),
                (3, "say \"hi\"", "q\"uote.png"),
            ]
        );
    }

    #[test]
    fn unquoted_extra_commas_and_open_quotes_are_errors_naming_the_line() {
        let p = Path::new("l.csv");
        let err = parse(b"0,a.png\n3, imgs/a,1.png\n", p).unwrap_err();
        assert!(
            matches!(err, Error::MalformedLine { line: 2, .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.starts_with("l.csv:2: ") && msg.contains("must be quoted"),
            "{msg}"
        );
        let msg = parse(b"lbl, \"dir/with,comma.png\"\n", p)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("no space before it"), "{msg}");
        let msg = parse(b"0,a.png\n\"open,b.png\n1,c.png\n", p)
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("l.csv:2: ") && msg.contains("closing quote"),
            "{msg}"
        );
    }

    #[test]
    fn text_that_is_not_utf8_is_an_error_saying_so() {
        let p = Path::new("l.csv");
        let msg = dml_core::error::chain(&parse(b"\xFF\xFE0\0,\0a\0", p).unwrap_err());
        assert!(
            msg.contains("UTF-16LE") && msg.contains("save the file as UTF-8"),
            "{msg}"
        );
        let msg = dml_core::error::chain(&parse(b"0,a.png\n1,caf\xE9.png\n", p).unwrap_err());
        assert!(
            msg.starts_with("l.csv: line 2, byte 6: not valid UTF-8"),
            "{msg}"
        );
    }

    #[test]
    fn errors_name_the_line_or_the_file() {
        let tree = TempTree::new();
        tree.write_png("x.png", 0);
        tree.write("short.csv", b"0,x.png\n0 x.png\n");
        let err = CsvListDataset::open(tree.path("short.csv"), tree.root()).unwrap_err();
        assert!(
            matches!(err, Error::MalformedLine { line: 2, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("short.csv:2"), "{err}");

        tree.write("empty_label.csv", b"0,x.png\n ,x.png\n");
        let err = CsvListDataset::open(tree.path("empty_label.csv"), tree.root()).unwrap_err();
        assert!(err.to_string().contains("empty_label.csv:2"), "{err}");

        tree.write("gone.csv", b"0,x.png\n1,missing.png\n");
        let err = CsvListDataset::open(tree.path("gone.csv"), tree.root())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing.png") && err.contains("gone.csv:2"),
            "{err}"
        );

        let err = CsvListDataset::open(tree.path("nope.csv"), tree.root())
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.csv"), "{err}");
    }

    /// A label or path: printable, not blank at either end, not the header's words.
    fn field() -> impl Strategy<Value = String> {
        "[^\\s\\p{C}]([^\\p{C}]{0,10}[^\\s\\p{C}])?"
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&bytes, Path::new("l.csv"));
        }

        #[test]
        fn lists_written_by_a_csv_writer_read_back_equal(
            rows in proptest::collection::vec((field(), field()), 1..8),
            crlf in any::<bool>(),
        ) {
            let mut writer = csv::WriterBuilder::new()
                .terminator(if crlf { csv::Terminator::CRLF } else { csv::Terminator::Any(b'\n') })
                .from_writer(Vec::new());
            writer.write_record(["label", "path"]).unwrap();
            for (label, path) in &rows {
                writer.write_record([label, path]).unwrap();
            }
            let bytes = writer.into_inner().unwrap();
            let read = parse(&bytes, Path::new("l.csv")).unwrap();
            let read: Vec<(String, String)> = read.into_iter().map(|r| (r.label, r.path)).collect();
            prop_assert_eq!(read, rows);
        }
    }
}
