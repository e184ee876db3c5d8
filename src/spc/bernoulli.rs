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
use crate::stats::linalg::{Csr, bicgstab};
use serde::{Deserialize, Serialize};

/// Chain size the scale is chosen for (states 0..=H).
const TARGET_STATES: f64 = 2000.0;

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
    pub fn arl(&self, p: f64) -> f64 {
        let n = (self.h + 1) as usize;
        let rows: Vec<Vec<(usize, f64)>> = (0..=self.h)
            .map(|s| {
                let mut row = vec![(s as usize, 1.0)];
                let down = (s - self.a).max(0) as usize;
                match row.iter_mut().find(|(c, _)| *c == down) {
                    Some(e) => e.1 -= 1.0 - p,
                    None => row.push((down, -(1.0 - p))),
                }
                let up = s + self.m - self.a;
                if up <= self.h {
                    match row.iter_mut().find(|(c, _)| *c == up as usize) {
                        Some(e) => e.1 -= p,
                        None => row.push((up as usize, -p)),
                    }
                }
                row
            })
            .collect();
        bicgstab(&Csr::from_rows(&rows), &vec![1.0; n], 1e-12, 200_000).map_or(f64::INFINITY, |x| x[0])
    }

    /// The smallest integer limit whose in-control ARL is at least `arl0`.
    pub fn for_arl0(p0: f64, p1: f64, arl0: f64) -> Result<BernoulliDesign, ChartError> {
        check_range("p0", p0, 1e-6, 0.999)?;
        check_range("p1", p1, p0 + 1e-9, 0.9999)?;
        check_range("arl0", arl0, 1.5, 1e9)?;
        let gamma = BernoulliDesign::gamma(p0, p1);
        // Approximate h (Siegmund-free): grow h on a coarse scale, then fix the scale.
        let coarse = |m: i64| -> Result<i64, ChartError> {
            let a = ((gamma * m as f64).round() as i64).max(1);
            let mut d = BernoulliDesign { p0, p1, m, a, h: m };
            let (mut lo, mut hi) = (0i64, m);
            while d.arl(p0) < arl0 {
                lo = hi;
                hi *= 2;
                d.h = hi;
                if hi > 1_000_000 {
                    return Err(ChartError::Unreachable { arl0 });
                }
            }
            while hi - lo > 1 {
                let mid = (lo + hi) / 2;
                d.h = mid;
                if d.arl(p0) >= arl0 { hi = mid } else { lo = mid }
            }
            Ok(hi)
        };
        let h_coarse = coarse(20)? as f64 / 20.0;
        let m = ((TARGET_STATES / h_coarse.max(0.05)).floor() as i64).clamp(20, 20_000);
        let h = coarse(m)?;
        let a = ((gamma * m as f64).round() as i64).max(1);
        Ok(BernoulliDesign { p0, p1, m, a, h })
    }
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
