//! Random streams derived from one user seed.
//!
//! Every random choice in dml-data draws from a ChaCha8 generator whose seed is a hash of the
//! user's seed, a purpose tag and the coordinates of the choice (epoch, batch, position, class,
//! sample...). A choice therefore depends only on those coordinates, never on what was drawn
//! before or on which thread drew it: a resumed run or a run with another worker count sees the
//! same numbers.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What a random stream is for; keeps streams of different purposes independent.
#[derive(Clone, Copy, Debug)]
#[repr(u64)]
pub(crate) enum Purpose {
    /// Batch composition of a sampler epoch.
    Sampler = 1,
    /// Augmentation of one sample in one batch position.
    Augment = 2,
    /// Shape of one glyph prototype.
    GlyphPrototype = 3,
    /// Jitter of one synthetic glyph sample.
    GlyphSample = 4,
}

/// SplitMix64's finaliser: a bijective mix whose output bits each depend on all input bits.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator for `purpose` at `coords`, under the user's `seed`.
pub(crate) fn rng(seed: u64, purpose: Purpose, coords: &[u64]) -> ChaCha8Rng {
    let mut h = mix(seed ^ mix(purpose as u64));
    for &c in coords {
        h = mix(h ^ c);
    }
    ChaCha8Rng::seed_from_u64(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn same_coordinates_same_stream_and_neighbours_differ() {
        let a: u64 = rng(7, Purpose::Augment, &[1, 2, 3]).random();
        let b: u64 = rng(7, Purpose::Augment, &[1, 2, 3]).random();
        assert_eq!(a, b);
        let others = [
            rng(8, Purpose::Augment, &[1, 2, 3]).random::<u64>(),
            rng(7, Purpose::Sampler, &[1, 2, 3]).random::<u64>(),
            rng(7, Purpose::Augment, &[1, 3, 2]).random::<u64>(),
            rng(7, Purpose::Augment, &[1, 2]).random::<u64>(),
        ];
        for o in others {
            assert_ne!(a, o);
        }
    }
}
