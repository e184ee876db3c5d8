//! Univariate session charts: EWMA, CUSUM or Shewhart on one feature of each
//! finished session (or the cost of each successful one), scored against the
//! baseline's distribution of that feature.

use super::event::{Ctx, DriftEvent, Finding, Moved, Observation, event_id};
use super::state::{ChartState, Core, DetectError, Family, TOP, design_kind};
use super::{At, Detector, Ended};
use crate::baseline::types::{ChartDesign, ChartSpec, ChartTarget, SegmentBaseline};
use crate::features::Feature;
use crate::model::SegmentKey;
use crate::spc::cusum::Cusum;
use crate::spc::ewma::Ewma;
use crate::spc::shewhart::Shewhart;
use crate::spc::{Direction, Signal};
use crate::stats::pit::session_uniform;
use crate::stats::{Ecdf, dist};

/// The univariate session-chart family.
pub const FAMILY: Family = Family {
    fresh: univariate_state,
    open,
};

/// The initial state of a univariate chart (sessions or outputs).
pub fn univariate_state(spec: &ChartSpec, _seg: &SegmentBaseline) -> Result<ChartState, DetectError> {
    match &spec.design {
        ChartDesign::Ewma { design, scale } => Ok(ChartState::Ewma(Ewma::new(*design), *scale)),
        ChartDesign::Cusum { design } => Ok(ChartState::Cusum(Cusum::new(*design))),
        ChartDesign::Shewhart { design } => Ok(ChartState::Shewhart(Shewhart::new(*design))),
        other => Err(DetectError::mismatch(spec, design_kind(other))),
    }
}

fn open(spec: &ChartSpec, state: ChartState) -> Result<Box<dyn Detector>, DetectError> {
    let chart = match state {
        ChartState::Ewma(c, scale) => Univariate::Ewma(c, scale),
        ChartState::Cusum(c) => Univariate::Cusum(c),
        ChartState::Shewhart(c) => Univariate::Shewhart(c),
        other => return Err(DetectError::mismatch(spec, other.kind())),
    };
    Ok(Box::new(SessionChart { chart }))
}

#[derive(Clone, Debug)]
enum Univariate {
    /// The scale is the design's; session scores are not divided by it.
    Ewma(Ewma, f64),
    Cusum(Cusum),
    Shewhart(Shewhart),
}

/// One univariate chart over finished sessions.
#[derive(Clone, Debug)]
struct SessionChart {
    chart: Univariate,
}

impl Detector for SessionChart {
    fn on_session(&mut self, core: &mut Core, at: &At, ended: &Ended, out: &mut Vec<DriftEvent>) {
        let f = ended.features;
        let (value, ecdf, name) = match core.spec.target {
            ChartTarget::Feature(feat) => (f.get(feat), at.seg.feature(feat).map(|b| &b.ecdf), feat.name()),
            _ => (
                f.get(Feature::CostUsd).filter(|_| ended.success == Some(1.0)),
                at.seg.cost_success.as_ref(),
                "cost_per_success",
            ),
        };
        let (Some(value), Some(ecdf)) = (value, ecdf) else {
            return;
        };
        let z = ecdf.z(value, session_uniform(at.ctx.session_id));
        core.remember(Observation {
            session_id: at.ctx.session_id.to_string(),
            seq: None,
            value,
            z: Some(z),
        });
        let (signal, reading) = match &mut self.chart {
            Univariate::Ewma(c, _) => (core.counted(c.observe(z)), (c.statistic(), c.next_limit())),
            Univariate::Cusum(c) => {
                let s = core.counted(c.observe(z));
                let (u, d) = c.statistic();
                (s, (u.max(d), c.design.h))
            }
            Univariate::Shewhart(c) => (core.counted(c.observe(z)), (z, c.design.c)),
        };
        core.reading = Some(reading);
        if let Some(s) = signal {
            core.alarms += 1;
            out.push(shift_event(at.key, core, at.ctx, None, s, ecdf, name));
        }
    }

    fn state(&self) -> ChartState {
        match &self.chart {
            Univariate::Ewma(c, scale) => ChartState::Ewma(c.clone(), *scale),
            Univariate::Cusum(c) => ChartState::Cusum(c.clone()),
            Univariate::Shewhart(c) => ChartState::Shewhart(c.clone()),
        }
    }

    fn boxed(&self) -> Box<dyn Detector> {
        Box::new(self.clone())
    }
}

/// The event of a univariate chart that signalled: the recent mean against
/// the baseline median, the sessions furthest in the signal's direction.
pub fn shift_event(
    key: &SegmentKey,
    core: &Core,
    ctx: &Ctx,
    seq: Option<u64>,
    s: Signal,
    ecdf: &Ecdf,
    name: &str,
) -> DriftEvent {
    let recent: Vec<&Observation> = core.recent.iter().collect();
    let tail: Vec<&&Observation> = recent.iter().rev().take(10).collect();
    let observed = tail.iter().map(|o| o.value).sum::<f64>() / tail.len().max(1) as f64;
    let mean_z = tail.iter().filter_map(|o| o.z).sum::<f64>() / tail.len().max(1) as f64;
    let sign = if s.direction == Direction::Up { 1.0 } else { -1.0 };
    let mut ex: Vec<&&Observation> = tail.clone();
    ex.sort_by(|a, b| (sign * b.z.unwrap_or(0.0)).total_cmp(&(sign * a.z.unwrap_or(0.0))));
    let mut exemplars: Vec<String> = Vec::new();
    for o in ex {
        if !exemplars.contains(&o.session_id) && exemplars.len() < TOP {
            exemplars.push(o.session_id.clone());
        }
    }
    let median = ecdf.quantile(0.5);
    let dir = if s.direction == Direction::Up { "up" } else { "down" };
    let spec = &core.spec;
    let finding = Finding {
        id: event_id(&[
            &key.to_string(),
            &spec.id,
            ctx.session_id,
            &seq.unwrap_or(0).to_string(),
            &core.alarms.to_string(),
        ]),
        detector: spec.id.clone(),
        kind: spec.family.clone(),
        seq,
        statistic: s.statistic,
        limit: s.limit,
        p_value: (spec.family == "shewhart").then(|| 2.0 * dist::norm_cdf(-s.statistic.abs())),
        direction: Some(s.direction),
        moved: vec![Moved {
            what: name.to_string(),
            baseline: median,
            observed,
            score: mean_z,
        }],
        exemplars,
        observations: recent.into_iter().cloned().collect(),
        message: format!(
            "{name} drifted {dir}: recent mean {observed:.4} vs baseline median {median:.4} ({}{} statistic {:.3} beyond {:.3})",
            spec.family,
            s.rule.map_or(String::new(), |k| format!(" rule {k}")),
            s.statistic,
            s.limit
        ),
    };
    DriftEvent::raise(key, ctx, finding)
}
