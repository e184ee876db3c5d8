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
        Arc::new(train(steps, Vec::new(), &TrainConfig::default(), &PriceTable::default()).unwrap())
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
