//! PML class names and constructor arguments to dml values, with PML's defaults.
//!
//! This is the one place where PML's implicit defaults are spelled out (each default's source
//! is PML 2.9's constructor signature; see docs/pml-semantics.md, notes 1 and 7-23). dml's
//! own Rust API takes all of them explicitly.

use serde_json::Value;

use super::params::{Params, nested};
use crate::distance::{Distance, LpPower};
use crate::error::{Error, Result};
use crate::loss::{
    AngularLoss, AngularMcLoss, ContrastiveLoss, GeneralizedLiftedStructureLoss,
    LiftedStructureLoss, LossKernel, LossKind, MultiSimilarityLoss, NPairAngularLoss, NPairsLoss,
    TripletMarginLoss,
};
use crate::loss::{
    ArcFaceLoss, CircleLoss, LearnedBeta, MarginLoss, NTXentLoss, ProxyAnchorLoss, ProxyNCALoss,
    SupConLoss,
};
use crate::metric_loss::MetricLoss;
use crate::miner::{
    BatchHardMiner, DistanceWeightedMiner, Miner, MultiSimilarityMiner, SemiHardMiner,
    TripletMarginMiner, TripletType,
};
use crate::reducer::{Reducer, ThresholdBounds};
use crate::regularizer::LpRegularizer;

/// The PML loss class names dml understands.
pub const SUPPORTED_LOSSES: &[&str] = &[
    "ContrastiveLoss",
    "TripletMarginLoss",
    "NPairsLoss",
    "AngularLoss",
    "NPairAngularLoss",
    "AngularMcLoss",
    "MultiSimilarityLoss",
    "LiftedStructureLoss",
    "GeneralizedLiftedStructureLoss",
    "NTXentLoss",
    "ProxyAnchorLoss",
    "ProxyNCALoss",
    "ArcFaceLoss",
    "CircleLoss",
    "SupConLoss",
    "MarginLoss",
];

/// The PML miner class names dml understands.
pub const SUPPORTED_MINERS: &[&str] = &[
    "TripletMarginMiner",
    "BatchHardMiner",
    "SemiHardMiner",
    "MultiSimilarityMiner",
    "DistanceWeightedMiner",
];

/// The PML distance class names dml understands.
pub const SUPPORTED_DISTANCES: &[&str] =
    &["LpDistance", "CosineSimilarity", "DotProductSimilarity"];

/// The PML reducer class names dml understands.
pub const SUPPORTED_REDUCERS: &[&str] = &[
    "MeanReducer",
    "AvgNonZeroReducer",
    "SumReducer",
    "ThresholdReducer",
    "DivisorReducer",
];

/// What a loss needs to know about the batch to be built (proxy losses size their proxies).
#[derive(Debug, Clone, Copy, Default)]
pub struct BuildContext {
    /// `(num_classes, embedding_size)` of proxies the caller brings, if any.
    pub proxies: Option<(usize, usize)>,
}

/// Builds a [`MetricLoss`] from a PML loss name and arguments, plus an optional PML miner.
///
/// Missing arguments take PML 2.9's defaults; unknown names or arguments are errors that list
/// what is supported.
pub fn build_metric_loss(
    loss: &str,
    params: Option<&Value>,
    miner: Option<(&str, Option<&Value>)>,
    ctx: BuildContext,
) -> Result<MetricLoss> {
    let mut p = Params::new(loss, params)?;
    let kind = build_kind(loss, &mut p, ctx)?;
    let reducer = match p.value("reducer") {
        None => kind.pml_default_reducer(),
        Some(v) => build_reducer(v)?,
    };
    let emb_reg = p.value("embedding_regularizer");
    let emb_weight = p.f64("embedding_reg_weight", 1.0)?;
    // Accepted for compatibility; dml always reports its statistics.
    p.bool("collect_stats", true)?;
    let weight_reg = if kind.param_shape(1).is_some() {
        let r = p.value("weight_regularizer");
        let w = p.f64("weight_reg_weight", 1.0)?;
        r.map(|v| build_regularizer(v, w)).transpose()?
    } else {
        None
    };
    p.finish()?;
    let mut out = MetricLoss::new(kind, reducer)?;
    if let Some(v) = emb_reg {
        out = out.with_embedding_regularizer(build_regularizer(v, emb_weight)?);
    }
    if let Some(r) = weight_reg {
        out = out.with_weight_regularizer(r)?;
    }
    if let Some((name, mp)) = miner {
        out = out.with_miner(build_miner(name, mp)?);
    }
    Ok(out)
}

fn unknown(what: &str, name: &str, supported: &[&str]) -> Error {
    Error::Case(format!(
        "unknown {what} `{name}`; supported: {}",
        supported.join(", ")
    ))
}

/// The loss kernel of a PML loss class (its class-specific arguments only).
fn build_kind(name: &str, p: &mut Params<'_>, ctx: BuildContext) -> Result<LossKind> {
    let lp = Distance::PML_LP_DEFAULT;
    Ok(match name {
        "ContrastiveLoss" => {
            let distance = distance_or(p, lp)?;
            ContrastiveLoss::new(
                distance,
                p.f64("pos_margin", 0.0)?,
                p.f64("neg_margin", 1.0)?,
            )?
            .into()
        }
        "TripletMarginLoss" => {
            let distance = distance_or(p, lp)?;
            if let Some(v) = p.value("triplets_per_anchor")
                && v != "all"
            {
                return Err(Error::Case(format!(
                    "TripletMarginLoss: triplets_per_anchor={v} samples triplets with torch's RNG, \
                     which cannot be reproduced; use \"all\" or a miner"
                )));
            }
            TripletMarginLoss::new(distance, p.f64("margin", 0.05)?)?
                .with_swap(p.bool("swap", false)?)
                .with_smooth_loss(p.bool("smooth_loss", false)?)
                .into()
        }
        "NPairsLoss" => {
            NPairsLoss::new(distance_or(p, Distance::DotProduct { normalize: true })?).into()
        }
        "AngularLoss" => {
            require_distance(p, lp)?;
            AngularLoss::new(p.f64("alpha", 40.0)?)?.into()
        }
        "NPairAngularLoss" => NPairAngularLoss::new(
            p.f64("alpha", 45.0)?,
            p.f64("lambda", 2.0)?,
            p.bool("normalize_embeddings", true)?,
        )?
        .into(),
        "AngularMcLoss" => {
            AngularMcLoss::new(p.f64("alpha", 45.0)?, p.bool("normalize_embeddings", true)?)?.into()
        }
        "MultiSimilarityLoss" => {
            let distance = distance_or(p, Distance::Cosine)?;
            MultiSimilarityLoss::new(
                distance,
                p.f64("alpha", 2.0)?,
                p.f64("beta", 50.0)?,
                p.f64("base", 0.5)?,
            )?
            .into()
        }
        "LiftedStructureLoss" => {
            let distance = distance_or(p, lp)?;
            LiftedStructureLoss::new(
                distance,
                p.f64("neg_margin", 1.0)?,
                p.f64("pos_margin", 0.0)?,
            )?
            .into()
        }
        "GeneralizedLiftedStructureLoss" => {
            let distance = distance_or(p, lp)?;
            GeneralizedLiftedStructureLoss::new(
                distance,
                p.f64("neg_margin", 1.0)?,
                p.f64("pos_margin", 0.0)?,
            )?
            .into()
        }
        "NTXentLoss" => NTXentLoss::new(
            distance_or(p, Distance::Cosine)?,
            p.f64("temperature", 0.07)?,
        )?
        .into(),
        "ProxyAnchorLoss" => {
            let distance = distance_or(p, Distance::Cosine)?;
            let classes = proxy_classes(p, ctx)?;
            ProxyAnchorLoss::new(
                distance,
                classes,
                p.f64("margin", 0.1)?,
                p.f64("alpha", 32.0)?,
            )?
            .into()
        }
        "ProxyNCALoss" => {
            let squared = Distance::Lp {
                power: LpPower::Two,
                normalize: true,
            };
            let distance = distance_or(p, squared)?;
            let classes = proxy_classes(p, ctx)?;
            ProxyNCALoss::new(distance, classes, p.f64("softmax_scale", 1.0)?)?.into()
        }
        "ArcFaceLoss" => {
            let distance = distance_or(p, Distance::Cosine)?;
            let classes = proxy_classes(p, ctx)?;
            ArcFaceLoss::new(
                distance,
                classes,
                p.f64("margin", 28.6)?,
                p.f64("scale", 64.0)?,
            )?
            .into()
        }
        "CircleLoss" => {
            let distance = distance_or(p, Distance::Cosine)?;
            CircleLoss::new(distance, p.f64("m", 0.4)?, p.f64("gamma", 80.0)?)?.into()
        }
        "SupConLoss" => SupConLoss::new(
            distance_or(p, Distance::Cosine)?,
            p.f64("temperature", 0.1)?,
        )?
        .into(),
        "MarginLoss" => {
            let distance = distance_or(p, lp)?;
            if let Some(v) = p.value("triplets_per_anchor")
                && v != "all"
            {
                return Err(Error::Case(format!(
                    "MarginLoss: triplets_per_anchor={v} samples triplets with torch's RNG, which \
                     cannot be reproduced; use \"all\" or a miner"
                )));
            }
            let loss = MarginLoss::new(distance, p.f64("margin", 0.2)?, p.f64("beta", 1.2)?)?
                .with_nu(p.f64("nu", 0.0)?)?;
            let classes = p.opt_usize("num_classes")?;
            if p.bool("learn_beta", false)? {
                loss.with_learned_beta(match classes {
                    Some(num_classes) => LearnedBeta::PerClass { num_classes },
                    None => LearnedBeta::Global,
                })?
                .into()
            } else {
                // A fixed beta per class is one beta repeated: the same loss.
                loss.into()
            }
        }
        other => return Err(unknown("loss", other, SUPPORTED_LOSSES)),
    })
}

/// A proxy loss's `num_classes` (and `embedding_size`), checked against the proxies the case
/// brings; either the argument or the proxies must say how many classes there are.
fn proxy_classes(p: &mut Params<'_>, ctx: BuildContext) -> Result<usize> {
    let owner = p.owner().to_string();
    let classes = p.opt_usize("num_classes")?;
    let width = p.opt_usize("embedding_size")?;
    match (classes, ctx.proxies) {
        (None, None) => Err(Error::Case(format!(
            "{owner}: `num_classes` is required (or give the case `proxies`)"
        ))),
        (Some(c), None) => Ok(c),
        (given, Some((rows, cols))) => {
            if given.is_some_and(|c| c != rows) || width.is_some_and(|w| w != cols) {
                return Err(Error::Case(format!(
                    "{owner}: num_classes={} and embedding_size={} disagree with the {rows} x \
                     {cols} proxies",
                    given.map_or("-".into(), |c| c.to_string()),
                    width.map_or("-".into(), |w| w.to_string()),
                )));
            }
            Ok(rows)
        }
    }
}

/// The `distance` argument, or `default` (the class's PML default distance).
fn distance_or(p: &mut Params<'_>, default: Distance) -> Result<Distance> {
    match p.value("distance") {
        None => Ok(default),
        Some(v) => build_distance(v),
    }
}

/// Accepts a `distance` argument only if it equals `required` (PML asserts the distance type
/// of some losses and miners).
fn require_distance(p: &mut Params<'_>, required: Distance) -> Result<()> {
    let given = distance_or(p, required)?;
    if given == required {
        Ok(())
    } else {
        Err(Error::UnsupportedDistance {
            owner: leak_owner(p.owner()),
            required: "LpDistance(p=2, power=1, normalize_embeddings=True)",
            given: given.describe(),
        })
    }
}

/// Owners of parameters are static strings in errors; case owners are the known class names.
fn leak_owner(name: &str) -> &'static str {
    SUPPORTED_LOSSES
        .iter()
        .chain(SUPPORTED_MINERS)
        .find(|&&s| s == name)
        .copied()
        .unwrap_or("this loss")
}

/// A PML distance object.
pub fn build_distance(value: &Value) -> Result<Distance> {
    let (name, params) = nested("distance", value)?;
    let mut p = Params::new(name, params)?;
    let d = match name {
        "LpDistance" => {
            let pnorm = p.f64("p", 2.0)?;
            if pnorm != 2.0 {
                return Err(Error::Case(format!(
                    "LpDistance: only p=2 is supported, got p={pnorm}"
                )));
            }
            let power = match p.f64("power", 1.0)? {
                1.0 => LpPower::One,
                2.0 => LpPower::Two,
                other => {
                    return Err(Error::Case(format!(
                        "LpDistance: power must be 1 or 2, got {other}"
                    )));
                }
            };
            Distance::Lp {
                power,
                normalize: p.bool("normalize_embeddings", true)?,
            }
        }
        "CosineSimilarity" => {
            if !p.bool("normalize_embeddings", true)? {
                return Err(Error::Case(
                    "CosineSimilarity: normalize_embeddings must be true (PML asserts it)".into(),
                ));
            }
            Distance::Cosine
        }
        "DotProductSimilarity" => Distance::DotProduct {
            normalize: p.bool("normalize_embeddings", true)?,
        },
        other => return Err(unknown("distance", other, SUPPORTED_DISTANCES)),
    };
    p.finish()?;
    Ok(d)
}

/// A PML reducer object.
pub fn build_reducer(value: &Value) -> Result<Reducer> {
    let (name, params) = nested("reducer", value)?;
    let mut p = Params::new(name, params)?;
    p.bool("collect_stats", true)?;
    let r = match name {
        "MeanReducer" => Reducer::Mean,
        "AvgNonZeroReducer" => Reducer::AvgNonZero,
        "SumReducer" => Reducer::Sum,
        "DivisorReducer" => Reducer::Divisor,
        "ThresholdReducer" => {
            Reducer::Threshold(ThresholdBounds::new(p.opt_f64("low")?, p.opt_f64("high")?)?)
        }
        other => return Err(unknown("reducer", other, SUPPORTED_REDUCERS)),
    };
    p.finish()?;
    Ok(r)
}

/// A PML `LpRegularizer` with its weight.
pub fn build_regularizer(value: &Value, weight: f64) -> Result<LpRegularizer> {
    let (name, params) = nested("regularizer", value)?;
    if name != "LpRegularizer" {
        return Err(unknown("regularizer", name, &["LpRegularizer"]));
    }
    let mut p = Params::new(name, params)?;
    let r = LpRegularizer::new(p.f64("p", 2.0)?, p.f64("power", 1.0)?, weight)?;
    p.bool("collect_stats", true)?;
    p.finish()?;
    Ok(r)
}

/// A PML miner.
pub fn build_miner(name: &str, params: Option<&Value>) -> Result<Miner> {
    let mut p = Params::new(name, params)?;
    let lp = Distance::PML_LP_DEFAULT;
    p.bool("collect_stats", true)?;
    let m = match name {
        "TripletMarginMiner" => {
            let distance = distance_or(&mut p, lp)?;
            let kind = match p.value("type_of_triplets").map(|v| v.as_str()) {
                None | Some(Some("all")) => TripletType::All,
                Some(Some("hard")) => TripletType::Hard,
                Some(Some("semihard")) => TripletType::SemiHard,
                Some(Some("easy")) => TripletType::Easy,
                Some(_) => {
                    return Err(Error::Case(
                        "TripletMarginMiner: type_of_triplets must be one of \"all\", \"hard\", \
                         \"semihard\", \"easy\""
                            .into(),
                    ));
                }
            };
            TripletMarginMiner::new(distance, p.f64("margin", 0.2)?, kind)?.into()
        }
        "BatchHardMiner" => BatchHardMiner::new(distance_or(&mut p, lp)?).into(),
        "SemiHardMiner" => SemiHardMiner::new(distance_or(&mut p, lp)?).into(),
        "MultiSimilarityMiner" => {
            let distance = distance_or(&mut p, Distance::Cosine)?;
            MultiSimilarityMiner::new(distance, p.f64("epsilon", 0.1)?)?.into()
        }
        "DistanceWeightedMiner" => {
            require_distance(&mut p, DistanceWeightedMiner::DISTANCE)?;
            let seed = p.opt_usize("seed")?.unwrap_or(0) as u64;
            DistanceWeightedMiner::new(
                p.f64("cutoff", 0.5)?,
                p.f64("nonzero_loss_cutoff", 1.4)?,
                seed,
            )?
            .into()
        }
        other => return Err(unknown("miner", other, SUPPORTED_MINERS)),
    };
    p.finish()?;
    Ok(m)
}
