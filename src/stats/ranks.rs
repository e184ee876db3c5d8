//! Rank tests and multiple-testing adjustment for comparing two samples of
//! sessions (the independent units of agent data).

use super::dist::norm_cdf;

/// Mann–Whitney U test, normal approximation with tie and continuity
/// corrections: (U of `a`, z, two-sided p). `None` when a sample is empty or
/// every value is tied.
pub fn mann_whitney(a: &[f64], b: &[f64]) -> Option<(f64, f64, f64)> {
    let (n1, n2) = (a.len(), b.len());
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let mut all: Vec<(f64, usize)> = a.iter().map(|x| (*x, 0)).chain(b.iter().map(|x| (*x, 1))).collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let n = all.len();
    let mut rank_sum_a = 0.0;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        let t = (j - i + 1) as f64;
        tie_term += t * t * t - t;
        for x in &all[i..=j] {
            if x.1 == 0 {
                rank_sum_a += avg;
            }
        }
        i = j + 1;
    }
    let (n1f, n2f, nf) = (n1 as f64, n2 as f64, n as f64);
    let u = rank_sum_a - n1f * (n1f + 1.0) / 2.0;
    let mu = n1f * n2f / 2.0;
    let var = n1f * n2f / 12.0 * ((nf + 1.0) - tie_term / (nf * (nf - 1.0)));
    if var <= 0.0 {
        return None;
    }
    let d = u - mu;
    let z = (d - 0.5 * d.signum()) / var.sqrt();
    let z = if d.abs() < 0.5 { 0.0 } else { z };
    Some((u, z, (2.0 * norm_cdf(-z.abs())).min(1.0)))
}

/// Two-sample test of a pooled share when observations come in clusters
/// (sessions): per cluster, `x` hits out of `n` trials. The share
/// p̂ = Σx/Σn has the cluster-robust (sandwich) variance
/// Σ(x_i − p̂ n_i)² / (N(N−1) n̄²); the difference is referred to Student's t
/// with min(N_a, N_b) − 1 degrees of freedom (conservative for few clusters).
/// Returns (share a, share b, t, two-sided p); `None` when a side has fewer
/// than two clusters with trials or both variances are zero.
pub fn cluster_share_test(a: &[(f64, f64)], b: &[(f64, f64)]) -> Option<(f64, f64, f64, f64)> {
    let side = |v: &[(f64, f64)]| -> Option<(f64, f64, usize)> {
        let v: Vec<&(f64, f64)> = v.iter().filter(|c| c.1 > 0.0).collect();
        let k = v.len();
        if k < 2 {
            return None;
        }
        let (sx, sn) = v.iter().fold((0.0, 0.0), |acc, c| (acc.0 + c.0, acc.1 + c.1));
        let p = sx / sn;
        let nbar = sn / k as f64;
        let ss: f64 = v.iter().map(|c| (c.0 - p * c.1).powi(2)).sum();
        Some((p, ss / (k as f64 * (k as f64 - 1.0) * nbar * nbar), k))
    };
    let (pa, va, ka) = side(a)?;
    let (pb, vb, kb) = side(b)?;
    let se = (va + vb).sqrt();
    if se <= 0.0 {
        return None;
    }
    let t = (pa - pb) / se;
    let df = (ka.min(kb) - 1) as f64;
    let dist = statrs::distribution::StudentsT::new(0.0, 1.0, df).ok()?;
    use statrs::distribution::ContinuousCDF;
    Some((pa, pb, t, (2.0 * dist.cdf(-t.abs())).min(1.0)))
}

/// Holm–Bonferroni adjusted p-values (family-wise error control), in input order.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| p[i].total_cmp(&p[j]));
    let mut adj = vec![1.0; m];
    let mut running: f64 = 0.0;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p[i]).min(1.0));
        adj[i] = running;
    }
    adj
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mann_whitney_by_hand() {
        // a entirely below b (n1 = n2 = 5): U = 0, μ = 12.5, σ² = 25·11/12,
        // z = (0 − 12.5 + 0.5)/√(22.9167) = −2.50672, p = 2Φ(−2.50672) = 0.012186.
        let (u, z, p) = mann_whitney(&[1.0, 2.0, 3.0, 4.0, 5.0], &[6.0, 7.0, 8.0, 9.0, 10.0]).unwrap();
        assert_eq!(u, 0.0);
        assert!((z + 12.0 / (25.0f64 * 11.0 / 12.0).sqrt()).abs() < 1e-12);
        assert!((p - 2.0 * norm_cdf(z)).abs() < 1e-15 && (p - 0.012186).abs() < 1e-5);
        assert!(mann_whitney(&[1.0, 1.0], &[1.0]).is_none(), "all tied");
        let (_, z, p) = mann_whitney(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]).unwrap();
        assert_eq!(z, 0.0);
        assert_eq!(p, 1.0);
    }

    #[test]
    fn cluster_share_by_hand() {
        // a: clusters (1/2, 1/2) → p = 0.5, residuals 0 → variance 0;
        // b: (0/2, 2/2) → p = 0.5 too: t = 0.
        let (pa, pb, t, p) = cluster_share_test(&[(1.0, 2.0), (1.0, 2.0)], &[(0.0, 2.0), (2.0, 2.0)]).unwrap();
        assert_eq!((pa, pb, t, p), (0.5, 0.5, 0.0, 1.0));
        // a: (1/1, 1/1, 0/1) → p = 2/3, Σ(x−pn)² = 1/9+1/9+4/9 = 2/3, var = (2/3)/(3·2·1) = 1/9;
        // b: (0/1, 0/1, 1/1) → p = 1/3, var = 1/9; t = (1/3)/√(2/9) = 0.7071.
        let (_, _, t, _) = cluster_share_test(
            &[(1.0, 1.0), (1.0, 1.0), (0.0, 1.0)],
            &[(0.0, 1.0), (0.0, 1.0), (1.0, 1.0)],
        )
        .unwrap();
        assert!((t - (1.0f64 / 3.0) / (2.0f64 / 9.0).sqrt()).abs() < 1e-12);
        assert!(cluster_share_test(&[(1.0, 1.0)], &[(0.0, 1.0), (1.0, 1.0)]).is_none());
    }

    #[test]
    fn holm_adjusts_stepwise() {
        // m = 4: sorted p 0.01, 0.02, 0.03, 0.5 → 0.04, 0.06, 0.06, 0.5.
        let adj = holm(&[0.03, 0.01, 0.5, 0.02]);
        let want = [0.06, 0.04, 0.5, 0.06];
        for (a, w) in adj.iter().zip(want) {
            assert!((a - w).abs() < 1e-12, "{adj:?}");
        }
    }
}
