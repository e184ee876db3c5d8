//! Per-output charts: an EWMA over every model output of a session as it
//! arrives (its length, or one tone lexicon's score), against the baseline's
//! distribution of outputs.

use super::event::{DriftEvent, Observation};
use super::sessions::{shift_event, univariate_state};
use super::state::{ChartState, Core, DetectError, Family};
use super::{At, Detector, InSession};
use crate::baseline::types::{ChartSpec, ChartTarget};
use crate::features::StepObs;
use crate::features::text::LEXICON_FILES;
use crate::spc::ewma::Ewma;
use crate::stats::pit::pit_uniform;

/// The per-output chart family.
pub const FAMILY: Family = Family {
    fresh: univariate_state,
    open,
};

fn open(spec: &ChartSpec, state: ChartState) -> Result<Box<dyn Detector>, DetectError> {
    match state {
        ChartState::Ewma(chart, scale) => Ok(Box::new(OutputChart { chart, scale })),
        other => Err(DetectError::mismatch(spec, other.kind())),
    }
}

/// An EWMA over outputs; scores are divided by `scale` (outputs of one
/// session are autocorrelated).
#[derive(Clone, Debug)]
struct OutputChart {
    chart: Ewma,
    scale: f64,
}

impl Detector for OutputChart {
    fn on_step(
        &mut self,
        core: &mut Core,
        at: &At,
        seq: u64,
        obs: &StepObs,
        _state: &mut InSession,
        out: &mut Vec<DriftEvent>,
    ) {
        let Some(output) = &obs.output else { return };
        let (value, ecdf, what) = match core.spec.target {
            ChartTarget::OutputLexicon(i) => (
                f64::from(output.text.lexicon[i]),
                at.seg.outputs.lexicon.get(i).and_then(Option::as_ref),
                LEXICON_FILES[i].0,
            ),
            _ => (f64::from(output.text.chars), at.seg.outputs.chars.as_ref(), "chars"),
        };
        let Some(ecdf) = ecdf else { return };
        let z = ecdf.z(value, pit_uniform(at.ctx.session_id, what, seq)) / self.scale;
        core.remember(Observation {
            session_id: at.ctx.session_id.to_string(),
            seq: Some(seq),
            value,
            z: Some(z),
        });
        let signal = core.counted(self.chart.observe(z));
        core.reading = Some((self.chart.statistic(), self.chart.next_limit()));
        if let Some(s) = signal {
            core.alarms += 1;
            let name = format!("output {what}");
            out.push(shift_event(at.key, core, at.ctx, Some(seq), s, ecdf, &name));
        }
    }

    fn state(&self) -> ChartState {
        ChartState::Ewma(self.chart.clone(), self.scale)
    }

    fn boxed(&self) -> Box<dyn Detector> {
        Box::new(self.clone())
    }
}
