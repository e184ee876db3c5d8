//! Every detector of one segment, running: built from the segment's
//! baseline, fed steps (in-session detectors) and finished sessions
//! (session-level charts and windows). Bounded state: charts are O(1), rings
//! keep the last [`RING`](super::state::RING) observations, windows the last `window` sessions.

use super::event::{Ctx, DriftEvent, Reading};
use super::state::{Core, Family, SavedChart};
use super::{At, Detector, Ended, grounding, loops, outputs, profile, rates, sessions, windows};
use crate::baseline::types::{ChartSpec, ChartTarget, SegmentBaseline};
use crate::features::sequence::{END, NEW_TOOL, START};
use crate::features::{SessionFeatures, StepObs};
use crate::model::SegmentKey;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

pub use super::state::DetectError;

/// The family that runs a chart of this target: the one place a new
/// detector family is registered.
fn family(target: &ChartTarget) -> Family {
    match target {
        ChartTarget::Loops => loops::FAMILY,
        ChartTarget::Grounding => grounding::FAMILY,
        ChartTarget::Feature(_) | ChartTarget::CostPerSuccess => sessions::FAMILY,
        ChartTarget::OutputChars | ChartTarget::OutputLexicon(_) => outputs::FAMILY,
        ChartTarget::Profile => profile::FAMILY,
        ChartTarget::Markov | ChartTarget::ToolPreference => windows::FAMILY,
        ChartTarget::Failure | ChartTarget::Escalation | ChartTarget::ToolFailure | ChartTarget::Calibration => {
            rates::FAMILY
        }
    }
}

/// A running detector of the segment's baseline spec, at its initial state.
pub fn build(spec: &ChartSpec, seg: &SegmentBaseline) -> Result<Box<dyn Detector>, DetectError> {
    let f = family(&spec.target);
    (f.open)(spec, (f.fresh)(spec, seg)?)
}

/// Per-session state the in-session detectors keep (owned by the engine).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InSession {
    /// Loop statistics that already fired in this session (bit per statistic).
    pub loops_fired: u8,
    /// Contradictions raised in this session.
    #[serde(default)]
    pub grounding_fired: u8,
}

/// A running detector with its bookkeeping, saved in snapshots as its [`SavedChart`].
#[derive(Debug, Deserialize)]
#[serde(try_from = "SavedChart")]
struct Running {
    core: Core,
    detector: Box<dyn Detector>,
}

impl Running {
    /// Its snapshot form.
    fn saved(&self) -> SavedChart {
        SavedChart::of(&self.core, self.detector.state())
    }
}

impl Serialize for Running {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.saved().serialize(s)
    }
}

impl Clone for Running {
    fn clone(&self) -> Running {
        Running {
            core: self.core.clone(),
            detector: self.detector.boxed(),
        }
    }
}

impl PartialEq for Running {
    fn eq(&self, other: &Running) -> bool {
        self.core == other.core && self.detector.state() == other.detector.state()
    }
}

impl TryFrom<SavedChart> for Running {
    type Error = DetectError;

    fn try_from(s: SavedChart) -> Result<Running, DetectError> {
        let core = s.core();
        let detector = (family(&s.spec.target).open)(&s.spec, s.chart)?;
        Ok(Running { core, detector })
    }
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
    /// Whether session-level readings are kept (the service's console wants
    /// them; replays and evaluations do not pay for them).
    #[serde(skip)]
    record: bool,
    /// Readings since the last [`SegmentDetectors::take_points`] (a view, not state).
    #[serde(skip)]
    points: Vec<Reading>,
}

impl SegmentDetectors {
    /// Builds running detectors from a segment baseline; a chart whose
    /// design does not fit its target is refused here, not skipped later.
    pub fn new(seg: &SegmentBaseline) -> Result<SegmentDetectors, DetectError> {
        let charts = seg
            .charts
            .iter()
            .map(|spec| {
                build(spec, seg).map(|detector| Running {
                    core: Core::new(spec),
                    detector,
                })
            })
            .collect::<Result<_, _>>()?;
        let index = |names: &[String]| names.iter().enumerate().map(|(i, s)| (s.clone(), i as u32)).collect();
        Ok(SegmentDetectors {
            key: seg.key.clone(),
            charts,
            states: index(&seg.markov.states),
            tools: index(&seg.tools.tools),
            sessions_seen: 0,
            last: HashMap::new(),
            record: false,
            points: Vec::new(),
        })
    }

    /// Starts (or stops) keeping session-level readings as chart points.
    pub fn record_points(&mut self, on: bool) {
        self.record = on;
        if !on {
            self.points.clear();
        }
    }

    /// The readings recorded since the last call.
    pub fn take_points(&mut self) -> Vec<Reading> {
        std::mem::take(&mut self.points)
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
        let at = At {
            seg,
            key: &self.key,
            ctx,
        };
        each(&mut self.charts, &mut self.last, None, |d, core, out| {
            d.on_step(core, &at, seq, obs, state, out)
        })
    }

    /// Feeds a finished session.
    pub fn on_session_end(&mut self, seg: &SegmentBaseline, ctx: &Ctx, f: &SessionFeatures) -> Vec<DriftEvent> {
        self.sessions_seen += 1;
        let (markov, tools) = (self.markov_counts(f), self.tool_counts(f));
        let ended = Ended {
            features: f,
            success: f.success(),
            markov: &markov,
            tools: &tools,
        };
        let at = At {
            seg,
            key: &self.key,
            ctx,
        };
        let points = self.record.then_some(&mut self.points);
        each(&mut self.charts, &mut self.last, points, |d, core, out| {
            d.on_session(core, &at, &ended, out)
        })
    }

    /// Feeds an outcome that arrived after its session closed to the
    /// outcome-rate charts (failure, and calibration for a confident
    /// session); the other charts saw the session when it closed.
    pub fn on_late_outcome(
        &mut self,
        seg: &SegmentBaseline,
        ctx: &Ctx,
        success: bool,
        confident: bool,
    ) -> Vec<DriftEvent> {
        let at = At {
            seg,
            key: &self.key,
            ctx,
        };
        let points = self.record.then_some(&mut self.points);
        each(&mut self.charts, &mut self.last, points, |d, core, out| {
            d.on_late_outcome(core, &at, success, confident, out)
        })
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
            .map(|Running { core, .. }| {
                let counts = ChartCounts {
                    alarms: core.alarms,
                    rejected: core.rejected,
                };
                (core.spec.id.as_str(), counts)
            })
            .collect()
    }
}

/// Runs `feed` on every chart, then keeps each one's latest reading for
/// reports and, when asked, in `points` (by chart position).
fn each(
    charts: &mut [Running],
    last: &mut HashMap<String, (f64, f64)>,
    mut points: Option<&mut Vec<Reading>>,
    mut feed: impl FnMut(&mut dyn Detector, &mut Core, &mut Vec<DriftEvent>),
) -> Vec<DriftEvent> {
    let mut events = Vec::new();
    for (i, Running { core, detector }) in charts.iter_mut().enumerate() {
        let before = events.len();
        feed(detector.as_mut(), core, &mut events);
        if let Some(reading) = core.reading.take() {
            if let Some(points) = points.as_mut() {
                // A chart that signalled has restarted: its point is the value that crossed.
                let new = &events[before..];
                let (statistic, limit) = new.first().map_or(reading, |e| (e.statistic, e.limit));
                points.push(Reading {
                    chart: i as u16,
                    statistic,
                    limit,
                    events: new.iter().map(|e| e.id.clone()).collect(),
                });
            }
            if let Some(v) = last.get_mut(core.spec.id.as_str()) {
                *v = reading;
            } else {
                last.insert(core.spec.id.clone(), reading);
            }
        }
    }
    events
}

/// What one chart has counted so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChartCounts {
    /// Alarms raised.
    pub alarms: u64,
    /// Observations refused (non-finite scores).
    pub rejected: u64,
}

#[cfg(test)]
mod tests {
    use super::{DetectError, SegmentDetectors};
    use crate::baseline::types::{ChartDesign, ChartTarget};

    fn segment() -> crate::baseline::types::SegmentBaseline {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/baselines/taubench-gpt-4o-airline.adb");
        let b = crate::baseline::load(std::path::Path::new(path)).unwrap();
        b.segments.into_iter().find(|s| !s.charts.is_empty()).unwrap()
    }

    #[test]
    fn a_chart_whose_design_does_not_fit_its_target_is_refused_at_load() {
        let mut seg = segment();
        assert!(SegmentDetectors::new(&seg).is_ok());
        let ewma = seg
            .charts
            .iter()
            .find(|c| matches!(c.design, ChartDesign::Ewma { .. }))
            .unwrap()
            .design
            .clone();
        let loops = seg.charts.iter_mut().find(|c| c.target == ChartTarget::Loops).unwrap();
        loops.design = ewma;
        let id = loops.id.clone();
        match SegmentDetectors::new(&seg) {
            Err(e @ DetectError::Mismatch { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&id) && msg.contains("ewma") && msg.contains("Loops"),
                    "{msg}"
                );
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }
    }

    #[test]
    fn a_saved_state_of_another_kind_is_refused_when_the_snapshot_loads() {
        let seg = segment();
        let det = SegmentDetectors::new(&seg).unwrap();
        let bytes = rmp_serde::to_vec_named(&det).unwrap();
        let back: SegmentDetectors = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, det);
        // Swap the saved states of two charts of different kinds.
        let mut saved: Vec<super::SavedChart> = det.charts.iter().map(super::Running::saved).collect();
        let i = saved.iter().position(|c| c.spec.target == ChartTarget::Loops).unwrap();
        let j = saved.iter().position(|c| c.spec.target == ChartTarget::Markov).unwrap();
        let (a, b) = (saved[i].chart.clone(), saved[j].chart.clone());
        saved[i].chart = b;
        saved[j].chart = a;
        let bytes = rmp_serde::to_vec_named(&saved).unwrap();
        let err = rmp_serde::from_slice::<Vec<super::Running>>(&bytes)
            .unwrap_err()
            .to_string();
        // The first chart read names itself and the state it was given.
        assert!(
            err.contains("chart markov: its loops state cannot run a chart of Markov")
                || err.contains("chart loop: its window state cannot run a chart of Loops"),
            "{err}"
        );
    }
}
