//! One span → one [`SpanRecord`]: what the span is (its role), the step it
//! becomes with its identity left open, and the identity hints it carries
//! (session, agent, task type). Nothing here looks at other spans: identity
//! is settled later by [`super::assemble`], over the whole trace, so it does
//! not depend on how the exporter batched the spans.

use super::conventions as cv;
use super::messages::{self, Message, MsgRole, ToolCall};
use crate::ingest::{Location, RecordError};
use crate::model::{ErrorClass, MemoryOp, Outcome, OutcomeSource, Status, Step, StepKind};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, status::StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// What a span is, for our purposes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanRole {
    /// A model call.
    Llm,
    /// A tool execution.
    Tool,
    /// A retrieval (a tool whose result is documents).
    Retrieval,
    /// A memory read or write.
    Memory,
    /// An agent invocation (named or not).
    Agent,
    /// Part of an agent's trace that is no step (chain, workflow, plan, …).
    Structural,
    /// A span of other instrumentation (HTTP, DB, …): kept for the tree only.
    Foreign,
}

/// An outcome a span or event states for its session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutcomeHint {
    /// The outcome.
    pub outcome: Outcome,
    /// The reward, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward: Option<f64>,
    /// Where it came from.
    pub source: OutcomeSource,
    /// Why the session stopped, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_reason: Option<String>,
}

/// Identity hints a resource gives its spans.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceHints {
    /// `service.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// A session attribute on the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// A task-type attribute on the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<String>,
}

/// One span reduced to what assembling sessions needs; this is what the
/// service's log stores for an OTLP span.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpanRecord {
    /// Trace id, hex.
    pub trace_id: String,
    /// Span id, hex.
    pub span_id: String,
    /// Parent span id, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Span name.
    pub name: String,
    /// Start, unix ns.
    pub start_ns: u64,
    /// End, unix ns.
    pub end_ns: u64,
    /// What it is.
    pub role: SpanRole,
    /// The agent this span names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// A session id on the span itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// A task type on the span itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<String>,
    /// What its resource says.
    #[serde(default)]
    pub resource: ResourceHints,
    /// Whether the span's status is ERROR.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub error: bool,
    /// The step this span becomes (model, tool and memory spans), with
    /// session, agent and `seq` still to be settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<Step>,
    /// Input messages after the last assistant message: what is new since
    /// the previous model call (model spans).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_tail: Vec<Message>,
    /// Whether the input held an assistant message at all.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub input_has_assistant: bool,
    /// Tool calls the model asked for (model spans).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// An outcome the span states for its session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<OutcomeHint>,
}

/// Options of the span mapping.
#[derive(Clone, Debug)]
pub struct SpanOptions<'a> {
    /// Attributes holding the task type, first match wins.
    pub task_type_attributes: &'a [String],
}

/// A span's attributes, looked up by key. Spans carry a dozen or two
/// attributes, for which a linear scan beats hashing every key.
#[derive(Default)]
pub struct Attrs<'a>(Vec<(&'a str, &'a AnyValue)>);

impl<'a> Attrs<'a> {
    /// The value of `key` (the last one if repeated, as a map would keep).
    pub fn get(&self, key: &str) -> Option<&'a AnyValue> {
        self.0.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| *k == key)
    }

    /// Every key.
    pub fn keys(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.0.iter().map(|(k, _)| *k)
    }

    /// Every (key, value).
    pub fn iter(&self) -> impl Iterator<Item = &(&'a str, &'a AnyValue)> + '_ {
        self.0.iter()
    }
}

/// Attributes of a key-value list by key.
pub fn attr_map(kvs: &[KeyValue]) -> Attrs<'_> {
    Attrs(
        kvs.iter()
            .filter_map(|kv| kv.value.as_ref().map(|v| (kv.key.as_str(), v)))
            .collect(),
    )
}

/// Lower-case hex of an id, without the per-character iterator of `hex`.
pub fn hex_id(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize]);
        out.push(DIGITS[(b & 15) as usize]);
    }
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// A string attribute value.
pub fn as_str(v: &AnyValue) -> Option<&str> {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
        _ => None,
    }
}

/// An attribute value as JSON.
pub fn any_to_json(v: &AnyValue) -> Value {
    match &v.value {
        None => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number),
        Some(any_value::Value::ArrayValue(a)) => Value::Array(a.values.iter().map(any_to_json).collect()),
        Some(any_value::Value::KvlistValue(kv)) => Value::Object(
            kv.values
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, any_to_json)))
                .collect(),
        ),
        Some(any_value::Value::BytesValue(b)) => Value::String(hex::encode(b)),
        Some(any_value::Value::StringValueStrindex(i)) => Value::from(*i),
    }
}

/// First non-empty string among `keys`.
pub fn first_str<'a>(attrs: &Attrs<'a>, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| attrs.get(k).and_then(|v| as_str(v)))
        .filter(|s| !s.is_empty())
}

/// Resource identity hints.
pub fn resource_hints(attrs: &Attrs, opts: &SpanOptions) -> ResourceHints {
    ResourceHints {
        service: first_str(attrs, &["service.name"]).map(str::to_string),
        session: first_str(attrs, cv::SESSION).map(str::to_string),
        task_type: task_type_of(attrs, opts),
    }
}

fn task_type_of(attrs: &Attrs, opts: &SpanOptions) -> Option<String> {
    opts.task_type_attributes
        .iter()
        .find_map(|k| attrs.get(k.as_str()).and_then(|v| as_str(v)))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Classifies a span and names the agent it is for, if any.
pub fn classify(attrs: &Attrs, name: &str) -> (SpanRole, Option<String>) {
    let get = |k: &str| attrs.get(k).and_then(|v| as_str(v));
    let named = first_str(attrs, cv::AGENT_NAME).map(str::to_string);
    if let Some(op) = get("gen_ai.operation.name") {
        let role = match op {
            op if cv::LLM_OPERATIONS.contains(&op) => SpanRole::Llm,
            "execute_tool" => SpanRole::Tool,
            "retrieval" => SpanRole::Retrieval,
            "invoke_agent" => SpanRole::Agent,
            op if op.contains("memory") => SpanRole::Memory,
            // create_agent, embeddings, invoke_workflow, plan and future operations
            _ => SpanRole::Structural,
        };
        let agent = match role {
            // `invoke_agent {name}` is the GenAI span name when the attribute is missing.
            SpanRole::Agent => named.or_else(|| {
                name.strip_prefix("invoke_agent ")
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
            }),
            _ => named,
        };
        return (role, agent);
    }
    if let Some(kind) = get("openinference.span.kind") {
        let role = match kind.to_ascii_uppercase().as_str() {
            "LLM" => SpanRole::Llm,
            // The Agents SDK records a handoff as a TOOL span `handoff to X`
            // with no tool name; the handoff itself comes from the agent spans.
            "TOOL" if first_str(attrs, cv::TOOL_NAME).is_none() && name.starts_with("handoff to ") => {
                SpanRole::Structural
            }
            "TOOL" => SpanRole::Tool,
            "RETRIEVER" => SpanRole::Retrieval,
            "AGENT" => SpanRole::Agent,
            _ => SpanRole::Structural,
        };
        return (role, named);
    }
    if let Some(kind) = get("traceloop.span.kind") {
        let entity = get("traceloop.entity.name")
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        return match kind {
            "tool" => (SpanRole::Tool, named),
            "agent" => (SpanRole::Agent, named.or(entity)),
            _ => (SpanRole::Structural, named),
        };
    }
    if matches!(get("llm.request.type"), Some("chat") | Some("completion")) {
        return (SpanRole::Llm, named);
    }
    if attrs.contains_key("gen_ai.tool.name") {
        return (SpanRole::Tool, named);
    }
    if attrs.keys().any(|k| k.starts_with("gen_ai.memory.")) {
        return (SpanRole::Memory, named);
    }
    // Older GenAI instrumentations set no operation name on model calls.
    if [
        "gen_ai.request.model",
        "gen_ai.system",
        "gen_ai.provider.name",
        "gen_ai.usage.input_tokens",
    ]
    .iter()
    .any(|k| attrs.contains_key(k))
    {
        return (SpanRole::Llm, named);
    }
    if attrs
        .keys()
        .any(|k| k.starts_with("gen_ai.") || k.starts_with("llm.") || k.starts_with("agentdrift."))
    {
        return (SpanRole::Structural, named);
    }
    (SpanRole::Foreign, None)
}

/// A non-negative integer attribute (ints, integral doubles, digit strings).
fn u64_attr(
    attrs: &Attrs,
    keys: &[&str],
    err: &impl Fn(&str, String) -> RecordError,
) -> Result<Option<u64>, RecordError> {
    for key in keys {
        let Some(v) = attrs.get(key) else { continue };
        let parsed = match &v.value {
            Some(any_value::Value::IntValue(i)) if *i >= 0 => Some(*i as u64),
            Some(any_value::Value::DoubleValue(d)) if d.is_finite() && *d >= 0.0 && d.fract() == 0.0 && *d < 1.8e19 => {
                Some(*d as u64)
            }
            Some(any_value::Value::StringValue(s)) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        return match parsed {
            Some(n) if n <= crate::model::step::MAX_TOKENS => Ok(Some(n)),
            Some(n) => Err(err(
                key,
                format!("must be at most {}, got {n}", crate::model::step::MAX_TOKENS),
            )),
            None => Err(err(
                key,
                format!("must be a non-negative integer, got {}", any_to_json(v)),
            )),
        };
    }
    Ok(None)
}

/// A finite, non-negative number attribute.
fn f64_attr(
    attrs: &Attrs,
    keys: &[&str],
    max: f64,
    err: &impl Fn(&str, String) -> RecordError,
) -> Result<Option<f64>, RecordError> {
    for key in keys {
        let Some(v) = attrs.get(key) else { continue };
        let parsed = match &v.value {
            Some(any_value::Value::IntValue(i)) => Some(*i as f64),
            Some(any_value::Value::DoubleValue(d)) => Some(*d),
            Some(any_value::Value::StringValue(s)) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        return match parsed {
            Some(x) if x.is_finite() && (0.0..=max).contains(&x) => Ok(Some(x)),
            _ => Err(err(
                key,
                format!("must be a finite number between 0 and {max}, got {}", any_to_json(v)),
            )),
        };
    }
    Ok(None)
}

/// Maps an `error.type` / `exception.type` to an error class.
pub fn classify_error(t: &str) -> ErrorClass {
    let l = t.to_lowercase();
    if l.contains("timeout") || l.contains("timed out") || l.contains("deadline") {
        ErrorClass::ToolTimeout
    } else if l.contains("invalid") && (l.contains("arg") || l.contains("param") || l.contains("input"))
        || l.contains("validation")
    {
        ErrorClass::ToolInvalidArgs
    } else {
        ErrorClass::parse(t)
    }
}

/// The outcome an evaluation label or score states.
pub fn outcome_of_evaluation(label: Option<&str>, score: Option<f64>) -> Option<Outcome> {
    if let Some(l) = label {
        let l = l.trim().to_ascii_lowercase();
        const SUCCESS: &[&str] = &[
            "pass",
            "passed",
            "correct",
            "success",
            "successful",
            "succeeded",
            "true",
            "yes",
            "good",
            "resolved",
            "solved",
            "accepted",
        ];
        const FAILURE: &[&str] = &[
            "fail",
            "failed",
            "incorrect",
            "failure",
            "false",
            "no",
            "bad",
            "unresolved",
            "wrong",
            "rejected",
            "error",
        ];
        const ESCALATED: &[&str] = &["escalated", "escalate", "escalation", "handoff", "human"];
        if SUCCESS.contains(&l.as_str()) {
            return Some(Outcome::Success);
        }
        if FAILURE.contains(&l.as_str()) {
            return Some(Outcome::Failure);
        }
        if ESCALATED.contains(&l.as_str()) {
            return Some(Outcome::Escalated);
        }
    }
    match score {
        Some(s) if (0.0..=1.0).contains(&s) => Some(if s >= 0.5 { Outcome::Success } else { Outcome::Failure }),
        _ => None,
    }
}

/// An evaluation stated by attributes (span attributes or an event's).
pub fn evaluation_hint(attrs: &Attrs) -> Option<OutcomeHint> {
    let label = first_str(attrs, cv::EVAL_LABEL);
    let score = cv::EVAL_SCORE.iter().find_map(|k| {
        attrs.get(k).and_then(|v| match &v.value {
            Some(any_value::Value::DoubleValue(d)) if d.is_finite() => Some(*d),
            Some(any_value::Value::IntValue(i)) => Some(*i as f64),
            Some(any_value::Value::StringValue(s)) => s.trim().parse::<f64>().ok().filter(|d| d.is_finite()),
            _ => None,
        })
    });
    if label.is_none() && score.is_none() {
        return None;
    }
    let outcome = outcome_of_evaluation(label, score)?;
    Some(OutcomeHint {
        outcome,
        reward: score.filter(|s| (0.0..=1.0).contains(s)),
        source: OutcomeSource::Evaluation,
        termination_reason: first_str(attrs, cv::EVAL_NAME).map(|n| format!("evaluation:{n}")),
    })
}

/// Keeps the input messages after the last assistant message (new since the
/// previous model call), and says whether there was one.
pub fn input_tail(mut msgs: Vec<Message>) -> (Vec<Message>, bool) {
    match msgs.iter().rposition(|m| m.role == MsgRole::Assistant) {
        Some(i) => (msgs.split_off(i + 1), true),
        None => (msgs, false),
    }
}

fn json_of_str(a: &AnyValue) -> Value {
    match as_str(a) {
        Some(text) => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string())),
        None => any_to_json(a),
    }
}

/// The model call's input and output messages, from GenAI JSON or
/// OpenInference flattened attributes.
fn model_messages(attrs: &Attrs) -> (Option<Vec<Message>>, Option<Vec<Message>>) {
    let genai = |k: &str| attrs.get(k).and_then(|v| messages::from_genai(&any_to_json(v)));
    let mut input = genai(cv::INPUT_MESSAGES);
    let mut output = genai(cv::OUTPUT_MESSAGES);
    if input.is_none() || output.is_none() {
        let flat: HashMap<&str, Value> = attrs
            .iter()
            .filter(|(k, _)| k.starts_with("llm.input_messages.") || k.starts_with("llm.output_messages."))
            .map(|(k, v)| (*k, any_to_json(v)))
            .collect();
        if !flat.is_empty() {
            if input.is_none() {
                input = messages::from_openinference(&flat, cv::OI_INPUT_MESSAGES);
            }
            if output.is_none() {
                output = messages::from_openinference(&flat, cv::OI_OUTPUT_MESSAGES);
            }
        }
    }
    (input, output)
}

/// Output text and requested calls of a model call's output messages.
pub fn output_summary(output: &[Message]) -> (String, Vec<ToolCall>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for m in output
        .iter()
        .filter(|m| m.role == MsgRole::Assistant || m.role == MsgRole::Other)
    {
        if let Some(t) = &m.text {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(t);
        }
        calls.extend(m.tool_calls.iter().cloned());
    }
    (text, calls)
}

/// Maps one span to its record; a span that claims to be a model or tool
/// call but cannot be read is an error naming the span and attribute.
pub fn record_of(span: &Span, resource: &ResourceHints, opts: &SpanOptions) -> Result<SpanRecord, RecordError> {
    let trace_id = hex_id(&span.trace_id);
    let span_id = hex_id(&span.span_id);
    let err = |field: &str, message: String| RecordError {
        location: Location::Span {
            trace_id: trace_id.clone(),
            span_id: span_id.clone(),
        },
        field: Some(field.to_string()),
        message,
    };
    if span.trace_id.len() != 16 || span.trace_id.iter().all(|&b| b == 0) {
        return Err(err("trace_id", "must be 16 bytes, not all zero".into()));
    }
    if span.span_id.len() != 8 || span.span_id.iter().all(|&b| b == 0) {
        return Err(err("span_id", "must be 8 bytes, not all zero".into()));
    }
    let parent = match span.parent_span_id.len() {
        0 => None,
        8 if span.parent_span_id.iter().any(|&b| b != 0) => Some(hex_id(&span.parent_span_id)),
        8 => None,
        _ => return Err(err("parent_span_id", "must be empty or 8 bytes".into())),
    };
    let (start_ns, end_ns) = (span.start_time_unix_nano, span.end_time_unix_nano);
    if end_ns < start_ns {
        return Err(err("end_time_unix_nano", "span ends before it starts".into()));
    }
    if end_ns / 1_000_000 > crate::model::step::MAX_TS as u64 {
        return Err(err("end_time_unix_nano", "after the year 9999".into()));
    }
    let attrs = attr_map(&span.attributes);
    let (role, agent) = classify(&attrs, &span.name);
    let error = span.status.as_ref().is_some_and(|s| s.code == StatusCode::Error as i32);
    let mut rec = SpanRecord {
        trace_id: trace_id.clone(),
        span_id: span_id.clone(),
        parent,
        name: span.name.clone(),
        start_ns,
        end_ns,
        role,
        agent,
        session: first_str(&attrs, cv::SESSION).map(str::to_string),
        task_type: task_type_of(&attrs, opts),
        resource: resource.clone(),
        error,
        step: None,
        input_tail: Vec::new(),
        input_has_assistant: false,
        tool_calls: Vec::new(),
        outcome: None,
    };
    if role == SpanRole::Foreign {
        return Ok(rec);
    }
    // Outcome: explicit attribute, else an evaluation on the span.
    if let Some(o) = first_str(&attrs, &[cv::OUTCOME]) {
        let outcome = match o {
            "success" => Outcome::Success,
            "failure" => Outcome::Failure,
            "escalated" => Outcome::Escalated,
            other => {
                return Err(err(
                    cv::OUTCOME,
                    format!("unknown outcome `{other}` (expected success, failure or escalated)"),
                ));
            }
        };
        rec.outcome = Some(OutcomeHint {
            outcome,
            reward: f64_attr(&attrs, &[cv::REWARD], crate::model::step::MAX_REWARD, &err)?,
            source: OutcomeSource::Explicit,
            termination_reason: first_str(&attrs, &[cv::TERMINATION]).map(str::to_string),
        });
    } else {
        rec.outcome = evaluation_hint(&attrs);
    }

    let latency = (end_ns - start_ns) as f64 / 1e6;
    let error_message = || {
        span.status
            .as_ref()
            .map(|s| s.message.clone())
            .filter(|m| !m.is_empty())
            .or_else(|| {
                span.events.iter().find_map(|e| {
                    e.attributes
                        .iter()
                        .find(|kv| kv.key == "exception.message")
                        .and_then(|kv| kv.value.as_ref().and_then(as_str).map(str::to_string))
                })
            })
    };
    let error_class = || {
        first_str(&attrs, &[cv::ERROR_TYPE])
            .or_else(|| {
                span.events.iter().find_map(|e| {
                    e.attributes
                        .iter()
                        .find(|kv| kv.key == "exception.type")
                        .and_then(|kv| kv.value.as_ref().and_then(as_str))
                })
            })
            .map(classify_error)
    };
    let mut step = Step::new(
        String::new(),
        0,
        (start_ns / 1_000_000) as i64,
        StepKind::Llm,
        String::new(),
    );
    // The span's ids are the record's; the assembler puts them on the step.
    step.latency_ms = Some(latency);
    match role {
        SpanRole::Llm => {
            step.kind = StepKind::Llm;
            step.model = first_str(&attrs, cv::MODEL).map(str::to_string);
            step.input_tokens = u64_attr(&attrs, cv::INPUT_TOKENS, &err)?;
            step.output_tokens = u64_attr(&attrs, cv::OUTPUT_TOKENS, &err)?;
            step.cost_usd = f64_attr(&attrs, cv::COST, crate::model::step::MAX_COST_USD, &err)?;
            let (input, output) = model_messages(&attrs);
            if let Some(input) = input {
                let (tail, has_assistant) = input_tail(input);
                rec.input_tail = tail;
                rec.input_has_assistant = has_assistant;
            }
            match output {
                Some(out) => {
                    let (text, calls) = output_summary(&out);
                    step.text = Some(text);
                    step.tool_calls_requested = Some(calls.len() as u32);
                    rec.tool_calls = calls;
                }
                None => {
                    step.text = first_str(&attrs, cv::OUTPUT_TEXT)
                        .filter(|t| !looks_like_api_payload(t))
                        .map(str::to_string);
                    // Without content, the finish reason still says whether
                    // the model asked for tools (how many stays unknown).
                    let reasons = finish_reasons(&attrs);
                    if !reasons.is_empty() && reasons.iter().all(|r| !is_tool_finish(r)) {
                        step.tool_calls_requested = Some(0);
                    }
                }
            }
            if step.model.is_none()
                && step.input_tokens.is_none()
                && step.output_tokens.is_none()
                && step.text.is_none()
            {
                return Err(err(
                    "gen_ai.request.model",
                    "model span has no usable attribute (no model, token counts or output)".into(),
                ));
            }
            if error {
                step.status = Some(Status::Error);
                step.error_class = error_class();
                step.error = error_message();
            }
        }
        SpanRole::Tool | SpanRole::Retrieval => {
            step.kind = StepKind::Tool;
            let name = first_str(&attrs, cv::TOOL_NAME)
                .map(str::to_string)
                .or_else(|| span.name.strip_prefix("execute_tool ").map(str::to_string))
                .or_else(|| {
                    (role == SpanRole::Retrieval)
                        .then(|| first_str(&attrs, &["gen_ai.data_source.id"]).map(|d| format!("retrieval:{d}")))
                        .flatten()
                })
                .or_else(|| (!span.name.is_empty() && role == SpanRole::Retrieval).then(|| span.name.clone()));
            let Some(name) = name.filter(|n| !n.is_empty()) else {
                return Err(err("gen_ai.tool.name", "tool span has no tool name".into()));
            };
            step.tool = Some(name);
            step.args = cv::TOOL_ARGS
                .iter()
                .find_map(|k| attrs.get(k).map(|a| (*k, a)))
                .map(|(k, a)| {
                    let v = json_of_str(a);
                    // OpenLLMetry records a decorated function's call as {"args": [...], "kwargs": {...}}.
                    match (k, &v) {
                        ("traceloop.entity.input", Value::Object(o)) => match (o.get("args"), o.get("kwargs")) {
                            (Some(Value::Array(a)), Some(kw)) if a.is_empty() => kw.clone(),
                            _ => v,
                        },
                        _ => v,
                    }
                });
            if let Some((key, result)) = cv::TOOL_RESULT.iter().find_map(|k| attrs.get(k).map(|a| (*k, a))) {
                let mut text = match as_str(result) {
                    Some(t) => t.to_string(),
                    None => any_to_json(result).to_string(),
                };
                // OpenLLMetry JSON-encodes a string result once more.
                if key == "traceloop.entity.output"
                    && let Ok(Value::String(inner)) = serde_json::from_str::<Value>(&text)
                {
                    text = inner;
                }
                // OpenInference's LangChain instrumentation records the whole
                // serialised ToolMessage; the result is its content.
                if text.starts_with('{')
                    && let Ok(Value::Object(o)) = serde_json::from_str::<Value>(&text)
                    && o.get("type").and_then(Value::as_str) == Some("tool")
                    && let Some(content) = o.get("data").and_then(|d| d.get("content")).and_then(Value::as_str)
                {
                    text = content.to_string();
                }
                step.result_chars = Some(text.chars().count() as u64);
                step.result = Some(Value::String(text));
            }
            step.status = Some(if error { Status::Error } else { Status::Ok });
            if error {
                step.error_class = error_class();
                step.error = error_message();
            }
        }
        SpanRole::Memory => {
            step.kind = StepKind::Memory;
            let op = first_str(&attrs, &["gen_ai.operation.name"])
                .unwrap_or(&span.name)
                .to_lowercase();
            let writes = ["write", "store", "save", "add", "update", "create", "upsert"];
            step.memory_op = Some(
                if writes.iter().any(|w| op.contains(w)) || attrs.contains_key("gen_ai.memory.records") {
                    MemoryOp::Write
                } else {
                    MemoryOp::Read
                },
            );
            step.text = first_str(&attrs, &["gen_ai.memory.query.text"]).map(str::to_string);
            if error {
                step.status = Some(Status::Error);
                step.error_class = error_class();
                step.error = error_message();
            }
        }
        SpanRole::Agent | SpanRole::Structural | SpanRole::Foreign => return Ok(rec),
    }
    step.attributes = Some(leftover_attributes(span));
    rec.step = Some(step);
    Ok(rec)
}

/// `gen_ai.response.finish_reasons` (a list) or OpenInference's `llm.finish_reason`.
pub fn finish_reasons(attrs: &Attrs) -> Vec<String> {
    cv::FINISH_REASONS
        .iter()
        .filter_map(|k| attrs.get(k))
        .flat_map(|v| match any_to_json(v) {
            Value::Array(a) => a.into_iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
            Value::String(s) => vec![s],
            _ => Vec::new(),
        })
        .collect()
}

/// Whether a finish reason says the model stopped to call tools.
pub fn is_tool_finish(reason: &str) -> bool {
    matches!(reason, "tool_calls" | "tool_call" | "tool_use" | "function_call")
}

/// OpenInference's `output.value` on model spans holds the raw API response
/// JSON, not the model's text.
fn looks_like_api_payload(t: &str) -> bool {
    let t = t.trim_start();
    t.starts_with('{') && (t.contains("\"choices\"") || t.contains("\"output\"") || t.contains("\"object\""))
}

fn leftover_attributes(span: &Span) -> Map<String, Value> {
    static MAPPED: std::sync::LazyLock<std::collections::HashSet<&'static str>> =
        std::sync::LazyLock::new(|| cv::MAPPED.iter().copied().collect());
    let mut m: Map<String, Value> = span
        .attributes
        .iter()
        .filter(|kv| !MAPPED.contains(kv.key.as_str()) && !cv::MAPPED_PREFIXES.iter().any(|p| kv.key.starts_with(p)))
        .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, any_to_json)))
        .collect();
    m.insert("otel.span_name".to_string(), Value::String(span.name.clone()));
    m
}
