//! Whitespace-separated annotation tables (CUB, SOP, In-Shop), read with line numbers.

use std::collections::HashMap;
use std::path::Path;

use crate::Error;

/// One non-blank line of a table.
#[derive(Debug)]
pub(crate) struct Row<'a> {
    /// 1-based line number in the file.
    pub(crate) line: usize,
    /// Its whitespace-separated fields.
    pub(crate) fields: Vec<&'a str>,
}

/// The non-blank lines of `text` after its first `skip` lines, each split into exactly
/// `columns` fields; `path` only names the file in errors.
pub(crate) fn rows<'a>(
    text: &'a str,
    path: &Path,
    skip: usize,
    columns: usize,
) -> Result<Vec<Row<'a>>, Error> {
    let mut out = Vec::new();
    for (i, line) in dml_core::text::lines(text).enumerate().skip(skip) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        if fields.len() != columns {
            return Err(Error::malformed(
                path,
                i + 1,
                format!(
                    "expected {columns} fields, found {}: {line:?}",
                    fields.len()
                ),
            ));
        }
        out.push(Row {
            line: i + 1,
            fields,
        });
    }
    Ok(out)
}

/// Parses field `column` of `row` as a positive integer id; `name` says what it is.
pub(crate) fn id(row: &Row<'_>, column: usize, name: &str, path: &Path) -> Result<u64, Error> {
    let field = row.fields[column];
    match field.parse::<u64>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(Error::malformed(
            path,
            row.line,
            format!("{name} must be a positive integer, found {field:?}"),
        )),
    }
}

/// Remembers the line where each id first appeared and rejects repeats.
pub(crate) struct UniqueIds<'p> {
    path: &'p Path,
    seen: HashMap<String, usize>,
}

impl<'p> UniqueIds<'p> {
    pub(crate) fn new(path: &'p Path) -> Self {
        Self {
            path,
            seen: HashMap::new(),
        }
    }

    /// Records `id` seen on `line`; an error if it was seen before.
    pub(crate) fn insert(&mut self, id: &str, line: usize) -> Result<(), Error> {
        if let Some(&first_line) = self.seen.get(id) {
            return Err(Error::DuplicateId {
                path: self.path.to_path_buf(),
                line,
                first_line,
                id: id.to_owned(),
            });
        }
        self.seen.insert(id.to_owned(), line);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_lines_and_a_cut_last_line_end_read_like_lf() {
        let p = Path::new("t.txt");
        let r = rows("1 a\r\n2 b\r", p, 0, 2).unwrap();
        assert_eq!((r[1].line, r[1].fields[1]), (2, "b"));
    }

    #[test]
    fn rows_skip_header_and_blank_lines_and_report_bad_lines() {
        let p = Path::new("t.txt");
        let text = "header line\n1 a\n\n2 b\n";
        let r = rows(text, p, 1, 2).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[1].line, r[1].fields[1]), (4, "b"));
        let err = rows("1 a\n2\n", p, 0, 2).unwrap_err().to_string();
        assert!(err.starts_with("t.txt:2:"), "{err}");
        let row = &rows("x 0\n", p, 0, 2).unwrap()[0];
        assert!(
            id(row, 0, "image id", p)
                .unwrap_err()
                .to_string()
                .contains("image id")
        );
        assert!(id(row, 1, "class id", p).is_err());
        let mut ids = UniqueIds::new(p);
        ids.insert("7", 3).unwrap();
        let err = ids.insert("7", 9).unwrap_err().to_string();
        assert!(err.contains("t.txt:9") && err.contains("line 3"), "{err}");
    }
}
