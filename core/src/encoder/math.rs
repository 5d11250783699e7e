//! The little floating-point arithmetic the encoder needs without `std` (core has no `sqrt`,
//! `powf` or `ceil` for floats). Every function uses only IEEE-754 operations in a fixed
//! order, so results are identical on every platform: checkpoints and continuations depend on
//! it.

/// Square root by Newton's method from a power-of-two estimate; `0` for `x <= 0`, NaN for NaN.
/// Within an ulp or two of the correctly rounded root, and deterministic.
pub(crate) fn sqrt(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return 0.0;
    }
    if x == f64::INFINITY {
        return x;
    }
    let exp = ((x.to_bits() >> 52) & 0x7FF) as i64 - 1023;
    // Subnormals have a zero exponent field: start from the smallest normal, Newton fixes it.
    let half = (exp / 2).max(-1022);
    let mut r = f64::from_bits(((half + 1023) as u64) << 52);
    for _ in 0..64 {
        let next = 0.5 * (r + x / r);
        if next == r {
            break;
        }
        r = next;
    }
    r
}

/// `x^k` for an unsigned integer `k`, by binary exponentiation.
pub(crate) fn powi(mut x: f64, mut k: u64) -> f64 {
    let mut acc = 1.0;
    while k > 0 {
        if k & 1 == 1 {
            acc *= x;
        }
        x *= x;
        k >>= 1;
    }
    acc
}

/// The positive `m`-th root of `a > 0` by bisection (exact to the last bits; `m >= 1`).
pub(crate) fn root(a: f64, m: u64) -> f64 {
    if m <= 1 {
        return a;
    }
    let (mut lo, mut hi) = if a < 1.0 { (a, 1.0) } else { (1.0, a) };
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if powi(mid, m) < a {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// The smallest integer `>= x`, saturating into `u64`; `0` for `x <= 0` or NaN.
pub(crate) fn ceil_u64(x: f64) -> u64 {
    if x.is_nan() || x <= 0.0 {
        return 0;
    }
    if x >= u64::MAX as f64 {
        return u64::MAX;
    }
    let t = x as u64;
    if (t as f64) < x { t + 1 } else { t }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqrt_matches_known_values() {
        for &(x, r) in &[
            (4.0, 2.0),
            (2.0, core::f64::consts::SQRT_2),
            (1e-300, 1e-150),
            (0.25, 0.5),
        ] {
            let s = sqrt(x);
            assert!(((s - r) / r).abs() < 1e-15, "sqrt({x}) = {s}");
        }
        assert_eq!(sqrt(0.0), 0.0);
        assert_eq!(sqrt(-1.0), 0.0);
        assert!(sqrt(f64::NAN).is_nan());
        let tiny = f64::from_bits(1);
        assert!(sqrt(tiny) > 0.0);
    }

    #[test]
    fn root_and_powi() {
        let d = root(0.5, 20);
        assert!((d - 0.965_936_328_924_845_6).abs() < 1e-15);
        assert!((powi(d, 20) - 0.5).abs() < 1e-14);
        assert_eq!(powi(3.0, 0), 1.0);
        assert_eq!(powi(3.0, 5), 243.0);
        assert!((root(1e-6, 3) - 1e-2).abs() < 1e-15);
        assert_eq!(root(7.0, 1), 7.0);
    }

    #[test]
    fn rounding() {
        assert_eq!(ceil_u64(2.0), 2);
        assert_eq!(ceil_u64(2.1), 3);
        assert_eq!(ceil_u64(-1.0), 0);
        assert_eq!(ceil_u64(f64::NAN), 0);
    }
}
