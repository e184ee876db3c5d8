//! The messages the service's tasks exchange: work for the writer, work for
//! the engine, and the engine's report (read by the API and the metrics).
//! Its own module so that the tasks and the metrics depend on it and not on
//! each other.

use crate::engine::ScorerStats;
use crate::ingest::otel::assemble::AssembleStats;
use crate::store::{Appended, Derived, LogEntry, NewRecord, Snapshot, StoreError};
use serde::Serialize;
use std::collections::BTreeMap;
use tokio::sync::oneshot;

/// Work for the writer.
pub enum WriteMsg {
    /// Append records; answer after commit.
    Append {
        /// Records.
        records: Vec<NewRecord>,
        /// Receive time.
        received_ms: i64,
        /// Answer.
        reply: oneshot::Sender<Result<Appended, StoreError>>,
    },
    /// Log an idle close decided after processing the log up to `after`.
    Close {
        /// Session.
        session_id: String,
        /// Position.
        after: i64,
        /// When it was decided, unix ms.
        decided_ms: i64,
    },
    /// Log the settles of traces decided after processing the log up to `after`.
    Settle {
        /// Traces.
        trace_ids: Vec<String>,
        /// Position.
        after: i64,
        /// When it was decided, unix ms.
        decided_ms: i64,
    },
    /// Store what the engine derived (then publish the new events).
    Persist(Box<Derived>),
    /// Save a scorer snapshot.
    Snapshot(Snapshot),
    /// Finish pending work and stop.
    Shutdown(oneshot::Sender<()>),
}

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
    /// A chart's recent points (segment `agent/task_type`, chart id).
    Chart {
        /// Segment.
        segment: String,
        /// Chart id.
        chart: String,
        /// Answer, oldest first.
        reply: oneshot::Sender<Vec<crate::detect::event::ChartPoint>>,
    },
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
    /// Observations it refused so far (non-finite scores).
    pub rejected: u64,
}

/// The running state, for reports.
#[derive(Clone, Debug, Serialize)]
pub struct EngineReport {
    /// Log position processed.
    pub position: i64,
    /// Sessions open (in memory or saved).
    pub open_sessions: usize,
    /// Of them, those saved in the store, out of memory.
    pub saved_sessions: usize,
    /// Bytes the reorder buffers hold.
    pub buffered_bytes: usize,
    /// Traces waiting to settle.
    pub pending_traces: usize,
    /// Spans those traces hold.
    pub pending_spans: usize,
    /// Span assembly counters.
    pub assembly: AssembleStats,
    /// Segments that stopped scoring (a detector panicked), and why; or
    /// `engine` when applying a log entry panicked.
    pub failed_segments: Vec<(String, String)>,
    /// Counters and per-segment totals.
    pub stats: ScorerStats,
    /// Charts per segment (`agent/task_type`).
    pub charts: BTreeMap<String, Vec<ChartState>>,
}
