//! Segments: the unit every baseline and detector is kept per, and how a
//! session's first step names its segment (so training and live scoring
//! agree by construction).

use super::step::Step;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The unit every baseline and detector is kept per: (agent, task type).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SegmentKey {
    /// Agent name.
    pub agent: String,
    /// Task type, or `*` for an agent's pooled segment.
    pub task_type: String,
}

/// Task type of the pooled per-agent segment that rare task types fall back to.
pub const POOLED_TASK_TYPE: &str = "*";

impl SegmentKey {
    /// Builds a key.
    pub fn new(agent: impl Into<String>, task_type: impl Into<String>) -> SegmentKey {
        SegmentKey {
            agent: agent.into(),
            task_type: task_type.into(),
        }
    }

    /// The agent's pooled fallback segment.
    pub fn pooled(&self) -> SegmentKey {
        SegmentKey::new(self.agent.clone(), POOLED_TASK_TYPE)
    }

    /// True for a pooled `*` segment.
    pub fn is_pooled(&self) -> bool {
        self.task_type == POOLED_TASK_TYPE
    }
}

impl fmt::Display for SegmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.agent, self.task_type)
    }
}

/// Fields that may make up the segment key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SegmentField {
    /// The agent (always the first part of the key).
    Agent,
    /// The task type.
    #[value(alias = "task_type")]
    TaskType,
    /// The finer task category.
    Intent,
}

/// The task part of a session's segment key under `segment_by`, from its
/// first step (so a live session knows its segment from its first step).
pub fn task_part(first: &Step, by: &[SegmentField]) -> String {
    let parts: Vec<String> = by
        .iter()
        .filter(|f| **f != SegmentField::Agent)
        .map(|f| match f {
            SegmentField::TaskType => first.task_type_or_default().to_string(),
            SegmentField::Intent => first.intent.clone().unwrap_or_else(|| "none".into()),
            SegmentField::Agent => unreachable!("filtered"),
        })
        .collect();
    if parts.is_empty() {
        POOLED_TASK_TYPE.to_string()
    } else {
        parts.join("|")
    }
}

/// The segment a session belongs to under `segment_by` (its own, before fallback).
pub fn segment_of(first: &Step, by: &[SegmentField]) -> SegmentKey {
    SegmentKey::new(first.agent.clone(), task_part(first, by))
}

/// The segment a session is scored against: its own when `lookup` has it,
/// else its agent's pooled `*` one; with the own key when it fell back (or
/// found neither). Training's segments and live scoring resolve alike.
pub fn resolve<T>(
    first: &Step,
    by: &[SegmentField],
    lookup: impl Fn(&SegmentKey) -> Option<T>,
) -> (Option<T>, Option<SegmentKey>) {
    let own = segment_of(first, by);
    if let Some(t) = lookup(&own) {
        return (Some(t), None);
    }
    (lookup(&own.pooled()), Some(own))
}
