//! OpenTelemetry spans and log events → steps.
//!
//! Follows the OpenTelemetry GenAI semantic conventions as published in
//! `open-telemetry/semantic-conventions-genai` (registry `e8fc575`, spans
//! `7e7e4e7`, events `fecf9e1`; all `gen_ai.*` items are *development*
//! stability), accepting the deprecated names of `semantic-conventions` ≤
//! v1.37, OpenInference (`Arize-ai/openinference` spec at `1fe497f`) and
//! OpenLLMetry (`traceloop.*`). The rules are written out in README.md
//! ("OpenTelemetry mapping").
//!
//! Three stages, each pure: [`span`] reads one span into a record with its
//! identity left open ([`conventions`] names every attribute), [`logs`]
//! reads GenAI log events into content records, and [`assemble`] settles
//! identity over whole traces and releases steps.

pub mod assemble;
pub mod conventions;
pub mod logs;
pub mod messages;
pub mod span;

use super::{ReadOptions, ReadOutput, RecordError};
use assemble::{AssembleConfig, Assembler};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use span::{SpanOptions, SpanRecord, SpanRole, attr_map, record_of, resource_hints};

/// The records of a traces request.
#[derive(Debug, Default)]
pub struct Records {
    /// One per readable span (foreign spans included: they shape the tree).
    pub spans: Vec<SpanRecord>,
    /// One per span that claims to be a step but cannot be read.
    pub errors: Vec<RecordError>,
    /// Spans of other instrumentation (HTTP, databases, …).
    pub foreign: usize,
}

/// Reads every span of a request into records.
pub fn records_of(req: &ExportTraceServiceRequest, opts: &ReadOptions) -> Records {
    let so = SpanOptions {
        task_type_attributes: &opts.task_type_attributes,
    };
    let mut out = Records::default();
    // Span records are large: one allocation, not a dozen regrowths and copies.
    out.spans.reserve_exact(
        req.resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum(),
    );
    for rs in &req.resource_spans {
        let rattrs = rs
            .resource
            .as_ref()
            .map(|r| attr_map(&r.attributes))
            .unwrap_or_default();
        let hints = resource_hints(&rattrs, &so);
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                match record_of(s, &hints, &so) {
                    Ok(r) => {
                        out.foreign += usize::from(r.role == SpanRole::Foreign);
                        out.spans.push(r);
                    }
                    Err(e) => out.errors.push(e),
                }
            }
        }
    }
    out
}

/// An assembler that holds everything (files and replays: all of the input is at hand).
fn batch_assembler() -> Assembler {
    Assembler::new(AssembleConfig {
        max_pending_spans: usize::MAX,
        remembered_traces: usize::MAX,
        remembered_sessions: usize::MAX,
        ..AssembleConfig::default()
    })
}

/// One session's steps rebuilt from the spans and content stored for its
/// traces (what replay shows): every trace assembled whole, in start order,
/// late spans and late content in their place, requested calls still
/// unanswered at the end included.
pub fn assemble_session(
    spans: Vec<SpanRecord>,
    content: Vec<assemble::ContentRecord>,
    session_id: &str,
) -> Vec<crate::model::Step> {
    let mut a = batch_assembler();
    for c in content {
        let _ = a.add_content(c, 0, 0);
    }
    let mut steps = Vec::new();
    for s in spans {
        steps.extend(a.add_span(s, 0, 0).steps);
    }
    steps.extend(a.flush().steps);
    steps.extend(a.closing(session_id).0);
    steps.retain(|s| s.session_id == session_id);
    steps.sort_by_key(|s| s.seq);
    steps
}

/// Maps a whole decoded request (a file) to steps: every trace is
/// assembled as if all of it had arrived, whatever order the spans are in.
pub fn read_traces(req: &ExportTraceServiceRequest, opts: &ReadOptions) -> ReadOutput {
    let recs = records_of(req, opts);
    let mut a = batch_assembler();
    let mut steps = Vec::new();
    for r in recs.spans {
        steps.extend(a.add_span(r, 0, 0).steps);
    }
    let mut out = a.flush();
    // Sessions left open get what they are still owed (outcome, unanswered calls).
    let mut sessions: Vec<String> = out.steps.iter().map(|s| s.session_id.clone()).collect();
    sessions.sort();
    sessions.dedup();
    steps.append(&mut out.steps);
    for sid in sessions {
        let (owed, outcome) = a.closing(&sid);
        let next = owed.last().map(|s| s.seq + 1);
        steps.extend(owed);
        if let Some(hint) = outcome {
            let last = steps
                .iter()
                .filter(|s| s.session_id == sid)
                .max_by_key(|s| s.seq)
                .cloned();
            if let Some(last) = last {
                let mut end = crate::model::Step::new(
                    sid.clone(),
                    next.unwrap_or(last.seq + 1),
                    last.ts,
                    crate::model::StepKind::End,
                    last.agent.clone(),
                );
                end.task_type = last.task_type.clone();
                end.trace_id = last.trace_id.clone();
                end.correlation_id = last.correlation_id.clone();
                end.span_id = Some(format!("{}:outcome", sid));
                end.outcome = Some(hint.outcome);
                end.reward = hint.reward;
                end.termination_reason = Some(format!("outcome:{}", hint.source.as_str()));
                steps.push(end);
            }
        }
    }
    steps.sort_by(|a, b| a.session_id.cmp(&b.session_id).then(a.seq.cmp(&b.seq)));
    ReadOutput {
        steps,
        errors: recs.errors,
        ignored: recs.foreign,
    }
}
