//! What every running chart keeps besides its statistic (its spec, the
//! recent observations shown as evidence, its alarm and refusal counts), and
//! the form a chart's state takes in a scorer snapshot (format 2).

use super::Detector;
use super::event::Observation;
use crate::baseline::types::{ChartDesign, ChartSpec, LoopThreshold, SegmentBaseline};
use crate::spc::bernoulli::BernoulliCusum;
use crate::spc::cusum::Cusum;
use crate::spc::ewma::Ewma;
use crate::spc::hotelling::HotellingT2;
use crate::spc::shewhart::Shewhart;
use crate::spc::{ChartError, Signal};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Observations kept per chart as evidence.
pub const RING: usize = 20;

/// Moved items reported per event.
pub const TOP: usize = 5;

/// The bookkeeping every chart shares, whatever its family.
#[derive(Clone, Debug, PartialEq)]
pub struct Core {
    /// What the chart watches and how it was designed.
    pub spec: ChartSpec,
    /// The last [`RING`] observations, oldest first.
    pub recent: VecDeque<Observation>,
    /// Alarms raised so far.
    pub alarms: u64,
    /// Observations the chart refused (a non-finite score): counted, so a
    /// chart that silently stops charting shows in the report and metrics.
    pub rejected: u64,
    /// The statistic and limit after the latest observation, until the
    /// segment collects them for its reports (not saved: the segment keeps them).
    pub reading: Option<(f64, f64)>,
}

impl Core {
    /// A chart's bookkeeping before its first observation.
    pub fn new(spec: &ChartSpec) -> Core {
        Core {
            spec: spec.clone(),
            recent: VecDeque::new(),
            alarms: 0,
            rejected: 0,
            reading: None,
        }
    }

    /// Keeps an observation as evidence, dropping the oldest beyond [`RING`].
    pub fn remember(&mut self, o: Observation) {
        if self.recent.len() == RING {
            self.recent.pop_front();
        }
        self.recent.push_back(o);
    }

    /// A chart's signal; a refused observation is counted instead of dropped unseen.
    pub fn counted(&mut self, result: Result<Option<Signal>, ChartError>) -> Option<Signal> {
        result.unwrap_or_else(|_| {
            self.rejected += 1;
            None
        })
    }
}

/// A chart that cannot run: its design or saved state is not of its family's kind.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The design or saved state belongs to another kind of chart.
    #[error("chart {id}: its {got} state cannot run a chart of {target:?}")]
    Mismatch {
        /// Chart id.
        id: String,
        /// What it watches.
        target: crate::baseline::types::ChartTarget,
        /// The kind of state it came with.
        got: &'static str,
    },
    /// The segment baseline lacks what the chart needs.
    #[error("chart {id}: the segment baseline has no {what}")]
    Missing {
        /// Chart id.
        id: String,
        /// What is missing.
        what: &'static str,
    },
}

impl DetectError {
    /// A design or state that is not of the chart's kind.
    pub fn mismatch(spec: &ChartSpec, got: &'static str) -> DetectError {
        DetectError::Mismatch {
            id: spec.id.clone(),
            target: spec.target.clone(),
            got,
        }
    }
}

/// A running detector of some family.
pub type DynDetector = Box<dyn Detector>;

/// A detector family: how a chart of it starts from its design, and how it
/// runs from a state (fresh or from a snapshot).
pub struct Family {
    /// The initial state of a chart of this design.
    pub fresh: fn(&ChartSpec, &SegmentBaseline) -> Result<ChartState, DetectError>,
    /// The running detector of a chart, from its state.
    pub open: fn(&ChartSpec, ChartState) -> Result<DynDetector, DetectError>,
}

/// The kind of a design, for messages.
pub fn design_kind(d: &ChartDesign) -> &'static str {
    match d {
        ChartDesign::Ewma { .. } => "ewma",
        ChartDesign::Cusum { .. } => "cusum",
        ChartDesign::Shewhart { .. } => "shewhart",
        ChartDesign::T2 { .. } => "t2",
        ChartDesign::Bernoulli { .. } => "bernoulli",
        ChartDesign::WindowTest { .. } => "window",
        ChartDesign::Loops { .. } => "loops",
        ChartDesign::Grounding { .. } => "grounding",
    }
}

/// A running chart as a scorer snapshot holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedChart {
    /// What it watches.
    pub spec: ChartSpec,
    /// Its statistic's state.
    pub chart: ChartState,
    /// Recent observations.
    pub recent: VecDeque<Observation>,
    /// Alarms raised.
    pub alarms: u64,
    /// Observations refused (absent from snapshots written before it was counted).
    #[serde(default)]
    pub rejected: u64,
}

impl SavedChart {
    /// The saved form of a chart's bookkeeping and statistic.
    pub fn of(core: &Core, chart: ChartState) -> SavedChart {
        SavedChart {
            spec: core.spec.clone(),
            chart,
            recent: core.recent.clone(),
            alarms: core.alarms,
            rejected: core.rejected,
        }
    }

    /// Its bookkeeping, to resume from.
    pub fn core(&self) -> Core {
        Core {
            spec: self.spec.clone(),
            recent: self.recent.clone(),
            alarms: self.alarms,
            rejected: self.rejected,
            reading: None,
        }
    }
}

/// The state of a chart's statistic, one variant per kind of state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ChartState {
    /// EWMA, with the scale its scores are divided by.
    Ewma(Ewma, f64),
    /// Two-sided CUSUM.
    Cusum(Cusum),
    /// Shewhart individuals.
    Shewhart(Shewhart),
    /// Hotelling T².
    T2(HotellingT2),
    /// Bernoulli CUSUM.
    Bernoulli(BernoulliCusum),
    /// Sliding window of count vectors.
    Window(WindowState),
    /// Loop thresholds (stateless across sessions).
    Loops(Vec<LoopThreshold>),
    /// Grounding: the reference share of sessions with a contradiction (stateless across sessions).
    Grounding(f64),
}

impl ChartState {
    /// The kind of state, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            ChartState::Ewma(..) => "ewma",
            ChartState::Cusum(_) => "cusum",
            ChartState::Shewhart(_) => "shewhart",
            ChartState::T2(_) => "t2",
            ChartState::Bernoulli(_) => "bernoulli",
            ChartState::Window(_) => "window",
            ChartState::Loops(_) => "loops",
            ChartState::Grounding(_) => "grounding",
        }
    }
}

/// Sliding window of per-session count vectors for a homogeneity test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowState {
    /// Sessions in the window with their sparse counts (cell, count).
    pub sessions: VecDeque<(String, Vec<(u32, f64)>)>,
    /// Counts summed over the window, per cell.
    pub sum: Vec<f64>,
    /// Sessions since the last test.
    pub since_test: u32,
    /// Level per test.
    pub alpha: f64,
    /// Sessions in a full window.
    pub size: u32,
    /// Sessions between tests.
    pub hop: u32,
}

#[cfg(test)]
mod tests {
    use super::Core;
    use crate::baseline::types::{ChartDesign, ChartSpec, ChartTarget};
    use crate::spc::ewma::{Ewma, EwmaDesign, EwmaLimits};

    #[test]
    fn refused_observations_are_counted_not_dropped_unseen() {
        let design = EwmaDesign::new(0.2, 3.0, EwmaLimits::Asymptotic).unwrap();
        let spec = ChartSpec {
            id: "ewma:steps".into(),
            family: "ewma".into(),
            target: ChartTarget::OutputChars,
            design: ChartDesign::Ewma { design, scale: 1.0 },
            rate: 0.001,
            arl0: 1000.0,
            unit: "outputs".into(),
        };
        let mut core = Core::new(&spec);
        let mut e = Ewma::new(design);
        assert_eq!(core.counted(e.observe(0.5)), None);
        assert_eq!(core.rejected, 0);
        assert_eq!(core.counted(e.observe(f64::NAN)), None);
        assert_eq!(core.counted(e.observe(f64::INFINITY)), None);
        assert_eq!(core.rejected, 2);
        // A real shift still signals through it, and refusals left the chart as it was.
        let signal = (0..50).find_map(|_| core.counted(e.observe(4.0)));
        assert!(signal.is_some());
        assert_eq!(core.rejected, 2);
    }
}
