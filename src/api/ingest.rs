//! `POST /v1/steps` (native NDJSON / MessagePack) and `POST /v1/traces`
//! (OTLP/HTTP protobuf or JSON).
//!
//! Native batches are all-or-nothing: if any record is invalid the request
//! gets 422 listing every bad record (line or record index, field, message)
//! and nothing is stored, so a fixed batch can simply be resent. OTLP follows
//! its spec instead: good spans are stored and the response's
//! `partial_success` counts the rejected spans and says why.
//! Either way the response comes after the commit: accepted data is durable.

use super::error::ApiError;
use super::{RawBody, media_type};
use crate::ingest::{Format, Location, RecordError, native, otlp};
use crate::service::Shared;
use crate::service::metrics::FormatLabel;
use crate::store::NewStep;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use prost::Message;
use serde::Serialize;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

/// Media types of `POST /v1/steps`.
pub const STEP_TYPES: &[&str] = &[
    "application/x-ndjson",
    "application/jsonl",
    "application/msgpack",
    "application/x-msgpack",
];
/// Media types of `POST /v1/traces`.
pub const TRACE_TYPES: &[&str] = &["application/x-protobuf", "application/json"];

/// Answer to an accepted batch.
#[derive(Debug, Serialize)]
pub struct IngestResponse {
    /// Steps newly stored.
    pub accepted: usize,
    /// Steps already stored (a retried request), skipped.
    pub duplicates: usize,
    /// Sessions the batch touched.
    pub sessions: usize,
}

fn reject(state: &Shared, format: Format, errors: Vec<RecordError>) -> ApiError {
    state
        .metrics
        .ingest_rejected
        .get_or_create(&FormatLabel {
            format: format.as_str().into(),
        })
        .inc_by(errors.len() as u64);
    ApiError::InvalidRecords(errors)
}

async fn commit(
    state: &Shared,
    format: Format,
    steps: Vec<NewStep>,
    started: Instant,
) -> Result<IngestResponse, ApiError> {
    let sessions: BTreeSet<&str> = steps.iter().map(|s| s.step.session_id.as_str()).collect();
    let n_sessions = sessions.len();
    let traces: BTreeSet<&str> = steps.iter().filter_map(|s| s.step.trace_id.as_deref()).collect();
    tracing::debug!(
        steps = steps.len(),
        session_ids = ?sessions.iter().take(5).collect::<Vec<_>>(),
        trace_ids = ?traces.iter().take(5).collect::<Vec<_>>(),
        format = format.as_str(),
        "ingest"
    );
    let _permit = state
        .inflight
        .acquire()
        .await
        .map_err(|_| ApiError::Unavailable("shutting down".into()))?;
    let appended = state.writer.append(steps, crate::service::now_ms()).await?;
    state
        .metrics
        .ingest_steps
        .get_or_create(&FormatLabel {
            format: format.as_str().into(),
        })
        .inc_by(appended.stored.len() as u64);
    state.metrics.ingest_duplicates.inc_by(appended.duplicates as u64);
    state.metrics.ack_seconds.observe(started.elapsed().as_secs_f64());
    Ok(IngestResponse {
        accepted: appended.stored.len(),
        duplicates: appended.duplicates,
        sessions: n_sessions,
    })
}

/// Parses an NDJSON body keeping each line's bytes as the stored record.
fn parse_ndjson(body: &[u8]) -> (Vec<NewStep>, Vec<RecordError>) {
    let mut steps = Vec::new();
    let mut errors = Vec::new();
    for (line_no, _, line) in native::NdjsonRecords::new(body) {
        let record = |field: Option<String>, message: String| RecordError {
            location: Location::Line(line_no),
            field,
            message,
        };
        let Ok(text) = std::str::from_utf8(line) else {
            errors.push(record(None, "not valid UTF-8".into()));
            continue;
        };
        match native::parse_json_step(line) {
            Ok(step) => steps.push(NewStep {
                step,
                raw: text.to_string(),
                assign_seq: false,
            }),
            Err((field, message)) => errors.push(record(field, message)),
        }
    }
    (steps, errors)
}

/// `POST /v1/steps`.
pub async fn post_steps(
    State(state): State<Arc<Shared>>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<IngestResponse>, ApiError> {
    let started = Instant::now();
    let (format, steps, errors) = match media_type(&headers).as_str() {
        "application/x-ndjson" | "application/jsonl" | "application/ndjson" | "application/x-jsonlines" => {
            let (s, e) = parse_ndjson(&body);
            (Format::Ndjson, s, e)
        }
        "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack" => {
            let out = native::read_msgpack(&body);
            let steps = out
                .steps
                .into_iter()
                .map(|step| NewStep {
                    raw: serde_json::to_string(&step).expect("steps serialise"),
                    step,
                    assign_seq: false,
                })
                .collect();
            (Format::Msgpack, steps, out.errors)
        }
        other => {
            return Err(ApiError::UnsupportedMediaType {
                got: other.to_string(),
                expected: STEP_TYPES,
            });
        }
    };
    if !errors.is_empty() {
        return Err(reject(&state, format, errors));
    }
    if steps.is_empty() {
        return Err(ApiError::BadBody("the body holds no steps".into()));
    }
    Ok(Json(commit(&state, format, steps, started).await?))
}

/// `POST /v1/traces` (OTLP/HTTP).
pub async fn post_traces(
    State(state): State<Arc<Shared>>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let mt = media_type(&headers);
    let (format, decoded) = match mt.as_str() {
        "application/x-protobuf" | "application/protobuf" => (Format::OtlpProto, otlp::decode_proto(&body)),
        "application/json" => (Format::OtlpJson, otlp::decode_json(&body)),
        other => {
            return Err(ApiError::UnsupportedMediaType {
                got: other.to_string(),
                expected: TRACE_TYPES,
            });
        }
    };
    let req = decoded.map_err(|e| ApiError::BadBody(e.to_string()))?;
    let out = crate::ingest::otel_map::map_request(&req, &state.read_opts);
    let rejected = out.errors.len();
    if rejected > 0 {
        state
            .metrics
            .ingest_rejected
            .get_or_create(&FormatLabel {
                format: format.as_str().into(),
            })
            .inc_by(rejected as u64);
    }
    let steps: Vec<NewStep> = out
        .steps
        .into_iter()
        .map(|step| NewStep {
            raw: serde_json::to_string(&step).expect("steps serialise"),
            step,
            assign_seq: true,
        })
        .collect();
    if !steps.is_empty() {
        commit(&state, format, steps, started).await?;
    }
    let partial = (rejected > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: rejected as i64,
        error_message: out
            .errors
            .iter()
            .take(10)
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; "),
    });
    let resp = ExportTraceServiceResponse {
        partial_success: partial,
    };
    Ok(if format == Format::OtlpProto {
        ([(header::CONTENT_TYPE, "application/x-protobuf")], resp.encode_to_vec()).into_response()
    } else {
        Json(resp).into_response()
    })
}
