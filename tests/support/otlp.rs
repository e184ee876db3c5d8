//! Native steps → an OTLP trace in the GenAI dialect, as an instrumented
//! agent would export it: a root `invoke_agent` span, one `chat` span per
//! model call (input messages carry the user turns, output messages the text
//! and requested tool calls), one `execute_tool` span per tool call.
#![allow(dead_code)]

use agentdrift::model::{Outcome, Status, Step, StepKind};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status as SpanStatus, status};
use serde_json::{Value, json};

fn kv(k: &str, v: impl Into<Value>) -> KeyValue {
    let value = match v.into() {
        Value::String(s) => any_value::Value::StringValue(s),
        Value::Bool(b) => any_value::Value::BoolValue(b),
        Value::Number(n) if n.is_i64() || n.is_u64() => any_value::Value::IntValue(n.as_i64().unwrap_or(i64::MAX)),
        Value::Number(n) => any_value::Value::DoubleValue(n.as_f64().unwrap()),
        other => any_value::Value::StringValue(other.to_string()),
    };
    KeyValue {
        key: k.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

/// The spans of one session, in start order (the root first).
pub fn session_spans(steps: &[Step], conversation: &str, trace_seed: u64) -> Vec<Span> {
    let mut trace_id = vec![0u8; 16];
    trace_id[..8].copy_from_slice(&trace_seed.to_be_bytes());
    trace_id[15] = 1;
    let mut next = 1u64;
    let mut id = || {
        next += 1;
        (trace_seed.wrapping_mul(1_000_003) ^ next).to_be_bytes().to_vec()
    };
    let ms = |t: i64| (t as u64) * 1_000_000;
    let first = steps.first().expect("a session");
    let last_ts = steps.iter().map(|s| s.ts).max().unwrap();
    let root_id = id();
    let mut root_attrs = vec![
        kv("gen_ai.operation.name", "invoke_agent"),
        kv("gen_ai.agent.name", first.agent.as_str()),
        kv("gen_ai.conversation.id", conversation),
        kv("agentdrift.task_type", first.task_type.clone().unwrap_or_default()),
    ];
    if let Some(end) = steps.iter().find(|s| s.kind == StepKind::End)
        && let Some(o) = end.outcome
    {
        root_attrs.push(kv(
            "agentdrift.outcome",
            match o {
                Outcome::Success => "success",
                Outcome::Failure => "failure",
                Outcome::Escalated => "escalated",
            },
        ));
        if let Some(r) = end.reward {
            root_attrs.push(kv("agentdrift.reward", r));
        }
    }
    let mut spans = vec![Span {
        trace_id: trace_id.clone(),
        span_id: root_id.clone(),
        name: format!("invoke_agent {}", first.agent),
        start_time_unix_nano: ms(first.ts),
        end_time_unix_nano: ms(last_ts) + 900_000_000,
        attributes: root_attrs,
        ..Span::default()
    }];
    let mut pending_user: Vec<String> = Vec::new();
    let mut pending_tools: Vec<Value> = Vec::new();
    let mut last_output: Option<Value> = None;
    for (i, s) in steps.iter().enumerate() {
        let start = ms(s.ts);
        let end = start + (s.latency_ms.unwrap_or(400.0) * 1e6) as u64;
        match s.kind {
            StepKind::User => pending_user.push(s.text.clone().unwrap_or_default()),
            StepKind::Llm => {
                // Input: the previous answer, then what is new since it.
                let mut input = Vec::new();
                if let Some(o) = last_output.take() {
                    input.push(o);
                }
                input.append(&mut pending_tools);
                for u in pending_user.drain(..) {
                    input.push(json!({"role": "user", "parts": [{"type": "text", "content": u}]}));
                }
                let mut parts = Vec::new();
                if let Some(t) = s.text.as_deref().filter(|t| !t.is_empty()) {
                    parts.push(json!({"type": "text", "content": t}));
                }
                let calls: Vec<&Step> = steps[i + 1..]
                    .iter()
                    .take_while(|x| x.kind == StepKind::Tool)
                    .take(s.tool_calls_requested.unwrap_or(0) as usize)
                    .collect();
                for (j, c) in calls.iter().enumerate() {
                    parts.push(json!({"type": "tool_call", "id": format!("call_{i}_{j}"), "name": c.tool, "arguments": c.args}));
                }
                let output = json!({"role": "assistant", "parts": parts});
                last_output = Some(output.clone());
                let mut attrs = vec![
                    kv("gen_ai.operation.name", "chat"),
                    kv("gen_ai.provider.name", "openai"),
                    kv(
                        "gen_ai.request.model",
                        s.model.clone().unwrap_or_else(|| "gpt-4o".into()),
                    ),
                    kv("gen_ai.input.messages", Value::Array(input).to_string()),
                    kv("gen_ai.output.messages", json!([output]).to_string()),
                ];
                if let Some(t) = s.input_tokens {
                    attrs.push(kv("gen_ai.usage.input_tokens", t));
                }
                if let Some(t) = s.output_tokens {
                    attrs.push(kv("gen_ai.usage.output_tokens", t));
                }
                spans.push(Span {
                    trace_id: trace_id.clone(),
                    span_id: id(),
                    parent_span_id: root_id.clone(),
                    name: "chat gpt-4o".into(),
                    start_time_unix_nano: start,
                    end_time_unix_nano: end,
                    attributes: attrs,
                    ..Span::default()
                });
            }
            StepKind::Tool => {
                let result = s.result.clone().map(|r| match r {
                    Value::String(t) => t,
                    other => other.to_string(),
                });
                let result = result.unwrap_or_else(|| "x".repeat(s.result_chars.unwrap_or(10) as usize));
                pending_tools
                    .push(json!({"role": "tool", "parts": [{"type": "tool_call_response", "response": result}]}));
                let mut attrs = vec![
                    kv("gen_ai.operation.name", "execute_tool"),
                    kv("gen_ai.tool.name", s.tool.clone().unwrap_or_default()),
                    kv(
                        "gen_ai.tool.call.arguments",
                        s.args.clone().unwrap_or(Value::Null).to_string(),
                    ),
                    kv("gen_ai.tool.call.result", result),
                ];
                let mut st = None;
                if s.status == Some(Status::Error) {
                    attrs.push(kv("error.type", "ToolError"));
                    st = Some(SpanStatus {
                        message: s.error.clone().unwrap_or_default(),
                        code: status::StatusCode::Error as i32,
                    });
                }
                spans.push(Span {
                    trace_id: trace_id.clone(),
                    span_id: id(),
                    parent_span_id: root_id.clone(),
                    name: format!("execute_tool {}", s.tool.clone().unwrap_or_default()),
                    start_time_unix_nano: start,
                    end_time_unix_nano: end,
                    attributes: attrs,
                    status: st,
                    ..Span::default()
                });
            }
            _ => {}
        }
    }
    spans
}

/// One export request holding `spans`, under a resource with `service`.
pub fn request(spans: Vec<Span>, service: &str) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", service)],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}
