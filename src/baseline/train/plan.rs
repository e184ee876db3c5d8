//! The alarm budget and the chart plan of a segment.
//!
//! Many charts run on many segments, so each segment has one false-alarm
//! budget: `arl0` sessions per false event (rate A = 1/arl0 per session).
//! Every detector i gets a weight w_i (default 1; configurable by id or
//! family) and the share r_i = A·w_i/Σw. By the union bound the expected
//! false events per session are at most Σ r_i = A, whatever the number of
//! detectors: adding one lowers everyone's share instead of raising the total.
//!
//! Each share becomes a design in the chart's own time unit: a session chart
//! gets ARL0 = 1/r_i sessions; a per-output chart ARL0 = (outputs per
//! session)/r_i outputs; the tool-failure CUSUM (tool calls per session)/r_i
//! calls; a window test run every `hop` sessions gets level α = r_i·hop; the
//! loop detector splits r_i over its five statistics and fires when a
//! statistic's calibrated tail probability falls below its part.
//!
//! Estimated references: a baseline of n sessions places every PIT score's
//! in-control mean off by roughly N(0, 1/(n+2)) (the reference's own sampling
//! error), which shortens the in-control ARL of long-memory charts. Session
//! charts are therefore designed so their ARL target holds at a shift of
//! δ* = Φ⁻¹(g)/√(n+2), g = `guarantee` (0.9): the target is met for at least
//! about g of the references one could have drawn (guaranteed conditional
//! performance, after Gandy & Kvaløy 2013). Rate charts are designed on the
//! upper g-bound of the in-control rate.
//!
//! Designs are rounded conservatively onto a grid so that segments share
//! them (a design is a root-finding over an ARL solver): the ARL0 up to the
//! next step of 2^(1/8) (≤ 9% longer), the reference size down to the
//! previous step of 2^(1/4) (a larger δ*), a rate chart's p0 up to the next
//! step of 10%. Each chart then meets or exceeds its share of the budget.

use crate::baseline::types::{
    ChartDesign, ChartSpec, ChartTarget, LoopStat, LoopThreshold, RateBaseline, SegmentBaseline, TrainConfig,
};
use crate::features::Feature;
use crate::spc::ChartError;
use crate::spc::bernoulli::BernoulliDesign;
use crate::spc::cusum::CusumDesign;
use crate::spc::ewma::{EwmaDesign, EwmaLimits};
use crate::spc::hotelling::{T2Case, T2Design};
use crate::spc::shewhart::{Rules, ShewhartDesign};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// Session features charted by EWMA (shape, verbosity, tone).
pub const EWMA_FEATURES: &[Feature] = &[
    Feature::Steps,
    Feature::LlmCalls,
    Feature::ToolCalls,
    Feature::ToolCallRatio,
    Feature::ReasoningDepth,
    Feature::DistinctTools,
    Feature::MaxDepth,
    Feature::Handoffs,
    Feature::ContextUtilisation,
    Feature::OutputChars,
    Feature::Apology,
    Feature::Hostility,
    Feature::Politeness,
    Feature::Hedging,
    Feature::Refusal,
    Feature::MemoryGrowth,
    Feature::MemoryGrowthPerTurn,
    Feature::Claims,
    Feature::UnsupportedClaimShare,
    Feature::Contradictions,
];

/// Session features charted by CUSUM (token burn and cost).
pub const CUSUM_FEATURES: &[Feature] = &[
    Feature::InputTokens,
    Feature::OutputTokens,
    Feature::TokensPerStep,
    Feature::CostUsd,
    Feature::ToolCostUsd,
];

/// Session features charted by Shewhart with rules 1–3 (sudden jumps in time).
pub const SHEWHART_FEATURES: &[Feature] = &[Feature::DurationMs, Feature::LatencyMs];

/// Odds ratio a rate chart is tuned to detect.
pub const RATE_ODDS_RATIO: f64 = 2.0;

/// Minimum evidence for a rate chart.
const MIN_RATE_OBS: f64 = 10.0;

struct Candidate {
    id: String,
    family: &'static str,
    target: ChartTarget,
    unit: &'static str,
    per_session: f64,
}

fn odds_shift(p0: f64) -> f64 {
    (RATE_ODDS_RATIO * p0 / (1.0 - p0 + RATE_ODDS_RATIO * p0)).min(0.999)
}

/// Pseudo-sessions of prior weight in the calibration chart's in-control rate.
pub const CALIBRATION_PRIOR_SESSIONS: f64 = 10.0;

/// The calibration chart's evidence (failures, sessions) for its in-control
/// failure rate of confidently worded sessions: the reference's confident
/// sessions plus [`CALIBRATION_PRIOR_SESSIONS`] failing at the segment's
/// overall failure rate. The prior is the null hypothesis itself (a
/// calibrated agent's confident answers fail no more often than its others),
/// so a reference with few or no confident sessions still gives the chart a
/// rate, and a large one outweighs the prior.
pub fn calibration_evidence(r: &RateBaseline) -> (f64, f64) {
    let overall = smoothed_rate(f64::from(r.failures), f64::from(r.outcome_sessions));
    (
        f64::from(r.confident_failures) + CALIBRATION_PRIOR_SESSIONS * overall,
        f64::from(r.confident_sessions) + CALIBRATION_PRIOR_SESSIONS,
    )
}

/// Smoothed rate (x + ½)/(n + 1), so a reference with no events still gives
/// the chart a positive in-control rate.
pub fn smoothed_rate(x: f64, n: f64) -> f64 {
    (x + 0.5) / (n + 1.0)
}

/// P(max ≥ k) under a loop statistic's tail model, at the upper
/// `guarantee` bound of its two estimated parameters (as for the charts: a
/// thin reference must not make loops look rarer than they are). The tail
/// probability P(max ≥ k0) gets its Jeffreys Beta(c + ½, n − c + ½) bound,
/// the geometric continuation q its Beta(S + 1, c + 1) bound (uniform prior;
/// S the total excess over k0, recovered from the stored posterior mean).
pub fn loop_tail(stat: &LoopStat, k: u32, guarantee: f64) -> f64 {
    let n = stat.ecdf.len() as f64;
    let g = guarantee.clamp(0.5, 0.999);
    if k <= stat.k0 {
        let at_least = stat.ecdf.upper_tail(f64::from(k)) * n;
        crate::stats::dist::beta_quantile(g, at_least + 0.5, n - at_least + 0.5).min(1.0)
    } else {
        let c = (stat.ecdf.upper_tail(f64::from(stat.k0)) * n).round();
        let q_mean = stat.q.clamp(1e-9, 1.0 - 1e-9);
        let s = ((q_mean * (c + 2.0) - 1.0) / (1.0 - q_mean)).max(0.0);
        let p_k0 = crate::stats::dist::beta_quantile(g, c + 0.5, n - c + 0.5);
        let q = crate::stats::dist::beta_quantile(g, s + 1.0, c + 1.0);
        p_k0 * q.powi((k - stat.k0) as i32)
    }
}

/// Smallest k with tail probability ≤ `rate`.
pub fn loop_threshold(stat: &LoopStat, rate: f64, guarantee: f64) -> (u32, f64) {
    let mut k = 2;
    loop {
        let t = loop_tail(stat, k, guarantee);
        if t <= rate || k >= 10_000 {
            return (k, t);
        }
        k += 1;
    }
}

/// Designs are pure functions of their parameters; many charts (and many
/// segments) share them, so they are computed once per process.
fn cached(key: String, make: impl FnOnce() -> Result<ChartDesign, ChartError>) -> Result<ChartDesign, ChartError> {
    static CACHE: OnceLock<Mutex<HashMap<String, ChartDesign>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(d) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(d);
    }
    let d = make()?;
    if let Ok(mut c) = cache.lock() {
        c.insert(key, d.clone());
    }
    Ok(d)
}

/// `x` rounded up to the grid base^k.
fn grid_up(x: f64, base: f64) -> f64 {
    base.powf((x.ln() / base.ln() - 1e-9).ceil())
}

/// `x` rounded down to the grid base^k.
fn grid_down(x: f64, base: f64) -> f64 {
    base.powf((x.ln() / base.ln() + 1e-9).floor())
}

/// A segment's charts, and those that could not be designed.
#[derive(Clone, Debug, Default)]
pub struct Planned {
    /// Charts that run.
    pub charts: Vec<ChartSpec>,
    /// `id: reason` of candidates whose design is impossible with this reference.
    pub unplanned: Vec<String>,
}

/// Designs every chart of a segment within the budget of `cfg.arl0`.
pub fn plan(seg: &SegmentBaseline, cfg: &TrainConfig) -> Result<Planned, ChartError> {
    let mut cands: Vec<Candidate> = Vec::new();
    let has = |f: Feature| seg.feature(f).is_some_and(|b| b.n >= 2);
    let session = |id: String, family: &'static str, target: ChartTarget| Candidate {
        id,
        family,
        target,
        unit: "sessions",
        per_session: 1.0,
    };
    for &f in EWMA_FEATURES.iter().filter(|f| has(**f)) {
        cands.push(session(format!("ewma:{}", f.name()), "ewma", ChartTarget::Feature(f)));
    }
    for &f in CUSUM_FEATURES.iter().filter(|f| has(**f)) {
        cands.push(session(format!("cusum:{}", f.name()), "cusum", ChartTarget::Feature(f)));
    }
    for &f in SHEWHART_FEATURES.iter().filter(|f| has(**f)) {
        cands.push(session(
            format!("shewhart:{}", f.name()),
            "shewhart",
            ChartTarget::Feature(f),
        ));
    }
    let r = &seg.rates;
    let sessions = f64::from(seg.sessions.max(1));
    let successes = f64::from(r.outcome_sessions - r.failures);
    if seg
        .cost_success
        .as_ref()
        .is_some_and(|e| e.len() >= MIN_RATE_OBS as usize)
    {
        cands.push(Candidate {
            id: "cusum:cost_per_success".into(),
            family: "cusum",
            target: ChartTarget::CostPerSuccess,
            unit: "successful_sessions",
            per_session: successes / sessions,
        });
    }
    let per_output = seg.outputs.per_session;
    if seg.outputs.chars.as_ref().is_some_and(|e| e.len() >= 20) {
        cands.push(Candidate {
            id: "ewma:output_chars_per_output".into(),
            family: "ewma",
            target: ChartTarget::OutputChars,
            unit: "outputs",
            per_session: per_output,
        });
    }
    for (i, name) in [(0usize, "apology"), (3, "hedging")] {
        if seg
            .outputs
            .lexicon
            .get(i)
            .and_then(Option::as_ref)
            .is_some_and(|e| e.len() >= 20)
        {
            cands.push(Candidate {
                id: format!("ewma:{name}_per_output"),
                family: "ewma",
                target: ChartTarget::OutputLexicon(i),
                unit: "outputs",
                per_session: per_output,
            });
        }
    }
    if seg.profile.is_some() {
        cands.push(session("t2:profile".into(), "t2", ChartTarget::Profile));
    }
    if seg.markov.counts.iter().sum::<f64>() > 0.0 && seg.markov.states.len() > 4 {
        cands.push(session("markov".into(), "markov", ChartTarget::Markov));
    }
    if seg.tools.tools.len() >= 3 {
        cands.push(session(
            "tool_preference".into(),
            "tool_preference",
            ChartTarget::ToolPreference,
        ));
    }
    if !seg.loops.is_empty() && seg.rates.tool_calls > 0 {
        cands.push(session("loop".into(), "loop", ChartTarget::Loops));
    }
    // Outcome rates. Per session, not per call: failures cluster within
    // sessions, so calls are not independent trials.
    let per = |n: u32| f64::from(n) / sessions;
    for (id, target, unit, n, per_session) in [
        (
            "bernoulli:failure",
            ChartTarget::Failure,
            "sessions_with_outcome",
            r.outcome_sessions,
            per(r.outcome_sessions),
        ),
        (
            "bernoulli:escalation",
            ChartTarget::Escalation,
            "sessions",
            r.sessions,
            1.0,
        ),
        (
            "bernoulli:tool_failure",
            ChartTarget::ToolFailure,
            "sessions_with_tool_calls",
            r.tool_sessions,
            per(r.tool_sessions),
        ),
        // Calibration: planned on the segment's sessions with an outcome, not
        // on its confident ones (rare in real references); see `calibration_evidence`.
        (
            "bernoulli:calibration",
            ChartTarget::Calibration,
            "confident_sessions",
            r.outcome_sessions,
            smoothed_rate(f64::from(r.confident_sessions), sessions),
        ),
    ] {
        if f64::from(n) >= MIN_RATE_OBS {
            cands.push(Candidate {
                id: id.into(),
                family: "bernoulli",
                target,
                unit,
                per_session,
            });
        }
    }
    cands.retain(|c| !cfg.disabled.iter().any(|d| d == &c.id || d == c.family) && c.per_session > 0.0);

    let weight = |c: &Candidate| {
        cfg.weights
            .get(&c.id)
            .or_else(|| cfg.weights.get(c.family))
            .copied()
            .unwrap_or(1.0)
            .max(0.0)
    };
    let total: f64 = cands.iter().map(weight).sum();
    let zg = crate::stats::dist::norm_quantile(cfg.guarantee.clamp(0.5, 0.999));
    let shift = |n: f64| {
        if zg > 0.0 {
            (zg / (grid_down(n.max(1.0), 2f64.powf(0.25)) + 2.0).sqrt()).min(1.0)
        } else {
            0.0
        }
    };
    let n_of = |t: &ChartTarget| -> f64 {
        match t {
            ChartTarget::Feature(f) => seg.feature(*f).map_or(0.0, |b| f64::from(b.n)),
            ChartTarget::CostPerSuccess => seg.cost_success.as_ref().map_or(0.0, |e| e.len() as f64),
            _ => f64::from(seg.sessions),
        }
    };
    // Upper g-bound of a rate estimated from n observations.
    let upper = |x: f64, n: f64| {
        let p = smoothed_rate(x, n);
        (p + zg * (p * (1.0 - p) / (n + 1.0)).sqrt()).min(0.98)
    };
    let budget = 1.0 / cfg.arl0;
    let mut specs = Vec::new();
    let mut unplanned = Vec::new();
    for c in &cands {
        let w = weight(c);
        if w == 0.0 || total == 0.0 {
            continue;
        }
        let rate = budget * w / total;
        let arl0 = grid_up(c.per_session / rate, 2f64.powf(0.125));
        let delta = shift(n_of(&c.target));
        let design = (|| -> Result<ChartDesign, ChartError> {
            Ok(match &c.target {
                ChartTarget::Feature(f) if CUSUM_FEATURES.contains(f) => cusum(cfg.cusum_k, arl0, delta)?,
                ChartTarget::CostPerSuccess => cusum(cfg.cusum_k, arl0, delta)?,
                ChartTarget::Feature(f) if SHEWHART_FEATURES.contains(f) => {
                    cached(format!("shewhart123|{arl0:.12e}|{delta:.12e}"), || {
                        Ok(ChartDesign::Shewhart {
                            design: ShewhartDesign::for_arl_at(
                                Rules {
                                    r4: false,
                                    ..Rules::ALL
                                },
                                arl0,
                                delta,
                            )?,
                        })
                    })?
                }
                ChartTarget::Feature(_) => ewma(cfg.ewma_lambda, arl0, delta)?,
                ChartTarget::OutputChars | ChartTarget::OutputLexicon(_) => {
                    // Outputs of one session are correlated; an AR(1) with lag-1
                    // correlation φ inflates the EWMA variance by
                    // (1 + φ(1−λ)) / (1 − φ(1−λ)). Scores are divided by its root.
                    let lambda = cfg.output_lambda;
                    let phi = seg.outputs.lag1.clamp(0.0, 0.9) * (1.0 - lambda);
                    let design = match ewma(lambda, arl0, delta)? {
                        ChartDesign::Ewma { design, .. } => design,
                        _ => unreachable!("cached as EWMA"),
                    };
                    ChartDesign::Ewma {
                        design,
                        scale: ((1.0 + phi) / (1.0 - phi)).sqrt(),
                    }
                }
                ChartTarget::Profile => {
                    let p = seg.profile.as_ref().expect("candidate only with a profile");
                    ChartDesign::T2 {
                        design: T2Design::for_arl0(p.variances.len() as u32, arl0, T2Case::Phase2 { m: p.m })?,
                    }
                }
                ChartTarget::Markov | ChartTarget::ToolPreference => ChartDesign::WindowTest {
                    alpha: (rate * f64::from(cfg.hop)).min(0.5),
                    window: cfg.window,
                    hop: cfg.hop,
                },
                ChartTarget::Loops => {
                    let each = rate / seg.loops.len() as f64;
                    ChartDesign::Loops {
                        thresholds: seg
                            .loops
                            .iter()
                            .map(|s| {
                                let (k, p) = loop_threshold(s, each, cfg.guarantee);
                                LoopThreshold {
                                    name: s.name.clone(),
                                    k,
                                    p,
                                }
                            })
                            .collect(),
                    }
                }
                ChartTarget::Grounding => unreachable!("grounding is planned apart from the budget"),
                ChartTarget::Failure => bernoulli(upper(f64::from(r.failures), f64::from(r.outcome_sessions)), arl0)?,
                ChartTarget::Escalation => bernoulli(upper(f64::from(r.escalations), f64::from(r.sessions)), arl0)?,
                ChartTarget::ToolFailure => bernoulli(
                    upper(f64::from(r.tool_error_sessions), f64::from(r.tool_sessions)),
                    arl0,
                )?,
                ChartTarget::Calibration => {
                    let (x, n) = calibration_evidence(r);
                    bernoulli(upper(x, n), arl0)?
                }
            })
        })();
        let design = match design {
            Ok(d) => d,
            // A small reference can make a chart's target unreachable (run
            // rules at the guaranteed shift, a rate near 1): that chart does
            // not run, the others keep their shares (still within budget).
            Err(e @ (ChartError::Unreachable { .. } | ChartError::TooFewReference { .. })) => {
                unplanned.push(format!("{}: {e}", c.id));
                continue;
            }
            Err(e) => return Err(e),
        };
        specs.push(ChartSpec {
            id: c.id.clone(),
            family: c.family.to_string(),
            target: c.target.clone(),
            design,
            rate,
            arl0,
            unit: c.unit.to_string(),
        });
    }
    // Grounding: every contradiction is a finding about its session, raised
    // whatever the budget; its expected rate is the reference's, so the
    // chart states it instead of drawing from the alarm budget.
    if seg.feature(Feature::Claims).is_some() && !cfg.disabled.iter().any(|d| d == "grounding") {
        let reference_rate = smoothed_rate(f64::from(r.contradiction_sessions), sessions).min(0.5);
        specs.push(ChartSpec {
            id: "grounding".into(),
            family: "grounding".into(),
            target: ChartTarget::Grounding,
            design: ChartDesign::Grounding { reference_rate },
            rate: reference_rate,
            arl0: 1.0 / reference_rate,
            unit: "sessions".into(),
        });
    }
    Ok(Planned {
        charts: specs,
        unplanned,
    })
}

fn ewma(lambda: f64, arl0: f64, delta: f64) -> Result<ChartDesign, ChartError> {
    cached(format!("ewma|{lambda}|{arl0:.12e}|{delta:.12e}"), || {
        Ok(ChartDesign::Ewma {
            design: EwmaDesign::for_arl_at(lambda, arl0, delta, EwmaLimits::Asymptotic)?,
            scale: 1.0,
        })
    })
}

fn cusum(k: f64, arl0: f64, delta: f64) -> Result<ChartDesign, ChartError> {
    cached(format!("cusum|{k}|{arl0:.12e}|{delta:.12e}"), || {
        Ok(ChartDesign::Cusum {
            design: CusumDesign::for_arl_at(k, arl0, delta, 0.0)?,
        })
    })
}

fn bernoulli(p0: f64, arl0: f64) -> Result<ChartDesign, ChartError> {
    let p0 = grid_up(p0.clamp(1e-4, 0.98), 1.1).min(0.98);
    cached(format!("bernoulli|{p0:.12e}|{arl0:.12e}"), || {
        Ok(ChartDesign::Bernoulli {
            design: BernoulliDesign::for_arl0(p0, odds_shift(p0), arl0)?,
        })
    })
}
