//! Anti-aliased thick polylines on a small float canvas.

/// A square greyscale canvas, values in `[0, 1]`, pixel `(x, y)` at `y * size + x`, with pixel
/// centres at `(x + 0.5, y + 0.5)`.
pub(crate) struct Canvas {
    pub(crate) size: usize,
    pub(crate) pixels: Vec<f32>,
}

impl Canvas {
    pub(crate) fn new(size: usize) -> Self {
        Self {
            size,
            pixels: vec![0.0; size * size],
        }
    }

    /// Draws the segment `a`-`b` (pixel coordinates) with round caps and the given `width`.
    ///
    /// A pixel's ink is the segment's approximate coverage, `clamp(width/2 + 1/2 - d, 0, 1)` for
    /// a pixel centre at distance `d`; overlapping strokes keep the maximum, so joints do not
    /// darken. Only the pixels of the segment's bounding box are visited.
    pub(crate) fn segment(&mut self, a: [f32; 2], b: [f32; 2], width: f32) {
        let reach = width / 2.0 + 0.5;
        let n = self.size as f32;
        let lo = |v: f32| (v - reach).floor().clamp(0.0, n) as usize;
        let hi = |v: f32| (v + reach).ceil().clamp(0.0, n) as usize;
        let (x0, x1) = (lo(a[0].min(b[0])), hi(a[0].max(b[0])));
        let (y0, y1) = (lo(a[1].min(b[1])), hi(a[1].max(b[1])));
        let d = [b[0] - a[0], b[1] - a[1]];
        let len2 = d[0] * d[0] + d[1] * d[1];
        for y in y0..y1 {
            for x in x0..x1 {
                let p = [x as f32 + 0.5 - a[0], y as f32 + 0.5 - a[1]];
                let t = if len2 > 0.0 {
                    ((p[0] * d[0] + p[1] * d[1]) / len2).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let (ex, ey) = (p[0] - t * d[0], p[1] - t * d[1]);
                let ink = (reach - (ex * ex + ey * ey).sqrt()).clamp(0.0, 1.0);
                let px = &mut self.pixels[y * self.size + x];
                *px = px.max(ink);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_inks_its_pixels_fully_and_far_pixels_not_at_all() {
        let mut c = Canvas::new(10);
        c.segment([3.0, 5.5], [9.0, 5.5], 2.0);
        // Row 5's centres lie on the line; rows 4 and 6 one pixel away, at the stroke's edge
        // (half covered); row 3 is outside.
        assert_eq!(c.pixels[5 * 10 + 5], 1.0);
        assert!((c.pixels[4 * 10 + 5] - 0.5).abs() < 1e-6);
        assert!((c.pixels[6 * 10 + 5] - 0.5).abs() < 1e-6);
        assert_eq!(c.pixels[3 * 10 + 5], 0.0);
        // Round caps: ink up to half the width beyond the end point (x = 3), none further.
        assert_eq!(c.pixels[5 * 10 + 2], 1.0);
        assert_eq!(c.pixels[5 * 10 + 1], 0.0);
        // Out-of-canvas segments are clipped, not a panic.
        c.segment([-5.0, -5.0], [20.0, 30.0], 3.0);
    }
}
