//! Threshold policies: DL4J's trajectories (the rules and defaults of `docs/DL4J.md`,
//! section 5), the byte budget's limits, the reducer, and configuration validation.

use gradcast_core::ConfigError;
use gradcast_core::codec::EncodingMode;
use gradcast_core::encoder::policy::{DEFAULT_DECAY, kind};
use gradcast_core::encoder::{
    Adaptive, ByteBudget, Fixed, Limits, Observation, Policy, PolicyReducer, PolicyState,
    TargetSparsity, ThresholdPolicy,
};
use gradcast_core::wire::Encoding;
use gradcast_core::{Classify, ErrorKind};

/// An observation with sparsity `entries / n`.
fn obs(tau: f32, entries: u64, n: u64, encoding: Encoding) -> Observation {
    Observation {
        tau,
        n,
        entries,
        candidates: entries,
        encoding,
        bytes: 0,
        truncated: false,
    }
}

fn rel(a: f64, b: f64) -> f64 {
    ((a - b) / b).abs()
}

#[test]
fn adaptive_trajectory_check_11() {
    // Sparsity stuck at 1e-5 (below s_min = 1e-4): after the first call (tau0) and 20
    // adaptation calls, tau is tau0 / 2 within 1e-12 relative.
    let mut p = Adaptive::default();
    assert_eq!(p.threshold(), 1e-3f32);
    assert_eq!(p.tau(), 1e-3);
    for _ in 0..20 {
        p.observe(&obs(p.tau() as f32, 1, 100_000, Encoding::Sparse));
        let t = p.threshold();
        assert_eq!(
            t,
            p.tau() as f32,
            "emitted tau is the f64 state rounded to f32"
        );
    }
    assert!(rel(p.tau(), 0.5e-3) < 1e-12, "tau = {}", p.tau());
    // The javadoc's other claim: x100 in 132 steps (to 2%).
    for _ in 0..132 {
        p.observe(&obs(p.tau() as f32, 1, 100_000, Encoding::Sparse));
        p.threshold();
    }
    assert!(rel(p.tau(), 0.5e-5) < 0.04, "tau = {}", p.tau());
}

#[test]
fn adaptive_follows_the_dl4j_rule_step_by_step() {
    // A scripted sequence of sparsities, against the rule computed here in f64.
    let script = [
        5e-3, 5e-2, 5e-2, 1e-4, 1e-2, 1.5e-2, 0.0, 9e-5, 1.0, 2e-3, 1e-6, 1e-6,
    ];
    let mut p = Adaptive::new(2e-3, 1e-4, 1e-2, 0.9).unwrap();
    let mut expected = 2e-3f64;
    assert_eq!(p.threshold(), 2e-3f32);
    for &s in &script {
        let n = 1_000_000u64;
        let entries = (s * n as f64).round() as u64;
        p.observe(&obs(expected as f32, entries, n, Encoding::Sparse));
        let s = entries as f64 / n as f64;
        if s < 1e-4 {
            expected *= 0.9;
        } else if s > 1e-2 {
            expected /= 0.9;
        }
        let t = p.threshold();
        assert_eq!(p.tau(), expected);
        assert_eq!(t, expected as f32);
    }
}

#[test]
fn adaptive_counts_a_bitmap_round_at_its_true_density() {
    // DL4J takes 1/16 for every bitmap round and so raises tau; ours reads entries / N.
    let mut p = Adaptive::default();
    p.threshold();
    // A bitmap message carrying 0.5% of the elements: inside the band, tau stays.
    p.observe(&obs(1e-3, 50, 10_000, Encoding::Bitmap));
    assert_eq!(p.threshold(), 1e-3);
    assert_eq!(p.sparsity(), 5e-3);
    // A sparse message whose header would have inflated DL4J's ratio: still entries / N.
    p.observe(&obs(1e-3, 1, 1000, Encoding::Sparse));
    assert_eq!(p.sparsity(), 1e-3);
}

#[test]
fn adaptive_validation() {
    let bad = [
        (0.0, 1e-4, 1e-2, DEFAULT_DECAY, "adaptive.tau0"),
        (-1.0, 1e-4, 1e-2, DEFAULT_DECAY, "adaptive.tau0"),
        (f64::NAN, 1e-4, 1e-2, DEFAULT_DECAY, "adaptive.tau0"),
        (f64::INFINITY, 1e-4, 1e-2, DEFAULT_DECAY, "adaptive.tau0"),
        (1e-3, 0.0, 1e-2, DEFAULT_DECAY, "adaptive.min_sparsity"),
        (1e-3, f64::NAN, 1e-2, DEFAULT_DECAY, "adaptive.min_sparsity"),
        (1e-3, 1e-2, 1e-3, DEFAULT_DECAY, "adaptive.max_sparsity"),
        (1e-3, 1e-4, 1e-2, 0.49, "adaptive.decay"),
        (1e-3, 1e-4, 1e-2, 1.0, "adaptive.decay"),
        (1e-3, 1e-4, 1e-2, f64::NAN, "adaptive.decay"),
    ];
    for (tau0, lo, hi, d, field) in bad {
        match Adaptive::new(tau0, lo, hi, d) {
            Err(e @ ConfigError::InvalidValue { field: f, .. }) => {
                assert_eq!(f, field);
                assert_eq!(e.kind(), ErrorKind::InvalidArgument);
                assert!(e.to_string().contains(field));
            }
            other => panic!("{tau0} {lo} {hi} {d}: {other:?}"),
        }
    }
    // The band's edges are allowed: s_min == s_max, d == 0.5.
    assert!(Adaptive::new(1e-3, 1e-3, 1e-3, 0.5).is_ok());
}

#[test]
fn target_sparsity_trajectory() {
    let mut p = TargetSparsity::default();
    assert_eq!(p.threshold(), 1e-4f32);
    let n = 1_000_000;
    // Below the target: tau * d; above: tau / d; equal: kept.
    p.observe(&obs(1e-4, 10, n, Encoding::Sparse)); // 1e-5 < 1e-3
    p.threshold();
    assert_eq!(p.tau(), 1e-4 * DEFAULT_DECAY);
    p.observe(&obs(1e-4, 5000, n, Encoding::Sparse)); // 5e-3 > 1e-3
    p.threshold();
    assert_eq!(p.tau(), 1e-4 * DEFAULT_DECAY / DEFAULT_DECAY);
    p.observe(&obs(1e-4, 1000, n, Encoding::Sparse)); // == 1e-3
    let before = p.tau();
    p.threshold();
    assert_eq!(p.tau(), before);
    // Twenty steps too dense double tau.
    for _ in 0..20 {
        p.observe(&obs(1e-4, 2000, n, Encoding::Sparse));
        p.threshold();
    }
    assert!(rel(p.tau(), 2.0 * before) < 1e-12);
}

#[test]
fn target_sparsity_validation() {
    for t in [0.0, -1e-3, 1.0 / 16.0, 0.1, f64::NAN] {
        assert!(
            matches!(
                TargetSparsity::new(1e-4, t, DEFAULT_DECAY),
                Err(ConfigError::InvalidValue {
                    field: "target_sparsity.target",
                    ..
                })
            ),
            "target {t}"
        );
    }
    assert!(TargetSparsity::new(1e-4, 1.0 / 16.0 - 1e-9, DEFAULT_DECAY).is_ok());
    assert!(TargetSparsity::new(0.0, 1e-3, DEFAULT_DECAY).is_err());
    assert!(TargetSparsity::new(1e-4, 1e-3, 0.3).is_err());
}

#[test]
fn fixed_is_constant() {
    let mut p = Fixed::new(0.25).unwrap();
    for e in [0, 10, 10_000] {
        assert_eq!(p.threshold(), 0.25);
        p.observe(&obs(0.25, e, 10_000, Encoding::Sparse));
    }
    assert_eq!(p.state().sparsity, 1.0);
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert!(matches!(
            Fixed::new(bad),
            Err(ConfigError::InvalidValue { .. })
        ));
    }
}

#[test]
fn byte_budget_limits() {
    // Below the header: a typed error.
    for b in [0, 1, 47] {
        let e = ByteBudget::new(b).unwrap_err();
        assert_eq!(
            e,
            ConfigError::BudgetBelowHeader {
                budget: b,
                header: 48
            }
        );
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    }
    // 48..52: room for no entry (cap 0) when a bitmap does not fit.
    let p = ByteBudget::new(48).unwrap();
    assert_eq!(p.cap(1000), Some(0));
    assert_eq!(p.limits(1000).max_message_len(1000), 48);
    // A bitmap fits: no limits (the automatic encoding is never larger than the bitmap).
    let p = ByteBudget::new(48 + 250).unwrap();
    assert_eq!(p.limits(1000), Limits::NONE);
    assert_eq!(p.limits(1000).max_message_len(1000), 48 + 250);
    // It does not: forced sparse with a cap.
    let p = ByteBudget::new(48 + 249).unwrap();
    let l = p.limits(1000);
    assert_eq!(l.cap, Some(62));
    assert_eq!(l.mode, EncodingMode::Sparse);
    assert!(l.max_message_len(1000) <= 48 + 249);
    // Bad parameters.
    assert!(ByteBudget::with_params(100, 0.0, 0.01).is_err());
    assert!(ByteBudget::with_params(100, 1e-3, 0.0).is_err());
    assert!(ByteBudget::with_params(100, 1e-3, 1.5).is_err());
}

#[test]
fn byte_budget_controller_moves_toward_its_target() {
    let n = 10_000u64;
    let mut p = ByteBudget::new(48 + 4 * 100).unwrap(); // cap 100, target 87.5 candidates
    assert_eq!(p.threshold(), 1e-3);
    // Too many candidates: tau rises by the eighth root of the ratio to the target.
    p.observe(&Observation {
        tau: 1e-3,
        n,
        entries: 100,
        candidates: 5000,
        encoding: Encoding::Sparse,
        bytes: 448,
        truncated: true,
    });
    p.threshold();
    let ratio: f64 = 5000.0 / 87.5;
    assert!(
        rel(p.tau(), 1e-3 * ratio.powf(0.125)) < 1e-14,
        "{}",
        p.tau()
    );
    // None at all: tau halves (the step's lower clamp).
    let t = p.tau();
    p.observe(&obs(2e-3, 0, n, Encoding::Sparse));
    p.threshold();
    assert_eq!(p.tau(), t / 2.0);
    // Far too many (ratio > 256): tau doubles (the upper clamp).
    let mut q = ByteBudget::new(48 + 4).unwrap(); // cap 1, target 0.875 candidates
    q.threshold();
    q.observe(&Observation {
        candidates: 10_000,
        ..obs(1e-3, 1, n, Encoding::Sparse)
    });
    assert_eq!(q.threshold(), 2e-3);
    // Exactly on target (7/8 of the cap of 800): kept.
    let mut r = ByteBudget::new(48 + 4 * 800).unwrap();
    r.threshold();
    r.observe(&Observation {
        candidates: 700,
        ..obs(1e-3, 700, 100_000, Encoding::Sparse)
    });
    r.threshold();
    assert_eq!(r.tau(), 1e-3);
}

#[test]
fn reducer_averages_tau_and_sparsity() {
    let mut a = Adaptive::default();
    let mut b = Adaptive::default();
    let c = Adaptive::default(); // no state: does not count
    a.threshold();
    a.observe(&obs(1e-3, 1, 100, Encoding::Sparse));
    b.set_state(&PolicyState {
        kind: kind::ADAPTIVE,
        tau: 3e-3,
        sparsity: 0.03,
        aux: f64::NAN,
    })
    .unwrap();
    let avg = PolicyReducer::average([&a, &b, &c]).unwrap().unwrap();
    assert_eq!(avg.kind, kind::ADAPTIVE);
    assert!(rel(avg.tau, 2e-3) < 1e-15);
    assert!(rel(avg.sparsity, 0.02) < 1e-15);
    assert!(avg.aux.is_nan());
    // Seeding a fresh policy: it adapts from the average instead of restarting at tau0.
    let mut seeded = Adaptive::default();
    seeded.set_state(&avg).unwrap();
    seeded.threshold();
    assert!(rel(seeded.tau(), 2e-3 / DEFAULT_DECAY) < 1e-15);
    // Nothing added: None. Other kinds: a typed error.
    assert!(PolicyReducer::new().finish().is_none());
    let mut r = PolicyReducer::new();
    r.add(&a.state()).unwrap();
    let e = r.add(&Fixed::new(1.0).unwrap().state()).unwrap_err();
    assert_eq!(
        e,
        ConfigError::PolicyMismatch {
            expected: kind::ADAPTIVE,
            found: kind::FIXED
        }
    );
    // Fixed and TargetSparsity reduce too (check 12).
    let f = PolicyReducer::average([&Fixed::new(0.5).unwrap(), &Fixed::new(0.5).unwrap()])
        .unwrap()
        .unwrap();
    assert_eq!(f.tau, 0.5);
    let mut t1 = TargetSparsity::default();
    let mut t2 = TargetSparsity::default();
    t1.threshold();
    t2.threshold();
    t2.observe(&obs(1e-4, 10, 100, Encoding::Sparse));
    t2.threshold();
    let avg = PolicyReducer::average([&t1, &t2]).unwrap().unwrap();
    assert!(rel(avg.tau, (1e-4 + 1e-4 / DEFAULT_DECAY) / 2.0) < 1e-15);
    assert_eq!(avg.sparsity, 0.1);
}

#[test]
fn set_state_validates() {
    let mut p = Adaptive::default();
    let good = p.state();
    for (tau, s) in [
        (-1.0, 0.1),
        (f64::INFINITY, 0.1),
        (0.0, 0.1),
        (1e-3, -0.5),
        (1e-3, 2.0),
    ] {
        let st = PolicyState {
            kind: kind::ADAPTIVE,
            tau,
            sparsity: s,
            aux: f64::NAN,
        };
        assert!(
            matches!(p.set_state(&st), Err(ConfigError::InvalidValue { .. })),
            "{tau} {s}"
        );
        assert_eq!(p.state(), good, "unchanged on error");
    }
    let e = p
        .set_state(&ByteBudget::new(100).unwrap().state())
        .unwrap_err();
    assert!(matches!(e, ConfigError::PolicyMismatch { .. }));
}

#[test]
fn policy_enum_delegates() {
    let mut p: Policy = Adaptive::default().into();
    assert_eq!(p.kind(), kind::ADAPTIVE);
    assert_eq!(p.threshold(), 1e-3);
    let mut q: Policy = ByteBudget::new(60).unwrap().into();
    assert_eq!(q.kind(), kind::BYTE_BUDGET);
    assert_eq!(q.limits(1000).cap, Some(3));
    q.threshold();
    assert_eq!(Policy::default(), Policy::Adaptive(Adaptive::default()));
    let f: Policy = Fixed::new(2.0).unwrap().into();
    assert_eq!(f.kind(), kind::FIXED);
    let t: Policy = TargetSparsity::default().into();
    assert_eq!(t.kind(), kind::TARGET_SPARSITY);
}

#[test]
fn emitted_thresholds_are_always_valid() {
    // Pushed to the extremes, policies clamp into the positive normal f32 range.
    let mut up = Adaptive::new(1e30, 1e-4, 1e-2, 0.5).unwrap();
    let mut down = TargetSparsity::new(1e-30, 1e-3, 0.5).unwrap();
    up.threshold();
    down.threshold();
    for _ in 0..1000 {
        up.observe(&obs(1.0, 100, 100, Encoding::Bitmap));
        down.observe(&obs(1.0, 0, 100, Encoding::Sparse));
        let (a, b) = (up.threshold(), down.threshold());
        assert!(a.is_finite() && a > 0.0);
        assert!(b.is_finite() && b > 0.0);
    }
    assert_eq!(up.threshold(), f32::MAX);
    assert_eq!(down.threshold(), f32::MIN_POSITIVE);
}
