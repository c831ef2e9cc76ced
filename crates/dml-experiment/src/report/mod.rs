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
use figures::{
    BandChart, BandSeries, HeatCell, HeatPanel, Heatmaps, LinePanel, PanelLines, RunLine, Scatter,
};
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
    let source_name = results.file_name().map_or_else(
        || results.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );

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
        let _ = writeln!(
            self.md,
            "### Summary: each loss at its best setting\n\n\
             The best setting is the (learning rate, batch) pair with the highest mean final \
             Recall@1.\n"
        );
        self.md.push_str(&markdown::best_table(d));
        let _ = writeln!(self.md, "\n### Final metrics of every setting\n");
        self.md.push_str(&markdown::metrics_table(d));

        let _ = writeln!(
            self.md,
            "\n### Convergence\n\n\
             Recall@1 at the first evaluation after the untrained network; the training steps \
             a run took to gain 90% of its best Recall@1 gain over the untrained network (runs \
             that never gained are left out); the best Recall@1 at any evaluation, and the \
             final one.\n"
        );
        self.md.push_str(&markdown::convergence_table(d));
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
            self.figure(
                &format!("recall-{}", d.name),
                "Recall@1 against training steps",
                &chart,
            )?;
        }

        let _ = writeln!(
            self.md,
            "### Stability: final Recall@1 over learning rate x batch shape\n\n\
             Each cell: mean final Recall@1 (%) over seeds; a second line counts collapsed runs.\n"
        );
        if let Some(table) = markdown::stability_table(d) {
            let _ = writeln!(
                self.md,
                "Per loss over its settings: the best and the worst setting by mean final \
                 Recall@1, the mean ± standard deviation of the settings' means, and the runs \
                 that collapsed.\n"
            );
            self.md.push_str(&table);
            self.md.push('\n');
        }
        self.figure(
            &format!("stability-{}", d.name),
            "Stability map of final Recall@1",
            &stability(d),
        )?;

        let _ = writeln!(
            self.md,
            "### Collapse indicator during training\n\n\
             Mean pairwise distance of the evaluation embeddings relative to the untrained model \
             (log scale), one line per run, one colour per setting; the red line is the collapse \
             threshold.\n"
        );
        let collapse = self.collapse_panels(d);
        if collapse.panels.iter().all(|p| p.lines.is_empty()) {
            let _ = writeln!(self.md, "No run recorded the embedding spread.\n");
        } else {
            self.figure(
                &format!("collapse-{}", d.name),
                "Collapse indicator",
                &collapse,
            )?;
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
            floor: (rule.min_spread_ratio / 10.0).min(1e-3),
            panels: d
                .losses
                .iter()
                .map(|l| {
                    let mut lines = Vec::new();
                    for (color, s) in l.settings.iter().enumerate() {
                        for run in &s.runs {
                            let points = rule.indicator(&run.curve);
                            if points.is_empty() {
                                continue;
                            }
                            let first_of_setting = lines
                                .last()
                                .is_none_or(|last: &RunLine| last.color != color);
                            lines.push(RunLine {
                                color,
                                label: first_of_setting.then(|| s.label()),
                                points,
                            });
                        }
                    }
                    LinePanel {
                        title: l.name.to_owned(),
                        lines,
                    }
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
            let _ = writeln!(
                self.md,
                "- `{}`: no run saved test embeddings.\n",
                loss.name
            );
            return Ok(());
        };
        let files = run
            .embeddings
            .as_ref()
            .expect("chosen for having embeddings");
        // A results file copied without its run folders (e.g. into the docs) still reports.
        if !self.results_dir.join(&files.vectors).exists() {
            let _ = writeln!(
                self.md,
                "- `{}`: the test embeddings of run `{}` (`{}`) are not beside the results file; \
                 no map.\n",
                loss.name, run.run_id, files.vectors
            );
            return Ok(());
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::RunAxes;
    use crate::record::{CurvePoint, EmbeddingFiles, FinalMetrics};
    use crate::store::ResultsStore;
    use npyz::WriterBuilder;
    use rand::Rng;

    /// A made-up run: recall grows with steps, scaled by `quality`; `collapse` shrinks the
    /// spread to near zero.
    fn run(loss: &str, lr: f64, seed: u64, quality: f64, collapse: bool) -> RunRecord {
        let axes = RunAxes {
            dataset: "glyphs-1mode".into(),
            loss: loss.into(),
            lr,
            batch: "8x4".parse().unwrap(),
            seed,
        };
        let jitter = seed as f64 * 0.013;
        let curve: Vec<CurvePoint> = (0..4u64)
            .map(|i| CurvePoint {
                step: i * 50,
                epoch: i,
                loss: (i > 0).then_some(1.0 / (i as f64 + 1.0)),
                recall_at_1: Some(0.1 + quality * i as f64 / 3.0 + jitter),
                recall_at_4: Some(0.3 + quality * i as f64 / 4.0),
                nmi: Some(0.2 + jitter),
                map_at_r: Some(0.05 + quality / 10.0),
                mean_pairwise_distance: Some(if collapse && i == 3 {
                    0.001
                } else {
                    1.0 + i as f64
                }),
                embedding_std: Some(0.5),
            })
            .collect();
        let last = curve.last().unwrap();
        let mut final_metrics = FinalMetrics {
            nmi: last.nmi,
            map_at_r: last.map_at_r,
            ..FinalMetrics::default()
        };
        final_metrics.recall_at_k.insert(1, last.recall_at_1);
        final_metrics.recall_at_k.insert(4, last.recall_at_4);
        RunRecord {
            run_id: axes.run_id(),
            plan_name: "test".into(),
            axes,
            config: serde_json::json!({ "seed": seed }),
            collapsed: CollapseRule::default().is_collapsed(&curve),
            curve,
            final_metrics,
            wall_seconds: 2.0 + seed as f64,
            embeddings: None,
        }
    }

    /// Two classes of 40 points each, far apart in 6-D.
    fn write_embeddings(dir: &Path) -> EmbeddingFiles {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (n, d) = (80usize, 6usize);
        let labels: Vec<i64> = (0..n as i64).map(|i| i % 2).collect();
        let vectors: Vec<f32> = (0..n * d)
            .map(|k| {
                rng.random::<f32>()
                    + if k % d == 0 {
                        10.0 * labels[k / d] as f32
                    } else {
                        0.0
                    }
            })
            .collect();
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&[n as u64, d as u64])
            .writer(std::fs::File::create(dir.join("emb.npy")).unwrap())
            .begin_nd()
            .unwrap();
        w.extend(vectors).unwrap();
        w.finish().unwrap();
        let text: String = labels.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(dir.join("emb.labels.txt"), text).unwrap();
        EmbeddingFiles {
            vectors: "emb.npy".into(),
            labels: "emb.labels.txt".into(),
        }
    }

    fn results(dir: &Path) -> (PathBuf, Vec<RunRecord>) {
        let mut records = Vec::new();
        for (loss, quality) in [("triplet-hard", 0.6), ("npairs", 0.3)] {
            for lr in [1e-3, 1e-2] {
                for seed in 1..=3 {
                    let collapse = loss == "triplet-hard" && lr == 1e-2 && seed == 2;
                    records.push(run(loss, lr, seed, quality, collapse));
                }
            }
        }
        records[0].embeddings = Some(write_embeddings(dir));
        let path = dir.join("results.jsonl");
        let mut store = ResultsStore::open(&path).unwrap();
        for r in &records {
            store.append(r.clone()).unwrap();
        }
        (path, records)
    }

    fn options() -> ReportOptions {
        ReportOptions {
            tsne: TsneConfig {
                iterations: 250,
                ..TsneConfig::default()
            },
            ..ReportOptions::default()
        }
    }

    /// Mean and sample std in percent, computed here without the crate's helpers.
    fn mean_std(v: &[f64]) -> (f64, f64) {
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
        (mean * 100.0, var.sqrt() * 100.0)
    }

    fn table_cell(md: &str, row_prefix: &str, column: usize) -> (f64, f64) {
        let row = md
            .lines()
            .find(|l| l.starts_with(row_prefix))
            .unwrap_or_else(|| panic!("no row {row_prefix}"));
        let cell = row.split('|').nth(column + 1).unwrap().trim();
        let (m, s) = cell
            .split_once(" ± ")
            .unwrap_or_else(|| panic!("cell {cell}"));
        (m.parse().unwrap(), s.parse().unwrap())
    }

    #[test]
    fn report_has_tables_that_match_the_results_and_every_figure() {
        let dir = tempfile::tempdir().unwrap();
        let (path, records) = results(dir.path());
        let out = dir.path().join("report");
        let summary = write_report(&path, &out, &options()).unwrap();
        assert_eq!(summary.runs, 12);
        let md = std::fs::read_to_string(out.join("report.md")).unwrap();

        for (loss, lr) in [("triplet-hard", 1e-3), ("npairs", 1e-2)] {
            let mine: Vec<&RunRecord> = records
                .iter()
                .filter(|r| r.axes.loss == loss && r.axes.lr == lr)
                .collect();
            let prefix = format!("| {loss} | {lr} | 8x4 | 3 |");
            let metrics: [fn(&RunRecord) -> f64; 3] = [
                |r| r.final_metrics.recall_at(1).unwrap(),
                |r| r.final_metrics.recall_at(4).unwrap(),
                |r| r.final_metrics.nmi.unwrap(),
            ];
            for (column, metric) in metrics.iter().enumerate() {
                let values: Vec<f64> = mine.iter().map(|r| metric(r)).collect();
                let (mean, std) = mean_std(&values);
                let (m, s) = table_cell(&md, &prefix, 4 + column);
                assert!(
                    (m - mean).abs() <= 0.005 + 1e-9,
                    "{prefix} col {column}: {m} vs {mean}"
                );
                assert!(
                    (s - std).abs() <= 0.005 + 1e-9,
                    "{prefix} col {column}: {s} vs {std}"
                );
            }
        }
        assert!(md.contains("| triplet-hard | 0.01 | 8x4 | 3 |"), "{md}");
        // Best settings: triplet-hard at lr 0.01 has the highest mean Recall@1 despite its
        // collapsed seed (the made-up data does not lower recall on collapse).
        let best: Vec<f64> = ["triplet-hard", "npairs"]
            .iter()
            .map(|loss| {
                [1e-3, 1e-2]
                    .iter()
                    .map(|&lr| {
                        let v: Vec<f64> = records
                            .iter()
                            .filter(|r| r.axes.loss == *loss && r.axes.lr == lr)
                            .map(|r| r.final_metrics.recall_at(1).unwrap())
                            .collect();
                        (lr, mean_std(&v).0)
                    })
                    .fold(
                        (0.0, f64::NEG_INFINITY),
                        |a, b| if b.1 > a.1 { b } else { a },
                    )
                    .0
            })
            .collect();
        let summary_table =
            &md[md.find("### Summary").unwrap()..md.find("### Final metrics").unwrap()];
        for (loss, lr) in ["triplet-hard", "npairs"].iter().zip(best) {
            let row = format!("| {loss} | {lr} | 8x4 | 3 |");
            assert!(
                summary_table.contains(&row),
                "{loss} best {lr}\n{summary_table}"
            );
        }
        assert_eq!(
            summary_table.matches("| 8x4 | 3 |").count(),
            2,
            "{summary_table}"
        );
        assert!(md.contains(" 1/3 |"), "collapsed count missing:\n{md}");
        assert!(
            md.contains("| npairs | 2 | lr 0.001, 8x4 |"),
            "stability row missing:\n{md}"
        );
        // Linear curves: 90% of the gain is first reached at the last point (step 150).
        assert!(
            md.contains("| triplet-hard | 0.001 | 8x4 | 3 | 32.60 ± 1.30 | 150 ± 0 |"),
            "convergence row missing:\n{md}"
        );
        assert!(md.contains("- `glyphs-1mode/triplet-hard/lr0.01/8x4/seed2`: final spread ratio"));
        assert!(
            md.contains("`npairs`: no run saved test embeddings."),
            "{md}"
        );

        let stems = [
            "recall-glyphs-1mode",
            "stability-glyphs-1mode",
            "collapse-glyphs-1mode",
            "tsne-glyphs-1mode-triplet-hard",
        ];
        assert_eq!(summary.figures.len(), 2 * stems.len());
        for stem in stems {
            assert!(
                md.contains(&format!("(figures/{stem}.png)")),
                "{stem} not linked"
            );
            let png = std::fs::read(out.join("figures").join(format!("{stem}.png"))).unwrap();
            assert!(png.len() > 1000, "{stem}.png is {} bytes", png.len());
            assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
            let svg =
                std::fs::read_to_string(out.join("figures").join(format!("{stem}.svg"))).unwrap();
            assert!(svg.starts_with("<svg") && svg.len() > 1000, "{stem}.svg");
        }
        // Text is really drawn into the PNG: a figure has dark (text/axis) pixels.
        let png = image::open(out.join("figures/stability-glyphs-1mode.png"))
            .unwrap()
            .to_rgb8();
        assert!(png.pixels().filter(|p| p.0 == [0, 0, 0]).count() > 100);
    }

    #[test]
    fn same_results_give_identical_files() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = results(dir.path());
        let a = write_report(&path, &dir.path().join("a"), &options()).unwrap();
        let b = write_report(&path, &dir.path().join("b"), &options()).unwrap();
        let read = |p: &Path| std::fs::read(p).unwrap();
        assert_eq!(read(&a.report), read(&b.report));
        for (fa, fb) in a.figures.iter().zip(&b.figures) {
            assert_eq!(read(fa), read(fb), "{} differs", fa.display());
        }
    }

    #[test]
    fn truncated_tail_is_reported_and_an_empty_file_still_gives_a_report() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.jsonl");
        std::fs::write(&path, "{\"run_id\": \"x\", \"plan").unwrap();
        let summary = write_report(&path, &dir.path().join("out"), &options()).unwrap();
        assert_eq!(summary.runs, 0);
        assert_eq!(summary.truncated_tail.map(|t| t.line), Some(1));
        let md = std::fs::read_to_string(&summary.report).unwrap();
        assert!(
            md.contains("Line 1 of `results.jsonl` is an unfinished record"),
            "{md}"
        );
    }

    #[test]
    fn missing_embeddings_are_noted_and_corrupt_ones_name_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = run("npairs", 1e-3, 1, 0.5, false);
        r.embeddings = Some(EmbeddingFiles {
            vectors: "gone.npy".into(),
            labels: "gone.txt".into(),
        });
        let path = dir.path().join("results.jsonl");
        ResultsStore::open(&path).unwrap().append(r).unwrap();
        let out = dir.path().join("out");
        write_report(&path, &out, &options()).unwrap();
        let md = std::fs::read_to_string(out.join("report.md")).unwrap();
        assert!(
            md.contains("run `glyphs-1mode/npairs/lr0.001/8x4/seed1` (`gone.npy`) are not beside"),
            "{md}"
        );

        std::fs::write(dir.path().join("gone.npy"), b"not an npy file").unwrap();
        let msg = write_report(&path, &out, &options())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("run `glyphs-1mode/npairs/lr0.001/8x4/seed1`") && msg.contains("gone.npy"),
            "{msg}"
        );
    }
}
