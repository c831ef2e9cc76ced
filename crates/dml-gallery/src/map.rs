//! The 2-D embedding map: dml's seeded Barnes-Hut t-SNE ([`dml_experiment::tsne::embed_2d`])
//! of at most a given number of reference rows, scaled into the unit square.

use dml_eval::Embeddings;
use dml_experiment::tsne::{TsneConfig, embed_2d};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::Result;

/// The fewest points t-SNE embeds; smaller sets are laid out on a circle.
const TSNE_MIN_POINTS: usize = 4;

/// One point of the map.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct MapPoint {
    /// Position in `[0, 1]`, both axes scaled alike (the map keeps its aspect).
    pub x: f32,
    /// Position in `[0, 1]`.
    pub y: f32,
    /// The reference row it shows.
    pub row: usize,
}

/// The rows the map shows: all of them up to `max_points`, else `max_points` distinct rows
/// drawn uniformly with `seed` (each row equally likely, so every class keeps its share), in
/// row order.
pub(crate) fn choose_rows(rows: usize, max_points: usize, seed: u64) -> Vec<usize> {
    if rows <= max_points {
        return (0..rows).collect();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut chosen = rand::seq::index::sample(&mut rng, rows, max_points).into_vec();
    chosen.sort_unstable();
    chosen
}

/// The map of `rows` of `embeddings`: t-SNE with `iterations` gradient steps seeded by `seed`
/// (default perplexity and accuracy), then shifted and scaled into the unit square.
///
/// # Errors
/// Those of [`embed_2d`] (non-finite values cannot reach it: [`Embeddings`] refuses them).
pub(crate) fn layout(
    embeddings: &Embeddings,
    rows: &[usize],
    iterations: usize,
    seed: u64,
) -> Result<Vec<MapPoint>> {
    let positions: Vec<[f32; 2]> = if rows.len() < TSNE_MIN_POINTS {
        (0..rows.len())
            .map(|i| {
                let angle = std::f32::consts::TAU * i as f32 / rows.len() as f32;
                [angle.cos(), angle.sin()]
            })
            .collect()
    } else {
        let vectors: Vec<f32> = rows
            .iter()
            .flat_map(|&r| embeddings.row(r).iter().copied())
            .collect();
        let config = TsneConfig {
            iterations,
            seed,
            ..TsneConfig::default()
        };
        embed_2d(&vectors, embeddings.dim(), &config)?
    };
    Ok(scale_to_unit(&positions)
        .into_iter()
        .zip(rows)
        .map(|([x, y], &row)| MapPoint { x, y, row })
        .collect())
}

/// `points` shifted and scaled alike on both axes so that they span `[0, 1]` on the longer
/// side and are centred on the shorter; a single position goes to the centre.
fn scale_to_unit(points: &[[f32; 2]]) -> Vec<[f32; 2]> {
    let bound = |axis: usize| {
        points
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), p| {
                (lo.min(p[axis]), hi.max(p[axis]))
            })
    };
    let (bx, by) = (bound(0), bound(1));
    let span = (bx.1 - bx.0).max(by.1 - by.0);
    if !(span > 0.0 && span.is_finite()) {
        return vec![[0.5, 0.5]; points.len()];
    }
    let offset = |(lo, hi): (f32, f32)| (span - (hi - lo)) / 2.0 - lo;
    let (ox, oy) = (offset(bx), offset(by));
    points
        .iter()
        .map(|p| [(p[0] + ox) / span, (p[1] + oy) / span])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_all_or_a_seeded_sorted_subset() {
        assert_eq!(choose_rows(5, 10, 0), [0, 1, 2, 3, 4]);
        let a = choose_rows(1000, 100, 3);
        assert_eq!(a.len(), 100);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(a, choose_rows(1000, 100, 3));
        assert_ne!(a, choose_rows(1000, 100, 4));
        assert!(choose_rows(10, 0, 0).is_empty());
    }

    #[test]
    fn positions_fill_the_unit_square_keeping_the_aspect() {
        let scaled = scale_to_unit(&[[0.0, 0.0], [4.0, 1.0], [2.0, 2.0]]);
        assert_eq!(scaled, [[0.0, 0.25], [1.0, 0.5], [0.5, 0.75]]);
        assert_eq!(scale_to_unit(&[[3.0, 3.0]]), [[0.5, 0.5]]);
    }

    #[test]
    fn clusters_stay_apart_and_small_sets_still_get_a_map() {
        // Two tight clusters in 3-D.
        let mut values = Vec::new();
        for i in 0..40 {
            let centre = if i < 20 { 0.0 } else { 50.0 };
            values.extend([centre + (i % 5) as f32 * 0.1, centre, (i % 3) as f32 * 0.1]);
        }
        let e = Embeddings::new(values, 3).unwrap();
        let rows: Vec<usize> = (0..40).collect();
        let points = layout(&e, &rows, 300, 1).unwrap();
        assert_eq!(points, layout(&e, &rows, 300, 1).unwrap(), "seeded");
        assert!(
            points
                .iter()
                .all(|p| (0.0..=1.0).contains(&p.x) && (0.0..=1.0).contains(&p.y))
        );
        let mean = |r: std::ops::Range<usize>| {
            let n = r.len() as f32;
            let (x, y) = r.fold((0.0, 0.0), |(x, y), i| (x + points[i].x, y + points[i].y));
            (x / n, y / n)
        };
        let (a, b) = (mean(0..20), mean(20..40));
        assert!((a.0 - b.0).hypot(a.1 - b.1) > 0.3, "{a:?} {b:?}");
        let few = layout(&e, &[3, 30], 300, 1).unwrap();
        assert_eq!(few.iter().map(|p| p.row).collect::<Vec<_>>(), [3, 30]);
    }
}
