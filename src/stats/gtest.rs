//! Likelihood-ratio (G) and Pearson tests on transition and usage counts.
//!
//! Two forms:
//! - [`markov_gof`]: observed transition counts against a reference chain
//!   treated as known, P_ij = (R_ij + α)/(R_i. + Kα) (the definition of the
//!   shared reference fixtures `markov_test_*.csv`);
//! - [`homogeneity`]: two samples of counts (window vs reference), rows
//!   tested for equal distributions, so the reference's own sampling error is
//!   accounted for. Detectors and `baseline diff` use this one.

use super::dist::chi2_sf;
use ndarray::Array2;
use serde::{Deserialize, Serialize};

/// Result of a count test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CountTest {
    /// G statistic (∞ when an observed count falls in a structural zero).
    pub g: f64,
    /// Degrees of freedom.
    pub df: f64,
    /// χ² upper-tail p-value of G.
    pub p_value: f64,
    /// Pearson X² statistic.
    pub x2: f64,
    /// χ² upper-tail p-value of X².
    pub p_value_x2: f64,
    /// Rows that entered the test.
    pub rows_used: usize,
    /// Cells that entered the test.
    pub cells_used: usize,
    /// Pearson residuals (O−E)/√E of the observed sample, per used cell.
    pub residuals: Vec<(usize, usize, f64)>,
}

/// Goodness of fit of observed transition counts to a smoothed reference chain.
pub fn markov_gof(reference: &Array2<f64>, observed: &Array2<f64>, alpha: f64) -> CountTest {
    let k = reference.ncols();
    let (mut g, mut x2, mut df) = (0.0, 0.0, 0.0);
    let (mut rows_used, mut cells_used) = (0, 0);
    let mut infinite = false;
    let mut residuals = Vec::new();
    for i in 0..reference.nrows() {
        let o_row: f64 = observed.row(i).sum();
        if o_row <= 0.0 {
            continue;
        }
        let r_row: f64 = reference.row(i).sum();
        let denom = r_row + k as f64 * alpha;
        rows_used += 1;
        let mut used_in_row = 0;
        for j in 0..k {
            let p = if denom > 0.0 {
                (reference[[i, j]] + alpha) / denom
            } else {
                0.0
            };
            let o = observed[[i, j]];
            if p <= 0.0 {
                if o > 0.0 {
                    infinite = true;
                }
                continue;
            }
            used_in_row += 1;
            let e = o_row * p;
            if o > 0.0 {
                g += 2.0 * o * (o / e).ln();
            }
            x2 += (o - e).powi(2) / e;
            residuals.push((i, j, (o - e) / e.sqrt()));
        }
        cells_used += used_in_row;
        df += (used_in_row as f64 - 1.0).max(0.0);
    }
    if infinite {
        g = f64::INFINITY;
        x2 = f64::INFINITY;
    }
    CountTest {
        g,
        df,
        p_value: if infinite { 0.0 } else { chi2_sf(g, df) },
        x2,
        p_value_x2: if infinite { 0.0 } else { chi2_sf(x2, df) },
        rows_used,
        cells_used,
        residuals,
    }
}

/// Two-sample homogeneity of count rows: for each row present in both
/// samples, a 2×K contingency test over the columns either sample used.
pub fn homogeneity(reference: &Array2<f64>, observed: &Array2<f64>) -> CountTest {
    let (mut g, mut x2, mut df) = (0.0, 0.0, 0.0);
    let (mut rows_used, mut cells_used) = (0, 0);
    let mut residuals = Vec::new();
    for i in 0..reference.nrows() {
        let r_row: f64 = reference.row(i).sum();
        let o_row: f64 = observed.row(i).sum();
        if r_row <= 0.0 || o_row <= 0.0 {
            continue;
        }
        let total = r_row + o_row;
        let cols: Vec<usize> = (0..reference.ncols())
            .filter(|&j| reference[[i, j]] + observed[[i, j]] > 0.0)
            .collect();
        if cols.len() < 2 {
            continue;
        }
        rows_used += 1;
        cells_used += cols.len();
        df += cols.len() as f64 - 1.0;
        for &j in &cols {
            let col = reference[[i, j]] + observed[[i, j]];
            for (x, row) in [(observed[[i, j]], o_row), (reference[[i, j]], r_row)] {
                let e = row * col / total;
                if x > 0.0 {
                    g += 2.0 * x * (x / e).ln();
                }
                x2 += (x - e).powi(2) / e;
            }
            let e = o_row * col / total;
            residuals.push((i, j, (observed[[i, j]] - e) / e.sqrt()));
        }
    }
    CountTest {
        g,
        df,
        p_value: chi2_sf(g, df),
        x2,
        p_value_x2: chi2_sf(x2, df),
        rows_used,
        cells_used,
        residuals,
    }
}

/// G statistic and degrees of freedom of [`homogeneity`], without the
/// residuals (for resampling loops).
pub fn homogeneity_g(reference: &[f64], observed: &[f64], ncols: usize) -> (f64, f64) {
    let (mut g, mut df) = (0.0, 0.0);
    for (r, o) in reference.chunks_exact(ncols).zip(observed.chunks_exact(ncols)) {
        let r_row: f64 = r.iter().sum();
        let o_row: f64 = o.iter().sum();
        if r_row <= 0.0 || o_row <= 0.0 {
            continue;
        }
        let total = r_row + o_row;
        let mut cols = 0usize;
        for (x, y) in r.iter().zip(o) {
            let col = x + y;
            if col <= 0.0 {
                continue;
            }
            cols += 1;
            if *y > 0.0 {
                g += 2.0 * y * (y / (o_row * col / total)).ln();
            }
            if *x > 0.0 {
                g += 2.0 * x * (x / (r_row * col / total)).ln();
            }
        }
        if cols >= 2 {
            df += cols as f64 - 1.0;
        } else if cols == 1 {
            // A single used column contributes nothing (G = 0 there).
        }
    }
    (g, df)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn homogeneity_of_one_2x2_table_by_hand() {
        // Table [[10, 20], [20, 10]]: E = 15 everywhere.
        // G = 2·(2·10·ln(10/15) + 2·20·ln(20/15)) = 6.7962...
        let t = homogeneity(&array![[10.0, 20.0]], &array![[20.0, 10.0]]);
        let g = 2.0 * (20.0 * (10.0f64 / 15.0).ln() + 40.0 * (20.0f64 / 15.0).ln());
        assert!((t.g - g).abs() < 1e-12);
        assert_eq!(t.df, 1.0);
        assert!((t.x2 - 4.0 * 25.0 / 15.0).abs() < 1e-12);
    }

    #[test]
    fn fast_g_matches_the_full_test() {
        let r = array![[5.0, 1.0, 0.0], [2.0, 2.0, 2.0], [0.0, 0.0, 0.0]];
        let o = array![[1.0, 4.0, 2.0], [0.0, 3.0, 1.0], [1.0, 0.0, 0.0]];
        let t = homogeneity(&r, &o);
        let (g, df) = homogeneity_g(r.as_slice().unwrap(), o.as_slice().unwrap(), 3);
        assert!((g - t.g).abs() < 1e-12 && df == t.df);
    }

    #[test]
    fn identical_samples_give_zero() {
        let r = array![[5.0, 1.0, 0.0], [2.0, 2.0, 2.0]];
        let t = homogeneity(&r, &r);
        assert!(t.g.abs() < 1e-12 && (t.p_value - 1.0).abs() < 1e-12);
        assert_eq!(t.df, 3.0);
    }
}
