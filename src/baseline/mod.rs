//! Baselines: what normal looks like per segment ([`types`]), learned from a
//! reference run ([`train`]), saved as a versioned MessagePack file
//! ([`file`]), summarised and compared ([`report`]).

pub mod file;
pub mod report;
pub mod train;
pub mod types;

pub use file::{BaselineError, load, save};
pub use types::{Baseline, LongSessions, SegmentBaseline, TrainConfig};
