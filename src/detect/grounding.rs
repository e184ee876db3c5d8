//! Grounding: a model output that states a value an earlier source of the
//! same session gives differently (an identifier one slip away, another
//! amount under the same key, another status of the same entity). Each
//! contradiction is a finding about one session, raised at the output's
//! step with both sides; deterministic, so its rate is not drawn from the
//! segment's alarm budget but measured on the reference (the chart's `rate`:
//! the share of reference sessions that had one).

use super::event::{DriftEvent, Finding, Moved, Observation, event_id};
use super::state::{ChartState, Core, DetectError, Family};
use super::{At, Detector, InSession};
use crate::baseline::types::{ChartDesign, ChartSpec, SegmentBaseline};
use crate::features::StepObs;

/// The grounding detector family.
pub const FAMILY: Family = Family { fresh, open };

/// Contradictions raised per session at most (the rest are counted in the
/// session's `contradictions` feature).
pub const MAX_PER_SESSION: u8 = 5;

fn fresh(spec: &ChartSpec, _seg: &SegmentBaseline) -> Result<ChartState, DetectError> {
    match &spec.design {
        ChartDesign::Grounding { reference_rate } => Ok(ChartState::Grounding(*reference_rate)),
        other => Err(DetectError::mismatch(spec, super::state::design_kind(other))),
    }
}

fn open(spec: &ChartSpec, state: ChartState) -> Result<Box<dyn Detector>, DetectError> {
    match state {
        ChartState::Grounding(reference_rate) => Ok(Box::new(Grounding { reference_rate })),
        other => Err(DetectError::mismatch(spec, other.kind())),
    }
}

/// Raises each contradiction of a session's outputs.
#[derive(Clone, Debug)]
struct Grounding {
    /// Share of reference sessions with a contradiction.
    reference_rate: f64,
}

impl Detector for Grounding {
    fn on_step(
        &mut self,
        core: &mut Core,
        at: &At,
        seq: u64,
        obs: &StepObs,
        state: &mut InSession,
        out: &mut Vec<DriftEvent>,
    ) {
        let Some(g) = &obs.grounding else { return };
        for c in &g.contradictions {
            if state.grounding_fired >= MAX_PER_SESSION {
                return;
            }
            state.grounding_fired += 1;
            core.alarms += 1;
            let sid = at.ctx.session_id;
            let finding = Finding {
                id: event_id(&[
                    &at.key.to_string(),
                    &core.spec.id,
                    sid,
                    &seq.to_string(),
                    &c.claim,
                    &c.source_seq.to_string(),
                ]),
                detector: format!("grounding:{}", c.kind.as_str()),
                kind: "grounding".into(),
                seq: Some(seq),
                statistic: 1.0,
                limit: 1.0,
                p_value: None,
                direction: None,
                moved: vec![Moved {
                    what: format!("{}: {}", c.kind.as_str(), c.rule),
                    baseline: self.reference_rate,
                    observed: 1.0,
                    score: 1.0,
                }],
                exemplars: vec![sid.to_string()],
                observations: vec![
                    Observation {
                        session_id: sid.to_string(),
                        seq: Some(seq),
                        value: 1.0,
                        z: None,
                    },
                    Observation {
                        session_id: sid.to_string(),
                        seq: Some(c.source_seq),
                        value: 0.0,
                        z: None,
                    },
                ],
                message: format!(
                    "contradiction in session {sid}: step {seq} says \"{}\" but step {} ({}) gave {}: {}",
                    c.claim, c.source_seq, c.source, c.source_value, c.excerpt
                ),
            };
            let mut e = DriftEvent::raise(at.key, at.ctx, finding);
            e.grounding = Some(c.clone());
            out.push(e);
        }
    }

    fn state(&self) -> ChartState {
        ChartState::Grounding(self.reference_rate)
    }

    fn boxed(&self) -> Box<dyn Detector> {
        Box::new(self.clone())
    }
}
