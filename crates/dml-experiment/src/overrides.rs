//! Config overrides: `key.path = value` pairs laid over a base run config.
//!
//! A plan never needs to know the trainer's config struct: every axis entry is a list of
//! overrides, and a run's config is the base TOML table with its overrides applied leaf by
//! leaf. Tables in an entry are flattened, so `loss = { margin = 0.2 }`, `loss.margin = 0.2`
//! and `"loss.margin" = 0.2` all mean the same single override and leave the base's other
//! `loss` fields in place.

use std::fmt;

use crate::error::{Error, Result};

/// A dotted path into a TOML table, such as `optimizer.lr`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyPath(Vec<String>);

impl KeyPath {
    /// Parses `a.b.c`; every segment must be non-empty.
    pub fn parse(key: &str, source: &OverrideSource) -> Result<Self> {
        let segments: Vec<String> = key.split('.').map(str::to_owned).collect();
        if segments.iter().any(String::is_empty) {
            return Err(Error::KeyPath {
                key: key.to_owned(),
                origin: source.clone(),
            });
        }
        Ok(Self(segments))
    }

    /// The path's segments, outermost first.
    pub fn segments(&self) -> &[String] {
        &self.0
    }

    /// Whether `self` equals `other` or lies inside it (`a.b` is within `a`).
    pub fn is_within(&self, other: &KeyPath) -> bool {
        self.0.len() >= other.0.len() && self.0[..other.0.len()] == other.0[..]
    }

    fn joined(&self, segments: usize) -> String {
        self.0[..segments].join(".")
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// The part of a plan an override comes from; error messages name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverrideSource {
    /// A dataset entry, by name.
    Dataset(String),
    /// A loss entry, by name.
    Loss(String),
    /// The learning-rate axis (`keys.lr`).
    LearningRate,
    /// The batch-shape axis (`keys.classes_per_batch`, `keys.samples_per_class`).
    Batch,
    /// The seed axis (`keys.seed`).
    Seed,
    /// The plan's `[budget]` table, applied to every run.
    Budget,
}

impl fmt::Display for OverrideSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dataset(name) => write!(f, "dataset entry `{name}`"),
            Self::Loss(name) => write!(f, "loss entry `{name}`"),
            Self::LearningRate => f.write_str("the learning-rate axis (keys.lr)"),
            Self::Batch => {
                f.write_str("the batch axis (keys.classes_per_batch / keys.samples_per_class)")
            }
            Self::Seed => f.write_str("the seed axis (keys.seed)"),
            Self::Budget => f.write_str("the [budget] table"),
        }
    }
}

/// One `key.path = value` setting and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// The config key to set.
    pub key: KeyPath,
    /// The value it takes.
    pub value: toml::Value,
    /// The plan part that asked for it.
    pub source: OverrideSource,
}

/// Flattens an entry table into leaf overrides, in the table's key order.
///
/// Quoted dotted keys (`"a.b" = 1`) are split like unquoted ones; arrays are leaves.
pub fn flatten(table: &toml::Table, source: &OverrideSource) -> Result<Vec<Override>> {
    let mut out = Vec::new();
    flatten_into(&[], table, source, &mut out)?;
    Ok(out)
}

fn flatten_into(
    prefix: &[String],
    table: &toml::Table,
    source: &OverrideSource,
    out: &mut Vec<Override>,
) -> Result<()> {
    for (key, value) in table {
        let mut path = prefix.to_vec();
        path.extend(KeyPath::parse(key, source)?.0);
        match value {
            toml::Value::Table(inner) if !inner.is_empty() => {
                flatten_into(&path, inner, source, out)?;
            }
            _ => out.push(Override {
                key: KeyPath(path),
                value: value.clone(),
                source: source.clone(),
            }),
        }
    }
    Ok(())
}

/// Rejects two overrides that touch the same key, or where one key lies inside the other.
///
/// Later-wins would make the result depend on the order entries are applied in, so any
/// overlap is an error that names both setters.
pub fn check_disjoint(overrides: &[Override]) -> Result<()> {
    for (i, a) in overrides.iter().enumerate() {
        for b in &overrides[i + 1..] {
            if a.key.is_within(&b.key) || b.key.is_within(&a.key) {
                let key = if a.key.segments().len() >= b.key.segments().len() {
                    &a.key
                } else {
                    &b.key
                };
                return Err(Error::ConflictingOverride {
                    key: key.to_string(),
                    first: a.source.clone(),
                    second: b.source.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Applies overrides to a copy of `base`, creating intermediate tables as needed.
pub fn apply(base: &toml::Table, overrides: &[Override]) -> Result<toml::Table> {
    let mut config = base.clone();
    for o in overrides {
        let segments = o.key.segments();
        let (leaf, parents) = segments
            .split_last()
            .expect("a KeyPath has at least one segment");
        let mut table = &mut config;
        for (depth, segment) in parents.iter().enumerate() {
            let slot = table
                .entry(segment.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = match slot {
                toml::Value::Table(inner) => inner,
                _ => {
                    return Err(Error::OverrideShape {
                        key: o.key.to_string(),
                        blocked_at: o.key.joined(depth + 1),
                        origin: o.source.clone(),
                    });
                }
            };
        }
        table.insert(leaf.clone(), o.value.clone());
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn nested_dotted_and_quoted_keys_flatten_to_the_same_leaves() {
        let src = OverrideSource::Loss("x".into());
        let a = flatten(&table("loss = { margin = 0.2, name = \"t\" }"), &src).unwrap();
        let b = flatten(&table("loss.margin = 0.2\nloss.name = \"t\""), &src).unwrap();
        let c = flatten(&table("\"loss.margin\" = 0.2\n\"loss.name\" = \"t\""), &src).unwrap();
        let keys = |v: &[Override]| {
            let mut k: Vec<String> = v.iter().map(|o| o.key.to_string()).collect();
            k.sort();
            k
        };
        assert_eq!(keys(&a), ["loss.margin", "loss.name"]);
        assert_eq!(keys(&a), keys(&b));
        assert_eq!(keys(&a), keys(&c));
    }

    #[test]
    fn empty_segment_is_an_error_naming_the_entry() {
        let src = OverrideSource::Dataset("glyphs".into());
        let err = flatten(&table("\"data..modes\" = 1"), &src).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("dataset entry `glyphs`") && msg.contains("data..modes"),
            "{msg}"
        );
    }

    #[test]
    fn overlapping_keys_from_two_sources_conflict() {
        let a = flatten(
            &table("optimizer.lr = 0.1"),
            &OverrideSource::Loss("l".into()),
        )
        .unwrap();
        let b = vec![Override {
            key: KeyPath::parse("optimizer", &OverrideSource::Budget).unwrap(),
            value: toml::Value::Integer(1),
            source: OverrideSource::Budget,
        }];
        let all: Vec<Override> = a.into_iter().chain(b).collect();
        let msg = check_disjoint(&all).unwrap_err().to_string();
        assert!(
            msg.contains("optimizer.lr") && msg.contains("loss entry `l`"),
            "{msg}"
        );
        assert!(msg.contains("[budget]"), "{msg}");
    }

    #[test]
    fn apply_merges_leaves_and_keeps_siblings() {
        let base = table("[loss]\nname = \"triplet\"\nmargin = 0.05\n[data]\nkind = \"glyphs\"");
        let src = OverrideSource::Loss("l".into());
        let o = flatten(&table("loss.margin = 0.2\nminer.kind = \"hard\""), &src).unwrap();
        let out = apply(&base, &o).unwrap();
        assert_eq!(out["loss"]["margin"].as_float(), Some(0.2));
        assert_eq!(out["loss"]["name"].as_str(), Some("triplet"));
        assert_eq!(out["miner"]["kind"].as_str(), Some("hard"));
        assert_eq!(out["data"]["kind"].as_str(), Some("glyphs"));
    }

    #[test]
    fn apply_through_a_scalar_is_an_error() {
        let base = table("loss = \"triplet\"");
        let src = OverrideSource::Loss("l".into());
        let o = flatten(&table("loss.margin = 0.2"), &src).unwrap();
        let msg = apply(&base, &o).unwrap_err().to_string();
        assert!(
            msg.contains("`loss` in the base config is not a table"),
            "{msg}"
        );
    }
}
