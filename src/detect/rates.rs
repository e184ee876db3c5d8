//! Rates: a Bernoulli CUSUM on one yes/no outcome of each finished session
//! (failure, escalation, a failed tool call, failure of a confident answer).

use super::event::{DriftEvent, Finding, Moved, Observation, event_id};
use super::state::{ChartState, Core, DetectError, Family, TOP, design_kind};
use super::{At, Detector, Ended};
use crate::baseline::types::{ChartDesign, ChartSpec, ChartTarget, SegmentBaseline};
use crate::features::Feature;
use crate::spc::Direction;
use crate::spc::bernoulli::BernoulliCusum;

/// The rate-chart family.
pub const FAMILY: Family = Family { fresh, open };

fn fresh(spec: &ChartSpec, _seg: &SegmentBaseline) -> Result<ChartState, DetectError> {
    match &spec.design {
        ChartDesign::Bernoulli { design } => Ok(ChartState::Bernoulli(BernoulliCusum::new(*design))),
        other => Err(DetectError::mismatch(spec, design_kind(other))),
    }
}

fn open(spec: &ChartSpec, state: ChartState) -> Result<Box<dyn Detector>, DetectError> {
    match state {
        ChartState::Bernoulli(chart) => Ok(Box::new(Rate { chart })),
        other => Err(DetectError::mismatch(spec, other.kind())),
    }
}

/// A Bernoulli CUSUM over sessions.
#[derive(Clone, Debug)]
struct Rate {
    chart: BernoulliCusum,
}

impl Rate {
    /// One observation; an event when the chart signals.
    fn feed(&mut self, core: &mut Core, at: &At, event: bool, out: &mut Vec<DriftEvent>) {
        let sid = at.ctx.session_id;
        core.remember(Observation {
            session_id: sid.to_string(),
            seq: None,
            value: if event { 1.0 } else { 0.0 },
            z: None,
        });
        let signal = self.chart.observe(event);
        core.reading = Some((self.chart.statistic(), self.chart.design.limit()));
        let Some(s) = signal else { return };
        core.alarms += 1;
        let what = match core.spec.target {
            ChartTarget::Failure => "failure rate",
            ChartTarget::Escalation => "escalation rate",
            ChartTarget::ToolFailure => "share of sessions with a failed tool call",
            _ => "failure rate of confident answers (calibration)",
        };
        let p0 = self.chart.design.p0;
        let recent: Vec<Observation> = core.recent.iter().cloned().collect();
        let observed = recent.iter().map(|o| o.value).sum::<f64>() / recent.len().max(1) as f64;
        let mut exemplars: Vec<String> = Vec::new();
        for o in recent.iter().rev().filter(|o| o.value > 0.0) {
            if !exemplars.contains(&o.session_id) && exemplars.len() < TOP {
                exemplars.push(o.session_id.clone());
            }
        }
        let spec = &core.spec;
        let finding = Finding {
            id: event_id(&[&at.key.to_string(), &spec.id, sid, "0", &core.alarms.to_string()]),
            detector: spec.id.clone(),
            kind: spec.family.clone(),
            seq: None,
            statistic: s.statistic,
            limit: s.limit,
            p_value: None,
            direction: Some(Direction::Up),
            moved: vec![Moved {
                what: what.to_string(),
                baseline: p0,
                observed,
                score: s.statistic,
            }],
            exemplars,
            message: format!(
                "{what} rose: {:.1}% of the last {} vs {:.1}% in the baseline (Bernoulli CUSUM {:.2} > {:.2})",
                100.0 * observed,
                recent.len(),
                100.0 * p0,
                s.statistic,
                s.limit
            ),
            observations: recent,
        };
        out.push(DriftEvent::raise(at.key, at.ctx, finding));
    }
}

impl Detector for Rate {
    fn on_session(&mut self, core: &mut Core, at: &At, ended: &Ended, out: &mut Vec<DriftEvent>) {
        let (f, success) = (ended.features, ended.success);
        let event = match core.spec.target {
            ChartTarget::Failure => success.map(|s| s < 1.0),
            ChartTarget::Escalation => Some(f.escalated()),
            ChartTarget::ToolFailure => f
                .get(Feature::ToolCalls)
                .filter(|n| *n > 0.0)
                .map(|_| f.get(Feature::ToolErrors).unwrap_or(0.0) > 0.0),
            _ => success.filter(|_| f.confident).map(|s| s < 1.0),
        };
        if let Some(event) = event {
            self.feed(core, at, event, out);
        }
    }

    fn on_late_outcome(&mut self, core: &mut Core, at: &At, success: bool, confident: bool, out: &mut Vec<DriftEvent>) {
        // The other charts saw the session when it closed.
        match core.spec.target {
            ChartTarget::Failure => self.feed(core, at, !success, out),
            ChartTarget::Calibration if confident => self.feed(core, at, !success, out),
            _ => {}
        }
    }

    fn state(&self) -> ChartState {
        ChartState::Bernoulli(self.chart.clone())
    }

    fn boxed(&self) -> Box<dyn Detector> {
        Box::new(self.clone())
    }
}
