//! A strict reader for PML constructor arguments: every key must be read, or it is an error
//! that lists the accepted keys (so a typo never silently means a default, unlike PML).

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The arguments of one PML constructor.
pub(crate) struct Params<'a> {
    owner: String,
    map: Option<&'a Map<String, Value>>,
    accepted: Vec<&'static str>,
}

impl<'a> Params<'a> {
    /// Arguments of `owner`; `value` must be a JSON object, `null` or absent.
    pub fn new(owner: &str, value: Option<&'a Value>) -> Result<Self> {
        let map = match value {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(other) => {
                return Err(Error::Case(format!(
                    "{owner}: params must be an object, got {other}"
                )));
            }
        };
        Ok(Self {
            owner: owner.to_string(),
            map,
            accepted: Vec::new(),
        })
    }

    /// The constructor's class name.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The raw value of `key`, if given (and not `null`).
    pub fn value(&mut self, key: &'static str) -> Option<&'a Value> {
        self.accepted.push(key);
        self.map?.get(key).filter(|v| !v.is_null())
    }

    /// A number, or `default`.
    pub fn f64(&mut self, key: &'static str, default: f64) -> Result<f64> {
        Ok(self.opt_f64(key)?.unwrap_or(default))
    }

    /// A number, if given.
    pub fn opt_f64(&mut self, key: &'static str) -> Result<Option<f64>> {
        match self.value(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                Error::Case(format!("{}: `{key}` must be a number, got {v}", self.owner))
            }),
        }
    }

    /// A non-negative integer, if given.
    pub fn opt_usize(&mut self, key: &'static str) -> Result<Option<usize>> {
        match self.value(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|u| usize::try_from(u).ok())
                .map(Some)
                .ok_or_else(|| {
                    Error::Case(format!(
                        "{}: `{key}` must be a non-negative integer, got {v}",
                        self.owner
                    ))
                }),
        }
    }

    /// A boolean, or `default`.
    pub fn bool(&mut self, key: &'static str, default: bool) -> Result<bool> {
        match self.value(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| {
                Error::Case(format!(
                    "{}: `{key}` must be true or false, got {v}",
                    self.owner
                ))
            }),
        }
    }

    /// Fails if any given key was not read, listing the keys this constructor accepts.
    pub fn finish(self) -> Result<()> {
        let Some(map) = self.map else { return Ok(()) };
        let unknown: Vec<&str> = map
            .keys()
            .map(String::as_str)
            .filter(|k| !self.accepted.contains(k))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let mut accepted = self.accepted.clone();
        accepted.sort_unstable();
        accepted.dedup();
        Err(Error::Case(format!(
            "{}: unknown parameter{} {}; supported: {}",
            self.owner,
            if unknown.len() > 1 { "s" } else { "" },
            unknown
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", "),
            if accepted.is_empty() {
                "none".to_string()
            } else {
                accepted.join(", ")
            }
        )))
    }
}

/// A nested constructor: `"ClassName"` or `{"name": ..., "params": {...}}`.
pub(crate) fn nested<'a>(what: &str, value: &'a Value) -> Result<(&'a str, Option<&'a Value>)> {
    match value {
        Value::String(s) => Ok((s.as_str(), None)),
        Value::Object(m) => {
            let name = m.get("name").and_then(Value::as_str).ok_or_else(|| {
                Error::Case(format!(
                    "{what}: expected {{\"name\": ..., \"params\": ...}}, got {value}"
                ))
            })?;
            if let Some(extra) = m.keys().find(|k| *k != "name" && *k != "params") {
                return Err(Error::Case(format!(
                    "{what}: unknown key `{extra}` (expected `name` and `params`)"
                )));
            }
            Ok((name, m.get("params")))
        }
        other => Err(Error::Case(format!(
            "{what}: expected a class name or {{\"name\", \"params\"}}, got {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_listed_with_the_accepted_ones() {
        let v: Value = serde_json::json!({"margn": 0.1, "swap": true});
        let mut p = Params::new("TripletMarginLoss", Some(&v)).unwrap();
        assert_eq!(p.f64("margin", 0.05).unwrap(), 0.05);
        assert!(p.bool("swap", false).unwrap());
        let err = p.finish().unwrap_err().to_string();
        assert!(
            err.contains("`margn`") && err.contains("supported: margin, swap"),
            "{err}"
        );
    }

    #[test]
    fn nested_accepts_both_spellings() {
        let v = serde_json::json!("CosineSimilarity");
        assert_eq!(nested("distance", &v).unwrap().0, "CosineSimilarity");
        let v = serde_json::json!({"name": "LpDistance", "params": {"power": 2}});
        let (name, params) = nested("distance", &v).unwrap();
        assert_eq!(name, "LpDistance");
        assert!(params.is_some());
        assert!(nested("distance", &serde_json::json!(3)).is_err());
    }
}
