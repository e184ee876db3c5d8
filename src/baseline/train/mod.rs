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

mod aggregate;
mod measure;
mod phase1;
pub mod plan;
mod profile;
mod segment;
mod stream;

use aggregate::aggregate_parts;
pub use measure::{measure, measure_all};
use phase1::phase1;
use segment::build_segment;
pub use stream::{SessionBuilder, TrainFilesError, train_files};

use crate::baseline::types::*;
use crate::features::{Feature, OutputObs, Rules, SessionFeatures};
use crate::ingest::InputFile;
use crate::model::{POOLED_TASK_TYPE, SegmentField, SegmentKey, Step, group_sessions};
use plan::plan;
use polars::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};

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

/// Trains a baseline from loose steps.
pub fn train(
    steps: Vec<Step>,
    inputs: Vec<InputFile>,
    cfg: &TrainConfig,
    rules: &Rules,
) -> Result<Baseline, TrainError> {
    validate(cfg)?;
    let mut steps = steps;
    for s in &mut steps {
        rules.prices.fill_cost(s);
    }
    let grouped = group_sessions(steps);
    if grouped.sessions.is_empty() {
        return Err(TrainError::Empty);
    }
    let rows = measure_all(&grouped.sessions, rules, &cfg.segment_by);
    train_rows(&rows, inputs, cfg, rules)
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
    inputs: Vec<InputFile>,
    cfg: &TrainConfig,
    rules: &Rules,
) -> Result<Baseline, TrainError> {
    // Steps measured: a step sent twice (same session and `seq`) counts once.
    let n_steps: u64 = rows.iter().map(|r| u64::from(r.features.total_steps)).sum();
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
    let lex = rules.lexicons;
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
            taxonomy: Some(rules.taxonomy.source()),
            grounding: Some(rules.grounding.source()),
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
