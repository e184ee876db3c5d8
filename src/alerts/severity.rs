//! How urgent an event is, from its detector and evidence: the one rule
//! every sink filters and labels by.

use crate::detect::event::DriftEvent;
use crate::spc::Direction;
use serde::{Deserialize, Serialize};

/// Severity of a drift event, lowest first (sinks keep those at or above a minimum).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look: a test just past its level, a chart just past its limit.
    Info,
    /// Clear evidence of a move.
    Warning,
    /// Overwhelming evidence, or harm users see directly at clear evidence.
    Critical,
}

impl Severity {
    /// Parses `info`, `warning` or `critical`.
    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }

    /// The lowercase name (the Alertmanager `severity` label).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    fn raised(self) -> Severity {
        match self {
            Severity::Info => Severity::Warning,
            _ => Severity::Critical,
        }
    }
}

/// p-value at or below which a test's event is `critical`.
pub const CRITICAL_P: f64 = 1e-6;
/// p-value at or below which a test's event is `warning`.
pub const WARNING_P: f64 = 1e-3;
/// Statistic over limit at or above which a chart's event is `critical`.
pub const CRITICAL_RATIO: f64 = 2.0;
/// Statistic over limit at or above which a chart's event is `warning`.
pub const WARNING_RATIO: f64 = 1.25;

/// Outcome rates whose rise users feel directly (their events go one level up).
const HARM_RATES: [&str; 3] = ["bernoulli:failure", "bernoulli:escalation", "bernoulli:tool_failure"];

/// The severity of an event (README "Alerts" documents the table):
/// a test (an event with a p-value: loops, Markov and tool-mix tests) by its
/// p-value; a chart (EWMA, CUSUM, Shewhart, T², Bernoulli CUSUM) by how far
/// its statistic went past its limit; a rising failure, escalation or tool
/// failure rate one level higher; an in-session loop that repeated twice its
/// limit or more is `critical` (it is burning tokens now); a grounding
/// contradiction is `warning` (a user was told what the sources contradict).
pub fn severity(e: &DriftEvent) -> Severity {
    if e.kind == "grounding" {
        return Severity::Warning;
    }
    let ratio = if e.limit.abs() > 0.0 && e.statistic.is_finite() {
        (e.statistic / e.limit).abs()
    } else {
        f64::INFINITY
    };
    let base = match e.p_value {
        Some(p) if p.is_finite() => {
            if p <= CRITICAL_P {
                Severity::Critical
            } else if p <= WARNING_P {
                Severity::Warning
            } else {
                Severity::Info
            }
        }
        _ => {
            if ratio >= CRITICAL_RATIO {
                Severity::Critical
            } else if ratio >= WARNING_RATIO {
                Severity::Warning
            } else {
                Severity::Info
            }
        }
    };
    if e.kind == "loop" && ratio >= CRITICAL_RATIO {
        return Severity::Critical;
    }
    if HARM_RATES.contains(&e.detector.as_str()) && e.direction == Some(Direction::Up) {
        return base.raised();
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SegmentKey;

    fn ev(
        kind: &str,
        detector: &str,
        statistic: f64,
        limit: f64,
        p: Option<f64>,
        dir: Option<Direction>,
    ) -> DriftEvent {
        DriftEvent {
            id: "e".into(),
            detector: detector.into(),
            kind: kind.into(),
            segment: SegmentKey::new("a", "t"),
            fallback_from: None,
            session_id: "s".into(),
            seq: None,
            ts: 0,
            statistic,
            limit,
            p_value: p,
            direction: dir,
            moved: vec![],
            exemplars: vec![],
            observations: vec![],
            message: String::new(),
            grounding: None,
        }
    }

    #[test]
    fn a_contradiction_is_a_warning_whatever_its_numbers() {
        assert_eq!(
            severity(&ev("grounding", "grounding:money", 1.0, 1.0, None, None)),
            Severity::Warning
        );
    }

    #[test]
    fn tests_go_by_p_value_at_the_documented_cut_points() {
        let t = |p| severity(&ev("markov", "markov", 30.0, 20.0, Some(p), None));
        assert_eq!(t(1e-6), Severity::Critical);
        assert_eq!(t(1.0000001e-6), Severity::Warning);
        assert_eq!(t(1e-3), Severity::Warning);
        assert_eq!(t(0.0011), Severity::Info);
    }

    #[test]
    fn charts_go_by_how_far_past_the_limit_in_either_direction() {
        let c = |s, l| severity(&ev("ewma", "ewma:output_tokens", s, l, None, None));
        assert_eq!(c(1.1, 1.0), Severity::Info);
        assert_eq!(c(1.25, 1.0), Severity::Warning);
        assert_eq!(
            c(-2.0, -1.0),
            Severity::Critical,
            "a downward chart: |statistic| / |limit|"
        );
        assert_eq!(
            c(f64::NAN, 1.0),
            Severity::Critical,
            "an unusable statistic is not played down"
        );
    }

    #[test]
    fn rising_harm_rates_go_one_level_up_and_long_loops_are_critical() {
        let r = |d, dir| severity(&ev("bernoulli", d, 1.3, 1.0, None, dir));
        assert_eq!(r("bernoulli:failure", Some(Direction::Up)), Severity::Critical);
        assert_eq!(r("bernoulli:failure", Some(Direction::Down)), Severity::Warning);
        assert_eq!(r("bernoulli:calibration", Some(Direction::Up)), Severity::Warning);
        assert_eq!(
            severity(&ev(
                "bernoulli",
                "bernoulli:escalation",
                1.0,
                1.0,
                None,
                Some(Direction::Up)
            )),
            Severity::Warning
        );
        let l = |s, p| severity(&ev("loop", "loop:same_call", s, 5.0, Some(p), Some(Direction::Up)));
        assert_eq!(l(10.0, 0.01), Severity::Critical, "twice the limit");
        assert_eq!(l(6.0, 0.01), Severity::Info);
        assert_eq!(l(6.0, 1e-4), Severity::Warning);
        assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Critical);
        assert_eq!(Severity::parse("warning"), Some(Severity::Warning));
        assert_eq!(Severity::parse("high"), None);
    }
}
