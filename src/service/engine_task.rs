//! The engine thread: owns the scorer, applies log entries in commit order,
//! decides idle closes (by logging them first), persists events and closed
//! sessions through the writer, snapshots its state, answers report queries.

use super::chart_history::ChartHistory;
use super::messages::{ChartState, EngineMsg, EngineReport, WriteMsg};
use super::metrics::Metrics;
use super::writer::WriterHandle;
use crate::engine::pipeline::{Applied, Input, Pipeline};
use crate::ingest::ReadOptions;
use crate::store::{
    Derived, LogEntry, OtlpEncoding, OtlpRecords, OtlpRequest, OtlpSignal, SessionRow, Snapshot, StoredSession,
};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Queries the engine.
#[derive(Clone)]
pub struct EngineHandle {
    pub(super) tx: mpsc::SyncSender<EngineMsg>,
}

impl EngineHandle {
    /// Asks the engine and waits (10 s at most) for its answer; `None` when
    /// it is busy or gone.
    async fn ask<T>(&self, msg: impl FnOnce(oneshot::Sender<T>) -> EngineMsg) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.try_send(msg(tx)).ok()?;
        tokio::time::timeout(Duration::from_secs(10), rx).await.ok()?.ok()
    }

    /// The running state.
    pub async fn report(&self) -> Option<EngineReport> {
        self.ask(EngineMsg::Report).await
    }

    /// A chart's recent points, oldest first (`None`: the engine is busy or gone).
    pub async fn chart(&self, segment: &str, chart: &str) -> Option<Vec<crate::detect::event::ChartPoint>> {
        self.ask(|reply| EngineMsg::Chart {
            segment: segment.to_string(),
            chart: chart.to_string(),
            reply,
        })
        .await
    }

    /// Drains the engine and snapshots (shutdown).
    pub fn flush_blocking(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(EngineMsg::Flush(tx)).is_ok() {
            let _ = rx.blocking_recv();
        }
    }
}

/// What a stored OTLP request reads into (on recovery: decoded and mapped
/// again, with the service's reader options).
pub fn records_of_request(request: &OtlpRequest, opts: &ReadOptions) -> OtlpRecords {
    use crate::ingest::{otel, otlp};
    match request.signal {
        OtlpSignal::Traces => {
            let req = match request.encoding {
                OtlpEncoding::Proto => otlp::decode_proto(&request.body),
                OtlpEncoding::Json => otlp::decode_json(&request.body),
            };
            OtlpRecords::Spans(req.map(|r| otel::records_of(&r, opts).spans).unwrap_or_default())
        }
        OtlpSignal::Logs => {
            let req = match request.encoding {
                OtlpEncoding::Proto => otlp::decode_logs_proto(&request.body),
                OtlpEncoding::Json => otlp::decode_logs_json(&request.body),
            };
            OtlpRecords::Content(req.map(|r| otel::logs::read_logs(&r).records).unwrap_or_default())
        }
    }
}

/// A log entry as the pipeline's input.
pub fn input_of(entry: LogEntry, opts: &ReadOptions) -> Input {
    match entry {
        LogEntry::Step { id, received_ms, step } => Input::Step {
            step,
            received_ms,
            pos: id,
        },
        LogEntry::Close {
            after,
            session_id,
            received_ms,
            ..
        } => Input::Close {
            session_id,
            after,
            received_ms,
        },
        LogEntry::Otlp {
            id,
            received_ms,
            request,
            records,
        } => match records.unwrap_or_else(|| records_of_request(&request, opts)) {
            OtlpRecords::Spans(spans) => Input::Spans {
                spans,
                received_ms,
                pos: id,
            },
            OtlpRecords::Content(content) => Input::Content {
                content,
                received_ms,
                pos: id,
            },
        },
        LogEntry::Settle {
            id,
            after,
            received_ms,
            trace_id,
        } => Input::Settle {
            trace_id,
            after,
            received_ms,
            pos: id,
        },
        LogEntry::Unreadable { .. } => Input::Unreadable,
        LogEntry::Outcome {
            received_ms, report, ..
        } => Input::Outcome {
            session_id: report.session_id,
            outcome: report.outcome,
            reward: report.reward,
            received_ms,
        },
    }
}

/// Applies one log entry (live and during recovery alike).
pub fn apply(pipeline: &mut Pipeline, entry: LogEntry, opts: &ReadOptions) -> Applied {
    if let LogEntry::Unreadable { id, why } = &entry {
        tracing::error!(log_id = id, why = %why, "a log row cannot be read back (damaged storage): skipped and counted");
    }
    pipeline.apply(input_of(entry, opts))
}

/// What an applied entry asks the store to keep; `closed_ms` stamps closed sessions.
pub fn persist_of(a: Applied, closed_ms: i64) -> Derived {
    let rows = a
        .rows
        .into_iter()
        .map(|r| SessionRow {
            session_id: r.session_id,
            agent: r.agent,
            segment: r.segment,
            scored: r.scored,
            identity: r.identity.map(str::to_string),
            status: r.status.map(str::to_string),
            steps: r.steps,
            outcome: r.outcome,
            outcome_source: r.outcome_source.map(|s| s.as_str().to_string()),
            first_ts: r.first_ts,
            last_ts: r.last_ts,
        })
        .collect();
    Derived {
        events: a.out.events,
        sessions: a
            .out
            .closed
            .into_iter()
            .map(|closed| StoredSession { closed, closed_ms })
            .collect(),
        links: a.links,
        request_links: a.request_links,
        rows,
        outcomes: a
            .outcomes
            .into_iter()
            .map(|o| (o.session_id, o.outcome, o.reward, o.source))
            .collect(),
    }
}

/// How the engine thread runs.
pub struct EngineSettings {
    /// Seconds between snapshots.
    pub snapshot_secs: u64,
    /// How stored OTLP requests are read again.
    pub read_opts: ReadOptions,
    /// The clock idle closes and settles read.
    pub clock: Arc<dyn super::clock::Clock>,
    /// Chart points so far (from the recovery replay).
    pub history: ChartHistory,
}

/// Starts the engine thread.
pub fn spawn(
    mut pipeline: Pipeline,
    mut position: i64,
    rx: mpsc::Receiver<EngineMsg>,
    writer: WriterHandle,
    metrics: Arc<Metrics>,
    settings: EngineSettings,
) -> std::thread::JoinHandle<()> {
    let EngineSettings {
        snapshot_secs,
        read_opts,
        clock,
        mut history,
    } = settings;
    std::thread::Builder::new()
        .name("agentdrift-engine".into())
        .spawn(move || {
            let mut requested: HashSet<String> = HashSet::new();
            let mut settling: HashSet<String> = HashSet::new();
            let mut engine_failures: Vec<(String, String)> = Vec::new();
            let mut last_snapshot = Instant::now();
            let mut dirty = false;
            let persist = |mut a: Applied, batch: &mut Derived, metrics: &Metrics, history: &mut ChartHistory| {
                for c in &a.out.closed {
                    metrics.closed(c);
                }
                history.take_from(&mut a.out);
                batch.merge(persist_of(a, clock.now_ms()));
            };
            // Sessions that changed are written as rows first; the snapshot
            // names them and carries inline only what could not be written.
            let snapshot = |pipeline: &mut Pipeline, position: i64, writer: &WriterHandle| {
                let obsolete = pipeline.checkpoint().unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cannot write open sessions' states: the snapshot carries them");
                    Vec::new()
                });
                match rmp_serde::to_vec_named(&pipeline.state_ref()) {
                    Ok(state) => writer.send(WriteMsg::Snapshot(Snapshot {
                        position,
                        baseline_id: crate::engine::baseline_id(pipeline.scorer().baseline()),
                        state,
                        obsolete,
                    })),
                    Err(e) => tracing::error!(error = %e, "cannot encode the scorer state"),
                }
            };
            while let Ok(msg) = rx.recv() {
                match msg {
                    EngineMsg::Log(entries) => {
                        // One store transaction for all that this batch of the log derives.
                        let mut batch = Derived::default();
                        for e in entries {
                            position = position.max(e.id());
                            match &e {
                                LogEntry::Close { session_id, .. } => {
                                    requested.remove(session_id);
                                }
                                LogEntry::Settle { trace_id, .. } => {
                                    settling.remove(trace_id);
                                }
                                _ => {}
                            }
                            metrics.engine_step();
                            let id = e.id();
                            let before = pipeline.scorer().failed_count();
                            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                apply(&mut pipeline, e, &read_opts)
                            })) {
                                Ok(a) => {
                                    log_applied(&pipeline, &a);
                                    persist(a, &mut batch, &metrics, &mut history);
                                }
                                Err(p) => {
                                    let why = p
                                        .downcast_ref::<&str>()
                                        .map(|s| s.to_string())
                                        .or_else(|| p.downcast_ref::<String>().cloned())
                                        .unwrap_or_else(|| "a panic".into());
                                    tracing::error!(log_position = id, reason = %why, "applying a log entry panicked; it is skipped");
                                    metrics.scoring_panics.inc();
                                    engine_failures.push((format!("engine (log position {id})"), why));
                                }
                            }
                            if pipeline.scorer().failed_count() > before {
                                for (seg, why) in pipeline.scorer().failed_segments().iter().skip(before) {
                                    tracing::error!(segment = %seg, reason = %why, "a detector panicked; this segment stops scoring");
                                    metrics.scoring_panics.inc();
                                }
                            }
                            dirty = true;
                        }
                        if !batch.is_empty() {
                            writer.send(WriteMsg::Persist(Box::new(batch)));
                            dirty = true;
                        }
                    }
                    EngineMsg::Tick => {
                        let now = clock.now_ms();
                        let due: Vec<String> = pipeline
                            .due_traces(now)
                            .into_iter()
                            .map(|(t, _)| t)
                            .filter(|t| settling.insert(t.clone()))
                            .collect();
                        if !due.is_empty() {
                            // One transaction and one engine hand-off for every trace due now.
                            writer.send(WriteMsg::Settle {
                                trace_ids: due,
                                after: position,
                                decided_ms: now,
                            });
                        }
                        for sid in pipeline.idle_sessions(now) {
                            if requested.insert(sid.clone()) {
                                writer.send(WriteMsg::Close {
                                    session_id: sid,
                                    after: position,
                                    decided_ms: now,
                                });
                            }
                        }
                        metrics.refresh(&report(&pipeline, position, &engine_failures));
                        if dirty && last_snapshot.elapsed() >= Duration::from_secs(snapshot_secs) {
                            snapshot(&mut pipeline, position, &writer);
                            last_snapshot = Instant::now();
                            dirty = false;
                        }
                    }
                    EngineMsg::Chart { segment, chart, reply } => {
                        let _ = reply.send(history.points(&segment, &chart));
                    }
                    EngineMsg::Report(reply) => {
                        let _ = reply.send(report(&pipeline, position, &engine_failures));
                    }
                    EngineMsg::Flush(done) => {
                        // Everything sent before the flush has been applied (FIFO).
                        snapshot(&mut pipeline, position, &writer);
                        let _ = done.send(());
                    }
                }
            }
        })
        .expect("spawn the engine thread")
}

/// One JSON log line per session opened and closed, drift event and failed
/// tool step, each with the session, trace, agent and segment, so a team can
/// join agentdrift's logs with its traces (README "Logs").
fn log_applied(pipeline: &Pipeline, a: &Applied) {
    for o in &a.out.opened {
        let segment = o.segment.as_ref().map(|k| k.to_string());
        tracing::info!(
            session_id = %o.session_id,
            trace_id = o.trace_id.as_deref().unwrap_or(""),
            agent = %o.agent,
            segment = segment.as_deref().unwrap_or(""),
            scored = o.segment.is_some(),
            "session opened"
        );
    }
    for s in &a.failed_tools {
        tracing::info!(
            session_id = %s.session_id,
            trace_id = s.trace_id.as_deref().unwrap_or(""),
            agent = %s.agent,
            tool = s.tool.as_deref().unwrap_or(""),
            status = "error",
            seq = s.seq,
            "tool step failed"
        );
    }
    for e in &a.out.events {
        tracing::info!(
            event_id = %e.id,
            session_id = %e.session_id,
            trace_id = pipeline.scorer().trace_of(&e.session_id).unwrap_or(""),
            agent = %e.segment.agent,
            segment = %e.segment,
            detector = %e.detector,
            "{}",
            e.message
        );
    }
    for c in &a.out.closed {
        let segment = c.segment.as_ref().map(|k| k.to_string());
        tracing::info!(
            session_id = %c.session_id,
            trace_id = c.trace_id.as_deref().unwrap_or(""),
            agent = c.agent.as_deref().unwrap_or(""),
            segment = segment.as_deref().unwrap_or(""),
            scored = c.segment.is_some(),
            reason = ?c.reason,
            outcome = c.features.outcome.map_or("", |o| o.as_str()),
            steps = c.steps,
            "session closed"
        );
    }
}

fn report(pipeline: &Pipeline, position: i64, engine_failures: &[(String, String)]) -> EngineReport {
    let scorer = pipeline.scorer();
    let (pending_traces, pending_spans) = pipeline.assembler().pending();
    let mut charts = BTreeMap::new();
    for (seg, det) in scorer.detectors() {
        let counts = det.counts();
        charts.insert(
            seg.key.to_string(),
            seg.charts
                .iter()
                .map(|c| {
                    let n = counts.get(c.id.as_str()).copied().unwrap_or_default();
                    ChartState {
                        id: c.id.clone(),
                        statistic: det.last.get(&c.id).map(|x| x.0),
                        limit: det.last.get(&c.id).map(|x| x.1),
                        alarms: n.alarms,
                        rejected: n.rejected,
                    }
                })
                .collect(),
        );
    }
    EngineReport {
        position,
        open_sessions: scorer.open_sessions(),
        saved_sessions: scorer.saved_sessions(),
        buffered_bytes: scorer.buffered_bytes(),
        pending_traces,
        pending_spans,
        assembly: pipeline.assembler().stats().clone(),
        failed_segments: scorer
            .failed_segments()
            .into_iter()
            .chain(engine_failures.iter().cloned())
            .collect(),
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
