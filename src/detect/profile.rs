//! The session profile: Hotelling's T² on the scores of the profile's
//! features of each finished session, in the baseline's principal components.

use super::event::{DriftEvent, Finding, Moved, Observation, event_id};
use super::state::{ChartState, Core, DetectError, Family, TOP, design_kind};
use super::{At, Detector, Ended};
use crate::baseline::types::{ChartDesign, ChartSpec, SegmentBaseline};
use crate::spc::Direction;
use crate::spc::hotelling::{HotellingT2, noncentral_f_sf};
use crate::stats::pit::session_uniform;

/// The T² family.
pub const FAMILY: Family = Family { fresh, open };

fn fresh(spec: &ChartSpec, seg: &SegmentBaseline) -> Result<ChartState, DetectError> {
    let ChartDesign::T2 { design } = &spec.design else {
        return Err(DetectError::mismatch(spec, design_kind(&spec.design)));
    };
    let p = seg.profile.as_ref().ok_or_else(|| DetectError::Missing {
        id: spec.id.clone(),
        what: "session profile",
    })?;
    let d = p.mean.len();
    let mut inv = vec![0.0; d * d];
    for (v, var) in p.components.iter().zip(&p.variances) {
        for i in 0..d {
            for j in 0..d {
                inv[i * d + j] += v[i] * v[j] / var;
            }
        }
    }
    Ok(ChartState::T2(HotellingT2 {
        mean: p.mean.clone(),
        inv_cov: inv,
        ucl: design.ucl,
    }))
}

fn open(spec: &ChartSpec, state: ChartState) -> Result<Box<dyn Detector>, DetectError> {
    match state {
        ChartState::T2(chart) => Ok(Box::new(Profile { chart })),
        other => Err(DetectError::mismatch(spec, other.kind())),
    }
}

/// Hotelling's T² over finished sessions.
#[derive(Clone, Debug)]
struct Profile {
    chart: HotellingT2,
}

impl Detector for Profile {
    fn on_session(&mut self, core: &mut Core, at: &At, ended: &Ended, out: &mut Vec<DriftEvent>) {
        let (seg, f, sid) = (at.seg, ended.features, at.ctx.session_id);
        // `fresh` refused a T² chart without a profile, so this is the segment's own.
        let p = seg.profile.as_ref().expect("a T² chart has a profile");
        let zs: Option<Vec<f64>> = p
            .features
            .iter()
            .map(|feat| {
                let v = f.get(*feat)?;
                let e = &seg.feature(*feat)?.ecdf;
                Some(e.z(v, session_uniform(sid)))
            })
            .collect();
        let Some(zs) = zs else { return };
        let Ok(t2) = self.chart.t2(&zs) else {
            core.rejected += 1;
            return;
        };
        let ucl = self.chart.ucl;
        core.reading = Some((t2, ucl));
        core.remember(Observation {
            session_id: sid.to_string(),
            seq: None,
            value: t2,
            z: None,
        });
        if t2 <= ucl {
            return;
        }
        core.alarms += 1;
        let d = p.components.len();
        let m = f64::from(p.m);
        let df2 = m - d as f64;
        let scale = m * df2 / (d as f64 * (m + 1.0) * (m - 1.0));
        let p_value = noncentral_f_sf(t2 * scale, d as f64, df2, 0.0);
        let mut moved: Vec<Moved> = p
            .features
            .iter()
            .zip(&zs)
            .zip(&p.mean)
            .map(|((feat, z), mean)| Moved {
                what: feat.name().to_string(),
                baseline: seg.feature(*feat).map_or(f64::NAN, |b| b.quantiles[2]),
                observed: f.get(*feat).unwrap_or(f64::NAN),
                score: z - mean,
            })
            .collect();
        moved.sort_by(|a, b| b.score.abs().total_cmp(&a.score.abs()));
        moved.truncate(TOP);
        let lead = moved.first().map(|m| m.what.clone()).unwrap_or_default();
        let spec = &core.spec;
        let finding = Finding {
            id: event_id(&[&at.key.to_string(), &spec.id, sid, &core.alarms.to_string()]),
            detector: spec.id.clone(),
            kind: "t2".into(),
            seq: None,
            statistic: t2,
            limit: ucl,
            p_value: Some(p_value),
            direction: Some(Direction::Up),
            moved,
            exemplars: vec![sid.to_string()],
            observations: core.recent.iter().rev().take(5).cloned().collect(),
            message: format!("session {sid} is unusual as a whole (T² {t2:.1} > {ucl:.1}); largest move: {lead}"),
        };
        out.push(DriftEvent::raise(at.key, at.ctx, finding));
    }

    fn state(&self) -> ChartState {
        ChartState::T2(self.chart.clone())
    }

    fn boxed(&self) -> Box<dyn Detector> {
        Box::new(self.clone())
    }
}
