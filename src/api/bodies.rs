//! The API's response bodies as Rust types, so the handlers cannot answer
//! what `/openapi.json` does not describe (its schemas are derived from them).

use crate::detect::{DriftEvent, Moved};
use crate::engine::CloseReason;
use crate::ingest::RecordError;
use crate::ingest::otel::assemble::AssembleStats;
use crate::model::{Outcome, OutcomeSource, SegmentKey, StepKind};
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::{BTreeMap, BTreeSet};
use utoipa::ToSchema;

/// The error body every 4xx and 5xx carries, so clients parse one shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong, named so a client can act on it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code (`invalid_records`, `bad_query`, `not_found`, `disk_full`, …).
    pub code: String,
    /// A sentence for a person.
    pub message: String,
    /// The first field at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// How many records were invalid (`invalid_records`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid: Option<usize>,
    /// The first 100 invalid records, each with where and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<Vec<RecordError>>,
}

impl ErrorBody {
    /// A body with a code and a message only.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
                field: None,
                invalid: None,
                records: None,
            },
        }
    }
}

/// `/healthz` and `/readyz`: a probe reads one word.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` (alive) or `ready`.
    pub status: &'static str,
}

/// `GET /v1/otlp/status`: whether span assembly keeps up and what it could not attach.
#[derive(Debug, Serialize, ToSchema)]
pub struct OtlpStatus {
    /// Traces waiting to settle.
    pub pending_traces: usize,
    /// Spans those traces hold.
    pub pending_spans: usize,
    /// Assembly counters since start.
    pub assembly: AssembleStats,
    /// Log records that were not GenAI content or evaluations.
    pub log_records_ignored: u64,
    /// Content records with no trace and span id to attach them to.
    pub log_records_unattached: u64,
    /// Spans of no GenAI or agent convention.
    pub foreign_spans: u64,
}

/// Whether a session is still being scored.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Steps may still arrive.
    Open,
    /// Scored and closed.
    Closed,
}

/// `GET /v1/sessions/{id}`: how one session compares with its baseline.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionReport {
    /// Session id.
    pub session_id: String,
    /// Open or closed.
    pub status: SessionStatus,
    /// Why it closed, once closed.
    pub close_reason: Option<CloseReason>,
    /// Segment whose baseline scores it (`null`: no baseline for its agent).
    pub segment: Option<SegmentKey>,
    /// Its own segment, when it falls back to its agent's pooled one.
    pub fallback_from: Option<SegmentKey>,
    /// Whether a baseline scores it.
    pub scored: bool,
    /// Steps stored.
    pub steps: usize,
    /// Outcome (from an end step, an evaluation, the root spans or a later report).
    pub outcome: Option<Outcome>,
    /// Where the outcome came from.
    pub outcome_source: Option<OutcomeSource>,
    /// Each feature the session has, with the baseline's percentiles.
    pub features: Vec<FeatureReading>,
    /// Failures by class (producer labels, inferred classes and `unclassified`).
    pub error_classes: BTreeMap<String, u32>,
    /// The part of `error_classes` the taxonomy inferred.
    pub inferred_error_classes: BTreeMap<String, u32>,
    /// The session's intent, when a step names one.
    pub intent: Option<String>,
    /// Events the session triggered.
    pub events: Vec<DriftEvent>,
    /// The span tree at a glance.
    pub span_tree: SpanTreeSummary,
}

/// One feature of a session beside its baseline distribution.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeatureReading {
    /// Feature name (`steps`, `output_tokens`, …).
    pub feature: &'static str,
    /// The session's value.
    pub value: f64,
    /// Percentile of the value in the baseline (0–100).
    pub baseline_percentile: Option<f64>,
    /// Baseline median.
    pub baseline_median: Option<f64>,
    /// Baseline 5th percentile.
    pub baseline_p05: Option<f64>,
    /// Baseline 95th percentile.
    pub baseline_p95: Option<f64>,
}

/// The shape of a session's span tree.
#[derive(Debug, Serialize, ToSchema)]
pub struct SpanTreeSummary {
    /// Deepest nesting.
    pub max_depth: Option<u32>,
    /// Steps that came from spans.
    pub spans: usize,
    /// Tool calls per step.
    pub tool_call_ratio: Option<f64>,
    /// Model calls per step.
    pub llm_density: Option<f64>,
    /// Input tokens.
    pub input_tokens: Option<f64>,
    /// Output tokens.
    pub output_tokens: Option<f64>,
    /// Cost, USD.
    pub cost_usd: Option<f64>,
    /// Handoffs between agents.
    pub handoffs: Option<f64>,
    /// Agents that took part.
    pub agents: BTreeSet<String>,
}

/// `GET /v1/sessions/{id}/replay`: the session whole, as stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct Replay {
    /// Session id.
    pub session_id: String,
    /// Every step in `seq` order, as received (native) or assembled from its spans.
    #[schema(schema_with = steps_schema)]
    pub steps: Vec<Box<RawValue>>,
    /// Each step's place in the span and agent tree.
    pub span_tree: Vec<ReplayNode>,
    /// Correlation ids the session's steps carry.
    pub correlation_ids: BTreeSet<String>,
    /// Other sessions sharing a correlation id or a trace.
    pub correlated_sessions: BTreeSet<String>,
    /// Agents that took part.
    pub agents: BTreeSet<String>,
}

fn steps_schema() -> utoipa::openapi::Array {
    utoipa::openapi::ArrayBuilder::new()
        .items(utoipa::openapi::Ref::from_schema_name("Step"))
        .build()
}

/// A step's place in the span and agent tree.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayNode {
    /// Step.
    pub seq: u64,
    /// What the step was.
    pub kind: StepKind,
    /// Agent that took it.
    pub agent: String,
    /// Agent handed to (handoffs).
    pub to_agent: Option<String>,
    /// Its span.
    pub span_id: Option<String>,
    /// Its parent span.
    pub parent_span_id: Option<String>,
    /// Nesting depth (0 at the root).
    pub depth: Option<u32>,
}

/// `GET /v1/segments`: every segment's health on one page.
#[derive(Debug, Serialize, ToSchema)]
pub struct SegmentList {
    /// One summary per baseline segment.
    pub segments: Vec<SegmentSummary>,
    /// Sessions open now (`null`: the scorer did not answer).
    pub open_sessions: Option<usize>,
    /// Sessions no baseline scores.
    pub unscored_sessions: Option<u64>,
}

/// A segment's baseline beside what is live.
#[derive(Debug, Serialize, ToSchema)]
pub struct SegmentSummary {
    /// The segment.
    pub segment: SegmentKey,
    /// The reference run.
    pub baseline: BaselineRates,
    /// Since the service started (restored across restarts).
    pub live: LiveRates,
    /// Alarms of its charts.
    pub alarms: u64,
}

/// The reference run's rates and costs.
#[derive(Debug, Serialize, ToSchema)]
pub struct BaselineRates {
    /// Sessions trained on.
    pub sessions: u32,
    /// Successes among sessions with an outcome.
    pub success_rate: Option<f64>,
    /// Escalations per session.
    pub escalation_rate: Option<f64>,
    /// Failed tool calls per call.
    pub tool_failure_rate: Option<f64>,
    /// Mean cost per session, USD.
    pub cost_per_task_usd: Option<f64>,
    /// Cost of all sessions per success, USD.
    pub cost_per_success_usd: Option<f64>,
    /// Mean session duration.
    pub mean_duration_ms: Option<f64>,
    /// Mean cost of priced tool calls per session, USD.
    pub tool_cost_per_task_usd: Option<f64>,
    /// Failures by class (producer labels, inferred classes and `unclassified`).
    pub error_classes: BTreeMap<String, u64>,
    /// The part of `error_classes` the taxonomy inferred.
    pub inferred_error_classes: BTreeMap<String, u64>,
    /// Shares of sessions reaching 50, 100 and 200 messages.
    pub session_length_share_50_100_200: [f64; 3],
    /// The sessions reaching 50 messages, apart.
    pub long_sessions: LongSessionRates,
}

/// Rates of the sessions reaching 50 messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct LongSessionRates {
    /// Long sessions.
    pub sessions: u64,
    /// Successes among those with an outcome.
    pub success_rate: Option<f64>,
    /// Escalations per long session.
    pub escalation_rate: Option<f64>,
    /// Failed tool calls per call.
    pub tool_failure_rate: Option<f64>,
    /// Their total cost over their successes, USD.
    pub cost_per_success_usd: Option<f64>,
}

impl From<&crate::baseline::LongSessions> for LongSessionRates {
    fn from(l: &crate::baseline::LongSessions) -> Self {
        let r = l.rates();
        LongSessionRates {
            sessions: r.sessions,
            success_rate: r.success_rate,
            escalation_rate: r.escalation_rate,
            tool_failure_rate: r.tool_failure_rate,
            cost_per_success_usd: r.cost_per_success,
        }
    }
}

/// The live rates and costs.
#[derive(Debug, Serialize, ToSchema)]
pub struct LiveRates {
    /// Sessions scored.
    pub sessions: u64,
    /// Of them, scored against the pooled segment.
    pub fallback_sessions: u64,
    /// Successes among sessions with an outcome.
    pub success_rate: Option<f64>,
    /// Escalations per session.
    pub escalation_rate: Option<f64>,
    /// Failed tool calls per call.
    pub tool_failure_rate: Option<f64>,
    /// Successful tool calls per call.
    pub tool_efficiency: Option<f64>,
    /// Sessions with at least one failed tool call.
    pub sessions_with_tool_failure: u64,
    /// Mean session duration.
    pub mean_completion_time_ms: Option<f64>,
    /// Token burn.
    pub tokens: Tokens,
    /// Mean cost per session, USD.
    pub cost_per_task_usd: Option<f64>,
    /// Cost of successful sessions per success, USD.
    pub cost_per_success_usd: Option<f64>,
    /// Shares of sessions reaching 50, 100 and 200 messages (user turns + model calls).
    pub session_length_share_50_100_200: [Option<f64>; 3],
    /// Failures by class (producer labels, inferred classes and `unclassified`).
    pub error_classes: BTreeMap<String, u64>,
    /// The part of `error_classes` the taxonomy inferred.
    pub inferred_error_classes: BTreeMap<String, u64>,
    /// Success rate of the sessions that used each tool.
    pub success_by_tool: BTreeMap<String, ToolSuccess>,
    /// Success rate per intent.
    pub success_by_intent: BTreeMap<String, ToolSuccess>,
    /// Success rate per conversation-length band (messages: 1-9, 10-19, 20-49, 50-99, 100-199, 200+).
    pub success_by_length: BTreeMap<String, ToolSuccess>,
    /// The sessions reaching 50 messages, apart.
    pub long_sessions: LongSessionRates,
    /// Mean cost of priced tool calls per session that had one, USD.
    pub tool_cost_per_task_usd: Option<f64>,
}

/// Token burn.
#[derive(Debug, Serialize, ToSchema)]
pub struct Tokens {
    /// Input tokens.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// Both, per session.
    pub per_session: Option<f64>,
    /// Input tokens per minute of session time (summed session durations).
    pub input_per_minute: Option<f64>,
    /// Output tokens per minute of session time.
    pub output_per_minute: Option<f64>,
}

/// How the sessions of one group (a tool used, an intent, a length band) ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolSuccess {
    /// Sessions that used it.
    pub sessions: u64,
    /// Their success rate.
    pub success_rate: Option<f64>,
}

/// `GET /v1/segments/{segment}`: one segment in depth.
#[derive(Debug, Serialize, ToSchema)]
pub struct SegmentReport {
    /// Its summary.
    #[serde(flatten)]
    pub summary: SegmentSummary,
    /// Each chart's statistic against its limit.
    pub charts: Vec<ChartReading>,
    /// Transitions that moved in the latest Markov event.
    pub top_moved_transitions: Vec<Moved>,
    /// The baseline's ten commonest tool transitions.
    pub baseline_top_transitions: Vec<Transition>,
    /// Baseline (successes, sessions) per task type.
    pub baseline_success_by_task_type: BTreeMap<String, (u32, u32)>,
    /// Baseline (successes, sessions) per intent (sessions whose first step names one).
    pub baseline_success_by_intent: BTreeMap<String, (u32, u32)>,
    /// Baseline (successes, sessions) per tool the agent called in the session.
    pub baseline_success_by_tool: BTreeMap<String, (u32, u32)>,
    /// Baseline (successes, sessions) per conversation-length band.
    pub baseline_success_by_length: BTreeMap<String, (u32, u32)>,
    /// Its 20 latest events, oldest first.
    pub recent_events: Vec<DriftEvent>,
}

/// One chart now.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChartReading {
    /// Detector id.
    pub id: String,
    /// Its statistic (`null` before any observation).
    pub statistic: Option<f64>,
    /// Its limit.
    pub limit: Option<f64>,
    /// Alarms raised.
    pub alarms: u64,
    /// Observations refused (not finite).
    pub rejected: u64,
    /// In-control average run length it was designed for.
    pub arl0: Option<f64>,
    /// What one observation is (`session`, `output`, `window`).
    pub unit: Option<String>,
}

/// A baseline tool transition.
#[derive(Debug, Serialize, ToSchema)]
pub struct Transition {
    /// From state.
    pub from: String,
    /// To state.
    pub to: String,
    /// Times seen in the baseline.
    pub count: f64,
    /// Its probability from `from`.
    pub p: f64,
}

/// `POST /v1/traces` answer in OTLP/JSON (protobuf answers carry the same
/// message), described here because the OpenTelemetry types carry no schema.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct TraceExportAnswer {
    /// Present when spans were refused, saying how many and why.
    pub partial_success: Option<TracePartialSuccess>,
}

/// Spans refused from an accepted export.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct TracePartialSuccess {
    /// How many.
    pub rejected_spans: i64,
    /// Why, naming the first spans and fields at fault.
    pub error_message: String,
}

/// `POST /v1/logs` answer in OTLP/JSON.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct LogsExportAnswer {
    /// Present when records were refused, saying how many and why.
    pub partial_success: Option<LogsPartialSuccess>,
}

/// Log records refused from an accepted export.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct LogsPartialSuccess {
    /// How many.
    pub rejected_log_records: i64,
    /// Why.
    pub error_message: String,
}

/// A protobuf or MessagePack body, described as bytes.
#[derive(Debug, ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Binary(pub Vec<u8>);

/// One chart's recent readings, for the console's control-chart view.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ChartSeries {
    /// Segment `agent/task_type`.
    pub segment: String,
    /// Chart id.
    pub chart: String,
    /// Family (`ewma`, `cusum`, `shewhart`, `t2`, `markov`, `tool_preference`, `bernoulli`).
    pub family: String,
    /// Unit of its time axis (`sessions`, `outputs`, …).
    pub unit: String,
    /// Designed in-control ARL, in that unit.
    pub arl0: f64,
    /// Centre line, where the chart has one (0 for charts of N(0,1) scores and CUSUMs).
    pub centre: Option<f64>,
    /// Whether the limit holds on both sides (±limit: EWMA, Shewhart).
    pub two_sided: bool,
    /// Readings, oldest first: the newest 500 since the service started
    /// (the log replayed at start included).
    pub points: Vec<crate::detect::event::ChartPoint>,
}
