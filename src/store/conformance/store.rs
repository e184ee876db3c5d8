//! The query store's conformance suite (`store_suite!`): events, closed
//! sessions, the session listing, trace links, snapshots, session states.

use super::*;

/// Session rows upsert field by field and page in first-seen order with filters.
pub fn session_rows(b: &mut dyn StoreBackend) {
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

/// Events insert idempotently and page by cursor with filters.
pub fn events_are_idempotent_and_filterable(b: &mut dyn StoreBackend) {
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

/// A consumer reads events after its cursor in the order they were stored,
/// sees its lag, and finds its saved cursor again after a reopen.
pub fn consumers_resume_from_their_cursor(b: &mut dyn StoreBackend) {
    let s = b.store();
    assert_eq!(s.last_event_position().unwrap(), 0, "empty store");
    assert!(s.events_after(0, 10).unwrap().is_empty());
    assert_eq!(s.cursor("sink:a").unwrap(), None);
    let evs: Vec<DriftEvent> = (0..5)
        .map(|i| event(&format!("c{i}"), "a/x", "markov", "s", 100 + i))
        .collect();
    s.insert_events(&evs[..3]).unwrap();
    let first = s.events_after(0, 2).unwrap();
    assert_eq!(
        first.iter().map(|(_, e)| e.id.as_str()).collect::<Vec<_>>(),
        ["c0", "c1"]
    );
    assert!(first[0].0 < first[1].0, "positions rise in storage order");
    assert_eq!(first[1].1, evs[1], "the whole event comes back");
    let at = first[1].0;
    assert_eq!(s.events_count_after(at).unwrap(), 1);
    assert_eq!(s.events_count_after(0).unwrap(), 3);
    s.set_cursor("sink:a", at).unwrap();
    s.set_cursor("sink:b", 0).unwrap();
    // Re-inserting stored events adds nothing after the cursor; new ones come after it.
    s.insert_events(&evs).unwrap();
    let rest = s.events_after(at, 100).unwrap();
    assert_eq!(
        rest.iter().map(|(_, e)| e.id.as_str()).collect::<Vec<_>>(),
        ["c2", "c3", "c4"]
    );
    assert_eq!(s.last_event_position().unwrap(), rest[2].0);
    assert_eq!(s.events_count_after(at).unwrap(), 3);
    b.reopen();
    let s = b.store();
    assert_eq!(s.cursor("sink:a").unwrap(), Some(at), "a cursor survives a reopen");
    assert_eq!(s.cursor("sink:b").unwrap(), Some(0));
    s.set_cursor("sink:a", rest[2].0).unwrap();
    assert_eq!(s.cursor("sink:a").unwrap(), Some(rest[2].0), "saving again moves it");
    assert!(s.events_after(rest[2].0, 100).unwrap().is_empty());
}

/// Closed sessions keep their first close time and take later outcomes; the latest snapshot survives a reopen.
pub fn sessions_and_snapshots(b: &mut dyn StoreBackend) {
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
                escalation_requested: false,
                inferred_error_classes: Default::default(),
                intent: None,
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
    s.ping().unwrap();
}

/// Saved session states: written rows read back, a snapshot deletes the
/// rows it supersedes in its own transaction, the start sweep keeps only
/// the named rows, and all of it survives a reopen.
pub fn session_states(b: &mut dyn StoreBackend) {
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

/// Which traces make a session and which log positions hold their
/// requests: each once, sorted, kept across a reopen.
pub fn trace_links(b: &mut dyn StoreBackend) {
    let s = b.store();
    let d = Derived {
        links: vec![
            ("t1".into(), "conv".into()),
            ("t1".into(), "conv".into()),
            ("t2".into(), "conv".into()),
            ("t2".into(), "other".into()),
        ],
        request_links: vec![
            ("t1".into(), 12),
            ("t1".into(), 11),
            ("t2".into(), 13),
            ("t9".into(), 14),
        ],
        ..Derived::default()
    };
    assert!(s.store_derived(&d).unwrap().is_empty());
    b.reopen();
    let s = b.store();
    assert_eq!(
        s.session_traces("conv").unwrap(),
        SessionTraces {
            traces: vec!["t1".into(), "t2".into()],
            requests: vec![11, 12, 13],
        }
    );
    assert_eq!(s.session_traces("nobody").unwrap(), SessionTraces::default());
    assert_eq!(s.trace_sessions("t2").unwrap(), ["conv", "other"]);
    assert!(
        s.trace_sessions("t9").unwrap().is_empty(),
        "a request link alone makes no session"
    );
}
