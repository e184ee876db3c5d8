//! The step: one thing an agent did, in the native format (schema `v` 1).
//!
//! Every optional field stays `None` when the source does not carry it: a
//! missing token count is not zero, and detectors must be able to tell.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// The only native schema version this build reads; a missing `v` means 1.
pub const STEP_SCHEMA_VERSION: u32 = 1;

/// What kind of thing happened, so features know which fields to expect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// A model call (reasoning, answering, requesting tools).
    Llm,
    /// A tool execution.
    Tool,
    /// A message from the user (or a user simulator).
    User,
    /// One agent passes control to another.
    Handoff,
    /// A memory read or write.
    Memory,
    /// The session's outcome.
    End,
}

impl StepKind {
    /// The wire name, for messages and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Llm => "llm",
            StepKind::Tool => "tool",
            StepKind::User => "user",
            StepKind::Handoff => "handoff",
            StepKind::Memory => "memory",
            StepKind::End => "end",
        }
    }
}

/// Whether a step (usually a tool call) worked, so failure rates can be charted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// It worked.
    Ok,
    /// It failed; `error_class` and `error` say how.
    Error,
}

/// How a session ended, so success and escalation rates can be charted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The task was done.
    Success,
    /// The task was not done.
    Failure,
    /// The agent handed the task to a human.
    Escalated,
}

impl Outcome {
    /// The wire name, for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Escalated => "escalated",
        }
    }
}

/// Where a session's outcome came from, so reports can say how much to trust it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeSource {
    /// Inferred from the status of the session's root spans.
    RootStatus,
    /// From an evaluation result (`gen_ai.evaluation.*`, OpenInference `evaluation.*`/`annotation.*`).
    Evaluation,
    /// Given explicitly (an `end` step, `agentdrift.outcome`, or `POST /v1/sessions/{id}/outcome`).
    Explicit,
}

impl OutcomeSource {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeSource::RootStatus => "root_status",
            OutcomeSource::Evaluation => "evaluation",
            OutcomeSource::Explicit => "explicit",
        }
    }
}

/// Which way a memory step went, so reads and writes can be counted apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryOp {
    /// The agent read from memory.
    Read,
    /// The agent wrote to memory.
    Write,
}

/// The class of a failure: the well-known classes plus free text, so error
/// mixes can be compared without losing what the source said.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorClass {
    /// A tool did not answer in time.
    ToolTimeout,
    /// A tool's backend returned an error.
    ToolApiError,
    /// The agent called a tool with arguments it rejected.
    ToolInvalidArgs,
    /// The model's reasoning failed (malformed output, contradiction, …).
    Reasoning,
    /// The environment was in a state the agent did not expect.
    State,
    /// The agent escalated to a human.
    Escalation,
    /// Anything else, as the source named it.
    Other(String),
}

impl ErrorClass {
    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorClass::ToolTimeout => "tool_timeout",
            ErrorClass::ToolApiError => "tool_api_error",
            ErrorClass::ToolInvalidArgs => "tool_invalid_args",
            ErrorClass::Reasoning => "reasoning",
            ErrorClass::State => "state",
            ErrorClass::Escalation => "escalation",
            ErrorClass::Other(s) => s,
        }
    }

    /// Parses a wire name; unknown names are kept as [`ErrorClass::Other`].
    pub fn parse(s: &str) -> ErrorClass {
        match s {
            "tool_timeout" => ErrorClass::ToolTimeout,
            "tool_api_error" => ErrorClass::ToolApiError,
            "tool_invalid_args" => ErrorClass::ToolInvalidArgs,
            "reasoning" => ErrorClass::Reasoning,
            "state" => ErrorClass::State,
            "escalation" => ErrorClass::Escalation,
            other => ErrorClass::Other(other.to_string()),
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorClass {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorClass {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(ErrorClass::parse(&s))
    }
}

/// Who ran a tool: the agent, or the user (τ² telecom lets the simulated user
/// run device tools; those are environment actions, not agent choices).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Requestor {
    /// The agent requested the tool call.
    Agent,
    /// The user (or user simulator) ran it.
    User,
}

fn default_version() -> u32 {
    STEP_SCHEMA_VERSION
}

fn is_default_version(v: &u32) -> bool {
    *v == STEP_SCHEMA_VERSION
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One step of an agent session in the native format.
///
/// Unknown top-level fields are rejected (put free-form data under
/// `attributes`), so a typo never silently drops a value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Schema version of this record; missing means 1.
    #[serde(default = "default_version", skip_serializing_if = "is_default_version")]
    pub v: u32,
    /// The session (conversation, task attempt) this step belongs to.
    pub session_id: String,
    /// Position in the session, from 0; scoring follows it.
    pub seq: u64,
    /// When the step started, unix milliseconds.
    pub ts: i64,
    /// What happened.
    pub kind: StepKind,
    /// The agent that acted (for `handoff`: the one handing off).
    pub agent: String,
    /// The kind of task, the second half of the segment key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<String>,
    /// The source's task identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// A finer task category than `task_type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    /// OpenTelemetry trace id (hex), when the step came from a trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// OpenTelemetry span id (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
    /// Parent span id (hex); parent links give span depth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    /// Depth of the step's span in its trace tree (root = 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<u32>,
    /// Carried across agents so a multi-agent task can be rebuilt as one tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The model that answered (llm steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Prompt tokens of a model call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    /// Completion tokens of a model call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    /// Cost in US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// True when `cost_usd` was computed from tokens and the price table
    /// rather than given by the source.
    #[serde(default, skip_serializing_if = "is_false")]
    pub cost_computed: bool,
    /// How long the step took, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Message text (llm output, user message, handoff note).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Number of tool calls an llm step asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls_requested: Option<u32>,
    /// Tool name (tool steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// Tool arguments, as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    /// Who ran the tool; missing means the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requestor: Option<Requestor>,
    /// Whether the step worked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// What kind of failure, when `status` is `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<ErrorClass>,
    /// The failure message (truncated by the source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Length of the tool result text, characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_chars: Option<u64>,
    /// The tool result as returned (text, or any JSON), kept for replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The agent receiving control (handoff steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_agent: Option<String>,
    /// Read or write (memory steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_op: Option<MemoryOp>,
    /// How the session ended (end steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The task reward, when the source scores sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward: Option<f64>,
    /// Why the session stopped (e.g. `user_stop`, `max_steps`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_reason: Option<String>,
    /// Anything else the source recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Map<String, Value>>,
}

/// A field-level problem with a step that parsed but does not make sense.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("field `{field}`: {message}")]
pub struct StepInvalid {
    /// The offending field, as named on the wire.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> StepInvalid {
    StepInvalid {
        field,
        message: message.into(),
    }
}

/// Largest `seq`: 2^53 − 1, exact in every JSON reader and far from overflow.
pub const MAX_SEQ: u64 = (1 << 53) - 1;
/// Latest `ts`: 9999-12-31T23:59:59.999Z in unix ms (earliest is 0, 1970).
pub const MAX_TS: i64 = 253_402_300_799_999;
/// Most tokens one step may report.
pub const MAX_TOKENS: u64 = 1_000_000_000_000;
/// Largest cost of one step, USD.
pub const MAX_COST_USD: f64 = 1_000_000.0;
/// Longest step, ms (about 115 days).
pub const MAX_LATENCY_MS: f64 = 1e10;
/// Largest absolute reward.
pub const MAX_REWARD: f64 = 1e9;

fn check_finite_nonneg(field: &'static str, v: Option<f64>, max: f64) -> Result<(), StepInvalid> {
    match v {
        Some(x) if !x.is_finite() => Err(invalid(field, format!("must be a finite number, got {x}"))),
        Some(x) if x < 0.0 => Err(invalid(field, format!("must not be negative, got {x}"))),
        Some(x) if x > max => Err(invalid(field, format!("must be at most {max}, got {x}"))),
        _ => Ok(()),
    }
}

fn check_at_most(field: &'static str, v: Option<u64>, max: u64) -> Result<(), StepInvalid> {
    match v {
        Some(x) if x > max => Err(invalid(field, format!("must be at most {max}, got {x}"))),
        _ => Ok(()),
    }
}

/// Heap bytes a JSON value holds, roughly (for memory bounds, not billing).
fn value_bytes(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len() + 24,
        Value::Array(a) => a.iter().map(value_bytes).sum::<usize>() + 24,
        Value::Object(m) => m.iter().map(|(k, v)| k.len() + 48 + value_bytes(v)).sum::<usize>() + 32,
        _ => 16,
    }
}

impl Step {
    /// Memory the step holds, roughly: what a reorder buffer counts against its cap.
    pub fn approx_bytes(&self) -> usize {
        let s = |o: &Option<String>| o.as_ref().map_or(0, String::len);
        std::mem::size_of::<Step>()
            + self.session_id.len()
            + self.agent.len()
            + s(&self.task_type)
            + s(&self.task_id)
            + s(&self.intent)
            + s(&self.trace_id)
            + s(&self.span_id)
            + s(&self.parent_span_id)
            + s(&self.correlation_id)
            + s(&self.model)
            + s(&self.text)
            + s(&self.tool)
            + s(&self.error)
            + s(&self.to_agent)
            + s(&self.termination_reason)
            + self.args.as_ref().map_or(0, value_bytes)
            + self.result.as_ref().map_or(0, value_bytes)
            + self.attributes.as_ref().map_or(0, |m| {
                m.iter().map(|(k, v)| k.len() + 48 + value_bytes(v)).sum::<usize>()
            })
    }

    /// A minimal step, for tests and for readers that fill fields one by one.
    pub fn new(session_id: impl Into<String>, seq: u64, ts: i64, kind: StepKind, agent: impl Into<String>) -> Step {
        Step {
            v: STEP_SCHEMA_VERSION,
            session_id: session_id.into(),
            seq,
            ts,
            kind,
            agent: agent.into(),
            task_type: None,
            task_id: None,
            intent: None,
            trace_id: None,
            span_id: None,
            parent_span_id: None,
            depth: None,
            correlation_id: None,
            model: None,
            input_tokens: None,
            output_tokens: None,
            cost_usd: None,
            cost_computed: false,
            latency_ms: None,
            text: None,
            tool_calls_requested: None,
            tool: None,
            args: None,
            requestor: None,
            status: None,
            error_class: None,
            error: None,
            result_chars: None,
            result: None,
            to_agent: None,
            memory_op: None,
            outcome: None,
            reward: None,
            termination_reason: None,
            attributes: None,
        }
    }

    /// Checks what serde cannot: version, finiteness, required per-kind fields.
    pub fn validate(&self) -> Result<(), StepInvalid> {
        if self.v != STEP_SCHEMA_VERSION {
            return Err(invalid(
                "v",
                format!(
                    "unsupported schema version {} (this build reads {STEP_SCHEMA_VERSION})",
                    self.v
                ),
            ));
        }
        if self.session_id.is_empty() {
            return Err(invalid("session_id", "must not be empty"));
        }
        if self.agent.is_empty() {
            return Err(invalid("agent", "must not be empty"));
        }
        if self.seq > MAX_SEQ {
            return Err(invalid("seq", format!("must be at most {MAX_SEQ}, got {}", self.seq)));
        }
        if !(0..=MAX_TS).contains(&self.ts) {
            return Err(invalid(
                "ts",
                format!(
                    "must be unix milliseconds between 0 and {MAX_TS} (year 9999), got {}",
                    self.ts
                ),
            ));
        }
        check_finite_nonneg("cost_usd", self.cost_usd, MAX_COST_USD)?;
        check_finite_nonneg("latency_ms", self.latency_ms, MAX_LATENCY_MS)?;
        check_at_most("input_tokens", self.input_tokens, MAX_TOKENS)?;
        check_at_most("output_tokens", self.output_tokens, MAX_TOKENS)?;
        check_at_most("result_chars", self.result_chars, MAX_SEQ)?;
        if let Some(r) = self.reward
            && (!r.is_finite() || r.abs() > MAX_REWARD)
        {
            return Err(invalid(
                "reward",
                format!("must be a finite number of at most {MAX_REWARD} in size, got {r}"),
            ));
        }
        match self.kind {
            StepKind::Tool if self.tool.as_deref().is_none_or(str::is_empty) => {
                Err(invalid("tool", "a tool step needs a tool name"))
            }
            StepKind::Handoff if self.to_agent.as_deref().is_none_or(str::is_empty) => {
                Err(invalid("to_agent", "a handoff step needs the receiving agent"))
            }
            _ => Ok(()),
        }
    }

    /// True for tool steps the agent chose (not the user's device actions).
    pub fn is_agent_tool(&self) -> bool {
        self.kind == StepKind::Tool && self.requestor != Some(Requestor::User)
    }

    /// The task type used for segmenting; absent means `default`.
    pub fn task_type_or_default(&self) -> &str {
        self.task_type.as_deref().unwrap_or(DEFAULT_TASK_TYPE)
    }
}

/// Segment task type for steps that carry none.
pub const DEFAULT_TASK_TYPE: &str = "default";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_version_means_one_and_round_trips_without_it() {
        let s: Step = serde_json::from_str(r#"{"session_id":"s","seq":0,"ts":1,"kind":"llm","agent":"a"}"#).unwrap();
        assert_eq!(s.v, 1);
        let back = serde_json::to_string(&s).unwrap();
        assert!(!back.contains("\"v\""), "{back}");
        assert!(!back.contains("input_tokens"), "absent values must stay absent: {back}");
    }

    #[test]
    fn unknown_fields_and_kinds_are_rejected() {
        let e =
            serde_json::from_str::<Step>(r#"{"session_id":"s","seq":0,"ts":1,"kind":"llm","agent":"a","colour":1}"#)
                .unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let e = serde_json::from_str::<Step>(r#"{"session_id":"s","seq":0,"ts":1,"kind":"dance","agent":"a"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("dance"), "{e}");
    }

    #[test]
    fn validation_names_the_field() {
        let mut s = Step::new("s", 0, 1, StepKind::Tool, "a");
        assert_eq!(s.validate().unwrap_err().field, "tool");
        s.tool = Some("search".into());
        s.cost_usd = Some(f64::NAN);
        assert_eq!(s.validate().unwrap_err().field, "cost_usd");
        s.cost_usd = Some(-1.0);
        assert_eq!(s.validate().unwrap_err().field, "cost_usd");
        s.cost_usd = Some(1e308);
        assert_eq!(s.validate().unwrap_err().field, "cost_usd", "totals would overflow");
        s.cost_usd = Some(0.5);
        s.input_tokens = Some(u64::MAX);
        assert_eq!(s.validate().unwrap_err().field, "input_tokens");
        s.input_tokens = Some(MAX_TOKENS);
        assert!(s.validate().is_ok());
        s.seq = i64::MAX as u64;
        assert_eq!(s.validate().unwrap_err().field, "seq");
        s.seq = MAX_SEQ;
        s.ts = i64::MIN;
        assert_eq!(s.validate().unwrap_err().field, "ts");
        s.ts = i64::MAX;
        assert_eq!(s.validate().unwrap_err().field, "ts");
        s.ts = MAX_TS;
        s.reward = Some(1e300);
        assert_eq!(s.validate().unwrap_err().field, "reward");
        s.reward = Some(1.0);
        assert!(s.validate().is_ok());
        s.v = 2;
        assert_eq!(s.validate().unwrap_err().field, "v");
    }

    #[test]
    fn error_classes_keep_free_text() {
        let c: ErrorClass = serde_json::from_str("\"quota_exceeded\"").unwrap();
        assert_eq!(c, ErrorClass::Other("quota_exceeded".into()));
        let c: ErrorClass = serde_json::from_str("\"tool_timeout\"").unwrap();
        assert_eq!(c, ErrorClass::ToolTimeout);
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"tool_timeout\"");
    }
}
