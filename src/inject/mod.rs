//! Drifted copies of real sessions: one documented transformation per kind
//! of drift, so detectors can be evaluated on realistic sessions whose
//! change is known. Pure: sessions in, sessions out, seeded.
//!
//! Every drifted session gets the id `<id>~<kind>` (so it never collides
//! with its original), its first step carries the attribute
//! `agentdrift.drift = "<kind>:<magnitude>"`, and every step the
//! transformation touched or inserted carries `agentdrift.injected = true`.

use crate::model::{ErrorClass, Outcome, Requestor, Session, Status, Step, StepKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

/// Attribute naming a drifted copy's kind and magnitude.
pub const DRIFT_ATTR: &str = "agentdrift.drift";
/// Attribute marking a step the transformation changed or inserted.
pub const INJECTED_ATTR: &str = "agentdrift.injected";
/// Attribute of the output a contradiction altered: `{kind, from, to}`.
pub const CONTRADICTION_ATTR: &str = "agentdrift.contradiction";

/// What kind of drift to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DriftKind {
    /// Repeat one tool call (with its LLM turn) mid-session.
    Loop,
    /// A segment's most used tool is replaced by another tool.
    ToolSwap,
    /// Longer LLM outputs.
    Verbosity,
    /// Input and output token inflation.
    Tokens,
    /// Apologetic and hedging phrasing.
    Tone,
    /// Agent tool calls fail more often.
    Errors,
    /// Fewer sessions succeed.
    Success,
    /// Everything takes longer.
    Latency,
    /// An output states a value its session's sources give differently.
    Contradiction,
}

/// Every kind, in documentation order.
pub const ALL_KINDS: [DriftKind; 9] = [
    DriftKind::Loop,
    DriftKind::ToolSwap,
    DriftKind::Verbosity,
    DriftKind::Tokens,
    DriftKind::Tone,
    DriftKind::Errors,
    DriftKind::Success,
    DriftKind::Latency,
    DriftKind::Contradiction,
];

impl DriftKind {
    /// The name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            DriftKind::Loop => "loop",
            DriftKind::ToolSwap => "tool-swap",
            DriftKind::Verbosity => "verbosity",
            DriftKind::Tokens => "tokens",
            DriftKind::Tone => "tone",
            DriftKind::Errors => "errors",
            DriftKind::Success => "success",
            DriftKind::Latency => "latency",
            DriftKind::Contradiction => "contradiction",
        }
    }

    /// The two magnitudes the evaluation uses (small, large).
    pub fn eval_magnitudes(self) -> [f64; 2] {
        match self {
            DriftKind::Loop => [5.0, 20.0],
            DriftKind::ToolSwap => [0.3, 1.0],
            DriftKind::Verbosity => [0.5, 2.0],
            DriftKind::Tokens => [0.25, 1.0],
            DriftKind::Tone => [0.3, 1.0],
            DriftKind::Errors => [0.1, 0.3],
            DriftKind::Success => [0.3, 0.8],
            DriftKind::Latency => [0.5, 2.0],
            DriftKind::Contradiction => [0.5, 1.0],
        }
    }

    /// What the magnitude means, for errors and help.
    pub fn magnitude_meaning(self) -> &'static str {
        match self {
            DriftKind::Loop => "extra repetitions of the call, an integer ≥ 1",
            DriftKind::ToolSwap
            | DriftKind::Tone
            | DriftKind::Errors
            | DriftKind::Success
            | DriftKind::Contradiction => "a probability in (0, 1]",
            DriftKind::Verbosity | DriftKind::Tokens | DriftKind::Latency => "a relative increase > 0 (1 = doubled)",
        }
    }

    fn check(self, m: f64) -> Result<(), InjectError> {
        let ok = m.is_finite()
            && match self {
                DriftKind::Loop => m >= 1.0 && m.fract() == 0.0 && m <= 1000.0,
                DriftKind::ToolSwap
                | DriftKind::Tone
                | DriftKind::Errors
                | DriftKind::Success
                | DriftKind::Contradiction => m > 0.0 && m <= 1.0,
                DriftKind::Verbosity | DriftKind::Tokens | DriftKind::Latency => m > 0.0 && m <= 100.0,
            };
        if ok {
            Ok(())
        } else {
            Err(InjectError::BadMagnitude {
                kind: self.as_str(),
                magnitude: m,
                expected: self.magnitude_meaning(),
            })
        }
    }
}

impl fmt::Display for DriftKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DriftKind {
    type Err = InjectError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL_KINDS
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| InjectError::UnknownKind(s.to_string()))
    }
}

/// Why a drift cannot be injected.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// Not one of the kinds.
    #[error(
        "unknown drift kind {0:?}: expected one of loop, tool-swap, verbosity, tokens, tone, errors, success, latency, contradiction"
    )]
    UnknownKind(String),
    /// Magnitude out of range for the kind.
    #[error("--magnitude {magnitude} is invalid for {kind}: expected {expected}")]
    BadMagnitude {
        /// Kind.
        kind: &'static str,
        /// Given magnitude.
        magnitude: f64,
        /// What it should be.
        expected: &'static str,
    },
    /// The input has nothing this kind could change (e.g. no token counts).
    #[error("drift {kind}: no session of the input has {what}, so nothing would change")]
    NothingToChange {
        /// Kind.
        kind: &'static str,
        /// What is missing.
        what: &'static str,
    },
}

/// A drifted copy and what changed.
#[derive(Debug, Default)]
pub struct Injected {
    /// All steps of the drifted sessions, session by session in `seq` order.
    pub steps: Vec<Step>,
    /// Sessions in the input.
    pub sessions: usize,
    /// Sessions the transformation changed.
    pub changed_sessions: usize,
    /// Steps changed or inserted.
    pub changed_steps: usize,
}

/// Phrases the tone drift prepends: each has apology and hedging markers.
const TONE_PHRASES: [&str; 4] = [
    "I'm sorry for the confusion, but I think this might be right.",
    "I apologize, I may be mistaken here.",
    "Sorry about that, it's possible that this is not quite right.",
    "My apologies, I believe this might work, but I'm not entirely sure.",
];

fn mark(step: &mut Step) {
    step.attributes
        .get_or_insert_with(Map::new)
        .insert(INJECTED_ATTR.into(), Value::Bool(true));
}

fn is_agent_tool(s: &Step) -> bool {
    s.kind == StepKind::Tool && s.requestor != Some(Requestor::User)
}

fn has_text(s: &Step) -> bool {
    s.kind == StepKind::Llm && s.text.as_deref().is_some_and(|t| !t.trim().is_empty())
}

/// Makes a drifted copy of `sessions`.
pub fn inject(sessions: Vec<Session>, kind: DriftKind, magnitude: f64, seed: u64) -> Result<Injected, InjectError> {
    kind.check(magnitude)?;
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6167_656e_7464_7269);
    let swaps = if kind == DriftKind::ToolSwap {
        tool_swaps(&sessions)
    } else {
        HashMap::new()
    };
    if !sessions.iter().flat_map(|s| &s.steps).any(|x| eligible(kind, x)) {
        return Err(InjectError::NothingToChange {
            kind: kind.as_str(),
            what: match kind {
                DriftKind::Loop => "an agent tool call that follows an LLM call",
                DriftKind::ToolSwap => "agent tool calls",
                DriftKind::Verbosity | DriftKind::Tone => "LLM output text",
                DriftKind::Tokens => "token counts",
                DriftKind::Errors => "successful agent tool calls",
                DriftKind::Success => "a successful outcome",
                DriftKind::Latency => "steps",
                DriftKind::Contradiction => "LLM output text",
            },
        });
    }
    let mut out = Injected {
        sessions: sessions.len(),
        ..Injected::default()
    };
    for mut s in sessions {
        let changed = match kind {
            DriftKind::Loop => inject_loop(&mut s.steps, magnitude as usize, &mut rng),
            DriftKind::ToolSwap => {
                let key = s.steps.first().map(|x| (x.agent.clone(), x.task_type.clone()));
                match key.and_then(|k| swaps.get(&k)) {
                    Some((from, to)) => each(
                        &mut s.steps,
                        |x| is_agent_tool(x) && x.tool.as_deref() == Some(from),
                        magnitude,
                        &mut rng,
                        |x| x.tool = Some(to.clone()),
                    ),
                    None => 0,
                }
            }
            DriftKind::Verbosity => each(&mut s.steps, has_text, 1.0, &mut rng, |x| {
                let t = x.text.take().unwrap_or_default();
                x.text = Some(lengthen(&t, 1.0 + magnitude));
                if let Some(o) = x.output_tokens.as_mut() {
                    *o = (*o as f64 * (1.0 + magnitude)).round() as u64;
                }
            }),
            DriftKind::Tokens => each(
                &mut s.steps,
                |x| x.input_tokens.is_some() || x.output_tokens.is_some(),
                1.0,
                &mut rng,
                |x| {
                    let f = 1.0 + magnitude;
                    x.input_tokens = x.input_tokens.map(|t| (t as f64 * f).round() as u64);
                    x.output_tokens = x.output_tokens.map(|t| (t as f64 * f).round() as u64);
                    x.cost_usd = x.cost_usd.map(|c| c * f);
                },
            ),
            DriftKind::Tone => {
                let mut pick = StdRng::seed_from_u64(rng.random());
                each(&mut s.steps, has_text, magnitude, &mut rng, |x| {
                    let p = TONE_PHRASES[pick.random_range(0..TONE_PHRASES.len())];
                    x.text = Some(format!("{p} {}", x.text.as_deref().unwrap_or_default()));
                })
            }
            DriftKind::Errors => each(
                &mut s.steps,
                |x| is_agent_tool(x) && x.status != Some(Status::Error),
                magnitude,
                &mut rng,
                |x| {
                    let msg = "Error: service unavailable (injected)";
                    x.status = Some(Status::Error);
                    x.error_class = Some(ErrorClass::ToolApiError);
                    x.error = Some(msg.into());
                    x.result_chars = Some(msg.len() as u64);
                },
            ),
            DriftKind::Success => each(
                &mut s.steps,
                |x| x.kind == StepKind::End && x.outcome == Some(Outcome::Success),
                magnitude,
                &mut rng,
                |x| {
                    x.outcome = Some(Outcome::Failure);
                    x.reward = x.reward.map(|_| 0.0);
                },
            ),
            DriftKind::Latency => stretch(&mut s.steps, 1.0 + magnitude),
            DriftKind::Contradiction => {
                if magnitude >= 1.0 || rng.random::<f64>() < magnitude {
                    contradict(&mut s.steps)
                } else {
                    0
                }
            }
        };
        if changed > 0 {
            out.changed_sessions += 1;
            out.changed_steps += changed;
        }
        let new_id = format!("{}~{}", s.id, kind.as_str());
        for (i, st) in s.steps.iter_mut().enumerate() {
            st.session_id = new_id.clone();
            if i == 0 {
                st.attributes.get_or_insert_with(Map::new).insert(
                    DRIFT_ATTR.into(),
                    Value::String(format!("{}:{}", kind.as_str(), magnitude)),
                );
            }
        }
        out.steps.extend(s.steps);
    }
    Ok(out)
}

/// Seeded split of whole sessions by their id (independent of input order):
/// returns (reference, held out), about `holdout_fraction` of them held out.
pub fn split_sessions(sessions: Vec<Session>, holdout_fraction: f64, seed: u64) -> (Vec<Session>, Vec<Session>) {
    sessions
        .into_iter()
        .partition(|s| crate::stats::pit::pit_uniform(&s.id, "split", seed) >= holdout_fraction)
}

/// Whether a step is one the kind could change.
fn eligible(kind: DriftKind, x: &Step) -> bool {
    match kind {
        DriftKind::Loop | DriftKind::ToolSwap => is_agent_tool(x),
        DriftKind::Errors => is_agent_tool(x) && x.status != Some(Status::Error),
        DriftKind::Verbosity | DriftKind::Tone | DriftKind::Contradiction => has_text(x),
        DriftKind::Tokens => x.input_tokens.is_some() || x.output_tokens.is_some(),
        DriftKind::Success => x.kind == StepKind::End && x.outcome == Some(Outcome::Success),
        DriftKind::Latency => true,
    }
}

/// Applies `f` to each step matching `pred` with probability `p`; returns how many changed.
fn each(
    steps: &mut [Step],
    pred: impl Fn(&Step) -> bool,
    p: f64,
    rng: &mut StdRng,
    mut f: impl FnMut(&mut Step),
) -> usize {
    let mut n = 0;
    for s in steps.iter_mut() {
        if pred(s) && (p >= 1.0 || rng.random::<f64>() < p) {
            f(s);
            mark(s);
            n += 1;
        }
    }
    n
}

/// Per (agent, task type): the most used agent tool and its replacement,
/// the least used other tool of the segment (or `<tool>_v2` if it has one tool).
fn tool_swaps(sessions: &[Session]) -> HashMap<(String, Option<String>), (String, String)> {
    let mut counts: BTreeMap<(String, Option<String>), BTreeMap<String, u64>> = BTreeMap::new();
    for s in sessions {
        for x in s.steps.iter().filter(|x| is_agent_tool(x)) {
            if let Some(t) = &x.tool {
                *counts
                    .entry((x.agent.clone(), x.task_type.clone()))
                    .or_default()
                    .entry(t.clone())
                    .or_insert(0) += 1;
            }
        }
    }
    counts
        .into_iter()
        .filter_map(|(k, c)| {
            let (top, _) = c.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))?;
            let to = c
                .iter()
                .filter(|(t, _)| *t != top)
                .min_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(b.0)))
                .map_or_else(|| format!("{top}_v2"), |(t, _)| t.clone());
            Some((k, (top.clone(), to)))
        })
        .collect()
}

/// Repeats the text until it is `factor` times as long (at a char boundary).
fn lengthen(text: &str, factor: f64) -> String {
    let target = (text.chars().count() as f64 * factor).round() as usize;
    let mut out = String::with_capacity(text.len() * (factor.ceil() as usize + 1));
    out.push_str(text);
    let mut chars = text.chars().cycle();
    if out.chars().count() < target {
        out.push(' ');
    }
    let mut n = out.chars().count();
    while n < target {
        out.push(chars.next().unwrap_or(' '));
        n += 1;
    }
    out
}

/// Alters the last claim of the last output that has one an earlier source
/// of the session supports (the shipped grounding rules say which): an
/// identifier gets one character changed, an amount, quantity or date moves
/// (+10% and at least 1, +1, the next day), a time moves an hour, an e-mail
/// or phone number one character. Returns 1 if it changed a step.
fn contradict(steps: &mut [Step]) -> usize {
    use crate::features::grounding::{SupportedClaim, supported_claims};
    let claims = supported_claims(crate::features::Grounding::builtin(), steps);
    let Some(SupportedClaim { step, range, kind }) = claims.last().cloned() else {
        return 0;
    };
    let Some(text) = steps[step].text.clone() else { return 0 };
    let Some(altered) = alter(kind, &text[range.clone()]) else {
        return 0;
    };
    let s = &mut steps[step];
    s.text = Some(format!("{}{altered}{}", &text[..range.start], &text[range.end..]));
    s.attributes.get_or_insert_with(Map::new).insert(
        CONTRADICTION_ATTR.into(),
        serde_json::json!({"kind": kind.as_str(), "from": &text[range], "to": altered}),
    );
    mark(s);
    1
}

/// One claim, changed so its value differs (its form kept).
fn alter(kind: crate::features::ClaimKind, claim: &str) -> Option<String> {
    use crate::features::ClaimKind as K;
    let replace = |(a, b): (usize, usize), with: String| format!("{}{with}{}", &claim[..a], &claim[b..]);
    match kind {
        K::Money | K::Quantity => {
            let b = claim.as_bytes();
            let start = b.iter().position(u8::is_ascii_digit)?;
            let end = start
                + b[start..]
                    .iter()
                    .take_while(|c| c.is_ascii_digit() || **c == b',')
                    .count();
            let n: u64 = claim[start..end].replace(',', "").parse().ok()?;
            let step = if kind == K::Money { (n / 10).max(1) } else { 1 };
            Some(replace((start, end), (n + step).to_string()))
        }
        K::Date | K::Time => {
            // The day, or the hour: ISO dates' last digit run, m/d/y's second,
            // otherwise the first; within range, never the same value.
            let runs: Vec<(usize, usize)> = {
                let b = claim.as_bytes();
                let mut v = Vec::new();
                let mut i = 0;
                while i < b.len() {
                    if b[i].is_ascii_digit() {
                        let j = i + b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
                        v.push((i, j));
                        i = j;
                    } else {
                        i += 1;
                    }
                }
                v
            };
            let (a, b) = match kind {
                K::Time => *runs.first()?,
                _ if claim.contains('/') => *runs.get(1)?,
                _ if claim.contains('-') => *runs.last()?,
                _ => *runs.first()?,
            };
            let n: u32 = claim[a..b].parse().ok()?;
            let (lo, hi) = if kind == K::Time { (0, 23) } else { (1, 28) };
            let next = if n >= hi { lo } else { n + 1 };
            let width = b - a;
            Some(replace((a, b), format!("{next:0width$}")))
        }
        K::Id | K::Email | K::Phone => {
            // One character: the last digit, else the last letter, moved by one.
            let b = claim.as_bytes();
            let i = b
                .iter()
                .rposition(u8::is_ascii_digit)
                .or_else(|| b.iter().rposition(u8::is_ascii_alphabetic))?;
            let c = b[i];
            let next = match c {
                b'9' => b'0',
                b'z' => b'a',
                b'Z' => b'A',
                _ => c + 1,
            };
            Some(replace((i, i + 1), (next as char).to_string()))
        }
        K::Name | K::Status => None,
    }
}

/// Stretches every time gap of the session (and each latency) by `factor`.
fn stretch(steps: &mut [Step], factor: f64) -> usize {
    let Some(t0) = steps.first().map(|s| s.ts) else {
        return 0;
    };
    let mut n = 0;
    for s in steps.iter_mut() {
        let ts = t0 + ((s.ts - t0) as f64 * factor).round() as i64;
        let lat = s.latency_ms.map(|l| l * factor);
        if ts != s.ts || lat != s.latency_ms {
            s.ts = ts;
            s.latency_ms = lat;
            mark(s);
            n += 1;
        }
    }
    n
}

/// Inserts `reps` copies of one (LLM turn, agent tool call) pair right after
/// it, at a random eligible point of the session; later steps shift in time
/// and `seq`. Returns the number of steps inserted.
fn inject_loop(steps: &mut Vec<Step>, reps: usize, rng: &mut StdRng) -> usize {
    let candidates: Vec<usize> = (1..steps.len())
        .filter(|&i| is_agent_tool(&steps[i]) && steps[i - 1].kind == StepKind::Llm)
        .collect();
    if candidates.is_empty() {
        return 0;
    }
    let i = candidates[rng.random_range(0..candidates.len())];
    let delta = (steps[i].ts - steps[i - 1].ts).max(1);
    let (llm, tool) = (steps[i - 1].clone(), steps[i].clone());
    let mut inserted = Vec::with_capacity(2 * reps);
    for k in 1..=reps {
        for (j, base) in [&llm, &tool].into_iter().enumerate() {
            let mut c = base.clone();
            c.ts = tool.ts + (2 * k as i64 - 1 + j as i64) * delta;
            c.span_id = c.span_id.map(|s| format!("{s}~r{k}"));
            c.latency_ms = base.latency_ms;
            mark(&mut c);
            inserted.push(c);
        }
    }
    let shift = 2 * reps as i64 * delta;
    for s in steps[i + 1..].iter_mut() {
        s.ts += shift;
    }
    let n = inserted.len();
    steps.splice(i + 1..i + 1, inserted);
    for (k, s) in steps.iter_mut().enumerate() {
        s.seq = k as u64;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::group_sessions;

    fn session() -> Vec<Step> {
        let line = |s: &str| serde_json::from_str::<Step>(s).unwrap();
        vec![
            line(r#"{"session_id":"s","seq":0,"ts":0,"kind":"user","agent":"a","task_type":"t","text":"hi"}"#),
            line(
                r#"{"session_id":"s","seq":1,"ts":1000,"kind":"llm","agent":"a","task_type":"t","text":"Let me look.","input_tokens":100,"output_tokens":10,"cost_usd":0.001}"#,
            ),
            line(
                r#"{"session_id":"s","seq":2,"ts":2000,"kind":"tool","agent":"a","task_type":"t","tool":"find","args":{"q":1},"status":"ok"}"#,
            ),
            line(
                r#"{"session_id":"s","seq":3,"ts":3000,"kind":"llm","agent":"a","task_type":"t","text":"Found it.","input_tokens":200,"output_tokens":20}"#,
            ),
            line(
                r#"{"session_id":"s","seq":4,"ts":4000,"kind":"tool","agent":"a","task_type":"t","tool":"book","status":"ok"}"#,
            ),
            line(
                r#"{"session_id":"s","seq":5,"ts":5000,"kind":"end","agent":"a","task_type":"t","outcome":"success","reward":1.0}"#,
            ),
        ]
    }

    fn run(kind: DriftKind, m: f64) -> Injected {
        inject(group_sessions(session()).sessions, kind, m, 7).unwrap()
    }

    #[test]
    fn loop_inserts_repeated_pairs_and_renumbers() {
        let r = run(DriftKind::Loop, 3.0);
        assert_eq!(r.steps.len(), 12);
        assert_eq!(r.changed_steps, 6);
        assert!(r.steps.iter().enumerate().all(|(i, s)| s.seq == i as u64));
        assert!(r.steps.windows(2).all(|w| w[0].ts < w[1].ts), "time stays increasing");
        let tools: Vec<_> = r.steps.iter().filter_map(|s| s.tool.clone()).collect();
        assert!(tools == ["find", "find", "find", "find", "book"] || tools == ["find", "book", "book", "book", "book"]);
        assert_eq!(r.steps[0].session_id, "s~loop");
        assert_eq!(r.steps[0].attributes.as_ref().unwrap()[DRIFT_ATTR], "loop:3");
    }

    #[test]
    fn deterministic_transformations() {
        let v = run(DriftKind::Verbosity, 1.0);
        assert_eq!(v.steps[1].text.as_deref().unwrap().chars().count(), 24);
        assert_eq!(v.steps[1].output_tokens, Some(20));
        let t = run(DriftKind::Tokens, 0.5);
        assert_eq!(
            (t.steps[1].input_tokens, t.steps[1].output_tokens),
            (Some(150), Some(15))
        );
        assert!((t.steps[1].cost_usd.unwrap() - 0.0015).abs() < 1e-12);
        assert_eq!(t.steps[2].input_tokens, None, "absent stays absent");
        let l = run(DriftKind::Latency, 1.0);
        assert_eq!(
            l.steps.iter().map(|s| s.ts).collect::<Vec<_>>(),
            [0, 2000, 4000, 6000, 8000, 10000]
        );
        let s = run(DriftKind::Success, 1.0);
        assert_eq!(
            (s.steps[5].outcome, s.steps[5].reward),
            (Some(Outcome::Failure), Some(0.0))
        );
        let e = run(DriftKind::Errors, 1.0);
        assert_eq!(e.changed_steps, 2);
        assert!(
            e.steps
                .iter()
                .filter(|x| x.kind == StepKind::Tool)
                .all(|x| x.status == Some(Status::Error))
        );
        let sw = run(DriftKind::ToolSwap, 1.0);
        // Tie on counts: the alphabetically first tool is "top", swapped to the other.
        assert_eq!(
            sw.steps.iter().filter_map(|s| s.tool.as_deref()).collect::<Vec<_>>(),
            ["find", "find"]
        );
        let tone = run(DriftKind::Tone, 1.0);
        assert!(
            TONE_PHRASES
                .iter()
                .any(|p| tone.steps[1].text.as_deref().unwrap().starts_with(p))
        );
    }

    #[test]
    fn tone_phrases_hit_the_lexicons() {
        let lex = crate::features::text::Lexicons::builtin();
        for p in TONE_PHRASES {
            let sc = lex.score(p);
            assert!(sc.lexicon[0] > 0 && sc.lexicon[3] > 0, "{p}: {sc:?}");
        }
    }

    #[test]
    fn bad_magnitudes_and_kinds_are_errors() {
        let s = || group_sessions(session()).sessions;
        assert!(inject(s(), DriftKind::Loop, 1.5, 0).is_err());
        assert!(inject(s(), DriftKind::Errors, 1.5, 0).is_err());
        assert!(inject(s(), DriftKind::Tokens, f64::NAN, 0).is_err());
        assert!(
            "looping"
                .parse::<DriftKind>()
                .unwrap_err()
                .to_string()
                .contains("tool-swap")
        );
        let no_tokens: Vec<Step> = session()
            .into_iter()
            .map(|mut x| {
                x.input_tokens = None;
                x.output_tokens = None;
                x
            })
            .collect();
        let e = inject(group_sessions(no_tokens).sessions, DriftKind::Tokens, 1.0, 0).unwrap_err();
        assert!(e.to_string().contains("token counts"), "{e}");
    }
}
