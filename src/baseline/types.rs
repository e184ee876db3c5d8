//! What a baseline holds: per segment, the distributions, chains, rates and
//! chart designs every detector calibrates against. Plain data.

use crate::features::Feature;
use crate::model::{SegmentField, SegmentKey};
use crate::spc::bernoulli::BernoulliDesign;
use crate::spc::cusum::CusumDesign;
use crate::spc::ewma::EwmaDesign;
use crate::spc::hotelling::T2Design;
use crate::spc::shewhart::ShewhartDesign;
use crate::stats::Ecdf;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A whole baseline file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Provenance and configuration.
    pub meta: BaselineMeta,
    /// Segments, sorted by key; pooled `*` segments included.
    pub segments: Vec<SegmentBaseline>,
}

/// Provenance: versions, inputs, counts, config, what phase I removed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaselineMeta {
    /// Baseline schema version.
    pub schema_version: u32,
    /// agentdrift version that trained it.
    pub agentdrift_version: String,
    /// Training time, unix ms.
    pub created_unix_ms: i64,
    /// Input files with content hashes.
    pub inputs: Vec<crate::ingest::InputFile>,
    /// Sessions read.
    pub sessions: u64,
    /// Steps read.
    pub steps: u64,
    /// Training configuration.
    pub config: TrainConfig,
    /// Lexicon version and hash the tone features were scored with.
    pub lexicon_version: String,
    /// SHA-256 of the lexicon files.
    pub lexicon_hash: String,
    /// The grounding rules it was trained with (version, hash, rules); scoring
    /// extracts claims with them (absent before grounding: the built-in ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grounding: Option<crate::features::RuleSource>,
    /// The error taxonomy it was trained with (version, hash, rules); scoring
    /// classifies with the same rules. Absent in baselines older than it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taxonomy: Option<crate::features::RuleSource>,
    /// Warnings raised while training (thin segments, pooled task types, …).
    pub warnings: Vec<String>,
    /// Reference sessions judged out of control in phase I and excluded.
    pub phase1_excluded: Vec<ExcludedSession>,
}

/// A reference session removed by phase-I cleaning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExcludedSession {
    /// Segment.
    pub segment: SegmentKey,
    /// Session.
    pub session_id: String,
    /// Why (feature and robust z).
    pub reason: String,
}

/// Training configuration (also the `[train]` section of agentdrift.toml).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Segment key fields (agent first).
    pub segment_by: Vec<SegmentField>,
    /// Sessions a segment needs to get its own baseline; rarer ones use the agent's pooled `*` segment.
    pub min_sessions: u32,
    /// In-control ARL of a segment's whole detector set, in sessions: one false event per `arl0` sessions.
    pub arl0: f64,
    /// EWMA smoothing for session features.
    pub ewma_lambda: f64,
    /// CUSUM reference value for token and cost features.
    pub cusum_k: f64,
    /// EWMA smoothing for per-output charts.
    pub output_lambda: f64,
    /// Sessions in the Markov and tool-preference windows.
    pub window: u32,
    /// Sessions between window tests.
    pub hop: u32,
    /// Weight of each detector in the alarm budget (by detector id or family); default 1.
    pub weights: BTreeMap<String, f64>,
    /// Detectors (ids or families) switched off.
    pub disabled: Vec<String>,
    /// Phase I: robust z (log scale) above which a reference session is out of control.
    pub phase1_robust_z: f64,
    /// Phase I: at most this share of a segment is excluded.
    pub phase1_max_share: f64,
    /// Guaranteed in-control performance: limits keep their in-control ARL
    /// even if the reference is off by the `guarantee` quantile of its
    /// sampling error (0.5 designs for the point estimate).
    pub guarantee: f64,
    /// Seed for resampling (dispersion factors).
    pub seed: u64,
    /// An error-taxonomy file to classify with instead of the shipped one
    /// (its text is stored in the baseline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub taxonomy: Option<String>,
    /// A grounding rules file to extract claims with instead of the shipped
    /// one (its text is stored in the baseline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grounding: Option<String>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            segment_by: vec![SegmentField::Agent, SegmentField::TaskType],
            min_sessions: 20,
            arl0: 1000.0,
            ewma_lambda: 0.2,
            cusum_k: 0.5,
            output_lambda: 0.1,
            window: 25,
            hop: 5,
            weights: BTreeMap::new(),
            disabled: Vec::new(),
            phase1_robust_z: 6.0,
            phase1_max_share: 0.1,
            guarantee: 0.9,
            seed: 20_251_125,
            taxonomy: None,
            grounding: None,
        }
    }
}

/// Everything one segment's detectors need.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmentBaseline {
    /// Segment key.
    pub key: SegmentKey,
    /// For a pooled segment, the task types it pools.
    pub pooled_task_types: Vec<String>,
    /// Sessions used (after phase I).
    pub sessions: u32,
    /// Steps in those sessions.
    pub steps: u64,
    /// Sessions excluded by phase I.
    pub excluded: u32,
    /// Charts that could not be designed from this reference (`id: reason`); they do not run.
    #[serde(default)]
    pub unplanned: Vec<String>,
    /// Per-session feature distributions (features the segment measures).
    pub features: Vec<FeatureBaseline>,
    /// Cost of successful sessions (for cost per successful task).
    pub cost_success: Option<Ecdf>,
    /// Per-output distributions.
    pub outputs: OutputBaseline,
    /// Tool-transition chain.
    pub markov: MarkovBaseline,
    /// Tool usage.
    pub tools: ToolBaseline,
    /// In-session repetition.
    pub loops: Vec<LoopStat>,
    /// Outcome, error and cost rates.
    pub rates: RateBaseline,
    /// Multivariate profile for T².
    pub profile: Option<ProfileBaseline>,
    /// Chart designs, each with its share of the alarm budget.
    pub charts: Vec<ChartSpec>,
    /// Representative sessions (most typical first).
    pub exemplars: Vec<String>,
}

/// Distribution of one per-session feature.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureBaseline {
    /// Which feature.
    pub feature: Feature,
    /// Sessions that measured it.
    pub n: u32,
    /// Empirical distribution (percentiles and PIT scores).
    pub ecdf: Ecdf,
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub sd: f64,
    /// Quantiles 5, 25, 50, 75, 95 %.
    pub quantiles: [f64; 5],
}

/// Distributions of individual model outputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputBaseline {
    /// Outputs with text.
    pub outputs: u64,
    /// Mean outputs per session.
    pub per_session: f64,
    /// Characters per output.
    pub chars: Option<Ecdf>,
    /// Completion tokens per output, where reported.
    pub tokens: Option<Ecdf>,
    /// Lexicon hits per output, in lexicon order.
    pub lexicon: Vec<Option<Ecdf>>,
    /// Lag-1 correlation of consecutive outputs' chars scores within sessions
    /// (inflates per-output chart variance).
    pub lag1: f64,
}

/// The tool-transition Markov chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MarkovBaseline {
    /// States: `<start>`, `<end>`, `<reason>`, `<new>`, then tools.
    pub states: Vec<String>,
    /// Transition counts, row-major K×K.
    pub counts: Vec<f64>,
    /// Additive smoothing for probabilities.
    pub alpha: f64,
    /// Smoothed probabilities, row-major K×K.
    pub probs: Vec<f64>,
    /// Over-dispersion of the window test under the reference (G/df by
    /// resampling windows of reference sessions; ≥ 1).
    pub dispersion: f64,
    /// Most frequent tool bigrams (a, b, count).
    pub top_bigrams: Vec<(String, String, u64)>,
    /// Most frequent tool trigrams.
    pub top_trigrams: Vec<(String, String, String, u64)>,
    /// Per reference session, its transition counts as (cell, count), cell =
    /// from·K + to (at most [`MAX_SESSION_VECTORS`] sessions, evenly spaced).
    pub sessions: Vec<Vec<(u32, u32)>>,
}

/// Reference sessions whose transition and tool vectors a baseline keeps
/// (for `baseline diff`'s per-session tests).
pub const MAX_SESSION_VECTORS: usize = 5000;

/// Tool usage counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolBaseline {
    /// Tools (plus `<new>` last).
    pub tools: Vec<String>,
    /// Calls per tool over the reference.
    pub counts: Vec<f64>,
    /// Over-dispersion of the window test (≥ 1).
    pub dispersion: f64,
    /// Per reference session, its tool-call counts as (tool index, count).
    pub sessions: Vec<Vec<(u32, u32)>>,
}

/// Calibrated threshold for one in-session repetition statistic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoopStat {
    /// `same_call`, `cycle1` … `cycle4`.
    pub name: String,
    /// Per-session maxima of the statistic.
    pub ecdf: Ecdf,
    /// Tail model start: empirical tail used up to here.
    pub k0: u32,
    /// P(max ≥ k0) in the reference.
    pub p_k0: f64,
    /// Geometric tail ratio beyond k0.
    pub q: f64,
}

/// Rates and costs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RateBaseline {
    /// Sessions with a known outcome.
    pub outcome_sessions: u32,
    /// Of which not successful.
    pub failures: u32,
    /// Escalated sessions.
    pub escalations: u32,
    /// Sessions (for the escalation rate).
    pub sessions: u32,
    /// Sessions with at least one agent tool call.
    pub tool_sessions: u32,
    /// Of which at least one tool call failed.
    pub tool_error_sessions: u32,
    /// Agent tool calls.
    pub tool_calls: u64,
    /// Failed agent tool calls.
    pub tool_errors: u64,
    /// Sessions with an outcome whose outputs carried a confidence marker.
    pub confident_sessions: u32,
    /// Of which not successful.
    pub confident_failures: u32,
    /// Failed steps per error class.
    pub error_classes: BTreeMap<String, u64>,
    /// (successes, sessions with outcome) per task type.
    pub success_by_task: BTreeMap<String, (u32, u32)>,
    /// (successes, sessions with outcome) per intent.
    pub success_by_intent: BTreeMap<String, (u32, u32)>,
    /// (successful sessions using the tool, sessions using it with outcome) per tool.
    pub success_by_tool: BTreeMap<String, (u32, u32)>,
    /// Share of sessions reaching 50, 100, 200 messages (user turns + model
    /// calls; baselines before the messages feature counted steps over 50, 100, 200).
    pub length_shares: [f64; 3],
    /// Mean cost per session, USD.
    pub cost_per_task: Option<f64>,
    /// Total cost / successful sessions, USD.
    pub cost_per_success: Option<f64>,
    /// Mean agent tool calls per session.
    pub tool_calls_per_session: f64,
    /// Mean duration, ms.
    pub mean_duration_ms: Option<f64>,
    /// The part of `error_classes` the taxonomy inferred (the rest producers labelled).
    #[serde(default)]
    pub inferred_error_classes: BTreeMap<String, u64>,
    /// (successes, sessions with outcome) per conversation-length band (`features::LENGTH_BANDS`).
    #[serde(default)]
    pub success_by_length: BTreeMap<String, (u32, u32)>,
    /// The same rates restricted to sessions reaching 50 messages.
    #[serde(default)]
    pub long_sessions: LongSessions,
    /// Mean cost of priced tool calls per session, USD (`[tools]` prices).
    #[serde(default)]
    pub tool_cost_per_task: Option<f64>,
    /// Sessions with an output a source of the session contradicts (grounding).
    #[serde(default)]
    pub contradiction_sessions: u32,
    /// Sessions with a checkable claim in their outputs.
    #[serde(default)]
    pub claim_sessions: u32,
}

/// Rates of the long sessions of a segment (reaching 50 messages), reported
/// apart because averages over all sessions hide them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LongSessions {
    /// Long sessions.
    pub sessions: u64,
    /// Of which with an outcome.
    pub with_outcome: u64,
    /// Of which successful.
    pub successes: u64,
    /// Escalated.
    pub escalations: u64,
    /// Failed agent tool calls.
    pub tool_errors: u64,
    /// Agent tool calls.
    pub tool_calls: u64,
    /// Summed cost of those with a cost, USD.
    pub cost_usd: f64,
    /// Those with a cost.
    pub cost_sessions: u64,
}

impl LongSessions {
    /// Counts one session.
    pub fn add(&mut self, f: &crate::features::SessionFeatures) {
        use crate::features::Feature as F;
        if f.get(F::Messages).unwrap_or(0.0) < crate::features::LONG_SESSION_MESSAGES {
            return;
        }
        self.sessions += 1;
        if let Some(s) = f.success() {
            self.with_outcome += 1;
            self.successes += u64::from(s == 1.0);
        }
        self.escalations += u64::from(f.escalated());
        self.tool_errors += f.get(F::ToolErrors).unwrap_or(0.0) as u64;
        self.tool_calls += f.get(F::ToolCalls).unwrap_or(0.0) as u64;
        if let Some(c) = f.get(F::CostUsd) {
            self.cost_usd += c;
            self.cost_sessions += 1;
        }
    }

    /// Their rates: the one place they are computed (baseline show, segment reports).
    pub fn rates(&self) -> LongRates {
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        LongRates {
            sessions: self.sessions,
            success_rate: ratio(self.successes, self.with_outcome),
            escalation_rate: ratio(self.escalations, self.sessions),
            tool_failure_rate: ratio(self.tool_errors, self.tool_calls),
            cost_per_success: crate::model::cost_per_success(self.cost_usd, self.cost_sessions, self.successes),
        }
    }
}

/// Rates of the long sessions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LongRates {
    /// Long sessions.
    pub sessions: u64,
    /// Successes among those with an outcome.
    pub success_rate: Option<f64>,
    /// Escalations per long session.
    pub escalation_rate: Option<f64>,
    /// Failed tool calls per call.
    pub tool_failure_rate: Option<f64>,
    /// Their total cost over their successes, USD.
    pub cost_per_success: Option<f64>,
}

/// Mean and decorrelated covariance of transformed session features.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProfileBaseline {
    /// Features, each charted as its PIT z-score.
    pub features: Vec<Feature>,
    /// Mean of the z-scores.
    pub mean: Vec<f64>,
    /// Principal axes (rows), from linfa's PCA.
    pub components: Vec<Vec<f64>>,
    /// Variance along each axis (after shrinkage, if any).
    pub variances: Vec<f64>,
    /// Ledoit–Wolf shrinkage intensity, when the covariance was ill-conditioned.
    pub shrinkage: Option<f64>,
    /// Reference sessions.
    pub m: u32,
}

/// What a chart watches.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum ChartTarget {
    /// A per-session feature.
    Feature(Feature),
    /// Cost of successful sessions.
    CostPerSuccess,
    /// Characters of each output.
    OutputChars,
    /// A lexicon score of each output (lexicon index).
    OutputLexicon(usize),
    /// The multivariate session profile.
    Profile,
    /// The tool-transition chain.
    Markov,
    /// Tool usage.
    ToolPreference,
    /// In-session repetition.
    Loops,
    /// Outputs contradicting the session's sources.
    Grounding,
    /// Session failure rate.
    Failure,
    /// Escalation rate.
    Escalation,
    /// Share of sessions with a failed tool call.
    ToolFailure,
    /// Failure rate of sessions with confidence markers.
    Calibration,
}

/// When a loop statistic fires (saved as the tuple `(name, k, p)`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "(String, u32, f64)", into = "(String, u32, f64)")]
pub struct LoopThreshold {
    /// The loop statistic (`same_call`, `cycle2`, …).
    pub name: String,
    /// Fire when it reaches this count.
    pub k: u32,
    /// Probability per in-control session of reaching `k`.
    pub p: f64,
}

impl From<(String, u32, f64)> for LoopThreshold {
    fn from((name, k, p): (String, u32, f64)) -> LoopThreshold {
        LoopThreshold { name, k, p }
    }
}

impl From<LoopThreshold> for (String, u32, f64) {
    fn from(t: LoopThreshold) -> (String, u32, f64) {
        (t.name, t.k, t.p)
    }
}

/// How a chart is designed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "chart", rename_all = "snake_case")]
pub enum ChartDesign {
    /// EWMA on N(0,1) scores (per-output charts: scores divided by `scale`).
    Ewma {
        /// Design.
        design: EwmaDesign,
        /// Divide scores by this (√ of the autocorrelation variance factor).
        scale: f64,
    },
    /// CUSUM on N(0,1) scores.
    Cusum {
        /// Design.
        design: CusumDesign,
    },
    /// Shewhart individuals.
    Shewhart {
        /// Design.
        design: ShewhartDesign,
    },
    /// Hotelling T².
    T2 {
        /// Design.
        design: T2Design,
    },
    /// Bernoulli CUSUM.
    Bernoulli {
        /// Design.
        design: BernoulliDesign,
    },
    /// A windowed count test at level `alpha` every `hop` sessions.
    WindowTest {
        /// Level per test.
        alpha: f64,
        /// Sessions in the window.
        window: u32,
        /// Sessions between tests.
        hop: u32,
    },
    /// Loop thresholds: fire when a statistic reaches its threshold.
    Loops {
        /// One threshold per loop statistic.
        thresholds: Vec<LoopThreshold>,
    },
    /// Grounding: every contradiction is raised; not drawn from the budget.
    Grounding {
        /// Share of reference sessions with a contradiction (smoothed), the expected flag rate.
        reference_rate: f64,
    },
}

/// One chart of a segment, with its budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChartSpec {
    /// Detector id (`ewma:steps`, `markov`, …).
    pub id: String,
    /// Family (`ewma`, `cusum`, `shewhart`, `t2`, `markov`, `tool_preference`, `loop`, `bernoulli`).
    pub family: String,
    /// What it watches.
    pub target: ChartTarget,
    /// Design.
    pub design: ChartDesign,
    /// Its share of the false-alarm budget, events per session.
    pub rate: f64,
    /// In-control ARL in its own unit.
    pub arl0: f64,
    /// Unit of its time axis (`sessions`, `outputs`, `tool_calls`, …).
    pub unit: String,
}

impl Baseline {
    /// The segment with this key.
    pub fn segment(&self, key: &SegmentKey) -> Option<&SegmentBaseline> {
        self.segments.iter().find(|s| &s.key == key)
    }

    /// Checks every array length, index and design before anything scores
    /// with it (a file with a valid header and hash can still be
    /// inconsistent); the error names the segment and what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let mut keys = std::collections::HashSet::new();
        for s in &self.segments {
            if !keys.insert(&s.key) {
                return Err(format!("segment {} appears twice", s.key));
            }
            s.validate().map_err(|e| format!("segment {}: {e}", s.key))?;
        }
        Ok(())
    }
}

fn finite_pos(what: &str, x: f64) -> Result<(), String> {
    if x.is_finite() && x > 0.0 {
        Ok(())
    } else {
        Err(format!("{what} must be a positive finite number, got {x}"))
    }
}

fn counts_ok(what: &str, v: &[f64], len: usize) -> Result<(), String> {
    if v.len() != len {
        return Err(format!("{what} holds {} values for {len} cells", v.len()));
    }
    if v.iter().any(|x| !x.is_finite() || *x < 0.0) {
        return Err(format!("{what} holds a negative or non-finite count"));
    }
    Ok(())
}

fn sessions_ok(what: &str, sessions: &[Vec<(u32, u32)>], cells: usize) -> Result<(), String> {
    for s in sessions {
        if let Some((c, _)) = s.iter().find(|(c, _)| *c as usize >= cells) {
            return Err(format!("{what} refers to cell {c} of {cells}"));
        }
    }
    Ok(())
}

impl SegmentBaseline {
    fn validate(&self) -> Result<(), String> {
        for f in &self.features {
            f.ecdf
                .check()
                .map_err(|e| format!("feature {}: {e}", f.feature.name()))?;
            if f.quantiles.iter().any(|q| !q.is_finite()) || !f.mean.is_finite() || !f.sd.is_finite() {
                return Err(format!("feature {}: non-finite summary", f.feature.name()));
            }
        }
        if let Some(e) = &self.cost_success {
            e.check().map_err(|e| format!("cost of successes: {e}"))?;
        }
        for (what, e) in [
            ("output characters", &self.outputs.chars),
            ("output tokens", &self.outputs.tokens),
        ] {
            if let Some(e) = e {
                e.check().map_err(|e| format!("{what}: {e}"))?;
            }
        }
        for (i, e) in self.outputs.lexicon.iter().enumerate() {
            if let Some(e) = e {
                e.check().map_err(|e| format!("output lexicon {i}: {e}"))?;
            }
        }
        let m = &self.markov;
        let k = m.states.len();
        counts_ok("markov.counts", &m.counts, k * k)?;
        counts_ok("markov.probs", &m.probs, k * k)?;
        finite_pos("markov.dispersion", m.dispersion)?;
        sessions_ok("a markov session vector", &m.sessions, k * k)?;
        let t = &self.tools;
        counts_ok("tools.counts", &t.counts, t.tools.len())?;
        finite_pos("tools.dispersion", t.dispersion)?;
        sessions_ok("a tool session vector", &t.sessions, t.tools.len())?;
        for l in &self.loops {
            l.ecdf.check().map_err(|e| format!("loop statistic {}: {e}", l.name))?;
            if !(0.0..1.0).contains(&l.q) || !(0.0..=1.0).contains(&l.p_k0) {
                return Err(format!("loop statistic {}: tail model out of range", l.name));
            }
        }
        if let Some(p) = &self.profile {
            let d = p.features.len();
            if p.mean.len() != d || p.components.iter().any(|c| c.len() != d) || p.variances.len() != p.components.len()
            {
                return Err(format!(
                    "profile: {d} features, {} means, {} components of lengths {:?}, {} variances",
                    p.mean.len(),
                    p.components.len(),
                    p.components.iter().map(Vec::len).collect::<Vec<_>>(),
                    p.variances.len()
                ));
            }
            for v in &p.variances {
                finite_pos("a profile variance", *v)?;
            }
        }
        for c in &self.charts {
            self.check_chart(c).map_err(|e| format!("chart {}: {e}", c.id))?;
        }
        Ok(())
    }

    /// A chart must watch something this segment measures, with a design of its kind.
    fn check_chart(&self, c: &ChartSpec) -> Result<(), String> {
        finite_pos("rate", c.rate)?;
        finite_pos("arl0", c.arl0)?;
        let univariate = matches!(
            c.design,
            ChartDesign::Ewma { .. } | ChartDesign::Cusum { .. } | ChartDesign::Shewhart { .. }
        );
        let fits = match &c.target {
            ChartTarget::Feature(f) => univariate && self.feature(*f).is_some(),
            ChartTarget::CostPerSuccess => univariate && self.cost_success.is_some(),
            ChartTarget::OutputChars => univariate && self.outputs.chars.is_some(),
            ChartTarget::OutputLexicon(i) => univariate && self.outputs.lexicon.get(*i).is_some_and(Option::is_some),
            ChartTarget::Profile => matches!(c.design, ChartDesign::T2 { .. }) && self.profile.is_some(),
            ChartTarget::Markov | ChartTarget::ToolPreference => matches!(c.design, ChartDesign::WindowTest { .. }),
            ChartTarget::Loops => matches!(c.design, ChartDesign::Loops { .. }),
            ChartTarget::Grounding => matches!(c.design, ChartDesign::Grounding { .. }),
            ChartTarget::Failure | ChartTarget::Escalation | ChartTarget::ToolFailure | ChartTarget::Calibration => {
                matches!(c.design, ChartDesign::Bernoulli { .. })
            }
        };
        if !fits {
            return Err(format!(
                "its design does not fit its target {:?}, or the segment lacks what it watches",
                c.target
            ));
        }
        match &c.design {
            ChartDesign::Ewma { design, scale } => {
                if !(design.lambda > 0.0 && design.lambda <= 1.0) {
                    return Err(format!("EWMA lambda {} outside (0, 1]", design.lambda));
                }
                finite_pos("EWMA L", design.l)?;
                finite_pos("EWMA scale", *scale)
            }
            ChartDesign::Cusum { design } => {
                finite_pos("CUSUM h", design.h)?;
                if !design.k.is_finite() || design.k < 0.0 || !design.head_start.is_finite() {
                    return Err("CUSUM k or head start invalid".into());
                }
                Ok(())
            }
            ChartDesign::Shewhart { design } => finite_pos("Shewhart c", design.c),
            ChartDesign::T2 { design } => {
                finite_pos("T² UCL", design.ucl)?;
                match &self.profile {
                    Some(p) if p.variances.len() == design.p as usize => Ok(()),
                    Some(p) => Err(format!(
                        "T² of dimension {} against a profile of {} components",
                        design.p,
                        p.variances.len()
                    )),
                    None => Err("T² without a profile".into()),
                }
            }
            ChartDesign::Bernoulli { design } => {
                let open_unit = |p: f64| p > 0.0 && p < 1.0;
                if !(open_unit(design.p0) && open_unit(design.p1)) {
                    return Err(format!(
                        "Bernoulli rates p0 {} p1 {} outside (0, 1)",
                        design.p0, design.p1
                    ));
                }
                if design.m <= 0 || design.h <= 0 {
                    return Err("Bernoulli scale or limit not positive".into());
                }
                Ok(())
            }
            ChartDesign::WindowTest { alpha, window, hop } => {
                if !(*alpha > 0.0 && *alpha < 1.0) || *window == 0 || *hop == 0 {
                    return Err("window test level, size or hop invalid".into());
                }
                Ok(())
            }
            ChartDesign::Loops { thresholds } => {
                if thresholds.iter().any(|t| t.k == 0 || !t.p.is_finite()) {
                    return Err("a loop threshold is zero or its tail not finite".into());
                }
                Ok(())
            }
            ChartDesign::Grounding { reference_rate } => {
                if !(*reference_rate > 0.0 && *reference_rate < 1.0) {
                    return Err(format!("grounding reference rate {reference_rate} outside (0, 1)"));
                }
                Ok(())
            }
        }
    }
}

impl SegmentBaseline {
    /// A feature's distribution.
    pub fn feature(&self, f: Feature) -> Option<&FeatureBaseline> {
        self.features.iter().find(|x| x.feature == f)
    }
}
