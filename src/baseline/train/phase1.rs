//! Phase I: reference sessions out of control are left out of a segment.

use super::{PHASE1_FEATURES, SessionRow};
use crate::baseline::types::*;
use crate::features::Feature;
use crate::features::sequence::FnvState;
use std::collections::{HashMap, HashSet};

/// Phase-I cleaning: (kept indices, excluded with reasons).
pub(super) fn phase1(rows: &[SessionRow], idx: &[usize], cfg: &TrainConfig) -> (Vec<usize>, Vec<(usize, String)>) {
    let mut worst: Vec<(f64, usize, String)> = Vec::new();
    // Per session: its largest |z|, and the feature, z and value behind it.
    let mut score: HashMap<usize, (f64, Feature, f64, f64), FnvState> = HashMap::default();
    for &f in PHASE1_FEATURES {
        let vals: Vec<(usize, f64)> = idx
            .iter()
            .filter_map(|&i| rows[i].features.get(f).map(|v| (i, (1.0 + v.max(0.0)).ln())))
            .collect();
        if vals.len() < 5 {
            continue;
        }
        let mut xs: Vec<f64> = vals.iter().map(|v| v.1).collect();
        let med = median(&mut xs);
        let mut dev: Vec<f64> = xs.iter().map(|x| (x - med).abs()).collect();
        let mad = 1.4826 * median(&mut dev);
        if mad <= 0.0 {
            continue;
        }
        for (i, x) in vals {
            let z = (x - med) / mad;
            let e = score.entry(i).or_insert((0.0, f, 0.0, 0.0));
            if z.abs() > e.0 {
                *e = (z.abs(), f, z, x);
            }
        }
    }
    for (i, (z_abs, f, z, x)) in score {
        if z_abs > cfg.phase1_robust_z {
            worst.push((
                z_abs,
                i,
                format!("{} robust z {z:.1} (value {:.4})", f.name(), x.exp() - 1.0),
            ));
        }
    }
    worst.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    worst.truncate((cfg.phase1_max_share * idx.len() as f64).floor() as usize);
    let out: HashSet<usize> = worst.iter().map(|w| w.1).collect();
    (
        idx.iter().copied().filter(|i| !out.contains(i)).collect(),
        worst.into_iter().map(|(_, i, r)| (i, r)).collect(),
    )
}

pub(super) fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}
