//! The append-only log: every accepted record (native steps, OTLP export
//! requests, outcomes) and every decision the scorer logged (session closes,
//! trace settles), in commit order. It is the source of truth: the scorer is
//! rebuilt by reading it from a snapshot's position, so a backend that keeps
//! it (a SQLite table, a NATS JetStream stream) needs only append, a durable
//! sync, reads from a position and a few lookups by session. [`super::conformance::log`]
//! is the suite every log backend must pass.

use super::StoreError;
use crate::ingest::otel::assemble::ContentRecord;
use crate::ingest::otel::span::SpanRecord;
use crate::model::{Outcome, Step};
use serde::{Deserialize, Serialize};

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

/// The append-only log the scorer is rebuilt from.
pub trait Log: Send + Sync {
    /// Appends records atomically (one transaction); duplicates of stored
    /// records are skipped and counted. The append is visible at once and
    /// durable once a later [`Log::sync`] returns.
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
    /// The OTLP requests stored at these positions, each once, in log
    /// order (replay re-assembles a session from them).
    fn requests(&self, positions: &[i64]) -> Result<Vec<OtlpRequest>, StoreError>;
    /// Every native step of a session as received, in `seq` order.
    fn session_steps(&self, session_id: &str) -> Result<Vec<RawStep>, StoreError>;
    /// Native sessions whose steps carry this correlation id (multi-agent tasks).
    fn correlated_sessions(&self, correlation_id: &str) -> Result<Vec<String>, StoreError>;
    /// Number of native steps and OTLP trace requests stored.
    fn step_count(&self) -> Result<u64, StoreError>;
    /// Checks the log answers (readiness).
    fn ping(&self) -> Result<(), StoreError>;
}

/// A native step as it was received, for replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawStep {
    /// Its `seq`.
    pub seq: u64,
    /// The record as sent (NDJSON line), or its JSON rendering.
    pub raw: String,
}
