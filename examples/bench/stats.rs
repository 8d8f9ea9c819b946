//! Small statistics for the timing scenario: medians and the Mann–Whitney U rank test.

/// The median of `values` (the mean of the two middle values for an even count); NaN if empty.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    match sorted.len() % 2 {
        0 => (sorted[mid - 1] + sorted[mid]) / 2.0,
        _ => sorted[mid],
    }
}

/// The outcome of a two-sided Mann–Whitney U test of `a` against `b`.
#[derive(Debug, Clone, Copy)]
pub struct MannWhitney {
    /// U of the first sample: how many (a, b) pairs have a > b, ties counting one half.
    pub u: f64,
    /// The normal approximation's z (tie-corrected variance, continuity correction).
    pub z: f64,
    /// Two-sided p value from that approximation.
    pub p: f64,
}

/// Mann–Whitney U test, two-sided, by the normal approximation with a correction for ties and
/// for continuity (what SciPy's `mannwhitneyu(method="asymptotic")` computes). Meaningful for
/// samples of about 20 or more each; `p` is 1 when either sample is empty or every value ties.
pub fn mann_whitney(a: &[f64], b: &[f64]) -> MannWhitney {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    if a.is_empty() || b.is_empty() {
        return MannWhitney {
            u: 0.0,
            z: 0.0,
            p: 1.0,
        };
    }
    // Rank the pooled sample, ties sharing the mean of their ranks (1-based).
    let mut pooled: Vec<(f64, bool)> = a
        .iter()
        .map(|&x| (x, true))
        .chain(b.iter().map(|&x| (x, false)))
        .collect();
    pooled.sort_by(|x, y| x.0.total_cmp(&y.0));
    let n = pooled.len();
    let (mut rank_sum_a, mut tie_term) = (0.0, 0.0);
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && pooled[j + 1].0 == pooled[i].0 {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        let t = (j - i + 1) as f64;
        tie_term += t * t * t - t;
        rank_sum_a += rank * pooled[i..=j].iter().filter(|(_, from_a)| *from_a).count() as f64;
        i = j + 1;
    }
    let u = rank_sum_a - n1 * (n1 + 1.0) / 2.0;
    let mean = n1 * n2 / 2.0;
    let total = n1 + n2;
    let variance = n1 * n2 / 12.0 * ((total + 1.0) - tie_term / (total * (total - 1.0)));
    if variance <= 0.0 {
        return MannWhitney { u, z: 0.0, p: 1.0 };
    }
    let distance = ((u - mean).abs() - 0.5).max(0.0);
    let z = (distance / variance.sqrt()).copysign(u - mean);
    let p = erfc(z.abs() / std::f64::consts::SQRT_2).min(1.0);
    MannWhitney { u, z, p }
}

/// The complementary error function, by the Chebyshev fit of Numerical Recipes (`erfcc`):
/// fractional error below 1.2e-7 everywhere, so tiny p values keep their magnitude.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn erfc_matches_known_values() {
        for (x, expected) in [
            (0.0, 1.0),
            (0.5, 0.479_500_122_186_953_5),
            (1.0, 0.157_299_207_050_285_1),
            (2.0, 0.004_677_734_981_047_266),
            (-1.0, 1.842_700_792_949_715),
        ] {
            assert!(close(erfc(x), expected, 2e-7), "erfc({x}) = {}", erfc(x));
        }
        // Relative precision in the tail.
        let tail = erfc(5.0);
        assert!(close(tail / 1.537_459_794_428_035e-12, 1.0, 1e-6), "{tail}");
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn mann_whitney_separated_samples() {
        // SciPy: mannwhitneyu([1,2,3], [4,5,6], method="asymptotic") → U=0, p=0.0808556.
        let r = mann_whitney(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]);
        assert_eq!(r.u, 0.0);
        assert!(r.z < 0.0);
        assert!(close(r.p, 0.080_855_6, 1e-6), "{r:?}");
        // The other way round: U = n1·n2 − 0, the same p.
        let r = mann_whitney(&[4.0, 5.0, 6.0], &[1.0, 2.0, 3.0]);
        assert_eq!(r.u, 9.0);
        assert!(close(r.p, 0.080_855_6, 1e-6), "{r:?}");
    }

    #[test]
    fn mann_whitney_with_ties() {
        // By hand: pooled 1a 2a 2b 3a 3b 4b, ranks 1, 2.5, 2.5, 4.5, 4.5, 6 → R_a = 8, U = 2 (one
        // pair a > b, two ties); tie term 2·(8 − 2) = 12, variance = 9/12 · (7 − 12/30) = 4.95;
        // z = (|2 − 4.5| − 0.5)/√4.95 = 0.89893, p = erfc(z/√2) = 0.368688.
        let r = mann_whitney(&[1.0, 2.0, 3.0], &[2.0, 3.0, 4.0]);
        assert_eq!(r.u, 2.0);
        let z: f64 = 2.0 / 4.95_f64.sqrt();
        assert!(close(r.z, -z, 1e-12), "{r:?}");
        assert!(close(r.p, erfc(z / std::f64::consts::SQRT_2), 1e-12));
        assert!(close(r.p, 0.368_688_3, 1e-6), "{r:?}");
    }

    #[test]
    fn mann_whitney_same_distribution_and_degenerate_cases() {
        let a: Vec<f64> = (0..200).map(|i| f64::from(i % 50)).collect();
        let r = mann_whitney(&a, &a);
        assert!(close(r.u, 200.0 * 200.0 / 2.0, 1e-9));
        assert!(close(r.p, 1.0, 1e-9), "{r:?}");
        assert_eq!(mann_whitney(&[], &[1.0]).p, 1.0);
        assert_eq!(mann_whitney(&[1.0, 1.0], &[1.0]).p, 1.0);
        // A clear shift of 200 values each is overwhelmingly significant.
        let b: Vec<f64> = a.iter().map(|x| x + 100.0).collect();
        assert!(mann_whitney(&a, &b).p < 1e-50);
    }
}
