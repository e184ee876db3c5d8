//! `baseline show` (a readable summary) and `baseline diff` (which
//! transitions, tools, features and rates moved between two baselines, each
//! with its test statistic and p-value, ranked).
//!
//! Diff tests treat sessions as the independent units (transitions within a
//! session are not independent, and sessions differ by task): a tool's share
//! of tool calls and a transition's share of the transitions out of its
//! state are compared with a cluster-robust t test (sessions as clusters);
//! features and rates with a Mann–Whitney test on per-session values; all
//! item p-values of a segment pair are Holm-adjusted together. Overall, a
//! permutation test (session labels shuffled) of the homogeneity G statistic
//! of the transition and tool counts.

use super::types::{Baseline, SegmentBaseline};
use crate::features::Feature;
use crate::model::SegmentKey;
use crate::stats::gtest::homogeneity;
use crate::stats::ranks::{cluster_share_test, holm, mann_whitney};
use ndarray::Array2;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Permutations for the overall tests.
pub const PERMUTATIONS: usize = 999;

/// Readable summary of a baseline as JSON.
pub fn show_json(b: &Baseline) -> Value {
    json!({
        "meta": {
            "schema_version": b.meta.schema_version,
            "agentdrift_version": b.meta.agentdrift_version,
            "created_unix_ms": b.meta.created_unix_ms,
            "inputs": b.meta.inputs,
            "sessions": b.meta.sessions,
            "steps": b.meta.steps,
            "config": b.meta.config,
            "lexicon_version": b.meta.lexicon_version,
            "lexicon_hash": b.meta.lexicon_hash,
            "taxonomy_version": b.meta.taxonomy.as_ref().map(|t| &t.version),
            "taxonomy_hash": b.meta.taxonomy.as_ref().map(|t| &t.sha256),
            "grounding_version": b.meta.grounding.as_ref().map(|t| &t.version),
            "grounding_hash": b.meta.grounding.as_ref().map(|t| &t.sha256),
            "warnings": b.meta.warnings,
            "phase1_excluded": b.meta.phase1_excluded,
        },
        "segments": b.segments.iter().map(segment_json).collect::<Vec<_>>(),
    })
}

fn long_json(l: &crate::baseline::LongSessions) -> Value {
    serde_json::to_value(l.rates()).expect("plain numbers serialise")
}

/// `successes/sessions` per key, for the text summary.
fn success_line(t: &std::collections::BTreeMap<String, (u32, u32)>, max: usize) -> String {
    let mut parts: Vec<String> = t.iter().take(max).map(|(k, (s, n))| format!("{k} {s}/{n}")).collect();
    if t.len() > max {
        parts.push(format!("… {} more", t.len() - max));
    }
    parts.join(", ")
}

fn segment_json(s: &SegmentBaseline) -> Value {
    let k = s.markov.states.len();
    let mut trans: Vec<(f64, usize, usize)> = (0..k * k)
        .filter(|c| s.markov.counts[*c] > 0.0)
        .map(|c| (s.markov.counts[c], c / k, c % k))
        .collect();
    trans.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let r = &s.rates;
    json!({
        "segment": s.key,
        "pooled_task_types": s.pooled_task_types,
        "sessions": s.sessions,
        "excluded": s.excluded,
        "unplanned": s.unplanned,
        "steps": s.steps,
        "success_rate": (r.outcome_sessions > 0).then(|| f64::from(r.outcome_sessions - r.failures) / f64::from(r.outcome_sessions)),
        "escalation_rate": f64::from(r.escalations) / f64::from(r.sessions.max(1)),
        "tool_failure_rate": (r.tool_calls > 0).then(|| r.tool_errors as f64 / r.tool_calls as f64),
        "cost_per_task": r.cost_per_task,
        "cost_per_success": r.cost_per_success,
        "outcome_sessions": r.outcome_sessions,
        "failures": r.failures,
        "confident_sessions": r.confident_sessions,
        "confident_failures": r.confident_failures,
        "tool_cost_per_task": r.tool_cost_per_task,
        "length_shares_50_100_200_messages": r.length_shares,
        "long_sessions": long_json(&r.long_sessions),
        "claim_sessions": r.claim_sessions,
        "contradiction_sessions": r.contradiction_sessions,
        "error_classes": r.error_classes,
        "inferred_error_classes": r.inferred_error_classes,
        "success_by_length": r.success_by_length,
        "success_by_task_type": r.success_by_task,
        "success_by_intent": r.success_by_intent,
        "success_by_tool": r.success_by_tool,
        "top_transitions": trans.iter().take(10).map(|(n, i, j)| json!({
            "from": s.markov.states[*i], "to": s.markov.states[*j], "count": n,
            "p": s.markov.probs[i * k + j]})).collect::<Vec<_>>(),
        "transitions": {"states": s.markov.states, "counts": s.markov.counts.chunks(k.max(1)).collect::<Vec<_>>(),
            "probs": s.markov.probs.chunks(k.max(1)).collect::<Vec<_>>()},
        "top_tool_bigrams": s.markov.top_bigrams,
        "markov_dispersion": s.markov.dispersion,
        "features": s.features.iter().map(|f| (f.feature.name().to_string(), json!({
            "n": f.n, "median": f.quantiles[2], "p05": f.quantiles[0], "p95": f.quantiles[4],
            "mean": f.mean, "sd": f.sd}))).collect::<BTreeMap<_, _>>(),
        "loops": s.loops.iter().map(|l| json!({"name": l.name, "median": l.ecdf.quantile(0.5),
            "max": l.ecdf.quantile(1.0), "k0": l.k0, "q": l.q})).collect::<Vec<_>>(),
        "profile": s.profile.as_ref().map(|p| json!({
            "features": p.features.iter().map(|f| f.name()).collect::<Vec<_>>(),
            "components": p.components.len(), "shrinkage": p.shrinkage, "m": p.m})),
        "charts": s.charts.iter().map(|c| json!({
            "id": c.id, "family": c.family, "unit": c.unit, "arl0": c.arl0,
            "false_alarm_rate_per_session": c.rate, "design": c.design})).collect::<Vec<_>>(),
        "exemplars": s.exemplars,
    })
}

/// Readable text summary.
pub fn show_text(b: &Baseline) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let m = &b.meta;
    let _ = writeln!(
        o,
        "agentdrift baseline v{} (agentdrift {}), {} sessions / {} steps from {} files, arl0 {} sessions per false event per segment",
        m.schema_version,
        m.agentdrift_version,
        m.sessions,
        m.steps,
        m.inputs.len(),
        m.config.arl0
    );
    let _ = writeln!(
        o,
        "lexicons {} ({}…), error taxonomy {}, grounding rules {}",
        m.lexicon_version,
        m.lexicon_hash.chars().take(12).collect::<String>(),
        rule_file(m.taxonomy.as_ref()),
        rule_file(m.grounding.as_ref()),
    );
    for w in &m.warnings {
        let _ = writeln!(o, "warning: {w}");
    }
    if !m.phase1_excluded.is_empty() {
        let _ = writeln!(o, "phase I excluded {} reference sessions:", m.phase1_excluded.len());
        for e in m.phase1_excluded.iter().take(20) {
            let _ = writeln!(o, "  {} {}: {}", e.segment, e.session_id, e.reason);
        }
    }
    for s in &b.segments {
        let j = segment_json(s);
        let _ = writeln!(
            o,
            "\n== {}  sessions {} (excluded {}), steps {}, success {}",
            s.key,
            s.sessions,
            s.excluded,
            s.steps,
            j["success_rate"].as_f64().map_or("-".into(), |x| format!("{:.3}", x))
        );
        for u in &s.unplanned {
            let _ = writeln!(o, "not charted (reference too small): {u}");
        }
        let r = &s.rates;
        let money = |v: Option<f64>| v.map_or("-".into(), |x| format!("${x:.4}"));
        let _ = writeln!(
            o,
            "cost per task {}, per success {}, tools per task {}",
            money(r.cost_per_task),
            money(r.cost_per_success),
            money(r.tool_cost_per_task)
        );
        let classes = |m: &std::collections::BTreeMap<String, u64>| {
            m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
        };
        if !r.error_classes.is_empty() {
            let _ = writeln!(
                o,
                "error classes: {} (inferred: {})",
                classes(&r.error_classes),
                if r.inferred_error_classes.is_empty() {
                    "none".into()
                } else {
                    classes(&r.inferred_error_classes)
                }
            );
        }
        for (what, t) in [
            ("intent", &r.success_by_intent),
            ("length (messages)", &r.success_by_length),
            ("tool", &r.success_by_tool),
        ] {
            if !t.is_empty() {
                let _ = writeln!(o, "success by {what}: {}", success_line(t, 12));
            }
        }
        let _ = writeln!(
            o,
            "long sessions (50+ messages): {} ({:.1}% of sessions), success {}",
            r.long_sessions.sessions,
            100.0 * r.length_shares[0],
            r.long_sessions
                .rates()
                .success_rate
                .map_or("-".into(), |x| format!("{x:.3}"))
        );
        let _ = writeln!(o, "top transitions:");
        for t in j["top_transitions"].as_array().into_iter().flatten().take(6) {
            let _ = writeln!(
                o,
                "  {:>6} {:.3}  {} → {}",
                t["count"],
                t["p"].as_f64().unwrap_or(0.0),
                t["from"].as_str().unwrap_or(""),
                t["to"].as_str().unwrap_or("")
            );
        }
        let _ = writeln!(o, "features (median [p05, p95]):");
        for f in &s.features {
            let _ = writeln!(
                o,
                "  {:<22} {:>12.4} [{:.4}, {:.4}]",
                f.feature.name(),
                f.quantiles[2],
                f.quantiles[0],
                f.quantiles[4]
            );
        }
        let _ = writeln!(o, "charts ({}):", s.charts.len());
        for c in &s.charts {
            let limit = match &c.design {
                super::types::ChartDesign::Ewma { design, .. } => format!("L {:.4}", design.l),
                super::types::ChartDesign::Cusum { design } => format!("h {:.4}", design.h),
                super::types::ChartDesign::Shewhart { design } => {
                    format!("limit {:.4} rules {}", design.c, design.rules.name())
                }
                super::types::ChartDesign::T2 { design } => format!("UCL {:.3}", design.ucl),
                super::types::ChartDesign::Bernoulli { design } => {
                    format!("p0 {:.4} h {:.3}", design.p0, design.limit())
                }
                super::types::ChartDesign::WindowTest { alpha, window, hop } => {
                    format!("α {alpha:.2e} window {window} hop {hop}")
                }
                super::types::ChartDesign::Loops { thresholds } => thresholds
                    .iter()
                    .map(|t| format!("{}≥{}", t.name, t.k))
                    .collect::<Vec<_>>()
                    .join(" "),
                super::types::ChartDesign::Grounding { reference_rate } => {
                    format!("every contradiction (reference {reference_rate:.4} per session)")
                }
            };
            let _ = writeln!(o, "  {:<32} ARL0 {:>12.0} {:<20} {}", c.id, c.arl0, c.unit, limit);
        }
    }
    o
}

/// One tested difference as a line of `baseline diff`'s table.
fn item_line(o: &mut String, it: &DiffItem) {
    use std::fmt::Write as _;
    let _ = writeln!(
        o,
        "  {:<10} {:<48} {:>10.4} {:>10.4} {:>8.2} {:>10.2e} {:>10.2e}{}",
        it.kind,
        it.what,
        it.a,
        it.b,
        it.statistic,
        it.p_value,
        it.p_adjusted,
        if it.significant { " *" } else { "" }
    );
}

/// A stored rule file's version and hash prefix, for `baseline show`.
fn rule_file(f: Option<&crate::features::RuleSource>) -> String {
    f.map_or("built-in (not recorded)".to_string(), |t| {
        format!("{} ({}…)", t.version, t.sha256.chars().take(12).collect::<String>())
    })
}

/// One tested difference.
#[derive(Clone, Debug, Serialize)]
pub struct DiffItem {
    /// `transition`, `tool`, `feature`, `rate`, or `overall`.
    pub kind: String,
    /// What was compared.
    pub what: String,
    /// Value in A (proportion, median, rate).
    pub a: f64,
    /// Value in B.
    pub b: f64,
    /// Test statistic (Mann–Whitney z, or G for overall tests).
    pub statistic: f64,
    /// Raw p-value.
    pub p_value: f64,
    /// Holm-adjusted p-value.
    pub p_adjusted: f64,
    /// p_adjusted < α.
    pub significant: bool,
    /// Test used.
    pub test: String,
}

/// Differences between a pair of segments.
#[derive(Clone, Debug, Serialize)]
pub struct SegmentDiff {
    /// Segment in A.
    pub a: SegmentKey,
    /// Segment in B.
    pub b: SegmentKey,
    /// Sessions in A.
    pub sessions_a: u32,
    /// Sessions in B.
    pub sessions_b: u32,
    /// Overall permutation tests (transitions, tool mix).
    pub overall: Vec<DiffItem>,
    /// Item tests, most significant first.
    pub items: Vec<DiffItem>,
    /// Grounding features (claims, unsupported share, contradictions), tested
    /// as their own Holm family: whether outputs stay faithful to their
    /// sources is a separate question from how the agent behaves.
    pub grounding: Vec<DiffItem>,
    /// Costs side by side (`model::cost_per_success`, as everywhere). Not
    /// tested: a baseline keeps no per-session (cost, outcome) pairs; the
    /// per-session cost is tested among the features.
    pub costs: CostComparison,
}

/// Cost per task, tool cost per task and cost per successful task of A and B, USD.
#[derive(Clone, Debug, Serialize)]
pub struct CostComparison {
    /// Mean cost per task.
    pub cost_per_task: (Option<f64>, Option<f64>),
    /// Mean cost of priced tool calls per task.
    pub tool_cost_per_task: (Option<f64>, Option<f64>),
    /// Total cost over successful tasks.
    pub cost_per_success: (Option<f64>, Option<f64>),
}

/// The diff document.
#[derive(Clone, Debug, Serialize)]
pub struct DiffReport {
    /// Significance level (on Holm-adjusted p-values).
    pub alpha: f64,
    /// Compared segment pairs.
    pub pairs: Vec<SegmentDiff>,
}

/// Why two baselines cannot be compared.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// A named segment does not exist.
    #[error("segment {0} is not in the baseline (see `agentdrift baseline show`)")]
    NoSegment(String),
    /// No segments pair up.
    #[error("the baselines share no segment; name the pair with --segment-a AGENT/TASK --segment-b AGENT/TASK")]
    NoPair,
}

fn parse_key(s: &str) -> SegmentKey {
    match s.rsplit_once('/') {
        Some((a, t)) => SegmentKey::new(a, t),
        None => SegmentKey::new(s, "*"),
    }
}

/// Compares two baselines.
pub fn diff(
    a: &Baseline,
    b: &Baseline,
    seg_a: Option<&str>,
    seg_b: Option<&str>,
    alpha: f64,
    seed: u64,
) -> Result<DiffReport, DiffError> {
    let find = |base: &Baseline, s: &str| -> Result<SegmentBaseline, DiffError> {
        let key = parse_key(s);
        base.segment(&key)
            .cloned()
            .ok_or_else(|| DiffError::NoSegment(s.to_string()))
    };
    let pairs: Vec<(SegmentBaseline, SegmentBaseline)> = match (seg_a, seg_b) {
        (Some(x), Some(y)) => vec![(find(a, x)?, find(b, y)?)],
        (Some(x), None) => vec![(find(a, x)?, find(b, x)?)],
        (None, Some(y)) => vec![(find(a, y)?, find(b, y)?)],
        (None, None) => {
            let own = |base: &Baseline| {
                base.segments
                    .iter()
                    .filter(|s| !s.key.is_pooled())
                    .cloned()
                    .collect::<Vec<_>>()
            };
            let common: Vec<_> = own(a)
                .into_iter()
                .filter_map(|s| b.segment(&s.key).cloned().map(|t| (s, t)))
                .collect();
            if !common.is_empty() {
                common
            } else {
                // Different agents: pair segments by task part, else the only pools.
                let mut by_task = Vec::new();
                for s in own(a) {
                    let m: Vec<_> = own(b)
                        .into_iter()
                        .filter(|t| t.key.task_type == s.key.task_type)
                        .collect();
                    if m.len() == 1 {
                        by_task.push((s, m[0].clone()));
                    }
                }
                if !by_task.is_empty() {
                    by_task
                } else {
                    let pools = |base: &Baseline| {
                        base.segments
                            .iter()
                            .filter(|s| s.key.is_pooled())
                            .cloned()
                            .collect::<Vec<_>>()
                    };
                    match (pools(a).as_slice(), pools(b).as_slice()) {
                        ([x], [y]) => vec![(x.clone(), y.clone())],
                        _ => return Err(DiffError::NoPair),
                    }
                }
            }
        }
    };
    Ok(DiffReport {
        alpha,
        pairs: pairs.iter().map(|(x, y)| diff_segments(x, y, alpha, seed)).collect(),
    })
}

fn item(kind: &str, what: String, a: f64, b: f64, test: Option<(f64, f64, f64)>, name: &str) -> Option<DiffItem> {
    let (_, z, p) = test?;
    Some(DiffItem {
        kind: kind.into(),
        what,
        a,
        b,
        statistic: z,
        p_value: p,
        p_adjusted: p,
        significant: false,
        test: name.into(),
    })
}

/// A share is tested when it has at least 5 hits in at least 3 sessions overall.
fn enough(a: &[(f64, f64)], b: &[(f64, f64)]) -> bool {
    let hits: f64 = a.iter().chain(b).map(|c| c.0).sum();
    let sessions = a.iter().chain(b).filter(|c| c.0 > 0.0).count();
    hits >= 5.0 && sessions >= 3
}

fn share_item(kind: &str, what: String, test: Option<(f64, f64, f64, f64)>) -> Option<DiffItem> {
    let (pa, pb, t, p) = test?;
    Some(DiffItem {
        kind: kind.into(),
        what,
        a: pa,
        b: pb,
        statistic: t,
        p_value: p,
        p_adjusted: p,
        significant: false,
        test: "cluster_robust_share_t".into(),
    })
}

/// The grounding features, tested apart in a diff.
const GROUNDING_FEATURES: [Feature; 3] = [Feature::Claims, Feature::UnsupportedClaimShare, Feature::Contradictions];

fn diff_segments(a: &SegmentBaseline, b: &SegmentBaseline, alpha: f64, seed: u64) -> SegmentDiff {
    let mut items: Vec<DiffItem> = Vec::new();
    let mut grounding: Vec<DiffItem> = Vec::new();
    // Features.
    for fa in &a.features {
        // Tool errors are tested as a rate below; messages and the per-minute
        // burns are functions of features tested here, and testing them again
        // would only cost the Holm family power.
        if matches!(
            fa.feature,
            Feature::ToolErrors | Feature::Messages | Feature::InputTokensPerMin | Feature::OutputTokensPerMin
        ) {
            continue;
        }
        if let Some(fb) = b.feature(fa.feature) {
            // Both constant at the same value (no contradiction in either
            // reference, say): all ties, nothing to test.
            let (va, vb) = (fa.ecdf.values(), fb.ecdf.values());
            let constant = |v: &[f64]| v.first() == v.last();
            if constant(&va) && constant(&vb) && va.first() == vb.first() {
                continue;
            }
            let family = if GROUNDING_FEATURES.contains(&fa.feature) {
                &mut grounding
            } else {
                &mut items
            };
            family.extend(item(
                "feature",
                fa.feature.name().into(),
                fa.quantiles[2],
                fb.quantiles[2],
                mann_whitney(&fa.ecdf.values(), &fb.ecdf.values()),
                "mann_whitney",
            ));
        }
    }
    // Rates.
    let bern = |x: u32, n: u32| -> Vec<f64> { (0..n).map(|i| if i < x { 1.0 } else { 0.0 }).collect() };
    let (ra, rb) = (&a.rates, &b.rates);
    for (what, xa, na, xb, nb) in [
        (
            "failure_rate",
            ra.failures,
            ra.outcome_sessions,
            rb.failures,
            rb.outcome_sessions,
        ),
        (
            "escalation_rate",
            ra.escalations,
            ra.sessions,
            rb.escalations,
            rb.sessions,
        ),
    ] {
        if na > 0 && nb > 0 {
            items.extend(item(
                "rate",
                what.into(),
                f64::from(xa) / f64::from(na),
                f64::from(xb) / f64::from(nb),
                mann_whitney(&bern(xa, na), &bern(xb, nb)),
                "mann_whitney",
            ));
        }
    }
    // Tools: share of tool calls, sessions as clusters.
    let tool_clusters = |s: &SegmentBaseline, tool: &str| -> Vec<(f64, f64)> {
        let i = s.tools.tools.iter().position(|t| t == tool);
        s.tools
            .sessions
            .iter()
            .map(|v| {
                let all: u32 = v.iter().map(|x| x.1).sum();
                let hit: u32 = v.iter().filter(|x| Some(x.0 as usize) == i).map(|x| x.1).sum();
                (f64::from(hit), f64::from(all))
            })
            .collect()
    };
    let tools: BTreeSet<&String> = a
        .tools
        .tools
        .iter()
        .chain(&b.tools.tools)
        .filter(|t| t.as_str() != "<new>")
        .collect();
    for t in tools {
        let (ca, cb) = (tool_clusters(a, t), tool_clusters(b, t));
        if enough(&ca, &cb) {
            items.extend(share_item("tool", t.clone(), cluster_share_test(&ca, &cb)));
        }
    }
    // Transitions: share of transitions out of `from` that go to `to`, sessions as clusters.
    let transition_clusters = |s: &SegmentBaseline, from: &str, to: &str| -> Vec<(f64, f64)> {
        let st = &s.markov.states;
        let k = st.len();
        let Some(i) = st.iter().position(|x| x == from) else {
            return Vec::new();
        };
        let j = st.iter().position(|x| x == to);
        s.markov
            .sessions
            .iter()
            .map(|v| {
                let out: u32 = v.iter().filter(|x| x.0 as usize / k == i).map(|x| x.1).sum();
                let hit: u32 = v
                    .iter()
                    .filter(|x| Some(x.0 as usize) == j.map(|j| i * k + j))
                    .map(|x| x.1)
                    .sum();
                (f64::from(hit), f64::from(out))
            })
            .collect()
    };
    let mut cells: BTreeSet<(String, String)> = BTreeSet::new();
    for s in [a, b] {
        let st = &s.markov.states;
        let k = st.len();
        for c in 0..k * k {
            if s.markov.counts[c] > 0.0 {
                cells.insert((st[c / k].clone(), st[c % k].clone()));
            }
        }
    }
    for (from, to) in cells {
        let (ca, cb) = (transition_clusters(a, &from, &to), transition_clusters(b, &from, &to));
        if enough(&ca, &cb) {
            items.extend(share_item(
                "transition",
                format!("{from} → {to}"),
                cluster_share_test(&ca, &cb),
            ));
        }
    }
    let adj = holm(&items.iter().map(|i| i.p_value).collect::<Vec<_>>());
    for (it, p) in items.iter_mut().zip(adj) {
        it.p_adjusted = p;
        it.significant = p < alpha;
    }
    items.sort_by(|x, y| {
        x.p_adjusted
            .total_cmp(&y.p_adjusted)
            .then(x.p_value.total_cmp(&y.p_value))
    });

    // Overall permutation tests.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut overall = Vec::new();
    let union_markov = union_vectors(
        &a.markov.states,
        &a.markov.sessions,
        &b.markov.states,
        &b.markov.sessions,
        true,
    );
    overall.extend(permutation(
        "overall",
        "tool transitions (Markov chain)",
        union_markov,
        &mut rng,
    ));
    let union_tools = union_vectors(
        &a.tools.tools,
        &a.tools.sessions,
        &b.tools.tools,
        &b.tools.sessions,
        false,
    );
    overall.extend(permutation("overall", "tool mix", union_tools, &mut rng));
    for family in [&mut overall, &mut grounding] {
        let adj = holm(&family.iter().map(|i| i.p_value).collect::<Vec<_>>());
        for (it, p) in family.iter_mut().zip(adj) {
            it.p_adjusted = p;
            it.significant = p < alpha;
        }
    }
    SegmentDiff {
        a: a.key.clone(),
        b: b.key.clone(),
        sessions_a: a.sessions,
        sessions_b: b.sessions,
        overall,
        items,
        grounding,
        costs: CostComparison {
            cost_per_task: (a.rates.cost_per_task, b.rates.cost_per_task),
            tool_cost_per_task: (a.rates.tool_cost_per_task, b.rates.tool_cost_per_task),
            cost_per_success: (a.rates.cost_per_success, b.rates.cost_per_success),
        },
    }
}

/// Session vectors of A and B re-indexed over the union of names; `square`
/// for K×K transition cells. Returns (rows, cols, A sessions, B sessions).
type Union = (usize, usize, Vec<Vec<(usize, f64)>>, Vec<Vec<(usize, f64)>>);

fn union_vectors(na: &[String], va: &[Vec<(u32, u32)>], nb: &[String], vb: &[Vec<(u32, u32)>], square: bool) -> Union {
    let names: Vec<String> = na
        .iter()
        .chain(nb)
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let pos: HashMap<&str, usize> = names.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
    let u = names.len();
    let map = |own: &[String], v: &[Vec<(u32, u32)>]| -> Vec<Vec<(usize, f64)>> {
        let k = own.len();
        v.iter()
            .map(|cells| {
                cells
                    .iter()
                    .map(|&(c, n)| {
                        let c = c as usize;
                        let idx = if square {
                            pos[own[c / k].as_str()] * u + pos[own[c % k].as_str()]
                        } else {
                            pos[own[c].as_str()]
                        };
                        (idx, f64::from(n))
                    })
                    .collect()
            })
            .collect()
    };
    let (rows, cols) = if square { (u, u) } else { (1, u) };
    (rows, cols, map(na, va), map(nb, vb))
}

fn permutation(kind: &str, what: &str, (rows, cols, a, b): Union, rng: &mut StdRng) -> Option<DiffItem> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let stat = |order: &[usize], all: &[&Vec<(usize, f64)>]| -> f64 {
        let mut x = Array2::<f64>::zeros((rows, cols));
        let mut y = Array2::<f64>::zeros((rows, cols));
        for (r, &s) in order.iter().enumerate() {
            let t = if r < a.len() { &mut x } else { &mut y };
            for &(c, n) in all[s] {
                t[[c / cols, c % cols]] += n;
            }
        }
        homogeneity(&x, &y).g
    };
    let all: Vec<&Vec<(usize, f64)>> = a.iter().chain(&b).collect();
    let mut order: Vec<usize> = (0..all.len()).collect();
    let observed = stat(&order, &all);
    let mut at_least = 0;
    for _ in 0..PERMUTATIONS {
        order.shuffle(rng);
        if stat(&order, &all) >= observed - 1e-9 {
            at_least += 1;
        }
    }
    let p = (1 + at_least) as f64 / (PERMUTATIONS + 1) as f64;
    Some(DiffItem {
        kind: kind.into(),
        what: what.into(),
        a: a.len() as f64,
        b: b.len() as f64,
        statistic: observed,
        p_value: p,
        p_adjusted: p,
        significant: false,
        test: format!("permutation of sessions ({PERMUTATIONS}), G homogeneity"),
    })
}

/// Text rendering of a diff.
pub fn diff_text(r: &DiffReport, limit: usize) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    for p in &r.pairs {
        let _ = writeln!(
            o,
            "== {} ({} sessions)  vs  {} ({} sessions)",
            p.a, p.sessions_a, p.b, p.sessions_b
        );
        for it in &p.overall {
            let _ = writeln!(
                o,
                "overall {:<32} G {:>9.2}  p {:.4}{}",
                it.what,
                it.statistic,
                it.p_value,
                if it.significant { "  *" } else { "" }
            );
        }
        let money = |v: Option<f64>| v.map_or("-".into(), |x| format!("${x:.4}"));
        let c = &p.costs;
        let _ = writeln!(
            o,
            "cost per task {} vs {}, per success {} vs {}, tools per task {} vs {}",
            money(c.cost_per_task.0),
            money(c.cost_per_task.1),
            money(c.cost_per_success.0),
            money(c.cost_per_success.1),
            money(c.tool_cost_per_task.0),
            money(c.tool_cost_per_task.1)
        );
        let sig = p.items.iter().filter(|i| i.significant).count();
        let _ = writeln!(
            o,
            "{sig} of {} item tests significant at α = {} (Holm-adjusted):",
            p.items.len(),
            r.alpha
        );
        let _ = writeln!(
            o,
            "  {:<10} {:<48} {:>10} {:>10} {:>8} {:>10} {:>10}",
            "kind", "what", "A", "B", "z", "p", "p_holm"
        );
        for it in p.items.iter().take(limit) {
            item_line(&mut o, it);
        }
        if !p.grounding.is_empty() {
            let _ = writeln!(o, "grounding (its own Holm family):");
            for it in &p.grounding {
                item_line(&mut o, it);
            }
        }
    }
    o
}
