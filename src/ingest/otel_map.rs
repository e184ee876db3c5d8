//! Maps OpenTelemetry spans to steps.
//!
//! Follows the OpenTelemetry GenAI semantic conventions as published in
//! `open-telemetry/semantic-conventions-genai` (registry `e8fc575`, spans
//! `7e7e4e7`; all `gen_ai.*` items are *development* stability), accepting the
//! deprecated names of `semantic-conventions` ≤ v1.37 (`gen_ai.system`,
//! `gen_ai.usage.prompt_tokens`, …), OpenInference (`Arize-ai/openinference`
//! spec at `1fe497f`) and OpenLLMetry (`traceloop.*`). The rules are written
//! out in README.md ("OpenTelemetry mapping").

use super::{Location, ReadOptions, ReadOutput, RecordError};
use crate::model::{ErrorClass, MemoryOp, Outcome, Status, Step, StepKind};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, status::StatusCode};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};

/// Attributes that name the session, in order of preference.
pub const SESSION_ATTRIBUTES: [&str; 2] = ["session.id", "gen_ai.conversation.id"];
/// Attribute that carries a session's outcome (`success`/`failure`/`escalated`).
pub const OUTCOME_ATTRIBUTE: &str = "agentdrift.outcome";
/// Attribute that carries a session's reward.
pub const REWARD_ATTRIBUTE: &str = "agentdrift.reward";

/// What a span is, for our purposes.
#[derive(Clone, Debug, PartialEq)]
enum Role {
    Llm,
    Tool {
        retrieval: bool,
    },
    Memory,
    /// An agent invocation; carries the agent name when the span gives one.
    Agent(Option<String>),
    /// Part of an agent's trace that is not a step (CHAIN, workflow, plan, …).
    Structural,
    /// A span with no agent-related attribute at all (HTTP, DB, …).
    Foreign,
}

/// One span flattened with its resource, with attribute lookup by key.
struct SpanView<'a> {
    span: &'a Span,
    trace_id: String,
    span_id: String,
    parent: Option<String>,
    attrs: HashMap<&'a str, &'a AnyValue>,
    resource: &'a HashMap<&'a str, &'a AnyValue>,
    role: Role,
}

fn attr_map(kvs: &[KeyValue]) -> HashMap<&str, &AnyValue> {
    kvs.iter()
        .filter_map(|kv| kv.value.as_ref().map(|v| (kv.key.as_str(), v)))
        .collect()
}

fn as_str(v: &AnyValue) -> Option<&str> {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
        _ => None,
    }
}

/// An attribute value as JSON, for `attributes` and tool arguments.
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

impl<'a> SpanView<'a> {
    fn str(&self, key: &str) -> Option<&'a str> {
        self.attrs.get(key).and_then(|v| as_str(v)).filter(|s| !s.is_empty())
    }

    fn first_str(&self, keys: &[&str]) -> Option<&'a str> {
        keys.iter().find_map(|k| self.str(k))
    }

    fn error(&self, field: &str, message: impl Into<String>) -> RecordError {
        RecordError {
            location: Location::Span {
                trace_id: self.trace_id.clone(),
                span_id: self.span_id.clone(),
            },
            field: Some(field.to_string()),
            message: message.into(),
        }
    }

    /// A non-negative integer attribute (ints, integral doubles, digit strings).
    fn u64_attr(&self, keys: &[&str]) -> Result<Option<u64>, RecordError> {
        for key in keys {
            let Some(v) = self.attrs.get(key) else { continue };
            let parsed = match &v.value {
                Some(any_value::Value::IntValue(i)) if *i >= 0 => Some(*i as u64),
                Some(any_value::Value::DoubleValue(d)) if d.is_finite() && *d >= 0.0 && d.fract() == 0.0 => {
                    Some(*d as u64)
                }
                Some(any_value::Value::StringValue(s)) => s.trim().parse::<u64>().ok(),
                _ => None,
            };
            return match parsed {
                Some(n) => Ok(Some(n)),
                None => Err(self.error(key, format!("must be a non-negative integer, got {}", any_to_json(v)))),
            };
        }
        Ok(None)
    }

    /// A finite, non-negative number attribute.
    fn f64_attr(&self, key: &str) -> Result<Option<f64>, RecordError> {
        let Some(v) = self.attrs.get(key) else { return Ok(None) };
        let parsed = match &v.value {
            Some(any_value::Value::IntValue(i)) => Some(*i as f64),
            Some(any_value::Value::DoubleValue(d)) => Some(*d),
            Some(any_value::Value::StringValue(s)) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        match parsed {
            Some(x) if x.is_finite() && x >= 0.0 => Ok(Some(x)),
            _ => Err(self.error(
                key,
                format!("must be a finite non-negative number, got {}", any_to_json(v)),
            )),
        }
    }
}

fn classify(attrs: &HashMap<&str, &AnyValue>, name: &str) -> Role {
    let get = |k: &str| attrs.get(k).and_then(|v| as_str(v));
    let agent_name = || {
        ["gen_ai.agent.name", "agent.name", "traceloop.entity.name"]
            .iter()
            .find_map(|k| get(k))
            .map(str::to_string)
            .or_else(|| name.strip_prefix("invoke_agent ").map(str::to_string))
            .filter(|s| !s.is_empty())
    };
    if let Some(op) = get("gen_ai.operation.name") {
        return match op {
            "chat" | "generate_content" | "text_completion" | "completion" => Role::Llm,
            "execute_tool" => Role::Tool { retrieval: false },
            "retrieval" => Role::Tool { retrieval: true },
            "invoke_agent" => Role::Agent(agent_name()),
            op if op.contains("memory") => Role::Memory,
            // create_agent, embeddings, invoke_workflow, plan and future operations
            _ => Role::Structural,
        };
    }
    if let Some(kind) = get("openinference.span.kind") {
        return match kind.to_ascii_uppercase().as_str() {
            "LLM" => Role::Llm,
            "TOOL" => Role::Tool { retrieval: false },
            "RETRIEVER" => Role::Tool { retrieval: true },
            "AGENT" => Role::Agent(agent_name()),
            _ => Role::Structural,
        };
    }
    if let Some(kind) = get("traceloop.span.kind") {
        return match kind {
            "tool" => Role::Tool { retrieval: false },
            "agent" => Role::Agent(agent_name()),
            _ => Role::Structural,
        };
    }
    if matches!(get("llm.request.type"), Some("chat") | Some("completion")) {
        return Role::Llm;
    }
    if attrs.contains_key("gen_ai.tool.name") {
        return Role::Tool { retrieval: false };
    }
    if attrs.keys().any(|k| k.starts_with("gen_ai.memory.")) {
        return Role::Memory;
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
        return Role::Llm;
    }
    if attrs
        .keys()
        .any(|k| k.starts_with("gen_ai.") || k.starts_with("llm.") || k.starts_with("agentdrift."))
    {
        return Role::Structural;
    }
    Role::Foreign
}

/// Keys consumed into step fields; everything else goes to `attributes`.
const MAPPED: &[&str] = &[
    "gen_ai.operation.name",
    "openinference.span.kind",
    "traceloop.span.kind",
    "session.id",
    "gen_ai.conversation.id",
    "gen_ai.agent.name",
    "agent.name",
    "gen_ai.response.model",
    "gen_ai.request.model",
    "llm.model_name",
    "llm.response.model_name",
    "llm.request.model_name",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.token_count.prompt",
    "llm.usage.prompt_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
    "llm.usage.completion_tokens",
    "llm.cost.total",
    "gen_ai.output.messages",
    "gen_ai.completion",
    "output.value",
    "input.value",
    "gen_ai.tool.name",
    "tool.name",
    "tool_call.function.name",
    "gen_ai.tool.call.arguments",
    "tool_call.function.arguments",
    "gen_ai.tool.call.result",
    "traceloop.entity.input",
    "traceloop.entity.output",
    "error.type",
    OUTCOME_ATTRIBUTE,
    REWARD_ATTRIBUTE,
    "agentdrift.termination_reason",
];

/// Maps a decoded OTLP export request to steps.
///
/// Rules (README "OpenTelemetry mapping"): session = `session.id` /
/// `gen_ai.conversation.id` on the span or its nearest ancestor or resource,
/// else the trace id; agent = `gen_ai.agent.name`/`agent.name` on the span or
/// nearest agent ancestor, else resource `service.name`; `seq` = order of
/// span start within the session in this request; a handoff step is emitted
/// whenever an agent span starts for a different agent than the one active.
pub fn map_request(req: &ExportTraceServiceRequest, opts: &ReadOptions) -> ReadOutput {
    let mut out = ReadOutput::default();
    let resources: Vec<HashMap<&str, &AnyValue>> = req
        .resource_spans
        .iter()
        .map(|rs| {
            rs.resource
                .as_ref()
                .map(|r| attr_map(&r.attributes))
                .unwrap_or_default()
        })
        .collect();
    let mut views: Vec<SpanView> = Vec::new();
    for (ri, rs) in req.resource_spans.iter().enumerate() {
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                let trace_id = hex::encode(&span.trace_id);
                let span_id = hex::encode(&span.span_id);
                let loc = || Location::Span {
                    trace_id: trace_id.clone(),
                    span_id: span_id.clone(),
                };
                if span.trace_id.len() != 16 || span.trace_id.iter().all(|&b| b == 0) {
                    out.errors.push(RecordError {
                        location: loc(),
                        field: Some("trace_id".into()),
                        message: "must be 16 bytes, not all zero".into(),
                    });
                    continue;
                }
                if span.span_id.len() != 8 || span.span_id.iter().all(|&b| b == 0) {
                    out.errors.push(RecordError {
                        location: loc(),
                        field: Some("span_id".into()),
                        message: "must be 8 bytes, not all zero".into(),
                    });
                    continue;
                }
                let attrs = attr_map(&span.attributes);
                let role = classify(&attrs, &span.name);
                views.push(SpanView {
                    span,
                    parent: (!span.parent_span_id.is_empty()).then(|| hex::encode(&span.parent_span_id)),
                    trace_id,
                    span_id,
                    attrs,
                    resource: &resources[ri],
                    role,
                });
            }
        }
    }

    let index: HashMap<(&str, &str), usize> = views
        .iter()
        .enumerate()
        .map(|(i, v)| ((v.trace_id.as_str(), v.span_id.as_str()), i))
        .collect();
    let parent_of: Vec<Option<usize>> = views
        .iter()
        .map(|v| {
            v.parent
                .as_deref()
                .and_then(|p| index.get(&(v.trace_id.as_str(), p)).copied())
        })
        .collect();
    // Ancestors of a span, nearest first; bounded so bad parent cycles end.
    let ancestors = |i: usize| {
        let mut chain = Vec::new();
        let mut cur = parent_of[i];
        while let Some(p) = cur {
            if chain.len() > views.len() {
                break;
            }
            chain.push(p);
            cur = parent_of[p];
        }
        chain
    };

    // An absent parent (exported in another request) counts as one level.
    let depth_of = |i: usize| {
        let chain = ancestors(i);
        let top = chain.last().copied().unwrap_or(i);
        chain.len() as u32 + u32::from(views[top].parent.is_some())
    };

    struct Pending {
        step: Step,
        start_ns: u64,
        rank: u8,
    }
    let mut pending: Vec<Pending> = Vec::new();
    let mut agent_spans: Vec<(usize, String)> = Vec::new();
    let mut outcomes: HashMap<String, (u64, Step)> = HashMap::new();

    for (i, v) in views.iter().enumerate() {
        if v.role == Role::Foreign {
            out.ignored += 1;
            continue;
        }
        let chain = ancestors(i);
        let depth = depth_of(i);
        let lookup = |keys: &[&str]| -> Option<String> {
            std::iter::once(i)
                .chain(chain.iter().copied())
                .find_map(|j| views[j].first_str(keys))
                .or_else(|| keys.iter().find_map(|k| v.resource.get(k).and_then(|x| as_str(x))))
                .map(str::to_string)
        };
        let session_id = lookup(&SESSION_ATTRIBUTES).unwrap_or_else(|| v.trace_id.clone());
        let agent = v
            .first_str(&["gen_ai.agent.name", "agent.name"])
            .map(str::to_string)
            .or_else(|| {
                std::iter::once(i)
                    .chain(chain.iter().copied())
                    .find_map(|j| match &views[j].role {
                        Role::Agent(Some(n)) => Some(n.clone()),
                        _ => None,
                    })
            })
            .or_else(|| {
                v.resource
                    .get("service.name")
                    .and_then(|x| as_str(x))
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "unknown_agent".to_string());
        let task_keys: Vec<&str> = opts.task_type_attributes.iter().map(String::as_str).collect();
        let task_type = lookup(&task_keys);

        let start_ns = v.span.start_time_unix_nano;
        let end_ns = v.span.end_time_unix_nano;
        if end_ns < start_ns {
            out.errors
                .push(v.error("end_time_unix_nano", "span ends before it starts"));
            continue;
        }
        let mut base = Step::new(
            session_id.clone(),
            0,
            (start_ns / 1_000_000) as i64,
            StepKind::Llm,
            agent.clone(),
        );
        base.task_type = task_type;
        base.trace_id = Some(v.trace_id.clone());
        base.span_id = Some(v.span_id.clone());
        base.parent_span_id = v.parent.clone();
        base.depth = Some(depth);
        base.correlation_id = Some(v.trace_id.clone());

        if let Some(o) = v.str(OUTCOME_ATTRIBUTE) {
            let outcome = match o {
                "success" => Outcome::Success,
                "failure" => Outcome::Failure,
                "escalated" => Outcome::Escalated,
                other => {
                    out.errors.push(v.error(
                        OUTCOME_ATTRIBUTE,
                        format!("unknown outcome `{other}` (expected success, failure or escalated)"),
                    ));
                    continue;
                }
            };
            let mut end = base.clone();
            end.kind = StepKind::End;
            end.ts = (end_ns / 1_000_000) as i64;
            // A stable id of its own, so a re-exported trace deduplicates it too.
            end.span_id = Some(format!("{}:end", v.span_id));
            end.parent_span_id = Some(v.span_id.clone());
            end.outcome = Some(outcome);
            end.termination_reason = v.str("agentdrift.termination_reason").map(str::to_string);
            match v.f64_attr(REWARD_ATTRIBUTE) {
                Ok(r) => end.reward = r,
                Err(e) => {
                    out.errors.push(e);
                    continue;
                }
            }
            let keep = outcomes.get(&session_id).is_none_or(|(t, _)| *t <= end_ns);
            if keep {
                outcomes.insert(session_id.clone(), (end_ns, end));
            }
        }

        let latency = (end_ns - start_ns) as f64 / 1e6;
        let is_error = v
            .span
            .status
            .as_ref()
            .is_some_and(|s| s.code == StatusCode::Error as i32);
        let error_message = || {
            v.span
                .status
                .as_ref()
                .map(|s| s.message.clone())
                .filter(|m| !m.is_empty())
                .or_else(|| {
                    v.span.events.iter().find_map(|e| {
                        e.attributes
                            .iter()
                            .find(|kv| kv.key == "exception.message")
                            .and_then(|kv| kv.value.as_ref().and_then(as_str).map(str::to_string))
                    })
                })
        };
        let error_class = || {
            v.str("error.type")
                .or_else(|| {
                    v.span.events.iter().find_map(|e| {
                        e.attributes
                            .iter()
                            .find(|kv| kv.key == "exception.type")
                            .and_then(|kv| kv.value.as_ref().and_then(as_str))
                    })
                })
                .map(classify_error)
        };

        let step = match &v.role {
            Role::Agent(name) => {
                agent_spans.push((i, name.clone().unwrap_or(agent)));
                continue;
            }
            Role::Structural | Role::Foreign => continue,
            Role::Llm => {
                let mut s = base;
                s.kind = StepKind::Llm;
                s.latency_ms = Some(latency);
                s.model = v
                    .first_str(&[
                        "gen_ai.response.model",
                        "gen_ai.request.model",
                        "llm.model_name",
                        "llm.response.model_name",
                        "llm.request.model_name",
                    ])
                    .map(str::to_string);
                let tokens = v
                    .u64_attr(&[
                        "gen_ai.usage.input_tokens",
                        "gen_ai.usage.prompt_tokens",
                        "llm.token_count.prompt",
                        "llm.usage.prompt_tokens",
                    ])
                    .and_then(|i| {
                        Ok((
                            i,
                            v.u64_attr(&[
                                "gen_ai.usage.output_tokens",
                                "gen_ai.usage.completion_tokens",
                                "llm.token_count.completion",
                                "llm.usage.completion_tokens",
                            ])?,
                        ))
                    })
                    .and_then(|t| Ok((t, v.f64_attr("llm.cost.total")?)));
                match tokens {
                    Ok(((i, o), c)) => {
                        s.input_tokens = i;
                        s.output_tokens = o;
                        s.cost_usd = c;
                    }
                    Err(e) => {
                        out.errors.push(e);
                        continue;
                    }
                }
                let (text, calls) = llm_output(v);
                s.text = text;
                s.tool_calls_requested = calls;
                if s.model.is_none() && s.input_tokens.is_none() && s.output_tokens.is_none() && s.text.is_none() {
                    out.errors.push(v.error(
                        "gen_ai.request.model",
                        "model span has no usable attribute (no model, token counts or output)",
                    ));
                    continue;
                }
                if is_error {
                    s.status = Some(Status::Error);
                    s.error_class = error_class();
                    s.error = error_message();
                }
                s
            }
            Role::Tool { retrieval } => {
                let mut s = base;
                s.kind = StepKind::Tool;
                s.latency_ms = Some(latency);
                let name = v
                    .first_str(&[
                        "gen_ai.tool.name",
                        "tool.name",
                        "tool_call.function.name",
                        "traceloop.entity.name",
                    ])
                    .map(str::to_string)
                    .or_else(|| v.span.name.strip_prefix("execute_tool ").map(str::to_string))
                    .or_else(|| {
                        retrieval
                            .then(|| v.str("gen_ai.data_source.id").map(|d| format!("retrieval:{d}")))
                            .flatten()
                    })
                    .or_else(|| (!v.span.name.is_empty() && *retrieval).then(|| v.span.name.clone()));
                let Some(name) = name.filter(|n| !n.is_empty()) else {
                    out.errors
                        .push(v.error("gen_ai.tool.name", "tool span has no tool name"));
                    continue;
                };
                s.tool = Some(name);
                s.args = [
                    "gen_ai.tool.call.arguments",
                    "tool_call.function.arguments",
                    "input.value",
                    "traceloop.entity.input",
                ]
                .iter()
                .find_map(|k| v.attrs.get(k))
                .map(|a| match as_str(a) {
                    Some(text) => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string())),
                    None => any_to_json(a),
                });
                s.result_chars = ["gen_ai.tool.call.result", "output.value", "traceloop.entity.output"]
                    .iter()
                    .find_map(|k| v.attrs.get(k))
                    .map(|a| match as_str(a) {
                        Some(text) => text.chars().count() as u64,
                        None => any_to_json(a).to_string().chars().count() as u64,
                    });
                s.status = Some(if is_error { Status::Error } else { Status::Ok });
                if is_error {
                    s.error_class = error_class();
                    s.error = error_message();
                }
                s
            }
            Role::Memory => {
                let mut s = base;
                s.kind = StepKind::Memory;
                s.latency_ms = Some(latency);
                let op = v.str("gen_ai.operation.name").unwrap_or(&v.span.name).to_lowercase();
                let writes = ["write", "store", "save", "add", "update", "create", "upsert"];
                s.memory_op = Some(
                    if writes.iter().any(|w| op.contains(w)) || v.attrs.contains_key("gen_ai.memory.records") {
                        MemoryOp::Write
                    } else {
                        MemoryOp::Read
                    },
                );
                s.text = v.str("gen_ai.memory.query.text").map(str::to_string);
                if is_error {
                    s.status = Some(Status::Error);
                    s.error_class = error_class();
                    s.error = error_message();
                }
                s
            }
        };
        let mut step = step;
        step.attributes = leftover_attributes(v);
        pending.push(Pending {
            step,
            start_ns,
            rank: 1,
        });
    }

    // Handoffs: per session, agent spans in start order; a change of agent is a handoff.
    let mut by_session: BTreeMap<String, Vec<(u64, usize, String)>> = BTreeMap::new();
    for (i, name) in agent_spans {
        let sid = pending
            .iter()
            .find(|p| p.step.parent_span_id.as_deref() == Some(views[i].span_id.as_str()))
            .map(|p| p.step.session_id.clone())
            .unwrap_or_else(|| {
                let chain = ancestors(i);
                std::iter::once(i)
                    .chain(chain)
                    .find_map(|j| views[j].first_str(&SESSION_ATTRIBUTES))
                    .or_else(|| {
                        SESSION_ATTRIBUTES
                            .iter()
                            .find_map(|k| views[i].resource.get(k).and_then(|x| as_str(x)))
                    })
                    .map(str::to_string)
                    .unwrap_or_else(|| views[i].trace_id.clone())
            });
        by_session
            .entry(sid)
            .or_default()
            .push((views[i].span.start_time_unix_nano, i, name));
    }
    for (sid, mut spans) in by_session {
        spans.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| views[a.1].span_id.cmp(&views[b.1].span_id)));
        let mut current: Option<String> = None;
        for (start_ns, i, name) in spans {
            if let Some(prev) = current.as_ref().filter(|p| **p != name) {
                let v = &views[i];
                let mut s = Step::new(
                    sid.clone(),
                    0,
                    (start_ns / 1_000_000) as i64,
                    StepKind::Handoff,
                    prev.clone(),
                );
                s.to_agent = Some(name.clone());
                s.trace_id = Some(v.trace_id.clone());
                s.span_id = Some(v.span_id.clone());
                s.parent_span_id = v.parent.clone();
                s.depth = Some(depth_of(i));
                s.correlation_id = Some(v.trace_id.clone());
                s.task_type = pending
                    .iter()
                    .find(|p| p.step.session_id == sid)
                    .and_then(|p| p.step.task_type.clone());
                pending.push(Pending {
                    step: s,
                    start_ns,
                    rank: 0,
                });
            }
            current = Some(name);
        }
    }
    for (_, (end_ns, step)) in outcomes {
        pending.push(Pending {
            step,
            start_ns: end_ns,
            rank: 2,
        });
    }

    // Ordering within a session is by start time; the rank only breaks ties
    // and keeps the outcome last.
    pending.sort_by(|a, b| {
        a.step
            .session_id
            .cmp(&b.step.session_id)
            .then((a.rank == 2).cmp(&(b.rank == 2)))
            .then(a.start_ns.cmp(&b.start_ns))
            .then(a.rank.cmp(&b.rank))
            .then(a.step.depth.cmp(&b.step.depth))
            .then(a.step.span_id.cmp(&b.step.span_id))
    });
    let mut last_session: Option<String> = None;
    let mut seq = 0u64;
    for p in pending {
        if last_session.as_deref() != Some(p.step.session_id.as_str()) {
            last_session = Some(p.step.session_id.clone());
            seq = 0;
        }
        let mut step = p.step;
        step.seq = seq;
        seq += 1;
        out.steps.push(step);
    }
    out
}

/// Text and requested tool calls of a model span's output.
fn llm_output(v: &SpanView) -> (Option<String>, Option<u32>) {
    if let Some(raw) = v.str("gen_ai.output.messages")
        && let Ok(Value::Array(msgs)) = serde_json::from_str::<Value>(raw)
    {
        let mut text = String::new();
        let mut calls = 0u32;
        for m in &msgs {
            for part in m.get("parts").and_then(Value::as_array).into_iter().flatten() {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(c) = part.get("content").and_then(Value::as_str) {
                            if !text.is_empty() {
                                text.push('\n');
                            }
                            text.push_str(c);
                        }
                    }
                    Some("tool_call") => calls += 1,
                    _ => {}
                }
            }
        }
        return (Some(text), Some(calls));
    }
    // OpenInference flattened messages: llm.output_messages.<i>.message.*
    let mut text = String::new();
    let mut calls = 0u32;
    let mut found = false;
    for i in 0.. {
        let prefix = format!("llm.output_messages.{i}.message.");
        let content = v.str(&format!("{prefix}content"));
        let any = v.attrs.keys().any(|k| k.starts_with(&prefix));
        if !any {
            break;
        }
        found = true;
        if let Some(c) = content {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(c);
        }
        calls += (0..)
            .take_while(|j| {
                v.attrs
                    .contains_key(format!("{prefix}tool_calls.{j}.tool_call.function.name").as_str())
            })
            .count() as u32;
    }
    if found {
        return (Some(text), Some(calls));
    }
    let text = v.first_str(&["gen_ai.completion", "output.value"]).map(str::to_string);
    (text, None)
}

/// Maps an `error.type` / `exception.type` to an error class.
fn classify_error(t: &str) -> ErrorClass {
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

fn leftover_attributes(v: &SpanView) -> Option<Map<String, Value>> {
    let mut m: Map<String, Value> = v
        .span
        .attributes
        .iter()
        .filter(|kv| {
            !MAPPED.contains(&kv.key.as_str())
                && !kv.key.starts_with("llm.output_messages.")
                && !kv.key.starts_with("session.")
        })
        .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, any_to_json)))
        .collect();
    m.insert("otel.span_name".to_string(), Value::String(v.span.name.clone()));
    Some(m)
}
