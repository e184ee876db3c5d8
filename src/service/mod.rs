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

pub mod engine_task;
pub mod metrics;
pub mod writer;

use crate::baseline::Baseline;
use crate::config::Config;
use crate::detect::DriftEvent;
use crate::engine::{Scorer, ScorerState, baseline_id};
use crate::ingest::ReadOptions;
use crate::model::PriceTable;
use crate::store::{LogEntry, Store, StoredSession};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use tokio::sync::{Semaphore, broadcast};

/// What every HTTP handler can reach.
pub struct Shared {
    /// Durable storage (reads).
    pub store: Arc<dyn Store>,
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
    /// OTLP reader options.
    pub read_opts: ReadOptions,
    /// Largest request body.
    pub max_body: usize,
    /// In-flight append requests (backpressure).
    pub inflight: Arc<Semaphore>,
    /// True once recovery finished and the engine runs.
    pub ready: AtomicBool,
    /// Becomes true when shutdown starts (live streams end then).
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// Wall clock, unix ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Rebuilds the scorer from the latest snapshot and the log after it;
/// returns the scorer and the log position it has processed.
pub fn recover(
    store: &dyn Store,
    baseline: Arc<Baseline>,
    prices: &PriceTable,
    idle_timeout_ms: i64,
) -> anyhow::Result<(Scorer, i64)> {
    let mut scorer = Scorer::new(baseline.clone(), prices.clone(), idle_timeout_ms)?;
    let mut position = 0;
    match store.snapshot()? {
        Some(s) if s.baseline_id == baseline_id(&baseline) => {
            let state: ScorerState = rmp_serde::from_slice(&s.state)
                .map_err(|e| anyhow::anyhow!("cannot decode the scorer snapshot: {e}"))?;
            scorer.restore(state)?;
            position = s.position;
            tracing::info!(position, "restored scorer snapshot");
        }
        Some(s) => {
            // Another baseline scored the history: start the new one at the
            // end of the log instead of re-scoring old traffic with it.
            position = store
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
    let mut replayed = 0u64;
    loop {
        let entries = store.log_after(position, 10_000)?;
        if entries.is_empty() {
            break;
        }
        for e in entries {
            position = e.id();
            let out = engine_task::apply(&mut scorer, e, prices);
            replayed += 1;
            if !out.events.is_empty() {
                store.insert_events(&out.events)?;
            }
            if !out.closed.is_empty() {
                let now = now_ms();
                store.insert_sessions(
                    &out.closed
                        .into_iter()
                        .map(|closed| StoredSession { closed, closed_ms: now })
                        .collect::<Vec<_>>(),
                )?;
            }
        }
    }
    if replayed > 0 {
        tracing::info!(replayed, position, "replayed the log after the snapshot");
    }
    Ok((scorer, position))
}

/// Starts the writer and engine threads after recovery.
pub fn start(
    store: Arc<dyn Store>,
    baseline: Arc<Baseline>,
    config: &Config,
    prices: PriceTable,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(Arc<Shared>, Workers)> {
    let idle_ms = (config.serve.idle_timeout_secs * 1000) as i64;
    let (scorer, position) = recover(store.as_ref(), baseline.clone(), &prices, idle_ms)?;
    let metrics = Arc::new(metrics::Metrics::new());
    let (events_tx, _) = broadcast::channel(4096);
    let (engine_tx, engine_rx) = mpsc::sync_channel::<engine_task::EngineMsg>(256);
    let (writer, writer_thread) = writer::spawn(store.clone(), engine_tx.clone(), events_tx.clone(), metrics.clone());
    let engine_thread = engine_task::spawn(
        scorer,
        position,
        engine_rx,
        writer.clone(),
        prices.clone(),
        metrics.clone(),
        config.serve.snapshot_secs,
    );
    let ticker = engine_task::spawn_ticker(engine_tx.clone());
    let shared = Arc::new(Shared {
        store,
        writer,
        engine: engine_task::EngineHandle { tx: engine_tx },
        events: events_tx,
        metrics,
        baseline,
        prices,
        read_opts: {
            let mut o = ReadOptions::default();
            if !config.serve.task_type_attributes.is_empty() {
                o.task_type_attributes = config.serve.task_type_attributes.clone();
            }
            o
        },
        max_body: config.serve.max_body_bytes,
        inflight: Arc::new(Semaphore::new(512)),
        ready: AtomicBool::new(true),
        shutdown,
    });
    Ok((
        shared,
        Workers {
            writer: Some(writer_thread),
            engine: Some(engine_thread),
            ticker: Some(ticker),
        },
    ))
}

/// The background threads, joined at shutdown.
pub struct Workers {
    writer: Option<std::thread::JoinHandle<()>>,
    engine: Option<std::thread::JoinHandle<()>>,
    ticker: Option<engine_task::Ticker>,
}

impl Workers {
    /// Flushes everything: the engine drains the log it has been sent and
    /// snapshots its state; then the writer drains and stops.
    pub fn shutdown(mut self, shared: &Shared) {
        shared.ready.store(false, Ordering::SeqCst);
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
    }
}
