//! The HTTP API (axum). Handlers are thin: extract, call one thing, map the
//! result; content-type dispatch and body limits live in extractors; errors
//! map to HTTP only in [`error`].

pub mod bodies;
pub mod console;
pub mod error;
pub mod grpc;
pub mod ingest;
pub mod openapi;
pub mod reports;
pub mod server;

use crate::service::Shared;
use axum::body::Bytes;
use axum::extract::{FromRequest, MatchedPath, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bodies::{ErrorBody, Health};
use error::ApiError;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Every route: (method, path template). The OpenAPI document is tested against it.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/steps"),
    ("post", "/v1/traces"),
    ("post", "/v1/logs"),
    ("get", "/v1/events"),
    ("get", "/v1/events/stream"),
    ("get", "/v1/events/{id}"),
    ("get", "/v1/sessions"),
    ("get", "/v1/sessions/{id}"),
    ("get", "/v1/sessions/{id}/replay"),
    ("post", "/v1/sessions/{id}/outcome"),
    ("get", "/v1/otlp/status"),
    ("get", "/v1/segments"),
    ("get", "/v1/segments/{segment}"),
    ("get", "/v1/charts"),
    ("get", "/v1/tasks/{id}"),
    ("get", "/metrics"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/openapi.json"),
];

/// The application, testable without a socket.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/steps", post(ingest::post_steps))
        .route("/v1/traces", post(ingest::post_traces))
        .route("/v1/logs", post(ingest::post_logs))
        .route("/v1/events", get(reports::list_events))
        .route("/v1/events/stream", get(reports::stream_events))
        .route("/v1/events/{id}", get(reports::get_event))
        .route("/v1/sessions", get(reports::list_sessions))
        .route("/v1/sessions/{id}", get(reports::session_report))
        .route("/v1/sessions/{id}/replay", get(reports::session_replay))
        .route("/v1/sessions/{id}/outcome", post(ingest::post_outcome))
        .route("/v1/otlp/status", get(reports::otlp_status))
        .route("/v1/segments", get(reports::list_segments))
        .route("/v1/charts", get(reports::chart_series))
        .route("/v1/tasks/{id}", get(reports::task_report))
        // Agents contain slashes: the segment is everything after /v1/segments/,
        // split at its last slash into agent and task type.
        .route("/v1/segments/{*segment}", get(reports::segment_report))
        .route("/", get(console::index))
        .route("/console/console.js", get(console::script))
        .route("/console/console.css", get(console::style))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi::serve))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // OTLP exporters may gzip their bodies.
        .layer(tower_http::decompression::RequestDecompressionLayer::new())
        // Error answers from layers (an unsupported content encoding) get the JSON body too.
        .layer(middleware::from_fn(json_errors))
        // Tokens and scopes, before anything reads the body.
        .layer(middleware::from_fn_with_state(shared.clone(), authorize))
        // DNS rebinding: a loopback service answers only to loopback names.
        .layer(middleware::from_fn_with_state(shared.clone(), check_host))
        // Counts every request by route template (bounded labels).
        .layer(middleware::from_fn_with_state(shared.clone(), count_requests))
        .layer(middleware::from_fn(limit_uri))
        // The body limit is enforced by `RawBody` (so the 413 is JSON);
        // axum's default 2 MB limit is lifted to the configured one.
        .layer(axum::extract::DefaultBodyLimit::max(shared.max_body))
        .with_state(shared)
}

async fn count_requests(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let resp = next.run(req).await;
    s.metrics
        .requests
        .get_or_create(&crate::service::metrics::RequestLabels {
            endpoint,
            code: resp.status().as_u16().to_string(),
        })
        .inc();
    resp
}

async fn not_found() -> ApiError {
    ApiError::NotFound("route".into())
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::MethodNotAllowed {
        method: req.method().to_string(),
    }
}

/// The scope a request needs (`None`: open).
fn scope_of(req: &Request, metrics_open: bool) -> Option<crate::auth::Scope> {
    match req.uri().path() {
        "/healthz" | "/readyz" => None,
        p if console::PATHS.contains(&p) && req.method() == axum::http::Method::GET => None,
        "/metrics" if metrics_open => None,
        _ if req.method() == axum::http::Method::POST => Some(crate::auth::Scope::Ingest),
        _ => Some(crate::auth::Scope::Read),
    }
}

pub(crate) async fn authorize(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if let Some(scope) = scope_of(&req, s.metrics_open) {
        let header = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if let Err(e) = s.auth.check(header, scope) {
            return ApiError::Auth(e).into_response();
        }
    }
    next.run(req).await
}

/// Whether a `Host` value names this machine's loopback.
pub fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(
            host,
            |(h, p)| if p.chars().all(|c| c.is_ascii_digit()) { h } else { host },
        ),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Longest request URI read (session ids and queries fit many times over).
pub const MAX_URI_BYTES: usize = 8192;

/// Refuses over-long request targets with the JSON error body (the HTTP
/// layer itself only refuses those over 64 KiB, without a body).
async fn limit_uri(req: Request, next: Next) -> Response {
    let len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if len > MAX_URI_BYTES {
        return ApiError::UriTooLong {
            len,
            max: MAX_URI_BYTES,
        }
        .into_response();
    }
    next.run(req).await
}

pub(crate) async fn check_host(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if s.loopback_only {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()));
        if let Some(h) = host
            && !loopback_host(&h)
        {
            return ApiError::Host(h).into_response();
        }
    }
    next.run(req).await
}

/// Gives error responses made outside the handlers (layers, the router) the JSON body.
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if status.is_client_error() || status.is_server_error() {
        if is_json {
            return resp;
        }
        let message = match status.as_u16() {
            415 => "unsupported content encoding or type: send identity or gzip bodies".to_string(),
            413 => "request body over the limit".to_string(),
            414 => "request URI too long".to_string(),
            _ => status.canonical_reason().unwrap_or("error").to_string(),
        };
        let code = status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
            .replace(' ', "_");
        return (status, Json(ErrorBody::new(code, message))).into_response();
    }
    resp
}

/// `GET /healthz`.
#[utoipa::path(get, path = "/healthz", tag = "operations", summary = "Liveness",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// `GET /readyz`.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    summary = "Readiness: the store answers, appends are accepted, every segment is scoring",
    responses((status = 200, description = "Ready", body = Health),
              (status = 503, description = "Not ready, saying why", body = ErrorBody)))]
pub async fn readyz(State(s): State<Arc<Shared>>) -> Result<Json<Health>, ApiError> {
    if !s.ready.load(Ordering::SeqCst) {
        return Err(ApiError::Unavailable("not ready (starting or shutting down)".into()));
    }
    if s.writer.refusing() {
        return Err(ApiError::Unavailable(
            "appends are refused: a flush to disk failed; restart the service to recover from the log".into(),
        ));
    }
    match s.engine.report().await {
        None => {
            return Err(ApiError::Unavailable(
                "scoring has stopped: the scorer does not answer".into(),
            ));
        }
        Some(r) if !r.failed_segments.is_empty() => {
            return Err(ApiError::Unavailable(format!(
                "scoring has stopped for {} segment(s): {}",
                r.failed_segments.len(),
                r.failed_segments
                    .iter()
                    .map(|(k, why)| format!("{k} ({why})"))
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
        Some(_) => {}
    }
    let storage = s.storage.clone();
    tokio::task::spawn_blocking(move || storage.ping())
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))??;
    Ok(Json(Health { status: "ready" }))
}

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics", tag = "operations", summary = "Prometheus exposition",
    responses((status = 200, description = "Prometheus text format 0.0.4; OpenMetrics 1.0 when Accept asks for it",
               content((String = "text/plain; version=0.0.4"), (String = "application/openmetrics-text")))))]
pub async fn metrics(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    // Gauges are refreshed every second; refresh them now so a scrape right
    // after ingestion sees it.
    if let Some(r) = s.engine.report().await {
        s.metrics.refresh(&r);
    }
    // OpenMetrics to those that ask for it (Prometheus does); the 0.0.4 text
    // format to everyone else, as the Prometheus client libraries do.
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (content_type, body) = if accept.contains("application/openmetrics-text") {
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            s.metrics.encode(),
        )
    } else {
        (
            "text/plain; version=0.0.4; charset=utf-8",
            s.metrics.encode_prometheus_text(),
        )
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// A request body within the configured limit (413 as JSON otherwise).
///
/// An oversized body is still read (and discarded, up to 4× the limit or
/// 64 MiB) before the 413 is sent: a client that is still writing would
/// otherwise see a broken connection instead of the answer.
pub struct RawBody(pub Bytes);

impl FromRequest<Arc<Shared>> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<Shared>) -> Result<Self, Self::Rejection> {
        use futures::StreamExt;
        let limit = state.max_body;
        let drain_cap = limit.saturating_mul(4).max(64 << 20);
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        let mut stream = req.into_body().into_data_stream();
        let mut buf = bytes::BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
        let mut seen = 0usize;
        let read = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| ApiError::BadBody(format!("cannot read the request body: {e}")))?;
                seen += chunk.len();
                if seen <= limit && declared.is_none_or(|d| d <= limit) {
                    buf.extend_from_slice(&chunk);
                } else if seen > drain_cap {
                    break;
                }
            }
            Ok::<(), ApiError>(())
        };
        // A client that trickles its body holds a worker: bounded in time.
        tokio::time::timeout(state.body_timeout, read)
            .await
            .map_err(|_| ApiError::BodyTimeout {
                secs: state.body_timeout.as_secs(),
            })??;
        if seen > limit || declared.is_some_and(|d| d > limit) {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        Ok(RawBody(buf.freeze()))
    }
}

/// The media type of a request, lower-cased, without parameters.
pub fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}
