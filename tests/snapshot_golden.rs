//! The scorer snapshot format: a snapshot written when its format version was
//! current (the golden file) still loads and scores on exactly as if the service had never
//! stopped; a snapshot of another format version is refused, naming both.

use agentdrift::engine::Scorer;
use agentdrift::engine::pipeline::{Input, Pipeline, PipelineConfig, STATE_VERSION};
use agentdrift::model::{PriceTable, Step, StepKind};
use std::path::PathBuf;
use std::sync::Arc;

/// Written by the build that introduced format version 2. When the format
/// changes, bump `STATE_VERSION`, keep loading this file (or refuse it with
/// a clear message) and add a golden file of the new version beside it.
fn golden() -> PathBuf {
    crate::support::repo().join(format!("fixtures/snapshots/pipeline-v{STATE_VERSION}.msgpack"))
}

/// Real sessions, then one that calls the same tool over and over (so the
/// part after the snapshot raises events).
fn steps() -> Vec<Step> {
    let path = crate::support::repo().join("fixtures/sessions/taubench-gpt-4o-airline.jsonl");
    let text = std::fs::read_to_string(path).unwrap();
    let head: String = text.lines().take(900).map(|l| format!("{l}\n")).collect();
    let out = agentdrift::ingest::native::read_ndjson(head.as_bytes());
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let mut steps = out.steps;
    let tool = steps.iter().rev().find(|s| s.kind == StepKind::Tool).unwrap().clone();
    let last_ts = steps.iter().map(|s| s.ts).max().unwrap();
    for seq in 0..40 {
        let mut s = tool.clone();
        s.session_id = "golden-loop".into();
        s.seq = seq;
        s.ts = last_ts + 1000 * (seq as i64 + 1);
        steps.push(s);
    }
    steps
}

fn pipeline() -> Pipeline {
    // The baseline the snapshot was taken against, as an earlier build trained it
    // (before baselines recorded their error taxonomy: the built-in one applies).
    let baseline = crate::support::repo().join("fixtures/snapshots/taubench-gpt-4o-airline-v1.adb");
    let b = Arc::new(agentdrift::baseline::load(&baseline).unwrap());
    let scorer = Scorer::new(b, PriceTable::default(), 300_000).unwrap();
    Pipeline::new(scorer, PriceTable::default(), PipelineConfig::default())
}

/// What the scorer decided: event ids, and each closed session with its features.
fn decided(out: agentdrift::engine::Output) -> Vec<String> {
    let events = out.events.into_iter().map(|e| format!("event {}", e.id));
    let closed = out
        .closed
        .into_iter()
        .map(|c| format!("closed {} {} {:?}", c.session_id, c.steps, c.features));
    events.chain(closed).collect()
}

/// What feeding `steps` from log position `pos` on decided.
fn feed(p: &mut Pipeline, steps: &[Step], pos: i64) -> Vec<String> {
    let mut all = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let input = Input::Step {
            received_ms: s.ts,
            step: s.clone(),
            pos: pos + i as i64,
        };
        all.extend(decided(p.apply(input).out));
    }
    all
}

#[test]
fn the_golden_snapshot_loads_and_scores_on_as_if_never_stopped() {
    let steps = steps();
    let (before, after) = steps.split_at(steps.len() / 2);
    let mut whole = pipeline();
    let mut expected = feed(&mut whole, before, 1);
    let at_snapshot = expected.len();
    expected.extend(feed(&mut whole, after, 1 + before.len() as i64));
    expected.extend(decided(whole.flush().out));
    assert!(
        expected[at_snapshot..].iter().any(|d| d.starts_with("event ")),
        "the part after the snapshot raises events to compare"
    );

    let path = golden();
    if std::env::var_os("AGENTDRIFT_WRITE_GOLDEN_SNAPSHOT").is_some() {
        let mut p = pipeline();
        feed(&mut p, before, 1);
        std::fs::write(&path, rmp_serde::to_vec_named(&p.state_ref()).unwrap()).unwrap();
    }
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; a new format version needs its golden file: \
             AGENTDRIFT_WRITE_GOLDEN_SNAPSHOT=1 cargo nextest run snapshot_golden",
            path.display()
        )
    });
    let state = agentdrift::service::decode_state(&bytes)
        .expect("the golden snapshot decodes")
        .expect("it is the current format");
    let mut resumed = pipeline();
    resumed.restore(state).unwrap();
    let mut got = expected[..at_snapshot].to_vec();
    got.extend(feed(&mut resumed, after, 1 + before.len() as i64));
    got.extend(decided(resumed.flush().out));
    assert_eq!(got, expected);
}

#[test]
fn a_snapshot_of_another_version_is_refused_naming_both() {
    let mut p = pipeline();
    feed(&mut p, &steps()[..50], 1);
    let mut state = p.state();
    state.version = STATE_VERSION + 7;
    let bytes = rmp_serde::to_vec_named(&state).unwrap();
    let err = agentdrift::service::decode_state(&bytes).unwrap_err();
    assert!(
        err.contains(&format!("version {}", STATE_VERSION + 7)) && err.contains(&format!("({STATE_VERSION})")),
        "{err}"
    );
    let err = agentdrift::service::decode_state(b"not a snapshot").unwrap_err();
    assert!(err.contains("cannot decode the scorer snapshot"), "{err}");
}
