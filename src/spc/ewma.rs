//! Two-sided EWMA chart for N(0,1) scores: Z_t = (1−λ)Z_{t−1} + λX_t,
//! Z_0 = 0, signal when |Z_t| > h_t.
//!
//! Limits: asymptotic h = L·√(λ/(2−λ)); exact (time-varying)
//! h_t = L·√(λ/(2−λ)·(1−(1−λ)^{2t})); or exact with Steiner's (1999)
//! fast-initial-response factor (1−(1−f)^{1+a(t−1)}).
//!
//! ARL: Brook–Evans Markov chain (`arl_markov`, for comparison with
//! published chains) and the Nyström solution of the ARL integral equation
//! on Gauss–Legendre nodes (`arl_nystrom`, the design's default). Time-varying
//! limits are handled by propagating the density of the non-signalled
//! statistic on Gauss–Legendre nodes of each step's interval until the limits
//! have converged, then finishing with the asymptotic integral equation.

use super::{ChartError, Direction, Signal, check_finite, check_range};
use crate::stats::dist::{norm_cdf, norm_pdf};
use crate::stats::linalg::solve_dense;
use crate::stats::quadrature::gauss_legendre;
use crate::stats::root::brent;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

/// Gauss–Legendre nodes for the Nyström solution (the reference values are
/// converged at 50–400 nodes).
pub const NYSTROM_NODES: usize = 200;

/// Which control limits the chart uses.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EwmaLimits {
    /// Steady-state limits from the first observation.
    Asymptotic,
    /// Exact time-varying limits (narrower at the start).
    Exact,
    /// Exact limits times Steiner's FIR factor 1−(1−f)^{1+a(t−1)}.
    Fir {
        /// Initial fraction of the limit (Steiner: 0.5).
        f: f64,
        /// Decay rate (Steiner: 0.3).
        a: f64,
    },
}

/// An EWMA design: smoothing, limit width, limit kind.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EwmaDesign {
    /// Smoothing constant λ in (0, 1].
    pub lambda: f64,
    /// Limit width L in standard deviations of Z.
    pub l: f64,
    /// Limit kind.
    pub limits: EwmaLimits,
}

/// Nyström nodes for a smoothing constant: the kernel is λ wide, so small λ
/// needs more nodes (100 suffice from λ = 0.1; the reference values are met
/// to 1e-6 either way, see tests/spc_reference.rs).
pub fn nodes_for(lambda: f64) -> usize {
    if lambda >= 0.1 { 100 } else { NYSTROM_NODES }
}

/// ARL of the asymptotic-limit chart by the Brook–Evans chain with `n` equal
/// states on [−h, h] (midpoints), starting at the centre state.
pub fn arl_markov(lambda: f64, h: f64, delta: f64, n: usize) -> f64 {
    let w = 2.0 * h / n as f64;
    let c: Vec<f64> = (0..n).map(|i| -h + (i as f64 + 0.5) * w).collect();
    let mut a = Array2::<f64>::eye(n);
    for i in 0..n {
        let from = (1.0 - lambda) * c[i];
        for j in 0..n {
            let p =
                norm_cdf((c[j] + w / 2.0 - from) / lambda - delta) - norm_cdf((c[j] - w / 2.0 - from) / lambda - delta);
            a[[i, j]] -= p;
        }
    }
    let x = solve_dense(a, Array1::from_elem(n, 1.0)).expect("I − Q is non-singular for h > 0");
    // The start Z_0 = 0 is the centre state (n odd) or the mean of the two
    // middle states (n even).
    if n % 2 == 1 {
        x[n / 2]
    } else {
        (x[n / 2 - 1] + x[n / 2]) / 2.0
    }
}

/// The asymptotic-limit integral equation solved on `nodes` Gauss–Legendre
/// nodes: returns (nodes, weights, L at the nodes).
fn nystrom_solution(lambda: f64, h: f64, delta: f64, nodes: usize) -> (Vec<f64>, Vec<f64>, Array1<f64>) {
    let (y, w) = gauss_legendre(nodes, -h, h);
    let mut a = Array2::<f64>::eye(nodes);
    for i in 0..nodes {
        for j in 0..nodes {
            a[[i, j]] -= w[j] / lambda * norm_pdf((y[j] - (1.0 - lambda) * y[i]) / lambda - delta);
        }
    }
    let l = solve_dense(a, Array1::from_elem(nodes, 1.0)).expect("I − K is non-singular for h > 0");
    (y, w, l)
}

/// Expected further run length from state u, by Nyström interpolation.
fn interpolate(lambda: f64, delta: f64, u: f64, y: &[f64], w: &[f64], l: &Array1<f64>) -> f64 {
    1.0 + y
        .iter()
        .zip(w)
        .zip(l.iter())
        .map(|((yj, wj), lj)| wj / lambda * norm_pdf((yj - (1.0 - lambda) * u) / lambda - delta) * lj)
        .sum::<f64>()
}

/// ARL of the asymptotic-limit chart (limit h on Z) by Nyström.
pub fn arl_nystrom(lambda: f64, h: f64, delta: f64, nodes: usize) -> f64 {
    let (y, w, l) = nystrom_solution(lambda, h, delta, nodes);
    interpolate(lambda, delta, 0.0, &y, &w, &l)
}

impl EwmaDesign {
    /// A validated design.
    pub fn new(lambda: f64, l: f64, limits: EwmaLimits) -> Result<EwmaDesign, ChartError> {
        check_range("lambda", lambda, 1e-4, 1.0)?;
        check_range("L", l, 1e-3, 50.0)?;
        if let EwmaLimits::Fir { f, a } = limits {
            check_range("fir f", f, 1e-6, 1.0)?;
            check_range("fir a", a, 1e-6, 10.0)?;
        }
        Ok(EwmaDesign { lambda, l, limits })
    }

    /// The design whose in-control ARL is `arl0` (root-finding on L).
    pub fn for_arl0(lambda: f64, arl0: f64, limits: EwmaLimits) -> Result<EwmaDesign, ChartError> {
        EwmaDesign::for_arl_at(lambda, arl0, 0.0, limits)
    }

    /// The design whose ARL at mean shift `delta` is `arl` (the in-control
    /// ARL is then at least `arl`: used to guarantee it against a reference
    /// that is off by up to `delta`).
    pub fn for_arl_at(lambda: f64, arl0: f64, delta: f64, limits: EwmaLimits) -> Result<EwmaDesign, ChartError> {
        check_range("arl0", arl0, 1.5, 1e9)?;
        check_range("delta", delta, 0.0, 3.0)?;
        let probe = EwmaDesign::new(lambda, 1.0, limits)?;
        let f = |l: f64| (EwmaDesign { l, ..probe }.arl(delta)).ln() - arl0.ln();
        let l = brent(f, 0.05, 8.0, 1e-10).ok_or(ChartError::Unreachable { arl0 })?;
        EwmaDesign::new(lambda, l, limits)
    }

    /// Standard deviation of Z at time t (t = 0: asymptotic).
    fn sigma(&self, t: u64) -> f64 {
        let asym = self.lambda / (2.0 - self.lambda);
        if t == 0 || self.limits == EwmaLimits::Asymptotic {
            asym.sqrt()
        } else {
            (asym * (1.0 - (1.0 - self.lambda).powi((2 * t).min(i32::MAX as u64) as i32))).sqrt()
        }
    }

    /// The asymptotic limit h on Z.
    pub fn h(&self) -> f64 {
        self.l * self.sigma(0)
    }

    /// The limit on Z at observation t ≥ 1.
    pub fn limit_at(&self, t: u64) -> f64 {
        let base = self.l * self.sigma(t);
        match self.limits {
            EwmaLimits::Fir { f, a } => base * (1.0 - (1.0 - f).powf(1.0 + a * (t as f64 - 1.0))),
            _ => base,
        }
    }

    /// Zero-state ARL when the mean shifts by `delta` standard deviations.
    pub fn arl(&self, delta: f64) -> f64 {
        if self.limits == EwmaLimits::Asymptotic {
            return arl_nystrom(self.lambda, self.h(), delta, nodes_for(self.lambda));
        }
        self.arl_time_varying(delta, 120)
    }

    /// ARL with time-varying limits: density propagation while the limits
    /// move, then the asymptotic integral equation for the remainder.
    fn arl_time_varying(&self, delta: f64, nodes: usize) -> f64 {
        let lambda = self.lambda;
        let h = self.h();
        let (ys, ws, ls) = nystrom_solution(lambda, h, delta, nodes);
        // t = 1: Z_1 = λ X_1.
        let mut t = 1u64;
        let (mut y, mut w) = gauss_legendre(nodes, -self.limit_at(1), self.limit_at(1));
        let mut f: Vec<f64> = y.iter().map(|v| norm_pdf(v / lambda - delta) / lambda).collect();
        let mut arl = 1.0; // P(RL > 0)
        loop {
            let survive: f64 = f.iter().zip(&w).map(|(f, w)| f * w).sum();
            let converged = (h - self.limit_at(t)).abs() <= 1e-12 * h;
            if converged || t >= 20_000 || survive < 1e-300 {
                let tail: f64 = y
                    .iter()
                    .zip(&w)
                    .zip(&f)
                    .map(|((u, wi), fi)| wi * fi * interpolate(lambda, delta, *u, &ys, &ws, &ls))
                    .sum();
                return arl + tail;
            }
            arl += survive;
            t += 1;
            let (y2, w2) = gauss_legendre(nodes, -self.limit_at(t), self.limit_at(t));
            let f2: Vec<f64> = y2
                .iter()
                .map(|yj| {
                    y.iter()
                        .zip(&w)
                        .zip(&f)
                        .map(|((yi, wi), fi)| wi * fi * norm_pdf((yj - (1.0 - lambda) * yi) / lambda - delta) / lambda)
                        .sum()
                })
                .collect();
            y = y2;
            w = w2;
            f = f2;
        }
    }
}

/// A running EWMA chart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ewma {
    /// The design.
    pub design: EwmaDesign,
    z: f64,
    t: u64,
}

impl Ewma {
    /// A chart at its zero state.
    pub fn new(design: EwmaDesign) -> Ewma {
        Ewma { design, z: 0.0, t: 0 }
    }

    /// The current statistic.
    pub fn statistic(&self) -> f64 {
        self.z
    }

    /// The limit the next observation will be judged against.
    pub fn next_limit(&self) -> f64 {
        self.design.limit_at(self.t + 1)
    }

    /// Adds an observation; on a signal the chart restarts from its zero state.
    pub fn observe(&mut self, x: f64) -> Result<Option<Signal>, ChartError> {
        check_finite(x)?;
        self.t += 1;
        self.z = (1.0 - self.design.lambda) * self.z + self.design.lambda * x;
        let limit = self.design.limit_at(self.t);
        if self.z.abs() > limit {
            let s = Signal {
                statistic: self.z,
                limit,
                direction: if self.z > 0.0 { Direction::Up } else { Direction::Down },
                rule: None,
            };
            self.reset();
            return Ok(Some(s));
        }
        Ok(None)
    }

    /// Back to the zero state.
    pub fn reset(&mut self) {
        self.z = 0.0;
        self.t = 0;
    }
}
