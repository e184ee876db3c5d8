//! The data model every stage shares: steps, sessions, segments, prices.
//!
//! Pure: no IO beyond reading a price file on request, no async.

pub mod glob;
pub mod price;
pub mod segment;
pub mod session;
pub mod step;
pub mod task;

pub use price::{ModelPrice, PriceError, PriceTable, cost_per_success};
pub use segment::{POOLED_TASK_TYPE, SegmentField, SegmentKey, resolve, segment_of, task_part};
pub use session::{Grouped, Session, group_sessions};
pub use step::{
    DEFAULT_TASK_TYPE, ErrorClass, MemoryOp, Outcome, OutcomeSource, Requestor, STEP_SCHEMA_VERSION, Status, Step,
    StepInvalid, StepKind,
};

#[cfg(test)]
mod schema_test;
