//! `agentdrift design`: choose a chart by its in-control ARL, or evaluate a
//! given limit, and print the ARL at each mean shift.

use crate::spc::bernoulli::BernoulliDesign;
use crate::spc::cusum::CusumDesign;
use crate::spc::ewma::{EwmaDesign, EwmaLimits};
use crate::spc::hotelling::{T2Case, T2Design, t2_ucl};
use crate::spc::shewhart::{Rules, ShewhartDesign};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// Default shifts, in standard deviations of the monitored variable.
const DEFAULT_SHIFTS: [f64; 8] = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0];

/// Output options shared by all charts.
#[derive(Debug, Clone, Args)]
pub struct DesignOut {
    /// Mean shifts (in σ of the monitored variable) to evaluate the ARL at.
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_SHIFTS)]
    pub shifts: Vec<f64>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Which chart to design.
#[derive(Debug, Subcommand)]
pub enum DesignChart {
    /// Two-sided EWMA on N(0,1) scores.
    Ewma {
        /// Smoothing constant λ (0 < λ ≤ 1).
        #[arg(long)]
        lambda: f64,
        /// Target in-control ARL (solve L).
        #[arg(long, conflicts_with = "l", required_unless_present = "l")]
        arl0: Option<f64>,
        /// Limit width L to evaluate instead of solving.
        #[arg(long = "L", id = "l")]
        l: Option<f64>,
        /// Exact time-varying limits instead of asymptotic ones.
        #[arg(long)]
        exact_limits: bool,
        /// Steiner fast initial response `f,a` (e.g. 0.5,0.3); implies exact limits.
        #[arg(long, value_delimiter = ',', num_args = 2)]
        fir: Option<Vec<f64>>,
        #[command(flatten)]
        out: DesignOut,
    },
    /// Two-sided tabular CUSUM on N(0,1) scores.
    Cusum {
        /// Reference value k.
        #[arg(long)]
        k: f64,
        /// Target in-control ARL (solve h).
        #[arg(long, conflicts_with = "h", required_unless_present = "h")]
        arl0: Option<f64>,
        /// Decision interval h to evaluate instead of solving.
        #[arg(long)]
        h: Option<f64>,
        /// Fast-initial-response head start as a fraction of h (e.g. 0.5).
        #[arg(long, default_value_t = 0.0)]
        head_start: f64,
        #[command(flatten)]
        out: DesignOut,
    },
    /// Shewhart individuals chart with Western Electric run rules.
    Shewhart {
        /// Run rules to enable, e.g. `1,2,3,4` (rule 1 is always on).
        #[arg(long, default_value = "1")]
        rules: String,
        /// Target in-control ARL (solve the limit; with rule 4, lengthen its run if needed).
        #[arg(long, conflicts_with = "limit")]
        arl0: Option<f64>,
        /// Rule-1 limit in σ to evaluate (zones at limit/3, 2·limit/3); default 3.
        #[arg(long)]
        limit: Option<f64>,
        #[command(flatten)]
        out: DesignOut,
    },
    /// Hotelling T² for individual observations.
    T2 {
        /// Dimension.
        #[arg(long)]
        p: u32,
        /// Reference observations the mean and covariance are estimated from (omit: known).
        #[arg(long)]
        m: Option<u32>,
        /// Phase: 2 (new observations, default) or 1 (retrospective).
        #[arg(long, default_value_t = 2)]
        phase: u8,
        /// Target in-control ARL (α = 1/ARL0 per point).
        #[arg(long, conflicts_with = "alpha", required_unless_present = "alpha")]
        arl0: Option<f64>,
        /// False-alarm probability per point.
        #[arg(long)]
        alpha: Option<f64>,
        #[command(flatten)]
        out: DesignOut,
    },
    /// Bernoulli CUSUM for a rate (failures, escalations, tool errors).
    Bernoulli {
        /// In-control rate.
        #[arg(long)]
        p0: f64,
        /// Rate to detect fastest.
        #[arg(long)]
        p1: f64,
        /// Target in-control ARL (smallest integer limit reaching it).
        #[arg(long)]
        arl0: f64,
        /// Rates to evaluate the ARL at (default: p0 and p1).
        #[arg(long, value_delimiter = ',')]
        rates: Vec<f64>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Computes the design document `{chart, params, limit, arl: [{shift, arl}]}`.
pub fn design(chart: &DesignChart) -> anyhow::Result<(Value, bool)> {
    let arls = |shifts: &[f64], f: &dyn Fn(f64) -> f64| -> Vec<Value> {
        shifts.iter().map(|s| json!({"shift": s, "arl": f(*s)})).collect()
    };
    Ok(match chart {
        DesignChart::Ewma {
            lambda,
            arl0,
            l,
            exact_limits,
            fir,
            out,
        } => {
            let limits = match fir.as_deref() {
                Some([f, a]) => EwmaLimits::Fir { f: *f, a: *a },
                Some(_) => anyhow::bail!("--fir takes two numbers: f,a"),
                None if *exact_limits => EwmaLimits::Exact,
                None => EwmaLimits::Asymptotic,
            };
            let d = match (arl0, l) {
                (Some(a), _) => EwmaDesign::for_arl0(*lambda, *a, limits)?,
                (None, Some(l)) => EwmaDesign::new(*lambda, *l, limits)?,
                (None, None) => anyhow::bail!("give --arl0 or --L"),
            };
            let limit_kind = match limits {
                EwmaLimits::Asymptotic => "asymptotic",
                EwmaLimits::Exact => "exact",
                EwmaLimits::Fir { .. } => "exact_fir",
            };
            (
                json!({
                    "chart": "ewma",
                    "params": {"lambda": d.lambda, "L": d.l, "limit_h": d.h(), "limits": limit_kind,
                               "fir": fir, "arl0_target": arl0},
                    "limit": d.l,
                    "arl": arls(&out.shifts, &|s| d.arl(s)),
                }),
                out.json,
            )
        }
        DesignChart::Cusum {
            k,
            arl0,
            h,
            head_start,
            out,
        } => {
            let d = match (arl0, h) {
                (Some(a), _) => CusumDesign::for_arl0(*k, *a, *head_start)?,
                (None, Some(h)) => CusumDesign::new(*k, *h, *head_start)?,
                (None, None) => anyhow::bail!("give --arl0 or --h"),
            };
            (
                json!({
                    "chart": "cusum",
                    "params": {"k": d.k, "h": d.h, "head_start": d.head_start, "arl0_target": arl0},
                    "limit": d.h,
                    "arl": arls(&out.shifts, &|s| d.arl(s)),
                }),
                out.json,
            )
        }
        DesignChart::Shewhart {
            rules,
            arl0,
            limit,
            out,
        } => {
            let rules = Rules::parse(rules)?;
            let d = match (arl0, limit) {
                (Some(a), _) => ShewhartDesign::for_arl0(rules, *a)?,
                (None, l) => ShewhartDesign::new(rules, l.unwrap_or(3.0))?,
            };
            (
                json!({
                    "chart": "shewhart",
                    "params": {"rules": d.rules.name(), "rule4_run": d.rules.run,
                               "zones": [d.c / 3.0, 2.0 * d.c / 3.0, d.c], "arl0_target": arl0},
                            "limit": d.c,
                    "arl": arls(&out.shifts, &|s| d.arl(s)),
                }),
                out.json,
            )
        }
        DesignChart::T2 {
            p,
            m,
            phase,
            arl0,
            alpha,
            out,
        } => {
            let case = match (m, phase) {
                (None, _) => T2Case::Known,
                (Some(m), 2) => T2Case::Phase2 { m: *m },
                (Some(m), 1) => T2Case::Phase1 { m: *m },
                (Some(_), other) => anyhow::bail!("--phase must be 1 or 2, got {other}"),
            };
            let alpha = match (arl0, alpha) {
                (Some(a), _) => 1.0 / a,
                (None, Some(a)) => *a,
                (None, None) => anyhow::bail!("give --arl0 or --alpha"),
            };
            let d = T2Design {
                p: *p,
                case,
                alpha,
                ucl: t2_ucl(*p, alpha, case)?,
            };
            let arl = if matches!(case, T2Case::Phase1 { .. }) {
                Vec::new()
            } else {
                arls(&out.shifts, &|s| d.arl(s))
            };
            (
                json!({
                    "chart": "t2",
                    "params": {"p": p, "m": m, "case": case, "alpha": alpha, "arl0_target": arl0},
                    "limit": d.ucl,
                    "arl": arl,
                }),
                out.json,
            )
        }
        DesignChart::Bernoulli {
            p0,
            p1,
            arl0,
            rates,
            json: as_json,
        } => {
            let d = BernoulliDesign::for_arl0(*p0, *p1, *arl0)?;
            let rates = if rates.is_empty() {
                vec![*p0, *p1]
            } else {
                rates.clone()
            };
            (
                json!({
                    "chart": "bernoulli",
                    "params": {"p0": d.p0, "p1": d.p1, "scale_m": d.m, "reference_a": d.a, "limit_int": d.h,
                               "gamma": d.a as f64 / d.m as f64, "arl0_target": arl0},
                    "limit": d.limit(),
                    "arl": rates.iter().map(|p| json!({"rate": p, "arl": d.arl(*p)})).collect::<Vec<_>>(),
                }),
                *as_json,
            )
        }
    })
}

/// Human-readable form of the design document.
pub fn render(doc: &Value) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "chart   {}", doc["chart"].as_str().unwrap_or("?"));
    if let Some(params) = doc["params"].as_object() {
        for (k, v) in params {
            if !v.is_null() {
                let _ = writeln!(s, "{k:<7} {}", fmt_value(v));
            }
        }
    }
    let _ = writeln!(s, "limit   {}", fmt_value(&doc["limit"]));
    let rows = doc["arl"].as_array().cloned().unwrap_or_default();
    if !rows.is_empty() {
        let key = if rows[0].get("rate").is_some() { "rate" } else { "shift" };
        let _ = writeln!(s, "\n{key:>8}  {:>14}", "ARL");
        for r in rows {
            let x = r[key].as_f64().unwrap_or(f64::NAN);
            let _ = writeln!(s, "{x:>8.3}  {:>14.4}", r["arl"].as_f64().unwrap_or(f64::NAN));
        }
    }
    s
}

fn fmt_value(v: &Value) -> String {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(x) if x.fract() != 0.0 => format!("{x:.6}"),
            _ => n.to_string(),
        },
        Value::String(t) => t.clone(),
        other => other.to_string(),
    }
}
