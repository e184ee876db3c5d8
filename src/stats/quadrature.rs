//! Gauss–Legendre quadrature, for the Nyström solutions of ARL integral equations.

/// Nodes and weights of the n-point Gauss–Legendre rule on [a, b]
/// (Newton iteration on the Legendre recurrence; exact for polynomials of
/// degree ≤ 2n−1). The rule on [−1, 1] is computed once per n and scaled.
pub fn gauss_legendre(n: usize, a: f64, b: f64) -> (Vec<f64>, Vec<f64>) {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    type Rule = Arc<(Vec<f64>, Vec<f64>)>;
    static CACHE: OnceLock<Mutex<HashMap<usize, Rule>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let unit = {
        let hit = cache.lock().ok().and_then(|c| c.get(&n).cloned());
        match hit {
            Some(u) => u,
            None => {
                let u = Arc::new(gauss_legendre_uncached(n, -1.0, 1.0));
                if let Ok(mut c) = cache.lock() {
                    c.insert(n, u.clone());
                }
                u
            }
        }
    };
    let half = (b - a) / 2.0;
    let mid = (b + a) / 2.0;
    (
        unit.0.iter().map(|x| mid + half * x).collect(),
        unit.1.iter().map(|w| half * w).collect(),
    )
}

fn gauss_legendre_uncached(n: usize, a: f64, b: f64) -> (Vec<f64>, Vec<f64>) {
    assert!(n >= 1, "at least one node");
    let mut x = vec![0.0; n];
    let mut w = vec![0.0; n];
    let half = (b - a) / 2.0;
    let mid = (b + a) / 2.0;
    for i in 0..n.div_ceil(2) {
        let mut z = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut dp = 0.0;
        for _ in 0..100 {
            let (mut p0, mut p1) = (1.0, z);
            for k in 2..=n {
                let p2 = ((2 * k - 1) as f64 * z * p1 - (k - 1) as f64 * p0) / k as f64;
                p0 = p1;
                p1 = p2;
            }
            let pn = if n == 1 { z } else { p1 };
            let pn1 = if n == 1 { 1.0 } else { p0 };
            dp = n as f64 * (z * pn - pn1) / (z * z - 1.0);
            let dz = pn / dp;
            z -= dz;
            if dz.abs() < 1e-15 {
                break;
            }
        }
        let wi = 2.0 / ((1.0 - z * z) * dp * dp);
        x[i] = mid - half * z;
        x[n - 1 - i] = mid + half * z;
        w[i] = half * wi;
        w[n - 1 - i] = half * wi;
    }
    (x, w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integrates_polynomials_and_gaussians() {
        let (x, w) = gauss_legendre(5, -1.0, 1.0);
        let s: f64 = x.iter().zip(&w).map(|(x, w)| w * x.powi(8)).sum();
        assert!((s - 2.0 / 9.0).abs() < 1e-14);
        let (x, w) = gauss_legendre(60, -8.0, 8.0);
        let s: f64 = x
            .iter()
            .zip(&w)
            .map(|(x, w)| w * super::super::dist::norm_pdf(*x))
            .sum();
        assert!((s - 1.0).abs() < 1e-12);
        let (_, w) = gauss_legendre(7, 2.0, 5.0);
        assert!((w.iter().sum::<f64>() - 3.0).abs() < 1e-13);
    }
}
