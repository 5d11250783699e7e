//! Properties of the encoder on random inputs (issue 3): a ByteBudget message never exceeds
//! its budget, and no mass is lost except what clipping counts.

mod encoder_common;

use encoder_common::{Driver, Rng};
use gradcast_core::ConfigError;
use gradcast_core::Error;
use gradcast_core::encoder::{
    Adaptive, ByteBudget, Clipping, Encoder, EncoderConfig, Fixed, Policy, Segment, TargetSparsity,
    Warmup,
};
use gradcast_core::packet::Messages;
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(128),
        ..ProptestConfig::default()
    }
}

/// A round's update: a random mix of scales, spikes, exact zeros and subnormals.
fn random_update(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    let style = rng.next_u64() % 4;
    (0..n)
        .map(|_| match (style, rng.next_u64() % 50) {
            (0, _) => (rng.normal() * scale as f64) as f32,
            (1, 0) => (rng.normal() * 1e3 * scale as f64) as f32,
            (1, _) => (rng.normal() * scale as f64) as f32,
            (2, k) if k < 40 => 0.0,
            (2, _) => (rng.normal() * scale as f64) as f32,
            (_, 0) => f32::from_bits(1 + (rng.next_u64() % 1000) as u32),
            _ => (rng.unit() * scale as f64) as f32,
        })
        .collect()
}

fn warmup_strategy() -> impl Strategy<Value = Warmup> {
    prop_oneof![
        Just(Warmup::None),
        (1u32..4).prop_map(|rounds| Warmup::Dense { rounds }),
        (1u32..4).prop_map(|rounds| Warmup::Bitmap { rounds }),
        (1u32..6, 0.01f64..1.0, 0.0001f64..0.1).prop_map(|(rounds, start, end)| Warmup::Ramp {
            rounds,
            start,
            end
        }),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Whatever the residual holds, every ByteBudget message fits its budget, in every round,
    /// warm-up included (or the encoder refuses a warm-up that cannot fit).
    #[test]
    fn byte_budget_is_never_exceeded(
        n in 1usize..3000,
        extra in 0usize..900,
        rounds in 1u64..25,
        scale_exp in -8i32..4,
        warmup in warmup_strategy(),
        tau0_exp in -8i32..2,
        seed in any::<u64>(),
    ) {
        let budget = 48 + extra;
        let tau0 = 10f64.powi(tau0_exp);
        let policy: Policy = ByteBudget::with_params(budget, tau0, 1.0 / 16.0).unwrap().into();
        let cfg = EncoderConfig { warmup, ..EncoderConfig::default() };
        let enc: Encoder = match Encoder::new(n, policy, cfg) {
            Ok(e) => e,
            Err(Error::Config(ConfigError::WarmupOverBudget { needed, budget: b, .. })) => {
                prop_assert!(needed > b);
                return Ok(());
            }
            Err(e) => return Err(TestCaseError::fail(format!("{e:?}"))),
        };
        prop_assert!(enc.max_packet_bytes() <= budget);
        let mut d = Driver::new(enc);
        let mut rng = Rng::new(seed);
        let scale = 10f32.powi(scale_exp);
        for _ in 0..rounds {
            let u = random_update(&mut rng, n, scale);
            let (stats, packet) = d.step(&u);
            prop_assert!(stats.message_bytes <= budget, "{} > {budget}", stats.message_bytes);
            prop_assert_eq!(packet.len(), stats.message_bytes);
        }
    }

    /// The same per segment of a segmented encoder with mixed policies.
    #[test]
    fn segment_budgets_are_never_exceeded(
        lens in prop::collection::vec(1usize..800, 1..4),
        extras in prop::collection::vec(0usize..300, 4),
        rounds in 1u64..15,
        seed in any::<u64>(),
    ) {
        let segs: Vec<Segment<Policy>> = lens
            .iter()
            .enumerate()
            .map(|(k, &len)| Segment {
                id: k as u16,
                len,
                policy: ByteBudget::new(48 + extras[k]).unwrap().into(),
            })
            .collect();
        let enc: Encoder<Policy, 4> = Encoder::segmented(EncoderConfig::default(), segs).unwrap();
        let n = enc.n();
        let mut d = Driver::new(enc);
        let mut rng = Rng::new(seed);
        for _ in 0..rounds {
            let (_, packet) = d.step(&random_update(&mut rng, n, 1e-2));
            let mut count = 0;
            for m in Messages::new(&packet) {
                let m = m.unwrap();
                let k = m.header().segment as usize;
                prop_assert!(m.as_bytes().len() <= 48 + extras[k]);
                count += 1;
            }
            prop_assert_eq!(count, lens.len());
        }
    }

    /// Sum of decoded messages + residual == sum of updates, up to f32 rounding, except for
    /// the clipped mass, which the statistics count.
    #[test]
    fn no_mass_lost_except_counted_clipping(
        n in 1usize..1500,
        policy_pick in 0u8..4,
        clip in prop::option::of((1.0f32..6.0, 1u32..6)),
        warmup in warmup_strategy(),
        rounds in 1u64..30,
        seed in any::<u64>(),
    ) {
        let policy: Policy = match policy_pick {
            0 => Fixed::new(1e-3).unwrap().into(),
            1 => Adaptive::default().into(),
            2 => TargetSparsity::default().into(),
            _ => ByteBudget::new(48 + 4 * 16).unwrap().into(),
        };
        let cfg = EncoderConfig {
            clipping: clip.map(|(factor, every)| Clipping { factor, every }),
            warmup,
            residual_stats: true,
        };
        let enc: Encoder = match Encoder::new(n, policy, cfg) {
            Ok(e) => e,
            Err(Error::Config(ConfigError::WarmupOverBudget { .. })) => return Ok(()),
            Err(e) => return Err(TestCaseError::fail(format!("{e:?}"))),
        };
        let mut d = Driver::new(enc);
        let mut rng = Rng::new(seed);
        let mut abs = vec![0.0f64; n];
        for _ in 0..rounds {
            let u = random_update(&mut rng, n, 1e-3);
            for (a, v) in abs.iter_mut().zip(&u) {
                *a += v.abs() as f64;
            }
            d.step(&u);
        }
        let clipped = d.encoder.cumulative().clipped_mass;
        let mut missing_abs = 0.0;
        let mut tol_total = 0.0;
        for (i, m) in d.missing().iter().enumerate() {
            // Each round rounds twice (the add and the debit), each time by at most half an
            // ulp of a value no larger than this bound.
            let bound = abs[i] + d.decoded[i].abs() + d.residual[i].abs() as f64;
            let tol = (rounds + 1) as f64 * bound * 2f64.powi(-23) + 1e-40;
            tol_total += tol;
            missing_abs += m.abs();
            if clip.is_none() {
                prop_assert!(m.abs() <= tol, "element {i}: lost {m}, tol {tol}");
            }
        }
        // What went missing is at most what clipping counted.
        prop_assert!(
            missing_abs <= clipped + tol_total,
            "missing {missing_abs} > clipped {clipped}"
        );
        if clip.is_none() {
            prop_assert_eq!(clipped, 0.0);
        }
    }
}
