//! Running a case file and writing PML-style results.

use dml_core::Real;
use serde_json::{Map, Value, json};

use super::Dtype;
use super::registry::{BuildContext, build_metric_loss, build_miner};
use crate::error::{Error, Result};
use crate::loss::{LossTerm, TermIndices};
use crate::matrix::MatrixRef;
use crate::metric_loss::Batch;
use crate::tuples::{PairIndices, TripletIndices, Tuples};

/// Top-level keys a case file may carry besides the ones dml reads.
const METADATA_KEYS: &[&str] = &["generator", "seed", "meta", "eval_cases"];

/// Keys a case may carry.
const CASE_KEYS: &[&str] = &[
    "name",
    "loss",
    "params",
    "miner",
    "miner_params",
    "indices_tuple",
    "proxies",
    "embeddings",
    "labels",
    "unreduced",
];

/// Runs every case of a case file and returns the results document.
///
/// The dtype is `dtype` if given, else the file's `dtype` (`float32` / `float64`), else f32.
/// A malformed file is an error; a case that fails becomes a result with an `error` field.
pub fn run_case_file(text: &str, dtype: Option<Dtype>) -> Result<Value> {
    let doc: Value =
        serde_json::from_str(text).map_err(|e| Error::Case(format!("not valid JSON: {e}")))?;
    let top = doc
        .as_object()
        .ok_or_else(|| Error::Case("the top level must be an object".into()))?;
    for key in top.keys() {
        if !["dtype", "embeddings", "labels", "cases"].contains(&key.as_str())
            && !METADATA_KEYS.contains(&key.as_str())
        {
            return Err(Error::Case(format!(
                "unknown top-level key `{key}`; expected dtype, embeddings, labels, cases"
            )));
        }
    }
    let dtype = match dtype {
        Some(d) => d,
        None => match top.get("dtype") {
            None => Dtype::F32,
            Some(Value::String(name)) if name == "float32" => Dtype::F32,
            Some(Value::String(name)) if name == "float64" => Dtype::F64,
            Some(other) => {
                return Err(Error::Case(format!(
                    "dtype {other} is not supported; use \"float32\" or \"float64\""
                )));
            }
        },
    };
    let cases = top
        .get("cases")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Case("`cases` must be an array".into()))?;
    let shared = SharedBatch {
        embeddings: top.get("embeddings"),
        labels: top.get("labels"),
    };
    let results: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(k, case)| {
            let name = case
                .get("name")
                .and_then(Value::as_str)
                .map_or_else(|| format!("case {k}"), str::to_string);
            let out = match dtype {
                Dtype::F32 => run_case::<f32>(case, &shared),
                Dtype::F64 => run_case::<f64>(case, &shared),
            };
            out.unwrap_or_else(|e| {
                json!({
                    "name": name,
                    "loss_name": case.get("loss").cloned().unwrap_or(Value::Null),
                    "error": dml_core::error::chain(&e),
                })
            })
        })
        .collect();
    Ok(json!({
        "meta": {
            "dtype": dtype.pml_name(),
            "dml": env!("CARGO_PKG_VERSION"),
            "cases": cases.len(),
        },
        "results": results,
    }))
}

/// The file-level batch that cases without their own use.
struct SharedBatch<'a> {
    embeddings: Option<&'a Value>,
    labels: Option<&'a Value>,
}

fn run_case<T: Real>(case: &Value, shared: &SharedBatch<'_>) -> Result<Value> {
    let obj = case
        .as_object()
        .ok_or_else(|| Error::Case("a case must be an object".into()))?;
    if let Some(k) = obj.keys().find(|k| !CASE_KEYS.contains(&k.as_str())) {
        return Err(Error::Case(format!(
            "unknown case key `{k}`; expected {}",
            CASE_KEYS.join(", ")
        )));
    }
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Case("a case needs a string `name`".into()))?;
    let in_case = |e: Error| Error::InCase {
        case: name.to_string(),
        source: Box::new(e),
    };
    run_named_case::<T>(obj, shared, name).map_err(in_case)
}

fn run_named_case<T: Real>(
    obj: &Map<String, Value>,
    shared: &SharedBatch<'_>,
    name: &str,
) -> Result<Value> {
    let loss_name = obj
        .get("loss")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Case("a case needs a string `loss`".into()))?;
    let (emb, n, d) = matrix::<T>(
        "embeddings",
        obj.get("embeddings").or(shared.embeddings).ok_or_else(|| {
            Error::Case("no embeddings (neither in the case nor the file)".into())
        })?,
    )?;
    let labels = labels(
        obj.get("labels")
            .or(shared.labels)
            .ok_or_else(|| Error::Case("no labels (neither in the case nor the file)".into()))?,
    )?;
    let proxies = obj
        .get("proxies")
        .map(|v| matrix::<T>("proxies", v))
        .transpose()?;
    let miner = match obj.get("miner") {
        None | Some(Value::Null) => None,
        Some(Value::String(m)) => Some((m.as_str(), obj.get("miner_params"))),
        Some(other) => {
            return Err(Error::Case(format!(
                "`miner` must be a class name, got {other}"
            )));
        }
    };
    let ctx = BuildContext {
        proxies: proxies.as_ref().map(|(_, c, dd)| (*c, *dd)),
    };
    let loss = build_metric_loss(loss_name, obj.get("params"), miner, ctx)?;
    let tuples = obj.get("indices_tuple").map(indices_tuple).transpose()?;
    let x = MatrixRef::new(&emb, n, d)?;
    let mut batch = Batch::new(x, &labels);
    if let Some(t) = &tuples {
        batch = batch.with_tuples(t);
    }
    if let Some((p, c, pd)) = &proxies {
        batch = batch.with_params(MatrixRef::new(p, *c, *pd)?);
    }
    let unreduced = match obj.get("unreduced") {
        None => false,
        Some(Value::Bool(flag)) => *flag,
        Some(other) => {
            return Err(Error::Case(format!(
                "`unreduced` must be true or false, got {other}"
            )));
        }
    };
    if unreduced {
        batch = batch.with_terms();
    }
    let computed = loss.compute(batch)?;
    let mut out = Map::new();
    out.insert("name".into(), json!(name));
    out.insert("loss_name".into(), json!(loss_name));
    out.insert(
        "miner_name".into(),
        miner.map_or(Value::Null, |(m, _)| json!(m)),
    );
    if let (Some((m, mp)), None) = (miner, &tuples) {
        // Mined again here, on purpose: the loss may have fused the miner without listing it.
        let mined = build_miner(m, mp)?.mine(x, &labels, 0)?;
        let lists: Vec<Vec<u32>> = mined.lists().iter().map(|l| l.to_vec()).collect();
        out.insert(
            "num_mined".into(),
            json!(lists.iter().map(Vec::len).collect::<Vec<_>>()),
        );
        out.insert("miner_output".into(), json!(lists));
    }
    out.insert("loss".into(), num(computed.loss));
    out.insert("grad".into(), rows(&computed.grad, d));
    if let (Some(g), Some((_, _, pd))) = (&computed.param_grad, &proxies) {
        out.insert("proxy_grad".into(), rows(g, *pd));
    }
    if unreduced {
        let terms: Map<String, Value> = computed
            .terms
            .iter()
            .map(|t| (t.name.to_string(), term(t)))
            .collect();
        out.insert("unreduced".into(), Value::Object(terms));
    }
    Ok(Value::Object(out))
}

/// A number the PML way: NaN as `null`, infinities as `"inf"` / `"-inf"`.
fn num<T: Real>(x: T) -> Value {
    let x = x.f64();
    if x.is_nan() {
        Value::Null
    } else if x.is_infinite() {
        json!(if x > 0.0 { "inf" } else { "-inf" })
    } else {
        json!(x)
    }
}

fn rows<T: Real>(data: &[T], d: usize) -> Value {
    Value::Array(
        data.chunks(d.max(1))
            .map(|r| Value::Array(r.iter().map(|&v| num(v)).collect()))
            .collect(),
    )
}

fn term<T: Real>(t: &LossTerm<T>) -> Value {
    let indices = match &t.indices {
        TermIndices::PerElement(i) => json!(i),
        TermIndices::PerPosPair { anchor, positive } => json!([anchor, positive]),
        TermIndices::PerNegPair { anchor, negative } => json!([anchor, negative]),
        TermIndices::PerTriplet(t) => json!([t.anchor, t.positive, t.negative]),
        TermIndices::Reduced => Value::Null,
    };
    let losses = match &t.indices {
        TermIndices::Reduced => t.losses.first().map_or(Value::Null, |&v| num(v)),
        _ => Value::Array(t.losses.iter().map(|&v| num(v)).collect()),
    };
    json!({
        "losses": losses,
        "indices": indices,
        "reduction_type": t.indices.reduction_type(),
    })
}

/// An `n x d` matrix from a JSON array of equal-length numeric arrays.
fn matrix<T: Real>(what: &str, v: &Value) -> Result<(Vec<T>, usize, usize)> {
    let rows = v
        .as_array()
        .ok_or_else(|| Error::Case(format!("`{what}` must be an array of rows")))?;
    let d = rows.first().and_then(Value::as_array).map_or(0, Vec::len);
    // Every row is checked before the values are allocated: the row count times row 0's
    // width is then the number of values the file holds, not a size that 100 000 empty
    // rows after one long row would inflate to 10^10.
    let rows: Vec<&Vec<Value>> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let r = r
                .as_array()
                .ok_or_else(|| Error::Case(format!("`{what}` row {i} is not an array")))?;
            if r.len() != d {
                return Err(Error::Case(format!(
                    "`{what}` row {i} has {} values, row 0 has {d}",
                    r.len()
                )));
            }
            Ok(r)
        })
        .collect::<Result<_>>()?;
    let mut out = Vec::with_capacity(rows.len() * d);
    for (i, r) in rows.iter().enumerate() {
        for (j, x) in r.iter().enumerate() {
            let x = x.as_f64().ok_or_else(|| {
                Error::Case(format!("`{what}` row {i} column {j} is not a number: {x}"))
            })?;
            // JSON numbers are finite, but one beyond f32's range is not once converted.
            let v = T::of(x);
            if !v.is_finite() {
                return Err(Error::Case(format!(
                    "`{what}` row {i} column {j} is not finite as {}: {x}",
                    std::any::type_name::<T>()
                )));
            }
            out.push(v);
        }
    }
    Ok((out, rows.len(), d))
}

fn labels(v: &Value) -> Result<Vec<i64>> {
    v.as_array()
        .ok_or_else(|| Error::Case("`labels` must be an array of integers".into()))?
        .iter()
        .enumerate()
        .map(|(i, l)| {
            l.as_i64()
                .ok_or_else(|| Error::Case(format!("label {i} is not an integer: {l}")))
        })
        .collect()
}

fn index_list(v: &Value) -> Result<Vec<u32>> {
    v.as_array()
        .ok_or_else(|| Error::Case("`indices_tuple` entries must be arrays".into()))?
        .iter()
        .map(|x| {
            x.as_u64()
                .and_then(|u| u32::try_from(u).ok())
                .ok_or_else(|| Error::Case(format!("tuple index {x} is not a row index")))
        })
        .collect()
}

/// PML's `indices_tuple`: 3 lists are triplets, 4 lists are pairs.
fn indices_tuple(v: &Value) -> Result<Tuples> {
    let lists: Vec<Vec<u32>> = v
        .as_array()
        .ok_or_else(|| Error::Case("`indices_tuple` must be an array of 3 or 4 lists".into()))?
        .iter()
        .map(index_list)
        .collect::<Result<_>>()?;
    let mut it = lists.into_iter();
    match (it.next(), it.next(), it.next(), it.next(), it.next()) {
        (Some(anchor), Some(positive), Some(negative), None, None) => {
            Ok(Tuples::Triplets(TripletIndices {
                anchor,
                positive,
                negative,
            }))
        }
        (Some(anchor_pos), Some(positive), Some(anchor_neg), Some(negative), None) => {
            Ok(Tuples::Pairs(PairIndices {
                anchor_pos,
                positive,
                anchor_neg,
                negative,
            }))
        }
        _ => Err(Error::Case(
            "`indices_tuple` must hold 3 lists (triplets) or 4 lists (pairs)".into(),
        )),
    }
}

#[cfg(test)]
mod properties;
