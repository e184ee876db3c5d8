//! Load benchmark of `agentdrift serve` over loopback: NDJSON batches from
//! several connections, every request acknowledged only after its commit
//! (durable). Phase 1 sends as fast as the server acknowledges; phase 2
//! sends at half that rate. Reports steps/s, p50/p99 acknowledgement
//! latency, and the server's resident memory as sessions accumulate.
//!
//! Run: `cargo bench --bench load` (optionally `-- STEPS CONNECTIONS BATCH
//! [PHASE2_STEPS_PER_S]`, default `600000 8 100`: STEPS per phase; phase 2
//! runs at half the measured rate unless given).
//! Sessions are resampled from ../shared/data with fresh ids.

use agentdrift::model::group_sessions;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Sends `batches` over `conns` connections; `gap` paces each connection.
async fn run_phase(
    url: &str,
    batches: Arc<Vec<String>>,
    conns: usize,
    gap: Option<Duration>,
) -> (f64, Vec<f64>, usize) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(conns)
        .build()
        .unwrap();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (client, batches, next, url) = (client.clone(), batches.clone(), next.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut steps = 0usize;
            let mut tick = tokio::time::Instant::now();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(body) = batches.get(i) else { break };
                if let Some(g) = gap {
                    tokio::time::sleep_until(tick).await;
                    tick += g;
                }
                let s = Instant::now();
                let r = client
                    .post(format!("{url}/v1/steps"))
                    .header("content-type", "application/x-ndjson")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("request");
                assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
                let _ = r.bytes().await;
                lat.push(s.elapsed().as_secs_f64() * 1000.0);
                steps += body.lines().count();
            }
            (lat, steps)
        }));
    }
    let mut lat = Vec::new();
    let mut steps = 0;
    for t in tasks {
        let (l, s) = t.await.unwrap();
        lat.extend(l);
        steps += s;
    }
    (t0.elapsed().as_secs_f64(), lat, steps)
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let target = args.first().copied().unwrap_or(600_000);
    let conns = args.get(1).copied().unwrap_or(8);
    let batch = args.get(2).copied().unwrap_or(100);
    let shared =
        std::env::var("AGENTDRIFT_SHARED").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../shared").into());
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_agentdrift");
    let baseline = dir.path().join("b.adb");
    let st = Command::new(bin)
        .args([
            "train",
            "--input",
            &format!("{shared}/data"),
            "--out",
            baseline.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());

    // Traffic: whole sessions resampled with fresh ids, cut into batches.
    let bytes = std::fs::read_to_string(format!("{shared}/data/taubench/gpt-4o_airline.jsonl")).unwrap();
    let mut all = Vec::new();
    for f in std::fs::read_dir(format!("{shared}/data/tau2bench")).unwrap() {
        all.extend(agentdrift::ingest::native::read_ndjson(&std::fs::read(f.unwrap().path()).unwrap()).steps);
    }
    all.extend(agentdrift::ingest::native::read_ndjson(bytes.as_bytes()).steps);
    let sessions = group_sessions(all).sessions;
    let mut rng = StdRng::seed_from_u64(9);
    let mut lines: Vec<String> = Vec::new();
    let mut n = 0;
    while lines.len() < 2 * target {
        n += 1;
        let s = &sessions[rng.random_range(0..sessions.len())];
        for step in &s.steps {
            let mut step = step.clone();
            step.session_id = format!("load-{n}");
            lines.push(serde_json::to_string(&step).unwrap());
        }
    }
    let batches: Vec<String> = lines.chunks(batch).map(|c| c.join("\n")).collect();
    let half = batches.len() / 2;
    let (p1, p2) = (Arc::new(batches[..half].to_vec()), Arc::new(batches[half..].to_vec()));

    let mut child = Command::new(bin)
        .args([
            "serve",
            "--baseline",
            baseline.to_str().unwrap(),
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--otlp-grpc-listen",
            "off",
        ])
        .env("RUST_LOG", "warn")
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
    let idle_rss = rss_kib(pid, "VmRSS:");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (secs1, mut lat1, steps1) = rt.block_on(run_phase(&url, p1, conns, None));
    let rate1 = steps1 as f64 / secs1;
    let rss_after_1 = rss_kib(pid, "VmRSS:");
    // Half the measured rate (or the rate given as the fourth argument):
    // each connection paced at rate/conns steps per second.
    let paced = args.get(3).map_or(rate1 / 2.0, |&r| r as f64);
    let per_conn_batches_per_s = paced / conns as f64 / batch as f64;
    let gap = Duration::from_secs_f64(1.0 / per_conn_batches_per_s);
    let (secs2, mut lat2, steps2) = rt.block_on(run_phase(&url, p2, conns, Some(gap)));
    let rss_after_2 = rss_kib(pid, "VmRSS:");
    let peak = rss_kib(pid, "VmHWM:");
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let _ = child.wait();
    println!(
        "{{\"steps_phase1\": {steps1}, \"connections\": {conns}, \"batch\": {batch}, \"steps_per_s\": {rate1:.0}, \"p50_ms\": {:.2}, \"p99_ms\": {:.2}, \
         \"half_rate_steps_per_s\": {:.0}, \"half_rate_p50_ms\": {:.2}, \"half_rate_p99_ms\": {:.2}, \
         \"rss_idle_mib\": {:.1}, \"rss_after_phase1_mib\": {:.1}, \"rss_after_phase2_mib\": {:.1}, \"peak_rss_mib\": {:.1}, \"sessions\": {n}}}",
        percentile(&mut lat1, 0.5),
        percentile(&mut lat1, 0.99),
        steps2 as f64 / secs2,
        percentile(&mut lat2, 0.5),
        percentile(&mut lat2, 0.99),
        idle_rss as f64 / 1024.0,
        rss_after_1 as f64 / 1024.0,
        rss_after_2 as f64 / 1024.0,
        peak as f64 / 1024.0,
    );
}
