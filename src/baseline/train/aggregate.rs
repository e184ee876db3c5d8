//! Aggregation with polars: per-segment rates, costs, transitions and tool use.

use super::{SessionRow, TrainError};
use crate::baseline::types::*;
use crate::features::Feature;
use crate::features::sequence::{END, FnvState, START};
use crate::model::SegmentKey;
use polars::prelude::*;
use std::collections::{BTreeMap, HashMap};

/// Per-segment aggregates computed with polars.
#[derive(Clone, Debug, Default)]
pub(super) struct Aggregates {
    pub(super) rates: RateBaseline,
    pub(super) transitions: Vec<(String, String, f64)>,
    pub(super) tools: Vec<(String, f64)>,
}

pub(super) fn col_f64(df: &DataFrame, name: &str, row: usize) -> Result<Option<f64>, PolarsError> {
    let c = df.column(name)?.cast(&DataType::Float64)?;
    Ok(c.f64()?.get(row))
}

/// Interns names as dense u32 codes (polars groups integers much faster than strings).
#[derive(Default)]
pub(super) struct Codes {
    index: HashMap<String, u32, FnvState>,
    names: Vec<String>,
}

impl Codes {
    fn code(&mut self, name: &str) -> u32 {
        if let Some(c) = self.index.get(name) {
            return *c;
        }
        let c = self.names.len() as u32;
        self.index.insert(name.to_string(), c);
        self.names.push(name.to_string());
        c
    }
}

/// [`aggregate`] on `threads` shares of the segments at once (segments
/// given largest first; each goes to the share with the fewest sessions).
pub(super) fn aggregate_parts<'a>(
    rows: &[SessionRow],
    segments: impl Iterator<Item = (&'a SegmentKey, &'a Vec<usize>)>,
    threads: usize,
) -> Result<HashMap<String, Aggregates>, TrainError> {
    let mut parts: Vec<BTreeMap<SegmentKey, Vec<usize>>> = vec![BTreeMap::new(); threads.max(1)];
    let mut load = vec![0usize; parts.len()];
    for (key, idx) in segments {
        let j = (0..load.len()).min_by_key(|&j| load[j]).unwrap_or(0);
        load[j] += idx.len();
        parts[j].insert(key.clone(), idx.clone());
    }
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| scope.spawn(|| aggregate(rows, p)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("aggregation threads do not panic"))
            .collect()
    });
    let mut out = HashMap::new();
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}

/// One polars pass per table: sessions, transitions, tools, all grouped by
/// segment (segments, states and tools as integer codes).
pub(super) fn aggregate(
    rows: &[SessionRow],
    kept: &BTreeMap<SegmentKey, Vec<usize>>,
) -> Result<HashMap<String, Aggregates>, TrainError> {
    let segment_names: Vec<String> = kept.keys().map(|k| k.to_string()).collect();
    let mut names = Codes::default();
    let (start, end) = (names.code(START), names.code(END));
    let mut seg_col: Vec<u32> = Vec::new();
    let (mut outcome, mut failure, mut escalated, mut confident, mut confident_fail) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut tool_calls, mut tool_errors, mut cost, mut duration, mut messages) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut tool_cost = vec![];
    let (mut t_seg, mut t_from, mut t_to) = (Vec::<u32>::new(), Vec::<u32>::new(), Vec::<u32>::new());
    let (mut u_seg, mut u_tool, mut u_n) = (Vec::<u32>::new(), Vec::<u32>::new(), Vec::<f64>::new());
    for (si, idx) in kept.values().enumerate() {
        let si = si as u32;
        for &i in idx {
            let f = &rows[i].features;
            seg_col.push(si);
            let s = f.success();
            outcome.push(u32::from(s.is_some()));
            failure.push(u32::from(s == Some(0.0)));
            escalated.push(u32::from(f.escalated()));
            confident.push(u32::from(f.confident && s.is_some()));
            confident_fail.push(u32::from(f.confident && s == Some(0.0)));
            tool_calls.push(f.get(Feature::ToolCalls).unwrap_or(0.0));
            tool_errors.push(f.get(Feature::ToolErrors).unwrap_or(0.0));
            cost.push(f.get(Feature::CostUsd));
            duration.push(f.get(Feature::DurationMs));
            messages.push(f.get(Feature::Messages).unwrap_or(0.0));
            tool_cost.push(f.get(Feature::ToolCostUsd));
            let mut prev = start;
            for st in &f.states {
                let cur = names.code(st);
                t_seg.push(si);
                t_from.push(prev);
                t_to.push(cur);
                prev = cur;
            }
            t_seg.push(si);
            t_from.push(prev);
            t_to.push(end);
            for (tool, n) in &f.tool_counts {
                u_seg.push(si);
                u_tool.push(names.code(tool));
                u_n.push(f64::from(*n));
            }
        }
    }
    let n = seg_col.len();
    let sessions = DataFrame::new(
        n,
        vec![
            Column::new("segment".into(), seg_col),
            Column::new("outcome".into(), outcome),
            Column::new("failure".into(), failure),
            Column::new("escalated".into(), escalated),
            Column::new("confident".into(), confident),
            Column::new("confident_fail".into(), confident_fail),
            Column::new("tool_calls".into(), tool_calls),
            Column::new("tool_errors".into(), tool_errors),
            Column::new("cost".into(), cost),
            Column::new("duration".into(), duration),
            Column::new("messages".into(), messages),
            Column::new("tool_cost".into(), tool_cost),
        ],
    )?;
    let per_segment = sessions
        .lazy()
        .group_by([col("segment")])
        .agg([
            len().alias("sessions"),
            col("outcome").sum(),
            col("failure").sum(),
            col("escalated").sum(),
            col("confident").sum(),
            col("confident_fail").sum(),
            col("tool_calls").sum(),
            col("tool_errors").sum(),
            col("tool_calls").gt(lit(0.0)).sum().alias("tool_sessions"),
            col("tool_errors").gt(lit(0.0)).sum().alias("tool_error_sessions"),
            col("cost").mean().alias("cost_mean"),
            col("cost").sum().alias("cost_sum"),
            col("cost").count().alias("cost_n"),
            col("duration").mean().alias("duration_mean"),
            col("messages").gt_eq(lit(50.0)).mean().alias("over50"),
            col("messages").gt_eq(lit(100.0)).mean().alias("over100"),
            col("messages").gt_eq(lit(200.0)).mean().alias("over200"),
            col("tool_cost").mean().alias("tool_cost_mean"),
            col("tool_cost").count().alias("tool_cost_n"),
        ])
        .collect()?;
    let mut out: HashMap<String, Aggregates> = HashMap::new();
    let segs = per_segment.column("segment")?.cast(&DataType::UInt32)?;
    let segs = segs.u32()?;
    for row in 0..per_segment.height() {
        let name = segment_names[segs.get(row).unwrap_or(0) as usize].clone();
        let g = |c: &str| col_f64(&per_segment, c, row);
        let sessions = g("sessions")?.unwrap_or(0.0);
        let failures = g("failure")?.unwrap_or(0.0);
        let outcome = g("outcome")?.unwrap_or(0.0);
        let successes = outcome - failures;
        let cost_n = g("cost_n")?.unwrap_or(0.0);
        let rates = RateBaseline {
            outcome_sessions: outcome as u32,
            failures: failures as u32,
            escalations: g("escalated")?.unwrap_or(0.0) as u32,
            sessions: sessions as u32,
            tool_sessions: g("tool_sessions")?.unwrap_or(0.0) as u32,
            tool_error_sessions: g("tool_error_sessions")?.unwrap_or(0.0) as u32,
            tool_calls: g("tool_calls")?.unwrap_or(0.0) as u64,
            tool_errors: g("tool_errors")?.unwrap_or(0.0) as u64,
            confident_sessions: g("confident")?.unwrap_or(0.0) as u32,
            confident_failures: g("confident_fail")?.unwrap_or(0.0) as u32,
            length_shares: [
                g("over50")?.unwrap_or(0.0),
                g("over100")?.unwrap_or(0.0),
                g("over200")?.unwrap_or(0.0),
            ],
            cost_per_task: if cost_n > 0.0 { g("cost_mean")? } else { None },
            cost_per_success: g("cost_sum")?
                .and_then(|c| crate::model::cost_per_success(c, cost_n as u64, successes as u64)),
            tool_calls_per_session: g("tool_calls")?.unwrap_or(0.0) / sessions.max(1.0),
            mean_duration_ms: g("duration_mean")?,
            tool_cost_per_task: if g("tool_cost_n")?.unwrap_or(0.0) > 0.0 {
                g("tool_cost_mean")?
            } else {
                None
            },
            ..RateBaseline::default()
        };
        out.entry(name).or_default().rates = rates;
    }

    let transitions = DataFrame::new(
        t_seg.len(),
        vec![
            Column::new("segment".into(), t_seg),
            Column::new("from".into(), t_from),
            Column::new("to".into(), t_to),
        ],
    )?
    .lazy()
    .group_by([col("segment"), col("from"), col("to")])
    .agg([len().alias("n")])
    .collect()?;
    let code = |df: &DataFrame, c: &str| -> Result<Vec<u32>, PolarsError> {
        let col = df.column(c)?.cast(&DataType::UInt32)?;
        let ca = col.u32()?;
        Ok((0..ca.len()).map(|i| ca.get(i).unwrap_or(0)).collect())
    };
    let (s, f, t) = (
        code(&transitions, "segment")?,
        code(&transitions, "from")?,
        code(&transitions, "to")?,
    );
    let nn = transitions.column("n")?.cast(&DataType::Float64)?;
    let nn = nn.f64()?;
    let mut trans: Vec<(String, String, String, f64)> = (0..transitions.height())
        .map(|row| {
            (
                segment_names[s[row] as usize].clone(),
                names.names[f[row] as usize].clone(),
                names.names[t[row] as usize].clone(),
                nn.get(row).unwrap_or(0.0),
            )
        })
        .collect();
    trans.sort_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
    for (seg, from, to, n) in trans {
        out.entry(seg).or_default().transitions.push((from, to, n));
    }

    let tools = DataFrame::new(
        u_seg.len(),
        vec![
            Column::new("segment".into(), u_seg),
            Column::new("tool".into(), u_tool),
            Column::new("n".into(), u_n),
        ],
    )?
    .lazy()
    .group_by([col("segment"), col("tool")])
    .agg([col("n").sum()])
    .collect()?;
    let (s, t) = (code(&tools, "segment")?, code(&tools, "tool")?);
    let nn = tools.column("n")?.f64()?.clone();
    let mut used: Vec<(String, String, f64)> = (0..tools.height())
        .map(|row| {
            (
                segment_names[s[row] as usize].clone(),
                names.names[t[row] as usize].clone(),
                nn.get(row).unwrap_or(0.0),
            )
        })
        .collect();
    used.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    for (seg, tool, n) in used {
        out.entry(seg).or_default().tools.push((tool, n));
    }
    Ok(out)
}
