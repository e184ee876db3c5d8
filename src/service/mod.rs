//! `agentdrift serve`: the long-running scoring service.
//!
//! Threads and data flow (one way):
//!
//! ```text
//! HTTP handlers ──append──▶ writer thread ──(log entries, in commit order)──▶ engine thread
//!      ▲   (ack after commit)   │  SQLite log, events, sessions, snapshots        │ Scorer
//!      └──── reports ◀── store ◀┘◀── persist events / close markers / snapshots ──┘
//! ```
//!
//! The log is the single source of truth: the engine is a pure function of
//! it. Even an idle close is first appended to the log and applied when the
//! engine reads it back, so replaying the log after a crash rebuilds the
//! same state and the same event ids (events are inserted idempotently).

pub mod chart_history;
pub mod clock;
pub mod engine_task;
pub mod messages;
pub mod metrics;
pub mod saved_sessions;
pub mod writer;

use crate::baseline::Baseline;
use crate::config::Config;
use crate::detect::DriftEvent;
use crate::engine::pipeline::{Pipeline, PipelineConfig, PipelineState};
use crate::engine::{Scorer, ScorerState, baseline_id};
use crate::ingest::ReadOptions;
use crate::model::PriceTable;
use crate::store::{LogEntry, Storage};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use tokio::sync::{Semaphore, broadcast};

/// What every HTTP handler can reach.
pub struct Shared {
    /// Durable storage (reads).
    pub storage: Storage,
    /// Appends and persistence.
    pub writer: writer::WriterHandle,
    /// Reports from the scorer.
    pub engine: engine_task::EngineHandle,
    /// Live events (after they are stored).
    pub events: broadcast::Sender<Arc<DriftEvent>>,
    /// Prometheus metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// The baseline.
    pub baseline: Arc<Baseline>,
    /// Prices, for session reports.
    pub prices: PriceTable,
    /// The baseline's error taxonomy, for session reports.
    pub taxonomy: crate::features::Taxonomy,
    /// The baseline's grounding rules, for session reports.
    pub grounding: std::sync::Arc<crate::features::Grounding>,
    /// OTLP reader options.
    pub read_opts: ReadOptions,
    /// Largest request body.
    pub max_body: usize,
    /// How long after a session closed a reported outcome still feeds the charts.
    pub outcome_window_secs: u64,
    /// Accepted tokens (none: no auth).
    pub auth: crate::auth::Auth,
    /// `/metrics` needs no token.
    pub metrics_open: bool,
    /// Bound to loopback: refuse requests whose `Host` is not a loopback name.
    pub loopback_only: bool,
    /// Time allowed for a request body.
    pub body_timeout: std::time::Duration,
    /// In-flight append requests (backpressure).
    pub inflight: Arc<Semaphore>,
    /// True once recovery finished and the engine runs.
    pub ready: AtomicBool,
    /// Becomes true when shutdown starts (live streams end then).
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// The clock receive times and idle closes read.
    pub clock: Arc<dyn clock::Clock>,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The store failed during recovery.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The scorer could not be built from the baseline.
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    /// A token in `[auth]` is malformed.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthConfigError),
    /// `[auth] metrics` holds neither `read` nor `open`.
    #[error("[auth] metrics must be `read` or `open`, got `{0}`")]
    MetricsAccess(String),
    /// An `[[alerts.sink]]` cannot be used.
    #[error(transparent)]
    Alerts(#[from] crate::alerts::AlertError),
}

/// Decodes a snapshot: the current format, or the scorer-only format of
/// version 1 (its span assembly starts empty).
pub fn decode_state(bytes: &[u8]) -> Result<Result<PipelineState, ScorerState>, String> {
    match rmp_serde::from_slice::<PipelineState>(bytes) {
        Ok(s) if s.version == crate::engine::pipeline::STATE_VERSION => Ok(Ok(s)),
        Ok(s) => Err(format!(
            "snapshot format version {} is not this build's ({})",
            s.version,
            crate::engine::pipeline::STATE_VERSION
        )),
        Err(e2) => match rmp_serde::from_slice::<ScorerState>(bytes) {
            Ok(v1) => Ok(Err(v1)),
            Err(_) => Err(format!("cannot decode the scorer snapshot: {e2}")),
        },
    }
}

/// Rebuilds the pipeline from the latest snapshot and the log after it;
/// returns it, the log position it has processed, and the chart points the
/// replay produced (the console's history starts with them).
pub fn recover(
    storage: &Storage,
    baseline: Arc<Baseline>,
    prices: &PriceTable,
    idle_timeout_ms: i64,
    config: PipelineConfig,
    read_opts: &ReadOptions,
    clock: &dyn clock::Clock,
) -> Result<(Pipeline, i64, chart_history::ChartHistory), ServiceError> {
    let new_scorer = || -> Result<Scorer, ServiceError> {
        Ok(Scorer::new(baseline.clone(), prices.clone(), idle_timeout_ms)?
            .with_limits(config.limits)
            .with_session_store(Box::new(saved_sessions::StoreSessions(storage.store.clone()))))
    };
    let mut pipeline = Pipeline::new(new_scorer()?, prices.clone(), config.clone());
    let mut position = 0;
    let snapshot = match storage.store.snapshot() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "the scorer snapshot cannot be read: replaying the whole log instead");
            None
        }
    };
    if let Some(s) = &snapshot {
        storage.check_snapshot(s)?;
    }
    match snapshot {
        Some(s) if s.baseline_id == baseline_id(&baseline) => {
            let restored = decode_state(&s.state).and_then(|state| match state {
                Ok(state) => pipeline.restore(state).map_err(|e| e.to_string()),
                Err(v1) => pipeline.restore_v1(v1).map_err(|e| e.to_string()),
            });
            match restored {
                Ok(()) => {
                    position = s.position;
                    tracing::info!(position, "restored scorer snapshot");
                }
                Err(e) => {
                    // The log is the source of truth: a damaged snapshot costs
                    // time (the whole log replayed), never data.
                    tracing::error!(error = %e, "the scorer snapshot is damaged: replaying the whole log instead");
                    pipeline = Pipeline::new(new_scorer()?, prices.clone(), config.clone());
                }
            }
        }
        Some(s) => {
            // Another baseline scored the history: start the new one at the
            // end of the log instead of re-scoring old traffic with it.
            position = storage
                .log
                .log_after(s.position, usize::MAX)?
                .last()
                .map_or(s.position, LogEntry::id);
            tracing::warn!(
                position,
                "snapshot belongs to another baseline; scoring starts at the end of the log"
            );
        }
        None => {}
    }
    // Open sessions the snapshot did not carry are rows up to its version
    // counter; rows beyond it, or superseded, were written after it (or by
    // another baseline's run): the replay writes its own.
    let refs = storage.store.session_state_refs(pipeline.scorer().row_versions())?;
    pipeline.adopt_saved(refs);
    let dropped = storage
        .store
        .retain_session_states(&pipeline.scorer().referenced_rows())?;
    if dropped > 0 {
        tracing::info!(dropped, "dropped saved session states newer than the snapshot");
    }
    let mut replayed = 0u64;
    let mut history = chart_history::ChartHistory::new(&baseline);
    pipeline.record_chart_points(true);
    loop {
        let entries = storage.log.log_after(position, 10_000)?;
        if entries.is_empty() {
            break;
        }
        let mut batch = crate::store::Derived::default();
        for e in entries {
            position = e.id();
            let mut applied = engine_task::apply(&mut pipeline, e, read_opts);
            history.take_from(&mut applied.out);
            replayed += 1;
            batch.merge(engine_task::persist_of(applied, clock.now_ms()));
        }
        storage.store.store_derived(&batch)?;
    }
    if replayed > 0 {
        tracing::info!(replayed, position, "replayed the log after the snapshot");
    }
    Ok((pipeline, position, history))
}

/// The pipeline settings a service configuration asks for.
pub fn pipeline_config(config: &Config) -> PipelineConfig {
    let s = &config.serve;
    PipelineConfig {
        assemble: crate::ingest::otel::assemble::AssembleConfig {
            settle_ms: (s.trace_settle_secs * 1000) as i64,
            timeout_ms: (s.trace_timeout_secs * 1000) as i64,
            root_status_outcome: s.root_status_outcome,
            ..Default::default()
        },
        outcome_window_ms: (s.outcome_window_secs * 1000) as i64,
        limits: crate::engine::Limits {
            session_buffer_bytes: s.max_buffered_bytes_per_session,
            total_buffer_bytes: s.max_buffered_bytes,
            max_open_sessions: s.max_open_sessions.max(1),
        },
    }
}

/// Starts the writer and engine threads after recovery.
pub fn start(
    storage: Storage,
    baseline: Arc<Baseline>,
    config: &Config,
    prices: PriceTable,
    shutdown: tokio::sync::watch::Receiver<bool>,
    clock: Arc<dyn clock::Clock>,
) -> Result<(Arc<Shared>, Workers), ServiceError> {
    let idle_ms = (config.serve.idle_timeout_secs * 1000) as i64;
    let auth = crate::auth::Auth::new(&config.auth.tokens, &config.auth.env_tokens)?;
    if config.auth.metrics != "open" && config.auth.metrics != "read" {
        return Err(ServiceError::MetricsAccess(config.auth.metrics.clone()));
    }
    let read_opts = {
        let mut o = ReadOptions::default();
        if !config.serve.task_type_attributes.is_empty() {
            o.task_type_attributes = config.serve.task_type_attributes.clone();
        }
        o
    };
    let (pipeline, position, history) = recover(
        &storage,
        baseline.clone(),
        &prices,
        idle_ms,
        pipeline_config(config),
        &read_opts,
        &*clock,
    )?;
    let taxonomy = pipeline.scorer().taxonomy().clone();
    let grounding = pipeline.scorer().grounding().clone();
    let metrics = Arc::new(metrics::Metrics::new());
    let (events_tx, _) = broadcast::channel(4096);
    let (engine_tx, engine_rx) = mpsc::sync_channel::<messages::EngineMsg>(256);
    let (writer, writer_thread) = writer::spawn(storage.clone(), engine_tx.clone(), events_tx.clone(), metrics.clone());
    let engine_thread = engine_task::spawn(
        pipeline,
        position,
        engine_rx,
        writer.clone(),
        metrics.clone(),
        engine_task::EngineSettings {
            snapshot_secs: config.serve.snapshot_secs,
            read_opts: read_opts.clone(),
            clock: clock.clone(),
            history,
        },
    );
    let ticker = engine_task::spawn_ticker(engine_tx.clone());
    let shared = Arc::new(Shared {
        storage,
        writer,
        engine: engine_task::EngineHandle { tx: engine_tx },
        events: events_tx,
        metrics,
        taxonomy,
        grounding,
        baseline,
        prices,
        read_opts,
        max_body: config.serve.max_body_bytes,
        outcome_window_secs: config.serve.outcome_window_secs,
        auth,
        metrics_open: config.auth.metrics == "open",
        loopback_only: {
            let l = &config.serve.listen;
            l.parse::<std::net::SocketAddr>()
                .map_or_else(|_| l.starts_with("localhost:"), |a| a.ip().is_loopback())
        },
        body_timeout: std::time::Duration::from_secs(config.serve.http_body_timeout_secs.max(1)),
        inflight: Arc::new(Semaphore::new(512)),
        ready: AtomicBool::new(true),
        shutdown,
        clock,
    });
    Ok((
        shared,
        Workers {
            writer: Some(writer_thread),
            engine: Some(engine_thread),
            ticker: Some(ticker),
            alerts: None,
        },
    ))
}

/// The background threads, joined at shutdown.
pub struct Workers {
    writer: Option<std::thread::JoinHandle<()>>,
    engine: Option<std::thread::JoinHandle<()>>,
    ticker: Option<engine_task::Ticker>,
    alerts: Option<crate::alerts::Deliveries>,
}

impl Workers {
    /// Starts alert delivery once the service knows the address its links
    /// point to (the port is known only after binding).
    pub fn start_alerts(
        &mut self,
        shared: &Shared,
        sinks: Vec<crate::alerts::Sink>,
        base_url: &str,
    ) -> Result<(), ServiceError> {
        if sinks.is_empty() {
            return Ok(());
        }
        let links = crate::alerts::format::Links {
            base: base_url.trim_end_matches('/').to_string(),
        };
        self.alerts = Some(crate::alerts::Deliveries::start(
            sinks,
            shared.storage.store.clone(),
            links,
            shared.metrics.alerts.clone(),
            {
                let clock = shared.clock.clone();
                Arc::new(move || clock.now_ms())
            },
        )?);
        Ok(())
    }

    /// Flushes everything: the engine drains the log it has been sent and
    /// snapshots its state; then the writer drains and stops. An error when
    /// the final snapshot could not be saved (the next start replays more
    /// of the log, but the operator should know).
    pub fn shutdown(mut self, shared: &Shared) -> Result<(), String> {
        shared.ready.store(false, Ordering::SeqCst);
        // Deliveries first: what they have not sent stays after their cursors for the next start.
        if let Some(a) = self.alerts.take() {
            a.stop();
        }
        if let Some(t) = self.ticker.take() {
            t.stop();
        }
        shared.engine.flush_blocking();
        shared.writer.shutdown_blocking();
        if let Some(h) = self.engine.take() {
            drop(shared.engine.tx.clone());
            let _ = h; // the engine thread ends when every sender is gone
        }
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
        match shared.writer.snapshot_error() {
            Some(e) => Err(format!("the final snapshot could not be saved: {e}")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::clock::{Clock, ManualClock};
    use super::*;
    use crate::model::Step;
    use crate::store::{NewRecord, NewStep};

    /// Idle closes follow the service's clock: a session closes once the
    /// clock has moved past the idle timeout, and not before, without the
    /// test sleeping through the timeout.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_sessions_close_when_the_injected_clock_passes_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::single(crate::store::sqlite::SqliteStore::open(dir.path()).unwrap());
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let baseline = Arc::new(crate::baseline::load(&root.join("baselines/taubench-gpt-4o-airline.adb")).unwrap());
        let text = std::fs::read_to_string(root.join("fixtures/sessions/taubench-gpt-4o-airline.jsonl")).unwrap();
        let first: Step = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        let session: Vec<NewRecord> = text
            .lines()
            .map(|l| (l, serde_json::from_str::<Step>(l).unwrap()))
            .take_while(|(_, s)| s.session_id == first.session_id)
            .filter(|(_, s)| s.kind != crate::model::StepKind::End)
            .map(|(l, s)| NewRecord::Step(NewStep { raw: l.into(), step: s }))
            .collect();
        let clock = Arc::new(ManualClock::at(1_700_000_000_000));
        let config = Config::default();
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (shared, workers) = {
            let (storage, baseline, clock) = (storage.clone(), baseline.clone(), clock.clone());
            tokio::task::spawn_blocking(move || {
                start(storage, baseline, &config, PriceTable::default(), stop_rx, clock)
            })
            .await
            .unwrap()
            .unwrap()
        };
        shared.writer.append(session, clock.now_ms()).await.unwrap();
        let open = || async { shared.engine.report().await.unwrap().open_sessions };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while open().await != 1 {
            assert!(std::time::Instant::now() < deadline, "the session never opened");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // Ticks come every second; short of the timeout the session stays open.
        clock.advance(299_000);
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        assert_eq!(open().await, 1, "open before the idle timeout");
        clock.advance(2_000);
        while open().await != 0 {
            assert!(std::time::Instant::now() < deadline, "the session never closed");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let closed = shared
            .storage
            .store
            .session(&first.session_id)
            .unwrap()
            .expect("closed session stored");
        assert_eq!(closed.closed.reason, crate::engine::CloseReason::Idle);
        let shared2 = shared.clone();
        tokio::task::spawn_blocking(move || workers.shutdown(&shared2))
            .await
            .unwrap()
            .unwrap();
    }
}
