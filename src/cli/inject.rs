//! `agentdrift inject` (drifted copies of recorded sessions) and
//! `agentdrift split` (a seeded reference/hold-out split by session).

use super::InputArgs;
use crate::inject::{DriftKind, inject, split_sessions};
use crate::model::{Session, Step, group_sessions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Options of `agentdrift inject`.
#[derive(Debug, clap::Args)]
pub struct InjectArgs {
    /// Recorded sessions: files or directories.
    #[arg(long, required = true, num_args = 1..)]
    pub input: Vec<PathBuf>,
    /// loop, tool-swap, verbosity, tokens, tone, errors, success or latency.
    #[arg(long)]
    pub drift: DriftKind,
    /// How strong: repetitions (loop), a probability (tool-swap, tone, errors,
    /// success) or a relative increase (verbosity, tokens, latency).
    #[arg(long)]
    pub magnitude: f64,
    /// Seed of the random choices.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output file (native NDJSON).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub input_args: InputArgs,
}

/// Options of `agentdrift split`.
#[derive(Debug, clap::Args)]
pub struct SplitArgs {
    /// Recorded sessions: files or directories.
    #[arg(long, required = true, num_args = 1..)]
    pub input: Vec<PathBuf>,
    /// Share of sessions held out.
    #[arg(long, default_value_t = 0.5)]
    pub holdout_fraction: f64,
    /// Seed of the split.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where the reference sessions go (native NDJSON).
    #[arg(long)]
    pub reference_out: PathBuf,
    /// Where the held-out sessions go (native NDJSON).
    #[arg(long)]
    pub holdout_out: PathBuf,
    #[command(flatten)]
    pub input_args: InputArgs,
}

/// Writes steps as native NDJSON.
pub fn write_ndjson(path: &Path, steps: &[Step]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    }
    let f = std::fs::File::create(path).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    let mut w = std::io::BufWriter::new(f);
    for s in steps {
        serde_json::to_writer(&mut w, s)?;
        w.write_all(b"\n")?;
    }
    w.flush()
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

fn load(paths: &[PathBuf], a: &InputArgs) -> anyhow::Result<(Vec<Step>, bool)> {
    let loaded = a.load(paths, &a.prices()?)?;
    anyhow::ensure!(!loaded.steps.is_empty(), "no steps in the input");
    Ok((loaded.steps, loaded.errors.is_empty()))
}

/// Runs `inject`.
pub fn run_inject(a: InjectArgs) -> anyhow::Result<ExitCode> {
    let (steps, clean) = load(&a.input, &a.input_args)?;
    let r = inject(group_sessions(steps).sessions, a.drift, a.magnitude, a.seed)?;
    write_ndjson(&a.out, &r.steps)?;
    eprintln!(
        "{} sessions, {} changed ({} steps changed or inserted) by {} {} → {}",
        r.sessions,
        r.changed_sessions,
        r.changed_steps,
        a.drift,
        a.magnitude,
        a.out.display()
    );
    Ok(if clean { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Runs `split`.
pub fn run_split(a: SplitArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        a.holdout_fraction > 0.0 && a.holdout_fraction < 1.0,
        "--holdout-fraction must be in (0, 1)"
    );
    let (steps, clean) = load(&a.input, &a.input_args)?;
    let (reference, holdout) = split_sessions(group_sessions(steps).sessions, a.holdout_fraction, a.seed);
    let (nr, nh) = (reference.len(), holdout.len());
    let flat = |v: Vec<Session>| -> Vec<Step> { v.into_iter().flat_map(|s| s.steps).collect() };
    write_ndjson(&a.reference_out, &flat(reference))?;
    write_ndjson(&a.holdout_out, &flat(holdout))?;
    eprintln!(
        "{nr} sessions → {}, {nh} sessions → {}",
        a.reference_out.display(),
        a.holdout_out.display()
    );
    Ok(if clean { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
