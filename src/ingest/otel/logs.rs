//! OTLP log records → [`ContentRecord`]s: the GenAI events that carry a
//! model call's content (`gen_ai.client.inference.operation.details`, and
//! the deprecated `gen_ai.{system,user,assistant,tool}.message` and
//! `gen_ai.choice`) and evaluation results (`gen_ai.evaluation.result`),
//! grouped by the span they belong to. Other log records are counted and
//! ignored.

use super::assemble::ContentRecord;
use super::conventions as cv;
use super::messages::{self, Message, Side};
use super::span::{Attrs, any_to_json, as_str, attr_map, evaluation_hint, input_tail};
use crate::ingest::{Location, RecordError};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use std::collections::BTreeMap;

/// What reading one logs request produced.
#[derive(Debug, Default)]
pub struct LogsOutput {
    /// Content per span, in first-event order.
    pub records: Vec<ContentRecord>,
    /// Records that are malformed GenAI events.
    pub errors: Vec<RecordError>,
    /// Records that are not GenAI events, or carry no span context.
    pub ignored: usize,
    /// GenAI events without a span to attach to.
    pub unattached: usize,
    /// Log records in the request.
    pub total: usize,
}

/// The event name: the record's `event_name`, else its `event.name` attribute.
fn event_name<'a>(r: &'a LogRecord, attrs: &Attrs<'a>) -> &'a str {
    if !r.event_name.is_empty() {
        return &r.event_name;
    }
    attrs.get("event.name").and_then(|v| as_str(v)).unwrap_or("")
}

#[derive(Default)]
struct Parts {
    time_ns: u64,
    input: Vec<Message>,
    output: Vec<Message>,
    evaluation: Option<super::span::OutcomeHint>,
}

/// Reads the GenAI events of a logs export request.
pub fn read_logs(req: &ExportLogsServiceRequest) -> LogsOutput {
    let mut out = LogsOutput::default();
    // (trace, span) → parts, in first-seen order.
    let mut groups: BTreeMap<(usize, String, String), Parts> = BTreeMap::new();
    let mut order: BTreeMap<(String, String), usize> = BTreeMap::new();
    for rl in &req.resource_logs {
        for sl in &rl.scope_logs {
            for r in &sl.log_records {
                out.total += 1;
                let attrs = attr_map(&r.attributes);
                let name = event_name(r, &attrs);
                let content = cv::CONTENT_EVENTS.contains(&name);
                let evaluation = name == cv::EVALUATION_EVENT;
                if !content && !evaluation {
                    out.ignored += 1;
                    continue;
                }
                if r.trace_id.len() != 16 || r.span_id.len() != 8 || r.span_id.iter().all(|&b| b == 0) {
                    out.unattached += 1;
                    continue;
                }
                let trace_id = super::span::hex_id(&r.trace_id);
                let span_id = super::span::hex_id(&r.span_id);
                let n = order.len();
                let ord = *order.entry((trace_id.clone(), span_id.clone())).or_insert(n);
                let parts = groups.entry((ord, trace_id.clone(), span_id.clone())).or_default();
                let time = if r.time_unix_nano > 0 {
                    r.time_unix_nano
                } else {
                    r.observed_time_unix_nano
                };
                if parts.time_ns == 0 || time < parts.time_ns {
                    parts.time_ns = time;
                }
                let body = r.body.as_ref().map(any_to_json).unwrap_or(serde_json::Value::Null);
                if evaluation {
                    match evaluation_hint(&attrs) {
                        Some(h) => parts.evaluation = Some(h),
                        None => out.errors.push(RecordError {
                            location: Location::Span { trace_id, span_id },
                            field: Some("gen_ai.evaluation.score.label".into()),
                            message: "evaluation result with neither a known label nor a score in [0, 1]".into(),
                        }),
                    }
                    continue;
                }
                if name == "gen_ai.client.inference.operation.details" {
                    let get = |k: &str| attrs.get(k).map(any_to_json).or_else(|| body.get(k).cloned());
                    if let Some(m) = get(cv::INPUT_MESSAGES).and_then(|v| messages::from_genai(&v)) {
                        parts.input.extend(m);
                    }
                    if let Some(m) = get(cv::OUTPUT_MESSAGES).and_then(|v| messages::from_genai(&v)) {
                        parts.output.extend(m);
                    }
                    continue;
                }
                match messages::from_event(name, &body) {
                    Some((Side::Input, m)) => parts.input.push(m),
                    Some((Side::Output, m)) => parts.output.push(m),
                    None => out.ignored += 1,
                }
            }
        }
    }
    for ((_, trace_id, span_id), p) in groups {
        let (tail, has_assistant) = input_tail(p.input);
        out.records.push(ContentRecord {
            trace_id,
            span_id,
            time_ns: p.time_ns,
            input_tail: tail,
            input_has_assistant: has_assistant,
            output: p.output,
            evaluation: p.evaluation,
        });
    }
    out
}
