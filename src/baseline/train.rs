//! Training: recorded sessions → a baseline per segment.
//!
//! 1. Features per session (the streaming accumulator, on every core).
//! 2. Segments: (agent, task part of `segment_by`); every agent also gets a
//!    pooled `*` segment; segments under `min_sessions` are not built and
//!    their sessions are scored against the pooled one (a warning says so).
//! 3. Phase I: a reference session is out of control when a charted
//!    quantity's robust z-score on the log scale, |ln(1+x) − median| /
//!    (1.4826·MAD), exceeds `phase1_robust_z` (default 6); at most
//!    `phase1_max_share` (10%) of a segment is excluded, most extreme first.
//!    Excluded sessions are reported and left out of every distribution,
//!    chain, rate and limit of that segment.
//! 4. Aggregation with polars: one row per (segment, session) for rates and
//!    costs, one row per (segment, transition) and (segment, tool) for the
//!    Markov chain and tool usage, grouped by segment.
//! 5. Distributions (ECDFs), loop tail models, over-dispersion of the window
//!    tests by resampling, the T² profile (linfa PCA, Ledoit–Wolf shrinkage
//!    when m < 10p), then the chart plan within the alarm budget.

use super::types::*;
use crate::detect::plan::plan;
use crate::detect::segment::session_uniform;
use crate::features::sequence::{END, FnvState, NEW_TOOL, REASON, START};
use crate::features::text::N_LEXICONS;
use crate::features::{Feature, Lexicons, OutputObs, SessionAccumulator, SessionFeatures};
use crate::ingest::InputFile;
use crate::model::{POOLED_TASK_TYPE, PriceTable, SegmentKey, Session, Step, group_sessions};
use crate::stats::Ecdf;
use linfa::traits::Fit;
use ndarray::Array2;
use polars::prelude::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Baseline file schema version written by this build.
pub const SCHEMA_VERSION: u32 = 1;

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// No sessions in the input.
    #[error("no sessions in the input: nothing to learn from")]
    Empty,
    /// Aggregation failed.
    #[error("aggregation failed: {0}")]
    Polars(#[from] PolarsError),
    /// A chart could not be designed.
    #[error("segment {segment}: {source}")]
    Design {
        /// Segment.
        segment: String,
        /// Cause.
        source: crate::spc::ChartError,
    },
    /// Invalid configuration.
    #[error("invalid training configuration: {0}")]
    Config(String),
}

/// Features charted and screened in phase I.
pub const PHASE1_FEATURES: &[Feature] = &[
    Feature::Steps,
    Feature::ToolCalls,
    Feature::InputTokens,
    Feature::OutputTokens,
    Feature::CostUsd,
    Feature::DurationMs,
    Feature::RepeatCalls,
];

/// Session features of the multivariate (T²) profile, each as its PIT z-score.
pub const PROFILE_FEATURES: &[Feature] = &[
    Feature::Steps,
    Feature::ToolCallRatio,
    Feature::ReasoningDepth,
    Feature::DistinctTools,
    Feature::OutputChars,
    Feature::TokensPerStep,
    Feature::DurationMs,
    Feature::ToolSuccessRatio,
];

/// Per-output values kept per segment at most (evenly spaced order statistics beyond).
pub const MAX_OUTPUT_SAMPLE: usize = 20_000;

/// Dispersion resamples.
const RESAMPLES: usize = 100;

/// One session, measured.
pub struct SessionRow {
    /// Session id.
    pub id: String,
    /// Agent.
    pub agent: String,
    /// Task part of the segment key.
    pub task: String,
    /// Task type (for success by task type).
    pub task_type: String,
    /// Intent, when given.
    pub intent: Option<String>,
    /// Features.
    pub features: SessionFeatures,
    /// Model outputs in order.
    pub outputs: Vec<OutputObs>,
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

/// Measures one session.
pub fn measure(session: &Session, prices: &PriceTable, lex: &Lexicons, by: &[SegmentField]) -> SessionRow {
    let mut acc = SessionAccumulator::default();
    let mut outputs = Vec::new();
    for s in &session.steps {
        if let Some(o) = acc.push(s, prices, lex).output {
            outputs.push(o);
        }
    }
    let first = &session.steps[0];
    SessionRow {
        id: session.id.clone(),
        agent: first.agent.clone(),
        task: task_part(first, by),
        task_type: first.task_type_or_default().to_string(),
        intent: session.steps.iter().find_map(|s| s.intent.clone()),
        features: acc.finish(),
        outputs,
    }
}

/// Measures sessions on every core, keeping their order.
pub fn measure_all(sessions: &[Session], prices: &PriceTable, by: &[SegmentField]) -> Vec<SessionRow> {
    let lex = Lexicons::builtin();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).max(1);
    let chunk = sessions.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = sessions
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(|x| measure(x, prices, lex, by)).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("measuring threads do not panic"))
            .collect()
    })
}

/// Trains a baseline from loose steps.
pub fn train(
    steps: Vec<Step>,
    inputs: Vec<InputFile>,
    cfg: &TrainConfig,
    prices: &PriceTable,
) -> Result<Baseline, TrainError> {
    validate(cfg)?;
    let mut steps = steps;
    for s in &mut steps {
        prices.fill_cost(s);
    }
    let n_steps = steps.len() as u64;
    let grouped = group_sessions(steps);
    if grouped.sessions.is_empty() {
        return Err(TrainError::Empty);
    }
    let rows = measure_all(&grouped.sessions, prices, &cfg.segment_by);
    train_rows(&rows, n_steps, inputs, cfg)
}

fn validate(cfg: &TrainConfig) -> Result<(), TrainError> {
    let bad = |m: &str| Err(TrainError::Config(m.to_string()));
    if cfg.segment_by.first() != Some(&SegmentField::Agent) {
        return bad("segment_by must start with `agent`");
    }
    if !(cfg.arl0.is_finite() && cfg.arl0 >= 10.0) {
        return bad("arl0 must be at least 10 sessions");
    }
    if cfg.min_sessions < 2 {
        return bad("min_sessions must be at least 2");
    }
    if !(cfg.ewma_lambda > 0.0 && cfg.ewma_lambda <= 1.0 && cfg.output_lambda > 0.0 && cfg.output_lambda <= 1.0) {
        return bad("ewma_lambda and output_lambda must be in (0, 1]");
    }
    if cfg.window < 5 || cfg.hop == 0 || cfg.hop > cfg.window {
        return bad("window must be at least 5 and hop in 1..=window");
    }
    if !(0.5..1.0).contains(&cfg.guarantee) {
        return bad("guarantee must be in [0.5, 1)");
    }
    if cfg.weights.values().any(|w| !w.is_finite() || *w < 0.0) {
        return bad("weights must be non-negative numbers");
    }
    Ok(())
}

/// Trains from measured sessions.
pub fn train_rows(
    rows: &[SessionRow],
    n_steps: u64,
    inputs: Vec<InputFile>,
    cfg: &TrainConfig,
) -> Result<Baseline, TrainError> {
    let mut warnings = Vec::new();
    // Segment membership: own segment (if big enough) and the agent's pool.
    let mut own: BTreeMap<SegmentKey, Vec<usize>> = BTreeMap::new();
    let mut pooled: BTreeMap<SegmentKey, Vec<usize>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        own.entry(SegmentKey::new(&r.agent, &r.task)).or_default().push(i);
        pooled
            .entry(SegmentKey::new(&r.agent, POOLED_TASK_TYPE))
            .or_default()
            .push(i);
    }
    let mut members: BTreeMap<SegmentKey, Vec<usize>> = BTreeMap::new();
    for (key, idx) in own {
        if key.is_pooled() {
            continue; // segment_by = agent: the pool is the segment
        }
        if idx.len() >= cfg.min_sessions as usize {
            members.insert(key, idx);
        } else {
            warnings.push(format!(
                "segment {key} has {} sessions (< min_sessions {}): its sessions are scored against {}",
                idx.len(),
                cfg.min_sessions,
                key.pooled()
            ));
        }
    }
    for (key, idx) in pooled {
        if idx.len() < cfg.min_sessions as usize {
            warnings.push(format!(
                "pooled segment {key} has only {} sessions (< min_sessions {}): its limits rest on a thin reference",
                idx.len(),
                cfg.min_sessions
            ));
        }
        members.insert(key, idx);
    }

    // Phase I per segment.
    let mut excluded_all = Vec::new();
    let mut kept: BTreeMap<SegmentKey, Vec<usize>> = BTreeMap::new();
    for (key, idx) in &members {
        let (keep, out) = phase1(rows, idx, cfg);
        for (i, reason) in out {
            excluded_all.push(ExcludedSession {
                segment: key.clone(),
                session_id: rows[i].id.clone(),
                reason,
            });
        }
        kept.insert(key.clone(), keep);
    }

    // Segments are independent: build and design them on every core. An
    // agent's pool that holds exactly its one task segment's sessions is
    // that segment under another name: it is copied, not built again.
    let work: Vec<(&SegmentKey, &Vec<usize>)> = kept.iter().collect();
    let copy_of: Vec<Option<usize>> = work
        .iter()
        .map(|(key, idx)| {
            if !key.is_pooled() {
                return None;
            }
            let mut own = work
                .iter()
                .enumerate()
                .filter(|(_, (k, _))| !k.is_pooled() && k.agent == key.agent);
            match (own.next(), own.next()) {
                (Some((j, (k, other))), None) if other == idx && members[*k].len() == members[*key].len() => Some(j),
                _ => None,
            }
        })
        .collect();
    // Largest first, so the threads finish together.
    let mut todo: Vec<usize> = (0..work.len()).filter(|&i| copy_of[i].is_none()).collect();
    todo.sort_by_key(|&i| std::cmp::Reverse(work[i].1.len()));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, todo.len().max(1));
    let aggregates = aggregate_parts(rows, todo.iter().map(|&i| work[i]), threads)?;
    let mut built: Vec<Option<Result<SegmentBaseline, TrainError>>> = (0..work.len()).map(|_| None).collect();
    let done: Vec<(usize, Result<SegmentBaseline, TrainError>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let t = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let Some(&i) = todo.get(t) else { break };
                        let (key, idx) = work[i];
                        let agg = aggregates.get(&key.to_string()).cloned().unwrap_or_default();
                        let excluded = members[key].len() - idx.len();
                        let mut seg = build_segment(rows, key, idx, agg, excluded as u32, cfg);
                        seg.pooled_task_types = pooled_task_types(rows, key, idx);
                        let planned = plan(&seg, cfg).map_err(|source| TrainError::Design {
                            segment: key.to_string(),
                            source,
                        });
                        out.push((
                            i,
                            planned.map(|p| {
                                seg.charts = p.charts;
                                seg.unplanned = p.unplanned;
                                seg
                            }),
                        ));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("segment threads do not panic"))
            .collect()
    });
    for (i, r) in done {
        built[i] = Some(r);
    }
    for (i, from) in copy_of.iter().enumerate() {
        if let Some(j) = *from {
            let (key, idx) = work[i];
            built[i] = Some(match &built[j] {
                Some(Ok(seg)) => Ok(SegmentBaseline {
                    key: key.clone(),
                    pooled_task_types: pooled_task_types(rows, key, idx),
                    ..seg.clone()
                }),
                Some(Err(TrainError::Design { source, .. })) => Err(TrainError::Design {
                    segment: key.to_string(),
                    source: source.clone(),
                }),
                _ => unreachable!("segments fail only in design, and every non-copied one was built"),
            });
        }
    }
    let segments = built
        .into_iter()
        .map(|b| b.expect("every segment built or copied"))
        .collect::<Result<Vec<_>, _>>()?;
    let lex = Lexicons::builtin();
    Ok(Baseline {
        meta: BaselineMeta {
            schema_version: SCHEMA_VERSION,
            agentdrift_version: env!("CARGO_PKG_VERSION").to_string(),
            created_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            inputs,
            sessions: rows.len() as u64,
            steps: n_steps,
            config: cfg.clone(),
            lexicon_version: lex.version.clone(),
            lexicon_hash: lex.hash.clone(),
            warnings,
            phase1_excluded: excluded_all,
        },
        segments,
    })
}

/// Task types pooled in a `*` segment (empty for a task segment).
fn pooled_task_types(rows: &[SessionRow], key: &SegmentKey, idx: &[usize]) -> Vec<String> {
    if !key.is_pooled() {
        return Vec::new();
    }
    idx.iter()
        .map(|&i| rows[i].task.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Phase-I cleaning: (kept indices, excluded with reasons).
fn phase1(rows: &[SessionRow], idx: &[usize], cfg: &TrainConfig) -> (Vec<usize>, Vec<(usize, String)>) {
    let mut worst: Vec<(f64, usize, String)> = Vec::new();
    // Per session: its largest |z|, and the feature, z and value behind it.
    let mut score: HashMap<usize, (f64, Feature, f64, f64), FnvState> = HashMap::default();
    for &f in PHASE1_FEATURES {
        let vals: Vec<(usize, f64)> = idx
            .iter()
            .filter_map(|&i| rows[i].features.get(f).map(|v| (i, (1.0 + v.max(0.0)).ln())))
            .collect();
        if vals.len() < 5 {
            continue;
        }
        let mut xs: Vec<f64> = vals.iter().map(|v| v.1).collect();
        let med = median(&mut xs);
        let mut dev: Vec<f64> = xs.iter().map(|x| (x - med).abs()).collect();
        let mad = 1.4826 * median(&mut dev);
        if mad <= 0.0 {
            continue;
        }
        for (i, x) in vals {
            let z = (x - med) / mad;
            let e = score.entry(i).or_insert((0.0, f, 0.0, 0.0));
            if z.abs() > e.0 {
                *e = (z.abs(), f, z, x);
            }
        }
    }
    for (i, (z_abs, f, z, x)) in score {
        if z_abs > cfg.phase1_robust_z {
            worst.push((
                z_abs,
                i,
                format!("{} robust z {z:.1} (value {:.4})", f.name(), x.exp() - 1.0),
            ));
        }
    }
    worst.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    worst.truncate((cfg.phase1_max_share * idx.len() as f64).floor() as usize);
    let out: HashSet<usize> = worst.iter().map(|w| w.1).collect();
    (
        idx.iter().copied().filter(|i| !out.contains(i)).collect(),
        worst.into_iter().map(|(_, i, r)| (i, r)).collect(),
    )
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Per-segment aggregates computed with polars.
#[derive(Clone, Debug, Default)]
struct Aggregates {
    rates: RateBaseline,
    transitions: Vec<(String, String, f64)>,
    tools: Vec<(String, f64)>,
}

fn col_f64(df: &DataFrame, name: &str, row: usize) -> Result<Option<f64>, PolarsError> {
    let c = df.column(name)?.cast(&DataType::Float64)?;
    Ok(c.f64()?.get(row))
}

/// Interns names as dense u32 codes (polars groups integers much faster than strings).
#[derive(Default)]
struct Codes {
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
fn aggregate_parts<'a>(
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
fn aggregate(
    rows: &[SessionRow],
    kept: &BTreeMap<SegmentKey, Vec<usize>>,
) -> Result<HashMap<String, Aggregates>, TrainError> {
    let segment_names: Vec<String> = kept.keys().map(|k| k.to_string()).collect();
    let mut names = Codes::default();
    let (start, end) = (names.code(START), names.code(END));
    let mut seg_col: Vec<u32> = Vec::new();
    let (mut outcome, mut failure, mut escalated, mut confident, mut confident_fail) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut tool_calls, mut tool_errors, mut cost, mut duration, mut steps) = (vec![], vec![], vec![], vec![], vec![]);
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
            steps.push(f.get(Feature::Steps).unwrap_or(0.0));
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
            Column::new("steps".into(), steps),
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
            col("steps").gt(lit(50.0)).mean().alias("over50"),
            col("steps").gt(lit(100.0)).mean().alias("over100"),
            col("steps").gt(lit(200.0)).mean().alias("over200"),
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
            cost_per_success: if cost_n > 0.0 && successes > 0.0 {
                g("cost_sum")?.map(|c| c / successes)
            } else {
                None
            },
            tool_calls_per_session: g("tool_calls")?.unwrap_or(0.0) / sessions.max(1.0),
            mean_duration_ms: g("duration_mean")?,
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

fn feature_baseline(feature: Feature, values: &[f64]) -> Option<FeatureBaseline> {
    let ecdf = Ecdf::new(values).ok()?;
    Some(FeatureBaseline {
        feature,
        n: values.len() as u32,
        mean: ecdf.mean(),
        sd: ecdf.sd(),
        quantiles: [0.05, 0.25, 0.5, 0.75, 0.95].map(|p| ecdf.quantile(p)),
        ecdf,
    })
}

/// Evenly spaced order statistics, so huge per-output samples stay bounded.
fn thin(mut v: Vec<f64>) -> Vec<f64> {
    if v.len() <= MAX_OUTPUT_SAMPLE {
        return v;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (0..MAX_OUTPUT_SAMPLE)
        .map(|i| v[(i * n + n / 2) / MAX_OUTPUT_SAMPLE])
        .collect()
}

fn build_segment(
    rows: &[SessionRow],
    key: &SegmentKey,
    idx: &[usize],
    agg: Aggregates,
    excluded: u32,
    cfg: &TrainConfig,
) -> SegmentBaseline {
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ crate::features::sequence::hash_str(&key.to_string()));
    let feats = |i: usize| &rows[i].features;

    let features: Vec<FeatureBaseline> = Feature::ALL
        .iter()
        .filter_map(|&f| {
            let v: Vec<f64> = idx.iter().filter_map(|&i| feats(i).get(f)).collect();
            feature_baseline(f, &v)
        })
        .collect();

    let cost_success: Vec<f64> = idx
        .iter()
        .filter(|&&i| feats(i).success() == Some(1.0))
        .filter_map(|&i| feats(i).get(Feature::CostUsd))
        .collect();

    // Outputs.
    let all_out: Vec<&OutputObs> = idx.iter().flat_map(|&i| rows[i].outputs.iter()).collect();
    let chars = Ecdf::new(&thin(all_out.iter().map(|o| f64::from(o.text.chars)).collect())).ok();
    let tokens = Ecdf::new(&thin(
        all_out.iter().filter_map(|o| o.tokens.map(|t| t as f64)).collect(),
    ))
    .ok();
    let lexicon = (0..N_LEXICONS)
        .map(|l| Ecdf::new(&thin(all_out.iter().map(|o| f64::from(o.text.lexicon[l])).collect())).ok())
        .collect();
    let lag1 = chars.as_ref().map_or(0.0, |e| {
        let pairs: Vec<(f64, f64)> = idx
            .iter()
            .flat_map(|&i| {
                rows[i]
                    .outputs
                    .windows(2)
                    .map(|w| {
                        (
                            e.percentile(f64::from(w[0].text.chars)),
                            e.percentile(f64::from(w[1].text.chars)),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        correlation(&pairs)
    });
    let outputs = OutputBaseline {
        outputs: all_out.len() as u64,
        per_session: all_out.len() as f64 / idx.len().max(1) as f64,
        chars,
        tokens,
        lexicon,
        lag1,
    };

    // Markov chain.
    let mut states: Vec<String> = vec![START.into(), END.into(), REASON.into(), NEW_TOOL.into()];
    let tool_names: BTreeSet<&str> = agg
        .transitions
        .iter()
        .flat_map(|(a, b, _)| [a.as_str(), b.as_str()])
        .filter(|s| !states.iter().any(|x| x == s))
        .collect();
    states.extend(tool_names.iter().map(|s| s.to_string()));
    let k = states.len();
    let pos: HashMap<&str, usize, FnvState> = states.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
    let mut counts = vec![0.0; k * k];
    for (a, b, n) in &agg.transitions {
        counts[pos[a.as_str()] * k + pos[b.as_str()]] += n;
    }
    let alpha = 0.5;
    let probs: Vec<f64> = (0..k)
        .flat_map(|i| {
            let row: f64 = counts[i * k..(i + 1) * k].iter().sum();
            let c = &counts;
            (0..k).map(move |j| (c[i * k + j] + alpha) / (row + k as f64 * alpha))
        })
        .collect();
    let session_cells = |i: usize| -> Vec<(usize, f64)> {
        let mut prev = pos[START];
        let mut v = Vec::new();
        for s in feats(i).states.iter().map(String::as_str).chain(std::iter::once(END)) {
            let cur = pos.get(s).copied().unwrap_or(pos[NEW_TOOL]);
            v.push((prev * k + cur, 1.0));
            prev = cur;
        }
        v
    };
    let markov_dispersion = dispersion(idx, (k, k), &session_cells, cfg.window as usize, &mut rng);
    let markov_sessions = session_vectors(idx, &session_cells);
    let (top_bigrams, top_trigrams) = ngrams(rows, idx);

    // Tool usage.
    let mut tools: Vec<String> = agg.tools.iter().map(|(t, _)| t.clone()).collect();
    let mut tool_counts: Vec<f64> = agg.tools.iter().map(|(_, n)| *n).collect();
    tools.push(NEW_TOOL.into());
    tool_counts.push(0.0);
    let tpos: HashMap<&str, usize, FnvState> = tools.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
    let tool_cells = |i: usize| -> Vec<(usize, f64)> {
        feats(i)
            .tool_counts
            .iter()
            .map(|(t, n)| (tpos.get(t.as_str()).copied().unwrap_or(tools.len() - 1), f64::from(*n)))
            .collect()
    };
    let tool_dispersion = dispersion(idx, (1, tools.len()), &tool_cells, cfg.window as usize, &mut rng);
    let tool_sessions = session_vectors(idx, &tool_cells);

    // Loops.
    let mut loops = Vec::new();
    let same: Vec<f64> = idx
        .iter()
        .map(|&i| feats(i).get(Feature::RepeatCalls).unwrap_or(0.0))
        .collect();
    loops.push(loop_stat("same_call", &same));
    for l in 1..=crate::features::sequence::MAX_CYCLE {
        let v: Vec<f64> = idx.iter().map(|&i| f64::from(feats(i).max_cycle_reps[l - 1])).collect();
        loops.push(loop_stat(&format!("cycle{l}"), &v));
    }

    // Rates beyond polars' sums.
    let mut rates = agg.rates;
    for &i in idx {
        let r = &rows[i];
        for (c, n) in &r.features.error_classes {
            *rates.error_classes.entry(c.clone()).or_insert(0) += u64::from(*n);
        }
        if let Some(s) = r.features.success() {
            let ok = u32::from(s == 1.0);
            let e = rates.success_by_task.entry(r.task_type.clone()).or_insert((0, 0));
            e.0 += ok;
            e.1 += 1;
            if let Some(intent) = &r.intent {
                let e = rates.success_by_intent.entry(intent.clone()).or_insert((0, 0));
                e.0 += ok;
                e.1 += 1;
            }
            for tool in r.features.tool_counts.keys() {
                let e = rates.success_by_tool.entry(tool.clone()).or_insert((0, 0));
                e.0 += ok;
                e.1 += 1;
            }
        }
    }

    let profile = profile(rows, idx, &features);
    let exemplars = exemplars(rows, idx, &features);
    SegmentBaseline {
        key: key.clone(),
        pooled_task_types: Vec::new(),
        sessions: idx.len() as u32,
        steps: idx.iter().map(|&i| u64::from(feats(i).total_steps)).sum(),
        excluded,
        unplanned: Vec::new(),
        features,
        cost_success: Ecdf::new(&cost_success).ok(),
        outputs,
        markov: MarkovBaseline {
            states,
            counts,
            alpha,
            probs,
            dispersion: markov_dispersion,
            top_bigrams,
            top_trigrams,
            sessions: markov_sessions,
        },
        tools: ToolBaseline {
            tools,
            counts: tool_counts,
            dispersion: tool_dispersion,
            sessions: tool_sessions,
        },
        loops,
        rates,
        profile,
        charts: Vec::new(),
        exemplars,
    }
}

/// Sparse per-session vectors, at most MAX_SESSION_VECTORS (evenly spaced).
fn session_vectors(idx: &[usize], cells: &dyn Fn(usize) -> Vec<(usize, f64)>) -> Vec<Vec<(u32, u32)>> {
    let n = idx.len();
    let take = n.min(MAX_SESSION_VECTORS);
    (0..take)
        .map(|j| {
            let mut m: BTreeMap<u32, u32> = BTreeMap::new();
            for (c, x) in cells(idx[j * n / take]) {
                *m.entry(c as u32).or_insert(0) += x as u32;
            }
            m.into_iter().collect()
        })
        .collect()
}

fn correlation(pairs: &[(f64, f64)]) -> f64 {
    let n = pairs.len() as f64;
    if n < 3.0 {
        return 0.0;
    }
    let (mx, my) = (
        pairs.iter().map(|p| p.0).sum::<f64>() / n,
        pairs.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in pairs {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx).powi(2);
        syy += (y - my).powi(2);
    }
    if sxx <= 0.0 || syy <= 0.0 {
        0.0
    } else {
        sxy / (sxx * syy).sqrt()
    }
}

/// Over-dispersion of the window homogeneity test under the reference:
/// windows of `window` random reference sessions against the rest, mean G
/// over mean df (≥ 1). Sessions differ by task, so their transitions are
/// more variable than one multinomial; this factor (a Rao–Scott style
/// correction) keeps the window test's false alarms at its level.
fn dispersion(
    idx: &[usize],
    shape: (usize, usize),
    cells: &dyn Fn(usize) -> Vec<(usize, f64)>,
    window: usize,
    rng: &mut StdRng,
) -> f64 {
    let per: Vec<Vec<(usize, f64)>> = idx.iter().map(|&i| cells(i)).collect();
    let n = per.len();
    let w = window.min(n / 2);
    if w < 3 {
        return 1.0;
    }
    let size = shape.0 * shape.1;
    let mut total = vec![0.0; size];
    for v in &per {
        for &(c, x) in v {
            total[c] += x;
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    let (mut a, mut b) = (vec![0.0; size], vec![0.0; size]);
    let (mut g, mut df) = (0.0, 0.0);
    for _ in 0..RESAMPLES {
        // A random window of w sessions against the rest.
        let (window_sessions, _) = order.partial_shuffle(rng, w);
        a.iter_mut().for_each(|x| *x = 0.0);
        for &s in window_sessions.iter() {
            for &(c, x) in &per[s] {
                a[c] += x;
            }
        }
        for ((bx, t), ax) in b.iter_mut().zip(&total).zip(&a) {
            *bx = t - ax;
        }
        let (gi, dfi) = crate::stats::gtest::homogeneity_g(&b, &a, shape.1);
        g += gi;
        df += dfi;
    }
    if df <= 0.0 { 1.0 } else { (g / df).max(1.0) }
}

/// Top tool bigrams and trigrams.
type Ngrams = (Vec<(String, String, u64)>, Vec<(String, String, String, u64)>);

fn ngrams(rows: &[SessionRow], idx: &[usize]) -> Ngrams {
    let mut bi: HashMap<(&str, &str), u64, FnvState> = HashMap::default();
    let mut tri: HashMap<(&str, &str, &str), u64, FnvState> = HashMap::default();
    let mut tools: Vec<&str> = Vec::new();
    for &i in idx {
        tools.clear();
        tools.extend(
            rows[i]
                .features
                .states
                .iter()
                .map(String::as_str)
                .filter(|s| *s != REASON),
        );
        for w in tools.windows(2) {
            *bi.entry((w[0], w[1])).or_insert(0) += 1;
        }
        for w in tools.windows(3) {
            *tri.entry((w[0], w[1], w[2])).or_insert(0) += 1;
        }
    }
    let mut bi: Vec<_> = bi.into_iter().map(|((a, b), n)| (a, b, n)).collect();
    bi.sort_by(|x, y| y.2.cmp(&x.2).then_with(|| (x.0, x.1).cmp(&(y.0, y.1))));
    bi.truncate(10);
    let mut tri: Vec<_> = tri.into_iter().map(|((a, b, c), n)| (a, b, c, n)).collect();
    tri.sort_by(|x, y| y.3.cmp(&x.3).then_with(|| (x.0, x.1, x.2).cmp(&(y.0, y.1, y.2))));
    tri.truncate(10);
    (
        bi.into_iter().map(|(a, b, n)| (a.into(), b.into(), n)).collect(),
        tri.into_iter()
            .map(|(a, b, c, n)| (a.into(), b.into(), c.into(), n))
            .collect(),
    )
}

/// Loop statistic with a geometric tail beyond the empirical part: k0 is the
/// smallest k ≥ 2 with at most max(5, n/10) sessions at or above it; beyond
/// k0, P(max ≥ k) = P(max ≥ k0)·q^(k−k0) with q the geometric MLE of the
/// excess over k0 under a uniform prior, (S + 1)/(S + c + 2).
fn loop_stat(name: &str, values: &[f64]) -> LoopStat {
    let ecdf = Ecdf::new(values).unwrap_or_else(|_| Ecdf::new(&[0.0]).expect("non-empty"));
    let n = values.len() as f64;
    let limit = (n / 10.0).max(5.0);
    let mut k0 = 2u32;
    while (ecdf.upper_tail(f64::from(k0)) * n) > limit {
        k0 += 1;
    }
    let above: Vec<f64> = values.iter().copied().filter(|v| *v >= f64::from(k0)).collect();
    let c = above.len() as f64;
    let s: f64 = above.iter().map(|v| v - f64::from(k0)).sum();
    LoopStat {
        name: name.to_string(),
        k0,
        p_k0: crate::detect::plan::smoothed_rate(c, n),
        q: (s + 1.0) / (s + c + 2.0),
        ecdf,
    }
}

/// The T² profile: z-scores of PROFILE_FEATURES (leave-one-out PIT), PCA by
/// linfa, Ledoit–Wolf shrinkage of the eigenvalues when m < 10p.
fn profile(rows: &[SessionRow], idx: &[usize], features: &[FeatureBaseline]) -> Option<ProfileBaseline> {
    let usable: Vec<&FeatureBaseline> = PROFILE_FEATURES
        .iter()
        .filter_map(|f| features.iter().find(|b| b.feature == *f))
        .filter(|b| b.ecdf.distinct() >= 3)
        .collect();
    let p = usable.len();
    if p < 2 {
        return None;
    }
    let zs: Vec<Vec<f64>> = idx
        .iter()
        .filter_map(|&i| {
            usable
                .iter()
                .map(|b| {
                    let v = rows[i].features.get(b.feature)?;
                    Some(b.ecdf.z_loo(v, session_uniform(&rows[i].id)))
                })
                .collect()
        })
        .collect();
    let m = zs.len();
    if m < p + 5 {
        return None;
    }
    let x = Array2::from_shape_fn((m, p), |(i, j)| zs[i][j]);
    let pca = linfa_reduction::Pca::params(p)
        .fit(&linfa::DatasetBase::from(x.clone()))
        .ok()?;
    let mean: Vec<f64> = pca.mean().to_vec();
    let comps = pca.components();
    let sv = pca.singular_values();
    let mut variances: Vec<f64> = sv.iter().map(|s| s * s / (m as f64 - 1.0)).collect();
    let trace: f64 = variances.iter().sum();
    let mut components: Vec<Vec<f64>> = Vec::new();
    let mut kept_var = Vec::new();
    for (r, v) in variances.iter().enumerate() {
        if *v > 1e-9 * trace {
            components.push(comps.row(r).to_vec());
            kept_var.push(*v);
        }
    }
    variances = kept_var;
    let shrinkage = (m < 10 * p).then(|| ledoit_wolf(&x));
    if let Some(rho) = shrinkage {
        let mu = trace / p as f64;
        variances.iter_mut().for_each(|v| *v = (1.0 - rho) * *v + rho * mu);
    }
    Some(ProfileBaseline {
        features: usable.iter().map(|b| b.feature).collect(),
        mean,
        components,
        variances,
        shrinkage,
        m: m as u32,
    })
}

/// Ledoit–Wolf (2004) shrinkage intensity towards a scaled identity.
fn ledoit_wolf(x: &Array2<f64>) -> f64 {
    let (m, p) = x.dim();
    let mean = x.mean_axis(ndarray::Axis(0)).expect("m > 0");
    let xc = x - &mean;
    let s = xc.t().dot(&xc) / m as f64;
    let mu = s.diag().sum() / p as f64;
    let mut delta2 = 0.0;
    for i in 0..p {
        for j in 0..p {
            let t = if i == j { mu } else { 0.0 };
            delta2 += (s[[i, j]] - t).powi(2);
        }
    }
    delta2 /= p as f64;
    let mut beta2 = 0.0;
    for r in xc.rows() {
        let mut d = 0.0;
        for i in 0..p {
            for j in 0..p {
                d += (r[i] * r[j] - s[[i, j]]).powi(2);
            }
        }
        beta2 += d / p as f64;
    }
    beta2 /= (m * m) as f64;
    if delta2 <= 0.0 {
        1.0
    } else {
        (beta2.min(delta2) / delta2).clamp(0.0, 1.0)
    }
}

/// Most typical sessions: smallest mean |z| over the profile features.
fn exemplars(rows: &[SessionRow], idx: &[usize], features: &[FeatureBaseline]) -> Vec<String> {
    let mut scored: Vec<(f64, &str)> = idx
        .iter()
        .map(|&i| {
            let zs: Vec<f64> = PROFILE_FEATURES
                .iter()
                .filter_map(|f| {
                    let b = features.iter().find(|b| b.feature == *f)?;
                    let v = rows[i].features.get(*f)?;
                    Some(crate::stats::dist::norm_quantile(b.ecdf.percentile(v).clamp(0.001, 0.999)).abs())
                })
                .collect();
            (zs.iter().sum::<f64>() / zs.len().max(1) as f64, rows[i].id.as_str())
        })
        .collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)));
    scored.into_iter().take(5).map(|(_, s)| s.to_string()).collect()
}

/// Random split helper for tests and evaluations: every other session by a
/// seeded shuffle.
pub fn split_halves<T: Clone>(items: &[T], seed: u64) -> (Vec<T>, Vec<T>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut a = Vec::new();
    let mut b = Vec::new();
    for x in items {
        if rng.random::<bool>() {
            a.push(x.clone());
        } else {
            b.push(x.clone());
        }
    }
    (a, b)
}

/// A session measured as its steps arrive in seq order from 0: its steps
/// are dropped once accumulated, so memory holds only open sessions' sums.
struct Live {
    /// Order key of its first step.
    order: u64,
    /// Order key of the last step accumulated.
    last_order: u64,
    /// The seq expected next.
    next: u64,
    acc: SessionAccumulator,
    outputs: Vec<OutputObs>,
    id: String,
    agent: String,
    task: String,
    task_type: String,
    intent: Option<String>,
}

impl Live {
    fn start(first: &Step, order: u64, by: &[SegmentField]) -> Live {
        Live {
            order,
            last_order: order,
            next: 0,
            acc: SessionAccumulator::default(),
            outputs: Vec::new(),
            id: first.session_id.clone(),
            agent: first.agent.clone(),
            task: task_part(first, by),
            task_type: first.task_type_or_default().to_string(),
            intent: None,
        }
    }

    fn push(&mut self, step: &Step, order: u64, prices: &PriceTable) {
        if self.intent.is_none() {
            self.intent.clone_from(&step.intent);
        }
        if let Some(o) = self.acc.push(step, prices, Lexicons::builtin()).output {
            self.outputs.push(o);
        }
        self.next = step.seq + 1;
        self.last_order = order;
    }

    fn finish(self) -> (u64, SessionRow) {
        (
            self.order,
            SessionRow {
                id: self.id,
                agent: self.agent,
                task: self.task,
                task_type: self.task_type,
                intent: self.intent,
                features: self.acc.finish(),
                outputs: self.outputs,
            },
        )
    }
}

/// A session still collecting steps.
enum Pending {
    /// In seq order from 0 so far.
    Live(Box<Live>),
    /// Anything else: its steps, kept for sorting when the stream ends, and
    /// the order key of the first.
    Loose(u64, Vec<Step>),
}

/// Builds session rows from a stream of steps (one builder per thread): a
/// session whose steps arrive in seq order from 0 is measured as they
/// arrive and finished by its end step; a session starting elsewhere keeps
/// its steps until the stream ends; a session that breaks its order, or
/// goes on after its end, is measured again from a second read.
pub struct SessionBuilder<'a> {
    prices: &'a PriceTable,
    by: &'a [SegmentField],
    open: HashMap<String, Pending, FnvState>,
    rows: Vec<(u64, SessionRow)>,
    finished: HashMap<String, u64, FnvState>,
    reopened: HashSet<String, FnvState>,
}

impl<'a> SessionBuilder<'a> {
    /// An empty builder.
    pub fn new(prices: &'a PriceTable, by: &'a [SegmentField]) -> SessionBuilder<'a> {
        SessionBuilder {
            prices,
            by,
            open: HashMap::default(),
            rows: Vec::new(),
            finished: HashMap::default(),
            reopened: HashSet::default(),
        }
    }
}

impl crate::cli::input::StepSink for SessionBuilder<'_> {
    fn push(&mut self, step: Step, order: u64) {
        if self.reopened.contains(&step.session_id) {
            return; // measured again from the second read
        }
        if self.finished.contains_key(&step.session_id) {
            self.reopened.insert(step.session_id);
            return;
        }
        let is_end = step.kind == crate::model::StepKind::End;
        match self.open.get_mut(&step.session_id) {
            None if step.seq == 0 => {
                let mut live = Live::start(&step, order, self.by);
                live.push(&step, order, self.prices);
                if is_end {
                    self.finished.insert(step.session_id, order);
                    self.rows.push(live.finish());
                } else {
                    self.open.insert(step.session_id, Pending::Live(Box::new(live)));
                }
            }
            None => {
                self.open
                    .insert(step.session_id.clone(), Pending::Loose(order, vec![step]));
            }
            Some(Pending::Live(live)) if step.seq == live.next => {
                live.push(&step, order, self.prices);
                if is_end {
                    let Some(Pending::Live(live)) = self.open.remove(&step.session_id) else {
                        unreachable!("matched above")
                    };
                    self.finished.insert(step.session_id, live.order);
                    self.rows.push(live.finish());
                }
            }
            Some(Pending::Live(_)) => {
                self.open.remove(&step.session_id);
                self.reopened.insert(step.session_id);
            }
            Some(Pending::Loose(first, steps)) => {
                *first = (*first).min(order);
                steps.push(step);
            }
        }
    }
}

/// A sink that keeps the steps of some sessions (for recomputing them).
struct Collect<'a> {
    ids: &'a HashSet<String>,
    steps: Vec<(u64, Step)>,
}

impl crate::cli::input::StepSink for Collect<'_> {
    fn push(&mut self, step: Step, order: u64) {
        if self.ids.contains(&step.session_id) {
            self.steps.push((order, step));
        }
    }
}

/// Rows of loose steps in first-appearance order (sessions sorted by seq, duplicates dropped).
fn rows_of(mut steps: Vec<(u64, Step)>, prices: &PriceTable, by: &[SegmentField]) -> Vec<(u64, SessionRow)> {
    steps.sort_by_key(|x| x.0);
    let mut first: HashMap<String, u64> = HashMap::new();
    for (o, s) in &steps {
        first.entry(s.session_id.clone()).or_insert(*o);
    }
    let grouped = group_sessions(steps.into_iter().map(|x| x.1));
    let rows = measure_all(&grouped.sessions, prices, by);
    rows.into_iter().map(|r| (first[&r.id], r)).collect()
}

/// Trains straight from input files without holding every step in memory
/// (same result as [`train`] on the same steps). Returns the baseline and
/// what was read (bad records included); with bad records and without
/// `skip_bad`, no baseline is built.
pub fn train_files(
    paths: &[std::path::PathBuf],
    format: Option<crate::ingest::Format>,
    opts: &crate::ingest::ReadOptions,
    prices: &PriceTable,
    strict: bool,
    skip_bad: bool,
    cfg: &TrainConfig,
) -> Result<(Option<Baseline>, crate::cli::input::Streamed), TrainFilesError> {
    validate(cfg)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).max(1);
    let by = cfg.segment_by.clone();
    let mut builders: Vec<SessionBuilder> = (0..threads).map(|_| SessionBuilder::new(prices, &by)).collect();
    let streamed = crate::cli::input::stream(paths, format, opts, prices, strict, &mut builders)?;
    if !streamed.errors.is_empty() && !skip_bad {
        return Ok((None, streamed));
    }
    // Merge: a session finished in one builder and seen nowhere else is
    // final; a session left open is completed from the loose steps other
    // builders hold of it (a session cut by a chunk boundary); sessions that
    // broke their order or went on after their end are measured again.
    let mut seen: HashMap<&str, usize, FnvState> = HashMap::default();
    for b in &builders {
        for id in b.finished.keys().chain(b.open.keys()) {
            *seen.entry(id.as_str()).or_insert(0) += 1;
        }
    }
    let mut dirty: HashSet<String, FnvState> = builders.iter().flat_map(|b| b.reopened.iter().cloned()).collect();
    for b in &builders {
        for id in b.finished.keys() {
            if seen[id.as_str()] > 1 {
                dirty.insert(id.clone());
            }
        }
    }
    drop(seen);
    let mut rows: Vec<(u64, SessionRow)> = Vec::new();
    let mut pieces: BTreeMap<String, Vec<Pending>> = BTreeMap::new();
    for b in builders {
        rows.extend(b.rows.into_iter().filter(|(_, r)| !dirty.contains(&r.id)));
        for (id, p) in b.open {
            if !dirty.contains(&id) {
                pieces.entry(id).or_default().push(p);
            }
        }
    }
    let mut partial: Vec<(u64, Step)> = Vec::new();
    for (id, parts) in pieces {
        let mut live: Option<Box<Live>> = None;
        let mut loose: Vec<(u64, Step)> = Vec::new();
        let mut ok = true;
        for p in parts {
            match p {
                Pending::Live(l) if live.is_none() => live = Some(l),
                Pending::Live(_) => ok = false, // two starts: measured again
                Pending::Loose(order, steps) => loose.extend(steps.into_iter().map(|s| (order, s))),
            }
        }
        match live {
            Some(mut l) if ok => {
                loose.sort_by_key(|(order, s)| (s.seq, *order));
                loose.dedup_by_key(|(_, s)| s.seq);
                let first = l.order.min(loose.first().map_or(u64::MAX, |x| x.0));
                for (order, s) in loose {
                    if s.seq >= l.next {
                        l.push(&s, order.max(l.last_order), prices);
                    } else if order <= l.last_order {
                        ok = false; // an earlier copy of a step already measured
                        break;
                    }
                }
                if ok {
                    l.order = first;
                    rows.push(l.finish());
                } else {
                    dirty.insert(id);
                }
            }
            Some(_) => {
                dirty.insert(id);
            }
            None => partial.extend(loose),
        }
    }
    rows.extend(rows_of(partial, prices, &by));
    if !dirty.is_empty() {
        let dirty: HashSet<String> = dirty.into_iter().collect();
        let mut collect = [Collect {
            ids: &dirty,
            steps: Vec::new(),
        }];
        crate::cli::input::stream(paths, format, opts, prices, false, &mut collect)?;
        let [c] = collect;
        rows.extend(rows_of(c.steps, prices, &by));
    }
    if rows.is_empty() {
        return Err(TrainError::Empty.into());
    }
    rows.sort_by_key(|r| r.0);
    let rows: Vec<SessionRow> = rows.into_iter().map(|r| r.1).collect();
    let baseline = train_rows(&rows, streamed.steps, streamed.files.clone(), cfg)?;
    Ok((Some(baseline), streamed))
}

/// Why training from files failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainFilesError {
    /// Reading failed.
    #[error(transparent)]
    Input(#[from] crate::cli::input::InputError),
    /// Training failed.
    #[error(transparent)]
    Train(#[from] TrainError),
}
