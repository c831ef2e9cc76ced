//! Grid points: the axes of one run, its stable id, and the batch-shape value type.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::overrides::Override;

/// One axis of an experiment grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// Named dataset setups (`[datasets.NAME]`).
    Dataset,
    /// Named loss setups: loss, miner, distance (`[losses.NAME]`).
    Loss,
    /// Learning rates.
    LearningRate,
    /// Batch shapes `PxK`.
    Batch,
    /// Seeds.
    Seed,
}

impl Axis {
    /// The field of the plan's `[grid]` table that lists this axis.
    pub fn grid_field(self) -> &'static str {
        match self {
            Self::Dataset => "datasets",
            Self::Loss => "losses",
            Self::LearningRate => "learning_rates",
            Self::Batch => "batches",
            Self::Seed => "seeds",
        }
    }
}

impl fmt::Display for Axis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Dataset => "dataset",
            Self::Loss => "loss",
            Self::LearningRate => "learning-rate",
            Self::Batch => "batch",
            Self::Seed => "seed",
        })
    }
}

/// Whether `name` may be used as an entry, dataset or loss name: it ends up in run ids and
/// figure file names, so only `[A-Za-z0-9._-]`, non-empty, and not `.` or `..`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A P x K batch: `classes` classes with `samples_per_class` samples each. Written `PxK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BatchShape {
    /// P: classes per batch.
    pub classes: u32,
    /// K: samples per class.
    pub samples_per_class: u32,
}

impl BatchShape {
    /// Samples per batch, P * K.
    pub fn batch_size(self) -> u64 {
        u64::from(self.classes) * u64::from(self.samples_per_class)
    }
}

impl fmt::Display for BatchShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.classes, self.samples_per_class)
    }
}

/// The text was not `PxK` with two positive integers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a batch shape `PxK` (P classes x K samples, both >= 1)")]
pub struct BatchShapeError(pub String);

impl FromStr for BatchShape {
    type Err = BatchShapeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BatchShapeError(s.to_owned());
        let (p, k) = s.split_once('x').ok_or_else(bad)?;
        let parse = |t: &str| match t.parse::<u32>() {
            Ok(v) if v >= 1 && t.chars().all(|c| c.is_ascii_digit()) => Ok(v),
            _ => Err(bad()),
        };
        Ok(Self {
            classes: parse(p)?,
            samples_per_class: parse(k)?,
        })
    }
}

impl TryFrom<String> for BatchShape {
    type Error = BatchShapeError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<BatchShape> for String {
    fn from(b: BatchShape) -> String {
        b.to_string()
    }
}

/// Where one run sits in the grid. Recorded with every result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunAxes {
    /// Dataset entry name.
    pub dataset: String,
    /// Loss entry name.
    pub loss: String,
    /// Learning rate.
    pub lr: f64,
    /// Batch shape.
    pub batch: BatchShape,
    /// Seed.
    pub seed: u64,
}

impl RunAxes {
    /// The run's stable, human-readable id: `dataset/loss/lr<lr>/<P>x<K>/seed<seed>`.
    ///
    /// The learning rate uses Rust's shortest round-trip formatting (`0.001`, `0.0003`), so the
    /// same plan always gives the same ids.
    pub fn run_id(&self) -> String {
        format!(
            "{}/{}/lr{}/{}/seed{}",
            self.dataset, self.loss, self.lr, self.batch, self.seed
        )
    }
}

/// One fully resolved grid point, ready to hand to the trainer.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRun {
    /// Stable id (see [`RunAxes::run_id`]).
    pub id: String,
    /// Where the run sits in the grid.
    pub axes: RunAxes,
    /// The overrides laid over the base config, in application order: dataset entry, loss
    /// entry, learning rate, batch, seed, budget.
    pub overrides: Vec<Override>,
    /// The base config with the overrides applied.
    pub config: toml::Table,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_shapes_parse_and_print_round_trip() {
        let b: BatchShape = "20x6".parse().unwrap();
        assert_eq!(
            (b.classes, b.samples_per_class, b.batch_size()),
            (20, 6, 120)
        );
        assert_eq!(b.to_string(), "20x6");
        for bad in ["20", "x6", "0x6", "20x0", "20x6x2", "+2x6", "20 x 6", ""] {
            assert!(bad.parse::<BatchShape>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn run_id_is_readable_and_stable() {
        let axes = RunAxes {
            dataset: "glyphs-1mode".into(),
            loss: "triplet-hard".into(),
            lr: 1e-3,
            batch: "20x6".parse().unwrap(),
            seed: 1,
        };
        assert_eq!(
            axes.run_id(),
            "glyphs-1mode/triplet-hard/lr0.001/20x6/seed1"
        );
        let axes = RunAxes { lr: 3e-4, ..axes };
        assert_eq!(
            axes.run_id(),
            "glyphs-1mode/triplet-hard/lr0.0003/20x6/seed1"
        );
    }

    #[test]
    fn names_that_could_escape_a_folder_are_invalid() {
        for ok in ["glyphs-4modes", "triplet_semihard", "omniglot.char"] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }
}
