//! `agentdrift eval`: false alarms on in-control sessions and detection of
//! drifted ones, through the service's scorer.

use super::InputArgs;
use crate::baseline::load;
use crate::eval::{CaseReport, EvalOptions, EvalReport, case_label, drifted, in_control};
use crate::ingest::files as input;
use crate::model::Step;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Options of `agentdrift eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Baseline file.
    #[arg(long)]
    pub baseline: PathBuf,
    /// Sessions that should raise no alarm (not used to train the baseline).
    #[arg(long, required = true, num_args = 1..)]
    pub in_control: Vec<PathBuf>,
    /// Drifted sessions: each file is one case (files in a directory too).
    #[arg(long, num_args = 1..)]
    pub drifted: Vec<PathBuf>,
    /// Give every drifted session this agent name, as when a deployment
    /// swaps the model behind an agent (model-swap evaluation).
    #[arg(long, value_name = "AGENT")]
    pub rename_agent: Option<String>,
    /// Random arrival orders per input.
    #[arg(long, default_value_t = 20)]
    pub trials: usize,
    /// Seed of the first order.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Seconds of event time without a step after which a session closes.
    #[arg(long, default_value_t = 300)]
    pub idle_timeout_secs: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file (the tables still print).
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
    #[command(flatten)]
    pub input_args: InputArgs,
}

fn load_steps(paths: &[PathBuf], a: &InputArgs, bad: &mut usize) -> anyhow::Result<Vec<Step>> {
    let loaded = a.load(paths, &a.prices()?)?;
    *bad += loaded.errors.len();
    Ok(loaded.steps)
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.0}"))
}

/// The drifted-case table as Markdown.
pub fn case_table(cases: &[CaseReport]) -> String {
    let mut s = String::from(
        "| drift | sessions (changed) | detected | delay median / p90 (sessions) | first detector | in-session: detected, delay median / p90 (steps) |\n|---|---|---|---|---|---|\n",
    );
    for c in cases {
        let first = c
            .first_family
            .iter()
            .max_by_key(|(_, n)| **n)
            .map_or("-".to_string(), |(k, _)| k.clone());
        let ins = c.in_session.as_ref().map_or("-".to_string(), |i| {
            format!(
                "{:.0}% of {}, {} / {}",
                100.0 * i.detection_rate,
                i.sessions,
                fmt_opt(i.delay_steps_median),
                fmt_opt(i.delay_steps_p90)
            )
        });
        s.push_str(&format!(
            "| {} | {} ({}) | {}/{} ({:.0}%) | {} / {} | {} | {} |\n",
            c.case,
            c.scored_sessions,
            c.changed_sessions,
            c.detected,
            c.trials,
            100.0 * c.detection_rate,
            fmt_opt(c.delay_sessions_median),
            fmt_opt(c.delay_sessions_p90),
            first,
            ins
        ));
    }
    for c in cases.iter().filter(|c| !c.by_claim_kind.is_empty()) {
        s.push_str(&format!(
            "\n{}: outputs flagged at the altered claim, by its kind:\n\n| claim kind | altered | flagged |\n|---|---|---|\n",
            c.case
        ));
        for (k, d) in &c.by_claim_kind {
            s.push_str(&format!("| {k} | {} | {} |\n", d.altered, d.detected));
        }
    }
    s
}

/// The in-control table as Markdown.
pub fn in_control_table(r: &EvalReport) -> String {
    let ic = &r.in_control;
    let mut s = format!(
        "In-control: {} sessions × {} orders, {} events: {:.2} per 1,000 sessions (budget {:.2}; 95% upper bound {:.2}); {:.0}% of orders had an alarm.\n\n| detector family | events | per 1,000 sessions |\n|---|---|---|\n",
        ic.sessions,
        ic.passes,
        ic.events,
        ic.per_1000,
        ic.budget_per_1000,
        ic.upper95_per_1000,
        100.0 * ic.passes_with_alarm
    );
    for (k, f) in &ic.by_family {
        s.push_str(&format!("| {k} | {} | {:.2} |\n", f.events, f.per_1000));
    }
    s.push_str(&format!(
        "\nGrounding (outside the budget): {} of {} unaltered sessions flagged with a contradiction ({:.2}%).\n",
        ic.grounding_flagged_sessions,
        ic.sessions,
        100.0 * ic.grounding_flag_rate
    ));
    s
}

fn case_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    Ok(input::expand(paths)?)
}

/// Runs `eval`.
pub fn run(a: EvalArgs) -> anyhow::Result<ExitCode> {
    let baseline = Arc::new(load(&a.baseline)?);
    let prices = a.input_args.prices()?;
    anyhow::ensure!(a.trials >= 1, "--trials must be at least 1");
    let opts = EvalOptions {
        trials: a.trials,
        seed: a.seed,
        idle_timeout_ms: (a.idle_timeout_secs * 1000) as i64,
        ..EvalOptions::default()
    };
    let mut bad = 0;
    let ic = load_steps(&a.in_control, &a.input_args, &mut bad)?;
    anyhow::ensure!(!ic.is_empty(), "no in-control steps");
    let mut report = EvalReport {
        arl0: baseline.meta.config.arl0,
        in_control: in_control(&baseline, &prices, &ic, &opts)?,
        cases: Vec::new(),
    };
    for f in case_files(&a.drifted)? {
        let mut steps = load_steps(std::slice::from_ref(&f), &a.input_args, &mut bad)?;
        if let Some(agent) = &a.rename_agent {
            for s in &mut steps {
                s.agent = agent.clone();
            }
        }
        let label = case_label(&steps, &stem(&f));
        report.cases.push(drifted(
            &baseline,
            &prices,
            &steps,
            &label,
            &report.in_control.in_session_alarms,
            &opts,
        )?);
    }
    if let Some(p) = &a.json_out {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", in_control_table(&report));
        if !report.cases.is_empty() {
            println!("{}", case_table(&report.cases));
        }
    }
    Ok(if bad == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map_or_else(|| p.display().to_string(), |s| s.to_string_lossy().into_owned())
}
