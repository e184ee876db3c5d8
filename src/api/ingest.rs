//! `POST /v1/steps` (native NDJSON / MessagePack), `POST /v1/traces` and
//! `POST /v1/logs` (OTLP/HTTP protobuf or JSON), and `POST
//! /v1/sessions/{id}/outcome`. The OTLP/gRPC receiver ([`super::grpc`])
//! shares [`accept_traces`] and [`accept_logs`].
//!
//! Native batches are all-or-nothing: if any record is invalid the request
//! gets 422 listing every bad record (line or record index, field, message)
//! and nothing is stored, so a fixed batch can simply be resent. OTLP follows
//! its spec instead: good spans are stored and the response's
//! `partial_success` counts the rejected spans and says why.
//! Either way the response comes after the commit: accepted data is durable.

use super::bodies::{Binary, ErrorBody, LogsExportAnswer, SessionStatus, TraceExportAnswer};
use super::error::ApiError;
use super::{RawBody, media_type};
use crate::ingest::otel::{self, logs};
use crate::ingest::{Format, Location, RecordError, native, otlp};
use crate::model::Outcome;
use crate::service::Shared;
use crate::service::metrics::FormatLabel;
use crate::store::{NewRecord, NewStep, OtlpEncoding, OtlpRecords, OtlpRequest, OtlpSignal, OutcomeReport};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
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
/// Media types of `POST /v1/traces` and `POST /v1/logs`.
pub const OTLP_TYPES: &[&str] = &["application/x-protobuf", "application/json"];

/// Answer to an accepted batch.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IngestResponse {
    /// Records newly stored.
    pub accepted: usize,
    /// Records already stored (a retried request), skipped.
    pub duplicates: usize,
    /// Sessions the batch touched.
    pub sessions: usize,
}

fn count_rejected(state: &Shared, format: Format, n: usize) {
    if n > 0 {
        state
            .metrics
            .ingest_rejected
            .get_or_create(&FormatLabel {
                format: format.as_str().into(),
            })
            .inc_by(n as u64);
    }
}

fn reject(state: &Shared, format: Format, errors: Vec<RecordError>) -> ApiError {
    count_rejected(state, format, errors.len());
    ApiError::InvalidRecords(errors)
}

/// Appends records and waits until they are durable.
async fn commit(state: &Shared, records: Vec<NewRecord>, started: Instant) -> Result<crate::store::Appended, ApiError> {
    let _permit = state
        .inflight
        .acquire()
        .await
        .map_err(|_| ApiError::Unavailable("shutting down".into()))?;
    let appended = state.writer.append(records, state.clock.now_ms()).await?;
    state.metrics.ack_seconds.observe(started.elapsed().as_secs_f64());
    Ok(appended)
}

/// Counts accepted and duplicate items of a format.
fn count_accepted(state: &Shared, format: Format, accepted: usize, duplicates: usize) {
    state
        .metrics
        .ingest_steps
        .get_or_create(&FormatLabel {
            format: format.as_str().into(),
        })
        .inc_by(accepted as u64);
    state.metrics.ingest_duplicates.inc_by(duplicates as u64);
}

/// Parses an NDJSON body keeping each line's bytes as the stored record.
fn parse_ndjson(body: &[u8]) -> (Vec<NewRecord>, Vec<RecordError>) {
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
            Ok(step) => steps.push(NewRecord::Step(NewStep {
                step,
                raw: text.to_string(),
            })),
            Err((field, message)) => errors.push(record(field, message)),
        }
    }
    (steps, errors)
}

/// `POST /v1/steps`.
#[utoipa::path(post, path = "/v1/steps", tag = "ingest",
    summary = "Ingest native steps (all-or-nothing per request; durable before the answer)",
    request_body(description = "Steps: NDJSON, one `Step` (components.schemas.Step) per line; or MessagePack, a stream of step maps or one array of them",
        content((String = "application/x-ndjson"), (Binary = "application/msgpack"))),
    responses((status = 200, description = "Stored", body = IngestResponse),
              (status = 400, description = "Empty or unreadable body", body = ErrorBody),
              (status = 422, description = "Invalid records (each named with its line and field); nothing stored", body = ErrorBody),
              IngestFailures))]
pub async fn post_steps(
    State(state): State<Arc<Shared>>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<IngestResponse>, ApiError> {
    let started = Instant::now();
    let (format, records, errors) = match media_type(&headers).as_str() {
        "application/x-ndjson" | "application/jsonl" | "application/ndjson" | "application/x-jsonlines" => {
            let (s, e) = parse_ndjson(&body);
            (Format::Ndjson, s, e)
        }
        "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack" => {
            let out = native::read_msgpack(&body);
            let steps = out
                .steps
                .into_iter()
                .map(|step| {
                    NewRecord::Step(NewStep {
                        raw: serde_json::to_string(&step).expect("steps serialise"),
                        step,
                    })
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
    if records.is_empty() {
        return Err(ApiError::BadBody("the body holds no steps".into()));
    }
    let sessions: BTreeSet<&str> = records
        .iter()
        .filter_map(|r| match r {
            NewRecord::Step(n) => Some(n.step.session_id.as_str()),
            _ => None,
        })
        .collect();
    let n_sessions = sessions.len();
    let n = records.len();
    let appended = commit(&state, records, started).await?;
    count_accepted(&state, format, appended.stored.len(), appended.duplicates);
    tracing::debug!(steps = n, sessions = n_sessions, format = format.as_str(), "accepted");
    Ok(Json(IngestResponse {
        accepted: appended.stored.len(),
        duplicates: appended.duplicates,
        sessions: n_sessions,
    }))
}

/// What an OTLP export left out, for `partial_success`.
#[derive(Debug, Default)]
pub struct Partial {
    /// Items rejected.
    pub rejected: usize,
    /// Why, the first ten named.
    pub message: String,
}

fn partial_of(errors: &[RecordError]) -> Partial {
    Partial {
        rejected: errors.len(),
        message: errors
            .iter()
            .take(10)
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// The encoding a request came in.
fn encoding_of(format: Format) -> OtlpEncoding {
    if format == Format::OtlpJson {
        OtlpEncoding::Json
    } else {
        OtlpEncoding::Proto
    }
}

/// Stores a traces export as received (one log record for the request;
/// re-sending the same bytes is a duplicate); the partial-success answer
/// names the spans that cannot be read.
pub async fn accept_traces(
    state: &Shared,
    req: &ExportTraceServiceRequest,
    body: bytes::Bytes,
    format: Format,
) -> Result<Partial, ApiError> {
    let started = Instant::now();
    let recs = otel::records_of(req, &state.read_opts);
    count_rejected(state, format, recs.errors.len());
    state.metrics.otlp_foreign_spans.inc_by(recs.foreign as u64);
    let partial = partial_of(&recs.errors);
    if !recs.spans.is_empty() {
        let n = recs.spans.len();
        tracing::debug!(spans = n, format = format.as_str(), "accepted spans");
        let record = NewRecord::Otlp {
            digest: Sha256::digest(&body).into(),
            request: OtlpRequest {
                signal: OtlpSignal::Traces,
                encoding: encoding_of(format),
                body,
            },
            records: OtlpRecords::Spans(recs.spans),
        };
        let appended = commit(state, vec![record], started).await?;
        if appended.stored.is_empty() {
            count_accepted(state, format, 0, n);
        } else {
            count_accepted(state, format, n, 0);
        }
    }
    Ok(partial)
}

/// Stores a logs export as received; its GenAI events become content records.
pub async fn accept_logs(
    state: &Shared,
    req: &ExportLogsServiceRequest,
    body: bytes::Bytes,
    format: Format,
) -> Result<Partial, ApiError> {
    let started = Instant::now();
    let out = logs::read_logs(req);
    count_rejected(state, format, out.errors.len());
    state.metrics.otlp_log_records_ignored.inc_by(out.ignored as u64);
    state.metrics.otlp_log_records_unattached.inc_by(out.unattached as u64);
    let mut partial = partial_of(&out.errors);
    if out.unattached > 0 {
        partial.rejected += out.unattached;
        if !partial.message.is_empty() {
            partial.message.push_str("; ");
        }
        partial.message.push_str(&format!(
            "{} GenAI event(s) carry no trace and span id, so they belong to no model call",
            out.unattached
        ));
    }
    if !out.records.is_empty() {
        let record = NewRecord::Otlp {
            digest: Sha256::digest(&body).into(),
            request: OtlpRequest {
                signal: OtlpSignal::Logs,
                encoding: encoding_of(format),
                body,
            },
            records: OtlpRecords::Content(out.records),
        };
        commit(state, vec![record], started).await?;
    }
    Ok(partial)
}

fn otlp_format(headers: &HeaderMap) -> Result<Format, ApiError> {
    match media_type(headers).as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Format::OtlpProto),
        "application/json" => Ok(Format::OtlpJson),
        other => Err(ApiError::UnsupportedMediaType {
            got: other.to_string(),
            expected: OTLP_TYPES,
        }),
    }
}

fn otlp_answer<T: Message + Serialize>(format: Format, resp: T) -> Response {
    if format == Format::OtlpProto {
        ([(header::CONTENT_TYPE, "application/x-protobuf")], resp.encode_to_vec()).into_response()
    } else {
        Json(resp).into_response()
    }
}

/// The failures every ingest endpoint can answer with, documented once.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // only its documentation is used
enum IngestFailures {
    /// Body over the limit
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// Unsupported Content-Type or Content-Encoding
    #[response(status = 415)]
    UnsupportedType(ErrorBody),
    /// Storage failure
    #[response(status = 500)]
    Storage(ErrorBody),
    /// Shutting down, or a passing descriptor shortage (Retry-After)
    #[response(status = 503)]
    Unavailable(ErrorBody),
    /// Disk full
    #[response(status = 507)]
    DiskFull(ErrorBody),
}

/// Decodes an OTLP/HTTP body in the encoding its Content-Type named.
fn decode_otlp<T>(
    format: Format,
    body: &[u8],
    proto: fn(&[u8]) -> Result<T, RecordError>,
    json: fn(&[u8]) -> Result<T, RecordError>,
) -> Result<T, ApiError> {
    let decoded = if format == Format::OtlpProto {
        proto(body)
    } else {
        json(body)
    };
    decoded.map_err(|e| ApiError::BadBody(e.to_string()))
}

/// `POST /v1/traces` (OTLP/HTTP).
#[utoipa::path(post, path = "/v1/traces", tag = "ingest",
    summary = "OTLP/HTTP trace export (GenAI, OpenInference, OpenLLMetry spans)",
    request_body(description = "ExportTraceServiceRequest, protobuf or OTLP/JSON",
        content((Binary = "application/x-protobuf"), (Object = "application/json"))),
    responses((status = 200, description = "ExportTraceServiceResponse; partialSuccess counts rejected spans and says why",
               content((Binary = "application/x-protobuf"), (TraceExportAnswer = "application/json"))),
              (status = 400, description = "Not an ExportTraceServiceRequest", body = ErrorBody),
              IngestFailures))]
pub async fn post_traces(
    State(state): State<Arc<Shared>>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let format = otlp_format(&headers)?;
    let req = decode_otlp(format, &body, otlp::decode_proto, otlp::decode_json)?;
    let p = accept_traces(&state, &req, body, format).await?;
    let resp = ExportTraceServiceResponse {
        partial_success: (p.rejected > 0).then_some(ExportTracePartialSuccess {
            rejected_spans: p.rejected as i64,
            error_message: p.message,
        }),
    };
    Ok(otlp_answer(format, resp))
}

/// `POST /v1/logs` (OTLP/HTTP): GenAI content and evaluation events.
#[utoipa::path(post, path = "/v1/logs", tag = "ingest",
    summary = "OTLP/HTTP logs export: GenAI content events (gen_ai.client.inference.operation.details, gen_ai.*.message, gen_ai.choice) and gen_ai.evaluation.result, attached to their model call by trace and span id",
    request_body(description = "ExportLogsServiceRequest, protobuf or OTLP/JSON",
        content((Binary = "application/x-protobuf"), (Object = "application/json"))),
    responses((status = 200, description = "ExportLogsServiceResponse; partialSuccess counts rejected records and says why",
               content((Binary = "application/x-protobuf"), (LogsExportAnswer = "application/json"))),
              (status = 400, description = "Not an ExportLogsServiceRequest", body = ErrorBody),
              IngestFailures))]
pub async fn post_logs(
    State(state): State<Arc<Shared>>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let format = otlp_format(&headers)?;
    let req = decode_otlp(format, &body, otlp::decode_logs_proto, otlp::decode_logs_json)?;
    let p = accept_logs(&state, &req, body, format).await?;
    let resp = ExportLogsServiceResponse {
        partial_success: (p.rejected > 0).then_some(ExportLogsPartialSuccess {
            rejected_log_records: p.rejected as i64,
            error_message: p.message,
        }),
    };
    Ok(otlp_answer(format, resp))
}

/// Body of `POST /v1/sessions/{id}/outcome`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutcomeBody {
    /// `success`, `failure` or `escalated`.
    pub outcome: Outcome,
    /// Task reward.
    #[serde(default)]
    pub reward: Option<f64>,
}

/// Answer of `POST /v1/sessions/{id}/outcome`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OutcomeAnswer {
    /// Session.
    pub session_id: String,
    /// Whether the session was open or closed when the outcome arrived.
    pub session: SessionStatus,
    /// Whether the outcome will reach the charts (the engine decides it
    /// the same way when it applies the logged outcome).
    pub charted: bool,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /v1/sessions/{id}/outcome`: an outcome learnt later (a ticket
/// closed, a user complained). Logged durably like steps.
#[utoipa::path(post, path = "/v1/sessions/{id}/outcome", tag = "ingest",
    summary = "An outcome learnt later: ends an open session; feeds the outcome-rate charts of a closed one within outcome_window_secs",
    params(("id" = String, Path, description = "Session id")),
    request_body = OutcomeBody,
    responses((status = 200, description = "Logged (durable)", body = OutcomeAnswer),
              (status = 400, description = "Bad body", body = ErrorBody),
              (status = 404, description = "Unknown session", body = ErrorBody)))]
pub async fn post_outcome(
    State(state): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Result<Json<OutcomeBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<OutcomeAnswer>, ApiError> {
    let Json(body) = body.map_err(|e| {
        let text = e.body_text();
        ApiError::BadBody(format!("outcome body: {text}"))
    })?;
    if let Some(r) = body.reward
        && !r.is_finite()
    {
        return Err(ApiError::BadQuery {
            field: "reward".into(),
            message: "must be a finite number".into(),
        });
    }
    let storage = state.storage.clone();
    let sid = id.clone();
    let (row, closed_ms, native) = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let row = storage.store.session_row(&sid)?;
        let closed_ms = storage.store.session(&sid)?.map(|s| s.closed_ms);
        let native = row.is_none() && !storage.log.session_steps(&sid)?.is_empty();
        Ok((row, closed_ms, native))
    })
    .await
    .map_err(|e| ApiError::Unavailable(format!("worker failed: {e}")))??;
    if row.is_none() && !native {
        return Err(ApiError::NotFound(format!(
            "session {id} (OTLP sessions exist once their trace has settled; retry later)"
        )));
    }
    let closed = row.as_ref().is_some_and(|r| r.status.as_deref() == Some("closed"));
    let window_ms = (state.outcome_window_secs * 1000) as i64;
    let now = state.clock.now_ms();
    let (charted, reason) = match (&row, closed_ms) {
        (Some(r), _) if closed && r.outcome.is_some() => {
            (false, Some("the session closed with an outcome".to_string()))
        }
        (_, Some(t)) if closed && now - t > window_ms => (
            false,
            Some(format!(
                "more than {} s after the session closed (outcome_window_secs)",
                state.outcome_window_secs
            )),
        ),
        _ => (true, None),
    };
    let report = OutcomeReport {
        session_id: id.clone(),
        outcome: body.outcome,
        reward: body.reward,
    };
    let record = NewRecord::Outcome {
        raw: serde_json::to_string(&report).expect("outcomes serialise"),
        report,
    };
    commit(&state, vec![record], Instant::now()).await?;
    tracing::info!(session_id = %id, outcome = body.outcome.as_str(), charted, "outcome reported");
    Ok(Json(OutcomeAnswer {
        session_id: id,
        session: if closed {
            SessionStatus::Closed
        } else {
            SessionStatus::Open
        },
        charted,
        reason,
    }))
}
