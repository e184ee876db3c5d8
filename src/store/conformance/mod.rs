//! The conformance suites every backend runs: `log_suite!(name, factory)`
//! for a [`Log`], `store_suite!(name, factory)` for a query [`Store`]. A new
//! backend (PostgreSQL, NATS JetStream) is correct when it passes the suite
//! of what it provides.

pub mod log;
pub mod store;

use super::*;
use crate::detect::event::DriftEvent;
use crate::engine::{CloseReason, ClosedSession};
use crate::features::SessionFeatures;
use crate::model::{OutcomeSource, SegmentKey, Step, StepKind};

/// A fresh, empty log and a way to reopen the same storage.
pub trait LogBackend {
    /// The log.
    fn log(&self) -> &dyn Log;
    /// Drops and reopens the same storage.
    fn reopen(&mut self);
}

/// A fresh, empty query store and a way to reopen the same storage.
pub trait StoreBackend {
    /// The store.
    fn store(&self) -> &dyn Store;
    /// Drops and reopens the same storage.
    fn reopen(&mut self);
}

pub(crate) fn step(session: &str, seq: u64) -> NewRecord {
    let mut s = Step::new(session, seq, 1000 + seq as i64, StepKind::Llm, "agent");
    s.correlation_id = Some(format!("corr-{}", &session[..1]));
    NewRecord::Step(NewStep {
        raw: format!(
            "{{\"session_id\":\"{session}\", \"seq\":{seq}, \"ts\":{}, \"kind\":\"llm\",\"agent\":\"agent\"}}",
            1000 + seq
        ),
        step: s,
    })
}

pub(crate) fn raw_of(r: &NewRecord) -> &str {
    match r {
        NewRecord::Step(n) => &n.raw,
        NewRecord::Outcome { raw, .. } => raw,
        NewRecord::Otlp { .. } => "",
    }
}

pub(crate) fn otlp(signal: OtlpSignal, body: &[u8]) -> NewRecord {
    use sha2::Digest;
    NewRecord::Otlp {
        digest: sha2::Sha256::digest(body).into(),
        request: OtlpRequest {
            signal,
            encoding: OtlpEncoding::Proto,
            body: bytes::Bytes::copy_from_slice(body),
        },
        records: OtlpRecords::Spans(Vec::new()),
    }
}

pub(crate) fn event(id: &str, segment: &str, detector: &str, session: &str, ts: i64) -> DriftEvent {
    let (agent, task) = segment.split_once('/').unwrap();
    DriftEvent {
        id: id.into(),
        detector: detector.into(),
        kind: detector.split(':').next().unwrap().into(),
        segment: SegmentKey::new(agent, task),
        fallback_from: None,
        session_id: session.into(),
        seq: None,
        ts,
        statistic: 1.0,
        limit: 0.5,
        p_value: None,
        direction: None,
        moved: Vec::new(),
        exemplars: vec![session.into()],
        observations: Vec::new(),
        message: "m".into(),
        grounding: None,
    }
}

/// Instantiates the log suite for a backend factory `fn() -> impl LogBackend`.
#[macro_export]
macro_rules! log_suite {
    ($name:ident, $factory:expr) => {
        mod $name {
            use $crate::store::conformance::log as suite;
            #[test]
            fn appends_dedup_and_keep_raw() {
                suite::appends_dedup_and_keep_raw(&mut $factory());
            }
            #[test]
            fn otlp_requests() {
                suite::otlp_requests(&mut $factory());
            }
            #[test]
            fn close_markers() {
                suite::close_markers(&mut $factory());
            }
            #[test]
            fn correlation() {
                suite::correlation(&mut $factory());
            }
        }
    };
}

/// Instantiates the store suite for a backend factory `fn() -> impl StoreBackend`.
#[macro_export]
macro_rules! store_suite {
    ($name:ident, $factory:expr) => {
        mod $name {
            use $crate::store::conformance::store as suite;
            #[test]
            fn session_rows() {
                suite::session_rows(&mut $factory());
            }
            #[test]
            fn events_are_idempotent_and_filterable() {
                suite::events_are_idempotent_and_filterable(&mut $factory());
            }
            #[test]
            fn consumers_resume_from_their_cursor() {
                suite::consumers_resume_from_their_cursor(&mut $factory());
            }
            #[test]
            fn sessions_and_snapshots() {
                suite::sessions_and_snapshots(&mut $factory());
            }
            #[test]
            fn session_states() {
                suite::session_states(&mut $factory());
            }
            #[test]
            fn trace_links() {
                suite::trace_links(&mut $factory());
            }
        }
    };
}

/// SQLite in a temporary directory (it provides both the log and the store).
pub struct SqliteBackend {
    dir: tempfile::TempDir,
    store: Option<super::sqlite::SqliteStore>,
}

impl SqliteBackend {
    /// A fresh store.
    pub fn fresh() -> SqliteBackend {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = super::sqlite::SqliteStore::open(dir.path()).expect("open");
        SqliteBackend {
            dir,
            store: Some(store),
        }
    }

    fn reopen_sqlite(&mut self) {
        self.store = None;
        self.store = Some(super::sqlite::SqliteStore::open(self.dir.path()).expect("reopen"));
    }
}

impl LogBackend for SqliteBackend {
    fn log(&self) -> &dyn Log {
        self.store.as_ref().expect("open")
    }
    fn reopen(&mut self) {
        self.reopen_sqlite();
    }
}

impl StoreBackend for SqliteBackend {
    fn store(&self) -> &dyn Store {
        self.store.as_ref().expect("open")
    }
    fn reopen(&mut self) {
        self.reopen_sqlite();
    }
}

crate::log_suite!(sqlite_log, crate::store::conformance::SqliteBackend::fresh);
crate::store_suite!(sqlite_store, crate::store::conformance::SqliteBackend::fresh);

/// Storage joins the store's trace links to the log's requests, and both
/// halves' correlations, whatever backends provide them.
#[test]
fn storage_joins_the_log_and_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::single(super::sqlite::SqliteStore::open(dir.path()).expect("open"));
    let r = storage
        .log
        .append(
            &[
                otlp(OtlpSignal::Traces, b"spans-1"),
                otlp(OtlpSignal::Logs, b"logs-1"),
                otlp(OtlpSignal::Traces, b"spans-2"),
                step("c1", 0),
            ],
            1,
        )
        .unwrap();
    let ids: Vec<i64> = r.stored.iter().map(|x| x.id).collect();
    let d = Derived {
        links: vec![
            ("t1".into(), "conv".into()),
            ("t2".into(), "conv".into()),
            ("corr-c".into(), "otel".into()),
        ],
        request_links: vec![("t2".into(), ids[2]), ("t1".into(), ids[0]), ("t1".into(), ids[1])],
        ..Derived::default()
    };
    storage.store.store_derived(&d).unwrap();
    let (traces, requests) = storage.session_requests("conv").unwrap();
    assert_eq!(traces, ["t1", "t2"]);
    assert_eq!(
        requests.iter().map(|r| &r.body[..]).collect::<Vec<_>>(),
        [&b"spans-1"[..], &b"logs-1"[..], &b"spans-2"[..]],
        "each request once, in log order"
    );
    assert!(storage.session_requests("other").unwrap().1.is_empty());
    assert_eq!(
        storage.correlated_sessions("corr-c").unwrap(),
        ["c1", "otel"],
        "a native session carrying the id and a session assembled from that trace"
    );
    storage.ping().unwrap();
}
