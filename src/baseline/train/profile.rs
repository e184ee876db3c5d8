//! The T² profile: PCA of the scored features with Ledoit–Wolf shrinkage.

use super::{PROFILE_FEATURES, SessionRow};
use crate::baseline::types::*;
use crate::stats::pit::session_uniform;
use linfa::traits::Fit;
use ndarray::Array2;

/// The T² profile: z-scores of PROFILE_FEATURES (leave-one-out PIT), PCA by
/// linfa, Ledoit–Wolf shrinkage of the eigenvalues when m < 10p.
pub(super) fn profile(rows: &[SessionRow], idx: &[usize], features: &[FeatureBaseline]) -> Option<ProfileBaseline> {
    let usable: Vec<&FeatureBaseline> = PROFILE_FEATURES
        .iter()
        .filter_map(|f| features.iter().find(|b| b.feature == *f))
        .filter(|b| b.ecdf.distinct() >= 3)
        .collect();
    let p = usable.len();
    if p < 2 {
        return None;
    }
    let zs: Vec<Vec<f64>> = idx
        .iter()
        .filter_map(|&i| {
            usable
                .iter()
                .map(|b| {
                    let v = rows[i].features.get(b.feature)?;
                    Some(b.ecdf.z_loo(v, session_uniform(&rows[i].id)))
                })
                .collect()
        })
        .collect();
    let m = zs.len();
    if m < p + 5 {
        return None;
    }
    let x = Array2::from_shape_fn((m, p), |(i, j)| zs[i][j]);
    let pca = linfa_reduction::Pca::params(p)
        .fit(&linfa::DatasetBase::from(x.clone()))
        .ok()?;
    let mean: Vec<f64> = pca.mean().to_vec();
    let comps = pca.components();
    let sv = pca.singular_values();
    let mut variances: Vec<f64> = sv.iter().map(|s| s * s / (m as f64 - 1.0)).collect();
    let trace: f64 = variances.iter().sum();
    let mut components: Vec<Vec<f64>> = Vec::new();
    let mut kept_var = Vec::new();
    for (r, v) in variances.iter().enumerate() {
        if *v > 1e-9 * trace {
            components.push(comps.row(r).to_vec());
            kept_var.push(*v);
        }
    }
    variances = kept_var;
    let shrinkage = (m < 10 * p).then(|| ledoit_wolf(&x));
    if let Some(rho) = shrinkage {
        let mu = trace / p as f64;
        variances.iter_mut().for_each(|v| *v = (1.0 - rho) * *v + rho * mu);
    }
    Some(ProfileBaseline {
        features: usable.iter().map(|b| b.feature).collect(),
        mean,
        components,
        variances,
        shrinkage,
        m: m as u32,
    })
}

/// Ledoit–Wolf (2004) shrinkage intensity towards a scaled identity.
pub(super) fn ledoit_wolf(x: &Array2<f64>) -> f64 {
    let (m, p) = x.dim();
    let mean = x.mean_axis(ndarray::Axis(0)).expect("m > 0");
    let xc = x - &mean;
    let s = xc.t().dot(&xc) / m as f64;
    let mu = s.diag().sum() / p as f64;
    let mut delta2 = 0.0;
    for i in 0..p {
        for j in 0..p {
            let t = if i == j { mu } else { 0.0 };
            delta2 += (s[[i, j]] - t).powi(2);
        }
    }
    delta2 /= p as f64;
    let mut beta2 = 0.0;
    for r in xc.rows() {
        let mut d = 0.0;
        for i in 0..p {
            for j in 0..p {
                d += (r[i] * r[j] - s[[i, j]]).powi(2);
            }
        }
        beta2 += d / p as f64;
    }
    beta2 /= (m * m) as f64;
    if delta2 <= 0.0 {
        1.0
    } else {
        (beta2.min(delta2) / delta2).clamp(0.0, 1.0)
    }
}
