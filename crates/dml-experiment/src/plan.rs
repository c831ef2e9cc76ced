//! `PLAN.toml`: a base run config, named axis entries and the grid that crosses them.
//!
//! ```toml
//! name = "quick"
//! base = "../configs/glyphs.toml"   # a run config, relative to this file; or an inline [base]
//!
//! [keys]                            # where the typed axes land in the run config
//! lr = "optimizer.lr"
//! seed = "seed"
//! classes_per_batch = "data.classes_per_batch"
//! samples_per_class = "data.samples_per_class"
//!
//! [grid]                            # what to cross, in this order (outermost first)
//! datasets = ["glyphs-1mode", "glyphs-4modes"]
//! losses = ["triplet-semihard", "triplet-hard"]
//! learning_rates = [1e-3]
//! batches = ["20x6"]
//! seeds = [1, 2, 3]
//!
//! # Or several grids, `[[grid]]` tables, each crossed on its own and run in plan order;
//! # a run that two grids share (same id) runs once, where it first appears.
//!
//! [budget]                          # overrides applied to every run: budget, eval schedule
//! epochs = 2
//!
//! [datasets.glyphs-1mode]           # each entry is a set of config overrides
//! data = { kind = "glyphs", modes = 1 }
//!
//! [losses.triplet-hard]
//! loss = { name = "triplet-margin", margin = 1.0 }
//! miner = { name = "batch-hard" }
//! ```
//!
//! Everything is checked when the plan is loaded, before any run starts: unknown or repeated
//! entry names, empty axes, malformed batch shapes, and two plan parts setting the same key
//! are errors that name the entry. [`Plan::check`] then lets the caller (the trainer) reject
//! runs whose resolved config it cannot use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{BoxError, Error, Result};
use crate::grid::{Axis, BatchShape, PlannedRun, RunAxes, is_valid_name};
use crate::overrides::{self, KeyPath, Override, OverrideSource};

/// The plan file as written. Private: [`Plan`] is its validated form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    name: String,
    #[serde(default)]
    description: Option<String>,
    base: toml::Value,
    keys: KeysFile,
    grid: GridsFile,
    #[serde(default)]
    budget: toml::Table,
    #[serde(default)]
    datasets: BTreeMap<String, toml::Table>,
    #[serde(default)]
    losses: BTreeMap<String, toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    lr: String,
    seed: String,
    classes_per_batch: String,
    samples_per_class: String,
}

/// One `[grid]` table or an array of `[[grid]]` tables.
#[derive(Debug)]
enum GridsFile {
    One(GridFile),
    Many(Vec<GridFile>),
}

/// By hand rather than `#[serde(untagged)]`, which would replace a mistake inside a grid
/// (an unknown field, with its line) by "did not match any variant".
impl<'de> Deserialize<'de> for GridsFile {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        struct Grids;
        impl<'de> serde::de::Visitor<'de> for Grids {
            type Value = GridsFile;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a [grid] table or [[grid]] tables")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<GridsFile, A::Error> {
                GridFile::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(GridsFile::One)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> std::result::Result<GridsFile, A::Error> {
                Vec::<GridFile>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(GridsFile::Many)
            }
        }
        deserializer.deserialize_any(Grids)
    }
}

impl GridsFile {
    fn grids(&self) -> &[GridFile] {
        match self {
            GridsFile::One(grid) => std::slice::from_ref(grid),
            GridsFile::Many(grids) => grids,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GridFile {
    datasets: Vec<String>,
    losses: Vec<String>,
    learning_rates: Vec<f64>,
    batches: Vec<String>,
    seeds: Vec<u64>,
}

/// Where the plan's base run config came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseSource {
    /// A TOML file (resolved against the plan's folder).
    File(PathBuf),
    /// An inline `[base]` table in the plan.
    Inline,
}

/// Checks one resolved run before any run starts; the trainer plugs in "is this a valid run
/// config, a known loss, a known dataset" here.
///
/// Any `Fn(&PlannedRun) -> Result<(), BoxError>` is a check.
pub trait RunCheck {
    /// `Ok` if the run can be started.
    fn check(&self, run: &PlannedRun) -> std::result::Result<(), BoxError>;
}

impl<F> RunCheck for F
where
    F: Fn(&PlannedRun) -> std::result::Result<(), BoxError>,
{
    fn check(&self, run: &PlannedRun) -> std::result::Result<(), BoxError> {
        self(run)
    }
}

/// A validated experiment plan: its grid expanded into resolved runs.
#[derive(Debug, Clone)]
pub struct Plan {
    name: String,
    description: Option<String>,
    base_source: BaseSource,
    runs: Vec<PlannedRun>,
}

impl Plan {
    /// Reads and validates a plan file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = dml_core::text::read_file(path).map_err(Error::io(path))?;
        Self::parse(&text, path)
    }

    /// Validates plan text; `plan_path` names it in errors and its folder anchors a relative
    /// `base` path.
    pub fn parse(text: &str, plan_path: &Path) -> Result<Self> {
        let file: PlanFile = toml::from_str(text).map_err(|source| Error::PlanSyntax {
            path: plan_path.to_owned(),
            source,
        })?;
        if !is_valid_name(&file.name) {
            return Err(Error::PlanName { name: file.name });
        }
        let (base, base_source) = load_base(file.base, plan_path)?;
        let keys = Keys::parse(&file.keys)?;
        let budget = overrides::flatten(&file.budget, &OverrideSource::Budget)?;
        let grids = file.grid.grids();
        if grids.is_empty() {
            return Err(Error::NoGrid);
        }
        let mut runs: Vec<PlannedRun> = Vec::new();
        for grid in grids {
            for run in expand(grid, [&file.datasets, &file.losses], &base, &keys, &budget)? {
                if !runs.iter().any(|r| r.id == run.id) {
                    runs.push(run);
                }
            }
        }
        Ok(Self {
            name: file.name,
            description: file.description,
            base_source,
            runs,
        })
    }

    /// The plan's name, recorded with every result.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plan's free-text description, if it has one.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// Where the base run config came from.
    pub fn base_source(&self) -> &BaseSource {
        &self.base_source
    }

    /// Every grid point, grid by grid in plan order; within a grid datasets outermost, then
    /// losses, learning rates, batch shapes and seeds innermost, each axis in the order the
    /// plan lists it. A run id appears once, at its first grid.
    pub fn runs(&self) -> &[PlannedRun] {
        &self.runs
    }

    /// Runs `check` on every grid point; the first rejection is an error naming the run and
    /// its dataset and loss entries. Call it before starting any run.
    pub fn check(&self, check: &dyn RunCheck) -> Result<()> {
        for run in &self.runs {
            check.check(run).map_err(|source| Error::RunRejected {
                run_id: run.id.clone(),
                dataset: run.axes.dataset.clone(),
                loss: run.axes.loss.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// Every run of one grid, in grid order.
fn expand(
    grid: &GridFile,
    [defined_datasets, defined_losses]: [&BTreeMap<String, toml::Table>; 2],
    base: &toml::Table,
    keys: &Keys,
    budget: &[Override],
) -> Result<Vec<PlannedRun>> {
    let datasets = select_entries(Axis::Dataset, &grid.datasets, defined_datasets)?;
    let losses = select_entries(Axis::Loss, &grid.losses, defined_losses)?;
    let learning_rates = learning_rates(&grid.learning_rates)?;
    let batches = batches(&grid.batches)?;
    let seeds = unique(Axis::Seed, &grid.seeds)?;
    let mut runs = Vec::new();
    for (dataset, dataset_overrides) in &datasets {
        for (loss, loss_overrides) in &losses {
            for &lr in &learning_rates {
                for &batch in &batches {
                    for &seed in &seeds {
                        let axes = RunAxes {
                            dataset: dataset.clone(),
                            loss: loss.clone(),
                            lr,
                            batch,
                            seed,
                        };
                        let mut all = dataset_overrides.clone();
                        all.extend(loss_overrides.iter().cloned());
                        all.extend(keys.overrides(&axes));
                        all.extend(budget.iter().cloned());
                        overrides::check_disjoint(&all)?;
                        let config = overrides::apply(base, &all)?;
                        runs.push(PlannedRun {
                            id: axes.run_id(),
                            axes,
                            overrides: all,
                            config,
                        });
                    }
                }
            }
        }
    }
    Ok(runs)
}

fn load_base(base: toml::Value, plan_path: &Path) -> Result<(toml::Table, BaseSource)> {
    match base {
        toml::Value::Table(table) => Ok((table, BaseSource::Inline)),
        toml::Value::String(rel) => {
            let path = plan_path.parent().unwrap_or(Path::new("")).join(rel);
            let text = dml_core::text::read_file(&path).map_err(Error::io(&path))?;
            let table = toml::from_str(&text).map_err(|source| Error::BaseConfigSyntax {
                path: path.clone(),
                source,
            })?;
            Ok((table, BaseSource::File(path)))
        }
        other => Err(Error::BaseKind {
            found: other.type_str(),
        }),
    }
}

/// The parsed `[keys]` table: where learning rate, seed and batch shape are written.
struct Keys {
    lr: KeyPath,
    seed: KeyPath,
    classes_per_batch: KeyPath,
    samples_per_class: KeyPath,
}

impl Keys {
    fn parse(file: &KeysFile) -> Result<Self> {
        Ok(Self {
            lr: KeyPath::parse(&file.lr, &OverrideSource::LearningRate)?,
            seed: KeyPath::parse(&file.seed, &OverrideSource::Seed)?,
            classes_per_batch: KeyPath::parse(&file.classes_per_batch, &OverrideSource::Batch)?,
            samples_per_class: KeyPath::parse(&file.samples_per_class, &OverrideSource::Batch)?,
        })
    }

    fn overrides(&self, axes: &RunAxes) -> Vec<Override> {
        let set = |key: &KeyPath, value, source| Override {
            key: key.clone(),
            value,
            source,
        };
        // Seeds come from TOML integers, so they always fit in an i64.
        let seed = i64::try_from(axes.seed).unwrap_or(i64::MAX);
        vec![
            set(
                &self.lr,
                toml::Value::Float(axes.lr),
                OverrideSource::LearningRate,
            ),
            set(
                &self.classes_per_batch,
                toml::Value::Integer(axes.batch.classes.into()),
                OverrideSource::Batch,
            ),
            set(
                &self.samples_per_class,
                toml::Value::Integer(axes.batch.samples_per_class.into()),
                OverrideSource::Batch,
            ),
            set(&self.seed, toml::Value::Integer(seed), OverrideSource::Seed),
        ]
    }
}

/// Resolves the grid's entry names against the defined entries, in grid order.
fn select_entries(
    axis: Axis,
    names: &[String],
    defined: &BTreeMap<String, toml::Table>,
) -> Result<Vec<(String, Vec<Override>)>> {
    for name in defined.keys() {
        if !is_valid_name(name) {
            return Err(Error::EntryName {
                axis,
                name: name.clone(),
            });
        }
    }
    let names = unique(axis, names)?;
    names
        .into_iter()
        .map(|name| {
            let table = defined.get(&name).ok_or_else(|| Error::UnknownEntry {
                axis,
                name: name.clone(),
                known: if defined.is_empty() {
                    "none".to_owned()
                } else {
                    defined.keys().cloned().collect::<Vec<_>>().join(", ")
                },
            })?;
            let source = match axis {
                Axis::Loss => OverrideSource::Loss(name.clone()),
                _ => OverrideSource::Dataset(name.clone()),
            };
            Ok((name, overrides::flatten(table, &source)?))
        })
        .collect()
}

/// Rejects an empty axis or a repeated value.
fn unique<T: Clone + PartialEq + ToString>(axis: Axis, values: &[T]) -> Result<Vec<T>> {
    if values.is_empty() {
        return Err(Error::EmptyAxis { axis });
    }
    for (i, v) in values.iter().enumerate() {
        if values[..i].contains(v) {
            return Err(Error::DuplicateEntry {
                axis,
                value: v.to_string(),
            });
        }
    }
    Ok(values.to_vec())
}

fn learning_rates(values: &[f64]) -> Result<Vec<f64>> {
    if let Some(&value) = values.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
        return Err(Error::LearningRate { value });
    }
    unique(Axis::LearningRate, values)
}

fn batches(values: &[String]) -> Result<Vec<BatchShape>> {
    let shapes = values
        .iter()
        .map(|v| {
            v.parse::<BatchShape>()
                .map_err(|_| Error::BatchShape { value: v.clone() })
        })
        .collect::<Result<Vec<_>>>()?;
    unique(Axis::Batch, &shapes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = r#"
name = "t"
[base]
optimizer = { kind = "adam", lr = 0.1 }
data = { kind = "glyphs" }
[keys]
lr = "optimizer.lr"
seed = "seed"
classes_per_batch = "data.classes"
samples_per_class = "data.per_class"
[grid]
datasets = ["one", "four"]
losses = ["hard", "semi"]
learning_rates = [1e-3, 1e-2]
batches = ["20x6", "8x4"]
seeds = [2, 1]
[budget]
epochs = 3
[datasets.one]
data.modes = 1
[datasets.four]
data.modes = 4
[datasets.unused]
[losses.hard]
loss = { name = "triplet", margin = 1.0 }
[losses.semi]
loss = { name = "triplet", margin = 0.2 }
miner.kind = "semihard"
"#;

    fn parse(text: &str) -> Result<Plan> {
        Plan::parse(text, Path::new("plan.toml"))
    }

    fn err(text: &str) -> String {
        dml_core::error::chain(&parse(text).unwrap_err())
    }

    #[test]
    fn grid_order_and_ids_are_stable() {
        let plan = parse(PLAN).unwrap();
        let ids: Vec<&str> = plan.runs().iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids.len(), 2 * 2 * 2 * 2 * 2);
        assert_eq!(
            &ids[..3],
            [
                "one/hard/lr0.001/20x6/seed2",
                "one/hard/lr0.001/20x6/seed1",
                "one/hard/lr0.001/8x4/seed2",
            ]
        );
        assert_eq!(ids[31], "four/semi/lr0.01/8x4/seed1");
        let again = parse(PLAN).unwrap();
        assert_eq!(plan.runs(), again.runs());
    }

    #[test]
    fn runs_carry_resolved_configs() {
        let plan = parse(PLAN).unwrap();
        let run = &plan.runs()[31];
        let c = &run.config;
        assert_eq!(c["optimizer"]["lr"].as_float(), Some(0.01));
        assert_eq!(c["optimizer"]["kind"].as_str(), Some("adam"));
        assert_eq!(c["data"]["kind"].as_str(), Some("glyphs"));
        assert_eq!(c["data"]["modes"].as_integer(), Some(4));
        assert_eq!(c["data"]["classes"].as_integer(), Some(8));
        assert_eq!(c["data"]["per_class"].as_integer(), Some(4));
        assert_eq!(c["seed"].as_integer(), Some(1));
        assert_eq!(c["epochs"].as_integer(), Some(3));
        assert_eq!(c["miner"]["kind"].as_str(), Some("semihard"));
        assert_eq!(c["loss"]["margin"].as_float(), Some(0.2));
        assert_eq!(plan.base_source(), &BaseSource::Inline);
    }

    #[test]
    fn unknown_entry_is_named_with_the_known_ones() {
        let msg = err(&PLAN.replace(
            r#"losses = ["hard", "semi"]"#,
            r#"losses = ["hard", "tripplet"]"#,
        ));
        assert!(
            msg.contains("grid.losses names loss entry `tripplet`"),
            "{msg}"
        );
        assert!(msg.contains("hard, semi"), "{msg}");
    }

    #[test]
    fn duplicate_and_empty_axes_are_named() {
        let msg = err(&PLAN.replace(
            r#"datasets = ["one", "four"]"#,
            r#"datasets = ["one", "one"]"#,
        ));
        assert!(msg.contains("grid.datasets lists `one` twice"), "{msg}");
        let msg = err(&PLAN.replace("seeds = [2, 1]", "seeds = [2, 2]"));
        assert!(msg.contains("grid.seeds lists `2` twice"), "{msg}");
        let msg = err(&PLAN.replace(r#"batches = ["20x6", "8x4"]"#, "batches = []"));
        assert!(msg.contains("grid.batches is empty"), "{msg}");
    }

    #[test]
    fn bad_values_are_named() {
        let msg = err(&PLAN.replace(r#""8x4""#, r#""8by4""#));
        assert!(msg.contains("`8by4`"), "{msg}");
        let msg = err(&PLAN.replace("[1e-3, 1e-2]", "[1e-3, -1.0]"));
        assert!(
            msg.contains("-1 is not a positive finite learning rate"),
            "{msg}"
        );
        let msg = err(&PLAN.replace("[datasets.unused]", "[datasets.\"a b\"]"));
        assert!(msg.contains("dataset entry `a b`"), "{msg}");
        let msg = err(&PLAN.replace("name = \"t\"", "name = \"\""));
        assert!(msg.contains("plan name"), "{msg}");
    }

    #[test]
    fn unknown_field_is_named_with_its_line() {
        let msg = err(&PLAN.replace("[budget]", "sedes = [1]\n[budget]"));
        assert!(msg.contains("sedes") && msg.contains("line"), "{msg}");
    }

    #[test]
    fn an_entry_setting_an_axis_key_conflicts() {
        let msg = err(&PLAN.replace("miner.kind = \"semihard\"", "optimizer.lr = 0.5"));
        assert!(msg.contains("`optimizer.lr`"), "{msg}");
        assert!(
            msg.contains("loss entry `semi`") && msg.contains("learning-rate axis"),
            "{msg}"
        );
    }

    #[test]
    fn base_from_a_file_is_resolved_against_the_plan_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("base.toml"), "optimizer = { lr = 0.5 }\n").unwrap();
        let text = PLAN.replace(
            "[base]\noptimizer = { kind = \"adam\", lr = 0.1 }\ndata = { kind = \"glyphs\" }\n",
            "base = \"base.toml\"\n",
        );
        let plan_path = dir.path().join("plan.toml");
        std::fs::write(&plan_path, &text).unwrap();
        let plan = Plan::from_file(&plan_path).unwrap();
        assert_eq!(
            plan.base_source(),
            &BaseSource::File(dir.path().join("base.toml"))
        );
        assert_eq!(
            plan.runs()[0].config["optimizer"]["lr"].as_float(),
            Some(0.001)
        );

        std::fs::write(dir.path().join("base.toml"), "optimizer = [").unwrap();
        let msg = Plan::from_file(&plan_path).unwrap_err().to_string();
        assert!(
            msg.contains("base config") && msg.contains("base.toml"),
            "{msg}"
        );
        let msg = err(&text.replace("base = \"base.toml\"", "base = 3"));
        assert!(msg.contains("found a integer"), "{msg}");
    }

    #[test]
    fn several_grids_run_in_order_and_share_runs_once() {
        let grids = r#"
[[grid]]
datasets = ["one"]
losses = ["hard"]
learning_rates = [1e-3]
batches = ["20x6"]
seeds = [1]
[[grid]]
datasets = ["four", "one"]
losses = ["semi", "hard"]
learning_rates = [1e-3]
batches = ["20x6"]
seeds = [1]
"#;
        let start = PLAN.find("[grid]").unwrap();
        let end = PLAN.find("[budget]").unwrap();
        let text = format!("{}{grids}{}", &PLAN[..start], &PLAN[end..]);
        let plan = parse(&text).unwrap();
        let ids: Vec<&str> = plan.runs().iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "one/hard/lr0.001/20x6/seed1",
                "four/semi/lr0.001/20x6/seed1",
                "four/hard/lr0.001/20x6/seed1",
                "one/semi/lr0.001/20x6/seed1",
            ]
        );
        let none = format!("grid = []\n{}{}", &PLAN[..start], &PLAN[end..]);
        assert!(err(&none).contains("no grid"), "{}", err(&none));
        let bad = text.replace("losses = [\"semi\", \"hard\"]", "losses = [\"soft\"]");
        assert!(err(&bad).contains("loss entry `soft`"), "{}", err(&bad));
    }

    #[test]
    fn check_hook_rejection_names_the_run_and_its_entries() {
        let plan = parse(PLAN).unwrap();
        let check = |run: &PlannedRun| -> std::result::Result<(), BoxError> {
            match run.config["loss"]["margin"].as_float() {
                Some(m) if m > 0.5 => Err(format!("margin {m} is too large").into()),
                _ => Ok(()),
            }
        };
        let msg = dml_core::error::chain(&plan.check(&check).unwrap_err());
        assert!(msg.contains("run `one/hard/lr0.001/20x6/seed2`"), "{msg}");
        assert!(
            msg.contains("loss entry `hard`") && msg.contains("margin 1 is too large"),
            "{msg}"
        );
        assert!(plan.check(&|_: &PlannedRun| Ok(())).is_ok());
    }
}
