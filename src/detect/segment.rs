//! Every detector of one segment, running: built from the segment's
//! baseline, fed steps (in-session detectors) and finished sessions
//! (session-level charts and windows). Bounded state: charts are O(1), rings
//! keep the last [`RING`] observations, windows the last `window` sessions.

use super::event::{DriftEvent, Moved, Observation, event_id};
use crate::baseline::types::{ChartDesign, ChartSpec, ChartTarget, SegmentBaseline};
use crate::features::sequence::{END, MAX_CYCLE, NEW_TOOL, START};
use crate::features::text::LEXICON_FILES;
use crate::features::{Feature, SessionFeatures, StepObs};
use crate::model::SegmentKey;
use crate::spc::bernoulli::BernoulliCusum;
use crate::spc::cusum::Cusum;
use crate::spc::ewma::Ewma;
use crate::spc::hotelling::HotellingT2;
use crate::spc::shewhart::Shewhart;
use crate::spc::{Direction, Signal};
use crate::stats::gtest::homogeneity;
use crate::stats::pit::{pit_uniform, session_uniform};
use crate::stats::{Ecdf, dist};
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

/// Observations kept per chart as evidence.
pub const RING: usize = 20;

/// Moved items reported per event.
const TOP: usize = 5;

/// Per-session state the in-session detectors keep (owned by the engine).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InSession {
    /// Loop statistics that already fired in this session (bit per statistic).
    pub loops_fired: u8,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Chart {
    Ewma(Ewma, f64),
    Cusum(Cusum),
    Shewhart(Shewhart),
    T2(HotellingT2),
    Bernoulli(BernoulliCusum),
    Window(Window),
    Loops(Vec<(String, u32, f64)>),
}

/// Sliding window of per-session count vectors for a homogeneity test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Window {
    sessions: VecDeque<(String, Vec<(u32, f64)>)>,
    sum: Vec<f64>,
    since_test: u32,
    alpha: f64,
    size: u32,
    hop: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Running {
    spec: ChartSpec,
    chart: Chart,
    recent: VecDeque<Observation>,
    alarms: u64,
    /// Observations the chart refused (a non-finite score): counted, so a
    /// chart that silently stops charting shows in the report and metrics.
    #[serde(default)]
    rejected: u64,
}

/// A chart's signal; a refused observation is counted instead of dropped unseen.
fn counted(result: Result<Option<Signal>, crate::spc::ChartError>, rejected: &mut u64) -> Option<Signal> {
    result.unwrap_or_else(|_| {
        *rejected += 1;
        None
    })
}

/// Every running detector of one segment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmentDetectors {
    key: SegmentKey,
    charts: Vec<Running>,
    /// Markov state index by name.
    states: HashMap<String, u32>,
    /// Tool index by name.
    tools: HashMap<String, u32>,
    /// Sessions closed so far.
    pub sessions_seen: u64,
    /// Recent values per charted quantity, for reports (chart id → statistic, limit).
    pub last: HashMap<String, (f64, f64)>,
}

fn ring_push(r: &mut VecDeque<Observation>, o: Observation) {
    if r.len() == RING {
        r.pop_front();
    }
    r.push_back(o);
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

impl SegmentDetectors {
    /// Builds running detectors from a segment baseline.
    pub fn new(seg: &SegmentBaseline) -> SegmentDetectors {
        let charts = seg
            .charts
            .iter()
            .map(|spec| {
                let chart = match &spec.design {
                    ChartDesign::Ewma { design, scale } => Chart::Ewma(Ewma::new(*design), *scale),
                    ChartDesign::Cusum { design } => Chart::Cusum(Cusum::new(*design)),
                    ChartDesign::Shewhart { design } => Chart::Shewhart(Shewhart::new(*design)),
                    ChartDesign::Bernoulli { design } => Chart::Bernoulli(BernoulliCusum::new(*design)),
                    ChartDesign::T2 { design } => {
                        let p = seg.profile.as_ref().expect("a T² chart has a profile");
                        let d = p.mean.len();
                        let mut inv = vec![0.0; d * d];
                        for (v, var) in p.components.iter().zip(&p.variances) {
                            for i in 0..d {
                                for j in 0..d {
                                    inv[i * d + j] += v[i] * v[j] / var;
                                }
                            }
                        }
                        Chart::T2(HotellingT2 {
                            mean: p.mean.clone(),
                            inv_cov: inv,
                            ucl: design.ucl,
                        })
                    }
                    ChartDesign::WindowTest { alpha, window, hop } => {
                        let cells = match spec.target {
                            ChartTarget::Markov => seg.markov.states.len().pow(2),
                            _ => seg.tools.tools.len(),
                        };
                        Chart::Window(Window {
                            sessions: VecDeque::new(),
                            sum: vec![0.0; cells],
                            since_test: 0,
                            alpha: *alpha,
                            size: *window,
                            hop: *hop,
                        })
                    }
                    ChartDesign::Loops { thresholds } => Chart::Loops(thresholds.clone()),
                };
                Running {
                    spec: spec.clone(),
                    chart,
                    recent: VecDeque::new(),
                    alarms: 0,
                    rejected: 0,
                }
            })
            .collect();
        SegmentDetectors {
            key: seg.key.clone(),
            charts,
            states: seg
                .markov
                .states
                .iter()
                .enumerate()
                .map(|(i, s)| (s.clone(), i as u32))
                .collect(),
            tools: seg
                .tools
                .tools
                .iter()
                .enumerate()
                .map(|(i, s)| (s.clone(), i as u32))
                .collect(),
            sessions_seen: 0,
            last: HashMap::new(),
        }
    }

    /// The segment these detectors belong to.
    pub fn key(&self) -> &SegmentKey {
        &self.key
    }

    /// Feeds one step's observations (in `seq` order within its session).
    pub fn on_step(
        &mut self,
        seg: &SegmentBaseline,
        ctx: &Ctx,
        seq: u64,
        obs: &StepObs,
        state: &mut InSession,
    ) -> Vec<DriftEvent> {
        let mut events = Vec::new();
        for r in &mut self.charts {
            match (&r.spec.target, &mut r.chart) {
                (ChartTarget::Loops, Chart::Loops(thresholds)) => {
                    let Some((tool, l)) = &obs.tool_loop else { continue };
                    for (i, (name, k, p)) in thresholds.iter().enumerate() {
                        let value = match name.as_str() {
                            "same_call" => l.same_call,
                            other => other
                                .strip_prefix("cycle")
                                .and_then(|n| n.parse::<usize>().ok())
                                .filter(|n| (1..=MAX_CYCLE).contains(n))
                                .map_or(0, |n| l.cycle_reps[n - 1]),
                        };
                        // One loop event per session: the first statistic to
                        // cross names the loop; later crossings are the same loop.
                        let bit = 1u8 << i;
                        if value >= *k && state.loops_fired == 0 {
                            state.loops_fired |= bit;
                            r.alarms += 1;
                            let stat = seg.loops.iter().find(|s| &s.name == name);
                            let message = match name.as_str() {
                                "same_call" => format!("`{tool}` called {value} times with the same arguments"),
                                _ => format!(
                                    "tool cycle of length {} repeated {value} times (ending with `{tool}`)",
                                    &name[5..]
                                ),
                            };
                            events.push(DriftEvent {
                                id: event_id(&[&self.key.to_string(), &r.spec.id, name, ctx.session_id, &seq.to_string()]),
                                detector: format!("loop:{name}"),
                                kind: "loop".into(),
                                segment: self.key.clone(),
                                fallback_from: ctx.fallback_from.cloned(),
                                session_id: ctx.session_id.to_string(),
                                seq: Some(seq),
                                ts: ctx.ts,
                                statistic: f64::from(value),
                                limit: f64::from(*k),
                                p_value: Some(*p),
                                direction: Some(Direction::Up),
                                moved: vec![Moved {
                                    what: format!("{name}: {tool}"),
                                    baseline: stat.map_or(f64::NAN, |s| s.ecdf.quantile(0.5)),
                                    observed: f64::from(value),
                                    score: -p.log10(),
                                }],
                                exemplars: vec![ctx.session_id.to_string()],
                                observations: vec![Observation {
                                    session_id: ctx.session_id.to_string(),
                                    seq: Some(seq),
                                    value: f64::from(value),
                                    z: None,
                                }],
                                message: format!(
                                    "loop in session {}: {message}; threshold {k} (P = {p:.2e} per session in the baseline)",
                                    ctx.session_id
                                ),
                            });
                        }
                    }
                }
                (ChartTarget::OutputChars | ChartTarget::OutputLexicon(_), Chart::Ewma(chart, scale)) => {
                    let Some(out) = &obs.output else { continue };
                    let (value, ecdf, what) = match r.spec.target {
                        ChartTarget::OutputChars => (f64::from(out.text.chars), seg.outputs.chars.as_ref(), "chars"),
                        ChartTarget::OutputLexicon(i) => (
                            f64::from(out.text.lexicon[i]),
                            seg.outputs.lexicon.get(i).and_then(Option::as_ref),
                            LEXICON_FILES[i].0,
                        ),
                        _ => unreachable!("matched above"),
                    };
                    let Some(ecdf) = ecdf else { continue };
                    let z = ecdf.z(value, pit_uniform(ctx.session_id, what, seq)) / *scale;
                    ring_push(
                        &mut r.recent,
                        Observation {
                            session_id: ctx.session_id.to_string(),
                            seq: Some(seq),
                            value,
                            z: Some(z),
                        },
                    );
                    let signal = counted(chart.observe(z), &mut r.rejected);
                    self.last
                        .insert(r.spec.id.clone(), (chart.statistic(), chart.next_limit()));
                    if let Some(s) = signal {
                        r.alarms += 1;
                        events.push(univariate_event(
                            &self.key,
                            r,
                            ctx,
                            Some(seq),
                            s,
                            ecdf,
                            &format!("output {what}"),
                        ));
                    }
                }
                _ => {}
            }
        }
        events
    }

    /// Feeds a finished session.
    pub fn on_session_end(&mut self, seg: &SegmentBaseline, ctx: &Ctx, f: &SessionFeatures) -> Vec<DriftEvent> {
        self.sessions_seen += 1;
        let mut events = Vec::new();
        let markov_counts = self.markov_counts(f);
        let tool_counts = self.tool_counts(f);
        let success = f.success();
        let key = self.key.clone();
        for r in &mut self.charts {
            let target = r.spec.target.clone();
            match (&target, &mut r.chart) {
                (ChartTarget::Feature(_) | ChartTarget::CostPerSuccess, chart) => {
                    let (value, ecdf, name) = match target {
                        ChartTarget::Feature(feat) => (f.get(feat), seg.feature(feat).map(|b| &b.ecdf), feat.name()),
                        _ => (
                            f.get(Feature::CostUsd).filter(|_| success == Some(1.0)),
                            seg.cost_success.as_ref(),
                            "cost_per_success",
                        ),
                    };
                    let (Some(value), Some(ecdf)) = (value, ecdf) else {
                        continue;
                    };
                    let z = ecdf.z(value, session_uniform(ctx.session_id));
                    ring_push(
                        &mut r.recent,
                        Observation {
                            session_id: ctx.session_id.to_string(),
                            seq: None,
                            value,
                            z: Some(z),
                        },
                    );
                    let (signal, stat) = match chart {
                        Chart::Ewma(c, _) => {
                            let s = counted(c.observe(z), &mut r.rejected);
                            (s, (c.statistic(), c.next_limit()))
                        }
                        Chart::Cusum(c) => {
                            let s = counted(c.observe(z), &mut r.rejected);
                            let (u, d) = c.statistic();
                            (s, (u.max(d), c.design.h))
                        }
                        Chart::Shewhart(c) => (counted(c.observe(z), &mut r.rejected), (z, c.design.c)),
                        _ => continue,
                    };
                    self.last.insert(r.spec.id.clone(), stat);
                    if let Some(s) = signal {
                        r.alarms += 1;
                        events.push(univariate_event(&key, r, ctx, None, s, ecdf, name));
                    }
                }
                (ChartTarget::Profile, Chart::T2(chart)) => {
                    let p = seg.profile.as_ref().expect("a T² chart has a profile");
                    let zs: Option<Vec<f64>> = p
                        .features
                        .iter()
                        .map(|feat| {
                            let v = f.get(*feat)?;
                            let e = &seg.feature(*feat)?.ecdf;
                            Some(e.z(v, session_uniform(ctx.session_id)))
                        })
                        .collect();
                    let Some(zs) = zs else { continue };
                    let Ok(t2) = chart.t2(&zs) else {
                        r.rejected += 1;
                        continue;
                    };
                    self.last.insert(r.spec.id.clone(), (t2, chart.ucl));
                    ring_push(
                        &mut r.recent,
                        Observation {
                            session_id: ctx.session_id.to_string(),
                            seq: None,
                            value: t2,
                            z: None,
                        },
                    );
                    if t2 > chart.ucl {
                        r.alarms += 1;
                        let d = p.components.len();
                        let df2 = f64::from(p.m) - d as f64;
                        let scale = f64::from(p.m) * df2 / (d as f64 * (f64::from(p.m) + 1.0) * (f64::from(p.m) - 1.0));
                        let p_value = crate::spc::hotelling::noncentral_f_sf(t2 * scale, d as f64, df2, 0.0);
                        let mut moved: Vec<Moved> = p
                            .features
                            .iter()
                            .zip(&zs)
                            .zip(&p.mean)
                            .map(|((feat, z), m)| Moved {
                                what: feat.name().to_string(),
                                baseline: seg.feature(*feat).map_or(f64::NAN, |b| b.quantiles[2]),
                                observed: f.get(*feat).unwrap_or(f64::NAN),
                                score: z - m,
                            })
                            .collect();
                        moved.sort_by(|a, b| b.score.abs().total_cmp(&a.score.abs()));
                        moved.truncate(TOP);
                        let lead = moved.first().map(|m| m.what.clone()).unwrap_or_default();
                        events.push(DriftEvent {
                            id: event_id(&[&key.to_string(), &r.spec.id, ctx.session_id, &r.alarms.to_string()]),
                            detector: r.spec.id.clone(),
                            kind: "t2".into(),
                            segment: key.clone(),
                            fallback_from: ctx.fallback_from.cloned(),
                            session_id: ctx.session_id.to_string(),
                            seq: None,
                            ts: ctx.ts,
                            statistic: t2,
                            limit: chart.ucl,
                            p_value: Some(p_value),
                            direction: Some(Direction::Up),
                            moved,
                            exemplars: vec![ctx.session_id.to_string()],
                            observations: r.recent.iter().rev().take(5).cloned().collect(),
                            message: format!(
                                "session {} is unusual as a whole (T² {t2:.1} > {:.1}); largest move: {lead}",
                                ctx.session_id, chart.ucl
                            ),
                        });
                    }
                }
                (ChartTarget::Markov | ChartTarget::ToolPreference, Chart::Window(w)) => {
                    let counts = if target == ChartTarget::Markov {
                        markov_counts.clone()
                    } else {
                        tool_counts.clone()
                    };
                    for (i, c) in &counts {
                        w.sum[*i as usize] += c;
                    }
                    w.sessions.push_back((ctx.session_id.to_string(), counts));
                    if w.sessions.len() > w.size as usize
                        && let Some((_, old)) = w.sessions.pop_front()
                    {
                        for (i, c) in old {
                            w.sum[i as usize] -= c;
                        }
                    }
                    w.since_test += 1;
                    if w.sessions.len() < w.size as usize || w.since_test < w.hop {
                        continue;
                    }
                    w.since_test = 0;
                    let (reference, names, dispersion): (Array2<f64>, Vec<String>, f64) =
                        if target == ChartTarget::Markov {
                            let k = seg.markov.states.len();
                            (
                                Array2::from_shape_vec((k, k), seg.markov.counts.clone()).expect("K×K counts"),
                                seg.markov.states.clone(),
                                seg.markov.dispersion,
                            )
                        } else {
                            let k = seg.tools.tools.len();
                            (
                                Array2::from_shape_vec((1, k), seg.tools.counts.clone()).expect("1×K counts"),
                                seg.tools.tools.clone(),
                                seg.tools.dispersion,
                            )
                        };
                    let observed = Array2::from_shape_vec(reference.dim(), w.sum.clone()).expect("same shape");
                    let t = homogeneity(&reference, &observed);
                    if t.df <= 0.0 {
                        continue;
                    }
                    let stat = t.g / dispersion.max(1.0);
                    let p_value = dist::chi2_sf(stat, t.df);
                    let limit = dist::chi2_quantile(1.0 - w.alpha, t.df);
                    self.last.insert(r.spec.id.clone(), (stat, limit));
                    if p_value < w.alpha {
                        r.alarms += 1;
                        let ncols = reference.ncols();
                        let mut res = t.residuals.clone();
                        res.sort_by(|a, b| b.2.abs().total_cmp(&a.2.abs()));
                        let moved: Vec<Moved> = res
                            .iter()
                            .take(TOP)
                            .map(|&(i, j, score)| {
                                let rrow: f64 = reference.row(i).sum();
                                let orow: f64 = observed.row(i).sum();
                                let what = if target == ChartTarget::Markov {
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
                            .map(|(sid, c)| {
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
                                (weight, sid)
                            })
                            .collect();
                        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
                        let exemplars: Vec<String> = ranked.iter().take(TOP).map(|(_, s)| (*s).clone()).collect();
                        let lead = moved
                            .first()
                            .map(|m| format!("{} {:.0}% → {:.0}%", m.what, 100.0 * m.baseline, 100.0 * m.observed))
                            .unwrap_or_default();
                        let what = if target == ChartTarget::Markov {
                            "tool transitions"
                        } else {
                            "tool preference"
                        };
                        events.push(DriftEvent {
                            id: event_id(&[&key.to_string(), &r.spec.id, ctx.session_id, &r.alarms.to_string()]),
                            detector: r.spec.id.clone(),
                            kind: r.spec.family.clone(),
                            segment: key.clone(),
                            fallback_from: ctx.fallback_from.cloned(),
                            session_id: ctx.session_id.to_string(),
                            seq: None,
                            ts: ctx.ts,
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
                        });
                        // Start a fresh window so one drift is one event.
                        w.sessions.clear();
                        w.sum.iter_mut().for_each(|x| *x = 0.0);
                    }
                }
                (
                    ChartTarget::Failure
                    | ChartTarget::Escalation
                    | ChartTarget::Calibration
                    | ChartTarget::ToolFailure,
                    Chart::Bernoulli(_),
                ) => {
                    let event = match target {
                        ChartTarget::Failure => success.map(|s| s < 1.0),
                        ChartTarget::Escalation => Some(f.escalated()),
                        ChartTarget::ToolFailure => f
                            .get(Feature::ToolCalls)
                            .filter(|n| *n > 0.0)
                            .map(|_| f.get(Feature::ToolErrors).unwrap_or(0.0) > 0.0),
                        _ => success.filter(|_| f.confident).map(|s| s < 1.0),
                    };
                    let Some(event) = event else { continue };
                    events.extend(feed_rate(&key, r, &mut self.last, ctx, event));
                }
                _ => {}
            }
        }
        events
    }

    /// Feeds an outcome that arrived after its session closed to the
    /// outcome-rate charts (failure, and calibration for a confident
    /// session); the other charts saw the session when it closed.
    pub fn on_late_outcome(&mut self, ctx: &Ctx, success: bool, confident: bool) -> Vec<DriftEvent> {
        let key = self.key.clone();
        let mut events = Vec::new();
        for r in &mut self.charts {
            let event = match (&r.spec.target, &r.chart) {
                (ChartTarget::Failure, Chart::Bernoulli(_)) => !success,
                (ChartTarget::Calibration, Chart::Bernoulli(_)) if confident => !success,
                _ => continue,
            };
            events.extend(feed_rate(&key, r, &mut self.last, ctx, event));
        }
        events
    }

    fn markov_counts(&self, f: &SessionFeatures) -> Vec<(u32, f64)> {
        let k = self.states.len() as u32;
        if k == 0 {
            return Vec::new();
        }
        let idx = |s: &str| -> u32 {
            self.states
                .get(s)
                .or_else(|| self.states.get(NEW_TOOL))
                .copied()
                .unwrap_or(0)
        };
        let mut cells: HashMap<u32, f64> = HashMap::new();
        let mut prev = idx(START);
        for s in f.states.iter().map(String::as_str).chain(std::iter::once(END)) {
            let cur = idx(s);
            *cells.entry(prev * k + cur).or_insert(0.0) += 1.0;
            prev = cur;
        }
        let mut v: Vec<(u32, f64)> = cells.into_iter().collect();
        v.sort_by_key(|x| x.0);
        v
    }

    fn tool_counts(&self, f: &SessionFeatures) -> Vec<(u32, f64)> {
        let mut cells: HashMap<u32, f64> = HashMap::new();
        for (tool, n) in &f.tool_counts {
            if let Some(i) = self.tools.get(tool).or_else(|| self.tools.get(NEW_TOOL)) {
                *cells.entry(*i).or_insert(0.0) += f64::from(*n);
            }
        }
        let mut v: Vec<(u32, f64)> = cells.into_iter().collect();
        v.sort_by_key(|x| x.0);
        v
    }

    /// What each chart has counted so far, by chart id (for reports).
    pub fn counts(&self) -> HashMap<&str, ChartCounts> {
        self.charts
            .iter()
            .map(|r| {
                let counts = ChartCounts {
                    alarms: r.alarms,
                    rejected: r.rejected,
                };
                (r.spec.id.as_str(), counts)
            })
            .collect()
    }
}

/// What one chart has counted so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChartCounts {
    /// Alarms raised.
    pub alarms: u64,
    /// Observations refused (non-finite scores).
    pub rejected: u64,
}

fn univariate_event(
    key: &SegmentKey,
    r: &Running,
    ctx: &Ctx,
    seq: Option<u64>,
    s: Signal,
    ecdf: &Ecdf,
    name: &str,
) -> DriftEvent {
    let recent: Vec<&Observation> = r.recent.iter().collect();
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
    DriftEvent {
        id: event_id(&[
            &key.to_string(),
            &r.spec.id,
            ctx.session_id,
            &seq.unwrap_or(0).to_string(),
            &r.alarms.to_string(),
        ]),
        detector: r.spec.id.clone(),
        kind: r.spec.family.clone(),
        segment: key.clone(),
        fallback_from: ctx.fallback_from.cloned(),
        session_id: ctx.session_id.to_string(),
        seq,
        ts: ctx.ts,
        statistic: s.statistic,
        limit: s.limit,
        p_value: (r.spec.family == "shewhart").then(|| 2.0 * dist::norm_cdf(-s.statistic.abs())),
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
            r.spec.family,
            s.rule.map_or(String::new(), |k| format!(" rule {k}")),
            s.statistic,
            s.limit
        ),
    }
}

/// One observation of a rate chart; an event when it signals.
fn feed_rate(
    key: &SegmentKey,
    r: &mut Running,
    last: &mut HashMap<String, (f64, f64)>,
    ctx: &Ctx,
    event: bool,
) -> Option<DriftEvent> {
    let Chart::Bernoulli(chart) = &mut r.chart else {
        return None;
    };
    ring_push(
        &mut r.recent,
        Observation {
            session_id: ctx.session_id.to_string(),
            seq: None,
            value: if event { 1.0 } else { 0.0 },
            z: None,
        },
    );
    let signal = chart.observe(event);
    last.insert(r.spec.id.clone(), (chart.statistic(), chart.design.limit()));
    let s = signal?;
    r.alarms += 1;
    let what = match r.spec.target {
        ChartTarget::Failure => "failure rate",
        ChartTarget::Escalation => "escalation rate",
        ChartTarget::ToolFailure => "share of sessions with a failed tool call",
        _ => "failure rate of confident answers (calibration)",
    };
    let p0 = chart.design.p0;
    Some(rate_event(key, r, ctx, None, s, p0, what))
}

fn rate_event(
    key: &SegmentKey,
    r: &Running,
    ctx: &Ctx,
    seq: Option<u64>,
    s: Signal,
    p0: f64,
    what: &str,
) -> DriftEvent {
    let recent: Vec<Observation> = r.recent.iter().cloned().collect();
    let observed = recent.iter().map(|o| o.value).sum::<f64>() / recent.len().max(1) as f64;
    let mut exemplars: Vec<String> = Vec::new();
    for o in recent.iter().rev().filter(|o| o.value > 0.0) {
        if !exemplars.contains(&o.session_id) && exemplars.len() < TOP {
            exemplars.push(o.session_id.clone());
        }
    }
    DriftEvent {
        id: event_id(&[
            &key.to_string(),
            &r.spec.id,
            ctx.session_id,
            &seq.unwrap_or(0).to_string(),
            &r.alarms.to_string(),
        ]),
        detector: r.spec.id.clone(),
        kind: r.spec.family.clone(),
        segment: key.clone(),
        fallback_from: ctx.fallback_from.cloned(),
        session_id: ctx.session_id.to_string(),
        seq,
        ts: ctx.ts,
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
        observations: recent,
        message: format!(
            "{what} rose: {:.1}% of the last {} vs {:.1}% in the baseline (Bernoulli CUSUM {:.2} > {:.2})",
            100.0 * observed,
            r.recent.len(),
            100.0 * p0,
            s.statistic,
            s.limit
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::counted;
    use crate::spc::ewma::{Ewma, EwmaDesign, EwmaLimits};

    #[test]
    fn refused_observations_are_counted_not_dropped_unseen() {
        let mut e = Ewma::new(EwmaDesign::new(0.2, 3.0, EwmaLimits::Asymptotic).unwrap());
        let mut rejected = 0;
        assert_eq!(counted(e.observe(0.5), &mut rejected), None);
        assert_eq!(rejected, 0);
        assert_eq!(counted(e.observe(f64::NAN), &mut rejected), None);
        assert_eq!(counted(e.observe(f64::INFINITY), &mut rejected), None);
        assert_eq!(rejected, 2);
        // A real shift still signals through it, and refusals left the chart as it was.
        let signal = (0..50).find_map(|_| counted(e.observe(4.0), &mut rejected));
        assert!(signal.is_some());
        assert_eq!(rejected, 2);
    }
}
