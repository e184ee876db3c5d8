//! Scoring recorded steps offline: the loop `replay`, `eval` and `demo`
//! share, around the same [`Scorer`] the service runs.

use super::{ClosedSession, Scorer};
use crate::detect::DriftEvent;
use crate::model::Step;
use serde::Serialize;
use std::collections::BTreeMap;

/// Per-segment replay summary.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SegmentSummary {
    /// Sessions scored against this segment.
    pub sessions: u64,
    /// Of which fell back from another segment.
    pub fallback: u64,
    /// Events per detector.
    pub events: BTreeMap<String, u64>,
}

/// Result of a replay.
#[derive(Debug, Default, Serialize)]
pub struct ReplayResult {
    /// Events in firing order.
    pub events: Vec<DriftEvent>,
    /// Closed sessions in closing order.
    #[serde(skip)]
    pub closed: Vec<ClosedSession>,
    /// Per-segment summary.
    pub segments: BTreeMap<String, SegmentSummary>,
    /// Sessions of agents the baseline does not know (not scored).
    pub unscored_sessions: u64,
    /// Steps scored.
    pub steps: u64,
}

/// Reorders whole sessions randomly (seeded), keeping each session's steps
/// together and in order, and rebases timestamps so sessions follow one
/// another in the new order (idle timeouts then behave as in a live stream).
pub fn shuffle_sessions(steps: Vec<Step>, seed: u64) -> Vec<Step> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let mut sessions = crate::model::group_sessions(steps).sessions;
    sessions.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let mut clock = sessions
        .iter()
        .filter_map(|s| s.steps.first())
        .map(|s| s.ts)
        .min()
        .unwrap_or(0);
    let mut out = Vec::new();
    for s in sessions {
        let start = s.steps.first().map_or(0, |x| x.ts);
        let end = s.steps.iter().map(|x| x.ts).max().unwrap_or(start);
        for mut st in s.steps {
            st.ts = clock + (st.ts - start);
            out.push(st);
        }
        clock += end - start + 1;
    }
    out
}

/// Streams steps (in the given order, event time as the clock) through a scorer.
pub fn replay_steps(scorer: &mut Scorer, steps: Vec<Step>) -> ReplayResult {
    replay_steps_traced(scorer, steps, &mut |_, _| {})
}

/// Like [`replay_steps`], calling `on_close` with the scorer after each
/// session closes (to trace chart statistics).
pub fn replay_steps_traced(
    scorer: &mut Scorer,
    steps: Vec<Step>,
    on_close: &mut dyn FnMut(&Scorer, &ClosedSession),
) -> ReplayResult {
    let mut r = ReplayResult::default();
    let mut record = |out: crate::engine::Output, r: &mut ReplayResult, scorer: &Scorer| {
        for c in &out.closed {
            on_close(scorer, c);
            match &c.segment {
                Some(k) => {
                    let s = r.segments.entry(k.to_string()).or_default();
                    s.sessions += 1;
                    s.fallback += u64::from(c.fallback_from.is_some());
                }
                None => r.unscored_sessions += 1,
            }
        }
        for e in &out.events {
            *r.segments
                .entry(e.segment.to_string())
                .or_default()
                .events
                .entry(e.detector.clone())
                .or_insert(0) += 1;
        }
        r.events.extend(out.events);
        r.closed.extend(out.closed);
    };
    let mut clock = i64::MIN;
    for step in steps {
        clock = clock.max(step.ts);
        let out = scorer.ingest(step, clock);
        record(out, &mut r, scorer);
        let idle = scorer.close_idle(clock);
        record(idle, &mut r, scorer);
    }
    let out = scorer.flush();
    record(out, &mut r, scorer);
    r.steps = scorer.stats().steps;
    r
}
