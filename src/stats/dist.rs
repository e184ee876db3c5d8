//! Distribution functions used across the charts (thin wrappers over statrs,
//! plus the non-central chi-square that statrs lacks).

use statrs::distribution::{Beta, ChiSquared, ContinuousCDF, FisherSnedecor, Normal};
use std::sync::OnceLock;

fn std_normal() -> &'static Normal {
    static N: OnceLock<Normal> = OnceLock::new();
    N.get_or_init(|| Normal::new(0.0, 1.0).expect("valid parameters"))
}

/// Standard normal CDF Φ.
pub fn norm_cdf(x: f64) -> f64 {
    std_normal().cdf(x)
}

/// Standard normal density φ.
pub fn norm_pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// Standard normal quantile Φ⁻¹(p), p in (0, 1).
pub fn norm_quantile(p: f64) -> f64 {
    std_normal().inverse_cdf(p)
}

/// Upper tail of χ²(df) at x; `df` may be fractional. `df = 0` is a point mass at 0.
pub fn chi2_sf(x: f64, df: f64) -> f64 {
    if df <= 0.0 {
        return if x > 0.0 { 0.0 } else { 1.0 };
    }
    if x.is_infinite() {
        return 0.0;
    }
    ChiSquared::new(df).expect("df > 0").sf(x.max(0.0))
}

/// χ²(df) quantile.
pub fn chi2_quantile(p: f64, df: f64) -> f64 {
    ChiSquared::new(df).expect("df > 0").inverse_cdf(p)
}

/// F(d1, d2) quantile.
pub fn f_quantile(p: f64, d1: f64, d2: f64) -> f64 {
    FisherSnedecor::new(d1, d2).expect("dfs > 0").inverse_cdf(p)
}

/// Beta(a, b) quantile.
pub fn beta_quantile(p: f64, a: f64, b: f64) -> f64 {
    Beta::new(a, b).expect("shapes > 0").inverse_cdf(p)
}

/// Upper tail of the non-central χ²(df, λ) at x, as the Poisson(λ/2)
/// mixture of central χ²(df + 2j) tails (summed from the mode outwards
/// until the remaining Poisson mass is below 1e-15).
pub fn noncentral_chi2_sf(x: f64, df: f64, lambda: f64) -> f64 {
    if lambda <= 0.0 {
        return chi2_sf(x, df);
    }
    let mu = lambda / 2.0;
    let mode = mu.floor() as i64;
    let ln_pois = |j: i64| -mu + j as f64 * mu.ln() - statrs::function::gamma::ln_gamma(j as f64 + 1.0);
    let mut total = 0.0;
    let mut mass = 0.0;
    for dir in [1i64, -1] {
        let mut j = if dir == 1 { mode } else { mode - 1 };
        while j >= 0 {
            let w = ln_pois(j).exp();
            total += w * chi2_sf(x, df + 2.0 * j as f64);
            mass += w;
            if w < 1e-17 && (j - mode).abs() > 5 {
                break;
            }
            j += dir;
            if (j - mode).abs() > 100_000 {
                break;
            }
        }
        if 1.0 - mass < 1e-15 {
            break;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_values() {
        // Rule 1 of a 3-sigma chart: ARL = 1/(2(1-Φ(3))) = 370.3983 (reference README).
        assert!((1.0 / (2.0 * (1.0 - norm_cdf(3.0))) - 370.398_347_3).abs() < 1e-5);
        assert!((norm_quantile(0.975) - 1.959_963_984_540_054).abs() < 1e-12);
    }

    #[test]
    fn noncentral_reduces_and_matches_closed_form_for_df2() {
        assert!((noncentral_chi2_sf(3.0, 2.0, 0.0) - (-1.5f64).exp()).abs() < 1e-12);
        // df = 1: P(|N(√λ,1)| > √x) in closed form.
        let (x, l) = (9.0f64, 4.0f64);
        let exact = (1.0 - norm_cdf(x.sqrt() - l.sqrt())) + norm_cdf(-x.sqrt() - l.sqrt());
        // statrs' incomplete gamma is good to ~1e-10 relative.
        let got = noncentral_chi2_sf(x, 1.0, l);
        assert!((got / exact - 1.0).abs() < 1e-9, "{got} vs {exact}");
    }
}
