//! The real `agentdrift serve` binary on a free port, driven over HTTP.

use crate::support::{bin, shared};
use agentdrift::model::Step;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running server.
pub struct Server {
    child: Child,
    /// Base URL.
    pub url: String,
    /// OTLP/gRPC URL.
    pub grpc_url: String,
}

impl Server {
    /// Starts the binary and waits for its "listening on" line.
    pub fn start(baseline: &Path, data_dir: &Path, extra_env: &[(&str, &str)]) -> Server {
        Server::start_with(baseline, data_dir, &[], extra_env)
    }

    /// Same, with more command-line arguments (`--config …`).
    pub fn start_with(baseline: &Path, data_dir: &Path, extra_args: &[&str], extra_env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(bin());
        cmd.args([
            "serve",
            "--baseline",
            baseline.to_str().unwrap(),
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--otlp-grpc-listen",
            "127.0.0.1:0",
        ])
        .args(extra_args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start agentdrift serve");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let line = lines.next().expect("server printed its address").expect("read stdout");
            if let Some(addr) = line.strip_prefix("listening on ") {
                break addr.to_string();
            }
        };
        let grpc_url = loop {
            let line = lines
                .next()
                .expect("server printed its gRPC address")
                .expect("read stdout");
            if let Some(addr) = line.strip_prefix("otlp-grpc on ") {
                break addr.to_string();
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, url, grpc_url }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(mut self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "graceful shutdown exits 0: {status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sessions of a shared data file, as NDJSON lines per session (file order).
pub fn sessions_of(path: &Path) -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines() {
        let sid = serde_json::from_str::<Value>(line).unwrap()["session_id"]
            .as_str()
            .unwrap()
            .to_string();
        match out.last_mut() {
            Some((s, v)) if *s == sid => v.push(line.to_string()),
            _ => out.push((sid, vec![line.to_string()])),
        }
    }
    out
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// POSTs NDJSON lines to `/v1/steps`.
pub async fn post_ndjson(c: &reqwest::Client, url: &str, lines: &[String]) -> reqwest::Response {
    post_text(c, url, lines.join("\n")).await
}

/// POSTs an NDJSON body to `/v1/steps`.
pub async fn post_text(c: &reqwest::Client, url: &str, body: String) -> reqwest::Response {
    c.post(format!("{url}/v1/steps"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// The value of one `/metrics` series (`name{labels}` as printed), 0 when absent.
pub async fn metric(c: &reqwest::Client, url: &str, series: &str) -> f64 {
    let text = c
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// Polls a session's replay until it holds at least `n` steps (OTLP
/// sessions appear once their trace settles).
pub async fn wait_for_steps(c: &reqwest::Client, base: &str, session: &str, n: usize) -> Value {
    let url = format!("{base}/v1/sessions/{session}/replay");
    for _ in 0..300 {
        let r = c.get(&url).send().await.unwrap();
        if r.status().is_success() {
            let v: Value = r.json().await.unwrap();
            if v["steps"].as_array().is_some_and(|s| s.len() >= n) {
                return v;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("session {session} did not reach {n} steps within 30 s");
}

/// GETs `url`, which must answer 2xx, as JSON.
pub async fn get_json(c: &reqwest::Client, url: &str) -> Value {
    let r = c.get(url).send().await.unwrap();
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    r.json().await.unwrap()
}

fn train(inputs: &[PathBuf], out: &Path) {
    let mut args = vec![
        "train".to_string(),
        "--out".into(),
        out.display().to_string(),
        "--input".into(),
    ];
    args.extend(inputs.iter().map(|p| p.display().to_string()));
    crate::support::run_ok(&args);
}

/// τ-bench gpt-4o trials 0/2 as the reference, 1/3 held back.
fn held_back(dir: &Path) -> (PathBuf, Vec<(String, Vec<String>)>) {
    let all = sessions_of(&shared().join("data/taubench/gpt-4o_airline.jsonl"));
    let (reference, held): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|(s, _)| s.ends_with("-t0") || s.ends_with("-t2"));
    let refpath = dir.join("reference.jsonl");
    std::fs::write(
        &refpath,
        reference
            .iter()
            .flat_map(|(_, l)| l.iter().map(|x| format!("{x}\n")))
            .collect::<String>(),
    )
    .unwrap();
    let baseline = dir.join("b.adb");
    train(&[refpath], &baseline);
    (baseline, held)
}

/// A session that calls the same tool with the same arguments 40 times.
pub fn looping_session(id: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut seq = 0;
    let mut push = |v: Value| {
        lines.push(v.to_string());
    };
    push(
        serde_json::json!({"session_id": id, "seq": seq, "ts": 1_800_000_000_000i64, "kind": "user", "agent": "taubench-airline/gpt-4o", "task_type": "airline", "text": "Where is my flight?"}),
    );
    seq += 1;
    for i in 0..40 {
        push(
            serde_json::json!({"session_id": id, "seq": seq, "ts": 1_800_000_000_000i64 + seq, "kind": "llm", "agent": "taubench-airline/gpt-4o", "task_type": "airline", "text": "", "tool_calls_requested": 1, "model": "gpt-4o"}),
        );
        seq += 1;
        push(
            serde_json::json!({"session_id": id, "seq": seq, "ts": 1_800_000_000_000i64 + seq, "kind": "tool", "agent": "taubench-airline/gpt-4o", "task_type": "airline", "tool": "get_reservation_details", "args": {"reservation_id": "ABC123"}, "status": "ok", "result_chars": 100 + i}),
        );
        seq += 1;
    }
    push(
        serde_json::json!({"session_id": id, "seq": seq, "ts": 1_800_000_000_000i64 + seq, "kind": "end", "agent": "taubench-airline/gpt-4o", "task_type": "airline", "outcome": "failure", "reward": 0.0}),
    );
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let (baseline, held) = held_back(dir.path());
    let server = Server::start(&baseline, &dir.path().join("data"), &[]);
    let c = client();
    let url = server.url.clone();

    // Live stream first, so the loop event is seen as it happens.
    let sse = c
        .get(format!("{url}/v1/events/stream?detector=loop"))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.headers()["content-type"], "text/event-stream");

    let mut sent = 0;
    for (_, lines) in &held {
        let r = post_ndjson(&c, &url, lines).await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["accepted"].as_u64().unwrap() as usize, lines.len());
        sent += lines.len();
    }
    // A retried batch stores nothing twice.
    let again: Value = post_ndjson(&c, &url, &held[0].1).await.json().await.unwrap();
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(held[0].1.len() as u64))
    );
    let looping = looping_session("loop-session-1");
    assert_eq!(post_ndjson(&c, &url, &looping).await.status(), 200);

    // The SSE stream carries the loop event.
    let mut stream = sse.bytes_stream();
    let mut buf = String::new();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        use futures::StreamExt;
        while let Some(chunk) = stream.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if buf.contains("event: drift") && buf.contains("loop-session-1") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "SSE delivered the loop event: {buf}");

    // Events list, filters and one event.
    let events = get_json(&c, &format!("{url}/v1/events?session=loop-session-1")).await;
    let ev = &events["events"][0];
    assert_eq!(ev["kind"], "loop");
    assert!(ev["p_value"].as_f64().unwrap() < 1e-3);
    assert_eq!(ev["exemplars"][0], "loop-session-1");
    let one = get_json(&c, &format!("{url}/v1/events/{}", ev["id"].as_str().unwrap())).await;
    assert_eq!(&one, ev);
    let page = get_json(&c, &format!("{url}/v1/events?limit=1")).await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1);

    // Session report: features with baseline percentiles, events, span tree.
    let report = get_json(&c, &format!("{url}/v1/sessions/loop-session-1")).await;
    let repeat = report["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["feature"] == "repeat_calls")
        .unwrap();
    assert_eq!(repeat["value"], 40.0);
    assert!(repeat["baseline_percentile"].as_f64().unwrap() > 0.99);
    assert_eq!(
        report["events"].as_array().unwrap().len(),
        events["events"].as_array().unwrap().len()
    );
    assert_eq!(report["status"], "closed");
    assert!(report["span_tree"]["tool_call_ratio"].as_f64().unwrap() > 0.4);

    // Replay returns exactly the bytes sent, in seq order.
    let (sid, lines) = &held[3];
    let raw = c
        .get(format!("{url}/v1/sessions/{sid}/replay"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        raw,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        "byte for byte"
    );
    let replay = get_json(&c, &format!("{url}/v1/sessions/{sid}/replay")).await;
    assert_eq!(replay["steps"].as_array().unwrap().len(), lines.len());
    assert_eq!(replay["steps"][0], serde_json::from_str::<Value>(&lines[0]).unwrap());

    // Segments.
    let segs = get_json(&c, &format!("{url}/v1/segments")).await;
    let airline = segs["segments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["segment"]["task_type"] == "airline")
        .unwrap();
    assert_eq!(airline["live"]["sessions"].as_u64().unwrap() as usize, held.len() + 1);
    assert!(airline["live"]["success_rate"].as_f64().is_some());
    let seg = get_json(&c, &format!("{url}/v1/segments/taubench-airline/gpt-4o/airline")).await;
    assert!(seg["charts"].as_array().unwrap().len() >= 20);
    assert!(
        seg["charts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|ch| ch["statistic"].is_number() && ch["limit"].is_number())
    );
    assert!(
        seg["recent_events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["session_id"] == "loop-session-1")
    );
    assert!(seg["live"]["session_length_share_50_100_200"].is_array());

    // Metrics.
    let metrics = c
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let accepted: f64 = metrics
        .lines()
        .find(|l| l.starts_with("agentdrift_ingest_steps_total{format=\"ndjson\"}"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(accepted as usize, sent + looping.len());
    for name in [
        "agentdrift_drift_events_total",
        "agentdrift_store_commit_seconds_bucket",
        "agentdrift_ingest_ack_seconds_count",
        "agentdrift_segment_success_ratio",
        "agentdrift_chart_statistic",
        "agentdrift_sessions_closed_total",
    ] {
        assert!(metrics.contains(name), "{name} in /metrics");
    }

    // Content negotiation: OpenMetrics when asked for, the 0.0.4 text format
    // otherwise, with the same samples.
    let om = c
        .get(format!("{url}/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert!(
        om.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let om = om.text().await.unwrap();
    assert!(om.ends_with("# EOF\n") && om.contains("# TYPE agentdrift_ingest_steps counter"));
    let plain = c.get(format!("{url}/metrics")).send().await.unwrap();
    assert!(
        plain.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let plain = plain.text().await.unwrap();
    assert!(!plain.contains("# EOF") && plain.contains("# TYPE agentdrift_ingest_steps_total counter"));

    // Every documented path answers, and the document is valid OpenAPI.
    let doc = get_json(&c, &format!("{url}/openapi.json")).await;
    let req = crate::support::repo().join("fixtures/requirements-openapi.txt");
    let py = crate::support::python_env("openapi", &req);
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    let out = std::process::Command::new(&py)
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator rejects /openapi.json:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // ...and every JSON answer (documented GETs, errors, an ingest and an
    // outcome answer) matches the schema the document gives for it.
    let mut answers = Vec::new();
    let mut record = |path: &str, method: &str, status: u16, body: Value| {
        answers.push(json!({"path": path, "method": method, "status": status,
                            "content_type": "application/json", "body": body}));
    };
    for (path, item) in doc["paths"].as_object().unwrap() {
        if item.get("get").is_none() || path.contains("stream") || path == "/v1/tasks/{id}" {
            continue;
        }
        let p = path
            .replace("{id}", "loop-session-1")
            .replace("{segment}", "taubench-airline/gpt-4o/airline");
        let p = if path == "/v1/events/{id}" {
            format!("/v1/events/{}", ev["id"].as_str().unwrap())
        } else if path == "/v1/charts" {
            "/v1/charts?segment=taubench-airline/gpt-4o/airline&chart=markov".to_string()
        } else {
            p
        };
        let r = c.get(format!("{url}{p}")).send().await.unwrap();
        let status = r.status().as_u16();
        assert!(r.status().is_success(), "{path}: {status}");
        if path != "/metrics" {
            record(path, "get", status, r.json().await.unwrap());
        }
    }
    for (path, p) in [
        ("/v1/sessions/{id}", "/v1/sessions/no-such-session"),
        ("/v1/tasks/{id}", "/v1/tasks/no-such-task"),
        ("/v1/events", "/v1/events?limit=0"),
    ] {
        let r = c.get(format!("{url}{p}")).send().await.unwrap();
        let status = r.status().as_u16();
        assert!(r.status().is_client_error(), "{p}: {status}");
        record(path, "get", status, r.json().await.unwrap());
    }
    let r = post_ndjson(&c, &url, &[r#"{"session_id":"s","seq":0}"#.to_string()]).await;
    assert_eq!(r.status(), 422);
    record("/v1/steps", "post", 422, r.json().await.unwrap());
    let r = post_ndjson(&c, &url, &held[0].1[..1]).await;
    assert_eq!(r.status(), 200);
    record("/v1/steps", "post", 200, r.json().await.unwrap());
    let r = c
        .post(format!("{url}/v1/sessions/loop-session-1/outcome"))
        .json(&json!({"outcome": "failure"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    record("/v1/sessions/{id}/outcome", "post", 200, r.json().await.unwrap());
    let answers_file = dir.path().join("answers.json");
    std::fs::write(&answers_file, serde_json::to_vec(&answers).unwrap()).unwrap();
    let out = std::process::Command::new(&py)
        .arg(crate::support::repo().join("tests/support/check_responses.py"))
        .arg(&file)
        .arg(&answers_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "answers that do not match their schema in /openapi.json:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(&format!("{} answers checked, 0 mismatches", answers.len()))
    );
    assert_eq!(c.get(format!("{url}/readyz")).send().await.unwrap().status(), 200);
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_4xx_with_the_field_named_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let baseline = crate::support::repo().join("baselines/taubench-gpt-4o-airline.adb");
    let server = Server::start(
        &baseline,
        &dir.path().join("data"),
        &[("AGENTDRIFT_MAX_BODY_BYTES", "65536")],
    );
    let c = client();
    let url = &server.url;
    let good =
        r#"{"session_id":"b1","seq":0,"ts":1,"kind":"llm","agent":"taubench-airline/gpt-4o","task_type":"airline"}"#;
    let cases: Vec<(&str, String, u16, Option<&str>)> = vec![
        (
            "malformed",
            format!("{good}\n{{\"session_id\": \"b1\", \"seq\": 1,"),
            422,
            None,
        ),
        (
            "unknown field",
            format!("{good}\n{}", good.replace("\"seq\":0", "\"seq\":1,\"colour\":\"red\"")),
            422,
            Some("colour"),
        ),
        (
            "negative tokens",
            good.replace("\"seq\":0", "\"seq\":2,\"input_tokens\":-5"),
            422,
            Some("input_tokens"),
        ),
        (
            "NaN",
            good.replace("\"seq\":0", "\"seq\":3,\"cost_usd\":NaN"),
            422,
            None,
        ),
        (
            "wrong type",
            good.replace("\"ts\":1", "\"ts\":\"yesterday\""),
            422,
            Some("ts"),
        ),
        ("unknown kind", good.replace("\"llm\"", "\"dance\""), 422, Some("kind")),
    ];
    for (what, body, status, field) in cases {
        let r = c
            .post(format!("{url}/v1/steps"))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{what}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], "invalid_records", "{what}: {e}");
        assert!(e["error"]["records"][0]["location"]["line"].is_number(), "{what}: {e}");
        if let Some(f) = field {
            assert_eq!(e["error"]["field"], f, "{what}: {e}");
        }
    }
    // Nothing of a rejected batch was stored (all-or-nothing).
    assert_eq!(
        c.get(format!("{url}/v1/sessions/b1")).send().await.unwrap().status(),
        404
    );

    let r = c
        .post(format!("{url}/v1/steps"))
        .header("content-type", "text/plain")
        .body(good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let e: Value = r.json().await.unwrap();
    assert!(e["error"]["message"].as_str().unwrap().contains("application/x-ndjson"));

    let big = format!("{good}\n").repeat(2000);
    let r = c
        .post(format!("{url}/v1/steps"))
        .header("content-type", "application/x-ndjson")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "payload_too_large");

    // MessagePack with a NaN names the field.
    let mut s: Step = serde_json::from_str(good).unwrap();
    s.latency_ms = Some(f64::NAN);
    let r = c
        .post(format!("{url}/v1/steps"))
        .header("content-type", "application/msgpack")
        .body(rmp_serde::to_vec_named(&s).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["field"], "latency_ms");

    let r = c
        .post(format!("{url}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(vec![0xff, 0x01, 0x02])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c.get(format!("{url}/v1/events?limit=zero")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["field"], "limit");
    let r = c.get(format!("{url}/v1/events?order=sideways")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["field"], "order");
    let r = c.get(format!("{url}/v1/events?colour=red")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(c.get(format!("{url}/v1/nothing")).send().await.unwrap().status(), 404);

    // Still up, and a good batch is accepted.
    assert_eq!(c.get(format!("{url}/healthz")).send().await.unwrap().status(), 200);
    let r = c
        .post(format!("{url}/v1/steps"))
        .header("content-type", "application/x-ndjson")
        .body(good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_fixtures_become_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let baseline = crate::support::repo().join("baselines/taubench-gpt-4o-airline.adb");
    let server = Server::start(
        &baseline,
        &dir.path().join("data"),
        &[("AGENTDRIFT_TRACE_SETTLE_SECS", "1")],
    );
    let c = client();
    let url = &server.url;
    let pb = std::fs::read(crate::support::repo().join("fixtures/otel/genai_multiagent.pb")).unwrap();
    let r = c
        .post(format!("{url}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(pb.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-protobuf");
    // Re-exporting the same spans adds nothing.
    c.post(format!("{url}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(pb)
        .send()
        .await
        .unwrap();
    let replay = wait_for_steps(&c, url, "conv-ma-1", 9).await;
    let steps = replay["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 9);
    assert_eq!(steps.iter().filter(|s| s["kind"] == "handoff").count(), 2);
    assert_eq!(
        steps.iter().map(|s| s["seq"].as_u64().unwrap()).collect::<Vec<_>>(),
        (0..9).collect::<Vec<_>>()
    );
    let report = get_json(&c, &format!("{url}/v1/sessions/conv-ma-1")).await;
    assert_eq!(report["span_tree"]["agents"].as_array().unwrap().len(), 3);
    assert_eq!(
        report["scored"], false,
        "an agent the baseline does not know is stored but not scored"
    );
    // JSON encoding with a span that cannot be read: partial success.
    let mut json: Value = serde_json::from_str(
        &std::fs::read_to_string(crate::support::repo().join("fixtures/otel/genai_single.json")).unwrap(),
    )
    .unwrap();
    let spans = json["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array_mut()
        .unwrap();
    let tool = spans
        .iter_mut()
        .find(|s| s["name"].as_str().unwrap().starts_with("execute_tool"))
        .unwrap();
    tool["name"] = "".into();
    tool["attributes"]
        .as_array_mut()
        .unwrap()
        .retain(|a| a["key"] != "gen_ai.tool.name");
    let r = c
        .post(format!("{url}/v1/traces"))
        .header("content-type", "application/json")
        .body(json.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    // int64 in OTLP/JSON: receivers accept a number or a string.
    let rejected = &body["partialSuccess"]["rejectedSpans"];
    assert!(rejected == 1 || rejected == "1", "{body}");
    assert!(
        body["partialSuccess"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("gen_ai.tool.name")
    );
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_nothing_acknowledged_and_scoring_continues() {
    sigkill_scenario(&[]).await;
}

/// What [`sigkill_scenario`] leaves: the events stored, the sessions streamed,
/// and the data directory (its server stopped cleanly).
pub struct AfterCrash {
    /// Event ids the service stored (equal to an uninterrupted offline scoring).
    pub events: BTreeSet<String>,
    /// Sessions streamed, all closed.
    pub sessions: usize,
    /// Keeps the data directory alive.
    pub dir: tempfile::TempDir,
    /// The baseline it was served with.
    pub baseline: PathBuf,
}

/// Streams drifted traffic, SIGKILLs the server mid-stream, restarts it on the
/// same storage (`env` may point the query store elsewhere) and resends from
/// the first unacknowledged batch: every acknowledged step is stored once and
/// the events equal an uninterrupted offline scoring of the same stream.
pub async fn sigkill_scenario(env: &[(&str, &str)]) -> AfterCrash {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A baseline of one model, traffic of another: plenty of events either side of the crash.
    let baseline = dir.path().join("b.adb");
    train(&[shared().join("data/tau2bench/gpt-4.1-sft_telecom.jsonl")], &baseline);
    let mut traffic = sessions_of(&shared().join("data/tau2bench/gpt-4.1_telecom.jsonl"));
    // Score it as the baseline's agent so every detector runs.
    for (_, lines) in &mut traffic {
        for l in lines.iter_mut() {
            *l = l.replace("tau2bench-telecom/gpt-4.1\"", "tau2bench-telecom/gpt-4.1-sft\"");
        }
    }
    let mut batches: Vec<Vec<String>> = Vec::new();
    for (_, lines) in &traffic {
        for chunk in lines.chunks(7) {
            batches.push(chunk.to_vec());
        }
    }
    let c = client();
    let mut acked: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let mut record = |lines: &[String]| {
        for l in lines {
            let v: Value = serde_json::from_str(l).unwrap();
            acked
                .entry(v["session_id"].as_str().unwrap().into())
                .or_default()
                .insert(v["seq"].as_u64().unwrap());
        }
    };
    let kill_at = batches.len() / 2;
    let mut server = Server::start(&baseline, &data, env);
    // A concurrent stream, killed mid-flight.
    let url = server.url.clone();
    let first: Vec<Vec<String>> = batches[..kill_at].to_vec();
    let sender = tokio::spawn({
        let c = c.clone();
        async move {
            let mut ok = Vec::new();
            for b in first {
                match c
                    .post(format!("{url}/v1/steps"))
                    .header("content-type", "application/x-ndjson")
                    .body(b.join("\n"))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => ok.push(b),
                    _ => break,
                }
            }
            ok
        }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.kill();
    let sent_ok = sender.await.unwrap();
    for b in &sent_ok {
        record(b);
    }
    assert!(!sent_ok.is_empty(), "some batches were acknowledged before the kill");
    // Restart on the same data and resend everything from the first unacknowledged batch.
    server = Server::start(&baseline, &data, env);
    let url = server.url.clone();
    for b in &batches[sent_ok.len()..] {
        let r = post_ndjson(&c, &url, b).await;
        assert_eq!(r.status(), 200);
        record(b);
    }
    // Every acknowledged step is stored exactly once.
    for (sid, seqs) in &acked {
        let replay = get_json(&c, &format!("{url}/v1/sessions/{sid}/replay")).await;
        let stored: Vec<u64> = replay["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["seq"].as_u64().unwrap())
            .collect();
        let unique: BTreeSet<u64> = stored.iter().copied().collect();
        assert_eq!(stored.len(), unique.len(), "{sid}: no duplicates");
        assert!(seqs.is_subset(&unique), "{sid}: every acknowledged step stored");
    }
    // Scoring continued: all sessions closed, and the events equal an uninterrupted
    // offline scoring of the same stream (nothing lost, nothing duplicated).
    let mut events: BTreeSet<String> = BTreeSet::new();
    let mut cursor: Option<i64> = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let segs = get_json(&c, &format!("{url}/v1/segments")).await;
        let done: u64 = segs["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["live"]["sessions"].as_u64().unwrap_or(0))
            .sum();
        if done as usize >= traffic.len() || std::time::Instant::now() > deadline {
            assert_eq!(done as usize, traffic.len(), "every session closed after the restart");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    loop {
        let q = cursor.map_or(String::new(), |c| format!("&cursor={c}"));
        let page = get_json(&c, &format!("{url}/v1/events?limit=1000{q}")).await;
        for e in page["events"].as_array().unwrap() {
            assert!(
                events.insert(e["id"].as_str().unwrap().to_string()),
                "event stored once"
            );
        }
        match page["next_cursor"].as_i64() {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_newest_first(&c, &url).await;
    let b = std::sync::Arc::new(agentdrift::baseline::load(&baseline).unwrap());
    let mut scorer = agentdrift::engine::Scorer::new(b, Default::default(), 300_000).unwrap();
    let mut expected = BTreeSet::new();
    for batch in &batches {
        for l in batch {
            let s: Step = serde_json::from_str(l).unwrap();
            for e in scorer.ingest(s, 0).events {
                expected.insert(e.id);
            }
        }
    }
    assert!(!expected.is_empty(), "the drifted traffic raises events");
    assert_eq!(events, expected);
    server.terminate();
    AfterCrash {
        events,
        sessions: traffic.len(),
        dir,
        baseline,
    }
}

/// Newest first is the oldest-first listing reversed, a page at a time.
async fn assert_newest_first(c: &reqwest::Client, url: &str) {
    let all = get_json(c, &format!("{url}/v1/events?limit=1000")).await;
    let mut ids: Vec<Value> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].clone())
        .collect();
    assert!(all["next_cursor"].is_null(), "one page holds them all");
    ids.reverse();
    let (mut newest, mut cursor) = (Vec::new(), String::new());
    loop {
        let p = get_json(c, &format!("{url}/v1/events?order=newest&limit=2{cursor}")).await;
        newest.extend(p["events"].as_array().unwrap().iter().map(|e| e["id"].clone()));
        match p["next_cursor"].as_i64() {
            Some(n) => cursor = format!("&cursor={n}"),
            None => break,
        }
    }
    assert!(ids.len() >= 2);
    assert_eq!(newest, ids);
}

/// A Python with the OpenTelemetry exporter, provisioned by the test itself.
fn python() -> String {
    let req = crate::support::repo().join("fixtures/otel/requirements-exporter.txt");
    crate::support::python_env("exporter", &req).display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unmodified_python_otlp_exporter_creates_sessions() {
    let py = python();
    let dir = tempfile::tempdir().unwrap();
    let baseline = crate::support::repo().join("baselines/taubench-gpt-4o-airline.adb");
    let server = Server::start(
        &baseline,
        &dir.path().join("data"),
        &[("AGENTDRIFT_TRACE_SETTLE_SECS", "1")],
    );
    let script = crate::support::repo().join("fixtures/otel/send_with_exporter.py");
    for (conv, compression) in [("exporter-conv-1", "none"), ("exporter-conv-gzip", "gzip")] {
        let (py2, script2, url2, conv2) = (py.clone(), script.clone(), server.url.clone(), conv.to_string());
        let out = tokio::task::spawn_blocking(move || {
            Command::new(py2)
                .args([script2.to_str().unwrap(), &url2, &conv2, compression])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "exporter failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let c = client();
        let replay = wait_for_steps(&c, &server.url, conv, 7).await;
        let steps = replay["steps"].as_array().unwrap();
        let kinds: Vec<&str> = steps.iter().map(|s| s["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["llm", "tool", "llm", "tool", "llm", "tool", "end"], "{conv}");
        assert!(
            steps
                .iter()
                .all(|s| s["agent"] == "support-agent" && s["task_type"] == "airline")
        );
        assert_eq!(steps[5]["status"], "error");
        assert_eq!(steps[5]["error_class"], "tool_timeout");
        assert_eq!(steps[0]["input_tokens"], 1000);
        let report = get_json(&c, &format!("{}/v1/sessions/{conv}", server.url)).await;
        assert_eq!(report["outcome"], "success");
    }
    server.terminate();
}

/// A session without an end step closes idle; its outcome, reported later
/// through the API, reaches the rates; an unknown session is 404, a bad
/// body 400 naming the field, a second outcome is recorded but not charted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_reported_later_reach_the_rates_within_their_window() {
    let dir = tempfile::tempdir().unwrap();
    let baseline = crate::support::repo().join("baselines/taubench-gpt-4o-airline.adb");
    let server = Server::start(
        &baseline,
        &dir.path().join("data"),
        &[("AGENTDRIFT_IDLE_TIMEOUT_SECS", "1")],
    );
    let c = client();
    let url = &server.url;
    let mut lines = looping_session("late-outcome");
    lines.truncate(7); // no end step: the session closes idle, outcome unknown
    assert_eq!(post_ndjson(&c, url, &lines).await.status(), 200);
    let report = loop {
        let r = get_json(&c, &format!("{url}/v1/sessions/late-outcome")).await;
        if r["status"] == "closed" {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(report["outcome"], Value::Null);
    let seg = format!("{url}/v1/segments/taubench-airline/gpt-4o/airline");
    let before = get_json(&c, &seg).await;
    assert_eq!(before["live"]["sessions"], 1);
    assert_eq!(before["live"]["success_rate"], Value::Null, "no outcome yet");
    let post = |id: &str, body: &str| {
        c.post(format!("{url}/v1/sessions/{id}/outcome"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let r = post("late-outcome", r#"{"outcome": "failure", "reward": 0.0}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(
        (answer["session"].as_str(), answer["charted"].as_bool()),
        (Some("closed"), Some(true))
    );
    let after = loop {
        let s = get_json(&c, &seg).await;
        if s["live"]["success_rate"] != Value::Null {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(after["live"]["success_rate"], 0.0, "the late failure counts");
    let report = get_json(&c, &format!("{url}/v1/sessions/late-outcome")).await;
    assert_eq!(
        (report["outcome"].as_str(), report["outcome_source"].as_str()),
        (Some("failure"), Some("explicit"))
    );
    let listed = get_json(&c, &format!("{url}/v1/sessions?agent=taubench-airline/gpt-4o")).await;
    let row = &listed["sessions"][0];
    assert_eq!(
        (row["session_id"].as_str(), row["outcome"].as_str()),
        (Some("late-outcome"), Some("failure"))
    );
    // Again: recorded, not charted twice.
    let again: Value = post("late-outcome", r#"{"outcome": "success"}"#)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["charted"], false, "{again}");
    let r = post("nobody", r#"{"outcome": "success"}"#).await.unwrap();
    assert_eq!(r.status(), 404);
    let r = post("late-outcome", r#"{"outcome": "great"}"#).await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("outcome"), "{body}");
    server.terminate();
}

/// OTLP/gRPC: gzip-compressed exports, partial success naming the bad span,
/// retries stored once; logs over gRPC too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_grpc_takes_gzip_reports_partial_success_and_deduplicates() {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    let dir = tempfile::tempdir().unwrap();
    let baseline = crate::support::repo().join("baselines/taubench-gpt-4o-airline.adb");
    let server = Server::start(
        &baseline,
        &dir.path().join("data"),
        &[("AGENTDRIFT_TRACE_SETTLE_SECS", "1")],
    );
    let steps: Vec<Step> = looping_session("grpc-session")
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut spans = crate::support::otlp::session_spans(&steps, "grpc-conv", 42);
    let n = spans.len();
    // One tool span that cannot be read: no tool name.
    let bad = spans.iter_mut().find(|s| s.name.starts_with("execute_tool")).unwrap();
    bad.name = String::new();
    bad.attributes.retain(|kv| kv.key != "gen_ai.tool.name");
    let req = crate::support::otlp::request(spans, "grpc-test");
    let mut grpc = TraceServiceClient::connect(server.grpc_url.clone())
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let resp = grpc.export(req.clone()).await.unwrap().into_inner();
    let p = resp.partial_success.expect("one span rejected");
    assert_eq!(p.rejected_spans, 1);
    assert!(p.error_message.contains("gen_ai.tool.name"), "{}", p.error_message);
    // The retry stores nothing new.
    grpc.export(req).await.unwrap();
    let c = client();
    let replay = wait_for_steps(&c, &server.url, "grpc-conv", n - 1).await;
    let steps = replay["steps"].as_array().unwrap();
    // 40 model calls, 39 tool calls (one rejected), the user turn, the outcome.
    assert_eq!(steps.iter().filter(|s| s["kind"] == "llm").count(), 40);
    assert_eq!(steps.iter().filter(|s| s["kind"] == "tool").count(), 39);
    assert_eq!(steps.iter().filter(|s| s["kind"] == "user").count(), 1);
    assert_eq!(steps.last().unwrap()["kind"], "end");
    let metrics = c
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("agentdrift_ingest_duplicate_steps_total"), "{metrics}");
    let dup: f64 = metrics
        .lines()
        .find(|l| l.starts_with("agentdrift_ingest_duplicate_steps_total"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap();
    assert_eq!(dup as usize, n - 1, "every span of the retry was a duplicate");
    // Logs: a request with no GenAI event is accepted and counted as ignored.
    let mut logs = LogsServiceClient::connect(server.grpc_url.clone()).await.unwrap();
    let r = logs
        .export(ExportLogsServiceRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(r.partial_success.is_none());
    server.terminate();
}
