//! The report's figures, drawn with plotters into SVG and PNG.
//!
//! Each figure is drawn once per backend from the same description, so the SVG and the PNG
//! show the same thing. PNG text uses DejaVu Sans, embedded from the `dejavu` crate (Bitstream
//! Vera licence: free to embed and redistribute with its notice); SVG text names the
//! `sans-serif` family and leaves rendering to the viewer. Nothing depends on the clock or on
//! fonts installed on the machine, so the same results give byte-identical files.
//!
//! Every font size is even: plotters' ab_glyph text path puts each glyph at
//! `trunc(size / 2 + glyph top)`, which at odd sizes rounds a digit down and the decimal point
//! up, so PNGs showed "8.6" as a raised "8·6". `font` enforces it.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::atomic;
use crate::error::{Error, Result};
use crate::stats::Summary;

/// A figure that can be drawn on any plotters backend.
pub(crate) trait Figure {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32);
    /// Draws onto `root`; errors are plotters' messages.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>;
}

/// Writes `<dir>/<stem>.svg` and `<dir>/<stem>.png`; returns both paths (SVG first).
pub(crate) fn save(dir: &Path, stem: &str, figure: &impl Figure) -> Result<[PathBuf; 2]> {
    register_font()?;
    let (w, h) = figure.size();
    let svg_path = dir.join(format!("{stem}.svg"));
    let png_path = dir.join(format!("{stem}.png"));
    let plot_err = |path: &Path| {
        let path = path.to_owned();
        move |message: String| Error::Plot { path, message }
    };

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        figure.draw(&root).map_err(plot_err(&svg_path))?;
        root.present()
            .map_err(|e| plot_err(&svg_path)(e.to_string()))?;
    }
    atomic::write(&svg_path, svg.as_bytes())?;

    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        figure.draw(&root).map_err(plot_err(&png_path))?;
        root.present()
            .map_err(|e| plot_err(&png_path)(e.to_string()))?;
    }
    let image = image::RgbImage::from_raw(w, h, rgb).ok_or_else(|| Error::Plot {
        path: png_path.clone(),
        message: "pixel buffer does not match the figure size".to_owned(),
    })?;
    let mut png = Cursor::new(Vec::new());
    image
        .write_to(&mut png, image::ImageFormat::Png)
        .map_err(|source| Error::PngEncode {
            path: png_path.clone(),
            source,
        })?;
    atomic::write(&png_path, png.get_ref())?;
    Ok([svg_path, png_path])
}

/// Registers DejaVu Sans as plotters' `sans-serif` font, once per process.
fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(Error::Plot {
            path: PathBuf::from("(font)"),
            message: "the embedded DejaVu Sans font did not load".to_owned(),
        })
    }
}

/// The sans-serif font at `size` pixels, which must be even (see the module's note).
fn font(size: u32) -> FontDesc<'static> {
    debug_assert!(
        size.is_multiple_of(2),
        "odd font sizes misplace glyphs in PNGs"
    );
    ("sans-serif", size).into_font()
}

fn msg<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Category-20 colours (Tableau): distinct for up to 20 series or classes, then repeating.
pub(crate) const PALETTE: [RGBColor; 20] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(174, 199, 232),
    RGBColor(255, 187, 120),
    RGBColor(152, 223, 138),
    RGBColor(255, 152, 150),
    RGBColor(197, 176, 213),
    RGBColor(196, 156, 148),
    RGBColor(247, 182, 210),
    RGBColor(199, 199, 199),
    RGBColor(219, 219, 141),
    RGBColor(158, 218, 229),
];

fn palette(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Viridis, linearly interpolated between five anchors; `t` in [0, 1].
fn viridis(t: f64) -> RGBColor {
    const ANCHORS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let x = t.clamp(0.0, 1.0) * (ANCHORS.len() - 1) as f64;
    let i = (x.floor() as usize).min(ANCHORS.len() - 2);
    let f = x - i as f64;
    let (a, b) = (ANCHORS[i], ANCHORS[i + 1]);
    let mix = |p: f64, q: f64| (p + (q - p) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// A line of per-step means, with a min-max band around it.
pub(crate) struct BandSeries {
    pub label: String,
    /// `(step, summary over seeds)`, ascending steps.
    pub points: Vec<(u64, Summary)>,
}

/// Lines with min-max bands against training steps (Recall@1 curves).
pub(crate) struct BandChart {
    pub title: String,
    pub y_desc: String,
    /// Values are multiplied by this before plotting (100 for percentages).
    pub y_scale: f64,
    pub y_max: f64,
    pub series: Vec<BandSeries>,
}

fn step_range(series: &[BandSeries]) -> (f64, f64) {
    let max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .max()
        .unwrap_or(0);
    (0.0, (max as f64).max(1.0))
}

impl Figure for BandChart {
    fn size(&self) -> (u32, u32) {
        (800, 500)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(msg)?;
        let (x0, x1) = step_range(&self.series);
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, font(20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(x0..x1, 0.0..self.y_max)
            .map_err(msg)?;
        chart
            .configure_mesh()
            .x_desc("training step")
            .y_desc(self.y_desc.as_str())
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style(font(12))
            .axis_desc_style(font(14))
            .draw()
            .map_err(msg)?;
        for (i, s) in self.series.iter().enumerate() {
            let color = palette(i);
            let scale = self.y_scale;
            if s.points.len() > 1 {
                let upper = s.points.iter().map(|(x, v)| (*x as f64, v.max * scale));
                let lower = s
                    .points
                    .iter()
                    .rev()
                    .map(|(x, v)| (*x as f64, v.min * scale));
                let band: Vec<(f64, f64)> = upper.chain(lower).collect();
                chart
                    .draw_series(std::iter::once(Polygon::new(
                        band,
                        color.mix(0.18).filled(),
                    )))
                    .map_err(msg)?;
            }
            let line: Vec<(f64, f64)> = s
                .points
                .iter()
                .map(|(x, v)| (*x as f64, v.mean * scale))
                .collect();
            chart
                .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
                .map_err(msg)?
                .label(s.label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart
                .draw_series(line.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(msg)?;
        }
        if !self.series.is_empty() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(font(12))
                .draw()
                .map_err(msg)?;
        }
        Ok(())
    }
}

/// One line of a [`LinePanel`]: one run.
pub(crate) struct RunLine {
    /// Colour index (runs of one setting share a colour).
    pub color: usize,
    /// Legend text; only the first line of each colour carries one.
    pub label: Option<String>,
    /// `(step, value)`, ascending steps.
    pub points: Vec<(u64, f64)>,
}

/// One panel of [`PanelLines`].
pub(crate) struct LinePanel {
    pub title: String,
    pub lines: Vec<RunLine>,
}

/// A grid of small line charts on a shared log y axis with a horizontal threshold (the
/// collapse indicator: one panel per loss, one line per run). Every run is drawn, so a
/// collapse is visible even when the other seeds of its setting are healthy.
pub(crate) struct PanelLines {
    pub title: String,
    pub y_desc: String,
    /// A horizontal reference line (the collapse threshold).
    pub threshold: f64,
    /// Values below this are drawn at it (a log axis has no 0).
    pub floor: f64,
    pub panels: Vec<LinePanel>,
}

fn panel_grid(n: usize) -> (usize, usize) {
    let cols = n.clamp(1, 3);
    (n.div_ceil(cols).max(1), cols)
}

impl Figure for PanelLines {
    fn size(&self) -> (u32, u32) {
        let (rows, cols) = panel_grid(self.panels.len());
        (cols as u32 * 380, rows as u32 * 300 + 40)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(msg)?;
        let body = root.titled(&self.title, font(20)).map_err(msg)?;
        let top = self
            .panels
            .iter()
            .flat_map(|p| p.lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)))
            .fold(1.0f64, f64::max);
        let y_range = (self.floor..top * 3.0).log_scale();
        for (panel, area) in self
            .panels
            .iter()
            .zip(body.split_evenly(panel_grid(self.panels.len())))
        {
            let max_step = panel
                .lines
                .iter()
                .flat_map(|l| l.points.iter().map(|p| p.0))
                .max()
                .unwrap_or(0);
            let (x0, x1) = (0.0, (max_step as f64).max(1.0));
            let mut chart = ChartBuilder::on(&area)
                .caption(&panel.title, font(14))
                .margin(8)
                .x_label_area_size(32)
                .y_label_area_size(50)
                .build_cartesian_2d(x0..x1, y_range.clone())
                .map_err(msg)?;
            chart
                .configure_mesh()
                .x_desc("training step")
                .y_desc(self.y_desc.as_str())
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&|y| format!("{y}"))
                .x_labels(5)
                .label_style(font(10))
                .draw()
                .map_err(msg)?;
            chart
                .draw_series(LineSeries::new(
                    [(x0, self.threshold), (x1, self.threshold)],
                    RED.stroke_width(1),
                ))
                .map_err(msg)?;
            let mut labelled = false;
            for line in &panel.lines {
                let color = palette(line.color);
                let points: Vec<(f64, f64)> = line
                    .points
                    .iter()
                    .map(|&(x, v)| (x as f64, v.max(self.floor)))
                    .collect();
                let drawn = chart
                    .draw_series(LineSeries::new(points, color.stroke_width(2)))
                    .map_err(msg)?;
                if let Some(label) = &line.label {
                    labelled = true;
                    drawn.label(label.as_str()).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
                    });
                }
            }
            if labelled {
                chart
                    .configure_series_labels()
                    // Lower left stays clear: every run starts at 1 and collapse happens later.
                    .position(SeriesLabelPosition::LowerLeft)
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .label_font(font(10))
                    .draw()
                    .map_err(msg)?;
            }
        }
        Ok(())
    }
}

/// One cell of a heatmap.
pub(crate) struct HeatCell {
    /// Mean value in [0, 1] (drawn as a percentage).
    pub value: f64,
    /// Second line of the cell, e.g. "1/3 collapsed"; empty for none.
    pub note: String,
}

/// One heatmap: `cells[row][col]`, rows are batch shapes, columns learning rates.
pub(crate) struct HeatPanel {
    pub title: String,
    pub cells: Vec<Vec<Option<HeatCell>>>,
}

/// Heatmaps with numbers (the stability map, one panel per loss).
pub(crate) struct Heatmaps {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub columns: Vec<String>,
    pub rows: Vec<String>,
    pub panels: Vec<HeatPanel>,
}

impl Figure for Heatmaps {
    fn size(&self) -> (u32, u32) {
        let (rows, cols) = panel_grid(self.panels.len());
        let w = (HEAT_LEFT + HEAT_RIGHT + 90 * self.columns.len() as i32).max(300) as u32;
        let h = (HEAT_TOP + HEAT_BOTTOM + 30 + 56 * self.rows.len() as i32) as u32;
        (cols as u32 * w, rows as u32 * h + 40)
    }

    /// Drawn in pixels rather than through a chart: cells, their numbers and the axis labels
    /// must line up exactly, which plotters' tick placement does not promise.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(msg)?;
        let body = root.titled(&self.title, font(20)).map_err(msg)?;
        let (nx, ny) = (
            self.columns.len().max(1) as i32,
            self.rows.len().max(1) as i32,
        );
        fn text(size: u32, color: &RGBColor, h: HPos) -> TextStyle<'_> {
            TextStyle::from(font(size))
                .color(color)
                .pos(Pos::new(h, VPos::Center))
        }
        for (panel, area) in self
            .panels
            .iter()
            .zip(body.split_evenly(panel_grid(self.panels.len())))
        {
            let area = area.titled(&panel.title, font(14)).map_err(msg)?;
            let (w, h) = area.dim_in_pixel();
            let grid_w = (w as i32 - HEAT_LEFT - HEAT_RIGHT).max(nx);
            let grid_h = (h as i32 - HEAT_TOP - HEAT_BOTTOM).max(ny);
            let x_at = |i: i32| HEAT_LEFT + i * grid_w / nx;
            let y_at = |j: i32| HEAT_TOP + j * grid_h / ny;
            for (j, row) in panel.cells.iter().enumerate() {
                for (i, cell) in row.iter().enumerate() {
                    let (i, j) = (i as i32, j as i32);
                    let (x0, x1, y0, y1) = (x_at(i), x_at(i + 1), y_at(j), y_at(j + 1));
                    let (fill, ink, value) = match cell {
                        Some(c) => (
                            viridis(c.value),
                            if c.value < 0.6 { WHITE } else { BLACK },
                            format!("{:.1}", c.value * 100.0),
                        ),
                        None => (RGBColor(235, 235, 235), BLACK, "n/a".to_owned()),
                    };
                    area.draw(&Rectangle::new([(x0, y0), (x1, y1)], fill.filled()))
                        .map_err(msg)?;
                    area.draw(&Rectangle::new([(x0, y0), (x1, y1)], WHITE.stroke_width(1)))
                        .map_err(msg)?;
                    let (cx, cy) = ((x0 + x1) / 2, (y0 + y1) / 2);
                    let note = cell.as_ref().map_or("", |c| c.note.as_str());
                    let value_y = if note.is_empty() { cy } else { cy - 8 };
                    area.draw(&Text::new(
                        value,
                        (cx, value_y),
                        text(14, &ink, HPos::Center),
                    ))
                    .map_err(msg)?;
                    if !note.is_empty() {
                        area.draw(&Text::new(
                            note.to_owned(),
                            (cx, cy + 10),
                            text(10, &ink, HPos::Center),
                        ))
                        .map_err(msg)?;
                    }
                }
            }
            for (i, label) in self.columns.iter().enumerate() {
                let cx = (x_at(i as i32) + x_at(i as i32 + 1)) / 2;
                let y = HEAT_TOP + grid_h + 12;
                area.draw(&Text::new(
                    label.clone(),
                    (cx, y),
                    text(12, &BLACK, HPos::Center),
                ))
                .map_err(msg)?;
            }
            for (j, label) in self.rows.iter().enumerate() {
                let cy = (y_at(j as i32) + y_at(j as i32 + 1)) / 2;
                area.draw(&Text::new(
                    label.clone(),
                    (HEAT_LEFT - 6, cy),
                    text(12, &BLACK, HPos::Right),
                ))
                .map_err(msg)?;
            }
            let x_desc = (HEAT_LEFT + grid_w / 2, HEAT_TOP + grid_h + 32);
            area.draw(&Text::new(
                self.x_desc.clone(),
                x_desc,
                text(12, &BLACK, HPos::Center),
            ))
            .map_err(msg)?;
            let y_desc = (HEAT_LEFT - 6, HEAT_TOP - 10);
            area.draw(&Text::new(
                self.y_desc.clone(),
                y_desc,
                text(12, &BLACK, HPos::Right),
            ))
            .map_err(msg)?;
        }
        Ok(())
    }
}

/// Heatmap panel margins in pixels: row labels on the left, column labels and the axis
/// description below, the row-axis description above.
const HEAT_LEFT: i32 = 80;
const HEAT_RIGHT: i32 = 12;
const HEAT_TOP: i32 = 24;
const HEAT_BOTTOM: i32 = 46;

/// A 2-D scatter of points coloured by class (the t-SNE map).
pub(crate) struct Scatter {
    pub title: String,
    pub points: Vec<[f32; 2]>,
    pub classes: Vec<usize>,
}

impl Figure for Scatter {
    fn size(&self) -> (u32, u32) {
        (700, 720)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(msg)?;
        let bound = |f: fn(f32, f32) -> f32, axis: usize, init: f32| {
            self.points.iter().map(|p| p[axis]).fold(init, f)
        };
        let pad = |lo: f32, hi: f32| {
            let m = ((hi - lo) * 0.04).max(1e-3);
            (f64::from(lo - m), f64::from(hi + m))
        };
        let (x0, x1) = pad(
            bound(f32::min, 0, f32::INFINITY),
            bound(f32::max, 0, f32::NEG_INFINITY),
        );
        let (y0, y1) = pad(
            bound(f32::min, 1, f32::INFINITY),
            bound(f32::max, 1, f32::NEG_INFINITY),
        );
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, font(16))
            .margin(12)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(msg)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .disable_axes()
            .draw()
            .map_err(msg)?;
        chart
            .plotting_area()
            .draw(&Rectangle::new([(x0, y0), (x1, y1)], BLACK.stroke_width(1)))
            .map_err(msg)?;
        chart
            .draw_series(self.points.iter().zip(&self.classes).map(|(p, &c)| {
                Circle::new((f64::from(p[0]), f64::from(p[1])), 2, palette(c).filled())
            }))
            .map_err(msg)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viridis_ends_and_clamps() {
        assert_eq!(viridis(0.0), RGBColor(68, 1, 84));
        assert_eq!(viridis(1.0), RGBColor(253, 231, 37));
        assert_eq!(viridis(-3.0), viridis(0.0));
        assert_eq!(viridis(0.5), RGBColor(33, 145, 140));
    }

    #[test]
    fn panel_grid_has_room_for_every_panel() {
        for n in 1..12 {
            let (r, c) = panel_grid(n);
            assert!(r * c >= n && c <= 3, "{n}: {r}x{c}");
        }
    }
}
