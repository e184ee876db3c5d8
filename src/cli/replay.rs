//! `agentdrift replay`: score recorded sessions offline through the same
//! scorer the service runs.

use super::InputArgs;
use super::input;
use crate::baseline::load;
use crate::detect::DriftEvent;
use crate::engine::{ClosedSession, Scorer};
use crate::model::Step;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Options of `agentdrift replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Baseline file.
    #[arg(long)]
    pub baseline: PathBuf,
    /// Recorded sessions: files or directories.
    #[arg(long, required = true, num_args = 1..)]
    pub input: Vec<PathBuf>,
    /// Seconds of event time without a step after which a session closes.
    #[arg(long, default_value_t = 300)]
    pub idle_timeout_secs: u64,
    /// Score whole sessions in a random order (seeded) instead of input order,
    /// as if they had arrived independently.
    #[arg(long, value_name = "SEED")]
    pub shuffle: Option<u64>,
    /// Print events as JSON lines, then one summary line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub input_args: InputArgs,
}

/// Per-segment replay summary.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SegmentSummary {
    /// Sessions scored against this segment.
    pub sessions: u64,
    /// Of which fell back from another segment.
    pub fallback: u64,
    /// Events per detector.
    pub events: BTreeMap<String, u64>,
}

/// Result of a replay.
#[derive(Debug, Default, Serialize)]
pub struct ReplayResult {
    /// Events in firing order.
    pub events: Vec<DriftEvent>,
    /// Closed sessions in closing order.
    #[serde(skip)]
    pub closed: Vec<ClosedSession>,
    /// Per-segment summary.
    pub segments: BTreeMap<String, SegmentSummary>,
    /// Sessions of agents the baseline does not know (not scored).
    pub unscored_sessions: u64,
    /// Steps scored.
    pub steps: u64,
}

/// Reorders whole sessions randomly (seeded), keeping each session's steps
/// together and in order, and rebases timestamps so sessions follow one
/// another in the new order (idle timeouts then behave as in a live stream).
pub fn shuffle_sessions(steps: Vec<Step>, seed: u64) -> Vec<Step> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let mut sessions = crate::model::group_sessions(steps).sessions;
    sessions.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let mut clock = sessions
        .iter()
        .filter_map(|s| s.steps.first())
        .map(|s| s.ts)
        .min()
        .unwrap_or(0);
    let mut out = Vec::new();
    for s in sessions {
        let start = s.steps.first().map_or(0, |x| x.ts);
        let end = s.steps.iter().map(|x| x.ts).max().unwrap_or(start);
        for mut st in s.steps {
            st.ts = clock + (st.ts - start);
            out.push(st);
        }
        clock += end - start + 1;
    }
    out
}

/// Streams steps (in the given order, event time as the clock) through a scorer.
pub fn replay_steps(scorer: &mut Scorer, steps: Vec<Step>) -> ReplayResult {
    let mut r = ReplayResult::default();
    let record = |out: crate::engine::Output, r: &mut ReplayResult| {
        for c in &out.closed {
            match &c.segment {
                Some(k) => {
                    let s = r.segments.entry(k.to_string()).or_default();
                    s.sessions += 1;
                    s.fallback += u64::from(c.fallback_from.is_some());
                }
                None => r.unscored_sessions += 1,
            }
        }
        for e in &out.events {
            *r.segments
                .entry(e.segment.to_string())
                .or_default()
                .events
                .entry(e.detector.clone())
                .or_insert(0) += 1;
        }
        r.events.extend(out.events);
        r.closed.extend(out.closed);
    };
    let mut clock = i64::MIN;
    for step in steps {
        clock = clock.max(step.ts);
        let out = scorer.ingest(step, clock);
        record(out, &mut r);
        let idle = scorer.close_idle(clock);
        record(idle, &mut r);
    }
    let out = scorer.flush();
    record(out, &mut r);
    r.steps = scorer.stats().steps;
    r
}

/// Runs `replay`.
pub fn run(a: ReplayArgs) -> anyhow::Result<ExitCode> {
    let baseline = Arc::new(load(&a.baseline)?);
    let prices = a.input_args.prices()?;
    let loaded = input::load(
        &a.input,
        a.input_args.format,
        &a.input_args.read_options(),
        &prices,
        a.input_args.strict,
    )?;
    if !loaded.errors.is_empty() {
        super::report_record_errors(&loaded.errors, 20);
    }
    let mut scorer = Scorer::new(baseline, prices, (a.idle_timeout_secs * 1000) as i64)?;
    let steps = match a.shuffle {
        Some(seed) => shuffle_sessions(loaded.steps, seed),
        None => loaded.steps,
    };
    let r = replay_steps(&mut scorer, steps);
    if a.json {
        for e in &r.events {
            println!("{}", serde_json::to_string(e)?);
        }
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({"summary": {
                "segments": r.segments, "unscored_sessions": r.unscored_sessions, "steps": r.steps,
                "events": r.events.len(), "bad_records": loaded.errors.len()}}))?
        );
    } else {
        for e in &r.events {
            println!("[{}] {} {}: {}", e.segment, e.detector, e.id, e.message);
        }
        println!("\n{:<52} {:>8} {:>8}  events", "segment", "sessions", "fallback");
        for (k, s) in &r.segments {
            let ev = if s.events.is_empty() {
                "-".to_string()
            } else {
                s.events
                    .iter()
                    .map(|(d, n)| format!("{d}:{n}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            println!("{k:<52} {:>8} {:>8}  {ev}", s.sessions, s.fallback);
        }
        if r.unscored_sessions > 0 {
            println!(
                "{} sessions of agents without a baseline were not scored",
                r.unscored_sessions
            );
        }
    }
    Ok(if loaded.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
