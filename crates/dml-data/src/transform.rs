//! The image pipeline: colour conversion, resize, crop / flip / affine jitter, normalisation.
//!
//! The first two steps are deterministic ([`Pipeline::prepare`], whose result the loader
//! caches); the rest draw from the augmentation generator ([`Pipeline::augment`]).
//!
//! Geometry is done in one resampling pass: every output pixel is mapped back through the
//! flip, the affine jitter and the crop offset into the resized image and sampled bilinearly
//! (edges clamped). Without jitter the mapping lands on pixel centres, so the pass is an
//! exact copy; the evaluation transform is the same pass with a centred crop and no jitter.

use std::borrow::Cow;

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, ImageBuffer, Pixel, RgbImage};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::Error;

/// Channels the pipeline produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ColorMode {
    /// One channel (luma).
    Gray,
    /// Three channels, red, green, blue.
    Rgb,
}

impl ColorMode {
    /// Number of channels.
    pub fn channels(self) -> usize {
        match self {
            ColorMode::Gray => 1,
            ColorMode::Rgb => 3,
        }
    }
}

/// Small random affine distortions applied around the crop's centre during training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AffineJitter {
    /// Largest rotation, degrees, either way.
    pub max_rotation_deg: f32,
    /// Largest relative scale change: scale is drawn from `[1 - s, 1 + s]`.
    pub max_scale: f32,
    /// Largest shift along each axis, as a fraction of the output side.
    pub max_shift: f32,
}

/// Settings of the image pipeline; [`PipelineConfig::init`] checks them.
///
/// `Default` is [`PipelineConfig::characters`]`(28)`, the setting of the built-in glyphs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Output channels.
    pub color: ColorMode,
    /// The image is resized (aspect kept, triangle filter) so its shorter side has this many
    /// pixels.
    pub resize: u32,
    /// Side of the square output, cut from the resized image; at most `resize`.
    pub crop: u32,
    /// Training crops are placed uniformly at random instead of centred.
    pub random_crop: bool,
    /// Training images are mirrored left-right with probability 1/2. Off for characters,
    /// whose mirror image is another character.
    pub horizontal_flip: bool,
    /// Training-time affine jitter, if any.
    pub affine: Option<AffineJitter>,
    /// Per-channel mean subtracted after scaling pixels to `[0, 1]`.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided by after subtracting the mean.
    pub std: Vec<f32>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self::characters(28)
    }
}

impl PipelineConfig {
    /// Greyscale characters or glyphs at `size` x `size`: resized whole, no crop, no flip, no
    /// jitter; pixels mapped to `[-1, 1]` (mean 0.5, std 0.5).
    pub fn characters(size: u32) -> Self {
        Self {
            color: ColorMode::Gray,
            resize: size,
            crop: size,
            random_crop: false,
            horizontal_flip: false,
            affine: None,
            mean: vec![0.5],
            std: vec![0.5],
        }
    }

    /// Natural photographs (CUB, Cars196, SOP, In-Shop) as in the deep metric learning
    /// literature: resize to 256, crop 227 (random when training), random horizontal flip,
    /// ImageNet mean and standard deviation.
    pub fn photos() -> Self {
        Self {
            color: ColorMode::Rgb,
            resize: 256,
            crop: 227,
            random_crop: true,
            horizontal_flip: true,
            affine: None,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
        }
    }

    /// Checks the settings and builds the pipeline.
    pub fn init(&self) -> Result<Pipeline, Error> {
        let c = self.color.channels();
        if self.crop == 0 || self.crop > 4096 {
            return Err(Error::config(
                "crop",
                format!("must be in 1..=4096, got {}", self.crop),
            ));
        }
        if self.resize < self.crop || self.resize > 8192 {
            return Err(Error::config(
                "resize",
                format!(
                    "must be at least crop ({}) and at most 8192, got {}",
                    self.crop, self.resize
                ),
            ));
        }
        if self.mean.len() != c || self.mean.iter().any(|m| !m.is_finite()) {
            return Err(Error::config(
                "mean",
                format!("needs {c} finite value(s), got {:?}", self.mean),
            ));
        }
        if self.std.len() != c || self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(Error::config(
                "std",
                format!("needs {c} positive value(s), got {:?}", self.std),
            ));
        }
        if let Some(a) = &self.affine {
            let ok = |v: f32, hi: f32| v.is_finite() && (0.0..=hi).contains(&v);
            if !ok(a.max_rotation_deg, 180.0) {
                return Err(Error::config(
                    "affine.max_rotation_deg",
                    "must be in [0, 180]",
                ));
            }
            if !ok(a.max_scale, 0.9) {
                return Err(Error::config("affine.max_scale", "must be in [0, 0.9]"));
            }
            if !ok(a.max_shift, 0.5) {
                return Err(Error::config("affine.max_shift", "must be in [0, 0.5]"));
            }
        }
        Ok(Pipeline {
            config: self.clone(),
        })
    }
}

/// A checked [`PipelineConfig`], ready to turn decoded images into normalised CHW floats.
#[derive(Clone, Debug)]
pub struct Pipeline {
    config: PipelineConfig,
}

/// An image after the deterministic half of a [`Pipeline`] ([`Pipeline::prepare`]): in the
/// pipeline's colour mode and resized, not yet cropped, jittered or normalised. The loader
/// keeps these in memory so each image is decoded once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedImage {
    width: u32,
    height: u32,
    color: ColorMode,
    /// Row-major, channels interleaved.
    pixels: Vec<u8>,
}

impl PreparedImage {
    /// `(width, height)` in pixels.
    pub fn dimensions(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Its colour mode.
    pub fn color(&self) -> ColorMode {
        self.color
    }

    /// Bytes its pixel buffer occupies on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.pixels.capacity()
    }
}

/// The image as 8-bit luma, borrowed when it already is.
fn luma(image: &DynamicImage) -> Cow<'_, GrayImage> {
    match image {
        DynamicImage::ImageLuma8(b) => Cow::Borrowed(b),
        other => Cow::Owned(other.to_luma8()),
    }
}

/// The image as 8-bit RGB, borrowed when it already is.
fn rgb(image: &DynamicImage) -> Cow<'_, RgbImage> {
    match image {
        DynamicImage::ImageRgb8(b) => Cow::Borrowed(b),
        other => Cow::Owned(other.to_rgb8()),
    }
}

/// Where output pixel centres come from in the resized image: `source = origin + x * dx + y * dy`.
struct Mapping {
    origin: [f32; 2],
    dx: [f32; 2],
    dy: [f32; 2],
}

impl Pipeline {
    /// The settings it was built from.
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// `[channels, height, width]` of one output image.
    pub fn output_shape(&self) -> [usize; 3] {
        let s = self.config.crop as usize;
        [self.config.color.channels(), s, s]
    }

    /// Number of floats of one output image.
    pub fn output_len(&self) -> usize {
        self.output_shape().iter().product()
    }

    /// Transforms `image` into `out` (CHW, [`Pipeline::output_len`] floats). With `augment`,
    /// the training transform draws its crop, flip and jitter from it; without, the
    /// deterministic evaluation transform (centred crop) runs.
    ///
    /// The same as [`Pipeline::prepare`] followed by [`Pipeline::augment`], bit for bit,
    /// without copying an image that is already in the right colour and size.
    ///
    /// # Panics
    /// If `out` does not have [`Pipeline::output_len`] elements.
    pub fn apply(&self, image: &DynamicImage, augment: Option<&mut ChaCha8Rng>, out: &mut [f32]) {
        assert_eq!(out.len(), self.output_len(), "output buffer size");
        match self.config.color {
            ColorMode::Gray => {
                let converted = luma(image);
                let img = self.resize(&converted);
                self.sample::<1>(img.as_raw(), img.dimensions(), augment, out);
            }
            ColorMode::Rgb => {
                let converted = rgb(image);
                let img = self.resize(&converted);
                self.sample::<3>(img.as_raw(), img.dimensions(), augment, out);
            }
        }
    }

    /// The deterministic first half of [`Pipeline::apply`]: colour conversion and resize. The
    /// result depends only on `image` and the settings, so it can be kept and reused; every
    /// random choice happens in [`Pipeline::augment`].
    pub fn prepare(&self, image: &DynamicImage) -> PreparedImage {
        let (width, height, pixels) = match self.config.color {
            ColorMode::Gray => {
                let img = self.resize(&luma(image)).into_owned();
                (img.width(), img.height(), img.into_raw())
            }
            ColorMode::Rgb => {
                let img = self.resize(&rgb(image)).into_owned();
                (img.width(), img.height(), img.into_raw())
            }
        };
        PreparedImage {
            width,
            height,
            color: self.config.color,
            pixels,
        }
    }

    /// The second half of [`Pipeline::apply`]: crop, flip and affine jitter drawn from
    /// `augment` (the centred crop without it), then normalisation, into `out`.
    ///
    /// # Panics
    /// If `out` does not have [`Pipeline::output_len`] elements, or `image` is in another
    /// colour mode or smaller than the crop (it should come from this pipeline's `prepare`).
    pub fn augment(
        &self,
        image: &PreparedImage,
        augment: Option<&mut ChaCha8Rng>,
        out: &mut [f32],
    ) {
        assert_eq!(out.len(), self.output_len(), "output buffer size");
        assert_eq!(image.color, self.config.color, "prepared image colour mode");
        let dims = (image.width, image.height);
        assert!(
            dims.0.min(dims.1) >= self.config.crop,
            "prepared image smaller than the crop"
        );
        match image.color {
            ColorMode::Gray => self.sample::<1>(&image.pixels, dims, augment, out),
            ColorMode::Rgb => self.sample::<3>(&image.pixels, dims, augment, out),
        }
    }

    /// Resamples the resized image `raw` (`w` x `h`, `C` interleaved channels) through the
    /// crop / flip / jitter mapping and normalises it into `out`.
    fn sample<const C: usize>(
        &self,
        raw: &[u8],
        (w, h): (u32, u32),
        augment: Option<&mut ChaCha8Rng>,
        out: &mut [f32],
    ) {
        let map = self.mapping(w, h, augment);
        let s = self.config.crop as usize;
        let (wi, hi) = (w as i64, h as i64);
        let at = |x: i64, y: i64, ch: usize| {
            raw[((y.clamp(0, hi - 1) * wi + x.clamp(0, wi - 1)) as usize) * C + ch] as f32
        };
        let scale: Vec<f32> = self
            .config
            .std
            .iter()
            .map(|sd| 1.0 / (255.0 * sd))
            .collect();
        let shift: Vec<f32> = self
            .config
            .mean
            .iter()
            .zip(&self.config.std)
            .map(|(m, sd)| m / sd)
            .collect();
        for y in 0..s {
            for x in 0..s {
                let (xf, yf) = (x as f32, y as f32);
                let sx = map.origin[0] + xf * map.dx[0] + yf * map.dy[0];
                let sy = map.origin[1] + xf * map.dx[1] + yf * map.dy[1];
                let (x0, y0) = (sx.floor(), sy.floor());
                let (fx, fy) = (sx - x0, sy - y0);
                let (x0, y0) = (x0 as i64, y0 as i64);
                for ch in 0..C {
                    let top = at(x0, y0, ch) * (1.0 - fx) + at(x0 + 1, y0, ch) * fx;
                    let bottom = at(x0, y0 + 1, ch) * (1.0 - fx) + at(x0 + 1, y0 + 1, ch) * fx;
                    let v = top * (1.0 - fy) + bottom * fy;
                    out[ch * s * s + y * s + x] = v * scale[ch] - shift[ch];
                }
            }
        }
    }

    /// The image resized so its shorter side is `resize` (borrowed when it already is).
    fn resize<'a, P>(&self, img: &'a ImageBuffer<P, Vec<u8>>) -> Cow<'a, ImageBuffer<P, Vec<u8>>>
    where
        P: Pixel<Subpixel = u8> + 'static,
    {
        let (w, h) = img.dimensions();
        let r = self.config.resize;
        let (nw, nh) = if w <= h {
            (r, ((h as f64 * r as f64 / w as f64).round() as u32).max(r))
        } else {
            (((w as f64 * r as f64 / h as f64).round() as u32).max(r), r)
        };
        if (nw, nh) == (w, h) {
            Cow::Borrowed(img)
        } else {
            Cow::Owned(image::imageops::resize(img, nw, nh, FilterType::Triangle))
        }
    }

    /// The output-to-source mapping for a `w` x `h` resized image: crop placement, flip and
    /// affine jitter drawn from `augment`, or the centred crop without it.
    fn mapping(&self, w: u32, h: u32, augment: Option<&mut ChaCha8Rng>) -> Mapping {
        let s = self.config.crop;
        let half = s as f32 / 2.0;
        let (mut left, mut top) = ((w - s) / 2, (h - s) / 2);
        let (mut flip, mut angle, mut scale, mut shift) = (false, 0.0f32, 1.0f32, [0.0f32; 2]);
        if let Some(rng) = augment {
            if self.config.random_crop {
                left = rng.random_range(0..=w - s);
                top = rng.random_range(0..=h - s);
            }
            if self.config.horizontal_flip {
                flip = rng.random_bool(0.5);
            }
            if let Some(a) = &self.config.affine {
                angle = rng.random_range(-1.0..=1.0f32) * a.max_rotation_deg.to_radians();
                scale = 1.0 + rng.random_range(-1.0..=1.0f32) * a.max_scale;
                shift = [
                    rng.random_range(-1.0..=1.0f32) * a.max_shift * s as f32,
                    rng.random_range(-1.0..=1.0f32) * a.max_shift * s as f32,
                ];
            }
        }
        // Output pixel centre (x + 0.5, y + 0.5), relative to the crop centre: u. The output
        // shows the source scaled by `scale`, rotated by `angle` and shifted by `shift`, so the
        // source point is R(-angle) (u - shift) / scale, mirrored first when flipping.
        let (sin, cos) = angle.sin_cos();
        let f = if flip { -1.0 } else { 1.0 };
        let inv = |u: [f32; 2]| -> [f32; 2] {
            let (ux, uy) = ((u[0] - shift[0]) / scale, (u[1] - shift[1]) / scale);
            [f * (cos * ux + sin * uy), -sin * ux + cos * uy]
        };
        let centre = [left as f32 + half, top as f32 + half];
        let o = inv([0.5 - half, 0.5 - half]);
        let ex = inv([1.5 - half, 0.5 - half]);
        let ey = inv([0.5 - half, 1.5 - half]);
        Mapping {
            // Source pixel (i, j) has its centre at (i + 0.5, j + 0.5): subtract the 0.5 back.
            origin: [centre[0] + o[0] - 0.5, centre[1] + o[1] - 0.5],
            dx: [ex[0] - o[0], ex[1] - o[1]],
            dy: [ey[0] - o[0], ey[1] - o[1]],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn gradient(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageLuma8(GrayImage::from_fn(w, h, |x, y| {
            image::Luma([(x * 10 + y) as u8])
        }))
    }

    fn raw_config(resize: u32, crop: u32) -> PipelineConfig {
        PipelineConfig {
            resize,
            crop,
            mean: vec![0.0],
            std: vec![1.0 / 255.0],
            ..PipelineConfig::characters(crop)
        }
    }

    #[test]
    fn eval_transform_is_an_exact_centre_crop() {
        let p = raw_config(10, 6).init().unwrap();
        let mut out = vec![0.0; 36];
        p.apply(&gradient(10, 10), None, &mut out);
        for y in 0..6 {
            for x in 0..6 {
                let expected = ((x + 2) * 10 + (y + 2)) as f32;
                assert!(
                    (out[y * 6 + x] - expected).abs() < 1e-3,
                    "({x},{y}) {} vs {expected}",
                    out[y * 6 + x]
                );
            }
        }
    }

    #[test]
    fn flip_mirrors_and_random_crops_stay_inside() {
        let cfg = PipelineConfig {
            horizontal_flip: true,
            random_crop: true,
            ..raw_config(10, 6)
        };
        let p = cfg.init().unwrap();
        let img = gradient(10, 10);
        let (mut flipped, mut plain) = (0, 0);
        for seed in 0..40 {
            let mut out = vec![0.0; 36];
            p.apply(&img, Some(&mut ChaCha8Rng::seed_from_u64(seed)), &mut out);
            // Columns run in steps of 10 (both ways when flipped), rows in steps of 1.
            let step = out[1] - out[0];
            assert!((step.abs() - 10.0).abs() < 1e-3, "{step}");
            if step < 0.0 {
                flipped += 1
            } else {
                plain += 1
            }
            assert!((out[6] - out[0] - 1.0).abs() < 1e-3);
            let left = if step < 0.0 {
                out[5] / 10.0
            } else {
                out[0] / 10.0
            };
            assert!((0.0..=4.0).contains(&left.floor()), "{left}");
        }
        assert!(flipped > 5 && plain > 5, "{flipped} {plain}");
    }

    #[test]
    fn resize_keeps_aspect_and_normalises_rgb_per_channel() {
        let cfg = PipelineConfig {
            color: ColorMode::Rgb,
            mean: vec![0.0, 0.5, 1.0],
            std: vec![1.0, 0.5, 0.25],
            ..PipelineConfig::characters(8)
        };
        let p = cfg.init().unwrap();
        assert_eq!(p.output_shape(), [3, 8, 8]);
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(32, 16, image::Rgb([255, 0, 51])));
        let mut out = vec![0.0; 3 * 64];
        p.apply(&img, None, &mut out);
        for (ch, expected) in [(0usize, 1.0f32), (1, -1.0), (2, (0.2 - 1.0) / 0.25)] {
            assert!(
                out[ch * 64..(ch + 1) * 64]
                    .iter()
                    .all(|v| (v - expected).abs() < 1e-4),
                "channel {ch}"
            );
        }
    }

    #[test]
    fn affine_jitter_is_seeded_and_keeps_a_constant_image_constant() {
        let cfg = PipelineConfig {
            affine: Some(AffineJitter {
                max_rotation_deg: 15.0,
                max_scale: 0.1,
                max_shift: 0.1,
            }),
            ..PipelineConfig::characters(16)
        };
        let p = cfg.init().unwrap();
        let run = |img: &DynamicImage, seed| {
            let mut out = vec![0.0; 256];
            p.apply(img, Some(&mut ChaCha8Rng::seed_from_u64(seed)), &mut out);
            out
        };
        let img = gradient(16, 16);
        assert_eq!(run(&img, 3), run(&img, 3));
        assert_ne!(run(&img, 3), run(&img, 4));
        let flat = DynamicImage::ImageLuma8(GrayImage::from_pixel(16, 16, image::Luma([255])));
        assert!(run(&flat, 5).iter().all(|v| (v - 1.0).abs() < 1e-4));
    }

    #[test]
    fn prepare_then_augment_is_apply_bit_for_bit() {
        let jitter = Some(AffineJitter {
            max_rotation_deg: 12.0,
            max_scale: 0.1,
            max_shift: 0.1,
        });
        let rgb_image = DynamicImage::ImageRgb8(RgbImage::from_fn(37, 23, |x, y| {
            image::Rgb([(x * 7) as u8, (y * 11) as u8, (x * y) as u8])
        }));
        let cases = [
            // Already the right size and colour: `apply` borrows, `prepare` copies.
            (
                PipelineConfig {
                    affine: jitter.clone(),
                    ..PipelineConfig::characters(16)
                },
                gradient(16, 16),
            ),
            // Grey from RGB, downscaled, random crop and jitter.
            (
                PipelineConfig {
                    affine: jitter,
                    random_crop: true,
                    resize: 20,
                    ..PipelineConfig::characters(14)
                },
                rgb_image.clone(),
            ),
            // RGB photo setting on a non-square image: aspect kept, crop and flip.
            (
                PipelineConfig {
                    resize: 19,
                    crop: 15,
                    ..PipelineConfig::photos()
                },
                rgb_image,
            ),
        ];
        for (cfg, img) in cases {
            let p = cfg.init().unwrap();
            let prepared = p.prepare(&img);
            assert_eq!(prepared.color(), cfg.color);
            let (w, h) = prepared.dimensions();
            assert_eq!(w.min(h), cfg.resize);
            assert_eq!(
                prepared.heap_bytes(),
                (w * h) as usize * cfg.color.channels()
            );
            let n = p.output_len();
            for seed in [None, Some(1), Some(2), Some(3)] {
                let rng = || seed.map(ChaCha8Rng::seed_from_u64);
                let (mut direct, mut split) = (vec![0.0; n], vec![0.0; n]);
                p.apply(&img, rng().as_mut(), &mut direct);
                p.augment(&prepared, rng().as_mut(), &mut split);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&direct), bits(&split), "{cfg:?} seed {seed:?}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "colour mode")]
    fn augment_rejects_an_image_prepared_in_another_colour_mode() {
        let gray = PipelineConfig::characters(8).init().unwrap();
        let rgb = PipelineConfig {
            color: ColorMode::Rgb,
            mean: vec![0.5; 3],
            std: vec![0.5; 3],
            ..PipelineConfig::characters(8)
        }
        .init()
        .unwrap();
        let prepared = gray.prepare(&gradient(8, 8));
        rgb.augment(&prepared, None, &mut vec![0.0; 3 * 64]);
    }

    #[test]
    fn invalid_settings_name_the_field() {
        let bad = [
            PipelineConfig {
                crop: 40,
                ..PipelineConfig::characters(28)
            },
            PipelineConfig {
                mean: vec![0.5, 0.5],
                ..PipelineConfig::characters(28)
            },
            PipelineConfig {
                std: vec![0.0],
                ..PipelineConfig::characters(28)
            },
            PipelineConfig {
                affine: Some(AffineJitter {
                    max_rotation_deg: 10.0,
                    max_scale: 2.0,
                    max_shift: 0.1,
                }),
                ..PipelineConfig::characters(28)
            },
        ];
        let fields = ["resize", "mean", "std", "affine.max_scale"];
        for (cfg, field) in bad.iter().zip(fields) {
            let err = cfg.init().unwrap_err();
            assert!(
                matches!(err, Error::InvalidConfig { field: f, .. } if f == field),
                "{err:?}"
            );
        }
        assert!(PipelineConfig::photos().init().is_ok());
    }
}
