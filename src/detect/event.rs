//! What detectors emit and the store keeps: a drift event with its evidence.

use crate::model::SegmentKey;
use crate::spc::Direction;
use serde::{Deserialize, Serialize};

/// One thing that moved, with its baseline and observed value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Moved {
    /// What: a feature name, a transition `a → b`, a tool, a loop pattern.
    pub what: String,
    /// Baseline value (median, probability, share, rate).
    pub baseline: f64,
    /// Observed value in the evidence.
    pub observed: f64,
    /// How far it moved, in the detector's units (z-score, Pearson residual).
    pub score: f64,
}

/// One observation behind an event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Observation {
    /// The session it came from.
    pub session_id: String,
    /// Step, for in-session observations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Raw value.
    pub value: f64,
    /// Its in-control N(0,1) score, where the detector charts one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub z: Option<f64>,
}

/// A drift event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DriftEvent {
    /// Stable id: the same input always yields the same id (replays and
    /// restarts do not duplicate events).
    pub id: String,
    /// Detector id, e.g. `ewma:output_tokens`, `markov`, `loop:same_call`.
    pub detector: String,
    /// Detector family, e.g. `ewma`, `cusum`, `markov`, `loop`.
    pub kind: String,
    /// Segment whose baseline was used.
    pub segment: SegmentKey,
    /// The session's own segment when it had to fall back to a pooled one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_from: Option<SegmentKey>,
    /// Session that triggered the event.
    pub session_id: String,
    /// Step at which an in-session detector fired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Time of the triggering step or session end, unix ms.
    pub ts: i64,
    /// The statistic that crossed its limit.
    pub statistic: f64,
    /// The limit.
    pub limit: f64,
    /// p-value, where the detector is a test.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// Direction of the move, where it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// What moved, largest first.
    pub moved: Vec<Moved>,
    /// Sessions to replay, most telling first.
    pub exemplars: Vec<String>,
    /// Recent observations behind the statistic.
    pub observations: Vec<Observation>,
    /// One-line summary.
    pub message: String,
    /// A grounding event's claim and the source it contradicts, with their steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grounding: Option<crate::features::Contradiction>,
}

/// One reading of a session-level chart, as the console draws it: the
/// statistic after a session (or outcome) against its limit, with the events it raised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChartPoint {
    /// Chart id.
    pub chart: String,
    /// The session whose close (or late outcome) moved the chart.
    pub session_id: String,
    /// Its time, unix ms.
    pub ts: i64,
    /// The statistic after it.
    pub statistic: f64,
    /// The limit it is held against.
    pub limit: f64,
    /// Ids of the events it raised (an alarm point).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
}

/// A chart's reading after one session, compact (the segment's chart by
/// position): what the scorer hands on for the console's history.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    /// Position of the chart in its segment's baseline.
    pub chart: u16,
    /// The statistic (at an alarm: the value that crossed).
    pub statistic: f64,
    /// Its limit.
    pub limit: f64,
    /// Ids of the events it raised.
    pub events: Vec<String>,
}

/// Every session-level chart's reading after one session of a segment.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionReadings {
    /// Position of the segment in the baseline.
    pub segment: usize,
    /// The session.
    pub session_id: String,
    /// Its time, unix ms.
    pub ts: i64,
    /// One per chart that moved.
    pub readings: Vec<Reading>,
}

/// Context of the session an observation comes from.
pub struct Ctx<'a> {
    /// Session id.
    pub session_id: &'a str,
    /// Time of the step or session end, unix ms.
    pub ts: i64,
    /// The session's own segment when scored against a pooled one.
    pub fallback_from: Option<&'a SegmentKey>,
}

/// What a detector found; [`DriftEvent::raise`] adds where and when.
pub struct Finding {
    /// Stable id (see [`event_id`]).
    pub id: String,
    /// Detector id.
    pub detector: String,
    /// Detector family.
    pub kind: String,
    /// Step, for in-session detectors.
    pub seq: Option<u64>,
    /// The statistic that crossed its limit.
    pub statistic: f64,
    /// The limit.
    pub limit: f64,
    /// p-value, where the detector is a test.
    pub p_value: Option<f64>,
    /// Direction of the move, where it has one.
    pub direction: Option<Direction>,
    /// What moved, largest first.
    pub moved: Vec<Moved>,
    /// Sessions to replay.
    pub exemplars: Vec<String>,
    /// Observations behind the statistic.
    pub observations: Vec<Observation>,
    /// One-line summary.
    pub message: String,
}

impl DriftEvent {
    /// The one place an event is made: a finding, in its segment and session.
    pub fn raise(segment: &SegmentKey, ctx: &Ctx, f: Finding) -> DriftEvent {
        DriftEvent {
            id: f.id,
            detector: f.detector,
            kind: f.kind,
            segment: segment.clone(),
            fallback_from: ctx.fallback_from.cloned(),
            session_id: ctx.session_id.to_string(),
            seq: f.seq,
            ts: ctx.ts,
            statistic: f.statistic,
            limit: f.limit,
            p_value: f.p_value,
            direction: f.direction,
            moved: f.moved,
            exemplars: f.exemplars,
            observations: f.observations,
            message: f.message,
            grounding: None,
        }
    }
}

/// Deterministic event id from its identifying parts.
pub fn event_id(parts: &[&str]) -> String {
    let mut h = crate::features::sequence::Fnv::default();
    for p in parts {
        h.write(p.as_bytes());
        h.write(&[0x1f]);
    }
    let a = h.finish();
    let mut h2 = crate::features::sequence::Fnv::default();
    h2.write(&a.to_le_bytes());
    for p in parts.iter().rev() {
        h2.write(p.as_bytes());
    }
    format!("ev_{:016x}{:08x}", a, h2.finish() as u32)
}
