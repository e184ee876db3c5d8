//! `agentdrift demo`: the whole product in one command, with nothing to set
//! up. Trains a baseline on half of the sessions shipped in the binary,
//! starts the service, streams the other half over HTTP (in-control, then
//! with injected drifts) and prints the drift events it raised.

use super::http::Client;
use crate::baseline::{TrainConfig, save};
use crate::config::Config;
use crate::detect::DriftEvent;
use crate::inject::{DriftKind, inject, split_sessions};
use crate::model::{PriceTable, Session, Step, group_sessions};
use crate::store::sqlite::SqliteStore;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The shipped sessions (see fixtures/sessions/README.md).
const SESSIONS: &[u8] = include_bytes!("../../fixtures/sessions/taubench-gpt-4o-airline.jsonl");

/// The drifts the demo streams, in order, with their magnitudes.
const DRIFTS: [(DriftKind, f64); 3] = [
    (DriftKind::Loop, 20.0),
    (DriftKind::Tone, 1.0),
    (DriftKind::Errors, 0.3),
];

/// Options of `agentdrift demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Address of the service (a free port is picked if this one is taken).
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub listen: String,
    /// Where the baseline and the store go (default: a fresh temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Stop the service after the run instead of waiting for Ctrl-C.
    #[arg(long)]
    pub exit: bool,
}

fn flatten(sessions: &[Session]) -> Vec<Step> {
    sessions.iter().flat_map(|s| s.steps.iter().cloned()).collect()
}

/// Posts each session as one NDJSON request; returns steps sent.
async fn stream(client: &Client, url: &str, steps: &[Step]) -> anyhow::Result<u64> {
    let mut by_session: Vec<(String, String)> = Vec::new();
    for s in steps {
        let line = serde_json::to_string(s)? + "\n";
        match by_session.last_mut() {
            Some((id, body)) if *id == s.session_id => body.push_str(&line),
            _ => by_session.push((s.session_id.clone(), line)),
        }
    }
    for (_, body) in by_session {
        let r = client
            .post(&format!("{url}/v1/steps"), "application/x-ndjson", body)
            .await?;
        anyhow::ensure!(r.status == 200, "POST /v1/steps: {}", r.text());
    }
    Ok(steps.len() as u64)
}

/// Waits until the scorer has applied `n` log entries (read from /metrics).
async fn wait_applied(client: &Client, url: &str, n: u64) -> anyhow::Result<()> {
    let t0 = Instant::now();
    loop {
        let text = client.get(&format!("{url}/metrics")).await?.text();
        let applied: u64 = text
            .lines()
            .find(|l| l.starts_with("agentdrift_engine_log_entries_total"))
            .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        if applied >= n {
            // Events are persisted right after; give the writer a moment.
            tokio::time::sleep(Duration::from_millis(300)).await;
            return Ok(());
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(60),
            "the scorer did not catch up within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every stored event not in `seen` (which it then records).
async fn new_events(
    client: &Client,
    url: &str,
    seen: &mut std::collections::HashSet<String>,
) -> anyhow::Result<Vec<DriftEvent>> {
    let mut out = Vec::new();
    let mut cursor: Option<i64> = None;
    loop {
        let q = cursor.map_or(String::new(), |c| format!("&cursor={c}"));
        let page: crate::store::EventPage = client
            .get(&format!("{url}/v1/events?limit=500{q}"))
            .await?
            .json("GET /v1/events")?;
        out.extend(page.events.into_iter().filter(|e| seen.insert(e.id.clone())));
        match page.next_cursor {
            Some(c) if Some(c) != cursor => cursor = Some(c),
            _ => return Ok(out),
        }
    }
}

/// The drift phase that caused an event, from the sessions it names (ids
/// ending `~kind`, as `inject` names them): its own session, except for a
/// window test (Markov, tool mix), which fires on the session that completes
/// its window and names the sessions that moved it as exemplars; the phase
/// most of those belong to (ties: the earlier phase, which was there first).
fn cause(e: &DriftEvent, kinds: &[String]) -> Option<String> {
    let phase = |id: &str| kinds.iter().find(|k| id.ends_with(&format!("~{k}"))).cloned();
    if !matches!(e.kind.as_str(), "markov" | "tool_preference") || e.exemplars.is_empty() {
        return phase(&e.session_id);
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for id in &e.exemplars {
        if let Some(k) = phase(id) {
            *counts.entry(k).or_default() += 1;
        }
    }
    kinds
        .iter()
        .filter_map(|k| counts.get(k).map(|n| (*n, k)))
        .fold(None, |best: Option<(usize, &String)>, (n, k)| match best {
            Some((bn, _)) if bn >= n => best,
            _ => Some((n, k)),
        })
        .map(|(_, k)| k.clone())
        .or_else(|| phase(&e.session_id))
}

fn print_events(events: &[DriftEvent]) {
    let mut by: BTreeMap<&str, Vec<&DriftEvent>> = BTreeMap::new();
    for e in events {
        by.entry(e.detector.as_str()).or_default().push(e);
    }
    if events.is_empty() {
        println!("    no drift events");
    }
    for (d, es) in by {
        let e = es[0];
        println!("    {:>3} × {d}", es.len());
        println!("          e.g. {} (session {})", e.message, e.session_id);
    }
}

/// Runs `demo`.
pub fn run(a: DemoArgs) -> anyhow::Result<ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("agentdrift-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let read = crate::ingest::native::read_ndjson(SESSIONS);
    anyhow::ensure!(
        read.errors.is_empty(),
        "the shipped sessions do not read: {:?}",
        read.errors.first()
    );
    // The same split as `agentdrift split --holdout-fraction 0.5 --seed 1`.
    let (reference, holdout) = split_sessions(group_sessions(read.steps).sessions, 0.5, 1);
    println!(
        "agentdrift demo: {} recorded τ-bench sessions (gpt-4o, airline): {} to learn from, {} to stream",
        reference.len() + holdout.len(),
        reference.len(),
        holdout.len()
    );

    let prices = PriceTable::default();
    let t0 = Instant::now();
    let baseline = crate::baseline::train::train(
        flatten(&reference),
        Vec::new(),
        &TrainConfig::default(),
        &crate::features::Rules::builtin(&prices),
    )?;
    let baseline_path = dir.join("baseline.adb");
    save(&baseline, &baseline_path)?;
    println!(
        "1. trained a baseline in {:.1} s → {} (alarm budget: 1 false event per {} sessions per segment)",
        t0.elapsed().as_secs_f64(),
        baseline_path.display(),
        baseline.meta.config.arl0
    );

    let data_dir = dir.join("data");
    let mut cfg = Config::default();
    cfg.serve.data_dir = data_dir.display().to_string();
    cfg.serve.listen = a.listen.clone();
    let storage = crate::store::Storage::single(SqliteStore::open(&data_dir)?);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let (shared, workers, stop_tx) = super::serve::start(storage, Arc::new(baseline), cfg.clone(), prices).await?;
        let listener = match tokio::net::TcpListener::bind(&a.listen).await {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => tokio::net::TcpListener::bind("127.0.0.1:0").await?,
            Err(e) => anyhow::bail!("cannot listen on {}: {e}", a.listen),
        };
        let url = format!("http://{}", listener.local_addr()?);
        println!("2. the service is listening on {url} (store: {})", data_dir.display());
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = super::serve::shutdown_signal()?;
        let server = tokio::spawn(super::serve::serve_on(
            shared,
            workers,
            listener,
            None,
            super::serve::Transport::default(),
            stop_tx,
            async move {
                tokio::select! {
                    _ = signal => {},
                    _ = done_rx => {},
                }
            },
        ));

        let client = Client::default();
        let mut sent = stream(&client, &url, &flatten(&holdout)).await?;
        // Each session adds its steps to the log; closes are applied in line.
        wait_applied(&client, &url, sent).await?;
        let mut seen = std::collections::HashSet::new();
        let events = new_events(&client, &url, &mut seen).await?;
        println!("3. streamed {} in-control sessions ({sent} steps):", holdout.len());
        print_events(&events);
        let mut first_drift_session = None;
        let mut phases = Vec::new();
        let mut raised: Vec<(String, DriftEvent)> = Vec::new();
        for (kind, m) in DRIFTS {
            let drifted = inject(holdout.clone(), kind, m, 7)?;
            let n = stream(&client, &url, &drifted.steps).await?;
            sent += n;
            wait_applied(&client, &url, sent).await?;
            let ev = new_events(&client, &url, &mut seen).await?;
            if first_drift_session.is_none() {
                first_drift_session = ev.first().map(|e| e.session_id.clone());
            }
            raised.extend(ev.into_iter().map(|e| (kind.to_string(), e)));
            phases.push((kind.to_string(), m, drifted.changed_sessions));
        }
        // A window test (Markov, tool mix) fires on the session that completes its window,
        // which may belong to a later phase than the sessions that moved it: each event is
        // listed under the phase that caused it (see `cause`), else the one it was raised in.
        let names: Vec<String> = phases.iter().map(|p| p.0.clone()).collect();
        let attributed: Vec<(String, String, &DriftEvent)> = raised
            .iter()
            .map(|(during, e)| (cause(e, &names).unwrap_or_else(|| during.clone()), during.clone(), e))
            .collect();
        for (kind, m, changed) in &phases {
            println!("4. streamed the same sessions with drift `{kind}` (magnitude {m}, {changed} sessions changed):");
            let mine: Vec<DriftEvent> = attributed
                .iter()
                .filter(|(phase, _, _)| phase == kind)
                .map(|(_, during, e)| {
                    let mut e = (*e).clone();
                    if during != kind {
                        e.message = format!("{} [raised while streaming `{during}`]", e.message);
                    }
                    e
                })
                .collect();
            print_events(&mine);
        }
        println!("\nOpen the console in a browser: {url}/  (segments, control charts, events, session replays)");
        println!("\nRead the reports:");
        println!("  curl -s '{url}/v1/events?limit=20'");
        println!("  curl -sN {url}/v1/events/stream          # live events (SSE)");
        println!("  curl -s {url}/v1/segments");
        if let Some(s) = first_drift_session {
            println!("  curl -s {url}/v1/sessions/{s}");
            println!("  curl -s {url}/v1/sessions/{s}/replay");
        }
        println!("  curl -s {url}/metrics");
        // Dropping the sender would stop the server: keep it until it stops.
        let _keep = if a.exit {
            let _ = done_tx.send(());
            None
        } else {
            println!("\nThe service keeps running; Ctrl-C stops it.");
            Some(done_tx)
        };
        server.await??;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_goes_to_the_phase_that_caused_it() {
        let kinds: Vec<String> = DRIFTS.iter().map(|(k, _)| k.to_string()).collect();
        let mut e: DriftEvent = serde_json::from_value(serde_json::json!({
            "id": "e", "detector": "markov", "kind": "markov",
            "segment": {"agent": "a", "task_type": "t"}, "session_id": "s9~tone", "ts": 0,
            "statistic": 1.0, "limit": 1.0, "moved": [], "exemplars": ["s1~loop", "s2~loop", "s3~tone"],
            "observations": [], "message": "m"
        }))
        .unwrap();
        assert_eq!(
            cause(&e, &kinds).as_deref(),
            Some("loop"),
            "a window closed by a tone session, moved by loops"
        );
        e.exemplars = vec!["s1~loop".into(), "s3~tone".into()];
        assert_eq!(
            cause(&e, &kinds).as_deref(),
            Some("loop"),
            "a tie goes to the earlier phase"
        );
        e.kind = "ewma".into();
        assert_eq!(
            cause(&e, &kinds).as_deref(),
            Some("tone"),
            "a session chart: its own session"
        );
        e.session_id = "plain".into();
        assert_eq!(cause(&e, &kinds), None, "an in-control session");
    }
}
