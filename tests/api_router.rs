//! The HTTP API in process: `api::router` over a real service (SQLite store,
//! writer and scorer threads) driven with `tower::ServiceExt::oneshot`, no
//! socket and no binary. The real-binary tests (`service_e2e`) stay as well;
//! these pin the API's answers where a socket adds nothing.

use agentdrift::config::{Config, Scope};
use agentdrift::model::PriceTable;
use agentdrift::service::{Shared, Workers, clock::SystemClock, start};
use agentdrift::store::Storage;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

/// A running service behind its router, stopped on drop.
struct Api {
    shared: Arc<Shared>,
    workers: Option<Workers>,
    _stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn start(config: Config) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::single(agentdrift::store::sqlite::SqliteStore::open(dir.path()).unwrap());
        let baseline = crate::support::repo().join("baselines/taubench-gpt-4o-airline.adb");
        let baseline = Arc::new(agentdrift::baseline::load(&baseline).unwrap());
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let (shared, workers) = tokio::task::spawn_blocking(move || {
            start(
                storage,
                baseline,
                &config,
                PriceTable::default(),
                stop_rx,
                Arc::new(SystemClock),
            )
        })
        .await
        .unwrap()
        .unwrap();
        Api {
            shared,
            workers: Some(workers),
            _stop: stop,
            _dir: dir,
        }
    }

    /// One request through the router; the status and the JSON body (Null when not JSON).
    async fn send(&self, req: Request<Body>) -> (StatusCode, Value, axum::http::HeaderMap) {
        let resp = agentdrift::api::router(self.shared.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), headers)
    }

    async fn get(&self, uri: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = Request::get(uri).header(header::HOST, "localhost");
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let (s, v, _) = self.send(req.body(Body::empty()).unwrap()).await;
        (s, v)
    }

    async fn post(&self, uri: &str, content_type: &str, body: Vec<u8>, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = Request::post(uri)
            .header(header::HOST, "localhost")
            .header(header::CONTENT_TYPE, content_type);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let (s, v, _) = self.send(req.body(Body::from(body)).unwrap()).await;
        (s, v)
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(w) = self.workers.take() {
            let _ = tokio::task::block_in_place(|| w.shutdown(&self.shared));
        }
    }
}

/// The first session of the recorded τ-bench airline fixture, as NDJSON lines.
fn first_session() -> (String, Vec<String>) {
    let text = std::fs::read_to_string(crate::support::repo().join("fixtures/sessions/taubench-gpt-4o-airline.jsonl"))
        .unwrap();
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let id = first["session_id"].as_str().unwrap().to_string();
    let lines = text
        .lines()
        .take_while(|l| serde_json::from_str::<Value>(l).unwrap()["session_id"] == id.as_str())
        .map(str::to_string)
        .collect();
    (id, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_posted_in_process_is_acknowledged_scored_and_replayed_whole() {
    let api = Api::start(Config::default()).await;
    let (id, lines) = first_session();
    let body = lines.join("\n").into_bytes();
    let (status, ack) = api.post("/v1/steps", "application/x-ndjson", body.clone(), None).await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(ack["accepted"], lines.len());
    assert_eq!(ack["duplicates"], 0);
    assert_eq!(ack["sessions"], 1);
    // The same bytes again are duplicates, not new steps.
    let (_, again) = api.post("/v1/steps", "application/x-ndjson", body, None).await;
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(lines.len() as u64))
    );

    // The session ends with its `end` step, so the scorer closes it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let report = loop {
        let (status, r) = api.get(&format!("/v1/sessions/{id}"), None).await;
        if status == StatusCode::OK && r["status"] == "closed" {
            break r;
        }
        assert!(Instant::now() < deadline, "session never closed: {status} {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(report["scored"], true, "{report}");
    assert_eq!(report["segment"]["agent"], "taubench-airline/gpt-4o");
    assert_eq!(report["steps"], lines.len());
    // The features carry their baseline percentiles (the session is from the reference run).
    let features = report["features"].as_array().unwrap();
    assert!(!features.is_empty());
    for f in features {
        if let Some(p) = f["baseline_percentile"].as_f64() {
            assert!((0.0..=100.0).contains(&p), "{f}");
        }
    }

    // The replay gives back every step as it was sent, in order.
    let (status, replay) = api.get(&format!("/v1/sessions/{id}/replay"), None).await;
    assert_eq!(status, StatusCode::OK);
    let steps = replay["steps"].as_array().unwrap();
    assert_eq!(steps.len(), lines.len());
    for (got, sent) in steps.iter().zip(&lines) {
        let sent: Value = serde_json::from_str(sent).unwrap();
        assert_eq!(got["seq"], sent["seq"]);
        assert_eq!(got["kind"], sent["kind"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_naming_what_is_wrong() {
    let api = Api::start(Config::default()).await;
    let (_, lines) = first_session();
    // Line 2 lacks its session id: the whole request is refused, naming line and field.
    let mut bad: Value = serde_json::from_str(&lines[1]).unwrap();
    bad.as_object_mut().unwrap().remove("session_id");
    let body = format!("{}\n{}\n", lines[0], bad).into_bytes();
    let (status, err) = api.post("/v1/steps", "application/x-ndjson", body, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    let rec = &err["error"]["records"][0];
    assert_eq!(err["error"]["invalid"], 1, "{err}");
    assert!(rec["location"].to_string().contains('2'), "{err}");
    assert!(rec["message"].as_str().unwrap().contains("session_id"), "{err}");
    // Nothing of it was stored.
    let (_, sessions) = api.get("/v1/sessions", None).await;
    assert_eq!(sessions["sessions"].as_array().map(Vec::len), Some(0), "{sessions}");

    let (status, err) = api.post("/v1/steps", "text/csv", b"a,b".to_vec(), None).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("application/x-ndjson"),
        "{err}"
    );
    let (status, err) = api.post("/v1/traces", "text/plain", b"x".to_vec(), None).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("application/x-protobuf"),
        "{err}"
    );
    let (status, err) = api
        .post("/v1/traces", "application/x-protobuf", vec![0xff; 7], None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ExportTraceServiceRequest"),
        "{err}"
    );

    let (status, err) = api.get("/v1/events?limit=abc", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["field"], "limit", "{err}");
    let (status, err) = api.get("/v1/nowhere", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(err["error"]["code"].is_string(), "{err}");
    let (s, err, _) = api
        .send(
            Request::delete("/v1/events")
                .header(header::HOST, "localhost")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert!(err["error"]["code"].is_string(), "{err}");
    // A loopback service answers only to loopback names (DNS rebinding).
    let (s, err, _) = api
        .send(
            Request::get("/healthz")
                .header(header::HOST, "evil.example")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_decide_who_reads_and_who_ingests() {
    let mut config = Config::default();
    config.auth.env_tokens = vec![
        (
            "collector".into(),
            vec![Scope::Ingest],
            "ingest-secret-0123456789".into(),
        ),
        ("ops".into(), vec![Scope::Read], "read-secret-0123456789".into()),
    ];
    let api = Api::start(config).await;
    let (_, lines) = first_session();
    let body = lines[..2].join("\n").into_bytes();
    let (status, err) = api.post("/v1/steps", "application/x-ndjson", body.clone(), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{err}");
    let (status, _) = api
        .post(
            "/v1/steps",
            "application/x-ndjson",
            body.clone(),
            Some("read-secret-0123456789"),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, ack) = api
        .post(
            "/v1/steps",
            "application/x-ndjson",
            body,
            Some("ingest-secret-0123456789"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(ack["accepted"], 2);

    assert_eq!(api.get("/v1/events", None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        api.get("/v1/events", Some("ingest-secret-0123456789")).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, events) = api.get("/v1/events", Some("read-secret-0123456789")).await;
    assert_eq!(status, StatusCode::OK, "{events}");
    assert_eq!(events["events"].as_array().map(Vec::len), Some(0));
    // `/metrics` needs a read token by default; health checks need none.
    assert_eq!(api.get("/metrics", None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(api.get("/healthz", None).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_route_the_router_serves() {
    let api = Api::start(Config::default()).await;
    let (status, doc) = api.get("/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    let routes = [
        ("/v1/steps", "post"),
        ("/v1/traces", "post"),
        ("/v1/logs", "post"),
        ("/v1/events", "get"),
        ("/v1/events/stream", "get"),
        ("/v1/events/{id}", "get"),
        ("/v1/sessions", "get"),
        ("/v1/sessions/{id}", "get"),
        ("/v1/sessions/{id}/replay", "get"),
        ("/v1/sessions/{id}/outcome", "post"),
        ("/v1/otlp/status", "get"),
        ("/v1/segments", "get"),
        ("/v1/charts", "get"),
        ("/v1/tasks/{id}", "get"),
        ("/metrics", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ];
    for (path, method) in routes {
        assert!(
            paths
                .keys()
                .any(|p| p == path || p.starts_with("/v1/segments/") && path.starts_with("/v1/segments")),
            "{path} missing from /openapi.json"
        );
        if let Some(p) = paths.get(path) {
            assert!(p.get(method).is_some(), "{method} {path} missing from /openapi.json");
        }
    }
    // Every documented GET without path parameters answers in process (no 404/405).
    for (path, item) in paths {
        if item.get("get").is_some() && !path.contains('{') && path != "/v1/events/stream" {
            let path = if path == "/v1/charts" {
                "/v1/charts?segment=taubench-airline/gpt-4o/airline&chart=markov"
            } else {
                path.as_str()
            };
            let (status, _) = api.get(path, None).await;
            assert!(
                status.is_success() || status == StatusCode::SERVICE_UNAVAILABLE,
                "GET {path}: {status}"
            );
        }
    }
}
