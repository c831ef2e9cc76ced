//! `dml report`: Markdown and figures written from `results.jsonl` alone.
//!
//! For each dataset the report has a table of final metrics (mean ± std over seeds per loss,
//! learning rate and batch shape), Recall@1 against training steps per loss, a stability map
//! (final Recall@1 over learning rate x batch shape, per loss), the collapse indicator over
//! training, and a t-SNE map of test embeddings per loss where a run saved them. Figures are
//! written as SVG and PNG under `figures/`. The same results file always gives the same files.

mod figures;
mod groups;
mod markdown;

use std::fmt::Write;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::collapse::CollapseRule;
use crate::embeddings;
use crate::error::{Error, Result};
use crate::record::RunRecord;
use crate::store::{self, TruncatedTail};
use crate::tsne::{self, TsneConfig};
use figures::{BandChart, BandSeries, HeatCell, HeatPanel, Heatmaps, LinePanel, PanelLines, Scatter};
use groups::{DatasetGroup, FinalMetric, LossGroup};

/// How the report is made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReportOptions {
    /// t-SNE settings (its seed fixes the map).
    pub tsne: TsneConfig,
    /// At most this many test embeddings go into a t-SNE map; larger sets are subsampled with
    /// the t-SNE seed. Default: 2000.
    pub tsne_max_points: usize,
    /// The collapse rule the report explains and draws.
    pub collapse: CollapseRule,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            tsne: TsneConfig::default(),
            tsne_max_points: 2000,
            collapse: CollapseRule::default(),
        }
    }
}

/// What a report run wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportSummary {
    /// `report.md`.
    pub report: PathBuf,
    /// Every figure file (SVG and PNG), in the order the report shows them.
    pub figures: Vec<PathBuf>,
    /// Runs the report was made from.
    pub runs: usize,
    /// An unfinished last line of the results file that was ignored.
    pub truncated_tail: Option<TruncatedTail>,
}

/// Writes `out/report.md` and `out/figures/*` from the results file at `results`.
pub fn write_report(results: &Path, out: &Path, options: &ReportOptions) -> Result<ReportSummary> {
    let loaded = store::load(results)?;
    let figure_dir = out.join("figures");
    std::fs::create_dir_all(&figure_dir).map_err(Error::io(&figure_dir))?;
    let results_dir = match results.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let source_name = results
        .file_name()
        .map_or_else(|| results.display().to_string(), |n| n.to_string_lossy().into_owned());

    let mut plans: Vec<&str> = Vec::new();
    for r in &loaded.records {
        if !plans.contains(&r.plan_name.as_str()) {
            plans.push(&r.plan_name);
        }
    }
    let mut writer = Writer {
        md: markdown::preamble(
            &source_name,
            loaded.records.len(),
            &plans,
            loaded.truncated_tail.map(|t| t.line),
            &options.collapse,
        ),
        figure_dir,
        figures: Vec::new(),
        options,
        results_dir,
    };
    for dataset in groups::group(&loaded.records) {
        writer.dataset(&dataset)?;
    }
    writer.collapsed_runs(&loaded.records);

    let report = out.join("report.md");
    crate::atomic::write(&report, writer.md.as_bytes())?;
    Ok(ReportSummary {
        report,
        figures: writer.figures,
        runs: loaded.records.len(),
        truncated_tail: loaded.truncated_tail,
    })
}

/// Accumulates the Markdown and the list of figure files.
struct Writer<'o> {
    md: String,
    figure_dir: PathBuf,
    figures: Vec<PathBuf>,
    options: &'o ReportOptions,
    results_dir: PathBuf,
}

impl Writer<'_> {
    fn figure(&mut self, stem: &str, alt: &str, figure: &impl figures::Figure) -> Result<()> {
        let paths = figures::save(&self.figure_dir, stem, figure)?;
        let _ = writeln!(
            self.md,
            "![{alt}](figures/{stem}.png)\n\n[SVG](figures/{stem}.svg)\n"
        );
        self.figures.extend(paths);
        Ok(())
    }

    fn dataset(&mut self, d: &DatasetGroup<'_>) -> Result<()> {
        let _ = writeln!(self.md, "\n## Dataset `{}`\n", d.name);
        let _ = writeln!(self.md, "### Final metrics\n");
        self.md.push_str(&markdown::metrics_table(d));

        let _ = writeln!(self.md, "\n### Recall@1 during training\n");
        let series: Vec<BandSeries> = d
            .losses
            .iter()
            .map(|l| {
                let best = l.best_setting();
                BandSeries {
                    label: format!("{} ({})", l.name, best.label()),
                    points: best.curve(|p| p.recall_at_1),
                }
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        if series.is_empty() {
            let _ = writeln!(self.md, "No run recorded Recall@1 during training.\n");
        } else {
            let chart = BandChart {
                title: format!("Recall@1 during training: {}", d.name),
                y_desc: "Recall@1 (%)".to_owned(),
                y_scale: 100.0,
                y_max: 100.0,
                series,
            };
            self.figure(&format!("recall-{}", d.name), "Recall@1 against training steps", &chart)?;
        }

        let _ = writeln!(
            self.md,
            "### Stability: final Recall@1 over learning rate x batch shape\n\n\
             Each cell: mean final Recall@1 (%) over seeds; a second line counts collapsed runs.\n"
        );
        self.figure(
            &format!("stability-{}", d.name),
            "Stability map of final Recall@1",
            &stability(d),
        )?;

        let _ = writeln!(
            self.md,
            "### Collapse indicator during training\n\n\
             Mean pairwise distance of the evaluation embeddings relative to the untrained model, \
             mean over seeds, one line per setting; the red line is the collapse threshold.\n"
        );
        let collapse = self.collapse_panels(d);
        if collapse.panels.iter().all(|p| p.series.is_empty()) {
            let _ = writeln!(self.md, "No run recorded the embedding spread.\n");
        } else {
            self.figure(&format!("collapse-{}", d.name), "Collapse indicator", &collapse)?;
        }

        let _ = writeln!(self.md, "### t-SNE of test embeddings\n");
        for loss in &d.losses {
            self.tsne(d.name, loss)?;
        }
        Ok(())
    }

    fn collapse_panels(&self, d: &DatasetGroup<'_>) -> PanelLines {
        let rule = &self.options.collapse;
        PanelLines {
            title: format!("Collapse indicator: {}", d.name),
            y_desc: "spread / initial spread".to_owned(),
            threshold: rule.min_spread_ratio,
            panels: d
                .losses
                .iter()
                .map(|l| LinePanel {
                    title: l.name.to_owned(),
                    series: l
                        .settings
                        .iter()
                        .map(|s| BandSeries {
                            label: s.label(),
                            points: s.collapse_curve(rule),
                        })
                        .filter(|s| !s.points.is_empty())
                        .collect(),
                })
                .collect(),
        }
    }

    /// The t-SNE map of the loss's best run (highest final Recall@1) that saved embeddings.
    fn tsne(&mut self, dataset: &str, loss: &LossGroup<'_>) -> Result<()> {
        let mut best: Option<&RunRecord> = None;
        for run in loss.settings.iter().flat_map(|s| s.runs.iter().copied()) {
            let score = |r: &RunRecord| r.final_metrics.recall_at(1).unwrap_or(f64::NEG_INFINITY);
            if run.embeddings.is_some() && best.is_none_or(|b| score(run) > score(b)) {
                best = Some(run);
            }
        }
        let Some(run) = best else {
            let _ = writeln!(self.md, "- `{}`: no run saved test embeddings.\n", loss.name);
            return Ok(());
        };
        let files = run.embeddings.as_ref().expect("chosen for having embeddings");
        let e = embeddings::load(&run.run_id, &self.results_dir, files)?;
        if e.vectors.iter().any(|v| !v.is_finite()) {
            let _ = writeln!(
                self.md,
                "- `{}`: the embeddings of run `{}` are not finite (the run diverged); no map.\n",
                loss.name, run.run_id
            );
            return Ok(());
        }
        let keep = self.sample(e.len());
        let vectors: Vec<f32> = keep
            .iter()
            .flat_map(|&i| e.vectors[i * e.dim..(i + 1) * e.dim].iter().copied())
            .collect();
        let classes: Vec<usize> = keep.iter().map(|&i| e.classes[i]).collect();
        let points = match tsne::embed_2d(&vectors, e.dim, &self.options.tsne) {
            Ok(points) => points,
            Err(Error::Tsne { reason }) => {
                let _ = writeln!(
                    self.md,
                    "- `{}`: no map for run `{}`: {reason}.\n",
                    loss.name, run.run_id
                );
                return Ok(());
            }
            Err(other) => return Err(other),
        };
        let _ = writeln!(
            self.md,
            "`{}`: run `{}`, {} of {} test embeddings, {} classes{}.\n",
            loss.name,
            run.run_id,
            keep.len(),
            e.len(),
            e.class_count,
            if e.class_count > figures::PALETTE.len() {
                format!(" (colours repeat every {} classes)", figures::PALETTE.len())
            } else {
                String::new()
            }
        );
        let scatter = Scatter {
            title: format!("t-SNE: {dataset} / {} ({})", loss.name, run.axes.run_id()),
            points,
            classes,
        };
        self.figure(
            &format!("tsne-{dataset}-{}", loss.name),
            "t-SNE map of test embeddings",
            &scatter,
        )
    }

    /// Indices of the points that go into a t-SNE map: all, or a seeded sample in index order.
    fn sample(&self, n: usize) -> Vec<usize> {
        let max = self.options.tsne_max_points;
        if n <= max {
            return (0..n).collect();
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.options.tsne.seed);
        let mut keep = rand::seq::index::sample(&mut rng, n, max).into_vec();
        keep.sort_unstable();
        keep
    }

    fn collapsed_runs(&mut self, records: &[RunRecord]) {
        let _ = writeln!(self.md, "\n## Collapsed runs\n");
        let rule = &self.options.collapse;
        let collapsed: Vec<&RunRecord> = records.iter().filter(|r| r.collapsed).collect();
        if collapsed.is_empty() {
            let _ = writeln!(self.md, "None.");
        }
        for r in collapsed {
            let last = rule
                .indicator(&r.curve)
                .last()
                .map_or("not recorded".to_owned(), |&(step, ratio)| {
                    format!("{ratio:.4} at step {step}")
                });
            let _ = writeln!(self.md, "- `{}`: final spread ratio {last}", r.run_id);
        }
    }
}

/// The stability map: one heatmap per loss, learning rates across, batch shapes down.
fn stability(d: &DatasetGroup<'_>) -> Heatmaps {
    Heatmaps {
        title: format!("Final Recall@1 (%): {}", d.name),
        x_desc: "learning rate".to_owned(),
        y_desc: "batch P x K".to_owned(),
        columns: d.lrs.iter().map(f64::to_string).collect(),
        rows: d.batches.iter().map(ToString::to_string).collect(),
        panels: d
            .losses
            .iter()
            .map(|l| HeatPanel {
                title: l.name.to_owned(),
                cells: d
                    .batches
                    .iter()
                    .map(|&b| {
                        d.lrs
                            .iter()
                            .map(|&lr| {
                                let s = l.setting(lr, b)?;
                                let value = s.final_summary(FinalMetric::RecallAt1)?.mean;
                                let c = s.collapsed();
                                Some(HeatCell {
                                    value,
                                    note: if c > 0 {
                                        format!("{c}/{} collapsed", s.runs.len())
                                    } else {
                                        String::new()
                                    },
                                })
                            })
                            .collect()
                    })
                    .collect(),
            })
            .collect(),
    }
}
