//! `GET /openapi.json`: the OpenAPI 3.1 description of the API, generated
//! from the handlers' annotations and the response types (utoipa), so it
//! cannot drift from what is served. Tests check its paths against
//! [`super::ROUTES`], validate it with `openapi-spec-validator` and check
//! real answers against its schemas.

use super::{ingest, reports};
use axum::Json;
use serde_json::Value;
use std::sync::OnceLock;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "agentdrift",
        description = "Ingest agent steps and traces, score them against a baseline, read drift events and reports."
    ),
    paths(
        ingest::post_steps,
        ingest::post_traces,
        ingest::post_logs,
        ingest::post_outcome,
        reports::list_events,
        reports::stream_events,
        reports::get_event,
        reports::list_sessions,
        reports::session_report,
        reports::session_replay,
        reports::otlp_status,
        reports::list_segments,
        reports::segment_report,
        reports::chart_series,
        reports::task_report,
        super::metrics,
        super::healthz,
        super::readyz,
        serve,
    ),
    tags(
        (name = "ingest", description = "Steps, OTLP traces and logs, late outcomes: durable before the answer"),
        (name = "reports", description = "Drift events, sessions, segments"),
        (name = "operations", description = "Probes, metrics, this document")
    )
)]
struct ApiDoc;

/// The native step, as `docs/step.schema.json` defines it (JSON Schema
/// 2020-12, which OpenAPI 3.1 schemas are).
fn step_schema() -> Value {
    let mut s: Value = serde_json::from_str(include_str!("../../docs/step.schema.json")).expect("step schema is JSON");
    if let Some(o) = s.as_object_mut() {
        o.remove("$schema");
        o.remove("$id");
    }
    s
}

/// The document, built once.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serialises");
        doc["components"]["schemas"]["Step"] = step_schema();
        doc
    })
}

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", summary = "This document",
    responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
pub async fn serve() -> Json<Value> {
    Json(document().clone())
}
