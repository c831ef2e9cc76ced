//! `index.html`: one self-contained page (inline CSS and script, no network), every user
//! string (class names, paths, reasons) escaped.
//!
//! The DOM is a contract that browser tests rely on:
//!
//! - `<section id="metrics">`: `<tr data-metric="KEY"><td>KEY</td><td class="value">V</td></tr>`
//!   per metric (`recall@K`..., `precision@1`, `r_precision`, `map@r`, `nmi`; 4 decimals).
//! - `<table id="classes">`: `<th data-key="class|size|recall@1|map@r">`, rows
//!   `<tr data-class="NAME">` whose cells carry `data-value`; clicking a header sorts.
//! - `<section id="queries">`: `<div class="query" data-row data-label data-group>` holding
//!   `<img class="query-image">`, then `<figure class="neighbour" data-row data-rank
//!   data-same data-distance>` per neighbour (an image and a `<figcaption>`), and
//!   `<span class="first-correct" data-rank>` when the first correct item is beyond k.
//! - `<table id="confusions">`: rows `<tr data-a data-b data-count>`.
//! - `<canvas id="map" data-points="N">`, `<script id="map-data" type="application/json">`
//!   (`{"classes": [names], "points": [[x, y, class, row, thumb or null], ...]}`) and
//!   `<div id="map-info">`.
//! - A missing image is `<div class="missing" title="PATH">` in place of its `<img>`, and
//!   `<ul id="missing-images">` lists each missing path once.
//! - `document.body.dataset.ready = "true"` once the script has drawn the map.

use std::fmt::Write as _;

use dml_eval::{Neighbours, QueryRetrieval};

use crate::analysis::{ClassRow, Confusion};
use crate::map::MapPoint;
use crate::thumbs::{MissingImage, Side, Thumb, Thumbs};

/// `s` with the five characters that matter in HTML text and quoted attributes replaced by
/// entities: safe anywhere this page puts a user string.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// JSON text that cannot end the `<script>` element it sits in (`</script>`, `<!--`): the
/// characters `<`, `>` and `&` are written as `\u` escapes, which JSON reads back unchanged.
pub(crate) fn script_json(value: &serde_json::Value) -> String {
    value
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// Why a group of query rows is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Group {
    /// The lowest average precision.
    Worst,
    /// The seeded random sample.
    Sample,
    /// Every query of a class asked for by name.
    Class(u32),
}

impl Group {
    /// The `data-group` value.
    fn key(self) -> &'static str {
        match self {
            Group::Worst => "worst",
            Group::Sample => "sample",
            Group::Class(_) => "class",
        }
    }
}

/// Everything the page shows, computed beforehand.
pub(crate) struct Page<'a> {
    /// One sentence on what was evaluated.
    pub description: String,
    /// `(key, value)` of the summary table, in order.
    pub metrics: Vec<(String, f64)>,
    /// Class names by id (queries and reference share the ids).
    pub names: &'a [String],
    /// The per-class table, in its initial order.
    pub classes: &'a [ClassRow],
    /// The query rows, by group.
    pub groups: Vec<(Group, Vec<usize>)>,
    /// The query set's side (the reference set in leave-one-out mode).
    pub query_side: Side,
    /// Class ids of the queries.
    pub query_labels: &'a [u32],
    /// Class ids of the reference rows.
    pub reference_labels: &'a [u32],
    /// Every query's retrieval values.
    pub per_query: &'a [QueryRetrieval],
    /// Every query's top-k neighbours.
    pub neighbours: &'a Neighbours,
    /// The confused class pairs, most first.
    pub confusions: &'a [Confusion],
    /// The map's points.
    pub map: &'a [MapPoint],
    /// The thumbnails and the missing images.
    pub thumbs: &'a Thumbs,
}

const STYLE: &str = r#"
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1400px; padding: 0 16px 48px; color: #222; }
h1 { margin: 16px 0 4px; } h2 { margin-top: 32px; border-bottom: 1px solid #ccc; } h3 { margin: 20px 0 6px; }
nav a { margin-right: 12px; }
table { border-collapse: collapse; } td, th { padding: 2px 10px; text-align: right; border-bottom: 1px solid #eee; }
td:first-child, th:first-child { text-align: left; }
#classes th { cursor: pointer; user-select: none; background: #f4f4f4; position: sticky; top: 0; }
#classes th[aria-sort=ascending]::after { content: " \25B2"; } #classes th[aria-sort=descending]::after { content: " \25BC"; }
.table-wrap { max-height: 480px; overflow: auto; display: inline-block; border: 1px solid #ddd; }
.query { display: flex; flex-wrap: wrap; align-items: flex-start; gap: 8px; padding: 8px 0; border-bottom: 1px solid #eee; }
.query-info { width: 150px; font-size: 12px; overflow-wrap: anywhere; }
img, .missing, .no-image { width: 96px; height: 96px; object-fit: contain; background: #f7f7f7; display: block; }
.query-image { outline: 3px solid #333; }
figure { margin: 0; width: 96px; font-size: 11px; overflow-wrap: anywhere; }
.neighbour[data-same=true] img, .neighbour[data-same=true] .missing, .neighbour[data-same=true] .no-image { outline: 3px solid #1a8f3a; }
.neighbour[data-same=false] img, .neighbour[data-same=false] .missing, .neighbour[data-same=false] .no-image { outline: 3px solid #d0342c; }
.missing, .no-image { color: #777; font-size: 11px; display: flex; align-items: center; justify-content: center; }
.missing { background: repeating-linear-gradient(45deg, #eee, #eee 6px, #ddd 6px, #ddd 12px); }
.first-correct { align-self: center; font-size: 12px; color: #d0342c; }
.map-wrap { display: flex; gap: 16px; align-items: flex-start; flex-wrap: wrap; }
#map { border: 1px solid #ccc; width: 720px; height: 720px; max-width: 100%; cursor: crosshair; }
#map-info { min-width: 200px; font-size: 13px; overflow-wrap: anywhere; }
#map-info img, #map-info .missing, #map-info .no-image { width: 160px; height: 160px; }
"#;

const SCRIPT: &str = r#"
(function () {
  'use strict';
  var table = document.getElementById('classes');
  var heads = table.tHead.rows[0].cells;
  var sorted = { key: null, dir: 1 };
  function value(row, col, numeric) {
    var v = row.cells[col].getAttribute('data-value');
    if (!numeric) { return v; }
    var x = parseFloat(v);
    return isNaN(x) ? -Infinity : x;
  }
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener('click', function () {
      var key = th.getAttribute('data-key');
      sorted.dir = sorted.key === key ? -sorted.dir : 1;
      sorted.key = key;
      var numeric = key !== 'class';
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = value(a, col, numeric), y = value(b, col, numeric);
        return (x < y ? -1 : x > y ? 1 : 0) * sorted.dir;
      });
      var fragment = document.createDocumentFragment();
      rows.forEach(function (r) { fragment.appendChild(r); });
      body.appendChild(fragment);
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', sorted.dir > 0 ? 'ascending' : 'descending');
    });
  });

  var canvas = document.getElementById('map');
  var info = document.getElementById('map-info');
  var data = JSON.parse(document.getElementById('map-data').textContent);
  var points = data.points, classes = data.classes;
  var ctx = canvas.getContext('2d');
  var W = canvas.width, H = canvas.height, PAD = 12, CELL = 8, RADIUS = 6;
  function px(p) { return PAD + p[0] * (W - 2 * PAD); }
  function py(p) { return PAD + p[1] * (H - 2 * PAD); }
  function colour(label) {
    return 'hsl(' + ((label * 137.508) % 360).toFixed(1) + ',70%,' + (label % 2 ? '40%' : '55%') + ')';
  }
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, W, H);
  var columns = Math.ceil(W / CELL), grid = {};
  points.forEach(function (p, i) {
    var x = px(p), y = py(p);
    ctx.fillStyle = colour(p[2]);
    ctx.fillRect(x - 2, y - 2, 4, 4);
    var cell = Math.floor(x / CELL) + columns * Math.floor(y / CELL);
    (grid[cell] = grid[cell] || []).push(i);
  });
  var base = ctx.getImageData(0, 0, W, H);
  function nearest(x, y) {
    var best = -1, bestD = RADIUS * RADIUS;
    var cx = Math.floor(x / CELL), cy = Math.floor(y / CELL);
    for (var gy = cy - 1; gy <= cy + 1; gy++) {
      for (var gx = cx - 1; gx <= cx + 1; gx++) {
        if (gx < 0 || gy < 0 || gx >= columns) { continue; }
        var cell = grid[gx + columns * gy];
        if (!cell) { continue; }
        cell.forEach(function (i) {
          var dx = px(points[i]) - x, dy = py(points[i]) - y, d = dx * dx + dy * dy;
          if (d <= bestD) { best = i; bestD = d; }
        });
      }
    }
    return best;
  }
  var pinned = -1;
  function show(i) {
    ctx.putImageData(base, 0, 0);
    while (info.firstChild) { info.removeChild(info.firstChild); }
    if (i < 0) {
      info.appendChild(document.createTextNode('Hover over or click a point.'));
      return;
    }
    var p = points[i];
    ctx.strokeStyle = '#000';
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.arc(px(p), py(p), 6, 0, 2 * Math.PI);
    ctx.stroke();
    var picture;
    if (p[4]) {
      picture = document.createElement('img');
      picture.src = p[4];
      picture.alt = '';
    } else {
      picture = document.createElement('div');
      picture.className = 'no-image';
      picture.textContent = 'no image';
    }
    var label = document.createElement('div');
    label.className = 'map-label';
    label.textContent = classes[p[2]];
    var row = document.createElement('div');
    row.className = 'map-row';
    row.textContent = 'row ' + p[3];
    info.setAttribute('data-row', String(p[3]));
    info.appendChild(picture);
    info.appendChild(label);
    info.appendChild(row);
  }
  function at(event) {
    var rect = canvas.getBoundingClientRect();
    return nearest((event.clientX - rect.left) * W / rect.width, (event.clientY - rect.top) * H / rect.height);
  }
  canvas.addEventListener('mousemove', function (e) { var i = at(e); show(i >= 0 ? i : pinned); });
  canvas.addEventListener('mouseleave', function () { show(pinned); });
  canvas.addEventListener('click', function (e) { pinned = at(e); show(pinned); });
  show(-1);
  document.body.dataset.ready = 'true';
}());
"#;

/// A number for a table cell: 4 decimals, `n/a` for NaN (a class of lone queries).
fn fixed(v: f64) -> String {
    if v.is_nan() {
        "n/a".to_owned()
    } else {
        format!("{v:.4}")
    }
}

/// The markup of an image, or of its placeholder. `class` goes on the `<img>` only.
fn picture(thumb: &Thumb, class: &str) -> String {
    match thumb {
        Thumb::File(src) => {
            let class = if class.is_empty() {
                String::new()
            } else {
                format!(" class=\"{class}\"")
            };
            format!("<img{class} src=\"{}\" alt=\"\">", escape(src))
        }
        Thumb::Missing(path) => {
            format!(
                "<div class=\"missing\" title=\"{}\">missing</div>",
                escape(path)
            )
        }
        Thumb::NoImage => "<div class=\"no-image\">no image</div>".to_owned(),
    }
}

impl Page<'_> {
    fn name(&self, class: u32) -> String {
        escape(&self.names[class as usize])
    }

    /// The whole page.
    pub fn render(&self) -> String {
        let mut html = String::with_capacity(1 << 20);
        html.push_str(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>dml gallery</title>\n<style>",
        );
        html.push_str(STYLE);
        html.push_str("</style>\n</head>\n<body>\n<h1>dml gallery</h1>\n");
        let _ = writeln!(
            html,
            "<p class=\"description\">{}</p>",
            escape(&self.description)
        );
        html.push_str(
            "<nav><a href=\"#metrics\">Summary</a><a href=\"#per-class\">Classes</a>\
             <a href=\"#queries\">Queries</a><a href=\"#confusion-pairs\">Confusions</a>\
             <a href=\"#embedding-map\">Map</a><a href=\"#missing\">Missing images</a></nav>\n",
        );
        self.metrics_section(&mut html);
        self.classes_section(&mut html);
        self.queries_section(&mut html);
        self.confusions_section(&mut html);
        self.map_section(&mut html);
        self.missing_section(&mut html);
        html.push_str("<script>");
        html.push_str(SCRIPT);
        html.push_str("</script>\n</body>\n</html>\n");
        html
    }

    fn metrics_section(&self, html: &mut String) {
        html.push_str("<section id=\"metrics\">\n<h2>Summary</h2>\n<table>\n<tbody>\n");
        for (key, value) in &self.metrics {
            let key = escape(key);
            let _ = writeln!(
                html,
                "<tr data-metric=\"{key}\"><td>{key}</td><td class=\"value\">{}</td></tr>",
                fixed(*value)
            );
        }
        html.push_str("</tbody>\n</table>\n</section>\n");
    }

    fn classes_section(&self, html: &mut String) {
        html.push_str(
            "<section id=\"per-class\">\n<h2>Classes</h2>\n<p>Worst first (Recall@1, then \
             MAP@R); click a header to sort by it.</p>\n<div class=\"table-wrap\">\n\
             <table id=\"classes\">\n<thead><tr><th data-key=\"class\">class</th>\
             <th data-key=\"size\">size</th><th data-key=\"recall@1\">Recall@1</th>\
             <th data-key=\"map@r\">MAP@R</th></tr></thead>\n<tbody>\n",
        );
        for row in self.classes {
            let name = self.name(row.class);
            let _ = writeln!(
                html,
                "<tr data-class=\"{name}\"><td data-value=\"{name}\">{name}</td>\
                 <td data-value=\"{size}\">{size}</td>\
                 <td data-value=\"{r1}\">{r1f}</td><td data-value=\"{map}\">{mapf}</td></tr>",
                size = row.size,
                r1 = row.recall_at_1,
                r1f = fixed(row.recall_at_1),
                map = row.map_at_r,
                mapf = fixed(row.map_at_r),
            );
        }
        html.push_str("</tbody>\n</table>\n</div>\n</section>\n");
    }

    fn queries_section(&self, html: &mut String) {
        let k = self.neighbours.k();
        html.push_str("<section id=\"queries\">\n<h2>Queries</h2>\n");
        let _ = writeln!(
            html,
            "<p>Each query with its {k} nearest items (green: same class, red: another) and \
             their distances.</p>"
        );
        for (group, rows) in &self.groups {
            let heading = match group {
                Group::Worst => format!("The {} worst queries (lowest AP@R)", rows.len()),
                Group::Sample => format!("A random sample of {} queries", rows.len()),
                Group::Class(c) => format!("Class {} ({} queries)", self.name(*c), rows.len()),
            };
            let _ = writeln!(html, "<h3>{heading}</h3>");
            for &q in rows {
                self.query_row(html, *group, q);
            }
        }
        html.push_str("</section>\n");
    }

    fn query_row(&self, html: &mut String, group: Group, q: usize) {
        let label = self.query_labels[q];
        let name = self.name(label);
        let stats = &self.per_query[q];
        let _ = writeln!(
            html,
            "<div class=\"query\" data-row=\"{q}\" data-label=\"{name}\" data-group=\"{}\">",
            group.key()
        );
        html.push_str(&picture(
            self.thumbs.get((self.query_side, q)),
            "query-image",
        ));
        let ap = if stats.first_rank.is_some() {
            format!("AP@R {}", fixed(stats.average_precision_at_r))
        } else {
            "no other item of its class".to_owned()
        };
        let _ = writeln!(
            html,
            "\n<div class=\"query-info\"><b>{name}</b><br>row {q}<br>{ap}</div>"
        );
        for (rank, (&r, &distance)) in self
            .neighbours
            .indices(q)
            .iter()
            .zip(self.neighbours.scores(q))
            .enumerate()
        {
            let r = r as usize;
            let other = self.reference_labels[r];
            let _ = writeln!(
                html,
                "<figure class=\"neighbour\" data-row=\"{r}\" data-rank=\"{}\" \
                 data-same=\"{}\" data-distance=\"{distance}\">{}<figcaption>{}<br>{:.4}\
                 </figcaption></figure>",
                rank + 1,
                other == label,
                picture(self.thumbs.get((Side::Reference, r)), ""),
                self.name(other),
                distance,
            );
        }
        if let Some(first) = stats.first_rank
            && first > self.neighbours.k() as u64
        {
            let _ = writeln!(
                html,
                "<span class=\"first-correct\" data-rank=\"{first}\">first correct item at \
                 rank {first}</span>"
            );
        }
        html.push_str("</div>\n");
    }

    fn confusions_section(&self, html: &mut String) {
        html.push_str(
            "<section id=\"confusion-pairs\">\n<h2>Confusions</h2>\n<p>Class pairs most often \
             retrieved for each other: top-k neighbours of one class among the queries of the \
             other, both directions added.</p>\n<table id=\"confusions\">\n<thead><tr>\
             <th>class a</th><th>class b</th><th>count</th><th>a&rarr;b</th><th>b&rarr;a</th>\
             </tr></thead>\n<tbody>\n",
        );
        for c in self.confusions {
            let (a, b) = (self.name(c.a), self.name(c.b));
            let _ = writeln!(
                html,
                "<tr data-a=\"{a}\" data-b=\"{b}\" data-count=\"{n}\"><td>{a}</td><td>{b}</td>\
                 <td>{n}</td><td>{}</td><td>{}</td></tr>",
                c.a_to_b,
                c.b_to_a,
                n = c.count(),
            );
        }
        html.push_str("</tbody>\n</table>\n</section>\n");
    }

    fn map_section(&self, html: &mut String) {
        let round = |v: f32| (f64::from(v) * 1e4).round() / 1e4;
        let points: Vec<serde_json::Value> = self
            .map
            .iter()
            .map(|p| {
                let thumb = match self.thumbs.get((Side::Reference, p.row)) {
                    Thumb::File(src) => serde_json::Value::from(src.as_str()),
                    Thumb::Missing(_) | Thumb::NoImage => serde_json::Value::Null,
                };
                serde_json::json!([
                    round(p.x),
                    round(p.y),
                    self.reference_labels[p.row],
                    p.row,
                    thumb
                ])
            })
            .collect();
        let data = serde_json::json!({ "classes": self.names, "points": points });
        let _ = write!(
            html,
            "<section id=\"embedding-map\">\n<h2>Embedding map</h2>\n<p>t-SNE of {} reference \
             items, one colour per class; hover over or click a point.</p>\n\
             <div class=\"map-wrap\"><canvas id=\"map\" width=\"720\" height=\"720\" \
             data-points=\"{}\"></canvas><div id=\"map-info\"></div></div>\n\
             <script id=\"map-data\" type=\"application/json\">{}</script>\n</section>\n",
            self.map.len(),
            self.map.len(),
            script_json(&data)
        );
    }

    fn missing_section(&self, html: &mut String) {
        let missing: &[MissingImage] = &self.thumbs.missing;
        html.push_str("<section id=\"missing\">\n<h2>Missing images</h2>\n");
        if missing.is_empty() {
            html.push_str("<p>Every image shown was found.</p>\n");
        } else {
            let _ = writeln!(
                html,
                "<p>{} images could not be read or decoded (hover for why).</p>",
                missing.len()
            );
        }
        html.push_str("<ul id=\"missing-images\">\n");
        for m in missing {
            let _ = writeln!(
                html,
                "<li title=\"{}\">{}</li>",
                escape(&m.reason),
                escape(&m.path)
            );
        }
        html.push_str("</ul>\n</section>\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_character_that_matters() {
        assert_eq!(
            escape(r#"<b a="1" c='2'>&amp;</b>"#),
            "&lt;b a=&quot;1&quot; c=&#39;2&#39;&gt;&amp;amp;&lt;/b&gt;"
        );
        assert_eq!(escape("plain ünïcode"), "plain ünïcode");
        let json = script_json(&serde_json::json!(["</script><!--&"]));
        assert_eq!(json, r#"["\u003c/script\u003e\u003c!--\u0026"]"#);
        let back: Vec<String> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ["</script><!--&"]);
    }
}
