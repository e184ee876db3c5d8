//! `agentdrift train` and `agentdrift baseline show|diff`.

use super::InputArgs;
use crate::baseline::report::{diff, diff_text, show_json, show_text};
use crate::baseline::{load, save};
use crate::config::Config;
use crate::features::{Grounding, Rules, Taxonomy};
use crate::model::SegmentField;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Options of `agentdrift train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Reference sessions: files or directories.
    #[arg(long, required = true, num_args = 1..)]
    pub input: Vec<PathBuf>,
    /// Baseline file to write (e.g. baselines/NAME.adb).
    #[arg(long)]
    pub out: PathBuf,
    /// Segment key fields, agent first.
    #[arg(long, value_delimiter = ',', value_enum)]
    pub segment_by: Option<Vec<SegmentField>>,
    /// Sessions a segment needs for its own baseline (rarer ones use the agent's pooled `*` segment).
    #[arg(long)]
    pub min_sessions: Option<u32>,
    /// In-control ARL of each segment's whole detector set, in sessions (one false event per N sessions).
    #[arg(long)]
    pub arl0: Option<f64>,
    /// agentdrift.toml with a [train] section (flags win over it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Error taxonomy (TOML, like `taxonomy/errors.toml`) to classify failures,
    /// escalations and state errors with; stored in the baseline.
    #[arg(long)]
    pub taxonomy: Option<PathBuf>,
    /// Grounding rules (TOML, like `grounding/claims.toml`) to extract and
    /// check the outputs' claims with; stored in the baseline.
    #[arg(long)]
    pub grounding: Option<PathBuf>,
    /// Train on the good records even if some are bad (they are listed either way).
    #[arg(long)]
    pub skip_bad: bool,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub input_args: InputArgs,
}

/// Runs `train`.
pub fn run_train(a: TrainArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut cfg = Config::load(a.config.as_deref())?.train;
    if let Some(s) = a.segment_by {
        cfg.segment_by = s;
    }
    if let Some(m) = a.min_sessions {
        cfg.min_sessions = m;
    }
    if let Some(x) = a.arl0 {
        cfg.arl0 = x;
    }
    if let Some(t) = &a.taxonomy {
        cfg.taxonomy = Some(t.display().to_string());
    }
    let prices = a.input_args.prices()?;
    let taxonomy = match &cfg.taxonomy {
        Some(path) => Taxonomy::load(Path::new(path))?,
        None => Taxonomy::builtin().clone(),
    };
    if let Some(g) = &a.grounding {
        cfg.grounding = Some(g.display().to_string());
    }
    let grounding = match &cfg.grounding {
        Some(path) => Grounding::load(Path::new(path))?,
        None => Grounding::builtin().clone(),
    };
    let rules = Rules::new(&prices, &taxonomy).with_grounding(&grounding);
    let (baseline, read) = crate::baseline::train::train_files(
        &a.input,
        a.input_args.format,
        &a.input_args.read_options(),
        &rules,
        a.input_args.strict,
        a.skip_bad,
        &cfg,
    )?;
    if !read.errors.is_empty() {
        super::report_record_errors(&read.errors, 20);
    }
    let Some(baseline) = baseline else {
        eprintln!(
            "error: {} bad records; nothing written (fix them, or pass --skip-bad to train on the rest)",
            read.errors.len()
        );
        return Ok(ExitCode::from(1));
    };
    // Steps measured, and those read again (same session and `seq`) that were skipped.
    let n_steps = baseline.meta.steps as usize;
    let duplicates = (read.steps as usize).saturating_sub(n_steps);
    save(&baseline, &a.out)?;
    let secs = started.elapsed().as_secs_f64();
    for w in &baseline.meta.warnings {
        eprintln!("warning: {w}");
    }
    let summary = serde_json::json!({
        "out": a.out,
        "sessions": baseline.meta.sessions,
        "steps": n_steps,
        "duplicate_steps": duplicates,
        "segments": baseline.segments.iter().map(|s| serde_json::json!({
            "segment": s.key.to_string(), "sessions": s.sessions, "excluded": s.excluded, "charts": s.charts.len()})).collect::<Vec<_>>(),
        "phase1_excluded": baseline.meta.phase1_excluded.len(),
        "warnings": baseline.meta.warnings.len(),
        "seconds": secs,
        "steps_per_second": n_steps as f64 / secs,
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "trained {} segments from {} sessions ({} steps{}) in {:.2}s ({:.0} steps/s); {} reference sessions excluded in phase I; wrote {}",
            baseline.segments.len(),
            baseline.meta.sessions,
            n_steps,
            if duplicates > 0 {
                format!(", {duplicates} duplicate steps skipped")
            } else {
                String::new()
            },
            secs,
            n_steps as f64 / secs,
            baseline.meta.phase1_excluded.len(),
            a.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `baseline show`.
pub fn run_show(file: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let b = load(file)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&show_json(&b))?);
    } else {
        print!("{}", show_text(&b));
    }
    Ok(ExitCode::SUCCESS)
}

/// Options of `baseline diff`.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// Baseline A (e.g. the current model).
    pub a: PathBuf,
    /// Baseline B (e.g. the candidate).
    pub b: PathBuf,
    /// Segment of A to compare (AGENT/TASK); default: segments the baselines share, else by task.
    #[arg(long)]
    pub segment_a: Option<String>,
    /// Segment of B to compare.
    #[arg(long)]
    pub segment_b: Option<String>,
    /// Significance level for Holm-adjusted p-values.
    #[arg(long, default_value_t = 0.01)]
    pub alpha: f64,
    /// Rows to print per pair.
    #[arg(long, default_value_t = 25)]
    pub top: usize,
    /// Seed of the permutation tests.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `baseline diff`.
pub fn run_diff(a: DiffArgs) -> anyhow::Result<ExitCode> {
    let (x, y) = (load(&a.a)?, load(&a.b)?);
    let r = diff(&x, &y, a.segment_a.as_deref(), a.segment_b.as_deref(), a.alpha, a.seed)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", diff_text(&r, a.top));
    }
    Ok(ExitCode::SUCCESS)
}
