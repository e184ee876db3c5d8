//! Issue 14, item 4, as a measurement: resident memory per open session.
//! Opens N sessions (one step each, never ended) on a fresh `agentdrift
//! serve`, then lets snapshots run; reports RSS before and after, bytes per
//! open session, the peak RSS while snapshots run, and the snapshot's size.
//! The target is ≤ 4 KiB per open session and 10⁶ open sessions under 4 GiB
//! with snapshots running.
//!
//! With the default `max_open_sessions` (250,000) the longest-idle sessions
//! wait in the store; `-- SESSIONS MAX_OPEN` sets the cap (`-- 1000000
//! 1000000` keeps every session in memory, as before the cap existed).
//!
//! Run: `cargo bench --bench memory` (optionally `-- SESSIONS [MAX_OPEN]`, default 1,000,000).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let nums: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let n = nums.first().copied().unwrap_or(1_000_000);
    let max_open = nums.get(1).copied();
    let bin = env!("CARGO_BIN_EXE_agentdrift");
    let baseline = concat!(env!("CARGO_MANIFEST_DIR"), "/baselines/taubench-gpt-4o-airline.adb");
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin);
    if let Some(m) = max_open {
        cmd.env("AGENTDRIFT_MAX_OPEN_SESSIONS", m.to_string());
    }
    let mut child = cmd
        .args(["serve", "--baseline", baseline, "--data-dir"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--otlp-grpc-listen", "off"])
        .env("RUST_LOG", "error")
        .env("AGENTDRIFT_SNAPSHOT_SECS", "5")
        .env("AGENTDRIFT_IDLE_TIMEOUT_SECS", "86400")
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
    std::thread::sleep(Duration::from_secs(1));
    let rss0 = rss_kib(pid);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t0 = Instant::now();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (client, url, next) = (client.clone(), url.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let start = next.fetch_add(1000, std::sync::atomic::Ordering::SeqCst);
                    if start >= n {
                        break;
                    }
                    let body: Vec<String> = (start..(start + 1000).min(n))
                        .map(|k| {
                            format!(
                                r#"{{"session_id":"open-{k:08}","seq":0,"ts":{},"kind":"llm","agent":"taubench-airline/gpt-4o","task_type":"airline","text":"Let me check that for you.","input_tokens":812,"output_tokens":41,"model":"gpt-4o"}}"#,
                                1_767_225_600_000i64 + k as i64
                            )
                        })
                        .collect();
                    let r = client
                        .post(format!("{url}/v1/steps"))
                        .header("content-type", "application/x-ndjson")
                        .body(body.join("\n"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // Until the scorer holds every session.
        loop {
            let m = client.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
            let open = m
                .lines()
                .find_map(|l| l.strip_prefix("agentdrift_sessions_open "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
            if open as usize >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let ingest_secs = t0.elapsed().as_secs_f64();
    let rss1 = rss_kib(pid);
    // Let at least two snapshots run, sampling the peak.
    let mut peak = rss1;
    let t1 = Instant::now();
    while t1.elapsed() < Duration::from_secs(15) {
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    let rss2 = rss_kib(pid);
    let saved = rt.block_on(async {
        let m = reqwest::get(format!("{url}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        m.lines()
            .find_map(|l| l.strip_prefix("agentdrift_sessions_saved "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    });
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let _ = child.wait();
    let db = rusqlite::Connection::open(dir.path().join("agentdrift.sqlite3")).unwrap();
    let snapshot_bytes: i64 = db
        .query_row("SELECT COALESCE(LENGTH(state), 0) FROM snapshot", [], |r| r.get(0))
        .unwrap_or(0);
    let (rows, row_bytes): (i64, i64) = db
        .query_row(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(state)), 0) FROM session_states",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap_or((0, 0));
    let per = (rss2.max(rss1) - rss0) as f64 * 1024.0 / n as f64;
    println!(
        "{}",
        serde_json::json!({
            "sessions": n,
            "ingest_secs": (ingest_secs * 10.0).round() / 10.0,
            "rss_start_mib": rss0 / 1024,
            "rss_open_mib": rss1 / 1024,
            "rss_after_snapshots_mib": rss2 / 1024,
            "rss_peak_mib": peak / 1024,
            "bytes_per_open_session": per.round(),
            "max_open_sessions": max_open.map_or("default (250000)".to_string(), |m| m.to_string()),
            "saved_sessions": saved,
            "snapshot_mib": (snapshot_bytes as f64 / 1048576.0 * 10.0).round() / 10.0,
            "session_state_rows": rows,
            "session_state_rows_mib": (row_bytes as f64 / 1048576.0 * 10.0).round() / 10.0,
        })
    );
}
