//! The Markdown text of the report: tables and the notes that say how numbers were made.

use std::fmt::Write;

use crate::collapse::CollapseRule;
use crate::report::groups::{DatasetGroup, FinalMetric};
use crate::stats::Summary;

/// The metrics of the final-metrics table, in column order.
pub(crate) const TABLE_METRICS: [FinalMetric; 4] = [
    FinalMetric::RecallAt1,
    FinalMetric::RecallAt4,
    FinalMetric::Nmi,
    FinalMetric::MapAtR,
];

/// `mean ± std` in percent with two decimals; the mean alone for one seed; `—` for none.
pub(crate) fn percent(s: Option<Summary>) -> String {
    match s {
        Some(Summary {
            mean,
            std: Some(sd),
            ..
        }) => format!("{:.2} ± {:.2}", mean * 100.0, sd * 100.0),
        Some(s) => format!("{:.2}", s.mean * 100.0),
        None => "—".to_owned(),
    }
}

/// The report's opening: what it was made from and how to read its numbers.
pub(crate) fn preamble(
    source_name: &str,
    runs: usize,
    plans: &[&str],
    truncated_line: Option<usize>,
    rule: &CollapseRule,
) -> String {
    let mut md = String::new();
    let plans = if plans.is_empty() {
        "no plan".to_owned()
    } else {
        plans
            .iter()
            .map(|p| format!("`{p}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(md, "# Experiment report\n");
    let _ = writeln!(
        md,
        "Written by `dml report` from `{source_name}` alone: {runs} finished runs of plan {plans}."
    );
    if let Some(line) = truncated_line {
        let _ = writeln!(
            md,
            "\nLine {line} of `{source_name}` is an unfinished record (a run killed while it was \
             being written) and is ignored."
        );
    }
    let _ = writeln!(
        md,
        "\nHow to read it:\n\n\
         - Metrics are measured on the test split at the end of training and shown in percent \
         as mean ± sample standard deviation (n − 1) over seeds; a single seed shows the mean only.\n\
         - Recall@K: a query counts as a hit if any of its K nearest neighbours (itself excluded) \
         has its label. NMI: k-means clusters against the labels. MAP@R: mean average precision \
         at R.\n\
         - Curves show the mean over seeds at each evaluation; shaded bands span the minimum and \
         maximum over seeds. Each loss is drawn at its best setting: the (learning rate, batch) \
         pair with the highest mean final Recall@1.\n\
         - Collapse indicator: the mean pairwise distance of the evaluation embeddings divided by \
         its value for the untrained model. A run counts as collapsed when its last value is below \
         {} (or not finite): every embedding has moved to nearly one point.",
        rule.min_spread_ratio
    );
    md
}

/// The final-metrics table of one dataset: one row per (loss, lr, batch) setting.
pub(crate) fn metrics_table(dataset: &DatasetGroup<'_>) -> String {
    let mut md = String::new();
    let _ = write!(md, "| loss | lr | batch | seeds |");
    for m in TABLE_METRICS {
        let _ = write!(md, " {} (%) |", m.title());
    }
    let _ = writeln!(md, " collapsed | wall time (s) |");
    let _ = write!(md, "|---|---:|---:|---:|");
    for _ in TABLE_METRICS {
        let _ = write!(md, "---:|");
    }
    let _ = writeln!(md, "---:|---:|");
    for loss in &dataset.losses {
        for s in &loss.settings {
            let _ = write!(
                md,
                "| {} | {} | {} | {} |",
                loss.name,
                s.lr,
                s.batch,
                s.runs.len()
            );
            for m in TABLE_METRICS {
                let _ = write!(md, " {} |", percent(s.final_summary(m)));
            }
            let wall = s
                .wall_seconds()
                .map_or("—".to_owned(), |w| format!("{:.1}", w.mean));
            let _ = writeln!(md, " {}/{} | {wall} |", s.collapsed(), s.runs.len());
        }
    }
    md
}

/// How fast each setting learns: Recall@1 at the first evaluation, the steps to 90% of the
/// best gain, the best and the final Recall@1, mean ± std over seeds.
pub(crate) fn convergence_table(dataset: &DatasetGroup<'_>) -> String {
    let mut md = String::from(
        "| loss | lr | batch | seeds | Recall@1 at first evaluation (%) | steps to 90% of best gain | best Recall@1 (%) | final Recall@1 (%) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for loss in &dataset.losses {
        for s in &loss.settings {
            let steps = match s.steps_to_90() {
                Some(Summary {
                    mean,
                    std: Some(sd),
                    ..
                }) => format!("{mean:.0} ± {sd:.0}"),
                Some(summary) => format!("{:.0}", summary.mean),
                None => "—".to_owned(),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {steps} | {} | {} |",
                loss.name,
                s.lr,
                s.batch,
                s.runs.len(),
                percent(s.first_recall()),
                percent(s.peak_recall()),
                percent(s.final_summary(FinalMetric::RecallAt1)),
            );
        }
    }
    md
}

/// One row per loss over all its settings (datasets with more than one setting per loss):
/// how far final Recall@1 falls from the best setting to the worst, and how often runs
/// collapsed. `None` when no loss has several settings.
pub(crate) fn stability_table(dataset: &DatasetGroup<'_>) -> Option<String> {
    if dataset.losses.iter().all(|l| l.settings.len() < 2) {
        return None;
    }
    let mut md = String::from(
        "| loss | settings | best setting | best Recall@1 (%) | worst setting | worst Recall@1 (%) | mean over settings (%) | collapsed runs |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for loss in &dataset.losses {
        let scored: Vec<(String, f64)> = loss
            .settings
            .iter()
            .filter_map(|s| Some((s.label(), s.final_summary(FinalMetric::RecallAt1)?.mean)))
            .collect();
        // Ties go to the first setting, as in `LossGroup::best_setting`.
        let pick = |better: fn(f64, f64) -> bool| {
            scored
                .iter()
                .fold(None, |acc: Option<&(String, f64)>, s| match acc {
                    Some(a) if !better(s.1, a.1) => Some(a),
                    _ => Some(s),
                })
        };
        let (best, worst) = (pick(|x, y| x > y), pick(|x, y| x < y));
        let overall = Summary::of(scored.iter().map(|s| Some(s.1)));
        let runs: usize = loss.settings.iter().map(|s| s.runs.len()).sum();
        let collapsed: usize = loss.settings.iter().map(|s| s.collapsed()).sum();
        let cell = |x: Option<&(String, f64)>| {
            x.map_or(["—".to_owned(), "—".to_owned()], |(label, v)| {
                [label.clone(), format!("{:.2}", v * 100.0)]
            })
        };
        let ([best_label, best_value], [worst_label, worst_value]) = (cell(best), cell(worst));
        let _ = writeln!(
            md,
            "| {} | {} | {best_label} | {best_value} | {worst_label} | {worst_value} | {} | {collapsed}/{runs} |",
            loss.name,
            loss.settings.len(),
            percent(overall),
        );
    }
    Some(md)
}

/// One row per loss at its best setting (highest mean final Recall@1): the survey-style
/// summary of a dataset.
pub(crate) fn best_table(dataset: &DatasetGroup<'_>) -> String {
    let metrics = [
        FinalMetric::RecallAt1,
        FinalMetric::RecallAt4,
        FinalMetric::Nmi,
    ];
    let mut md = String::new();
    let _ = write!(md, "| loss | best lr | best batch | seeds |");
    for m in metrics {
        let _ = write!(md, " {} (%) |", m.title());
    }
    let _ = writeln!(md, " collapsed |\n|---|---:|---:|---:|---:|---:|---:|---:|");
    for loss in &dataset.losses {
        let s = loss.best_setting();
        let _ = write!(
            md,
            "| {} | {} | {} | {} |",
            loss.name,
            s.lr,
            s.batch,
            s.runs.len()
        );
        for m in metrics {
            let _ = write!(md, " {} |", percent(s.final_summary(m)));
        }
        let _ = writeln!(md, " {}/{} |", s.collapsed(), s.runs.len());
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_formats_mean_and_sample_std() {
        let s = Summary::of([Some(0.5), Some(0.7)]);
        assert_eq!(percent(s), "60.00 ± 14.14");
        assert_eq!(percent(Summary::of([Some(0.123456)])), "12.35");
        assert_eq!(percent(None), "—");
    }
}
