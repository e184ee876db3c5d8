//! The detector library: drift events ([`event`]), one file per detector
//! family behind the [`Detector`] trait, and every detector of a segment
//! running on steps and finished sessions ([`segment`]). Pure: no IO, no
//! async, no clock (time comes in with the data).
//!
//! A new detector family is one new file implementing [`Detector`] plus its
//! line in [`segment::build`].

pub mod event;
mod grounding;
mod loops;
mod outputs;
mod profile;
mod rates;
pub mod segment;
mod sessions;
pub mod state;
mod windows;

pub use event::{Ctx, DriftEvent, Moved, Observation};
pub use segment::{ChartCounts, DetectError, InSession, SegmentDetectors};

use crate::baseline::types::SegmentBaseline;
use crate::features::{SessionFeatures, StepObs};
use crate::model::SegmentKey;
use state::{ChartState, Core};

/// Where a detector runs: its segment's baseline and key, and the session at hand.
pub struct At<'a> {
    /// The segment's baseline (distributions the scores are taken against).
    pub seg: &'a SegmentBaseline,
    /// The segment's key (events name it).
    pub key: &'a SegmentKey,
    /// The session the observation comes from.
    pub ctx: &'a Ctx<'a>,
}

/// A finished session as the session-level detectors see it.
pub struct Ended<'a> {
    /// Its features.
    pub features: &'a SessionFeatures,
    /// 1 for success, 0 for failure, where known.
    pub success: Option<f64>,
    /// Sparse tool-transition counts in the segment's Markov state space.
    pub markov: &'a [(u32, f64)],
    /// Sparse tool-use counts in the segment's tool space.
    pub tools: &'a [(u32, f64)],
}

/// What every detector family does, so the segment runs them all alike; the
/// bookkeeping every chart shares ([`Core`]) is kept beside it and lent to each call.
pub trait Detector: Send + Sync + std::fmt::Debug {
    /// One step of a session, in `seq` order (in-session detectors).
    fn on_step(
        &mut self,
        _core: &mut Core,
        _at: &At,
        _seq: u64,
        _obs: &StepObs,
        _state: &mut InSession,
        _out: &mut Vec<DriftEvent>,
    ) {
    }

    /// A finished session (session-level charts and windows).
    fn on_session(&mut self, _core: &mut Core, _at: &At, _ended: &Ended, _out: &mut Vec<DriftEvent>) {}

    /// An outcome that arrived after its session closed (outcome-rate charts).
    fn on_late_outcome(
        &mut self,
        _core: &mut Core,
        _at: &At,
        _success: bool,
        _confident: bool,
        _out: &mut Vec<DriftEvent>,
    ) {
    }

    /// Its statistic's state, for snapshots.
    fn state(&self) -> ChartState;

    /// A copy of it (snapshots and tests clone the scorer).
    fn boxed(&self) -> Box<dyn Detector>;
}
