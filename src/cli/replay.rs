//! `agentdrift replay`: score recorded sessions offline through the same
//! scorer the service runs.

use super::InputArgs;
use crate::baseline::load;
use crate::engine::Scorer;
pub use crate::engine::replay::{ReplayResult, SegmentSummary, replay_steps, replay_steps_traced, shuffle_sessions};
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
    /// Write every chart's statistic and limit after each closed session to
    /// this file (JSON lines: session, segment, chart, statistic, limit).
    #[arg(long, value_name = "FILE")]
    pub chart_trace: Option<PathBuf>,
    /// Print events as JSON lines, then one summary line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub input_args: InputArgs,
}

/// Runs `replay`.
pub fn run(a: ReplayArgs) -> anyhow::Result<ExitCode> {
    let baseline = Arc::new(load(&a.baseline)?);
    let prices = a.input_args.prices()?;
    let loaded = a.input_args.load(&a.input, &prices)?;
    let mut scorer = Scorer::new(baseline, prices, (a.idle_timeout_secs * 1000) as i64)?;
    let steps = match a.shuffle {
        Some(seed) => shuffle_sessions(loaded.steps, seed),
        None => loaded.steps,
    };
    let r = match &a.chart_trace {
        None => replay_steps(&mut scorer, steps),
        Some(path) => {
            use std::io::Write;
            let f = std::fs::File::create(path).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            let mut w = std::io::BufWriter::new(f);
            let mut n: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
            let mut failed = None;
            let r = replay_steps_traced(&mut scorer, steps, &mut |sc, c| {
                let Some(seg) = &c.segment else { return };
                let Some((_, det)) = sc.detectors().find(|(b, _)| &b.key == seg) else {
                    return;
                };
                let seg = seg.to_string();
                let i = n.entry(seg.clone()).or_insert(0);
                *i += 1;
                let mut charts: Vec<_> = det.last.iter().collect();
                charts.sort_by(|a, b| a.0.cmp(b.0));
                for (chart, (stat, limit)) in charts {
                    let line = serde_json::json!({"n": *i, "session_id": c.session_id, "segment": seg,
                        "chart": chart, "statistic": stat, "limit": limit});
                    if let Err(e) = writeln!(w, "{line}") {
                        failed.get_or_insert(e);
                    }
                }
            });
            if let Some(e) = failed {
                anyhow::bail!("cannot write {}: {e}", path.display());
            }
            w.flush()?;
            r
        }
    };
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
