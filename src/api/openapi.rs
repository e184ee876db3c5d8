//! `GET /openapi.json`: the OpenAPI 3 description of the API. A test checks
//! its paths against [`super::ROUTES`] and that every path answers.

use axum::Json;
use serde_json::{Value, json};
use std::sync::OnceLock;

fn step_schema() -> Value {
    let mut s: Value = serde_json::from_str(include_str!("../../docs/step.schema.json")).expect("step schema is JSON");
    if let Some(o) = s.as_object_mut() {
        o.remove("$schema");
        o.remove("$id");
    }
    s
}

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn param(name: &str, location: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": location, "required": location == "path", "description": description, "schema": schema})
}

/// The document.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let ok_json = |description: &str, schema: Value| json!({"description": description, "content": {"application/json": {"schema": schema}}});
        let event_filters = vec![
            param("segment", "query", "Segment `agent/task_type`", json!({"type": "string"})),
            param("detector", "query", "Detector id (`ewma:steps`) or family (`ewma`)", json!({"type": "string"})),
            param("since", "query", "Events at or after this time, unix ms", json!({"type": "integer"})),
            param("session", "query", "Events of one session", json!({"type": "string"})),
            param("limit", "query", "Page size, 1–1000 (default 100)", json!({"type": "integer", "minimum": 1, "maximum": 1000})),
            param("cursor", "query", "`next_cursor` of the previous page", json!({"type": "integer"})),
            param("order", "query", "`oldest` first (default) or `newest` first (listing only)", json!({"type": "string", "enum": ["oldest", "newest"]})),
        ];
        json!({
            "openapi": "3.1.0",
            "info": {
                "title": "agentdrift",
                "version": env!("CARGO_PKG_VERSION"),
                "description": "Ingest agent steps and traces, score them against a baseline, read drift events and reports."
            },
            "paths": {
                "/v1/steps": {"post": {
                    "summary": "Ingest native steps (all-or-nothing per request; durable before the answer)",
                    "requestBody": {"required": true, "content": {
                        "application/x-ndjson": {"schema": {"type": "string", "description": "One step (components.schemas.Step) per line"}},
                        "application/msgpack": {"schema": {"type": "string", "format": "binary", "description": "A stream of step maps, or one array of them"}}
                    }},
                    "responses": {
                        "200": ok_json("Stored", json!({"$ref": "#/components/schemas/IngestResponse"})),
                        "400": error_response("Empty or unreadable body"),
                        "413": error_response("Body over the limit"),
                        "415": error_response("Unsupported Content-Type"),
                        "422": error_response("Invalid records (each named with its line and field); nothing stored"),
                        "500": error_response("Storage failure"),
                        "503": error_response("Shutting down")
                    }
                }},
                "/v1/traces": {"post": {
                    "summary": "OTLP/HTTP trace export (GenAI, OpenInference, OpenLLMetry spans)",
                    "requestBody": {"required": true, "content": {
                        "application/x-protobuf": {"schema": {"type": "string", "format": "binary", "description": "ExportTraceServiceRequest"}},
                        "application/json": {"schema": {"type": "object", "description": "ExportTraceServiceRequest, OTLP/JSON"}}
                    }},
                    "responses": {
                        "200": {"description": "ExportTraceServiceResponse; partial_success counts rejected spans and says why",
                                "content": {"application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
                                            "application/json": {"schema": {"type": "object"}}}},
                        "400": error_response("Not an ExportTraceServiceRequest"),
                        "413": error_response("Body over the limit"),
                        "415": error_response("Unsupported Content-Type"),
                        "500": error_response("Storage failure")
                    }
                }},
                "/v1/logs": {"post": {
                    "summary": "OTLP/HTTP logs export: GenAI content events (gen_ai.client.inference.operation.details, gen_ai.*.message, gen_ai.choice) and gen_ai.evaluation.result, attached to their model call by trace and span id",
                    "requestBody": {"required": true, "content": {
                        "application/x-protobuf": {"schema": {"type": "string", "format": "binary", "description": "ExportLogsServiceRequest"}},
                        "application/json": {"schema": {"type": "object", "description": "ExportLogsServiceRequest, OTLP/JSON"}}
                    }},
                    "responses": {
                        "200": {"description": "ExportLogsServiceResponse; partial_success counts rejected records and says why",
                                "content": {"application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
                                            "application/json": {"schema": {"type": "object"}}}},
                        "400": error_response("Not an ExportLogsServiceRequest"),
                        "413": error_response("Body over the limit"),
                        "415": error_response("Unsupported Content-Type"),
                        "500": error_response("Storage failure")
                    }
                }},
                "/v1/sessions": {"get": {
                    "summary": "Every session seen (open and closed), in the order first seen, paged by cursor",
                    "parameters": [
                        param("agent", "query", "Agent of the session's first step", json!({"type": "string"})),
                        param("segment", "query", "Segment `agent/task_type` it is scored against", json!({"type": "string"})),
                        param("scored", "query", "true or false", json!({"type": "boolean"})),
                        param("since", "query", "Sessions whose last step is at or after this time, unix ms", json!({"type": "integer"})),
                        param("limit", "query", "Page size, 1–1000 (default 100)", json!({"type": "integer", "minimum": 1, "maximum": 1000})),
                        param("cursor", "query", "`next_cursor` of the previous page", json!({"type": "integer"}))
                    ],
                    "responses": {"200": ok_json("A page", json!({"type": "object"})), "400": error_response("Bad query parameter")}
                }},
                "/v1/sessions/{id}/outcome": {"post": {
                    "summary": "An outcome learnt later: ends an open session; feeds the outcome-rate charts of a closed one within outcome_window_secs",
                    "parameters": [param("id", "path", "Session id", json!({"type": "string"}))],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["outcome"], "properties": {
                        "outcome": {"type": "string", "enum": ["success", "failure", "escalated"]},
                        "reward": {"type": "number"}}}}}},
                    "responses": {"200": ok_json("Logged (durable)", json!({"type": "object"})),
                                  "400": error_response("Bad body"),
                                  "404": error_response("Unknown session")}
                }},
                "/v1/otlp/status": {"get": {
                    "summary": "Span assembly counters: traces waiting to settle, settled with and without root, late and orphan content",
                    "responses": {"200": ok_json("Status", json!({"type": "object"})), "503": error_response("Scorer not answering")}
                }},
                "/v1/events": {"get": {
                    "summary": "Drift events, oldest first, paged by cursor",
                    "parameters": event_filters,
                    "responses": {
                        "200": ok_json("A page", json!({"type": "object", "properties": {
                            "events": {"type": "array", "items": {"$ref": "#/components/schemas/DriftEvent"}},
                            "next_cursor": {"type": "integer", "nullable": true}}})),
                        "400": error_response("Bad query parameter")
                    }
                }},
                "/v1/events/stream": {"get": {
                    "summary": "Live drift events as Server-Sent Events (`event: drift`, data = DriftEvent JSON)",
                    "parameters": [
                        param("segment", "query", "Segment filter", json!({"type": "string"})),
                        param("detector", "query", "Detector id or family filter", json!({"type": "string"}))
                    ],
                    "responses": {"200": {"description": "An event stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                                  "400": error_response("Bad query parameter")}
                }},
                "/v1/events/{id}": {"get": {
                    "summary": "One drift event",
                    "parameters": [param("id", "path", "Event id", json!({"type": "string"}))],
                    "responses": {"200": ok_json("The event", json!({"$ref": "#/components/schemas/DriftEvent"})),
                                  "404": error_response("No such event")}
                }},
                "/v1/sessions/{id}": {"get": {
                    "summary": "Session report: features with baseline percentiles, events, span tree summary",
                    "parameters": [param("id", "path", "Session id", json!({"type": "string"}))],
                    "responses": {"200": ok_json("The report", json!({"type": "object"})),
                                  "404": error_response("No such session")}
                }},
                "/v1/sessions/{id}/replay": {"get": {
                    "summary": "The session as stored: every step (bytes as received) in seq order, span tree, correlated sessions",
                    "parameters": [param("id", "path", "Session id", json!({"type": "string"}))],
                    "responses": {"200": {"description": "JSON document, or NDJSON of the stored records with `Accept: application/x-ndjson`",
                                          "content": {"application/json": {"schema": {"type": "object"}},
                                                      "application/x-ndjson": {"schema": {"type": "string"}}}},
                                  "404": error_response("No such session")}
                }},
                "/v1/segments": {"get": {
                    "summary": "Every segment: baseline and live rates, alarms",
                    "responses": {"200": ok_json("Segments", json!({"type": "object"}))}
                }},
                "/v1/segments/{segment}": {"get": {
                    "summary": "One segment (`AGENT/TASK_TYPE`; the agent may contain slashes): rates, costs, token burn, session lengths, error classes, success by tool, each chart's statistic and limit, moved transitions, recent events",
                    "parameters": [param("segment", "path", "`agent/task_type`", json!({"type": "string"}))],
                    "responses": {"200": ok_json("The report", json!({"type": "object"})),
                                  "404": error_response("No such segment")}
                }},
                "/metrics": {"get": {"summary": "Prometheus exposition",
                    "responses": {"200": {"description": "Prometheus text format 0.0.4; OpenMetrics when Accept asks for it", "content": {"text/plain; version=0.0.4": {"schema": {"type": "string"}}, "application/openmetrics-text": {"schema": {"type": "string"}}}}}}},
                "/healthz": {"get": {"summary": "Liveness", "responses": {"200": ok_json("Alive", json!({"type": "object"}))}}},
                "/readyz": {"get": {"summary": "Readiness (store answers, scorer running)",
                    "responses": {"200": ok_json("Ready", json!({"type": "object"})), "503": error_response("Not ready")}}},
                "/openapi.json": {"get": {"summary": "This document", "responses": {"200": ok_json("OpenAPI 3", json!({"type": "object"}))}}}
            },
            "components": {"schemas": {
                "Step": step_schema(),
                "IngestResponse": {"type": "object", "required": ["accepted", "duplicates", "sessions"], "properties": {
                    "accepted": {"type": "integer", "description": "Steps newly stored"},
                    "duplicates": {"type": "integer", "description": "Steps already stored (retries), skipped"},
                    "sessions": {"type": "integer", "description": "Sessions the batch touched"}}},
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"},
                    "invalid": {"type": "integer"},
                    "records": {"type": "array", "items": {"type": "object", "properties": {
                        "location": {"description": "{\"line\": n}, {\"record\": n} or {\"span\": {trace_id, span_id}}"},
                        "field": {"type": "string", "nullable": true}, "message": {"type": "string"}}}}}}}},
                "DriftEvent": {"type": "object",
                    "required": ["id", "detector", "kind", "segment", "session_id", "ts", "statistic", "limit", "moved", "exemplars", "observations", "message"],
                    "properties": {
                        "id": {"type": "string"}, "detector": {"type": "string"}, "kind": {"type": "string"},
                        "segment": {"$ref": "#/components/schemas/SegmentKey"},
                        "fallback_from": {"$ref": "#/components/schemas/SegmentKey"},
                        "session_id": {"type": "string"}, "seq": {"type": "integer"}, "ts": {"type": "integer"},
                        "statistic": {"type": "number"}, "limit": {"type": "number"}, "p_value": {"type": "number"},
                        "direction": {"type": "string", "enum": ["up", "down"]},
                        "moved": {"type": "array", "items": {"type": "object", "properties": {
                            "what": {"type": "string"}, "baseline": {"type": "number"}, "observed": {"type": "number"}, "score": {"type": "number"}}}},
                        "exemplars": {"type": "array", "items": {"type": "string"}},
                        "observations": {"type": "array", "items": {"type": "object"}},
                        "message": {"type": "string"}}},
                "SegmentKey": {"type": "object", "required": ["agent", "task_type"], "properties": {
                    "agent": {"type": "string"}, "task_type": {"type": "string"}}}
            }}
        })
    })
}

/// Serves the document.
pub async fn serve() -> Json<Value> {
    Json(document().clone())
}
