//! The store conformance suite: every backend runs these same tests
//! (`store_suite!(name, factory)`), so a new backend is correct when it
//! passes them.

use super::*;
use crate::detect::event::DriftEvent;
use crate::engine::{CloseReason, ClosedSession};
use crate::features::SessionFeatures;
use crate::ingest::otel::span::SpanRole;
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
        NewRecord::Span { raw, .. } | NewRecord::Content { raw, .. } | NewRecord::Outcome { raw, .. } => raw,
    }
}

fn span(trace: &str, id: &str) -> NewRecord {
    let rec = SpanRecord {
        trace_id: trace.into(),
        span_id: id.into(),
        parent: None,
        name: "chat".into(),
        start_ns: 1,
        end_ns: 2,
        role: SpanRole::Llm,
        agent: None,
        session: Some("conv".into()),
        task_type: None,
        resource: Default::default(),
        error: false,
        step: None,
        input_tail: Vec::new(),
        input_has_assistant: false,
        tool_calls: Vec::new(),
        outcome: None,
    };
    NewRecord::Span {
        raw: serde_json::to_string(&rec).unwrap(),
        span: Box::new(rec),
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

/// Spans deduplicate by (trace, span), content by its key; both come back
/// from the log whole; derived steps join native ones in replay order.
pub fn spans_content_and_derived_steps(b: &mut dyn Backend) {
    let s = b.store();
    let r = s.append(&[span("t1", "aa"), span("t1", "bb")], 1).unwrap();
    assert_eq!((r.stored.len(), r.duplicates), (2, 0));
    let content = ContentRecord {
        trace_id: "t1".into(),
        span_id: "aa".into(),
        time_ns: 5,
        input_tail: Vec::new(),
        input_has_assistant: false,
        output: Vec::new(),
        evaluation: None,
    };
    let c = || NewRecord::Content {
        raw: serde_json::to_string(&content).unwrap(),
        content: Box::new(content.clone()),
        key: "aa#1".into(),
    };
    let r = s.append(&[span("t1", "bb"), span("t2", "bb"), c(), c()], 2).unwrap();
    assert_eq!(
        r.duplicates, 2,
        "the same span of the same trace, and the same content, once each"
    );
    assert_eq!(r.stored.iter().map(|x| x.index).collect::<Vec<_>>(), vec![1, 2]);
    let log = s.log_after(0, 100).unwrap();
    assert_eq!(log.len(), 4);
    match (&log[0], &log[3]) {
        (LogEntry::Span { span, received_ms, .. }, LogEntry::Content { content: got, .. }) => {
            assert_eq!((span.span_id.as_str(), *received_ms), ("aa", 1));
            assert_eq!(**got, content);
        }
        other => panic!("{other:?}"),
    }
    let id = s.append_settle("t1", log[3].id(), 77).unwrap();
    match &s.log_after(log[3].id(), 10).unwrap()[0] {
        LogEntry::Settle {
            id: got,
            after,
            received_ms,
            trace_id,
        } => {
            assert_eq!(
                (*got, *after, *received_ms, trace_id.as_str()),
                (id, log[3].id(), 77, "t1")
            );
        }
        other => panic!("{other:?}"),
    }
    // Derived steps: upserted by key, merged with native steps by seq, patched later.
    s.append(&[step("d1", 1)], 3).unwrap();
    let derived = |key: &str, seq: u64, text: &str| DerivedStep {
        session_id: "d1".into(),
        key: key.into(),
        seq,
        correlation_id: Some("t9".into()),
        raw: format!("{{\"seq\":{seq},\"text\":\"{text}\"}}"),
    };
    s.insert_derived(&[derived("x", 0, "a"), derived("y", 2, "b")]).unwrap();
    s.insert_derived(&[derived("y", 2, "b")]).unwrap();
    s.patch_derived(&[DerivedPatch {
        session_id: "d1".into(),
        key: "y".into(),
        text: Some("late".into()),
        tool_calls_requested: Some(2),
    }])
    .unwrap();
    let steps = s.session_steps("d1").unwrap();
    assert_eq!(steps.iter().map(|x| x.0).collect::<Vec<_>>(), vec![0, 1, 2]);
    let patched: serde_json::Value = serde_json::from_str(&steps[2].1).unwrap();
    assert_eq!(
        (patched["text"].as_str(), patched["tool_calls_requested"].as_u64()),
        (Some("late"), Some(2))
    );
    assert_eq!(s.correlated_sessions("t9").unwrap(), ["d1"]);
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
            fn spans_content_and_derived_steps() {
                $crate::store::conformance::spans_content_and_derived_steps(&mut $factory());
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
