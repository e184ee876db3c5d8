//! Hotelling T² chart for individual multivariate observations.
//!
//! T² = (x − x̄)ᵀ S⁻¹ (x − x̄). Limits (false-alarm probability α per point):
//! - known parameters: χ²_p(1−α);
//! - phase II, mean and covariance estimated from m reference observations:
//!   p(m+1)(m−1)/(m(m−p)) · F_{p, m−p}(1−α);
//! - phase I (the point is one of the m reference observations, Tracy, Young
//!   & Mason 1992): (m−1)²/m · Beta_{p/2, (m−p−1)/2}(1−α).
//!
//! Out of control, with a mean shift of non-centrality d² = δᵀΣ⁻¹δ, a phase-II
//! point signals with probability P(F'(p, m−p, d²·m/(m+1)) > UCL·m(m−p)/(p(m+1)(m−1)))
//! (non-central F); with known parameters P(χ'²_p(d²) > UCL).

use super::{ChartError, Direction, Signal, check_finite, check_range};
use crate::stats::dist::{beta_quantile, chi2_quantile, f_quantile, noncentral_chi2_sf};
use serde::{Deserialize, Serialize};
use statrs::function::beta::beta_reg;
use statrs::function::gamma::ln_gamma;

/// How the in-control parameters are known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "case", rename_all = "snake_case")]
pub enum T2Case {
    /// Mean and covariance known.
    Known,
    /// New observations against estimates from m reference observations.
    Phase2 {
        /// Reference observations.
        m: u32,
    },
    /// Retrospective: each reference observation against estimates that include it.
    Phase1 {
        /// Reference observations.
        m: u32,
    },
}

/// UCL of the T² chart for dimension p and per-point false-alarm probability α.
pub fn t2_ucl(p: u32, alpha: f64, case: T2Case) -> Result<f64, ChartError> {
    check_range("p", f64::from(p), 1.0, 1000.0)?;
    check_range("alpha", alpha, 1e-12, 0.5)?;
    let pf = f64::from(p);
    match case {
        T2Case::Known => Ok(chi2_quantile(1.0 - alpha, pf)),
        T2Case::Phase2 { m } => {
            if m <= p {
                return Err(ChartError::TooFewReference { m, p });
            }
            let mf = f64::from(m);
            Ok(pf * (mf + 1.0) * (mf - 1.0) / (mf * (mf - pf)) * f_quantile(1.0 - alpha, pf, mf - pf))
        }
        T2Case::Phase1 { m } => {
            if m <= p + 1 {
                return Err(ChartError::TooFewReference { m, p });
            }
            let mf = f64::from(m);
            Ok((mf - 1.0).powi(2) / mf * beta_quantile(1.0 - alpha, pf / 2.0, (mf - pf - 1.0) / 2.0))
        }
    }
}

/// Upper tail of the non-central F(d1, d2, λ) at x (Poisson mixture of
/// incomplete beta functions).
pub fn noncentral_f_sf(x: f64, d1: f64, d2: f64, lambda: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let y = d1 * x / (d1 * x + d2);
    let mu = lambda / 2.0;
    let mode = mu.floor() as i64;
    let term = |j: i64| {
        let w = if mu > 0.0 {
            (-mu + j as f64 * mu.ln() - ln_gamma(j as f64 + 1.0)).exp()
        } else if j == 0 {
            1.0
        } else {
            0.0
        };
        (w, w * (1.0 - beta_reg(d1 / 2.0 + j as f64, d2 / 2.0, y)))
    };
    let mut total = 0.0;
    let mut mass = 0.0;
    for dir in [1i64, -1] {
        let mut j = if dir == 1 { mode } else { mode - 1 };
        while j >= 0 && (j - mode).abs() < 100_000 {
            let (w, t) = term(j);
            total += t;
            mass += w;
            if w < 1e-17 && (j - mode).abs() > 5 {
                break;
            }
            j += dir;
        }
        if 1.0 - mass < 1e-15 {
            break;
        }
    }
    total
}

/// A T² design: dimension, case and limit.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct T2Design {
    /// Dimension.
    pub p: u32,
    /// How parameters are known.
    pub case: T2Case,
    /// Per-point false-alarm probability.
    pub alpha: f64,
    /// Upper control limit.
    pub ucl: f64,
}

impl T2Design {
    /// The design with in-control ARL `arl0` (α = 1/ARL0 per point).
    pub fn for_arl0(p: u32, arl0: f64, case: T2Case) -> Result<T2Design, ChartError> {
        check_range("arl0", arl0, 2.0, 1e12)?;
        let alpha = 1.0 / arl0;
        Ok(T2Design {
            p,
            case,
            alpha,
            ucl: t2_ucl(p, alpha, case)?,
        })
    }

    /// Signal probability per point at non-centrality d² (= shift², for a
    /// shift of `shift` standard deviations along one uncorrelated variable).
    pub fn signal_probability(&self, shift: f64) -> f64 {
        let d2 = shift * shift;
        let pf = f64::from(self.p);
        match self.case {
            T2Case::Known => noncentral_chi2_sf(self.ucl, pf, d2),
            // Retrospective limits have no run length to speak of.
            T2Case::Phase1 { .. } => f64::NAN,
            T2Case::Phase2 { m } => {
                let mf = f64::from(m);
                let scale = mf * (mf - pf) / (pf * (mf + 1.0) * (mf - 1.0));
                noncentral_f_sf(self.ucl * scale, pf, mf - pf, d2 * mf / (mf + 1.0))
            }
        }
    }

    /// ARL at a shift: 1 / signal probability (exact for known parameters;
    /// for estimated ones, the unconditional per-point approximation).
    pub fn arl(&self, shift: f64) -> f64 {
        1.0 / self.signal_probability(shift)
    }
}

/// A running T² chart on fixed (estimated) mean and inverse covariance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HotellingT2 {
    /// Mean vector.
    pub mean: Vec<f64>,
    /// Inverse covariance, row-major p×p.
    pub inv_cov: Vec<f64>,
    /// Limit.
    pub ucl: f64,
}

impl HotellingT2 {
    /// T² of one observation.
    pub fn t2(&self, x: &[f64]) -> Result<f64, ChartError> {
        let p = self.mean.len();
        if x.len() != p {
            return Err(ChartError::Dimension {
                expected: p,
                got: x.len(),
            });
        }
        for v in x {
            check_finite(*v)?;
        }
        let d: Vec<f64> = x.iter().zip(&self.mean).map(|(a, b)| a - b).collect();
        let mut s = 0.0;
        for i in 0..p {
            for j in 0..p {
                s += d[i] * self.inv_cov[i * p + j] * d[j];
            }
        }
        Ok(s)
    }

    /// Adds an observation (the chart has no memory).
    pub fn observe(&self, x: &[f64]) -> Result<Option<Signal>, ChartError> {
        let t2 = self.t2(x)?;
        Ok((t2 > self.ucl).then_some(Signal {
            statistic: t2,
            limit: self.ucl,
            direction: Direction::Up,
            rule: None,
        }))
    }
}
