//! Two-sided tabular CUSUM for N(0,1) scores:
//! C⁺_t = max(0, C⁺_{t−1} + X_t − k), C⁻_t = max(0, C⁻_{t−1} − X_t − k),
//! signal when either exceeds h. Optional fast initial response: both sums
//! start at a head start (Lucas & Crosier 1982, typically h/2).
//!
//! ARL: one-sided ARLs by the Brook–Evans chain (`arl1_markov`) or the
//! Nyström solution of L(u) = 1 + L(0)Φ(k−u−δ) + ∫₀ʰ L(y)φ(y+k−u−δ)dy
//! (`arl1_nystrom`, the design default); zero-state two-sided ARL by the exact
//! identity 1/ARL = 1/ARL⁺(δ) + 1/ARL⁺(−δ). With a head start the identity
//! no longer holds, so the two-sided ARL is computed on the joint chain of
//! (C⁺, C⁻) instead ([`CusumDesign::arl`]).

use super::{ChartError, Direction, Signal, check_finite, check_range};
use crate::stats::dist::{norm_cdf, norm_pdf};
use crate::stats::linalg::{Csr, bicgstab, solve_dense};
use crate::stats::quadrature::gauss_legendre;
use crate::stats::root::brent;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

/// Gauss–Legendre nodes for the Nyström solution.
pub const NYSTROM_NODES: usize = 120;

/// One-sided (upper) CUSUM ARL by the Brook–Evans chain with `t` states:
/// width w = 2h/(2t−1), state 0 = [0, w/2], state i centred at i·w.
pub fn arl1_markov(k: f64, h: f64, delta: f64, t: usize) -> f64 {
    let w = 2.0 * h / (2.0 * t as f64 - 1.0);
    let mut a = Array2::<f64>::eye(t);
    for i in 0..t {
        let ci = i as f64 * w;
        a[[i, 0]] -= norm_cdf(w / 2.0 - ci + k - delta);
        for j in 1..t {
            let cj = j as f64 * w;
            a[[i, j]] -= norm_cdf(cj + w / 2.0 - ci + k - delta) - norm_cdf(cj - w / 2.0 - ci + k - delta);
        }
    }
    solve_dense(a, Array1::from_elem(t, 1.0)).expect("I − Q is non-singular")[0]
}

/// One-sided (upper) CUSUM ARL from start `s` by Nyström with `nodes` nodes.
pub fn arl1_nystrom_from(k: f64, h: f64, delta: f64, nodes: usize, s: f64) -> f64 {
    let (y, w) = gauss_legendre(nodes, 0.0, h);
    // Unknowns: L(0) (index 0) and L(y_j) (indices 1..=nodes).
    let n = nodes + 1;
    let mut a = Array2::<f64>::eye(n);
    let point = |u: f64| -> Vec<f64> {
        let mut row = vec![0.0; n];
        row[0] = norm_cdf(k - u - delta);
        for j in 0..nodes {
            row[j + 1] = w[j] * norm_pdf(y[j] + k - u - delta);
        }
        row
    };
    for (i, u) in std::iter::once(0.0).chain(y.iter().copied()).enumerate() {
        for (j, v) in point(u).into_iter().enumerate() {
            a[[i, j]] -= v;
        }
    }
    let l = solve_dense(a, Array1::from_elem(n, 1.0)).expect("I − K is non-singular");
    if s == 0.0 {
        return l[0];
    }
    1.0 + point(s).iter().zip(l.iter()).map(|(p, l)| p * l).sum::<f64>()
}

/// One-sided (upper) zero-state CUSUM ARL by Nyström.
pub fn arl1_nystrom(k: f64, h: f64, delta: f64, nodes: usize) -> f64 {
    arl1_nystrom_from(k, h, delta, nodes, 0.0)
}

/// Two-sided zero-state ARL from one-sided ARLs (exact for k ≥ 0).
pub fn two_sided(arl_up: f64, arl_down: f64) -> f64 {
    1.0 / (1.0 / arl_up + 1.0 / arl_down)
}

/// A CUSUM design.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CusumDesign {
    /// Reference value k (half the shift to detect fastest), ≥ 0.
    pub k: f64,
    /// Decision interval h > 0.
    pub h: f64,
    /// Head start as a fraction of h (0 = none; Lucas–Crosier FIR: 0.5).
    pub head_start: f64,
}

impl CusumDesign {
    /// A validated design.
    pub fn new(k: f64, h: f64, head_start: f64) -> Result<CusumDesign, ChartError> {
        check_range("k", k, 0.0, 10.0)?;
        check_range("h", h, 1e-3, 100.0)?;
        check_range("head start", head_start, 0.0, 0.99)?;
        Ok(CusumDesign { k, h, head_start })
    }

    /// The design with in-control ARL `arl0` (root-finding on h).
    pub fn for_arl0(k: f64, arl0: f64, head_start: f64) -> Result<CusumDesign, ChartError> {
        CusumDesign::for_arl_at(k, arl0, 0.0, head_start)
    }

    /// The design whose ARL at mean shift `delta` is `arl0` (see
    /// [`EwmaDesign::for_arl_at`](super::ewma::EwmaDesign::for_arl_at)).
    pub fn for_arl_at(k: f64, arl0: f64, delta: f64, head_start: f64) -> Result<CusumDesign, ChartError> {
        check_range("arl0", arl0, 1.5, 1e9)?;
        check_range("delta", delta, 0.0, 3.0)?;
        let probe = CusumDesign::new(k, 1.0, head_start)?;
        let f = |h: f64| (CusumDesign { h, ..probe }.arl(delta)).ln() - arl0.ln();
        // Bracket upwards: very large h overflow the ARL solution.
        let mut hi = 1.0;
        while f(hi) < 0.0 {
            hi *= 1.5;
            if hi > 100.0 {
                return Err(ChartError::Unreachable { arl0 });
            }
        }
        let h = brent(f, 0.01, hi, 1e-10).ok_or(ChartError::Unreachable { arl0 })?;
        CusumDesign::new(k, h, head_start)
    }

    /// Zero-state (or head-start) two-sided ARL at mean shift `delta`.
    pub fn arl(&self, delta: f64) -> f64 {
        if self.head_start == 0.0 {
            return two_sided(
                arl1_nystrom(self.k, self.h, delta, NYSTROM_NODES),
                arl1_nystrom(self.k, self.h, -delta, NYSTROM_NODES),
            );
        }
        self.arl_joint(delta, 80)
    }

    /// Two-sided ARL on the joint (C⁺, C⁻) Brook–Evans chain with `t` states
    /// per side, Richardson-extrapolated from t and t/2 (the chain converges
    /// at O(1/t²)).
    fn arl_joint(&self, delta: f64, t: usize) -> f64 {
        let fine = self.arl_joint_chain(delta, t);
        let coarse = self.arl_joint_chain(delta, t / 2);
        (4.0 * fine - coarse) / 3.0
    }

    fn arl_joint_chain(&self, delta: f64, t: usize) -> f64 {
        let (k, h) = (self.k, self.h);
        let w = 2.0 * h / (2.0 * t as f64 - 1.0);
        let idx = |i: usize, j: usize| i * t + j;
        // Cell of a value v ≥ 0 on one side: 0 for [0, w/2], i for ((i−½)w, (i+½)w].
        let cell = |v: f64| -> Option<usize> {
            if v <= w / 2.0 {
                Some(0)
            } else {
                let i = ((v - w / 2.0) / w).ceil() as usize;
                (i < t).then_some(i)
            }
        };
        let mut rows = Vec::with_capacity(t * t);
        for i in 0..t {
            for j in 0..t {
                let (cp, cm) = (i as f64 * w, j as f64 * w);
                // Next: C⁺' = max(0, cp + x − k), C⁻' = max(0, cm − x − k).
                // Breakpoints in x where either side changes cell.
                let mut xs: Vec<f64> = Vec::new();
                for c in 0..t {
                    let edge = if c == 0 { w / 2.0 } else { (c as f64 + 0.5) * w };
                    xs.push(edge - cp + k);
                    xs.push(-(edge - cm + k));
                }
                xs.sort_by(f64::total_cmp);
                xs.dedup();
                let mut row: Vec<(usize, f64)> = vec![(idx(i, j), 1.0)];
                let mut lo = f64::NEG_INFINITY;
                for hi in xs.into_iter().chain(std::iter::once(f64::INFINITY)) {
                    if hi <= lo {
                        continue;
                    }
                    let mid = if lo.is_infinite() {
                        hi - 1.0
                    } else if hi.is_infinite() {
                        lo + 1.0
                    } else {
                        (lo + hi) / 2.0
                    };
                    let p = norm_cdf(hi - delta) - norm_cdf(lo - delta);
                    if p > 0.0
                        && let (Some(a), Some(b)) = (cell((cp + mid - k).max(0.0)), cell((cm - mid - k).max(0.0)))
                    {
                        let target = idx(a, b);
                        match row.iter_mut().find(|(c, _)| *c == target) {
                            Some(e) => e.1 -= p,
                            None => row.push((target, -p)),
                        }
                    }
                    lo = hi;
                }
                rows.push(row);
            }
        }
        let x =
            bicgstab(&Csr::from_rows(&rows), &vec![1.0; t * t], 1e-12, 20_000).expect("the joint CUSUM chain solves");
        let s = cell(self.head_start * h).unwrap_or(t - 1);
        x[idx(s, s)]
    }
}

/// A running two-sided CUSUM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cusum {
    /// The design.
    pub design: CusumDesign,
    up: f64,
    down: f64,
}

impl Cusum {
    /// A chart at its starting state.
    pub fn new(design: CusumDesign) -> Cusum {
        let s = design.head_start * design.h;
        Cusum { design, up: s, down: s }
    }

    /// (C⁺, C⁻).
    pub fn statistic(&self) -> (f64, f64) {
        (self.up, self.down)
    }

    /// Adds an observation; on a signal both sums restart.
    pub fn observe(&mut self, x: f64) -> Result<Option<Signal>, ChartError> {
        check_finite(x)?;
        let d = &self.design;
        self.up = (self.up + x - d.k).max(0.0);
        self.down = (self.down - x - d.k).max(0.0);
        let signal = if self.up > d.h {
            Some(Signal {
                statistic: self.up,
                limit: d.h,
                direction: Direction::Up,
                rule: None,
            })
        } else if self.down > d.h {
            Some(Signal {
                statistic: self.down,
                limit: d.h,
                direction: Direction::Down,
                rule: None,
            })
        } else {
            None
        };
        if signal.is_some() {
            *self = Cusum::new(self.design);
        }
        Ok(signal)
    }
}
