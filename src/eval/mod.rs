//! How often does it cry wolf, and how fast does it catch a change? Scores
//! in-control and drifted sessions through the same scorer as the service,
//! over several random arrival orders, and summarises false alarms per
//! 1,000 sessions, detection rates and detection delays. Pure.

use crate::baseline::types::Baseline;
use crate::detect::DriftEvent;
use crate::engine::replay::{replay_steps, shuffle_sessions};
use crate::engine::{EngineError, Scorer};
use crate::inject::{CONTRADICTION_ATTR, DRIFT_ATTR, INJECTED_ATTR};
use crate::model::{PriceTable, Step};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// Evaluation settings.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Random arrival orders per input.
    pub trials: usize,
    /// Seed of the first order.
    pub seed: u64,
    /// Idle timeout of the scorer, ms.
    pub idle_timeout_ms: i64,
    /// Worker threads.
    pub threads: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            trials: 20,
            seed: 1,
            idle_timeout_ms: 300_000,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// Events of one detector family.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FamilyRate {
    /// Events over all passes.
    pub events: u64,
    /// Per 1,000 scored sessions.
    pub per_1000: f64,
}

/// False alarms on in-control sessions.
#[derive(Clone, Debug, Default, Serialize)]
pub struct InControlReport {
    /// Distinct sessions scored per pass.
    pub sessions: u64,
    /// Passes (random arrival orders).
    pub passes: usize,
    /// Events over all passes.
    pub events: u64,
    /// Events per 1,000 scored sessions.
    pub per_1000: f64,
    /// The configured budget: 1,000 / arl0.
    pub budget_per_1000: f64,
    /// One-sided 95% Poisson upper bound of the rate per 1,000, counting
    /// only one pass's worth of distinct sessions (passes reuse sessions).
    pub upper95_per_1000: f64,
    /// Per detector family.
    pub by_family: BTreeMap<String, FamilyRate>,
    /// Per detector id (events over all passes).
    pub by_detector: BTreeMap<String, u64>,
    /// Share of passes with at least one event (compare with detection rates).
    pub passes_with_alarm: f64,
    /// Median position of the first false alarm in passes that had one.
    pub first_alarm_median: Option<f64>,
    /// Sessions a grounding event flagged (one pass: flags do not depend on
    /// arrival order). Grounding events are findings outside the alarm
    /// budget, so they are counted here and not in `events`.
    pub grounding_flagged_sessions: u64,
    /// grounding_flagged_sessions / sessions: the false-flag rate when the input is unaltered.
    pub grounding_flag_rate: f64,
    /// In-session alarms (session id, detector): they do not depend on
    /// arrival order, so a drifted copy of such a session raising the same
    /// alarm is not a detection of the drift.
    #[serde(skip)]
    pub in_session_alarms: HashSet<(String, String)>,
}

/// Detection by an in-session detector, in steps after the injection.
#[derive(Clone, Debug, Default, Serialize)]
pub struct InSessionReport {
    /// Sessions with injected steps.
    pub sessions: u64,
    /// Of which an in-session detector flagged at or after the first injected step.
    pub detected: u64,
    /// detected / sessions.
    pub detection_rate: f64,
    /// Median steps from the first injected step to the event (1 = at it).
    pub delay_steps_median: Option<f64>,
    /// 90th percentile of the same.
    pub delay_steps_p90: Option<f64>,
}

/// Detection of one drifted input.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CaseReport {
    /// Label: the `agentdrift.drift` attribute (`kind:magnitude`) or the file name.
    pub case: String,
    /// Sessions in the input.
    pub sessions: u64,
    /// Sessions scored (of a segment the baseline has).
    pub scored_sessions: u64,
    /// Sessions carrying injected steps.
    pub changed_sessions: u64,
    /// Trials (random arrival orders).
    pub trials: usize,
    /// Trials with at least one event.
    pub detected: usize,
    /// detected / trials.
    pub detection_rate: f64,
    /// Median sessions until the first event, over detected trials.
    pub delay_sessions_median: Option<f64>,
    /// 90th percentile of the same.
    pub delay_sessions_p90: Option<f64>,
    /// Family of the first event → trials.
    pub first_family: BTreeMap<String, usize>,
    /// Detector id of the first event → trials.
    pub first_detector: BTreeMap<String, usize>,
    /// Share of trials in which each family fired.
    pub fired: BTreeMap<String, f64>,
    /// In-session detection (where any in-session detector fired).
    pub in_session: Option<InSessionReport>,
    /// Contradiction drifts: per kind of altered claim, outputs altered and
    /// those a grounding event flagged at the altered step.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub by_claim_kind: BTreeMap<String, ClaimKindDetection>,
}

/// Altered outputs of one claim kind and how many a grounding event flagged.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClaimKindDetection {
    /// Outputs whose claim of this kind was altered.
    pub altered: u64,
    /// Of which flagged at that step.
    pub detected: u64,
}

/// The whole evaluation.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EvalReport {
    /// The baseline's budget, in-control sessions per false event per segment.
    pub arl0: f64,
    /// False alarms.
    pub in_control: InControlReport,
    /// One per drifted input.
    pub cases: Vec<CaseReport>,
}

/// Nearest-rank quantile of unsorted values.
pub fn quantile(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p * s.len() as f64).ceil() as usize).clamp(1, s.len());
    Some(s[rank - 1])
}

/// One trial: events and the order sessions arrived in.
struct Trial {
    events: Vec<DriftEvent>,
    position: HashMap<String, usize>,
    scored: u64,
}

fn run_trials(
    baseline: &Arc<Baseline>,
    prices: &PriceTable,
    steps: &[Step],
    opts: &EvalOptions,
) -> Result<Vec<Trial>, EngineError> {
    // Fail early (and once) if the baseline cannot build a scorer.
    Scorer::new(baseline.clone(), prices.clone(), opts.idle_timeout_ms)?;
    let one = |t: usize| -> Trial {
        let shuffled = shuffle_sessions(steps.to_vec(), opts.seed.wrapping_add(t as u64));
        let mut position = HashMap::new();
        for s in &shuffled {
            let n = position.len();
            position.entry(s.session_id.clone()).or_insert(n + 1);
        }
        let mut scorer = Scorer::new(baseline.clone(), prices.clone(), opts.idle_timeout_ms).expect("checked above");
        let r = replay_steps(&mut scorer, shuffled);
        let scored = r.segments.values().map(|s| s.sessions).sum();
        Trial {
            events: r.events,
            position,
            scored,
        }
    };
    let threads = opts.threads.clamp(1, opts.trials.max(1));
    let mut out: Vec<Option<Trial>> = (0..opts.trials).map(|_| None).collect();
    let size = opts.trials.div_ceil(threads).max(1);
    std::thread::scope(|sc| {
        for (c, chunk) in out.chunks_mut(size).enumerate() {
            let one = &one;
            sc.spawn(move || {
                for (i, slot) in chunk.iter_mut().enumerate() {
                    *slot = Some(one(c * size + i));
                }
            });
        }
    });
    Ok(out.into_iter().map(|t| t.expect("every trial ran")).collect())
}

/// The first event of a trial and its position; grounding findings count
/// when `grounding` (a drifted input: they detect it), not in-control (they
/// are outside the budget).
fn first_event(t: &Trial, grounding: bool) -> Option<(&DriftEvent, usize)> {
    t.events
        .iter()
        .filter(|e| grounding || e.kind != GROUNDING)
        .map(|e| (e, t.position.get(&e.session_id).copied().unwrap_or(usize::MAX)))
        .min_by_key(|(_, p)| *p)
}

/// The family of grounding events (findings about one session, outside the alarm budget).
const GROUNDING: &str = "grounding";

/// Scores the in-control input `trials` times in random orders.
pub fn in_control(
    baseline: &Arc<Baseline>,
    prices: &PriceTable,
    steps: &[Step],
    opts: &EvalOptions,
) -> Result<InControlReport, EngineError> {
    let trials = run_trials(baseline, prices, steps, opts)?;
    let arl0 = baseline.meta.config.arl0;
    let mut r = InControlReport {
        sessions: trials.first().map_or(0, |t| t.scored),
        passes: trials.len(),
        budget_per_1000: 1000.0 / arl0,
        ..InControlReport::default()
    };
    let scorings: u64 = trials.iter().map(|t| t.scored).sum();
    let mut firsts = Vec::new();
    if let Some(t) = trials.first() {
        let flagged: HashSet<&str> = t
            .events
            .iter()
            .filter(|e| e.kind == GROUNDING)
            .map(|e| e.session_id.as_str())
            .collect();
        r.grounding_flagged_sessions = flagged.len() as u64;
        r.grounding_flag_rate = flagged.len() as f64 / r.sessions.max(1) as f64;
    }
    for t in &trials {
        for e in &t.events {
            if e.seq.is_some() {
                r.in_session_alarms.insert((e.session_id.clone(), e.detector.clone()));
            }
            if e.kind == GROUNDING {
                continue; // counted apart, above
            }
            r.events += 1;
            r.by_family.entry(e.kind.clone()).or_default().events += 1;
            *r.by_detector
                .entry(format!("{} [{}]", e.detector, e.segment))
                .or_insert(0) += 1;
        }
        if let Some((_, p)) = first_event(t, false) {
            firsts.push(p as f64);
        }
    }
    let per = |n: u64| {
        if scorings == 0 {
            0.0
        } else {
            1000.0 * n as f64 / scorings as f64
        }
    };
    r.per_1000 = per(r.events);
    for f in r.by_family.values_mut() {
        f.per_1000 = per(f.events);
    }
    r.passes_with_alarm = firsts.len() as f64 / trials.len().max(1) as f64;
    r.first_alarm_median = quantile(&firsts, 0.5);
    // Mean events per pass, as a count over one pass's distinct sessions.
    let mean_count = r.events as f64 / trials.len().max(1) as f64;
    r.upper95_per_1000 = if r.sessions == 0 {
        f64::INFINITY
    } else {
        1000.0 * crate::stats::dist::chi2_quantile(0.95, 2.0 * (mean_count.ceil() + 1.0)) / 2.0 / r.sessions as f64
    };
    Ok(r)
}

/// Label of a drifted input: its `agentdrift.drift` attribute, else `fallback`.
pub fn case_label(steps: &[Step], fallback: &str) -> String {
    steps
        .iter()
        .find_map(|s| s.attributes.as_ref()?.get(DRIFT_ATTR)?.as_str().map(str::to_string))
        .unwrap_or_else(|| fallback.to_string())
}

/// Scores one drifted input `trials` times in random orders.
///
/// Detection counts every event except an in-session alarm that the
/// session's unchanged original raised too (`known`, from [`in_control`]):
/// that one is an in-control false alarm, already counted there. A drifted
/// session's original id is its id up to the last `~`.
pub fn drifted(
    baseline: &Arc<Baseline>,
    prices: &PriceTable,
    steps: &[Step],
    case: &str,
    known: &HashSet<(String, String)>,
    opts: &EvalOptions,
) -> Result<CaseReport, EngineError> {
    let mut trials = run_trials(baseline, prices, steps, opts)?;
    for t in &mut trials {
        t.events.retain(|e| {
            let original = e.session_id.rsplit_once('~').map_or(e.session_id.as_str(), |(o, _)| o);
            !(e.seq.is_some() && known.contains(&(original.to_string(), e.detector.clone())))
        });
    }
    // First injected seq per session.
    let mut injected: HashMap<&str, u64> = HashMap::new();
    let mut sessions: HashMap<&str, ()> = HashMap::new();
    for s in steps {
        sessions.insert(&s.session_id, ());
        let inj = s
            .attributes
            .as_ref()
            .and_then(|a| a.get(INJECTED_ATTR))
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        if inj {
            let e = injected.entry(&s.session_id).or_insert(s.seq);
            *e = (*e).min(s.seq);
        }
    }
    let mut r = CaseReport {
        case: case.to_string(),
        sessions: sessions.len() as u64,
        scored_sessions: trials.first().map_or(0, |t| t.scored),
        changed_sessions: injected.len() as u64,
        trials: trials.len(),
        ..CaseReport::default()
    };
    let mut delays = Vec::new();
    let mut fired: BTreeMap<String, usize> = BTreeMap::new();
    for t in &trials {
        if let Some((e, p)) = first_event(t, true) {
            delays.push(p as f64);
            *r.first_family.entry(e.kind.clone()).or_insert(0) += 1;
            *r.first_detector.entry(e.detector.clone()).or_insert(0) += 1;
        }
        let mut kinds: Vec<&str> = t.events.iter().map(|e| e.kind.as_str()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        for k in kinds {
            *fired.entry(k.to_string()).or_insert(0) += 1;
        }
    }
    r.detected = delays.len();
    r.detection_rate = r.detected as f64 / trials.len().max(1) as f64;
    r.delay_sessions_median = quantile(&delays, 0.5);
    r.delay_sessions_p90 = quantile(&delays, 0.9);
    r.fired = fired
        .into_iter()
        .map(|(k, n)| (k, n as f64 / trials.len().max(1) as f64))
        .collect();
    // In-session detectors do not depend on arrival order: use the first trial.
    if let Some(t) = trials.first() {
        let mut step_delays: HashMap<String, u64> = HashMap::new();
        let mut any = false;
        // A contradiction is detected by a grounding event, not by another
        // in-session detector that happens to fire on the same session.
        let contradiction = case.starts_with("contradiction");
        for e in t
            .events
            .iter()
            .filter(|e| e.seq.is_some() && (!contradiction || e.kind == GROUNDING))
        {
            any = true;
            let (Some(seq), Some(&first)) = (e.seq, injected.get(e.session_id.as_str())) else {
                continue;
            };
            if seq >= first {
                let d = seq - first + 1;
                let slot = step_delays.entry(e.session_id.clone()).or_insert(d);
                *slot = (*slot).min(d);
            }
        }
        let flagged: HashSet<(&str, u64)> = t
            .events
            .iter()
            .filter(|e| e.kind == GROUNDING)
            .filter_map(|e| Some((e.session_id.as_str(), e.seq?)))
            .collect();
        for s in steps {
            let Some(kind) = s
                .attributes
                .as_ref()
                .and_then(|a| a.get(CONTRADICTION_ATTR)?.get("kind")?.as_str())
            else {
                continue;
            };
            let k = r.by_claim_kind.entry(kind.to_string()).or_default();
            k.altered += 1;
            k.detected += u64::from(flagged.contains(&(s.session_id.as_str(), s.seq)));
        }
        if any && !injected.is_empty() {
            let d: Vec<f64> = step_delays.values().map(|&x| x as f64).collect();
            r.in_session = Some(InSessionReport {
                sessions: injected.len() as u64,
                detected: d.len() as u64,
                detection_rate: d.len() as f64 / injected.len() as f64,
                delay_steps_median: quantile(&d, 0.5),
                delay_steps_p90: quantile(&d, 0.9),
            });
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn nearest_rank_quantiles() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(quantile(&v, 0.5), Some(3.0));
        assert_eq!(quantile(&v, 0.9), Some(5.0));
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
