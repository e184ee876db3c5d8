//! Durable storage behind one trait, so the embedded SQLite default and a
//! server database for several replicas are interchangeable. Nothing
//! backend-specific leaves this module; [`conformance`] is the test suite
//! every backend must pass.
//!
//! The store keeps an append-only **log** (accepted steps and session-close
//! markers, in commit order), the **events**, one row per **closed
//! session** (its features, for reports), and the scorer's latest
//! **snapshot** with the log position it covers. Replaying the log after the
//! snapshot rebuilds the scorer exactly (event ids are deterministic, and
//! events are inserted idempotently), so a restart loses and duplicates
//! nothing.

pub mod sqlite;

#[cfg(test)]
pub mod conformance;

use crate::detect::DriftEvent;
use crate::engine::ClosedSession;
use crate::engine::saved::{SavedRef, StateRow};
use crate::ingest::otel::assemble::ContentRecord;
use crate::ingest::otel::span::SpanRecord;
use crate::model::{Outcome, OutcomeSource, Step};
use serde::{Deserialize, Serialize};

/// The cause of a store failure, kept for logs (backend-specific errors
/// stay behind this box).
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk (or the database's size limit) is full: nothing was stored.
    #[error("the disk is full: {0}")]
    Full(#[source] Cause),
    /// A passing shortage (no file descriptors, the database busy): retry.
    #[error("the store is temporarily unavailable, retry: {0}")]
    Busy(#[source] Cause),
    /// A flush to disk failed: nothing written since can be promised
    /// durable, so appends stop until a restart recovers from the log.
    #[error("flushing to disk failed, so appends are refused until a restart: {0}")]
    SyncFailed(#[source] Cause),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[source] Cause),
    /// Stored data could not be decoded.
    #[error("corrupt stored record: {0}")]
    Corrupt(String),
    /// The service is stopping or a worker died.
    #[error("{0}")]
    Stopped(String),
    /// Opening or migrating failed.
    #[error("cannot open store at {path}: {message}")]
    Open {
        /// Location.
        path: String,
        /// Cause.
        message: String,
    },
}

impl StoreError {
    /// A database failure with a message (no richer cause at hand).
    pub fn database(message: impl Into<String>) -> StoreError {
        StoreError::Database(message.into().into())
    }

    /// Whether retrying later may succeed (a full disk or a passing shortage).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Busy(_))
    }
}

/// A native step to append: the parsed step, and its JSON exactly as received.
#[derive(Clone, Debug)]
pub struct NewStep {
    /// The parsed step.
    pub step: Step,
    /// The record as sent (NDJSON line), or its JSON rendering for other formats.
    pub raw: String,
}

/// An outcome reported for a session after the fact (`POST /v1/sessions/{id}/outcome`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutcomeReport {
    /// Session.
    pub session_id: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The reward, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward: Option<f64>,
}

/// Which OTLP signal a stored export request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpSignal {
    /// `ExportTraceServiceRequest`.
    Traces,
    /// `ExportLogsServiceRequest`.
    Logs,
}

/// How a stored export request is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpEncoding {
    /// Protobuf (OTLP/HTTP protobuf, and OTLP/gRPC re-encoded).
    Proto,
    /// OTLP/JSON.
    Json,
}

/// An OTLP export request as received: the log keeps one row per request,
/// not per span, so storing spans costs what storing their bytes costs.
#[derive(Clone, Debug, PartialEq)]
pub struct OtlpRequest {
    /// Traces or logs.
    pub signal: OtlpSignal,
    /// Protobuf or JSON.
    pub encoding: OtlpEncoding,
    /// The body.
    pub body: bytes::Bytes,
}

/// What an OTLP request was read into (passed along live, so the engine
/// does not decode it again; rebuilt from the body on recovery).
#[derive(Clone, Debug, PartialEq)]
pub enum OtlpRecords {
    /// Spans.
    Spans(Vec<SpanRecord>),
    /// Model-call content from GenAI log events.
    Content(Vec<ContentRecord>),
}

/// A record to append to the log.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // native steps are the common case
pub enum NewRecord {
    /// A native step; deduplicated by (session, seq).
    Step(NewStep),
    /// An OTLP export request; a request received twice (same bytes) is a duplicate.
    Otlp {
        /// The request.
        request: OtlpRequest,
        /// SHA-256 of its body (the deduplication key).
        digest: [u8; 32],
        /// What it was read into.
        records: OtlpRecords,
    },
    /// An outcome reported after the fact.
    Outcome {
        /// The report.
        report: OutcomeReport,
        /// Its JSON.
        raw: String,
    },
}

/// A log entry, in commit order.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // steps are the common case; boxing them costs an allocation each
pub enum LogEntry {
    /// An accepted native step.
    Step {
        /// Log position.
        id: i64,
        /// When it was received, unix ms.
        received_ms: i64,
        /// The step.
        step: Step,
    },
    /// The scorer closed a session for idleness after processing the log up to `after`.
    Close {
        /// Log position.
        id: i64,
        /// Log position the scorer had processed when it closed the session.
        after: i64,
        /// When it decided, unix ms.
        received_ms: i64,
        /// Session.
        session_id: String,
    },
    /// An accepted OTLP export request.
    Otlp {
        /// Log position.
        id: i64,
        /// When it was received, unix ms.
        received_ms: i64,
        /// The request as received.
        request: OtlpRequest,
        /// What it was read into, when at hand (live); `None` from the store.
        records: Option<OtlpRecords>,
    },
    /// The engine settled a trace judged quiet after processing the log up to `after`.
    Settle {
        /// Log position.
        id: i64,
        /// Log position the engine had processed when it decided.
        after: i64,
        /// When it decided, unix ms (the time its steps are released at).
        received_ms: i64,
        /// Trace.
        trace_id: String,
    },
    /// An outcome reported after the fact.
    Outcome {
        /// Log position.
        id: i64,
        /// When it was received, unix ms.
        received_ms: i64,
        /// The report.
        report: OutcomeReport,
    },
    /// A row that cannot be read back (damaged storage): skipped and
    /// counted, so one bad row never stops the rest of the log.
    Unreadable {
        /// Log position.
        id: i64,
        /// What is wrong with it.
        why: String,
    },
}

impl LogEntry {
    /// Its position in the log.
    pub fn id(&self) -> i64 {
        match self {
            LogEntry::Step { id, .. }
            | LogEntry::Close { id, .. }
            | LogEntry::Otlp { id, .. }
            | LogEntry::Settle { id, .. }
            | LogEntry::Outcome { id, .. }
            | LogEntry::Unreadable { id, .. } => *id,
        }
    }
}

/// One newly stored record of an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored {
    /// Its index in the appended records.
    pub index: usize,
    /// Its log position.
    pub id: i64,
}

/// What an append did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Appended {
    /// Newly stored records, in input order. Duplicates are not here.
    pub stored: Vec<Stored>,
    /// Records that were already stored (same session and seq, same span, same content).
    pub duplicates: usize,
}

/// A session in the listing (`GET /v1/sessions`). Absent fields of an
/// update leave the stored value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionRow {
    /// Session id.
    pub session_id: String,
    /// Agent of its first step.
    pub agent: Option<String>,
    /// Segment it is scored against (`agent/task_type`).
    pub segment: Option<String>,
    /// Whether a baseline segment scores it.
    pub scored: Option<bool>,
    /// `native`, `resolved` or `unresolved` (OTLP identity).
    pub identity: Option<String>,
    /// `open` or `closed`.
    pub status: Option<String>,
    /// Steps scored.
    pub steps: Option<u64>,
    /// Outcome.
    pub outcome: Option<Outcome>,
    /// Where the outcome came from.
    pub outcome_source: Option<String>,
    /// First step time, unix ms.
    pub first_ts: Option<i64>,
    /// Last step time, unix ms.
    pub last_ts: Option<i64>,
}

/// Everything the engine derived from a stretch of the log, stored in one
/// transaction (events, closed sessions, which traces make which session,
/// listing rows, outcomes learnt after a close).
#[derive(Debug, Default)]
pub struct Derived {
    /// Events.
    pub events: Vec<DriftEvent>,
    /// Closed sessions.
    pub sessions: Vec<StoredSession>,
    /// (trace, session): the traces a session was assembled from.
    pub links: Vec<(String, String)>,
    /// (trace, log position): the stored requests that hold a trace's spans.
    pub request_links: Vec<(String, i64)>,
    /// Session listing changes, in order.
    pub rows: Vec<SessionRow>,
    /// Outcomes learnt after their session closed.
    pub outcomes: Vec<(String, Outcome, Option<f64>, OutcomeSource)>,
}

impl Derived {
    /// True when there is nothing to store.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.sessions.is_empty()
            && self.links.is_empty()
            && self.request_links.is_empty()
            && self.rows.is_empty()
            && self.outcomes.is_empty()
    }

    /// Appends what `other` derived after this.
    pub fn merge(&mut self, other: Derived) {
        self.events.extend(other.events);
        self.sessions.extend(other.sessions);
        self.links.extend(other.links);
        self.request_links.extend(other.request_links);
        self.rows.extend(other.rows);
        self.outcomes.extend(other.outcomes);
    }
}

/// Filters for listing sessions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionQuery {
    /// Agent.
    pub agent: Option<String>,
    /// Segment `agent/task_type`.
    pub segment: Option<String>,
    /// Scored or not.
    pub scored: Option<bool>,
    /// Sessions whose last step is at or after this time (unix ms).
    pub since: Option<i64>,
    /// Sessions after this cursor.
    pub cursor: Option<i64>,
    /// Page size.
    pub limit: usize,
}

/// A page of sessions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionPage {
    /// Sessions, in the order they were first seen.
    pub sessions: Vec<SessionRow>,
    /// Cursor to pass to get the next page (`None`: no more now).
    pub next_cursor: Option<i64>,
}

/// A page of events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EventPage {
    /// Events, oldest first (newest first when asked).
    pub events: Vec<DriftEvent>,
    /// Cursor to pass to get the next page (`None`: no more now).
    pub next_cursor: Option<i64>,
}

/// Filters for listing events.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventQuery {
    /// Segment `agent/task_type`.
    pub segment: Option<String>,
    /// Detector id or family.
    pub detector: Option<String>,
    /// Events at or after this time (unix ms).
    pub since: Option<i64>,
    /// Events of this session.
    pub session: Option<String>,
    /// Events after this cursor (before it, newest first).
    pub cursor: Option<i64>,
    /// Page size.
    pub limit: usize,
    /// Newest first (the latest events without paging through all of them).
    pub newest_first: bool,
}

/// A stored closed session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredSession {
    /// The closed session as the scorer reported it.
    pub closed: ClosedSession,
    /// When it closed, unix ms (wall clock).
    pub closed_ms: i64,
}

/// The latest scorer snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Log position it covers.
    pub position: i64,
    /// Baseline it belongs to.
    pub baseline_id: String,
    /// Serialised scorer state.
    pub state: Vec<u8>,
    /// Session rows this snapshot supersedes, deleted with its saving.
    pub obsolete: Vec<(String, u64)>,
}

/// Durable storage for the service.
pub trait Store: Send + Sync {
    /// Appends records atomically (one transaction); duplicates of stored
    /// records are skipped and counted. The append is visible at once and
    /// durable once a later [`Store::sync`] returns.
    fn append(&self, records: &[NewRecord], received_ms: i64) -> Result<Appended, StoreError>;
    /// Makes every write committed before the call durable, so a caller
    /// can acknowledge many commits with one flush to disk while the next
    /// commits proceed (pipelined group commit). Committed writes survive
    /// in commit order: a write that survives a power loss implies that
    /// every earlier one did.
    fn sync(&self) -> Result<(), StoreError>;
    /// Appends a session-close marker decided at `decided_ms`.
    fn append_close(&self, session_id: &str, after: i64, decided_ms: i64) -> Result<i64, StoreError>;
    /// Appends a trace-settle marker decided at `decided_ms`.
    fn append_settle(&self, trace_id: &str, after: i64, decided_ms: i64) -> Result<i64, StoreError> {
        let ids = self.append_settles(&[trace_id.to_string()], after, decided_ms)?;
        ids.first()
            .copied()
            .ok_or_else(|| StoreError::database("a settle was not logged"))
    }
    /// Logs the settles of several traces decided together, in one transaction; their positions, in order.
    fn append_settles(&self, trace_ids: &[String], after: i64, decided_ms: i64) -> Result<Vec<i64>, StoreError>;
    /// Log entries after `position`, at most `limit`.
    fn log_after(&self, position: i64, limit: usize) -> Result<Vec<LogEntry>, StoreError>;
    /// Inserts events (idempotent by id); returns those that were new.
    fn insert_events(&self, events: &[DriftEvent]) -> Result<Vec<DriftEvent>, StoreError>;
    /// Lists events.
    fn events(&self, q: &EventQuery) -> Result<EventPage, StoreError>;
    /// One event.
    fn event(&self, id: &str) -> Result<Option<DriftEvent>, StoreError>;
    /// Records closed sessions (by session id: the first close time stays, the body is updated).
    fn insert_sessions(&self, sessions: &[StoredSession]) -> Result<(), StoreError>;
    /// A closed session.
    fn session(&self, id: &str) -> Result<Option<StoredSession>, StoreError>;
    /// Records an outcome learnt after a session closed (its stored body and row).
    fn set_session_outcome(
        &self,
        id: &str,
        outcome: Outcome,
        reward: Option<f64>,
        source: OutcomeSource,
    ) -> Result<(), StoreError>;
    /// Closed sessions of a segment, most recent first.
    fn segment_sessions(&self, segment: &str, limit: usize) -> Result<Vec<StoredSession>, StoreError>;
    /// Every native step of a session as received, in `seq` order: (seq, raw JSON).
    fn session_steps(&self, session_id: &str) -> Result<Vec<(u64, String)>, StoreError>;
    /// The traces a session was assembled from, and the stored OTLP
    /// requests that hold their spans and content, in log order (replay
    /// re-assembles them).
    fn session_requests(&self, session_id: &str) -> Result<(Vec<String>, Vec<OtlpRequest>), StoreError>;
    /// Sessions sharing a correlation id (multi-agent tasks; an OTLP trace id).
    fn correlated_sessions(&self, correlation_id: &str) -> Result<Vec<String>, StoreError>;
    /// Stores what the engine derived, in one transaction; returns the events that were new.
    fn store_derived(&self, d: &Derived) -> Result<Vec<DriftEvent>, StoreError>;
    /// Inserts or updates session rows (absent fields keep the stored value).
    fn upsert_session_rows(&self, rows: &[SessionRow]) -> Result<(), StoreError>;
    /// Lists sessions.
    fn sessions_page(&self, q: &SessionQuery) -> Result<SessionPage, StoreError>;
    /// One session's row.
    fn session_row(&self, id: &str) -> Result<Option<SessionRow>, StoreError>;
    /// Saves the scorer snapshot (replacing the previous one).
    fn save_snapshot(&self, s: &Snapshot) -> Result<(), StoreError>;
    /// The latest snapshot.
    fn snapshot(&self) -> Result<Option<Snapshot>, StoreError>;
    /// Writes open sessions' states (rows are never overwritten with another state).
    fn save_session_states(&self, rows: &[StateRow]) -> Result<(), StoreError>;
    /// One session state row.
    fn session_state(&self, session_id: &str, version: u64) -> Result<Option<Vec<u8>>, StoreError>;
    /// Per session, its newest state row with a version at most `max_version`.
    fn session_state_refs(&self, max_version: u64) -> Result<Vec<(String, SavedRef)>, StoreError>;
    /// Deletes every session state row but these (at start: rows the
    /// snapshot does not name are left over from after it); returns how many.
    fn retain_session_states(&self, keep: &[(String, u64)]) -> Result<u64, StoreError>;
    /// Number of native steps and OTLP trace requests stored.
    fn step_count(&self) -> Result<u64, StoreError>;
    /// Checks the store answers (readiness).
    fn ping(&self) -> Result<(), StoreError>;
}
