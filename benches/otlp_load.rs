//! OTLP against native ingest, side by side on the same agent runs:
//! pre-encoded OTLP/HTTP protobuf requests (7-span agent traces carrying
//! both GenAI and OpenInference attributes, 511 spans per request) and the
//! same runs as native NDJSON steps, each sent over several connections to
//! a fresh `agentdrift serve`, every request acknowledged only once durable.
//! Reports items/s durable, the time until every session is queryable, the
//! server's CPU time per item (user + system, from /proc) and the events
//! raised (the baseline is trained on runs of the same kind, so few).
//!
//! Run: `cargo bench --bench otlp_load` (optionally `-- TRACES CONNECTIONS`,
//! default `20000 8`: 140,000 spans).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SPANS_PER_TRACE: usize = 7;
const TRACES_PER_REQUEST: usize = 73; // 511 spans

fn kv(k: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..KeyValue::default()
    }
}

fn s(k: &str, v: &str) -> KeyValue {
    kv(k, any_value::Value::StringValue(v.into()))
}

fn i(k: &str, v: i64) -> KeyValue {
    kv(k, any_value::Value::IntValue(v))
}

/// One agent run: an agent span, then model call, tool, model call, tool,
/// model call, tool (the last a lookup that answers), GenAI and OpenInference keys on each.
pub fn trace(n: u64, t0: u64) -> Vec<Span> {
    let mut tid = vec![0u8; 16];
    tid[..8].copy_from_slice(&(n + 1).to_be_bytes());
    tid[15] = 7;
    let sid = |k: u64| ((n << 8) | (k + 1)).to_be_bytes().to_vec();
    let conv = format!("otlp-bench-{n}");
    let ms = 1_000_000u64;
    let mut spans = vec![Span {
        trace_id: tid.clone(),
        span_id: sid(0),
        name: "invoke_agent taubench-airline/gpt-4o".into(),
        start_time_unix_nano: t0,
        end_time_unix_nano: t0 + 6_500 * ms,
        attributes: vec![
            s("gen_ai.operation.name", "invoke_agent"),
            s("gen_ai.agent.name", "taubench-airline/gpt-4o"),
            s("openinference.span.kind", "AGENT"),
            s("agent.name", "taubench-airline/gpt-4o"),
            s("gen_ai.conversation.id", &conv),
            s("session.id", &conv),
            s("agentdrift.task_type", "airline"),
            s(
                "agentdrift.outcome",
                if n.is_multiple_of(5) { "failure" } else { "success" },
            ),
        ],
        ..Span::default()
    }];
    let tools = ["get_reservation_details", "search_direct_flight", "get_user_details"];
    for k in 0..3u64 {
        let start = t0 + (100 + 2_000 * k) * ms;
        let text = format!("Let me check that for you (step {k} of run {n:07}). One moment please.");
        spans.push(Span {
            trace_id: tid.clone(),
            span_id: sid(1 + 2 * k),
            parent_span_id: sid(0),
            name: "chat gpt-4o".into(),
            start_time_unix_nano: start,
            end_time_unix_nano: start + 900 * ms,
            attributes: vec![
                s("gen_ai.operation.name", "chat"),
                s("gen_ai.provider.name", "openai"),
                s("gen_ai.request.model", "gpt-4o"),
                s("gen_ai.response.model", "gpt-4o-2024-08-06"),
                i("gen_ai.usage.input_tokens", 1200 + 150 * k as i64),
                i("gen_ai.usage.output_tokens", 40),
                s(
                    "gen_ai.output.messages",
                    &format!(
                        r#"[{{"role":"assistant","parts":[{{"type":"text","content":"{text}"}},{{"type":"tool_call","id":"c{k}","name":"{}","arguments":{{"id":"R{n}"}}}}],"finish_reason":"tool_calls"}}]"#,
                        tools[k as usize]
                    ),
                ),
                s("openinference.span.kind", "LLM"),
                s("llm.model_name", "gpt-4o-2024-08-06"),
                i("llm.token_count.prompt", 1200 + 150 * k as i64),
                i("llm.token_count.completion", 40),
                s("llm.output_messages.0.message.role", "assistant"),
                s("llm.output_messages.0.message.content", &text),
            ],
            ..Span::default()
        });
        let tstart = start + 1_000 * ms;
        spans.push(Span {
            trace_id: tid.clone(),
            span_id: sid(2 + 2 * k),
            parent_span_id: sid(0),
            name: format!("execute_tool {}", tools[k as usize]),
            start_time_unix_nano: tstart,
            end_time_unix_nano: tstart + 300 * ms,
            attributes: vec![
                s("gen_ai.operation.name", "execute_tool"),
                s("gen_ai.tool.name", tools[k as usize]),
                s("gen_ai.tool.call.id", &format!("c{k}")),
                s("gen_ai.tool.call.arguments", &format!(r#"{{"id":"R{n}"}}"#)),
                s(
                    "gen_ai.tool.call.result",
                    &format!(r#"{{"id":"R{n}","status":"confirmed","amount":{}}}"#, 100 + n % 400),
                ),
                s("openinference.span.kind", "TOOL"),
                s("tool.name", tools[k as usize]),
            ],
            ..Span::default()
        });
    }
    debug_assert_eq!(spans.len(), SPANS_PER_TRACE);
    spans
}

/// An export request holding `spans`.
pub fn request_of(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![s("service.name", "bench")],
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

/// The same run as native steps (one line each): model call, tool, … and the outcome.
fn native(n: u64, t0_ms: i64) -> Vec<String> {
    let conv = format!("native-bench-{n}");
    let tools = ["get_reservation_details", "search_direct_flight", "get_user_details"];
    let mut out = Vec::new();
    let mut seq = 0;
    for k in 0..3i64 {
        let text = format!("Let me check that for you (step {k} of run {n:07}). One moment please.");
        out.push(serde_json::json!({"session_id": conv, "seq": seq, "ts": t0_ms + 100 + 2000 * k, "kind": "llm",
            "agent": "taubench-airline/gpt-4o", "task_type": "airline", "model": "gpt-4o", "input_tokens": 1200 + 150 * k,
            "output_tokens": 40, "text": text, "tool_calls_requested": 1, "latency_ms": 900.0}).to_string());
        seq += 1;
        out.push(serde_json::json!({"session_id": conv, "seq": seq, "ts": t0_ms + 1100 + 2000 * k, "kind": "tool",
            "agent": "taubench-airline/gpt-4o", "task_type": "airline", "tool": tools[k as usize], "args": {"id": format!("R{n}")},
            "status": "ok", "result": format!(r#"{{"id":"R{n}","status":"confirmed","amount":{}}}"#, 100 + n % 400), "latency_ms": 300.0}).to_string());
        seq += 1;
    }
    out.push(serde_json::json!({"session_id": conv, "seq": seq, "ts": t0_ms + 6500, "kind": "end",
        "agent": "taubench-airline/gpt-4o", "task_type": "airline", "outcome": if n.is_multiple_of(5) { "failure" } else { "success" }}).to_string());
    out
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name: utime is 14th, stime 15th overall.
    let rest = stat.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
}

struct Served {
    child: std::process::Child,
    url: String,
    pid: u32,
}

fn serve(bin: &str, baseline: &str, dir: &std::path::Path) -> Served {
    let mut child = Command::new(bin)
        .args(["serve", "--baseline", baseline, "--data-dir"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--otlp-grpc-listen", "off"])
        .env("RUST_LOG", "warn")
        .env("AGENTDRIFT_TRACE_SETTLE_SECS", "0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        if let Some(a) = out.next().unwrap().unwrap().strip_prefix("listening on ") {
            break a.to_string();
        }
    };
    std::thread::spawn(move || for _ in out {});
    Served { child, url, pid }
}

async fn send(url: &str, path: &str, ctype: &str, bodies: Arc<Vec<Vec<u8>>>, conns: usize) -> f64 {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(conns)
        .build()
        .unwrap();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (client, bodies, next) = (client.clone(), bodies.clone(), next.clone());
        let url = format!("{url}{path}");
        let ctype = ctype.to_string();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(b) = bodies.get(i) else { break };
                let r = client
                    .post(&url)
                    .header("content-type", &ctype)
                    .body(b.clone())
                    .send()
                    .await
                    .expect("request");
                assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
                let _ = r.bytes().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    t0.elapsed().as_secs_f64()
}

/// Seconds until the service reports `sessions` closed (every session queryable and scored).
async fn events_stored(url: &str) -> u64 {
    let client = reqwest::Client::new();
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("agentdrift_drift_events_total{"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn until_closed(url: &str, sessions: u64, t0: Instant) -> f64 {
    let client = reqwest::Client::new();
    loop {
        let text = client
            .get(format!("{url}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let closed: f64 = text
            .lines()
            .filter(|l| l.starts_with("agentdrift_sessions_closed_total{"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum();
        if closed as u64 >= sessions {
            return t0.elapsed().as_secs_f64();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tokio_sleep_ms(rt: &tokio::runtime::Runtime, ms: u64) {
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(ms)).await });
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let traces = args.first().copied().unwrap_or(20_000);
    let conns = args.get(1).copied().unwrap_or(8);
    let bin = env!("CARGO_BIN_EXE_agentdrift");
    // A baseline of the same kind of runs, so the traffic is in control (as
    // in production, events are rare and do not dominate the cost).
    let work = tempfile::tempdir().unwrap();
    let reference = work.path().join("reference.jsonl");
    let lines: Vec<String> = (1_000_000..1_002_000u64)
        .flat_map(|n| native(n, 1_767_225_600_000 + n as i64))
        .collect();
    std::fs::write(&reference, lines.join("\n")).unwrap();
    let baseline_path = work.path().join("bench.adb");
    let st = Command::new(bin)
        .args(["train", "--input"])
        .arg(&reference)
        .arg("--out")
        .arg(&baseline_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "training the bench baseline");
    let baseline = baseline_path.to_str().unwrap();
    let t0 = 1_767_225_600_000_000_000u64;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // OTLP: pre-encoded requests of 73 traces (511 spans).
    let mut otlp = Vec::new();
    for chunk in (0..traces as u64).collect::<Vec<_>>().chunks(TRACES_PER_REQUEST) {
        let spans: Vec<Span> = chunk.iter().flat_map(|&n| trace(n, t0 + n * 7_000_000_000)).collect();
        otlp.push(request_of(spans).encode_to_vec());
    }
    let spans = traces * SPANS_PER_TRACE;
    // Native: the same runs, as many steps per request as spans per OTLP request.
    let lines: Vec<String> = (0..traces as u64)
        .flat_map(|n| native(n, (t0 / 1_000_000) as i64 + n as i64 * 7_000))
        .collect();
    let per = SPANS_PER_TRACE * TRACES_PER_REQUEST;
    let nd: Vec<Vec<u8>> = lines.chunks(per).map(|c| c.join("\n").into_bytes()).collect();

    let mut report = serde_json::Map::new();
    for (name, path, ctype, bodies, items) in [
        ("native", "/v1/steps", "application/x-ndjson", nd, lines.len()),
        ("otlp", "/v1/traces", "application/x-protobuf", otlp, spans),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut srv = serve(bin, baseline, dir.path());
        let cpu0 = cpu_ticks(srv.pid);
        let t = Instant::now();
        let secs = rt.block_on(send(&srv.url, path, ctype, Arc::new(bodies), conns));
        let cpu_acked = cpu_ticks(srv.pid);
        let queryable = rt.block_on(until_closed(&srv.url, traces as u64, t));
        let cpu_all = cpu_ticks(srv.pid);
        tokio_sleep_ms(&rt, 500);
        let events = rt.block_on(events_stored(&srv.url));
        let tick = 100.0; // USER_HZ
        let _ = Command::new("kill").args(["-TERM", &srv.pid.to_string()]).status();
        let _ = srv.child.wait();
        report.insert(
            name.into(),
            serde_json::json!({
                "items": items,
                "durable_per_s": (items as f64 / secs).round(),
                "acked_secs": (secs * 1000.0).round() / 1000.0,
                "queryable_secs": (queryable * 1000.0).round() / 1000.0,
                "server_cpu_us_per_item_to_ack": ((cpu_acked - cpu0) as f64 / tick * 1e6 / items as f64 * 10.0).round() / 10.0,
                "server_cpu_us_per_item_total": ((cpu_all - cpu0) as f64 / tick * 1e6 / items as f64 * 10.0).round() / 10.0,
                "events": events,
            }),
        );
        let _ = &mut srv.url;
    }
    let n = report["native"]["durable_per_s"].as_f64().unwrap();
    let o = report["otlp"]["durable_per_s"].as_f64().unwrap();
    report.insert(
        "native_over_otlp_per_item".into(),
        serde_json::json!((n / o * 100.0).round() / 100.0),
    );
    println!("{}", serde_json::Value::Object(report));
}
