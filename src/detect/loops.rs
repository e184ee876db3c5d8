//! Loops: a session that repeats the same tool call, or the same cycle of
//! tools, more often than the baseline makes plausible. One event per session.

use super::event::{DriftEvent, Finding, Moved, Observation, event_id};
use super::state::{ChartState, Core, DetectError, Family};
use super::{At, Detector, InSession};
use crate::baseline::types::{ChartDesign, ChartSpec, LoopThreshold, SegmentBaseline};
use crate::features::StepObs;
use crate::features::sequence::MAX_CYCLE;
use crate::spc::Direction;

/// The loop detector family.
pub const FAMILY: Family = Family { fresh, open };

fn fresh(spec: &ChartSpec, _seg: &SegmentBaseline) -> Result<ChartState, DetectError> {
    match &spec.design {
        ChartDesign::Loops { thresholds } => Ok(ChartState::Loops(thresholds.clone())),
        other => Err(DetectError::mismatch(spec, super::state::design_kind(other))),
    }
}

fn open(spec: &ChartSpec, state: ChartState) -> Result<Box<dyn Detector>, DetectError> {
    match state {
        ChartState::Loops(thresholds) => Ok(Box::new(Loops { thresholds })),
        other => Err(DetectError::mismatch(spec, other.kind())),
    }
}

/// Loop thresholds, one per loop statistic.
#[derive(Clone, Debug)]
struct Loops {
    thresholds: Vec<LoopThreshold>,
}

impl Detector for Loops {
    fn on_step(
        &mut self,
        core: &mut Core,
        at: &At,
        seq: u64,
        obs: &StepObs,
        state: &mut InSession,
        out: &mut Vec<DriftEvent>,
    ) {
        let Some((tool, l)) = &obs.tool_loop else { return };
        for (i, t) in self.thresholds.iter().enumerate() {
            let name = t.name.as_str();
            let value = match name {
                "same_call" => l.same_call,
                other => other
                    .strip_prefix("cycle")
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|n| (1..=MAX_CYCLE).contains(n))
                    .map_or(0, |n| l.cycle_reps[n - 1]),
            };
            // One loop event per session: the first statistic to cross
            // names the loop; later crossings are the same loop.
            if value < t.k || state.loops_fired != 0 {
                continue;
            }
            state.loops_fired |= 1u8 << i;
            core.alarms += 1;
            let (k, p) = (t.k, t.p);
            let stat = at.seg.loops.iter().find(|s| s.name == name);
            let message = match name {
                "same_call" => format!("`{tool}` called {value} times with the same arguments"),
                _ => format!(
                    "tool cycle of length {} repeated {value} times (ending with `{tool}`)",
                    &name[5..]
                ),
            };
            let sid = at.ctx.session_id;
            let finding = Finding {
                id: event_id(&[&at.key.to_string(), &core.spec.id, name, sid, &seq.to_string()]),
                detector: format!("loop:{name}"),
                kind: "loop".into(),
                seq: Some(seq),
                statistic: f64::from(value),
                limit: f64::from(k),
                p_value: Some(p),
                direction: Some(Direction::Up),
                moved: vec![Moved {
                    what: format!("{name}: {tool}"),
                    baseline: stat.map_or(f64::NAN, |s| s.ecdf.quantile(0.5)),
                    observed: f64::from(value),
                    score: -p.log10(),
                }],
                exemplars: vec![sid.to_string()],
                observations: vec![Observation {
                    session_id: sid.to_string(),
                    seq: Some(seq),
                    value: f64::from(value),
                    z: None,
                }],
                message: format!(
                    "loop in session {sid}: {message}; threshold {k} (P = {p:.2e} per session in the baseline)"
                ),
            };
            out.push(DriftEvent::raise(at.key, at.ctx, finding));
        }
    }

    fn state(&self) -> ChartState {
        ChartState::Loops(self.thresholds.clone())
    }

    fn boxed(&self) -> Box<dyn Detector> {
        Box::new(self.clone())
    }
}
