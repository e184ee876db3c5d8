//! `agentdrift inspect`: what is in these files, per segment.

use crate::features::{Feature, Rules, session_features};
use crate::model::{PriceTable, SegmentKey, Session, StepKind, group_sessions};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Summary of one (agent, task_type) segment.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SegmentSummary {
    /// Agent.
    pub agent: String,
    /// Task type.
    pub task_type: String,
    /// Sessions.
    pub sessions: usize,
    /// Steps of every kind (end steps included).
    pub steps: usize,
    /// Model calls.
    pub llm_calls: usize,
    /// Tool steps (agent and user-run).
    pub tool_calls: usize,
    /// Tool steps the agent requested.
    pub agent_tool_calls: usize,
    /// Different tool names over all tool steps.
    pub distinct_tools: usize,
    /// Sessions with a known outcome.
    pub sessions_with_outcome: usize,
    /// Share of sessions with a known outcome that succeeded.
    pub success_rate: Option<f64>,
    /// Median over sessions of prompt tokens (sessions reporting tokens).
    pub median_input_tokens: Option<f64>,
    /// Median over sessions of completion tokens.
    pub median_output_tokens: Option<f64>,
    /// Median over sessions of cost, USD.
    pub median_cost_usd: Option<f64>,
    /// Failed steps per error class.
    pub error_classes: BTreeMap<String, u32>,
}

/// Median of the values present (mean of the two middle ones for even counts).
pub fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    Some(if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    })
}

/// Summarises sessions per segment, segments sorted by key.
pub fn summarise(sessions: &[Session], prices: &PriceTable) -> Vec<SegmentSummary> {
    let rules = Rules::builtin(prices);
    let mut groups: BTreeMap<SegmentKey, Vec<&Session>> = BTreeMap::new();
    for s in sessions {
        groups.entry(s.segment()).or_default().push(s);
    }
    groups
        .into_iter()
        .map(|(key, ss)| {
            let feats: Vec<_> = ss.iter().map(|s| session_features(s, &rules)).collect();
            let steps = ss.iter().flat_map(|s| &s.steps);
            let tools: BTreeSet<&str> = steps
                .clone()
                .filter(|s| s.kind == StepKind::Tool)
                .filter_map(|s| s.tool.as_deref())
                .collect();
            let outcomes: Vec<f64> = feats.iter().filter_map(|f| f.success()).collect();
            let col = |f: Feature| median(feats.iter().filter_map(|x| x.get(f)).collect());
            let mut error_classes = BTreeMap::new();
            for f in &feats {
                for (k, v) in &f.error_classes {
                    *error_classes.entry(k.clone()).or_insert(0) += v;
                }
            }
            SegmentSummary {
                agent: key.agent,
                task_type: key.task_type,
                sessions: ss.len(),
                steps: steps.clone().count(),
                llm_calls: steps.clone().filter(|s| s.kind == StepKind::Llm).count(),
                tool_calls: steps.clone().filter(|s| s.kind == StepKind::Tool).count(),
                agent_tool_calls: steps.clone().filter(|s| s.is_agent_tool()).count(),
                distinct_tools: tools.len(),
                sessions_with_outcome: outcomes.len(),
                success_rate: (!outcomes.is_empty()).then(|| outcomes.iter().sum::<f64>() / outcomes.len() as f64),
                median_input_tokens: col(Feature::InputTokens),
                median_output_tokens: col(Feature::OutputTokens),
                median_cost_usd: col(Feature::CostUsd),
                error_classes,
            }
        })
        .collect()
}

/// The `--json` document.
#[derive(Debug, Serialize)]
pub struct InspectReport {
    /// Per-file summary.
    pub files: Vec<crate::ingest::InputFile>,
    /// Per-segment summary.
    pub segments: Vec<SegmentSummary>,
    /// Bad records (file, location, field, message).
    pub errors: Vec<serde_json::Value>,
    /// Valid records that are not agent steps.
    pub ignored: usize,
    /// Steps dropped as duplicate (session_id, seq).
    pub duplicates: usize,
    /// Steps whose cost was computed from the price table.
    pub costs_computed: usize,
}

/// Builds the report from loaded input.
pub fn report(loaded: crate::ingest::files::Loaded, prices: &PriceTable) -> InspectReport {
    let grouped = group_sessions(loaded.steps);
    InspectReport {
        segments: summarise(&grouped.sessions, prices),
        files: loaded.files,
        errors: loaded
            .errors
            .iter()
            .map(|(file, e)| serde_json::json!({"file": file, "location": e.location.to_string(), "field": e.field, "message": e.message}))
            .collect(),
        ignored: loaded.ignored,
        duplicates: grouped.duplicates,
        costs_computed: loaded.costs_computed,
    }
}

fn fmt_opt(x: Option<f64>, digits: usize) -> String {
    x.map_or("-".to_string(), |v| format!("{v:.digits$}"))
}

/// Human-readable table.
pub fn render(r: &InspectReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let w = r
        .segments
        .iter()
        .map(|g| g.agent.len() + g.task_type.len() + 3)
        .max()
        .unwrap_or(0)
        .max(27);
    let _ = writeln!(
        s,
        "{:<w$} {:>8} {:>7} {:>6} {:>6} {:>5} {:>7} {:>9} {:>9} {:>9}  errors",
        "segment (agent / task_type)",
        "sessions",
        "steps",
        "llm",
        "tools",
        "dist",
        "success",
        "med_in",
        "med_out",
        "med_cost"
    );
    for g in &r.segments {
        let errors = if g.error_classes.is_empty() {
            "-".to_string()
        } else {
            g.error_classes
                .iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let _ = writeln!(
            s,
            "{:<w$} {:>8} {:>7} {:>6} {:>6} {:>5} {:>7} {:>9} {:>9} {:>9}  {}",
            format!("{} / {}", g.agent, g.task_type),
            g.sessions,
            g.steps,
            g.llm_calls,
            g.tool_calls,
            g.distinct_tools,
            fmt_opt(g.success_rate, 3),
            fmt_opt(g.median_input_tokens, 0),
            fmt_opt(g.median_output_tokens, 0),
            fmt_opt(g.median_cost_usd, 4),
            errors
        );
    }
    let _ = writeln!(
        s,
        "\n{} files, {} sessions, {} steps; {} bad records, {} ignored spans, {} duplicate steps, {} costs computed",
        r.files.len(),
        r.segments.iter().map(|g| g.sessions).sum::<usize>(),
        r.segments.iter().map(|g| g.steps).sum::<usize>(),
        r.errors.len(),
        r.ignored,
        r.duplicates,
        r.costs_computed
    );
    s
}
