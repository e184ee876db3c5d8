//! Issue 14, item 1, as a measurement: honest clients' acknowledgement
//! latency without and with an attack of 2,000 idle connections plus 50
//! slowloris connections (one header byte every 5 s), the server's open-file
//! limit at 1024 (`prlimit`, as on a default Linux box). The attackers
//! reconnect as soon as they are cut, so the pressure lasts the whole run.
//! Reports p50/p99 ack latency of small honest batches and how many honest
//! requests failed; the target is a p99 under attack within 2× of the
//! unattacked one and no failure.
//!
//! Run: `cargo bench --bench attack` (optionally `-- SECONDS`, default 20 per
//! phase; `-- 20 fresh` for honest clients opening a connection per request).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Served {
    child: std::process::Child,
    url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(bin: &str, baseline: &str, dir: &std::path::Path) -> Served {
    // The open-file limit of the issue's report, for the server alone.
    let mut child = Command::new("prlimit")
        .args([
            "--nofile=1024:1024",
            "--",
            bin,
            "serve",
            "--baseline",
            baseline,
            "--data-dir",
        ])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--otlp-grpc-listen", "off"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .expect("prlimit (util-linux) and the agentdrift binary");
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        if let Some(a) = out.next().unwrap().unwrap().strip_prefix("listening on ") {
            break a.to_string();
        }
    };
    std::thread::spawn(move || for _ in out {});
    Served { child, url }
}

/// Keeps `n` connections open that never send a byte (reopened when cut).
fn idle_attacker(addr: String, n: usize, stop: Arc<AtomicBool>, opened: Arc<AtomicU64>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut conns: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
        while !stop.load(Ordering::SeqCst) {
            for c in conns.iter_mut() {
                let dead = match c {
                    None => true,
                    Some(s) => {
                        s.set_nonblocking(true).ok();
                        let mut b = [0u8; 64];
                        matches!(std::io::Read::read(s, &mut b), Ok(0))
                            || matches!(std::io::Read::read(s, &mut b), Err(e) if e.kind() != std::io::ErrorKind::WouldBlock)
                    }
                };
                if dead && let Ok(s) = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(200)) {
                    opened.fetch_add(1, Ordering::Relaxed);
                    *c = Some(s);
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    })
}

/// Keeps `n` slowloris connections: a request line, then one header byte every 5 s.
fn slowloris(addr: String, n: usize, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut conns: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
        while !stop.load(Ordering::SeqCst) {
            for c in conns.iter_mut() {
                let ok = c.as_mut().is_some_and(|s| s.write_all(b"X").is_ok());
                if !ok && let Ok(mut s) = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(200))
                {
                    let _ = s.write_all(b"POST /v1/steps HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
                    *c = Some(s);
                }
            }
            for _ in 0..50 {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    })
}

/// Honest clients for `secs`: each sends 10-step batches back to back, on a
/// kept-alive connection as exporters do, or with `fresh` on a new
/// connection per request (the worst case under a connection cap).
async fn honest(url: &str, secs: u64, clients: usize, fresh: bool) -> (Vec<f64>, u64) {
    let failures = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for k in 0..clients {
        let url = url.to_string();
        let failures = failures.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(if fresh { 0 } else { 1 })
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            let mut lat = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let sid = format!("honest-{k}-{n}");
                let body: Vec<String> = (0..10)
                    .map(|s| {
                        format!(
                            r#"{{"session_id":"{sid}","seq":{s},"ts":{},"kind":"llm","agent":"taubench-airline/gpt-4o","task_type":"airline","text":"ok"}}"#,
                            1_767_225_600_000i64 + s
                        )
                    })
                    .collect();
                let t = Instant::now();
                let r = client
                    .post(format!("{url}/v1/steps"))
                    .header("content-type", "application/x-ndjson")
                    .body(body.join("\n"))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => lat.push(t.elapsed().as_secs_f64() * 1000.0),
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_by(f64::total_cmp);
    (all, failures.load(Ordering::Relaxed))
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let secs = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<u64>().ok())
        .unwrap_or(20);
    let fresh = std::env::args().any(|a| a == "fresh");
    let bin = env!("CARGO_BIN_EXE_agentdrift");
    let baseline = concat!(env!("CARGO_MANIFEST_DIR"), "/baselines/taubench-gpt-4o-airline.adb");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut report = serde_json::Map::new();
    for attacked in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let srv = serve(bin, baseline, dir.path());
        let addr = srv.url.trim_start_matches("http://").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicU64::new(0));
        let mut attackers = Vec::new();
        if attacked {
            attackers.push(idle_attacker(addr.clone(), 2000, stop.clone(), opened.clone()));
            attackers.push(slowloris(addr.clone(), 50, stop.clone()));
            std::thread::sleep(Duration::from_secs(3));
        }
        let (lat, failures) = rt.block_on(honest(&srv.url, secs, 4, fresh));
        stop.store(true, Ordering::SeqCst);
        for a in attackers {
            let _ = a.join();
        }
        report.insert(
            if attacked { "attacked" } else { "unattacked" }.into(),
            serde_json::json!({
                "requests": lat.len(),
                "failures": failures,
                "p50_ms": (pct(&lat, 0.5) * 100.0).round() / 100.0,
                "p99_ms": (pct(&lat, 0.99) * 100.0).round() / 100.0,
                "attacker_connections_opened": opened.load(Ordering::Relaxed),
            }),
        );
    }
    let p99 = |k: &str| report[k]["p99_ms"].as_f64().unwrap_or(f64::NAN);
    let ratio = p99("attacked") / p99("unattacked");
    report.insert("p99_ratio".into(), serde_json::json!((ratio * 100.0).round() / 100.0));
    println!("{}", serde_json::Value::Object(report));
}
