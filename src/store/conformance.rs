//! The store conformance suite: every backend runs these same tests
//! (`store_suite!(name, factory)`), so a new backend is correct when it
//! passes them.

use super::*;
use crate::detect::event::DriftEvent;
use crate::engine::{CloseReason, ClosedSession};
use crate::features::SessionFeatures;
use crate::model::{OutcomeSource, SegmentKey, StepKind};

/// A fresh, empty store and a way to reopen the same storage.
pub trait Backend {
    /// The store.
    fn store(&self) -> &dyn Store;
    /// Drops and reopens the same storage.
    fn reopen(&mut self);
}

fn step(session: &str, seq: u64) -> NewRecord {
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

fn raw_of(r: &NewRecord) -> &str {
    match r {
        NewRecord::Step(n) => &n.raw,
        NewRecord::Outcome { raw, .. } => raw,
        NewRecord::Otlp { .. } => "",
    }
}

fn otlp(signal: OtlpSignal, body: &[u8]) -> NewRecord {
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

fn event(id: &str, segment: &str, detector: &str, session: &str, ts: i64) -> DriftEvent {
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
    }
}

/// Appends are atomic, durable after `sync`, deduplicated by (session, seq), and keep the raw bytes.
pub fn appends_dedup_and_keep_raw(b: &mut dyn Backend) {
    let s = b.store();
    s.sync().expect("a sync with nothing written succeeds");
    let first = s.append(&[step("a1", 0), step("a1", 1), step("b1", 0)], 5).unwrap();
    assert_eq!(first.stored.len(), 3);
    assert_eq!(first.duplicates, 0);
    let again = s.append(&[step("a1", 1), step("a1", 2)], 6).unwrap();
    assert_eq!(again.duplicates, 1);
    assert_eq!(again.stored.iter().map(|x| x.index).collect::<Vec<_>>(), vec![1]);
    assert_eq!(s.step_count().unwrap(), 4);
    s.sync().unwrap();
    b.reopen();
    let s = b.store();
    let steps = s.session_steps("a1").unwrap();
    assert_eq!(steps.iter().map(|x| x.0).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(steps[1].1, raw_of(&step("a1", 1)), "raw bytes as received");
    let log = s.log_after(0, 100).unwrap();
    assert_eq!(log.len(), 4);
    assert!(log.windows(2).all(|w| w[0].id() < w[1].id()));
    assert_eq!(s.log_after(log[1].id(), 1).unwrap().len(), 1);
}

/// OTLP requests are stored whole, once (the same bytes again are a
/// duplicate), come back from the log as received, and are found again
/// through the traces a session was linked to.
pub fn otlp_requests_and_links(b: &mut dyn Backend) {
    let s = b.store();
    let r = s
        .append(
            &[otlp(OtlpSignal::Traces, b"spans-1"), otlp(OtlpSignal::Logs, b"logs-1")],
            1,
        )
        .unwrap();
    assert_eq!((r.stored.len(), r.duplicates), (2, 0));
    let r = s
        .append(
            &[
                otlp(OtlpSignal::Traces, b"spans-1"),
                otlp(OtlpSignal::Traces, b"spans-2"),
            ],
            2,
        )
        .unwrap();
    assert_eq!(r.duplicates, 1, "the same request twice is stored once");
    assert_eq!(r.stored.iter().map(|x| x.index).collect::<Vec<_>>(), vec![1]);
    let log = s.log_after(0, 100).unwrap();
    assert_eq!(log.len(), 3);
    let ids: Vec<i64> = log.iter().map(LogEntry::id).collect();
    match (&log[0], &log[1]) {
        (
            LogEntry::Otlp {
                request,
                received_ms,
                records,
                ..
            },
            LogEntry::Otlp { request: logs, .. },
        ) => {
            assert_eq!(
                (request.signal, &request.body[..], *received_ms),
                (OtlpSignal::Traces, &b"spans-1"[..], 1)
            );
            assert!(
                records.is_none(),
                "the store gives the bytes back; the reader maps them"
            );
            assert_eq!((logs.signal, logs.encoding), (OtlpSignal::Logs, OtlpEncoding::Proto));
        }
        other => panic!("{other:?}"),
    }
    let id = s.append_settle("t1", ids[2], 77).unwrap();
    match &s.log_after(ids[2], 10).unwrap()[0] {
        LogEntry::Settle {
            id: got,
            after,
            received_ms,
            trace_id,
        } => {
            assert_eq!((*got, *after, *received_ms, trace_id.as_str()), (id, ids[2], 77, "t1"));
        }
        other => panic!("{other:?}"),
    }
    // Links: which traces make a session, which requests hold a trace.
    let d = Derived {
        links: vec![
            ("t1".into(), "conv".into()),
            ("t1".into(), "conv".into()),
            ("t2".into(), "conv".into()),
        ],
        request_links: vec![
            ("t1".into(), ids[0]),
            ("t1".into(), ids[1]),
            ("t2".into(), ids[2]),
            ("t9".into(), ids[2]),
        ],
        ..Derived::default()
    };
    assert!(s.store_derived(&d).unwrap().is_empty());
    let (traces, requests) = s.session_requests("conv").unwrap();
    assert_eq!(traces, ["t1", "t2"]);
    assert_eq!(
        requests.iter().map(|r| &r.body[..]).collect::<Vec<_>>(),
        [&b"spans-1"[..], &b"logs-1"[..], &b"spans-2"[..]],
        "each request once, in log order"
    );
    assert!(s.session_requests("other").unwrap().1.is_empty());
    assert_eq!(s.correlated_sessions("t2").unwrap(), ["conv"]);
    // Outcomes reported later sit in the log too.
    let report = OutcomeReport {
        session_id: "d1".into(),
        outcome: Outcome::Failure,
        reward: Some(0.0),
    };
    let r = s
        .append(
            &[NewRecord::Outcome {
                raw: serde_json::to_string(&report).unwrap(),
                report: report.clone(),
            }],
            9,
        )
        .unwrap();
    match &s.log_after(r.stored[0].id - 1, 1).unwrap()[0] {
        LogEntry::Outcome {
            report: got,
            received_ms,
            ..
        } => assert_eq!((got, *received_ms), (&report, 9)),
        other => panic!("{other:?}"),
    }
}

/// Session rows upsert field by field and page in first-seen order with filters.
pub fn session_rows(b: &mut dyn Backend) {
    let s = b.store();
    let row = |id: &str, agent: &str, scored: bool| SessionRow {
        session_id: id.into(),
        agent: Some(agent.into()),
        segment: scored.then(|| format!("{agent}/x")),
        scored: Some(scored),
        identity: Some("native".into()),
        status: Some("open".into()),
        steps: Some(1),
        first_ts: Some(10),
        last_ts: Some(10),
        ..SessionRow::default()
    };
    s.upsert_session_rows(&[row("s1", "a", true), row("s2", "b", false), row("s3", "a", true)])
        .unwrap();
    s.upsert_session_rows(&[SessionRow {
        session_id: "s1".into(),
        status: Some("closed".into()),
        steps: Some(7),
        outcome: Some(Outcome::Success),
        outcome_source: Some("explicit".into()),
        last_ts: Some(99),
        ..SessionRow::default()
    }])
    .unwrap();
    let one = s.session_row("s1").unwrap().unwrap();
    assert_eq!(
        (
            one.agent.as_deref(),
            one.status.as_deref(),
            one.steps,
            one.outcome,
            one.last_ts,
            one.first_ts
        ),
        (
            Some("a"),
            Some("closed"),
            Some(7),
            Some(Outcome::Success),
            Some(99),
            Some(10)
        ),
        "an update keeps what it does not name"
    );
    let mut q = SessionQuery {
        limit: 2,
        ..SessionQuery::default()
    };
    let p1 = s.sessions_page(&q).unwrap();
    assert_eq!(
        p1.sessions.iter().map(|r| r.session_id.as_str()).collect::<Vec<_>>(),
        ["s1", "s2"]
    );
    q.cursor = p1.next_cursor;
    let p2 = s.sessions_page(&q).unwrap();
    assert_eq!((p2.sessions.len(), p2.next_cursor), (1, None));
    let agent_a = s
        .sessions_page(&SessionQuery {
            agent: Some("a".into()),
            scored: Some(true),
            since: Some(50),
            limit: 10,
            ..SessionQuery::default()
        })
        .unwrap();
    assert_eq!(
        agent_a
            .sessions
            .iter()
            .map(|r| r.session_id.as_str())
            .collect::<Vec<_>>(),
        ["s1"]
    );
    assert!(s.session_row("nope").unwrap().is_none());
}

/// Close markers sit in the log with the position they were decided at.
pub fn close_markers(b: &mut dyn Backend) {
    let s = b.store();
    let r = s.append(&[step("c1", 0)], 1).unwrap();
    let pos = r.stored[0].id;
    let id = s.append_close("c1", pos, 42).unwrap();
    assert!(id > pos);
    match &s.log_after(pos, 10).unwrap()[0] {
        LogEntry::Close {
            after,
            session_id,
            received_ms,
            ..
        } => {
            assert_eq!((*after, session_id.as_str(), *received_ms), (pos, "c1", 42));
        }
        other => panic!("{other:?}"),
    }
}

/// Events insert idempotently and page by cursor with filters.
pub fn events_are_idempotent_and_filterable(b: &mut dyn Backend) {
    let s = b.store();
    let evs: Vec<DriftEvent> = (0..7)
        .map(|i| {
            event(
                &format!("e{i}"),
                if i % 2 == 0 { "a/x" } else { "b/y" },
                if i < 4 { "ewma:steps" } else { "markov" },
                &format!("s{}", i % 3),
                100 + i,
            )
        })
        .collect();
    assert_eq!(s.insert_events(&evs).unwrap().len(), 7);
    assert_eq!(s.insert_events(&evs[..3]).unwrap().len(), 0, "no duplicates");
    let mut q = EventQuery {
        limit: 3,
        ..EventQuery::default()
    };
    let p1 = s.events(&q).unwrap();
    assert_eq!(
        p1.events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["e0", "e1", "e2"]
    );
    q.cursor = p1.next_cursor;
    let p2 = s.events(&q).unwrap();
    assert_eq!(p2.events[0].id, "e3");
    q.cursor = p2.next_cursor;
    let p3 = s.events(&q).unwrap();
    assert_eq!(p3.events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["e6"]);
    assert_eq!(p3.next_cursor, None);
    let seg = s
        .events(&EventQuery {
            segment: Some("a/x".into()),
            limit: 100,
            ..EventQuery::default()
        })
        .unwrap();
    assert_eq!(seg.events.len(), 4);
    let fam = s
        .events(&EventQuery {
            detector: Some("ewma".into()),
            limit: 100,
            ..EventQuery::default()
        })
        .unwrap();
    assert_eq!(fam.events.len(), 4, "a family matches its detectors");
    let det = s
        .events(&EventQuery {
            detector: Some("markov".into()),
            since: Some(105),
            limit: 100,
            ..EventQuery::default()
        })
        .unwrap();
    assert_eq!(
        det.events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["e5", "e6"]
    );
    let ses = s
        .events(&EventQuery {
            session: Some("s1".into()),
            limit: 100,
            ..EventQuery::default()
        })
        .unwrap();
    assert_eq!(ses.events.len(), 2);
    // Newest first, paged, with a filter.
    let mut q = EventQuery {
        segment: Some("a/x".into()),
        limit: 3,
        newest_first: true,
        ..EventQuery::default()
    };
    let n1 = s.events(&q).unwrap();
    assert_eq!(
        n1.events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["e6", "e4", "e2"]
    );
    q.cursor = n1.next_cursor;
    let n2 = s.events(&q).unwrap();
    assert_eq!(n2.events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["e0"]);
    assert_eq!(n2.next_cursor, None);
    assert_eq!(s.event("e4").unwrap().unwrap(), evs[4]);
    assert!(s.event("nope").unwrap().is_none());
}

/// Closed sessions, snapshots and correlation.
pub fn sessions_snapshots_correlation(b: &mut dyn Backend) {
    let s = b.store();
    let closed = |id: &str, ms: i64| StoredSession {
        closed: ClosedSession {
            session_id: id.into(),
            segment: Some(SegmentKey::new("a", "x")),
            fallback_from: None,
            reason: CloseReason::End,
            features: SessionFeatures {
                values: vec![Some(1.0)],
                outcome: None,
                reward: None,
                error_classes: Default::default(),
                confident: false,
                states: Vec::new(),
                tool_counts: Default::default(),
                max_cycle_reps: [1; 4],
                total_steps: 1,
            },
            steps: 1,
            last_ts: ms,
            outcome_source: None,
            agent: Some("a".into()),
            first_ts: Some(ms),
            trace_id: None,
        },
        closed_ms: ms,
    };
    s.insert_sessions(&[closed("x1", 1), closed("x2", 2)]).unwrap();
    let mut later = closed("x1", 3);
    later.closed.features.outcome = Some(Outcome::Success);
    s.insert_sessions(&[later]).unwrap();
    let x1 = s.session("x1").unwrap().unwrap();
    assert_eq!(x1.closed_ms, 1, "the first close time stays");
    assert_eq!(
        x1.closed.features.outcome,
        Some(Outcome::Success),
        "a newer body replaces the old"
    );
    s.upsert_session_rows(&[SessionRow {
        session_id: "x2".into(),
        status: Some("closed".into()),
        ..SessionRow::default()
    }])
    .unwrap();
    s.set_session_outcome("x2", Outcome::Failure, Some(0.0), OutcomeSource::Explicit)
        .unwrap();
    let x2 = s.session("x2").unwrap().unwrap();
    assert_eq!(
        (
            x2.closed.features.outcome,
            x2.closed.features.reward,
            x2.closed.outcome_source
        ),
        (Some(Outcome::Failure), Some(0.0), Some(OutcomeSource::Explicit))
    );
    assert_eq!(s.session_row("x2").unwrap().unwrap().outcome, Some(Outcome::Failure));
    let recent = s.segment_sessions("a/x", 10).unwrap();
    assert_eq!(
        recent.iter().map(|x| x.closed.session_id.as_str()).collect::<Vec<_>>(),
        ["x2", "x1"]
    );
    assert!(s.snapshot().unwrap().is_none());
    for pos in [5, 9] {
        s.save_snapshot(&Snapshot {
            position: pos,
            baseline_id: "b".into(),
            state: vec![1, 2, pos as u8],
            obsolete: Vec::new(),
        })
        .unwrap();
    }
    b.reopen();
    let s = b.store();
    assert_eq!(s.snapshot().unwrap().unwrap().position, 9);
    s.append(&[step("m1", 0), step("m2", 0), step("z9", 0)], 1).unwrap();
    assert_eq!(s.correlated_sessions("corr-m").unwrap(), ["m1", "m2"]);
    s.ping().unwrap();
}

/// Saved session states: written rows read back, a snapshot deletes the
/// rows it supersedes in its own transaction, the start sweep keeps only
/// the named rows, and all of it survives a reopen.
pub fn session_states(b: &mut dyn Backend) {
    use crate::engine::saved::StateRow;
    let row = |id: &str, v: u64| StateRow {
        session_id: id.into(),
        version: v,
        last_seen_ms: 1000 + v as i64,
        last_pos: 10 * v as i64,
        state: format!("{id}@{v}").into_bytes(),
    };
    let s = b.store();
    assert_eq!(s.session_state("a", 1).unwrap(), None);
    s.save_session_states(&[row("a", 1), row("b", 2), row("a", 3)]).unwrap();
    assert_eq!(s.session_state("a", 1).unwrap().unwrap(), b"a@1");
    assert_eq!(s.session_state("a", 3).unwrap().unwrap(), b"a@3");
    assert_eq!(s.session_state("b", 3).unwrap(), None);
    // Per session the newest row up to a version, with its idle clock.
    let refs = |max: u64| {
        let mut v: Vec<(String, u64, i64, i64)> = s
            .session_state_refs(max)
            .unwrap()
            .into_iter()
            .map(|(k, r)| (k, r.version, r.last_seen_ms, r.last_pos))
            .collect();
        v.sort();
        v
    };
    assert_eq!(refs(3), [("a".into(), 3, 1003, 30), ("b".into(), 2, 1002, 20)]);
    assert_eq!(refs(2), [("a".into(), 1, 1001, 10), ("b".into(), 2, 1002, 20)]);
    assert_eq!(refs(0), []);
    s.save_snapshot(&Snapshot {
        position: 7,
        baseline_id: "b".into(),
        state: vec![7],
        obsolete: vec![("a".into(), 1)],
    })
    .unwrap();
    assert_eq!(s.session_state("a", 1).unwrap(), None);
    assert_eq!(s.session_state("a", 3).unwrap().unwrap(), b"a@3");
    s.save_session_states(&[row("c", 4)]).unwrap();
    b.reopen();
    let s = b.store();
    assert_eq!(s.snapshot().unwrap().unwrap().position, 7);
    assert_eq!(s.session_state("c", 4).unwrap().unwrap(), b"c@4");
    let dropped = s.retain_session_states(&[("a".into(), 3), ("b".into(), 2)]).unwrap();
    assert_eq!(dropped, 1);
    assert_eq!(s.session_state("c", 4).unwrap(), None);
    assert_eq!(s.session_state("b", 2).unwrap().unwrap(), b"b@2");
    assert_eq!(s.retain_session_states(&[]).unwrap(), 2);
    assert_eq!(s.session_state("a", 3).unwrap(), None);
}

/// Instantiates the suite for a backend factory `fn() -> impl Backend`.
#[macro_export]
macro_rules! store_suite {
    ($name:ident, $factory:expr) => {
        mod $name {
            #[test]
            fn appends_dedup_and_keep_raw() {
                $crate::store::conformance::appends_dedup_and_keep_raw(&mut $factory());
            }
            #[test]
            fn session_states() {
                $crate::store::conformance::session_states(&mut $factory());
            }
            #[test]
            fn otlp_requests_and_links() {
                $crate::store::conformance::otlp_requests_and_links(&mut $factory());
            }
            #[test]
            fn session_rows() {
                $crate::store::conformance::session_rows(&mut $factory());
            }
            #[test]
            fn close_markers() {
                $crate::store::conformance::close_markers(&mut $factory());
            }
            #[test]
            fn events_are_idempotent_and_filterable() {
                $crate::store::conformance::events_are_idempotent_and_filterable(&mut $factory());
            }
            #[test]
            fn sessions_snapshots_correlation() {
                $crate::store::conformance::sessions_snapshots_correlation(&mut $factory());
            }
        }
    };
}

/// SQLite in a temporary directory.
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
}

impl Backend for SqliteBackend {
    fn store(&self) -> &dyn Store {
        self.store.as_ref().expect("open")
    }
    fn reopen(&mut self) {
        self.store = None;
        self.store = Some(super::sqlite::SqliteStore::open(self.dir.path()).expect("reopen"));
    }
}

crate::store_suite!(sqlite_suite, crate::store::conformance::SqliteBackend::fresh);
