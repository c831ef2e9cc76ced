//! Built-in synthetic data: seeded random stroke glyphs, drawn on demand.
//!
//! A class is a set of `modes` prototypes; a prototype is 2-4 random cubic Bézier strokes in
//! the unit square. A sample picks one of its class's prototypes (sample `i` uses mode
//! `i % modes`), nudges every control point, applies a random rotation / scale / shift, draws
//! the strokes anti-aliased with a random width and adds pixel noise. Everything is a pure
//! function of `(seed, class, sample)`, so nothing is stored and any sample can be redrawn on
//! any thread.

mod raster;

use std::sync::Arc;

use image::{DynamicImage, GrayImage};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::dataset::{DatasetSplits, TestSplit};
use crate::seed::{self, Purpose};
use crate::{Dataset, Error};
use raster::Canvas;

/// Per-sample variation of a glyph around its prototype.
///
/// The defaults make raw pixels a weak representation: 1-nearest-neighbour accuracy on raw
/// pixels of the default test split (32 classes x 20, one mode) is about 0.6 (0.93 with half
/// these amplitudes), leaving room for a learned embedding to show (measured by
/// `examples/loader_throughput.rs`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GlyphJitter {
    /// Largest rotation either way, degrees. Default: 20.
    pub max_rotation_deg: f32,
    /// Largest relative scale change (scale in `[1 - s, 1 + s]`). Default: 0.2.
    pub max_scale: f32,
    /// Largest shift along each axis, fraction of the image side. Default: 0.12.
    pub max_shift: f32,
    /// Largest move of each Bézier control point along each axis, fraction of the side: the
    /// "handwriting" variation. Default: 0.06.
    pub max_control_shift: f32,
    /// Thinnest stroke, fraction of the side. Default: 0.05 (1.4 px at 28 px).
    pub min_stroke_width: f32,
    /// Thickest stroke, fraction of the side. Default: 0.09 (2.5 px at 28 px).
    pub max_stroke_width: f32,
    /// Amplitude of uniform pixel noise added to ink values in `[0, 1]`. Default: 0.08.
    pub noise: f32,
}

impl Default for GlyphJitter {
    fn default() -> Self {
        Self {
            max_rotation_deg: 20.0,
            max_scale: 0.2,
            max_shift: 0.12,
            max_control_shift: 0.06,
            min_stroke_width: 0.05,
            max_stroke_width: 0.09,
            noise: 0.08,
        }
    }
}

/// Settings of the built-in synthetic glyph dataset; [`SyntheticGlyphsConfig::splits`] checks
/// them and builds its class-disjoint train and test splits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticGlyphsConfig {
    /// Classes of the training split. Default: 64.
    pub train_classes: usize,
    /// Classes of the test split, disjoint from the training classes. Default: 32.
    pub test_classes: usize,
    /// Samples of each class. Default: 20 (as Omniglot's drawings per character).
    pub samples_per_class: usize,
    /// Prototypes per class: 1 makes each class one shape (like faces or re-ID), m > 1 a union
    /// of m unrelated shapes (like CUB or SOP). Default: 1.
    pub modes: usize,
    /// Side of the square images, pixels. Default: 28.
    pub size: u32,
    /// Seed of every shape and every jitter. Default: 0.
    pub seed: u64,
    /// Per-sample variation.
    pub jitter: GlyphJitter,
}

impl Default for SyntheticGlyphsConfig {
    fn default() -> Self {
        Self {
            train_classes: 64,
            test_classes: 32,
            samples_per_class: 20,
            modes: 1,
            size: 28,
            seed: 0,
            jitter: GlyphJitter::default(),
        }
    }
}

/// The most classes, samples, modes or images a synthetic glyph set may have: far more than a
/// test needs, few enough that the class list fits in memory.
const MAX_GLYPH_COUNT: usize = 10_000_000;

impl SyntheticGlyphsConfig {
    /// Checks the settings; the error names the offending field.
    pub fn validate(&self) -> Result<(), Error> {
        let positive = [
            ("train_classes", self.train_classes),
            ("test_classes", self.test_classes),
            ("samples_per_class", self.samples_per_class),
            ("modes", self.modes),
        ];
        for (field, v) in positive {
            if !(1..=MAX_GLYPH_COUNT).contains(&v) {
                return Err(Error::config(
                    field,
                    format!("must be in 1..={MAX_GLYPH_COUNT}, got {v}"),
                ));
            }
        }
        let images = (self.train_classes + self.test_classes).checked_mul(self.samples_per_class);
        if images.is_none_or(|n| n > MAX_GLYPH_COUNT) {
            return Err(Error::config(
                "samples_per_class",
                format!(
                    "{} classes of {} glyphs are more than {MAX_GLYPH_COUNT} images",
                    self.train_classes + self.test_classes,
                    self.samples_per_class
                ),
            ));
        }
        if !(8..=512).contains(&self.size) {
            return Err(Error::config(
                "size",
                format!("must be in 8..=512, got {}", self.size),
            ));
        }
        let j = &self.jitter;
        let fraction = |field: &'static str, v: f32, hi: f32| {
            if v.is_finite() && (0.0..=hi).contains(&v) {
                Ok(())
            } else {
                Err(Error::config(
                    field,
                    format!("must be in [0, {hi}], got {v}"),
                ))
            }
        };
        fraction("jitter.max_rotation_deg", j.max_rotation_deg, 180.0)?;
        fraction("jitter.max_scale", j.max_scale, 0.9)?;
        fraction("jitter.max_shift", j.max_shift, 0.5)?;
        fraction("jitter.max_control_shift", j.max_control_shift, 0.5)?;
        fraction("jitter.min_stroke_width", j.min_stroke_width, 0.5)?;
        fraction("jitter.max_stroke_width", j.max_stroke_width, 0.5)?;
        fraction("jitter.noise", j.noise, 1.0)?;
        if j.min_stroke_width > j.max_stroke_width || j.max_stroke_width == 0.0 {
            return Err(Error::config(
                "jitter.min_stroke_width",
                "must not exceed jitter.max_stroke_width, which must be positive",
            ));
        }
        Ok(())
    }

    /// The training split (classes `0..train_classes`) and the test split (the next
    /// `test_classes` classes, shapes never seen in training).
    pub fn splits(&self) -> Result<DatasetSplits, Error> {
        self.validate()?;
        let config = Arc::new(self.clone());
        Ok(DatasetSplits {
            train: Arc::new(SyntheticGlyphs::new(config.clone(), 0, self.train_classes)),
            test: TestSplit::Pooled(Arc::new(SyntheticGlyphs::new(
                config,
                self.train_classes,
                self.test_classes,
            ))),
        })
    }
}

/// A range of synthetic glyph classes, as a [`Dataset`].
///
/// Sample `i` is sample `i % samples_per_class` of class `i / samples_per_class`.
#[derive(Clone, Debug)]
pub struct SyntheticGlyphs {
    config: Arc<SyntheticGlyphsConfig>,
    first_class: usize,
    class_names: Vec<String>,
}

/// A cubic Bézier stroke in unit-square coordinates.
type Stroke = [[f32; 2]; 4];

/// Segments each stroke is flattened into: smooth at 28-64 px.
const SEGMENTS_PER_STROKE: usize = 12;

impl SyntheticGlyphs {
    /// Classes `first_class..first_class + classes` of the glyph family `config` (checked by
    /// [`SyntheticGlyphsConfig::validate`]; see [`SyntheticGlyphsConfig::splits`]).
    pub fn new(config: Arc<SyntheticGlyphsConfig>, first_class: usize, classes: usize) -> Self {
        let class_names = (first_class..first_class + classes)
            .map(|c| format!("glyph {c}"))
            .collect();
        Self {
            config,
            first_class,
            class_names,
        }
    }

    /// The strokes of prototype `mode` of global class `class`.
    fn prototype(&self, class: usize, mode: usize) -> Vec<Stroke> {
        let mut rng = seed::rng(
            self.config.seed,
            Purpose::GlyphPrototype,
            &[class as u64, mode as u64],
        );
        let strokes = rng.random_range(2..=4);
        let point = |rng: &mut ChaCha8Rng| {
            [
                rng.random_range(0.15..0.85f32),
                rng.random_range(0.15..0.85f32),
            ]
        };
        (0..strokes)
            .map(|_| {
                [
                    point(&mut rng),
                    point(&mut rng),
                    point(&mut rng),
                    point(&mut rng),
                ]
            })
            .collect()
    }

    /// Draws sample `sample` of global class `class`.
    fn draw(&self, class: usize, sample: usize) -> GrayImage {
        let cfg = &*self.config;
        let j = &cfg.jitter;
        let size = cfg.size as usize;
        let n = cfg.size as f32;
        let strokes = self.prototype(class, sample % cfg.modes);
        let mut rng = seed::rng(
            cfg.seed,
            Purpose::GlyphSample,
            &[class as u64, sample as u64],
        );
        let sym = |rng: &mut ChaCha8Rng, max: f32| rng.random_range(-1.0..=1.0f32) * max;
        let angle = sym(&mut rng, j.max_rotation_deg.to_radians());
        let scale = 1.0 + sym(&mut rng, j.max_scale);
        let shift = [sym(&mut rng, j.max_shift), sym(&mut rng, j.max_shift)];
        let width = rng.random_range(j.min_stroke_width..=j.max_stroke_width) * n;
        let (sin, cos) = angle.sin_cos();
        // Unit square -> pixels: rotate and scale about the centre, then shift.
        let place = |p: [f32; 2]| {
            let (x, y) = (p[0] - 0.5, p[1] - 0.5);
            [
                (scale * (cos * x - sin * y) + 0.5 + shift[0]) * n,
                (scale * (sin * x + cos * y) + 0.5 + shift[1]) * n,
            ]
        };
        let mut canvas = Canvas::new(size);
        for stroke in strokes {
            let c = stroke.map(|p| {
                place([
                    p[0] + sym(&mut rng, j.max_control_shift),
                    p[1] + sym(&mut rng, j.max_control_shift),
                ])
            });
            let mut prev = c[0];
            for s in 1..=SEGMENTS_PER_STROKE {
                let t = s as f32 / SEGMENTS_PER_STROKE as f32;
                let u = 1.0 - t;
                let (b0, b1, b2, b3) = (u * u * u, 3.0 * u * u * t, 3.0 * u * t * t, t * t * t);
                let next = [
                    b0 * c[0][0] + b1 * c[1][0] + b2 * c[2][0] + b3 * c[3][0],
                    b0 * c[0][1] + b1 * c[1][1] + b2 * c[2][1] + b3 * c[3][1],
                ];
                canvas.segment(prev, next, width);
                prev = next;
            }
        }
        let pixels = canvas
            .pixels
            .iter()
            .map(|&v| ((v + sym(&mut rng, j.noise)).clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect();
        GrayImage::from_raw(cfg.size, cfg.size, pixels).expect("canvas has size * size pixels")
    }
}

impl Dataset for SyntheticGlyphs {
    fn len(&self) -> usize {
        self.class_names.len() * self.config.samples_per_class
    }

    fn label(&self, index: usize) -> usize {
        assert!(index < self.len(), "sample {index} out of range");
        index / self.config.samples_per_class
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }

    fn load(&self, index: usize) -> Result<DynamicImage, Error> {
        if index >= self.len() {
            return Err(Error::IndexOutOfRange {
                index,
                len: self.len(),
            });
        }
        let spc = self.config.samples_per_class;
        Ok(DynamicImage::ImageLuma8(
            self.draw(self.first_class + index / spc, index % spc),
        ))
    }

    fn describe(&self, index: usize) -> String {
        let spc = self.config.samples_per_class;
        format!(
            "synthetic glyph #{index} (class {}, sample {})",
            self.first_class + index / spc,
            index % spc
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Split;

    fn pixels(ds: &dyn Dataset, i: usize) -> Vec<u8> {
        ds.load(i).unwrap().to_luma8().into_raw()
    }

    fn distance(a: &[u8], b: &[u8]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    }

    #[test]
    fn deterministic_per_seed_and_splits_are_class_disjoint() {
        let cfg = SyntheticGlyphsConfig {
            train_classes: 3,
            test_classes: 2,
            samples_per_class: 4,
            ..Default::default()
        };
        let a = cfg.splits().unwrap();
        let b = cfg.splits().unwrap();
        let train = a.get(Split::Train).unwrap();
        let test = a.get(Split::Test).unwrap();
        assert_eq!((train.len(), test.len()), (12, 8));
        assert_eq!(train.labels(), [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
        assert_eq!(test.class_names(), ["glyph 3", "glyph 4"]);
        for i in [0, 5, 11] {
            assert_eq!(
                pixels(&*train, i),
                pixels(&*b.get(Split::Train).unwrap(), i)
            );
        }
        // Test class 0 is global class 3, drawn differently from every training class.
        assert_ne!(pixels(&*test, 0), pixels(&*train, 0));
        let other_seed = SyntheticGlyphsConfig {
            seed: 1,
            ..cfg.clone()
        }
        .splits()
        .unwrap();
        assert_ne!(
            pixels(&*train, 0),
            pixels(&*other_seed.get(Split::Train).unwrap(), 0)
        );
        assert!(train.load(12).is_err());
        assert!(test.describe(1).contains("class 3, sample 1"));
    }

    /// Without jitter, samples of a one-mode class are identical, and a class with two modes
    /// alternates between two different shapes.
    #[test]
    fn modes_are_distinct_prototypes() {
        let still = GlyphJitter {
            max_rotation_deg: 0.0,
            max_scale: 0.0,
            max_shift: 0.0,
            max_control_shift: 0.0,
            min_stroke_width: 0.07,
            max_stroke_width: 0.07,
            noise: 0.0,
        };
        let one = SyntheticGlyphsConfig {
            train_classes: 1,
            samples_per_class: 4,
            jitter: still.clone(),
            ..Default::default()
        };
        let ds = one.splits().unwrap().train;
        assert_eq!(pixels(&*ds, 0), pixels(&*ds, 3));
        let two = SyntheticGlyphsConfig { modes: 2, ..one };
        let ds = two.splits().unwrap().train;
        assert_eq!(pixels(&*ds, 0), pixels(&*ds, 2));
        assert_ne!(pixels(&*ds, 0), pixels(&*ds, 1));
    }

    /// With the default jitter, no two samples are equal, yet a sample's nearest neighbour in
    /// raw pixels is usually of its own class: the classes are learnable.
    #[test]
    fn jittered_samples_vary_but_keep_their_class() {
        let cfg = SyntheticGlyphsConfig {
            train_classes: 8,
            samples_per_class: 6,
            ..Default::default()
        };
        let ds = cfg.splits().unwrap().train;
        let imgs: Vec<Vec<u8>> = (0..ds.len()).map(|i| pixels(&*ds, i)).collect();
        let mut hits = 0;
        for i in 0..imgs.len() {
            let mut best = (f64::INFINITY, 0);
            for k in (0..imgs.len()).filter(|&k| k != i) {
                let d = distance(&imgs[i], &imgs[k]);
                assert!(d > 0.0, "samples {i} and {k} are identical");
                if d < best.0 {
                    best = (d, k);
                }
            }
            hits += usize::from(ds.label(best.1) == ds.label(i));
        }
        let accuracy = hits as f64 / imgs.len() as f64;
        // Chance is 1/8.
        assert!(accuracy > 0.375, "raw-pixel 1-NN accuracy {accuracy}");
    }

    #[test]
    fn invalid_settings_name_the_field() {
        let cases = [
            (
                SyntheticGlyphsConfig {
                    modes: 0,
                    ..Default::default()
                },
                "modes",
            ),
            (
                SyntheticGlyphsConfig {
                    size: 4,
                    ..Default::default()
                },
                "size",
            ),
            (
                SyntheticGlyphsConfig {
                    jitter: GlyphJitter {
                        min_stroke_width: 0.2,
                        max_stroke_width: 0.1,
                        ..Default::default()
                    },
                    ..Default::default()
                },
                "jitter.min_stroke_width",
            ),
            (
                SyntheticGlyphsConfig {
                    jitter: GlyphJitter {
                        noise: f32::NAN,
                        ..Default::default()
                    },
                    ..Default::default()
                },
                "jitter.noise",
            ),
        ];
        for (cfg, field) in cases {
            let err = cfg.splits().err().unwrap();
            assert!(
                matches!(err, Error::InvalidConfig { field: f, .. } if f == field),
                "{err:?}"
            );
        }
    }
}
