//! The deterministic pseudo-random update stream, shared by the firmware, the host test and the
//! build script (which includes this file by path), so all three see the same values bit for
//! bit.
//!
//! It also holds the numbers the scenario and the reference messages are built from.
//!
//! Our own SplitMix64 rather than a crate's: the stream is part of the test's contract (the
//! firmware's messages are compared byte for byte with the host's), so the exact output
//! sequence and the integer-to-float conversion must never change with a dependency update,
//! and the file must compile in the build script without dependencies.

/// The vector's element count N: the firmware's residual and decode target.
pub const N: usize = 4096;
/// The scale of the update values (`SplitMix64::update_value`).
pub const SCALE: f32 = 1e-3;
/// The seed of the firmware's update stream.
pub const SEED: u64 = 0x6772_6164_6361_7374;
/// The seed of the reference messages the firmware decodes (mixed with each sender's id).
pub const REFERENCE_SEED: u64 = 0x5EED_0FDE_C0DE;

/// SplitMix64 (Steele, Lea and Flood, 2014): 64 bits of state, one multiply-xorshift mix per
/// output; the same seed gives the same sequence on every platform.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub const fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// One gradient-like update value: uniform in `[-scale, scale)` with 24 random bits; one
    /// value in 64 is 16 times larger and one in 4096 is 256 times larger (gradients are
    /// heavy-tailed, and the large ones make the encoder's clipping act).
    ///
    /// Every step is an exactly specified IEEE-754 `f32` operation (a 24-bit integer to `f32`
    /// and a power-of-two scaling are exact; the one multiplication by `scale` is correctly
    /// rounded), so the Cortex-M4F's FPU and the host give the same bits.
    pub fn update_value(&mut self, scale: f32) -> f32 {
        let r = self.next_u64();
        let u = (r >> 40) as f32 * (1.0 / 16_777_216.0);
        let v = (2.0 * u - 1.0) * scale;
        if r & 4095 == 0 {
            v * 256.0
        } else if r & 63 == 0 {
            v * 16.0
        } else {
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_published_sequence() {
        // The first outputs for seed 1234567 of the reference C implementation
        // (Vigna's splitmix64.c).
        let mut g = SplitMix64::new(1_234_567);
        assert_eq!(g.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(g.next_u64(), 3_203_168_211_198_807_973);
        assert_eq!(g.next_u64(), 9_817_491_932_198_370_423);
    }

    #[test]
    fn update_values_stay_in_range_and_have_outliers() {
        let mut g = SplitMix64::new(9);
        let scale = 1e-3f32;
        let (mut outliers, mut huge) = (0, 0);
        for _ in 0..100_000 {
            let v = g.update_value(scale);
            assert!(v.abs() <= 256.0 * scale, "{v}");
            if v.abs() > scale {
                outliers += 1;
            }
            if v.abs() > 16.0 * scale {
                huge += 1;
            }
        }
        // About 1 in 64 values is scaled up (most of them leave [-scale, scale)), and about
        // 1 in 4096 by 256 (most of them leave [-16 scale, 16 scale)).
        assert!((1_000..1_600).contains(&outliers), "{outliers}");
        assert!((10..30).contains(&huge), "{huge}");
    }
}
