//! Property tests of the detector library: any finite input never panics and
//! keeps state bounded; NaN and infinities are rejected with an error.

use agentdrift::baseline::TrainConfig;
use agentdrift::baseline::train::train;
use agentdrift::engine::Scorer;
use agentdrift::model::{PriceTable, Status, Step, StepKind};
use agentdrift::spc::bernoulli::{BernoulliCusum, BernoulliDesign};
use agentdrift::spc::cusum::{Cusum, CusumDesign};
use agentdrift::spc::ewma::{Ewma, EwmaDesign, EwmaLimits};
use agentdrift::spc::hotelling::HotellingT2;
use agentdrift::spc::shewhart::{Rules, Shewhart, ShewhartDesign};
use agentdrift::spc::{ChartError, Direction};
use proptest::prelude::*;
use std::sync::{Arc, OnceLock};

fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        -1e6f64..1e6,
        -5.0f64..5.0,
        Just(0.0),
        Just(f64::MAX),
        Just(f64::MIN),
        Just(1e-300)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn charts_take_any_finite_sequence(xs in proptest::collection::vec(finite(), 0..300)) {
        let mut e = Ewma::new(EwmaDesign::new(0.2, 3.0, EwmaLimits::Fir { f: 0.5, a: 0.3 }).unwrap());
        let mut c = Cusum::new(CusumDesign::new(0.5, 4.0, 0.5).unwrap());
        let mut s = Shewhart::new(ShewhartDesign::new(Rules::ALL, 3.0).unwrap());
        let t = HotellingT2 { mean: vec![0.0, 0.0], inv_cov: vec![1.0, 0.0, 0.0, 1.0], ucl: 10.0 };
        for w in xs.windows(2) {
            for sig in [e.observe(w[0]).unwrap(), c.observe(w[0]).unwrap(), s.observe(w[0]).unwrap(), t.observe(w).unwrap()]
                .into_iter()
                .flatten()
            {
                prop_assert!(!sig.limit.is_nan());
            }
        }
        prop_assert!(e.statistic().is_finite() || e.statistic().is_infinite());
    }

    #[test]
    fn shewhart_signals_name_the_bound_their_rule_crossed(xs in proptest::collection::vec(-4.0f64..4.0, 0..300)) {
        let d = ShewhartDesign::new(Rules::ALL, 3.0).unwrap();
        let mut s = Shewhart::new(d);
        for x in xs {
            if let Some(sig) = s.observe(x).unwrap() {
                let rule = sig.rule.unwrap();
                let expected = [3.0, 2.0, 1.0, 0.0][usize::from(rule) - 1];
                prop_assert!((sig.limit - expected).abs() < 1e-12, "rule {} limit {}", rule, sig.limit);
                let signed = if sig.direction == Direction::Up { sig.statistic } else { -sig.statistic };
                prop_assert!(signed >= sig.limit, "rule {} point {} not beyond {}", rule, sig.statistic, sig.limit);
            }
        }
    }

    #[test]
    fn bernoulli_takes_any_sequence(ys in proptest::collection::vec(any::<bool>(), 0..500)) {
        let mut b = BernoulliCusum::new(BernoulliDesign { p0: 0.1, p1: 0.2, m: 56, a: 8, h: 200 });
        for y in ys {
            b.observe(y);
            prop_assert!(b.statistic() >= 0.0 && b.statistic() <= 200.0 / 56.0 + 1.0);
        }
    }
}

#[test]
fn non_finite_observations_are_rejected() {
    let mut e = Ewma::new(EwmaDesign::new(0.2, 3.0, EwmaLimits::Asymptotic).unwrap());
    let mut c = Cusum::new(CusumDesign::new(0.5, 4.0, 0.0).unwrap());
    let mut s = Shewhart::new(ShewhartDesign::new(Rules::ALL, 3.0).unwrap());
    let t = HotellingT2 {
        mean: vec![0.0],
        inv_cov: vec![1.0],
        ucl: 10.0,
    };
    for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert!(matches!(e.observe(x), Err(ChartError::NonFinite(_))));
        assert!(matches!(c.observe(x), Err(ChartError::NonFinite(_))));
        assert!(matches!(s.observe(x), Err(ChartError::NonFinite(_))));
        assert!(matches!(t.observe(&[x]), Err(ChartError::NonFinite(_))));
    }
    // The charts are unharmed: the next finite value is scored normally.
    assert_eq!(e.observe(0.0).unwrap(), None);
    assert!(matches!(
        t.observe(&[1.0, 2.0]),
        Err(ChartError::Dimension { expected: 1, got: 2 })
    ));
    assert!(EwmaDesign::new(f64::NAN, 3.0, EwmaLimits::Asymptotic).is_err());
    assert!(CusumDesign::for_arl0(0.5, f64::INFINITY, 0.0).is_err());
}

fn baseline() -> Arc<agentdrift::baseline::Baseline> {
    static B: OnceLock<Arc<agentdrift::baseline::Baseline>> = OnceLock::new();
    B.get_or_init(|| {
        let bytes = std::fs::read(crate::support::shared().join("data/taubench/gpt-4o_airline.jsonl")).unwrap();
        let steps = agentdrift::ingest::native::read_ndjson(&bytes).steps;
        Arc::new(
            train(
                steps,
                Vec::new(),
                &TrainConfig::default(),
                &agentdrift::features::Rules::builtin(&PriceTable::default()),
            )
            .unwrap(),
        )
    })
    .clone()
}

fn arb_step() -> impl Strategy<Value = Step> {
    (
        0u8..4,
        0u64..30,
        0u8..6,
        prop_oneof![Just(None), (0u8..3).prop_map(Some)],
        any::<bool>(),
        "[a-z ]{0,30}",
        0u8..3,
    )
        .prop_map(|(sid, seq, kind, tool, ok, text, agent)| {
            let kind = [
                StepKind::Llm,
                StepKind::Tool,
                StepKind::User,
                StepKind::End,
                StepKind::Handoff,
                StepKind::Memory,
            ][kind as usize];
            let mut s = Step::new(
                format!("s{sid}"),
                seq,
                1_000 * seq as i64,
                kind,
                ["taubench-airline/gpt-4o", "unknown-agent", "taubench-airline/gpt-4o"][agent as usize],
            );
            s.task_type = Some(if agent == 2 { "retail".into() } else { "airline".into() });
            s.text = Some(text);
            if kind == StepKind::Tool {
                s.tool = Some(format!("tool{}", tool.unwrap_or(9)));
                s.status = Some(if ok { Status::Ok } else { Status::Error });
                s.args = tool.map(|t| serde_json::json!({"id": t}));
            }
            if kind == StepKind::Handoff {
                s.to_agent = Some("other".into());
            }
            s
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn scorer_takes_any_step_sequence(steps in proptest::collection::vec(arb_step(), 0..120), idle in 0i64..5_000) {
        let mut scorer = Scorer::new(baseline(), PriceTable::default(), idle).unwrap();
        let mut now = 0;
        for s in steps {
            now += 100;
            let out = scorer.ingest(s, now);
            for e in out.events.iter().chain(scorer.close_idle(now).events.iter()) {
                prop_assert!(e.statistic.is_finite() && !e.limit.is_nan(), "{e:?}");
            }
        }
        let _ = scorer.flush();
        prop_assert_eq!(scorer.open_sessions(), 0);
    }
}

#[test]
fn state_stays_bounded_in_an_endless_looping_session() {
    let mut scorer = Scorer::new(baseline(), PriceTable::default(), i64::MAX).unwrap();
    let mut sizes = Vec::new();
    for seq in 0..60_000u64 {
        let mut s = Step::new("endless", seq, seq as i64, StepKind::Tool, "taubench-airline/gpt-4o");
        s.task_type = Some("airline".into());
        s.tool = Some(format!("t{}", seq % 7));
        s.args = Some(serde_json::json!({"n": seq}));
        s.status = Some(Status::Ok);
        scorer.ingest(s, seq as i64);
        if seq == 30_000 || seq == 59_999 {
            sizes.push(serde_json::to_vec(&scorer.state()).unwrap().len());
        }
    }
    // Past the caps (4096 call keys, 10,000 Markov states), doubling the session does not grow the state.
    assert!(sizes[1] as f64 <= sizes[0] as f64 * 1.01, "{sizes:?}");
}

fn big_step(session: &str, seq: u64) -> Step {
    let mut s = Step::new(session, seq, seq as i64, StepKind::Llm, "taubench-airline/gpt-4o");
    s.task_type = Some("airline".into());
    s.text = Some("x".repeat(10_000));
    s
}

#[test]
fn a_reorder_buffer_over_its_cap_releases_across_the_gap_in_seq_order_counted() {
    let limits = agentdrift::engine::Limits {
        session_buffer_bytes: 100_000,
        total_buffer_bytes: 250_000,
        ..Default::default()
    };
    let mut scorer = Scorer::new(baseline(), PriceTable::default(), i64::MAX)
        .unwrap()
        .with_limits(limits);
    // seq 1 never comes: without a cap, every later step would wait for it.
    scorer.ingest(big_step("gap", 0), 0);
    let mut max_buffered = 0;
    for seq in 2..60u64 {
        scorer.ingest(big_step("gap", seq), seq as i64);
        max_buffered = max_buffered.max(scorer.buffered_bytes());
    }
    assert!(max_buffered <= limits.session_buffer_bytes, "{max_buffered}");
    assert!(scorer.stats().forced_releases >= 1);
    // Everything was scored once the buffer gave up on seq 1; seq 1 is late now.
    assert_eq!(scorer.stats().steps, 59);
    assert_eq!(scorer.buffered_bytes(), 0);
    assert_eq!(scorer.ingest(big_step("gap", 1), 99).late, 1);
    // Many sessions with gaps: the total cap holds, the largest buffer goes first.
    for k in 0..40 {
        let sid = format!("g{k}");
        scorer.ingest(big_step(&sid, 0), 0);
        for seq in 2..6u64 {
            scorer.ingest(big_step(&sid, seq), 0);
            assert!(scorer.buffered_bytes() <= limits.total_buffer_bytes);
        }
    }
    assert!(scorer.stats().forced_releases > 1);
    // Nothing is dropped: every step is scored by the end.
    let closed = scorer.flush().closed;
    let steps: u64 = closed
        .iter()
        .filter(|c| c.session_id.starts_with('g'))
        .map(|c| c.steps)
        .sum();
    assert_eq!(steps, 59 + 40 * 5);
}

/// Issue 14, item 6: a baseline whose contents are inconsistent (loaded
/// without validation) panics a detector; the panic is caught, that segment
/// stops and says why, and the other segments go on scoring.
#[test]
fn a_panicking_segment_stops_alone_and_says_why() {
    let mut b = (*baseline()).clone();
    assert!(b.validate().is_ok());
    let own = b
        .segments
        .iter()
        .position(|s| s.key.task_type == "airline")
        .expect("the airline segment");
    assert!(b.segments.len() >= 2, "a pooled segment beside it");
    let k = b.segments[own].markov.states.len();
    b.segments[own].markov.counts.truncate(k);
    b.segments[own].markov.probs.truncate(k);
    assert!(b.validate().unwrap_err().contains("markov"), "loading would refuse it");
    let mut scorer = Scorer::new(Arc::new(b), PriceTable::default(), i64::MAX).unwrap();
    let bytes = std::fs::read(crate::support::shared().join("data/taubench/gpt-4o_airline.jsonl")).unwrap();
    let steps = agentdrift::ingest::native::read_ndjson(&bytes).steps;
    for (i, s) in steps.iter().enumerate() {
        scorer.ingest(s.clone(), i as i64);
    }
    assert_eq!(
        scorer.failed_count(),
        1,
        "the inconsistent segment panicked and stopped"
    );
    let (seg, why) = &scorer.failed_segments()[0];
    assert!(seg.contains("airline") && !why.is_empty(), "{seg}: {why}");
    // The same sessions under another task type go to the pooled segment, which still scores.
    let before = scorer.stats().segments.values().map(|t| t.sessions).sum::<u64>();
    for (i, s) in steps.iter().take(2000).enumerate() {
        let mut s = s.clone();
        s.session_id = format!("other-{}", s.session_id);
        s.task_type = Some("unseen-task".into());
        scorer.ingest(s, (steps.len() + i) as i64);
    }
    scorer.flush();
    let after = scorer.stats().segments.values().map(|t| t.sessions).sum::<u64>();
    assert!(after > before, "the pooled segment kept scoring: {before} → {after}");
    assert_eq!(scorer.failed_count(), 1);
}

/// Snapshots are encoded from the borrowed state: the same content as the owned one.
#[test]
fn the_borrowed_snapshot_encodes_the_same_state() {
    let mut scorer = Scorer::new(baseline(), PriceTable::default(), i64::MAX).unwrap();
    let bytes = std::fs::read(crate::support::shared().join("data/taubench/gpt-4o_airline.jsonl")).unwrap();
    // Half the sessions' steps: many sessions open, some closed.
    for (i, s) in agentdrift::ingest::native::read_ndjson(&bytes)
        .steps
        .iter()
        .enumerate()
        .step_by(2)
    {
        scorer.ingest(s.clone(), i as i64);
    }
    assert!(scorer.open_sessions() > 10);
    let borrowed = rmp_serde::to_vec_named(&scorer.state_ref()).unwrap();
    let decoded: agentdrift::engine::ScorerState = rmp_serde::from_slice(&borrowed).unwrap();
    assert_eq!(
        serde_json::to_value(&decoded).unwrap(),
        serde_json::to_value(scorer.state()).unwrap()
    );
}

/// Saved session rows by (session, version).
type Rows = std::collections::HashMap<(String, u64), agentdrift::engine::saved::StateRow>;

/// Rows of saved sessions in memory, shared so the test can look inside;
/// `fail` makes every write fail (a full disk).
#[derive(Clone, Default)]
struct MemRows {
    rows: Arc<std::sync::Mutex<Rows>>,
    fail: Arc<std::sync::atomic::AtomicBool>,
}

impl agentdrift::engine::saved::SessionStore for MemRows {
    fn save(&mut self, rows: &[agentdrift::engine::saved::StateRow]) -> Result<(), String> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("disk full".into());
        }
        let mut m = self.rows.lock().unwrap();
        for r in rows {
            assert!(
                m.insert((r.session_id.clone(), r.version), r.clone()).is_none(),
                "a row is never overwritten"
            );
        }
        Ok(())
    }
    fn load(&mut self, session_id: &str, version: u64) -> Result<Vec<u8>, String> {
        self.rows
            .lock()
            .unwrap()
            .get(&(session_id.to_string(), version))
            .map(|r| r.state.clone())
            .ok_or_else(|| format!("no row {session_id}@{version}"))
    }
}

impl MemRows {
    /// What a store answers at a restore: per session its newest row up to `max`.
    fn refs(&self, max: u64) -> Vec<(String, agentdrift::engine::saved::SavedRef)> {
        use agentdrift::engine::saved::SavedRef;
        let mut best: std::collections::HashMap<String, SavedRef> = Default::default();
        for r in self.rows.lock().unwrap().values().filter(|r| r.version <= max) {
            let e = best.entry(r.session_id.clone()).or_insert(SavedRef {
                version: 0,
                last_seen_ms: 0,
                last_pos: 0,
            });
            if r.version >= e.version {
                *e = SavedRef {
                    version: r.version,
                    last_seen_ms: r.last_seen_ms,
                    last_pos: r.last_pos,
                };
            }
        }
        best.into_iter().collect()
    }
}

/// Every airline session open at once: the sessions' steps dealt round-robin.
fn interleaved_airline() -> Vec<Step> {
    let bytes = std::fs::read(crate::support::shared().join("data/taubench/gpt-4o_airline.jsonl")).unwrap();
    let mut steps = agentdrift::ingest::native::read_ndjson(&bytes).steps;
    steps.sort_by(|a, b| (a.seq, &a.session_id).cmp(&(b.seq, &b.session_id)));
    steps
}

/// What a run raised and closed, as JSON (events with their ids, closed sessions with their features).
fn outputs(outs: &[agentdrift::engine::Output]) -> serde_json::Value {
    let events: Vec<_> = outs.iter().flat_map(|o| o.events.iter()).collect();
    let closed: Vec<_> = outs.iter().flat_map(|o| o.closed.iter()).collect();
    serde_json::json!({ "events": events, "closed": closed })
}

/// Issue 14, item 4: over `max_open_sessions` the longest-idle sessions go
/// to the session store and come back when a step names them; the events,
/// their ids and every closed session are exactly those of a run that kept
/// everything in memory, also across a snapshot restored into a new scorer.
#[test]
fn sessions_over_the_cap_wait_in_the_store_and_score_exactly_as_in_memory() {
    let steps = interleaved_airline();
    let sessions: std::collections::BTreeSet<_> = steps.iter().map(|s| s.session_id.clone()).collect();
    assert!(sessions.len() > 40, "{}", sessions.len());
    let run = |scorer: &mut Scorer, steps: &[Step], from: usize| -> Vec<agentdrift::engine::Output> {
        steps
            .iter()
            .enumerate()
            .map(|(i, s)| scorer.ingest_at(s.clone(), (from + i) as i64, (from + i) as i64))
            .collect()
    };
    let mut plain = Scorer::new(baseline(), PriceTable::default(), i64::MAX).unwrap();
    let mut expected = run(&mut plain, &steps, 0);
    expected.push(plain.flush());
    assert!(!outputs(&expected)["events"].as_array().unwrap().is_empty());

    let cap = 5;
    let limits = agentdrift::engine::Limits {
        max_open_sessions: cap,
        ..Default::default()
    };
    let rows = MemRows::default();
    let capped = || {
        Scorer::new(baseline(), PriceTable::default(), i64::MAX)
            .unwrap()
            .with_limits(limits)
            .with_session_store(Box::new(rows.clone()))
    };
    let mut scorer = capped();
    let half = steps.len() / 2;
    let mut got = Vec::new();
    for (i, s) in steps[..half].iter().enumerate() {
        got.push(scorer.ingest_at(s.clone(), i as i64, i as i64));
        let in_memory = scorer.open_sessions() - scorer.saved_sessions();
        assert!(in_memory <= cap + 1, "{in_memory} sessions in memory, cap {cap}");
    }
    assert_eq!(scorer.open_sessions(), plain_open_at(&steps[..half]));
    assert!(scorer.stats().sessions_evicted > 0 && scorer.stats().sessions_restored > 0);

    // A snapshot: changed sessions written, the state names rows, obsolete rows deleted.
    let obsolete = scorer.checkpoint().unwrap();
    let snapshot = rmp_serde::to_vec_named(&scorer.state_ref()).unwrap();
    {
        let mut m = rows.rows.lock().unwrap();
        for k in &obsolete {
            assert!(m.remove(k).is_some(), "an obsolete row {k:?} exists");
        }
        let mut live: Vec<_> = m.keys().cloned().collect();
        let mut named = scorer.referenced_rows();
        live.sort();
        named.sort();
        assert_eq!(
            live, named,
            "after a checkpoint, the rows are exactly those of the open sessions"
        );
        assert_eq!(named.len(), scorer.open_sessions(), "every open session is a row");
    }
    let state: agentdrift::engine::ScorerState = rmp_serde::from_slice(&snapshot).unwrap();
    assert!(
        serde_json::to_value(&state).unwrap()["open"]
            .as_object()
            .unwrap()
            .is_empty(),
        "the snapshot carries no session that has an up-to-date row"
    );
    let mut restarted = capped();
    restarted.restore(state).unwrap();
    restarted.adopt_saved(rows.refs(restarted.row_versions()));
    assert_eq!(restarted.open_sessions(), scorer.open_sessions());
    got.extend(run(&mut restarted, &steps[half..], half));
    got.push(restarted.flush());
    assert_eq!(outputs(&got), outputs(&expected));
    let after = restarted.checkpoint().unwrap();
    let mut m = rows.rows.lock().unwrap();
    for k in &after {
        m.remove(k);
    }
    assert!(m.is_empty(), "closed sessions leave no row: {} left", m.len());
}

fn plain_open_at(steps: &[Step]) -> usize {
    let mut s = Scorer::new(baseline(), PriceTable::default(), i64::MAX).unwrap();
    for (i, st) in steps.iter().enumerate() {
        s.ingest(st.clone(), i as i64);
    }
    s.open_sessions()
}

/// A session store that cannot be written keeps sessions in memory (counted,
/// with the reason) and changes no result; a snapshot then carries them inline.
#[test]
fn a_failing_session_store_keeps_sessions_in_memory_and_changes_nothing() {
    let steps = interleaved_airline();
    let half = steps.len() / 2;
    let mut plain = Scorer::new(baseline(), PriceTable::default(), i64::MAX).unwrap();
    let mut expected: Vec<_> = steps[..half].iter().map(|s| plain.ingest(s.clone(), 0)).collect();
    let open_at_half = plain.open_sessions();
    assert!(open_at_half > 10, "{open_at_half}");
    expected.extend(steps[half..].iter().map(|s| plain.ingest(s.clone(), 0)));
    expected.push(plain.flush());
    let rows = MemRows::default();
    rows.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut scorer = Scorer::new(baseline(), PriceTable::default(), i64::MAX)
        .unwrap()
        .with_limits(agentdrift::engine::Limits {
            max_open_sessions: 3,
            ..Default::default()
        })
        .with_session_store(Box::new(rows.clone()));
    let mut got: Vec<_> = steps[..half].iter().map(|s| scorer.ingest(s.clone(), 0)).collect();
    assert_eq!(scorer.saved_sessions(), 0);
    assert_eq!(scorer.open_sessions(), open_at_half);
    assert!(scorer.stats().session_store_failures > 0);
    assert_eq!(scorer.last_store_error(), Some("disk full"));
    assert!(scorer.checkpoint().is_err());
    let snapshot = rmp_serde::to_vec_named(&scorer.state_ref()).unwrap();
    let state: agentdrift::engine::ScorerState = rmp_serde::from_slice(&snapshot).unwrap();
    let mut restored = Scorer::new(baseline(), PriceTable::default(), i64::MAX).unwrap();
    restored.restore(state).unwrap();
    assert_eq!(
        restored.open_sessions(),
        open_at_half,
        "the snapshot carries them inline"
    );
    // The disk has room again: sessions leave memory, results unchanged.
    rows.fail.store(false, std::sync::atomic::Ordering::SeqCst);
    got.extend(steps[half..].iter().map(|s| scorer.ingest(s.clone(), 0)));
    assert!(scorer.stats().sessions_evicted > 0);
    got.push(scorer.flush());
    assert_eq!(outputs(&got), outputs(&expected));
}

/// Saved sessions still close when idle (their state comes back to be
/// scored), and a late outcome or step finds them.
#[test]
fn saved_sessions_close_when_idle_and_take_outcomes() {
    let rows = MemRows::default();
    let mut scorer = Scorer::new(baseline(), PriceTable::default(), 1_000)
        .unwrap()
        .with_limits(agentdrift::engine::Limits {
            max_open_sessions: 2,
            ..Default::default()
        })
        .with_session_store(Box::new(rows.clone()));
    let step = |sid: &str, seq: u64| {
        let mut s = Step::new(
            sid,
            seq,
            1_700_000_000_000 + seq as i64,
            StepKind::Llm,
            "taubench-airline/gpt-4o",
        );
        s.task_type = Some("airline".into());
        s.text = Some("Let me check that reservation.".into());
        s.output_tokens = Some(20);
        s
    };
    for (t, sid) in ["s0", "s1", "s2", "s3", "s4"].iter().enumerate() {
        scorer.ingest_at(step(sid, 0), t as i64, t as i64);
    }
    assert_eq!(scorer.open_sessions(), 5);
    assert!(scorer.saved_sessions() >= 2, "{}", scorer.saved_sessions());
    // s0 was saved first; a second step brings it back.
    assert!(scorer.is_open("s0"));
    scorer.ingest_at(step("s0", 1), 10, 10);
    // An outcome for a saved session is set on it, not lost.
    let saved_one = ["s1", "s2", "s3"]
        .into_iter()
        .find(|s| scorer.referenced_rows().iter().any(|(k, _)| k == s))
        .expect("one of them is saved");
    assert!(scorer.set_outcome(
        saved_one,
        agentdrift::model::Outcome::Success,
        Some(1.0),
        agentdrift::model::OutcomeSource::Evaluation
    ));
    assert_eq!(scorer.idle_sessions(1_005), ["s1", "s2", "s3", "s4"]);
    let closed = scorer.close_idle(2_000).closed;
    let mut by_id: Vec<(String, u64)> = closed.iter().map(|c| (c.session_id.clone(), c.steps)).collect();
    by_id.sort();
    assert_eq!(
        by_id,
        [
            ("s0".into(), 2),
            ("s1".into(), 1),
            ("s2".into(), 1),
            ("s3".into(), 1),
            ("s4".into(), 1)
        ]
    );
    let with_outcome = closed.iter().find(|c| c.session_id == saved_one).unwrap();
    assert_eq!(with_outcome.features.outcome, Some(agentdrift::model::Outcome::Success));
    assert_eq!(scorer.open_sessions(), 0);
    assert_eq!(scorer.saved_sessions(), 0);
}
