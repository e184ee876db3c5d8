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
use crate::model::Step;
use serde::{Deserialize, Serialize};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database error: {0}")]
    Database(String),
    /// Stored data could not be decoded.
    #[error("corrupt stored record: {0}")]
    Corrupt(String),
    /// Opening or migrating failed.
    #[error("cannot open store at {path}: {message}")]
    Open {
        /// Location.
        path: String,
        /// Cause.
        message: String,
    },
}

/// A step to append: the parsed step, and its JSON exactly as received.
#[derive(Clone, Debug)]
pub struct NewStep {
    /// The parsed step (its `seq` may be assigned by the store, see `assign_seq`).
    pub step: Step,
    /// The record as sent (NDJSON line), or its JSON rendering for other formats.
    pub raw: String,
    /// For OTLP-derived steps: take the next free `seq` of the session
    /// (arrival order) and deduplicate by `span_id`.
    pub assign_seq: bool,
}

/// A log entry, in commit order.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // steps are the common case; boxing them costs an allocation each
pub enum LogEntry {
    /// An accepted step.
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
        /// Session.
        session_id: String,
    },
}

impl LogEntry {
    /// Its position in the log.
    pub fn id(&self) -> i64 {
        match self {
            LogEntry::Step { id, .. } | LogEntry::Close { id, .. } => *id,
        }
    }
}

/// What an append did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Appended {
    /// Newly stored steps: (index in the input, log position, seq as
    /// stored, which the store assigns for `assign_seq`). Duplicates are not here.
    pub stored: Vec<(usize, i64, u64)>,
    /// Steps that were already stored (same session and seq, or same span).
    pub duplicates: usize,
}

/// A page of events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EventPage {
    /// Events, oldest first.
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
    /// Events after this cursor.
    pub cursor: Option<i64>,
    /// Page size.
    pub limit: usize,
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
}

/// Durable storage for the service.
pub trait Store: Send + Sync {
    /// Appends steps atomically (one transaction); duplicates of stored
    /// steps are skipped and counted. The append is visible at once and
    /// durable once a later [`Store::sync`] returns.
    fn append_steps(&self, steps: &[NewStep], received_ms: i64) -> Result<Appended, StoreError>;
    /// Makes every write committed before the call durable, so a caller
    /// can acknowledge many commits with one flush to disk while the next
    /// commits proceed (pipelined group commit). Committed writes survive
    /// in commit order: a write that survives a power loss implies that
    /// every earlier one did.
    fn sync(&self) -> Result<(), StoreError>;
    /// Appends a session-close marker.
    fn append_close(&self, session_id: &str, after: i64) -> Result<i64, StoreError>;
    /// Log entries after `position`, at most `limit`.
    fn log_after(&self, position: i64, limit: usize) -> Result<Vec<LogEntry>, StoreError>;
    /// Inserts events (idempotent by id); returns those that were new.
    fn insert_events(&self, events: &[DriftEvent]) -> Result<Vec<DriftEvent>, StoreError>;
    /// Lists events.
    fn events(&self, q: &EventQuery) -> Result<EventPage, StoreError>;
    /// One event.
    fn event(&self, id: &str) -> Result<Option<DriftEvent>, StoreError>;
    /// Records closed sessions (idempotent by session id).
    fn insert_sessions(&self, sessions: &[StoredSession]) -> Result<(), StoreError>;
    /// A closed session.
    fn session(&self, id: &str) -> Result<Option<StoredSession>, StoreError>;
    /// Closed sessions of a segment, most recent first.
    fn segment_sessions(&self, segment: &str, limit: usize) -> Result<Vec<StoredSession>, StoreError>;
    /// Every stored step of a session as received, in `seq` order: (seq, raw JSON).
    fn session_steps(&self, session_id: &str) -> Result<Vec<(u64, String)>, StoreError>;
    /// Sessions sharing a correlation id (multi-agent tasks), excluding none.
    fn correlated_sessions(&self, correlation_id: &str) -> Result<Vec<String>, StoreError>;
    /// Saves the scorer snapshot (replacing the previous one).
    fn save_snapshot(&self, s: &Snapshot) -> Result<(), StoreError>;
    /// The latest snapshot.
    fn snapshot(&self) -> Result<Option<Snapshot>, StoreError>;
    /// Number of steps stored.
    fn step_count(&self) -> Result<u64, StoreError>;
    /// Checks the store answers (readiness).
    fn ping(&self) -> Result<(), StoreError>;
}
