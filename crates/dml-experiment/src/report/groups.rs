//! Results grouped the way the report shows them: dataset -> loss -> (lr, batch) setting -> seeds.
//!
//! Datasets and losses keep the order in which they first appear in `results.jsonl` (the
//! plan's grid order); settings are sorted by learning rate, then batch shape.

use std::collections::BTreeMap;

use crate::grid::BatchShape;
use crate::record::{CurvePoint, FinalMetrics, RunRecord};
use crate::stats::Summary;

/// A final metric shown in the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FinalMetric {
    RecallAt1,
    RecallAt4,
    Nmi,
    MapAtR,
}

impl FinalMetric {
    pub(crate) fn of(self, m: &FinalMetrics) -> Option<f64> {
        match self {
            Self::RecallAt1 => m.recall_at(1),
            Self::RecallAt4 => m.recall_at(4),
            Self::Nmi => m.nmi,
            Self::MapAtR => m.map_at_r,
        }
    }

    pub(crate) fn title(self) -> &'static str {
        match self {
            Self::RecallAt1 => "Recall@1",
            Self::RecallAt4 => "Recall@4",
            Self::Nmi => "NMI",
            Self::MapAtR => "MAP@R",
        }
    }
}

/// All seeds of one (dataset, loss, lr, batch) setting.
#[derive(Debug)]
pub(crate) struct Setting<'a> {
    pub lr: f64,
    pub batch: BatchShape,
    /// In file order.
    pub runs: Vec<&'a RunRecord>,
}

impl Setting<'_> {
    /// "lr 0.001, 20x6".
    pub(crate) fn label(&self) -> String {
        format!("lr {}, {}", self.lr, self.batch)
    }

    pub(crate) fn final_summary(&self, metric: FinalMetric) -> Option<Summary> {
        Summary::of(self.runs.iter().map(|r| metric.of(&r.final_metrics)))
    }

    pub(crate) fn collapsed(&self) -> usize {
        self.runs.iter().filter(|r| r.collapsed).count()
    }

    /// Recall@1 at the first evaluation after the untrained one, over seeds.
    pub(crate) fn first_recall(&self) -> Option<Summary> {
        Summary::of(
            self.runs
                .iter()
                .map(|r| r.curve.iter().skip(1).find_map(|p| p.recall_at_1)),
        )
    }

    /// Over seeds: the training steps a run took to gain 90% of its best Recall@1 gain over
    /// the untrained network (runs that never gained are left out). The best, not the final,
    /// value: a run that peaks and then degrades has converged (to its peak) early.
    pub(crate) fn steps_to_90(&self) -> Option<Summary> {
        Summary::of(self.runs.iter().map(|r| {
            let recalls: Vec<(u64, f64)> = r
                .curve
                .iter()
                .filter_map(|p| Some((p.step, p.recall_at_1?)))
                .collect();
            let start = recalls.first()?.1;
            let peak = recalls
                .iter()
                .map(|&(_, v)| v)
                .fold(f64::NEG_INFINITY, f64::max);
            let target = start + 0.9 * (peak - start);
            (peak > start)
                .then(|| recalls.iter().find(|&&(_, v)| v >= target))
                .flatten()
                .map(|&(step, _)| step as f64)
        }))
    }

    /// The best Recall@1 a run reached at any evaluation, over seeds.
    pub(crate) fn peak_recall(&self) -> Option<Summary> {
        Summary::of(self.runs.iter().map(|r| {
            r.curve
                .iter()
                .filter_map(|p| p.recall_at_1)
                .reduce(f64::max)
        }))
    }

    pub(crate) fn wall_seconds(&self) -> Option<Summary> {
        Summary::of(self.runs.iter().map(|r| Some(r.wall_seconds)))
    }

    /// Per step, the summary over seeds of `value` at that step (steps with no value skipped).
    pub(crate) fn curve(&self, value: impl Fn(&CurvePoint) -> Option<f64>) -> Vec<(u64, Summary)> {
        let mut by_step: BTreeMap<u64, Vec<Option<f64>>> = BTreeMap::new();
        for run in &self.runs {
            for p in &run.curve {
                by_step.entry(p.step).or_default().push(value(p));
            }
        }
        by_step
            .into_iter()
            .filter_map(|(step, v)| Summary::of(v).map(|s| (step, s)))
            .collect()
    }
}

/// All settings of one loss on one dataset.
#[derive(Debug)]
pub(crate) struct LossGroup<'a> {
    pub name: &'a str,
    pub settings: Vec<Setting<'a>>,
}

impl LossGroup<'_> {
    /// The setting with the highest mean final Recall@1 (the first one on ties; settings with
    /// no Recall@1 rank last).
    pub(crate) fn best_setting(&self) -> &Setting<'_> {
        let score = |s: &Setting<'_>| {
            s.final_summary(FinalMetric::RecallAt1)
                .map_or(f64::NEG_INFINITY, |m| m.mean)
        };
        let mut best = &self.settings[0];
        for s in &self.settings[1..] {
            if score(s) > score(best) {
                best = s;
            }
        }
        best
    }

    pub(crate) fn setting(&self, lr: f64, batch: BatchShape) -> Option<&Setting<'_>> {
        self.settings
            .iter()
            .find(|s| s.lr == lr && s.batch == batch)
    }
}

/// All losses run on one dataset.
#[derive(Debug)]
pub(crate) struct DatasetGroup<'a> {
    pub name: &'a str,
    pub losses: Vec<LossGroup<'a>>,
    /// Every learning rate used on this dataset, ascending.
    pub lrs: Vec<f64>,
    /// Every batch shape used on this dataset, ascending (by P, then K).
    pub batches: Vec<BatchShape>,
}

/// Groups records by dataset, loss and setting.
pub(crate) fn group(records: &[RunRecord]) -> Vec<DatasetGroup<'_>> {
    let mut datasets: Vec<DatasetGroup<'_>> = Vec::new();
    for r in records {
        let a = &r.axes;
        let d = match datasets.iter().position(|d| d.name == a.dataset) {
            Some(i) => &mut datasets[i],
            None => {
                datasets.push(DatasetGroup {
                    name: &a.dataset,
                    losses: Vec::new(),
                    lrs: Vec::new(),
                    batches: Vec::new(),
                });
                datasets.last_mut().expect("just pushed")
            }
        };
        if !d.lrs.contains(&a.lr) {
            d.lrs.push(a.lr);
        }
        if !d.batches.contains(&a.batch) {
            d.batches.push(a.batch);
        }
        let l = match d.losses.iter().position(|l| l.name == a.loss) {
            Some(i) => &mut d.losses[i],
            None => {
                d.losses.push(LossGroup {
                    name: &a.loss,
                    settings: Vec::new(),
                });
                d.losses.last_mut().expect("just pushed")
            }
        };
        match l
            .settings
            .iter_mut()
            .find(|s| s.lr == a.lr && s.batch == a.batch)
        {
            Some(s) => s.runs.push(r),
            None => l.settings.push(Setting {
                lr: a.lr,
                batch: a.batch,
                runs: vec![r],
            }),
        }
    }
    for d in &mut datasets {
        d.lrs.sort_by(f64::total_cmp);
        d.batches.sort();
        for l in &mut d.losses {
            l.settings
                .sort_by(|x, y| x.lr.total_cmp(&y.lr).then(x.batch.cmp(&y.batch)));
        }
    }
    datasets
}
