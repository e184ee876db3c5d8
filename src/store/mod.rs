//! Durable storage behind two traits, so the embedded SQLite default and a
//! server database with a message bus for several replicas are
//! interchangeable: the append-only [`Log`] (the source of truth) and the
//! query [`Store`] of what the scorer derived from it. Nothing
//! backend-specific leaves this module; [`conformance`] holds the two
//! suites every backend must pass.
//!
//! The log keeps accepted records and the scorer's close and settle
//! markers, in commit order. The store keeps the **events**, one row per
//! **closed session** (its features, for reports), the session listing, the
//! links from traces to sessions, and the scorer's latest **snapshot** with
//! the log position it covers. Replaying the log after the
//! snapshot rebuilds the scorer exactly (event ids are deterministic, and
//! events are inserted idempotently), so a restart loses and duplicates
//! nothing.

pub mod log;
pub mod postgres;
pub mod sqlite;

#[cfg(test)]
pub mod conformance;

use crate::detect::DriftEvent;
use crate::engine::ClosedSession;
use crate::engine::saved::{SavedRef, StateRow};
use crate::model::{Outcome, OutcomeSource};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub use log::{
    Appended, Log, LogEntry, NewRecord, NewStep, OtlpEncoding, OtlpRecords, OtlpRequest, OtlpSignal, OutcomeReport,
    RawStep, Stored,
};

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

/// A session in the listing (`GET /v1/sessions`). Absent fields of an
/// update leave the stored value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionPage {
    /// Sessions, in the order they were first seen.
    pub sessions: Vec<SessionRow>,
    /// Cursor to pass to get the next page (`None`: no more now).
    pub next_cursor: Option<i64>,
}

/// A page of events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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

/// What the scorer derived from the log, for queries: events, closed
/// sessions, the session listing, trace links, snapshots and saved session
/// states. Everything here can be rebuilt by replaying the log.
pub trait Store: Send + Sync {
    /// Stores what the engine derived, in one transaction: trace and request
    /// links, listing rows, events (idempotent by id), closed sessions (by
    /// session id: the first close time stays, the body is updated) and
    /// outcomes learnt after a close (body and row); returns the events that
    /// were new. The one write a backend implements for derived data.
    fn store_derived(&self, d: &Derived) -> Result<Vec<DriftEvent>, StoreError>;
    /// Inserts events alone (see [`Store::store_derived`]).
    fn insert_events(&self, events: &[DriftEvent]) -> Result<Vec<DriftEvent>, StoreError> {
        self.store_derived(&Derived {
            events: events.to_vec(),
            ..Derived::default()
        })
    }
    /// Records closed sessions alone.
    fn insert_sessions(&self, sessions: &[StoredSession]) -> Result<(), StoreError> {
        self.store_derived(&Derived {
            sessions: sessions.to_vec(),
            ..Derived::default()
        })
        .map(drop)
    }
    /// Records one outcome learnt after its session closed.
    fn set_session_outcome(
        &self,
        id: &str,
        outcome: Outcome,
        reward: Option<f64>,
        source: OutcomeSource,
    ) -> Result<(), StoreError> {
        self.store_derived(&Derived {
            outcomes: vec![(id.to_string(), outcome, reward, source)],
            ..Derived::default()
        })
        .map(drop)
    }
    /// Inserts or updates session rows alone (absent fields keep the stored value).
    fn upsert_session_rows(&self, rows: &[SessionRow]) -> Result<(), StoreError> {
        self.store_derived(&Derived {
            rows: rows.to_vec(),
            ..Derived::default()
        })
        .map(drop)
    }
    /// Lists events.
    fn events(&self, q: &EventQuery) -> Result<EventPage, StoreError>;
    /// One event.
    fn event(&self, id: &str) -> Result<Option<DriftEvent>, StoreError>;
    /// A closed session.
    fn session(&self, id: &str) -> Result<Option<StoredSession>, StoreError>;
    /// Closed sessions of a segment, most recent first.
    fn segment_sessions(&self, segment: &str, limit: usize) -> Result<Vec<StoredSession>, StoreError>;
    /// The traces a session was assembled from, and the log positions of
    /// the OTLP requests that hold their spans and content.
    fn session_traces(&self, session_id: &str) -> Result<SessionTraces, StoreError>;
    /// The sessions assembled from a trace.
    fn trace_sessions(&self, trace_id: &str) -> Result<Vec<String>, StoreError>;
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
    /// Checks the store answers (readiness).
    fn ping(&self) -> Result<(), StoreError>;
    /// Events stored after a position, oldest first, each with its position,
    /// so a consumer that keeps a cursor (alert delivery) resumes exactly there.
    fn events_after(&self, after: i64, limit: usize) -> Result<Vec<(i64, DriftEvent)>, StoreError>;
    /// How many events are stored after a position (a consumer's lag).
    fn events_count_after(&self, after: i64) -> Result<u64, StoreError>;
    /// The position of the newest stored event (0 when there is none): where
    /// a new consumer starts when it should see only what comes next.
    fn last_event_position(&self) -> Result<i64, StoreError>;
    /// A named consumer's saved cursor (an alert sink's last delivered event position).
    fn cursor(&self, name: &str) -> Result<Option<i64>, StoreError>;
    /// Saves a named consumer's cursor.
    fn set_cursor(&self, name: &str, position: i64) -> Result<(), StoreError>;
}

/// The traces a session was assembled from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionTraces {
    /// Trace ids, sorted.
    pub traces: Vec<String>,
    /// Log positions of the requests holding their spans and content, ascending, each once.
    pub requests: Vec<i64>,
}

/// The service's storage: the log and the query store, which one backend
/// may provide both of (SQLite) or two may share (a database and a bus).
#[derive(Clone)]
pub struct Storage {
    /// The append-only log.
    pub log: Arc<dyn Log>,
    /// What was derived from it.
    pub store: Arc<dyn Store>,
}

impl Storage {
    /// One backend that keeps both.
    pub fn single<B: Log + Store + 'static>(backend: B) -> Storage {
        let both = Arc::new(backend);
        Storage {
            log: both.clone(),
            store: both,
        }
    }

    /// A log and a query store kept apart (e.g. the embedded log and a
    /// PostgreSQL store). Recovery refuses a store whose snapshot covers a
    /// log position this log does not hold ([`Storage::check_snapshot`]).
    pub fn split<L: Log + 'static, S: Store + 'static>(log: L, store: S) -> Storage {
        Storage {
            log: Arc::new(log),
            store: Arc::new(store),
        }
    }

    /// Refuses a snapshot that covers a log position this log does not
    /// hold: its store was derived from another log, and replaying this one
    /// after it would mix two histories.
    pub fn check_snapshot(&self, snap: &Snapshot) -> Result<(), StoreError> {
        if snap.position <= 0 {
            return Ok(());
        }
        let at = self.log.log_after(snap.position - 1, 1)?;
        if at.first().map(LogEntry::id) == Some(snap.position) {
            return Ok(());
        }
        Err(StoreError::Open {
            path: "the query store".into(),
            message: format!(
                "its scorer snapshot covers log position {} but this log does not hold that position: \
                 the store was derived from another log. Use the data directory that wrote it, or an empty \
                 database (or schema) for this log",
                snap.position
            ),
        })
    }

    /// The traces a session was assembled from and the stored OTLP
    /// requests holding them, in log order.
    pub fn session_requests(&self, session_id: &str) -> Result<(Vec<String>, Vec<OtlpRequest>), StoreError> {
        let t = self.store.session_traces(session_id)?;
        let requests = self.log.requests(&t.requests)?;
        Ok((t.traces, requests))
    }

    /// Sessions sharing a correlation id: native sessions carrying it, and
    /// sessions assembled from the trace of that id; sorted, each once.
    pub fn correlated_sessions(&self, correlation_id: &str) -> Result<Vec<String>, StoreError> {
        let mut all = self.log.correlated_sessions(correlation_id)?;
        all.extend(self.store.trace_sessions(correlation_id)?);
        all.sort();
        all.dedup();
        Ok(all)
    }

    /// Both answer (readiness).
    pub fn ping(&self) -> Result<(), StoreError> {
        self.log.ping()?;
        self.store.ping()
    }
}
