//! `--set key.path=value` overrides, applied to the parsed TOML table before it is turned
//! into a [`RunConfig`](super::RunConfig).

use crate::error::ConfigError;

/// One override: a dotted key path and the value to put there, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    key: Vec<String>,
    value: toml::Value,
    text: String,
    origin: String,
}

impl Override {
    /// Parses `key.path=value`. The value is read as a TOML value (`5`, `1e-3`, `true`,
    /// `[1, 2]`, `"text"`, `{ margin = 0.2 }`); anything that is not one (`resnet18`,
    /// `/data/cub`) is taken as a plain string, so paths and names need no quotes.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let malformed = || ConfigError::MalformedOverride {
            text: text.to_owned(),
        };
        let (key, raw) = text.split_once('=').ok_or_else(malformed)?;
        let key: Vec<String> = key.trim().split('.').map(str::to_owned).collect();
        let valid_segment = |s: &String| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !key.iter().all(valid_segment) {
            return Err(malformed());
        }
        let value = parse_value(raw.trim());
        let origin = format!("--set {text}");
        if let Some(inner) = non_finite(&value, "") {
            return Err(ConfigError::NonFinite {
                origin,
                field: key.join(".") + &inner,
            });
        }
        Ok(Override {
            key,
            value,
            text: text.to_owned(),
            origin,
        })
    }

    /// An override from a key path and a value (what the CLI's dedicated flags produce).
    pub fn new(key: &str, value: impl Into<toml::Value>) -> Self {
        let value = value.into();
        let text = format!("{key}={value}");
        Override {
            key: key.split('.').map(str::to_owned).collect(),
            origin: format!("--set {text}"),
            text,
            value,
        }
    }

    /// [`Override::new`] for a dedicated flag (`--lr`), which error messages name.
    ///
    /// # Errors
    /// [`ConfigError::NonFinite`] for a NaN or infinite number.
    pub fn flag(flag: &str, key: &str, value: impl Into<toml::Value>) -> Result<Self, ConfigError> {
        let mut item = Override::new(key, value);
        item.origin = format!("{flag} {}", item.value);
        if non_finite(&item.value, "").is_some() {
            return Err(ConfigError::NonFinite {
                origin: item.origin,
                field: key.to_owned(),
            });
        }
        Ok(item)
    }

    /// The override as the user would write it (`train.epochs=5`), for error messages.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Where it came from, as the user wrote it: `--set train.epochs=5` or `--epochs 5`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The dotted key path (`optimizer.lr`).
    pub fn key(&self) -> String {
        self.key.join(".")
    }

    /// Whether this override and `other` write the same field, or one writes a table that
    /// holds the other's field.
    pub fn overlaps(&self, other: &Override) -> bool {
        let n = self.key.len().min(other.key.len());
        self.key[..n] == other.key[..n]
    }

    /// Puts the value at the key path of `root`, the table the user wrote.
    ///
    /// A table on the path that the user did not write is first copied from `current` (the
    /// configuration resolved so far, defaults included), so that overriding one field of a
    /// section keeps the rest of it. Setting a `kind` to a new value starts that table afresh
    /// from the new kind's defaults (its old fields may not exist in the new kind).
    pub fn apply(&self, root: &mut toml::Table, current: &toml::Table) -> Result<(), ConfigError> {
        let (leaf, parents) = self
            .key
            .split_last()
            .expect("a key has one segment at least");
        let mut table = root;
        let mut resolved = Some(current);
        for (depth, segment) in parents.iter().enumerate() {
            let resolved_here = resolved
                .and_then(|t| t.get(segment))
                .and_then(toml::Value::as_table);
            let entry = table
                .entry(segment.clone())
                .or_insert_with(|| toml::Value::Table(resolved_here.cloned().unwrap_or_default()));
            table = entry
                .as_table_mut()
                .ok_or_else(|| ConfigError::OverrideThroughValue {
                    key: self.key.join("."),
                    prefix: self.key[..=depth].join("."),
                })?;
            resolved = resolved_here;
        }
        if leaf == "kind" && table.get("kind") != Some(&self.value) {
            table.clear();
        }
        table.insert(leaf.clone(), self.value.clone());
        Ok(())
    }
}

/// The path (below `path`) of the first NaN or infinite number in `value`, if any: TOML
/// reads `nan` and `inf`, JSON cannot hold them, and no setting of a run means them.
pub(crate) fn non_finite(value: &toml::Value, path: &str) -> Option<String> {
    match value {
        toml::Value::Float(v) if !v.is_finite() => Some(path.to_owned()),
        toml::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| non_finite(item, &format!("{path}[{i}]"))),
        toml::Value::Table(table) => table
            .iter()
            .find_map(|(key, item)| non_finite(item, &format!("{path}.{key}"))),
        _ => None,
    }
}

fn parse_value(raw: &str) -> toml::Value {
    let document = format!("value = {raw}");
    match toml::from_str::<toml::Table>(&document) {
        Ok(mut table) if table.len() == 1 => table
            .remove("value")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        _ => toml::Value::String(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn values_are_typed_when_they_are_toml() {
        let cases = [
            ("a=5", toml::Value::Integer(5)),
            ("a=1e-3", toml::Value::Float(1e-3)),
            ("a=true", toml::Value::Boolean(true)),
            ("a=resnet18", toml::Value::String("resnet18".into())),
            ("a=/data/cub", toml::Value::String("/data/cub".into())),
            ("a=\"5\"", toml::Value::String("5".into())),
            ("a=1\nb=2", toml::Value::String("1\nb=2".into())),
        ];
        for (text, want) in cases {
            assert_eq!(Override::parse(text).unwrap().value, want, "{text}");
        }
        let list = Override::parse("eval.k=[1, 2]").unwrap();
        assert_eq!(list.value, toml::Value::try_from(vec![1, 2]).unwrap());
    }

    #[test]
    fn apply_creates_missing_tables_and_replaces_leaves() {
        let mut root = table("[train]\nepochs = 3\n");
        let empty = toml::Table::new();
        Override::parse("train.epochs=7")
            .unwrap()
            .apply(&mut root, &empty)
            .unwrap();
        Override::parse("loss.params.margin=0.5")
            .unwrap()
            .apply(&mut root, &empty)
            .unwrap();
        assert_eq!(
            root,
            table("[train]\nepochs = 7\n[loss.params]\nmargin = 0.5\n")
        );
    }

    #[test]
    fn unwritten_tables_start_from_the_current_values() {
        let current = table("[optimizer]\nkind = 'adam'\nlr = 0.1\nbeta1 = 0.8\n");
        let mut root = toml::Table::new();
        Override::parse("optimizer.lr=0.5")
            .unwrap()
            .apply(&mut root, &current)
            .unwrap();
        assert_eq!(
            root,
            table("[optimizer]\nkind = 'adam'\nlr = 0.5\nbeta1 = 0.8\n")
        );
    }

    #[test]
    fn a_new_kind_starts_its_table_afresh() {
        let current = table("[optimizer]\nkind = 'adam'\nlr = 0.1\nbeta1 = 0.8\n");
        let mut root = current.clone();
        Override::parse("optimizer.kind=adam")
            .unwrap()
            .apply(&mut root, &current)
            .unwrap();
        assert_eq!(root, current, "the same kind keeps its fields");
        Override::parse("optimizer.kind=sgd")
            .unwrap()
            .apply(&mut root, &current)
            .unwrap();
        assert_eq!(root, table("[optimizer]\nkind = 'sgd'\n"));
    }

    #[test]
    fn path_through_a_value_is_an_error_naming_it() {
        let mut root = table("[train]\nepochs = 3\n");
        let err = Override::parse("train.epochs.x=1")
            .unwrap()
            .apply(&mut root, &toml::Table::new())
            .unwrap_err();
        assert!(
            matches!(&err, ConfigError::OverrideThroughValue { prefix, .. } if prefix == "train.epochs"),
            "{err}"
        );
    }

    #[test]
    fn non_finite_numbers_are_rejected_anywhere_in_a_value() {
        for text in [
            "loss.params.margin=nan",
            "optimizer.lr=inf",
            "a=-inf",
            "eval.k=[1, nan]",
            "loss.params={ margin = nan }",
        ] {
            let err = Override::parse(text).unwrap_err();
            assert!(
                matches!(&err, ConfigError::NonFinite { origin, .. } if origin.ends_with(text)),
                "{text}: {err}"
            );
        }
        let err = Override::flag("--lr", "optimizer.lr", f64::NAN).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--lr nan: optimizer.lr must be a finite number"
        );
        assert!(
            Override::parse("a=\"nan\"").is_ok(),
            "a string is not a number"
        );
    }

    #[test]
    fn overlapping_keys() {
        let key = |k: &str| Override::new(k, 1);
        assert!(key("loss.params").overlaps(&key("loss.params.margin")));
        assert!(key("loss.params.margin").overlaps(&key("loss.params")));
        assert!(key("loss.name").overlaps(&key("loss.name")));
        assert!(!key("loss.name").overlaps(&key("loss.params")));
        assert!(!key("loss.miner").overlaps(&key("loss.min")));
    }

    proptest::proptest! {
        /// Any argument parses or is refused, and a parsed one resolves or is refused: no panic.
        #[test]
        fn arbitrary_arguments_never_panic(text in "\\PC{0,40}") {
            if let Ok(item) = Override::parse(&text) {
                let _ = crate::config::RunConfig::resolve("", "run.toml", &[item]);
            }
        }

        /// Numbers and strings read back as written.
        #[test]
        fn values_round_trip(int in proptest::num::i64::ANY, float in -1e300f64..1e300,
                             word in "[a-z][a-z0-9_/-]{0,12}") {
            let value = |text: String| Override::parse(&text).unwrap().value;
            proptest::prop_assert_eq!(value(format!("a.b={int}")), toml::Value::Integer(int));
            proptest::prop_assert_eq!(value(format!("a={float:?}")), toml::Value::Float(float));
            let expected = match word.as_str() {
                "true" | "false" => toml::Value::Boolean(word == "true"),
                "inf" | "nan" => return Ok(()),
                _ => toml::Value::String(word.clone()),
            };
            proptest::prop_assert_eq!(value(format!("a={word}")), expected);
        }
    }

    #[test]
    fn malformed_overrides_are_rejected() {
        for text in ["epochs", "=5", "train..epochs=1", "a b=1"] {
            assert!(
                matches!(
                    Override::parse(text),
                    Err(ConfigError::MalformedOverride { .. })
                ),
                "{text}"
            );
        }
    }
}
