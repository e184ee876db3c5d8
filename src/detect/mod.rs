//! The detector library: the alarm budget and chart plan ([`plan`]), drift
//! events ([`event`]) and every detector of a segment running on steps and
//! finished sessions ([`segment`]). Pure: no IO, no async, no clock (time
//! comes in with the data).

pub mod event;

pub mod segment;

pub use event::{DriftEvent, Moved, Observation};
pub use segment::{Ctx, InSession, SegmentDetectors};
