//! The engine thread: owns the scorer, applies log entries in commit order,
//! decides idle closes (by logging them first), persists events and closed
//! sessions through the writer, snapshots its state, answers report queries.

use super::metrics::Metrics;
use super::now_ms;
use super::writer::{WriteMsg, WriterHandle};
use crate::engine::{Output, Scorer, ScorerStats};
use crate::model::PriceTable;
use crate::store::{LogEntry, Snapshot, StoredSession};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Work for the engine.
pub enum EngineMsg {
    /// Log entries, in commit order.
    Log(Vec<LogEntry>),
    /// Time passed: check idle sessions, maybe snapshot, refresh gauges.
    Tick,
    /// A report of the running state.
    Report(oneshot::Sender<EngineReport>),
    /// Process everything queued, snapshot, answer.
    Flush(oneshot::Sender<()>),
}

/// One chart's running statistic.
#[derive(Clone, Debug, Serialize)]
pub struct ChartState {
    /// Chart id.
    pub id: String,
    /// Latest statistic.
    pub statistic: Option<f64>,
    /// Its limit.
    pub limit: Option<f64>,
    /// Alarms so far.
    pub alarms: u64,
}

/// The running state, for reports.
#[derive(Clone, Debug, Serialize)]
pub struct EngineReport {
    /// Log position processed.
    pub position: i64,
    /// Sessions open.
    pub open_sessions: usize,
    /// Counters and per-segment totals.
    pub stats: ScorerStats,
    /// Charts per segment (`agent/task_type`).
    pub charts: BTreeMap<String, Vec<ChartState>>,
}

/// Queries the engine.
#[derive(Clone)]
pub struct EngineHandle {
    pub(super) tx: mpsc::SyncSender<EngineMsg>,
}

impl EngineHandle {
    /// The running state.
    pub async fn report(&self) -> Option<EngineReport> {
        let (tx, rx) = oneshot::channel();
        self.tx.try_send(EngineMsg::Report(tx)).ok()?;
        tokio::time::timeout(Duration::from_secs(10), rx).await.ok()?.ok()
    }

    /// Drains the engine and snapshots (shutdown).
    pub fn flush_blocking(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(EngineMsg::Flush(tx)).is_ok() {
            let _ = rx.blocking_recv();
        }
    }
}

/// Applies one log entry to the scorer (live and during recovery alike).
pub fn apply(scorer: &mut Scorer, entry: LogEntry, prices: &PriceTable) -> Output {
    match entry {
        LogEntry::Step {
            id,
            received_ms,
            mut step,
        } => {
            prices.fill_cost(&mut step);
            scorer.ingest_at(step, received_ms, id)
        }
        LogEntry::Close { after, session_id, .. } => scorer.close_if_idle_since(&session_id, after),
    }
}

/// Starts the engine thread.
pub fn spawn(
    mut scorer: Scorer,
    mut position: i64,
    rx: mpsc::Receiver<EngineMsg>,
    writer: WriterHandle,
    prices: PriceTable,
    metrics: Arc<Metrics>,
    snapshot_secs: u64,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("agentdrift-engine".into())
        .spawn(move || {
            let mut requested: HashSet<String> = HashSet::new();
            let mut last_snapshot = Instant::now();
            let mut dirty = false;
            let persist = |out: Output, writer: &WriterHandle, metrics: &Metrics| {
                for c in &out.closed {
                    metrics.closed(c);
                }
                if !out.events.is_empty() || !out.closed.is_empty() {
                    let now = now_ms();
                    writer.send(WriteMsg::Persist {
                        events: out.events,
                        sessions: out
                            .closed
                            .into_iter()
                            .map(|closed| StoredSession { closed, closed_ms: now })
                            .collect(),
                    });
                }
            };
            let snapshot = |scorer: &Scorer, position: i64, writer: &WriterHandle| match rmp_serde::to_vec_named(
                &scorer.state(),
            ) {
                Ok(state) => writer.send(WriteMsg::Snapshot(Snapshot {
                    position,
                    baseline_id: crate::engine::baseline_id(scorer.baseline()),
                    state,
                })),
                Err(e) => tracing::error!(error = %e, "cannot encode the scorer state"),
            };
            while let Ok(msg) = rx.recv() {
                match msg {
                    EngineMsg::Log(entries) => {
                        for e in entries {
                            position = position.max(e.id());
                            if let LogEntry::Close { session_id, .. } = &e {
                                requested.remove(session_id);
                            }
                            metrics.engine_step();
                            let out = apply(&mut scorer, e, &prices);
                            persist(out, &writer, &metrics);
                            dirty = true;
                        }
                    }
                    EngineMsg::Tick => {
                        for sid in scorer.idle_sessions(now_ms()) {
                            if requested.insert(sid.clone()) {
                                writer.send(WriteMsg::Close {
                                    session_id: sid,
                                    after: position,
                                });
                            }
                        }
                        metrics.refresh(&report(&scorer, position));
                        if dirty && last_snapshot.elapsed() >= Duration::from_secs(snapshot_secs) {
                            snapshot(&scorer, position, &writer);
                            last_snapshot = Instant::now();
                            dirty = false;
                        }
                    }
                    EngineMsg::Report(reply) => {
                        let _ = reply.send(report(&scorer, position));
                    }
                    EngineMsg::Flush(done) => {
                        // Everything sent before the flush has been applied (FIFO).
                        snapshot(&scorer, position, &writer);
                        let _ = done.send(());
                    }
                }
            }
        })
        .expect("spawn the engine thread")
}

fn report(scorer: &Scorer, position: i64) -> EngineReport {
    let mut charts = BTreeMap::new();
    for (seg, det) in scorer.detectors() {
        let alarms: BTreeMap<String, u64> = det.alarms().into_iter().collect();
        charts.insert(
            seg.key.to_string(),
            seg.charts
                .iter()
                .map(|c| ChartState {
                    id: c.id.clone(),
                    statistic: det.last.get(&c.id).map(|x| x.0),
                    limit: det.last.get(&c.id).map(|x| x.1),
                    alarms: alarms.get(&c.id).copied().unwrap_or(0),
                })
                .collect(),
        );
    }
    EngineReport {
        position,
        open_sessions: scorer.open_sessions(),
        stats: scorer.stats().clone(),
        charts,
    }
}

/// A thread that ticks the engine once a second.
pub struct Ticker {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<()>,
}

impl Ticker {
    /// Stops ticking.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.handle.join();
    }
}

/// Starts the ticker.
pub fn spawn_ticker(tx: mpsc::SyncSender<EngineMsg>) -> Ticker {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let handle = std::thread::Builder::new()
        .name("agentdrift-ticker".into())
        .spawn(move || {
            while !s.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1000));
                if tx.try_send(EngineMsg::Tick).is_err() && s.load(Ordering::SeqCst) {
                    break;
                }
            }
        })
        .expect("spawn the ticker");
    Ticker { stop, handle }
}
