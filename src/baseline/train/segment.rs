//! Building one segment's baseline: distributions, loop tails, window
//! dispersion, exemplars, then the chart plan.

use super::aggregate::Aggregates;
use super::profile::profile;
use super::{MAX_OUTPUT_SAMPLE, PROFILE_FEATURES, RESAMPLES, SessionRow};
use crate::baseline::types::*;
use crate::features::sequence::{END, FnvState, NEW_TOOL, REASON, START};
use crate::features::text::N_LEXICONS;
use crate::features::{Feature, OutputObs};
use crate::model::SegmentKey;
use crate::stats::Ecdf;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use std::collections::{BTreeMap, BTreeSet, HashMap};

pub(super) fn feature_baseline(feature: Feature, values: &[f64]) -> Option<FeatureBaseline> {
    let ecdf = Ecdf::new(values).ok()?;
    Some(FeatureBaseline {
        feature,
        n: values.len() as u32,
        mean: ecdf.mean(),
        sd: ecdf.sd(),
        quantiles: [0.05, 0.25, 0.5, 0.75, 0.95].map(|p| ecdf.quantile(p)),
        ecdf,
    })
}

/// Evenly spaced order statistics, so huge per-output samples stay bounded.
pub(super) fn thin(mut v: Vec<f64>) -> Vec<f64> {
    if v.len() <= MAX_OUTPUT_SAMPLE {
        return v;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (0..MAX_OUTPUT_SAMPLE)
        .map(|i| v[(i * n + n / 2) / MAX_OUTPUT_SAMPLE])
        .collect()
}

pub(super) fn build_segment(
    rows: &[SessionRow],
    key: &SegmentKey,
    idx: &[usize],
    agg: Aggregates,
    excluded: u32,
    cfg: &TrainConfig,
) -> SegmentBaseline {
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ crate::features::sequence::hash_str(&key.to_string()));
    let feats = |i: usize| &rows[i].features;

    let features: Vec<FeatureBaseline> = Feature::ALL
        .iter()
        .filter_map(|&f| {
            let v: Vec<f64> = idx.iter().filter_map(|&i| feats(i).get(f)).collect();
            feature_baseline(f, &v)
        })
        .collect();

    let cost_success: Vec<f64> = idx
        .iter()
        .filter(|&&i| feats(i).success() == Some(1.0))
        .filter_map(|&i| feats(i).get(Feature::CostUsd))
        .collect();

    // Outputs.
    let all_out: Vec<&OutputObs> = idx.iter().flat_map(|&i| rows[i].outputs.iter()).collect();
    let chars = Ecdf::new(&thin(all_out.iter().map(|o| f64::from(o.text.chars)).collect())).ok();
    let tokens = Ecdf::new(&thin(
        all_out.iter().filter_map(|o| o.tokens.map(|t| t as f64)).collect(),
    ))
    .ok();
    let lexicon = (0..N_LEXICONS)
        .map(|l| Ecdf::new(&thin(all_out.iter().map(|o| f64::from(o.text.lexicon[l])).collect())).ok())
        .collect();
    let lag1 = chars.as_ref().map_or(0.0, |e| {
        let pairs: Vec<(f64, f64)> = idx
            .iter()
            .flat_map(|&i| {
                rows[i]
                    .outputs
                    .windows(2)
                    .map(|w| {
                        (
                            e.percentile(f64::from(w[0].text.chars)),
                            e.percentile(f64::from(w[1].text.chars)),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        correlation(&pairs)
    });
    let outputs = OutputBaseline {
        outputs: all_out.len() as u64,
        per_session: all_out.len() as f64 / idx.len().max(1) as f64,
        chars,
        tokens,
        lexicon,
        lag1,
    };

    // Markov chain.
    let mut states: Vec<String> = vec![START.into(), END.into(), REASON.into(), NEW_TOOL.into()];
    let tool_names: BTreeSet<&str> = agg
        .transitions
        .iter()
        .flat_map(|(a, b, _)| [a.as_str(), b.as_str()])
        .filter(|s| !states.iter().any(|x| x == s))
        .collect();
    states.extend(tool_names.iter().map(|s| s.to_string()));
    let k = states.len();
    let pos: HashMap<&str, usize, FnvState> = states.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
    let mut counts = vec![0.0; k * k];
    for (a, b, n) in &agg.transitions {
        counts[pos[a.as_str()] * k + pos[b.as_str()]] += n;
    }
    let alpha = 0.5;
    let probs: Vec<f64> = (0..k)
        .flat_map(|i| {
            let row: f64 = counts[i * k..(i + 1) * k].iter().sum();
            let c = &counts;
            (0..k).map(move |j| (c[i * k + j] + alpha) / (row + k as f64 * alpha))
        })
        .collect();
    let session_cells = |i: usize| -> Vec<(usize, f64)> {
        let mut prev = pos[START];
        let mut v = Vec::new();
        for s in feats(i).states.iter().map(String::as_str).chain(std::iter::once(END)) {
            let cur = pos.get(s).copied().unwrap_or(pos[NEW_TOOL]);
            v.push((prev * k + cur, 1.0));
            prev = cur;
        }
        v
    };
    let markov_dispersion = dispersion(idx, (k, k), &session_cells, cfg.window as usize, &mut rng);
    let markov_sessions = session_vectors(idx, &session_cells);
    let (top_bigrams, top_trigrams) = ngrams(rows, idx);

    // Tool usage.
    let mut tools: Vec<String> = agg.tools.iter().map(|(t, _)| t.clone()).collect();
    let mut tool_counts: Vec<f64> = agg.tools.iter().map(|(_, n)| *n).collect();
    tools.push(NEW_TOOL.into());
    tool_counts.push(0.0);
    let tpos: HashMap<&str, usize, FnvState> = tools.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
    let tool_cells = |i: usize| -> Vec<(usize, f64)> {
        feats(i)
            .tool_counts
            .iter()
            .map(|(t, n)| (tpos.get(t.as_str()).copied().unwrap_or(tools.len() - 1), f64::from(*n)))
            .collect()
    };
    let tool_dispersion = dispersion(idx, (1, tools.len()), &tool_cells, cfg.window as usize, &mut rng);
    let tool_sessions = session_vectors(idx, &tool_cells);

    // Loops.
    let mut loops = Vec::new();
    let same: Vec<f64> = idx
        .iter()
        .map(|&i| feats(i).get(Feature::RepeatCalls).unwrap_or(0.0))
        .collect();
    loops.push(loop_stat("same_call", &same));
    for l in 1..=crate::features::sequence::MAX_CYCLE {
        let v: Vec<f64> = idx.iter().map(|&i| f64::from(feats(i).max_cycle_reps[l - 1])).collect();
        loops.push(loop_stat(&format!("cycle{l}"), &v));
    }

    // Rates beyond polars' sums.
    let mut rates = agg.rates;
    for &i in idx {
        let r = &rows[i];
        for (c, n) in &r.features.error_classes {
            *rates.error_classes.entry(c.clone()).or_insert(0) += u64::from(*n);
        }
        for (c, n) in &r.features.inferred_error_classes {
            *rates.inferred_error_classes.entry(c.clone()).or_insert(0) += u64::from(*n);
        }
        rates.long_sessions.add(&r.features);
        if r.features.get(Feature::Contradictions).is_some_and(|n| n > 0.0) {
            rates.contradiction_sessions += 1;
        }
        if r.features.get(Feature::Claims).is_some_and(|n| n > 0.0) {
            rates.claim_sessions += 1;
        }
        if let Some(s) = r.features.success() {
            let ok = u32::from(s == 1.0);
            let band = crate::features::length_band(r.features.get(Feature::Messages).unwrap_or(0.0));
            let e = rates.success_by_length.entry(band.to_string()).or_insert((0, 0));
            e.0 += ok;
            e.1 += 1;
            let e = rates.success_by_task.entry(r.task_type.clone()).or_insert((0, 0));
            e.0 += ok;
            e.1 += 1;
            if let Some(intent) = &r.intent {
                let e = rates.success_by_intent.entry(intent.clone()).or_insert((0, 0));
                e.0 += ok;
                e.1 += 1;
            }
            for tool in r.features.tool_counts.keys() {
                let e = rates.success_by_tool.entry(tool.clone()).or_insert((0, 0));
                e.0 += ok;
                e.1 += 1;
            }
        }
    }

    let profile = profile(rows, idx, &features);
    let exemplars = exemplars(rows, idx, &features);
    SegmentBaseline {
        key: key.clone(),
        pooled_task_types: Vec::new(),
        sessions: idx.len() as u32,
        steps: idx.iter().map(|&i| u64::from(feats(i).total_steps)).sum(),
        excluded,
        unplanned: Vec::new(),
        features,
        cost_success: Ecdf::new(&cost_success).ok(),
        outputs,
        markov: MarkovBaseline {
            states,
            counts,
            alpha,
            probs,
            dispersion: markov_dispersion,
            top_bigrams,
            top_trigrams,
            sessions: markov_sessions,
        },
        tools: ToolBaseline {
            tools,
            counts: tool_counts,
            dispersion: tool_dispersion,
            sessions: tool_sessions,
        },
        loops,
        rates,
        profile,
        charts: Vec::new(),
        exemplars,
    }
}

/// Sparse per-session vectors, at most MAX_SESSION_VECTORS (evenly spaced).
pub(super) fn session_vectors(idx: &[usize], cells: &dyn Fn(usize) -> Vec<(usize, f64)>) -> Vec<Vec<(u32, u32)>> {
    let n = idx.len();
    let take = n.min(MAX_SESSION_VECTORS);
    (0..take)
        .map(|j| {
            let mut m: BTreeMap<u32, u32> = BTreeMap::new();
            for (c, x) in cells(idx[j * n / take]) {
                *m.entry(c as u32).or_insert(0) += x as u32;
            }
            m.into_iter().collect()
        })
        .collect()
}

pub(super) fn correlation(pairs: &[(f64, f64)]) -> f64 {
    let n = pairs.len() as f64;
    if n < 3.0 {
        return 0.0;
    }
    let (mx, my) = (
        pairs.iter().map(|p| p.0).sum::<f64>() / n,
        pairs.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in pairs {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx).powi(2);
        syy += (y - my).powi(2);
    }
    if sxx <= 0.0 || syy <= 0.0 {
        0.0
    } else {
        sxy / (sxx * syy).sqrt()
    }
}

/// Over-dispersion of the window homogeneity test under the reference:
/// windows of `window` random reference sessions against the rest, mean G
/// over mean df (≥ 1). Sessions differ by task, so their transitions are
/// more variable than one multinomial; this factor (a Rao–Scott style
/// correction) keeps the window test's false alarms at its level.
pub(super) fn dispersion(
    idx: &[usize],
    shape: (usize, usize),
    cells: &dyn Fn(usize) -> Vec<(usize, f64)>,
    window: usize,
    rng: &mut StdRng,
) -> f64 {
    let per: Vec<Vec<(usize, f64)>> = idx.iter().map(|&i| cells(i)).collect();
    let n = per.len();
    let w = window.min(n / 2);
    if w < 3 {
        return 1.0;
    }
    let size = shape.0 * shape.1;
    let mut total = vec![0.0; size];
    for v in &per {
        for &(c, x) in v {
            total[c] += x;
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    let (mut a, mut b) = (vec![0.0; size], vec![0.0; size]);
    let (mut g, mut df) = (0.0, 0.0);
    for _ in 0..RESAMPLES {
        // A random window of w sessions against the rest.
        let (window_sessions, _) = order.partial_shuffle(rng, w);
        a.iter_mut().for_each(|x| *x = 0.0);
        for &s in window_sessions.iter() {
            for &(c, x) in &per[s] {
                a[c] += x;
            }
        }
        for ((bx, t), ax) in b.iter_mut().zip(&total).zip(&a) {
            *bx = t - ax;
        }
        let (gi, dfi) = crate::stats::gtest::homogeneity_g(&b, &a, shape.1);
        g += gi;
        df += dfi;
    }
    if df <= 0.0 { 1.0 } else { (g / df).max(1.0) }
}

/// Top tool bigrams and trigrams.
pub(super) type Ngrams = (Vec<(String, String, u64)>, Vec<(String, String, String, u64)>);

pub(super) fn ngrams(rows: &[SessionRow], idx: &[usize]) -> Ngrams {
    let mut bi: HashMap<(&str, &str), u64, FnvState> = HashMap::default();
    let mut tri: HashMap<(&str, &str, &str), u64, FnvState> = HashMap::default();
    let mut tools: Vec<&str> = Vec::new();
    for &i in idx {
        tools.clear();
        tools.extend(
            rows[i]
                .features
                .states
                .iter()
                .map(String::as_str)
                .filter(|s| *s != REASON),
        );
        for w in tools.windows(2) {
            *bi.entry((w[0], w[1])).or_insert(0) += 1;
        }
        for w in tools.windows(3) {
            *tri.entry((w[0], w[1], w[2])).or_insert(0) += 1;
        }
    }
    let mut bi: Vec<_> = bi.into_iter().map(|((a, b), n)| (a, b, n)).collect();
    bi.sort_by(|x, y| y.2.cmp(&x.2).then_with(|| (x.0, x.1).cmp(&(y.0, y.1))));
    bi.truncate(10);
    let mut tri: Vec<_> = tri.into_iter().map(|((a, b, c), n)| (a, b, c, n)).collect();
    tri.sort_by(|x, y| y.3.cmp(&x.3).then_with(|| (x.0, x.1, x.2).cmp(&(y.0, y.1, y.2))));
    tri.truncate(10);
    (
        bi.into_iter().map(|(a, b, n)| (a.into(), b.into(), n)).collect(),
        tri.into_iter()
            .map(|(a, b, c, n)| (a.into(), b.into(), c.into(), n))
            .collect(),
    )
}

/// Loop statistic with a geometric tail beyond the empirical part: k0 is the
/// smallest k ≥ 2 with at most max(5, n/10) sessions at or above it; beyond
/// k0, P(max ≥ k) = P(max ≥ k0)·q^(k−k0) with q the geometric MLE of the
/// excess over k0 under a uniform prior, (S + 1)/(S + c + 2).
pub(super) fn loop_stat(name: &str, values: &[f64]) -> LoopStat {
    let ecdf = Ecdf::new(values).unwrap_or_else(|_| Ecdf::new(&[0.0]).expect("non-empty"));
    let n = values.len() as f64;
    let limit = (n / 10.0).max(5.0);
    let mut k0 = 2u32;
    while (ecdf.upper_tail(f64::from(k0)) * n) > limit {
        k0 += 1;
    }
    let above: Vec<f64> = values.iter().copied().filter(|v| *v >= f64::from(k0)).collect();
    let c = above.len() as f64;
    let s: f64 = above.iter().map(|v| v - f64::from(k0)).sum();
    LoopStat {
        name: name.to_string(),
        k0,
        p_k0: super::plan::smoothed_rate(c, n),
        q: (s + 1.0) / (s + c + 2.0),
        ecdf,
    }
}

/// Most typical sessions: smallest mean |z| over the profile features.
pub(super) fn exemplars(rows: &[SessionRow], idx: &[usize], features: &[FeatureBaseline]) -> Vec<String> {
    let mut scored: Vec<(f64, &str)> = idx
        .iter()
        .map(|&i| {
            let zs: Vec<f64> = PROFILE_FEATURES
                .iter()
                .filter_map(|f| {
                    let b = features.iter().find(|b| b.feature == *f)?;
                    let v = rows[i].features.get(*f)?;
                    Some(crate::stats::dist::norm_quantile(b.ecdf.percentile(v).clamp(0.001, 0.999)).abs())
                })
                .collect();
            (zs.iter().sum::<f64>() / zs.len().max(1) as f64, rows[i].id.as_str())
        })
        .collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)));
    scored.into_iter().take(5).map(|(_, s)| s.to_string()).collect()
}
