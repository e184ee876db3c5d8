//! What a baseline holds: per segment, the distributions, chains, rates and
//! chart designs every detector calibrates against. Plain data.

use crate::features::Feature;
use crate::model::SegmentKey;
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

/// Fields that may make up the segment key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SegmentField {
    /// The agent (always the first part of the key).
    Agent,
    /// The task type.
    TaskType,
    /// The finer task category.
    Intent,
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
    /// Share of sessions over 50, 100, 200 steps.
    pub length_shares: [f64; 3],
    /// Mean cost per session, USD.
    pub cost_per_task: Option<f64>,
    /// Total cost / successful sessions, USD.
    pub cost_per_success: Option<f64>,
    /// Mean agent tool calls per session.
    pub tool_calls_per_session: f64,
    /// Mean duration, ms.
    pub mean_duration_ms: Option<f64>,
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
    /// Session failure rate.
    Failure,
    /// Escalation rate.
    Escalation,
    /// Share of sessions with a failed tool call.
    ToolFailure,
    /// Failure rate of sessions with confidence markers.
    Calibration,
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
        /// (statistic name, threshold, tail probability at threshold).
        thresholds: Vec<(String, u32, f64)>,
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
}

impl SegmentBaseline {
    /// A feature's distribution.
    pub fn feature(&self, f: Feature) -> Option<&FeatureBaseline> {
        self.features.iter().find(|x| x.feature == f)
    }
}
