//! Windows: the tool transitions (Markov) or tool mix of the last `window`
//! sessions against the baseline's, a G-test of homogeneity every `hop`
//! sessions, corrected for the baseline's overdispersion.

use super::event::{DriftEvent, Finding, Moved, event_id};
use super::state::{ChartState, Core, DetectError, Family, TOP, WindowState, design_kind};
use super::{At, Detector, Ended};
use crate::baseline::types::{ChartDesign, ChartSpec, ChartTarget, SegmentBaseline};
use crate::stats::dist;
use crate::stats::gtest::homogeneity;
use ndarray::Array2;
use std::collections::VecDeque;

/// The window-test family.
pub const FAMILY: Family = Family { fresh, open };

fn fresh(spec: &ChartSpec, seg: &SegmentBaseline) -> Result<ChartState, DetectError> {
    let ChartDesign::WindowTest { alpha, window, hop } = &spec.design else {
        return Err(DetectError::mismatch(spec, design_kind(&spec.design)));
    };
    let cells = match spec.target {
        ChartTarget::Markov => seg.markov.states.len().pow(2),
        _ => seg.tools.tools.len(),
    };
    Ok(ChartState::Window(WindowState {
        sessions: VecDeque::new(),
        sum: vec![0.0; cells],
        since_test: 0,
        alpha: *alpha,
        size: *window,
        hop: *hop,
    }))
}

fn open(spec: &ChartSpec, state: ChartState) -> Result<Box<dyn Detector>, DetectError> {
    match state {
        ChartState::Window(w) => Ok(Box::new(Window { w })),
        other => Err(DetectError::mismatch(spec, other.kind())),
    }
}

/// A window test over finished sessions.
#[derive(Clone, Debug)]
struct Window {
    w: WindowState,
}

impl Detector for Window {
    fn on_session(&mut self, core: &mut Core, at: &At, ended: &Ended, out: &mut Vec<DriftEvent>) {
        let markov = core.spec.target == ChartTarget::Markov;
        let (seg, sid) = (at.seg, at.ctx.session_id);
        let w = &mut self.w;
        let counts = if markov { ended.markov } else { ended.tools }.to_vec();
        for (i, c) in &counts {
            w.sum[*i as usize] += c;
        }
        w.sessions.push_back((sid.to_string(), counts));
        if w.sessions.len() > w.size as usize
            && let Some((_, old)) = w.sessions.pop_front()
        {
            for (i, c) in old {
                w.sum[i as usize] -= c;
            }
        }
        w.since_test += 1;
        if w.sessions.len() < w.size as usize || w.since_test < w.hop {
            return;
        }
        w.since_test = 0;
        let (reference, names, dispersion): (Array2<f64>, &[String], f64) = if markov {
            let k = seg.markov.states.len();
            (
                Array2::from_shape_vec((k, k), seg.markov.counts.clone()).expect("K×K counts"),
                &seg.markov.states,
                seg.markov.dispersion,
            )
        } else {
            let k = seg.tools.tools.len();
            (
                Array2::from_shape_vec((1, k), seg.tools.counts.clone()).expect("1×K counts"),
                &seg.tools.tools,
                seg.tools.dispersion,
            )
        };
        let observed = Array2::from_shape_vec(reference.dim(), w.sum.clone()).expect("same shape");
        let t = homogeneity(&reference, &observed);
        if t.df <= 0.0 {
            return;
        }
        let stat = t.g / dispersion.max(1.0);
        let p_value = dist::chi2_sf(stat, t.df);
        let limit = dist::chi2_quantile(1.0 - w.alpha, t.df);
        core.reading = Some((stat, limit));
        if p_value >= w.alpha {
            return;
        }
        core.alarms += 1;
        let ncols = reference.ncols();
        let mut res = t.residuals.clone();
        res.sort_by(|a, b| b.2.abs().total_cmp(&a.2.abs()));
        let moved: Vec<Moved> = res
            .iter()
            .take(TOP)
            .map(|&(i, j, score)| {
                let rrow: f64 = reference.row(i).sum();
                let orow: f64 = observed.row(i).sum();
                let what = if markov {
                    format!("{} → {}", names[i], names[j])
                } else {
                    names[j].clone()
                };
                Moved {
                    what,
                    baseline: reference[[i, j]] / rrow.max(1.0),
                    observed: observed[[i, j]] / orow.max(1.0),
                    score,
                }
            })
            .collect();
        // Exemplars: window sessions richest in the most moved cells.
        let top: Vec<u32> = res.iter().take(TOP).map(|&(i, j, _)| (i * ncols + j) as u32).collect();
        let mut ranked: Vec<(f64, &String)> = w
            .sessions
            .iter()
            .map(|(s, c)| {
                let weight: f64 = c
                    .iter()
                    .filter(|(cell, _)| top.contains(cell))
                    .map(|(cell, n)| {
                        n * res
                            .iter()
                            .find(|x| (x.0 * ncols + x.1) as u32 == *cell)
                            .map_or(0.0, |x| x.2.signum())
                    })
                    .sum();
                (weight, s)
            })
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        let exemplars: Vec<String> = ranked.iter().take(TOP).map(|(_, s)| (*s).clone()).collect();
        let lead = moved
            .first()
            .map(|m| format!("{} {:.0}% → {:.0}%", m.what, 100.0 * m.baseline, 100.0 * m.observed))
            .unwrap_or_default();
        let what = if markov { "tool transitions" } else { "tool preference" };
        let spec = &core.spec;
        let finding = Finding {
            id: event_id(&[&at.key.to_string(), &spec.id, sid, &core.alarms.to_string()]),
            detector: spec.id.clone(),
            kind: spec.family.clone(),
            seq: None,
            statistic: stat,
            limit,
            p_value: Some(p_value),
            direction: None,
            moved,
            exemplars,
            observations: Vec::new(),
            message: format!(
                "{what} changed over the last {} sessions (G/φ = {stat:.1}, df {}, p = {p_value:.2e}); largest move: {lead}",
                w.sessions.len(),
                t.df
            ),
        };
        out.push(DriftEvent::raise(at.key, at.ctx, finding));
        // Start a fresh window so one drift is one event.
        w.sessions.clear();
        w.sum.iter_mut().for_each(|x| *x = 0.0);
    }

    fn state(&self) -> ChartState {
        ChartState::Window(self.w.clone())
    }

    fn boxed(&self) -> Box<dyn Detector> {
        Box::new(self.clone())
    }
}
