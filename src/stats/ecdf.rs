//! Empirical distributions: percentiles for reports, and the randomized
//! probability-integral transform that maps any feature to an in-control
//! N(0,1) score before charting.
//!
//! Why randomized ranks: if a new value is exchangeable with the n reference
//! values, its rank among the n+1 (ties broken uniformly at random) is
//! uniform on {1..n+1}, so `u = (less + (equal+1)·V) / (n+1)` with V ~ U(0,1)
//! is exactly U(0,1) for any distribution, continuous or discrete, skewed or
//! not. `z = Φ⁻¹(u)` is then exactly N(0,1) marginally, which is what the
//! chart designs assume.

use super::dist::norm_quantile;
use serde::{Deserialize, Serialize};

/// An empirical distribution, stored as distinct values with cumulative counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ecdf {
    values: Vec<f64>,
    cum: Vec<u32>,
    n: u32,
}

/// Why an empirical distribution could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EcdfError {
    /// The sample is empty.
    #[error("empty sample")]
    Empty,
    /// The sample holds NaN or an infinity.
    #[error("sample holds a non-finite value")]
    NonFinite,
}

impl Ecdf {
    /// Builds from a sample.
    pub fn new(sample: &[f64]) -> Result<Ecdf, EcdfError> {
        if sample.is_empty() {
            return Err(EcdfError::Empty);
        }
        if sample.iter().any(|x| !x.is_finite()) {
            return Err(EcdfError::NonFinite);
        }
        let mut s = sample.to_vec();
        s.sort_by(f64::total_cmp);
        let mut values = Vec::new();
        let mut cum = Vec::new();
        for (i, x) in s.iter().enumerate() {
            if values.last() == Some(x) {
                *cum.last_mut().expect("pushed with the value") = i as u32 + 1;
            } else {
                values.push(*x);
                cum.push(i as u32 + 1);
            }
        }
        Ok(Ecdf {
            values,
            cum,
            n: sample.len() as u32,
        })
    }

    /// Checks what a decoded distribution must hold (a file may have been
    /// altered): values finite and strictly increasing, counts rising to n.
    pub fn check(&self) -> Result<(), String> {
        if self.n == 0 || self.values.is_empty() {
            return Err("empty distribution".into());
        }
        if self.values.len() != self.cum.len() {
            return Err(format!("{} values but {} counts", self.values.len(), self.cum.len()));
        }
        if self.values.iter().any(|x| !x.is_finite()) {
            return Err("a non-finite value".into());
        }
        if self.values.windows(2).any(|w| w[0] >= w[1]) || self.cum.windows(2).any(|w| w[0] >= w[1]) {
            return Err("values or counts not increasing".into());
        }
        if self.cum.last() != Some(&self.n) {
            return Err(format!("counts end at {:?}, not at n = {}", self.cum.last(), self.n));
        }
        Ok(())
    }

    /// Sample size.
    pub fn len(&self) -> usize {
        self.n as usize
    }

    /// Never true (a built distribution has at least one value).
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Number of distinct values.
    pub fn distinct(&self) -> usize {
        self.values.len()
    }

    /// (count below x, count equal to x).
    pub fn counts(&self, x: f64) -> (u32, u32) {
        let i = self.values.partition_point(|v| *v < x);
        let less = if i == 0 { 0 } else { self.cum[i - 1] };
        let equal = if i < self.values.len() && self.values[i] == x {
            self.cum[i] - less
        } else {
            0
        };
        (less, equal)
    }

    /// Mid-rank percentile of x in [0, 1], for reports.
    pub fn percentile(&self, x: f64) -> f64 {
        let (less, equal) = self.counts(x);
        (f64::from(less) + f64::from(equal) / 2.0) / f64::from(self.n)
    }

    /// Share of the sample ≥ x.
    pub fn upper_tail(&self, x: f64) -> f64 {
        let (less, _) = self.counts(x);
        f64::from(self.n - less) / f64::from(self.n)
    }

    /// Randomized PIT of a new value: exactly U(0,1) under exchangeability.
    pub fn pit(&self, x: f64, v: f64) -> f64 {
        let (less, equal) = self.counts(x);
        (f64::from(less) + f64::from(equal + 1) * v) / f64::from(self.n + 1)
    }

    /// Randomized PIT of a value that is itself one of the sample points
    /// (leave-one-out), for scoring the reference sessions themselves.
    pub fn pit_loo(&self, x: f64, v: f64) -> f64 {
        let (less, equal) = self.counts(x);
        let equal = equal.saturating_sub(1);
        (f64::from(less) + f64::from(equal + 1) * v) / f64::from(self.n)
    }

    /// N(0,1) score of a new value.
    pub fn z(&self, x: f64, v: f64) -> f64 {
        norm_quantile(self.pit(x, v))
    }

    /// N(0,1) score of a sample point (leave-one-out).
    pub fn z_loo(&self, x: f64, v: f64) -> f64 {
        norm_quantile(self.pit_loo(x, v))
    }

    /// Sample quantile, linear interpolation between order statistics (type 7).
    pub fn quantile(&self, p: f64) -> f64 {
        let h = (f64::from(self.n) - 1.0) * p.clamp(0.0, 1.0);
        let lo = h.floor() as u32;
        let frac = h - f64::from(lo);
        let at = |k: u32| self.values[self.cum.partition_point(|c| *c <= k)];
        let a = at(lo);
        if frac == 0.0 || lo + 1 >= self.n {
            a
        } else {
            a + frac * (at(lo + 1) - a)
        }
    }

    /// The sample itself, sorted.
    pub fn values(&self) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.n as usize);
        let mut prev = 0;
        for (v, c) in self.values.iter().zip(&self.cum) {
            out.extend(std::iter::repeat_n(*v, (c - prev) as usize));
            prev = *c;
        }
        out
    }

    /// Sample mean.
    pub fn mean(&self) -> f64 {
        let mut prev = 0;
        let mut s = 0.0;
        for (v, c) in self.values.iter().zip(&self.cum) {
            s += v * f64::from(c - prev);
            prev = *c;
        }
        s / f64::from(self.n)
    }

    /// Sample standard deviation (n−1 denominator; 0 for one value).
    pub fn sd(&self) -> f64 {
        if self.n < 2 {
            return 0.0;
        }
        let m = self.mean();
        let mut prev = 0;
        let mut s = 0.0;
        for (v, c) in self.values.iter().zip(&self.cum) {
            s += (v - m).powi(2) * f64::from(c - prev);
            prev = *c;
        }
        (s / f64::from(self.n - 1)).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_percentiles_quantiles() {
        let e = Ecdf::new(&[3.0, 1.0, 2.0, 2.0, 5.0]).unwrap();
        assert_eq!(e.counts(2.0), (1, 2));
        assert_eq!(e.counts(4.0), (4, 0));
        assert_eq!(e.percentile(2.0), 0.4);
        assert_eq!(e.quantile(0.5), 2.0);
        assert_eq!(e.quantile(0.75), 3.0);
        assert_eq!(e.quantile(0.875), 4.0);
        assert_eq!(e.mean(), 2.6);
        // deviations from 2.6: 0.4, −1.6, −0.6, −0.6, 2.4; squares sum to 9.2.
        assert!((e.sd() - (9.2f64 / 4.0).sqrt()).abs() < 1e-12);
        assert_eq!(Ecdf::new(&[]).unwrap_err(), EcdfError::Empty);
        assert_eq!(Ecdf::new(&[f64::NAN]).unwrap_err(), EcdfError::NonFinite);
    }

    #[test]
    fn randomized_pit_is_uniform_for_discrete_data() {
        // Heavily tied data (four values), a fresh reference of 30 draws and one
        // new draw per trial: over references the PIT is exactly U(0,1).
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let draw = |rng: &mut rand::rngs::StdRng| (rng.random::<f64>() * 4.0).floor().powi(2);
        let mut bins = [0u32; 10];
        let n = 200_000;
        for _ in 0..n {
            let reference: Vec<f64> = (0..30).map(|_| draw(&mut rng)).collect();
            let e = Ecdf::new(&reference).unwrap();
            let u = e.pit(draw(&mut rng), rng.random::<f64>());
            bins[(u * 10.0) as usize] += 1;
        }
        // Each decile holds 10% ± 0.35% (about five standard errors).
        for b in bins {
            let share = f64::from(b) / n as f64;
            assert!((share - 0.1).abs() < 0.0035, "{bins:?}");
        }
    }
}
