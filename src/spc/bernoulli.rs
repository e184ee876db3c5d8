//! Bernoulli CUSUM (Reynolds & Stoumbos 1999) for rates: failures,
//! escalations, tool errors, miscalibrated confident answers.
//!
//! With in-control rate p0 and the rate to detect p1 > p0, the log-likelihood
//! CUSUM is S_t = max(0, S_{t−1} + y_t − γ), γ = ln((1−p0)/(1−p1)) /
//! ln(p1(1−p0)/(p0(1−p1))). Scaling by an integer m and rounding γ·m to an
//! integer a makes the chart run on integers, so its ARL is exact: the states
//! 0..=H form a finite Markov chain (down by a on a 0, up by m−a on a 1), and
//! the chart that runs is exactly the chart whose ARL is computed.

use super::{ChartError, Direction, Signal, check_range};
use serde::{Deserialize, Serialize};

/// An integer Bernoulli CUSUM design.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BernoulliDesign {
    /// In-control rate.
    pub p0: f64,
    /// Rate the chart is tuned to detect.
    pub p1: f64,
    /// Integer scale.
    pub m: i64,
    /// Integer reference value (γ·m rounded).
    pub a: i64,
    /// Integer limit: signal when S > H.
    pub h: i64,
}

impl BernoulliDesign {
    /// γ of the log-likelihood CUSUM.
    pub fn gamma(p0: f64, p1: f64) -> f64 {
        ((1.0 - p0) / (1.0 - p1)).ln() / ((p1 * (1.0 - p0)) / (p0 * (1.0 - p1))).ln()
    }

    /// The limit in rate units (h/m), for reports.
    pub fn limit(&self) -> f64 {
        self.h as f64 / self.m as f64
    }

    /// Exact zero-state ARL when the true rate is p.
    ///
    /// I − Q has one entry below the diagonal (at s − a, or column 0 for
    /// s < a) and one above (at s + m − a), so Gaussian elimination inside
    /// the band costs O(H·a·m); no pivoting is needed because I − Q is a
    /// non-singular M-matrix.
    pub fn arl(&self, p: f64) -> f64 {
        let n = (self.h + 1) as usize;
        let lo = self.a as usize; // lower bandwidth
        let up = (self.m - self.a) as usize; // upper bandwidth
        let width = lo + up + 1;
        // band[i][j - i + lo] holds A[i][j].
        let mut band = vec![0.0f64; n * width];
        let at = |i: usize, j: usize| i * width + (j + lo - i);
        let mut rhs = vec![1.0f64; n];
        for s in 0..n {
            band[at(s, s)] += 1.0;
            let down = s.saturating_sub(lo);
            band[at(s, down)] -= 1.0 - p;
            let upper = s + up;
            if upper < n {
                band[at(s, upper)] -= p;
            }
        }
        for k in 0..n {
            let pivot = band[at(k, k)];
            if pivot.abs() < 1e-300 {
                return f64::INFINITY;
            }
            let jmax = (k + up).min(n - 1);
            let (head, tail) = band.split_at_mut((k + 1) * width);
            // Row k's entries for columns k+1..=jmax.
            let pivot_row = &head[k * width + lo + 1..k * width + lo + 1 + (jmax - k)];
            for i in (k + 1)..=(k + lo).min(n - 1) {
                let row = &mut tail[(i - k - 1) * width..(i - k) * width];
                let f = row[k + lo - i] / pivot;
                if f == 0.0 {
                    continue;
                }
                row[k + lo - i] = 0.0;
                let start = k + 1 + lo - i;
                for (x, y) in row[start..start + (jmax - k)].iter_mut().zip(pivot_row) {
                    *x -= f * y;
                }
                rhs[i] -= f * rhs[k];
            }
        }
        let mut x = vec![0.0f64; n];
        for i in (0..n).rev() {
            let jmax = (i + up).min(n - 1);
            let row = &band[i * width..(i + 1) * width];
            let s: f64 = row[lo + 1..lo + 1 + (jmax - i)]
                .iter()
                .zip(&x[i + 1..=jmax])
                .map(|(a, x)| a * x)
                .sum();
            x[i] = (rhs[i] - s) / row[lo];
        }
        x[0]
    }

    /// The smallest integer limit whose in-control ARL is at least `arl0`.
    ///
    /// The scale m is chosen so that γ·m ≈ 16 (γ kept to about 3%), within
    /// 20..=200 (rare events keep fewer digits of γ so the chain stays
    /// small), and coprime with a so the chain uses every integer state; the
    /// chart that runs uses exactly the rounded γ = a/m.
    pub fn for_arl0(p0: f64, p1: f64, arl0: f64) -> Result<BernoulliDesign, ChartError> {
        check_range("p0", p0, 1e-6, 0.999)?;
        check_range("p1", p1, p0 + 1e-9, 0.9999)?;
        check_range("arl0", arl0, 1.5, 1e9)?;
        let gamma = BernoulliDesign::gamma(p0, p1);
        let mut m = ((16.0 / gamma).ceil() as i64).clamp(20, 200);
        let mut a = ((gamma * m as f64).round() as i64).max(1);
        while gcd(m, a) != 1 {
            m += 1;
            a = ((gamma * m as f64).round() as i64).max(1);
        }
        let mut d = BernoulliDesign { p0, p1, m, a, h: m };
        // Grow the limit geometrically, then search the integers by
        // interpolating ln ARL (nearly linear in the limit), keeping a bracket.
        let (mut lo, mut hi) = (0i64, m);
        d.h = hi;
        let mut arl_hi = d.arl(p0);
        let mut arl_lo = 1.0;
        while arl_hi < arl0 {
            lo = hi;
            arl_lo = arl_hi;
            hi *= 2;
            d.h = hi;
            arl_hi = d.arl(p0);
            if hi > 200 * m {
                return Err(ChartError::Unreachable { arl0 });
            }
        }
        while hi - lo > 1 {
            let t = ((arl0.ln() - arl_lo.ln()) / (arl_hi.ln() - arl_lo.ln())).clamp(0.0, 1.0);
            let guess = lo + ((hi - lo) as f64 * t).round() as i64;
            let mid = guess.clamp(lo + 1, hi - 1);
            d.h = mid;
            let v = d.arl(p0);
            if v >= arl0 {
                hi = mid;
                arl_hi = v;
            } else {
                lo = mid;
                arl_lo = v;
            }
            // When interpolation lands next to the answer, check its neighbour
            // so the bracket closes instead of creeping.
            if hi - lo > 1 && mid == hi && hi - 1 > lo {
                d.h = hi - 1;
                let v = d.arl(p0);
                if v >= arl0 {
                    hi -= 1;
                    arl_hi = v;
                } else {
                    lo = hi - 1;
                    arl_lo = v;
                }
            } else if hi - lo > 1 && mid == lo && lo + 1 < hi {
                d.h = lo + 1;
                let v = d.arl(p0);
                if v >= arl0 {
                    hi = lo + 1;
                    arl_hi = v;
                } else {
                    lo += 1;
                    arl_lo = v;
                }
            }
        }
        d.h = hi;
        Ok(d)
    }
}

fn gcd(mut x: i64, mut y: i64) -> i64 {
    while y != 0 {
        (x, y) = (y, x % y);
    }
    x
}

/// A running Bernoulli CUSUM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BernoulliCusum {
    /// The design.
    pub design: BernoulliDesign,
    s: i64,
}

impl BernoulliCusum {
    /// A chart at zero.
    pub fn new(design: BernoulliDesign) -> BernoulliCusum {
        BernoulliCusum { design, s: 0 }
    }

    /// Current statistic in rate units.
    pub fn statistic(&self) -> f64 {
        self.s as f64 / self.design.m as f64
    }

    /// Adds an outcome (true = the event: failure, escalation, error).
    pub fn observe(&mut self, event: bool) -> Option<Signal> {
        let d = &self.design;
        self.s = (self.s + if event { d.m } else { 0 } - d.a).max(0);
        if self.s > d.h {
            let statistic = self.statistic();
            self.s = 0;
            return Some(Signal {
                statistic,
                limit: d.limit(),
                direction: Direction::Up,
                rule: None,
            });
        }
        None
    }
}
