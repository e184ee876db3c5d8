//! The store conformance suite: every backend runs these same tests
//! (`store_suite!(name, factory)`), so a new backend is correct when it
//! passes them.

use super::*;
use crate::detect::event::DriftEvent;
use crate::engine::{CloseReason, ClosedSession};
use crate::features::SessionFeatures;
use crate::model::{SegmentKey, StepKind};

/// A fresh, empty store and a way to reopen the same storage.
pub trait Backend {
    /// The store.
    fn store(&self) -> &dyn Store;
    /// Drops and reopens the same storage.
    fn reopen(&mut self);
}

fn step(session: &str, seq: u64) -> NewStep {
    let mut s = Step::new(session, seq, 1000 + seq as i64, StepKind::Llm, "agent");
    s.correlation_id = Some(format!("corr-{}", &session[..1]));
    NewStep {
        raw: format!(
            "{{\"session_id\":\"{session}\", \"seq\":{seq}, \"ts\":{}, \"kind\":\"llm\",\"agent\":\"agent\"}}",
            1000 + seq
        ),
        step: s,
        assign_seq: false,
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
    let first = s
        .append_steps(&[step("a1", 0), step("a1", 1), step("b1", 0)], 5)
        .unwrap();
    assert_eq!(first.stored.len(), 3);
    assert_eq!(first.duplicates, 0);
    let again = s.append_steps(&[step("a1", 1), step("a1", 2)], 6).unwrap();
    assert_eq!(again.duplicates, 1);
    assert_eq!(
        again.stored.iter().map(|x| (x.0, x.2)).collect::<Vec<_>>(),
        vec![(1, 2)]
    );
    assert_eq!(s.step_count().unwrap(), 4);
    s.sync().unwrap();
    b.reopen();
    let s = b.store();
    let steps = s.session_steps("a1").unwrap();
    assert_eq!(steps.iter().map(|x| x.0).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(steps[1].1, step("a1", 1).raw, "raw bytes as received");
    let log = s.log_after(0, 100).unwrap();
    assert_eq!(log.len(), 4);
    assert!(log.windows(2).all(|w| w[0].id() < w[1].id()));
    assert_eq!(s.log_after(log[1].id(), 1).unwrap().len(), 1);
}

/// OTLP-style appends take the next free seq and deduplicate by span.
pub fn assigned_seq_and_span_dedup(b: &mut dyn Backend) {
    let s = b.store();
    let otlp = |span: &str| {
        let mut n = step("o1", 0);
        n.step.span_id = Some(span.into());
        n.assign_seq = true;
        n
    };
    let r = s.append_steps(&[otlp("aa"), otlp("bb")], 1).unwrap();
    assert_eq!(r.stored.iter().map(|x| x.2).collect::<Vec<_>>(), vec![0, 1]);
    let r = s.append_steps(&[otlp("bb"), otlp("cc")], 2).unwrap();
    assert_eq!(r.duplicates, 1);
    assert_eq!(
        r.stored.iter().map(|x| x.2).collect::<Vec<_>>(),
        vec![2],
        "no seq consumed by the duplicate"
    );
    let stored = s.session_steps("o1").unwrap();
    assert!(
        stored[2].1.contains("\"seq\":2"),
        "stored JSON carries the assigned seq: {}",
        stored[2].1
    );
}

/// Close markers sit in the log with the position they were decided at.
pub fn close_markers(b: &mut dyn Backend) {
    let s = b.store();
    let r = s.append_steps(&[step("c1", 0)], 1).unwrap();
    let pos = r.stored[0].1;
    let id = s.append_close("c1", pos).unwrap();
    assert!(id > pos);
    match &s.log_after(pos, 10).unwrap()[0] {
        LogEntry::Close { after, session_id, .. } => {
            assert_eq!((*after, session_id.as_str()), (pos, "c1"));
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
        },
        closed_ms: ms,
    };
    s.insert_sessions(&[closed("x1", 1), closed("x2", 2)]).unwrap();
    s.insert_sessions(&[closed("x1", 3)]).unwrap();
    assert_eq!(s.session("x1").unwrap().unwrap().closed_ms, 1, "first close wins");
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
    s.append_steps(&[step("m1", 0), step("m2", 0), step("z9", 0)], 1)
        .unwrap();
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
            fn assigned_seq_and_span_dedup() {
                $crate::store::conformance::assigned_seq_and_span_dedup(&mut $factory());
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
