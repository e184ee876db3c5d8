//! Control charts designed by in-control average run length, for N(0,1)
//! scores (Shewhart with run rules, EWMA, CUSUM, Hotelling T²) and for rates
//! (Bernoulli CUSUM). Each chart has a design type (parameters + exact ARL +
//! `for_arl0` root-finding) and a running type (`observe` one value at a
//! time, O(1) state). Pure: no IO, no clock.

pub mod bernoulli;
pub mod cusum;
pub mod ewma;
pub mod hotelling;
pub mod shewhart;

use serde::{Deserialize, Serialize};

/// Which way a chart moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Above the centre line.
    Up,
    /// Below the centre line.
    Down,
}

/// A chart signal.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// The statistic that crossed.
    pub statistic: f64,
    /// The limit it crossed.
    pub limit: f64,
    /// Which side.
    pub direction: Direction,
    /// Shewhart run rule that fired (1–4).
    pub rule: Option<u8>,
}

/// Invalid chart parameters or observations.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ChartError {
    /// A parameter is out of its valid range.
    #[error("{name} must be in [{min}, {max}], got {value}")]
    OutOfRange {
        /// Parameter name.
        name: &'static str,
        /// Lower bound.
        min: f64,
        /// Upper bound.
        max: f64,
        /// The value given.
        value: f64,
    },
    /// An observation is NaN or infinite.
    #[error("observation must be finite, got {0}")]
    NonFinite(f64),
    /// No limit in the search range reaches the target ARL.
    #[error("no limit reaches an in-control ARL of {arl0}")]
    Unreachable {
        /// Target.
        arl0: f64,
    },
    /// A run-rule list names an unknown rule.
    #[error("unknown run rule `{0}` (use 1, 2, 3, 4)")]
    BadRules(String),
    /// Too few reference observations for the dimension.
    #[error("{m} reference observations are too few for dimension {p}")]
    TooFewReference {
        /// Reference observations.
        m: u32,
        /// Dimension.
        p: u32,
    },
    /// An observation has the wrong dimension.
    #[error("observation has {got} values, the chart expects {expected}")]
    Dimension {
        /// Expected length.
        expected: usize,
        /// Given length.
        got: usize,
    },
}

pub(crate) fn check_range(name: &'static str, value: f64, min: f64, max: f64) -> Result<(), ChartError> {
    if value.is_finite() && value >= min && value <= max {
        Ok(())
    } else {
        Err(ChartError::OutOfRange { name, min, max, value })
    }
}

pub(crate) fn check_finite(x: f64) -> Result<(), ChartError> {
    if x.is_finite() {
        Ok(())
    } else {
        Err(ChartError::NonFinite(x))
    }
}
