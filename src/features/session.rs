//! Per-session features, computed by one streaming accumulator so that
//! training (batch) and live scoring (one step at a time) share the same
//! definitions.

use super::Rules;
use super::grounding::{GroundingObs, GroundingTracker};
use super::sequence::{LoopObs, LoopTracker, MAX_CYCLE, REASON};
use super::state::StateTracker;
use super::text::{CONFIDENCE, N_LEXICONS, TextScores};
use crate::model::{ErrorClass, MemoryOp, Outcome, Session, Status, Step, StepKind};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

macro_rules! features {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal,)*) => {
        /// A numeric per-session feature. Names are stable: they appear in
        /// baselines, events and reports.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Feature { $($(#[doc = $doc])* $variant,)* }

        impl Feature {
            /// Every feature, in index order.
            pub const ALL: &'static [Feature] = &[$(Feature::$variant,)*];

            /// The stable name.
            pub fn name(self) -> &'static str {
                match self { $(Feature::$variant => $name,)* }
            }

            /// Parses a name.
            pub fn from_name(s: &str) -> Option<Feature> {
                match s { $($name => Some(Feature::$variant),)* _ => None }
            }
        }
    };
}

features! {
    /// Steps other than the end step.
    Steps = "steps",
    /// Model calls.
    LlmCalls = "llm_calls",
    /// Tool calls the agent made (user-run device tools excluded).
    ToolCalls = "tool_calls",
    /// User messages.
    UserTurns = "user_turns",
    /// Different tools the agent used.
    DistinctTools = "distinct_tools",
    /// tool calls / (model calls + tool calls).
    ToolCallRatio = "tool_call_ratio",
    /// model calls / steps.
    LlmDensity = "llm_density",
    /// Deepest span (absent without span information).
    MaxDepth = "max_depth",
    /// Longest run of consecutive model calls with no other step between.
    ReasoningDepth = "reasoning_depth",
    /// Prompt tokens over the session (absent if no call reported tokens).
    InputTokens = "input_tokens",
    /// Completion tokens over the session.
    OutputTokens = "output_tokens",
    /// (input + output tokens) / steps.
    TokensPerStep = "tokens_per_step",
    /// Cost in USD (given or computed).
    CostUsd = "cost_usd",
    /// Last step time − first step time, ms.
    DurationMs = "duration_ms",
    /// Mean step latency where steps report one, ms.
    LatencyMs = "latency_ms",
    /// Share of agent tool calls that worked.
    ToolSuccessRatio = "tool_success_ratio",
    /// Agent tool calls that failed.
    ToolErrors = "tool_errors",
    /// Largest share of its model's context window one call used (prompt + completion or reserved tokens).
    ContextUtilisation = "context_utilisation",
    /// Mean characters per model output with text.
    OutputChars = "output_chars",
    /// Mean completion tokens per model call that reports them.
    OutputTokensPerCall = "output_tokens_per_call",
    /// Mean apology phrases per output.
    Apology = "apology",
    /// Mean hostile phrases per output.
    Hostility = "hostility",
    /// Mean courtesy phrases per output.
    Politeness = "politeness",
    /// Mean hedging phrases per output.
    Hedging = "hedging",
    /// Mean confidence phrases per output.
    Confidence = "confidence",
    /// Mean refusal phrases per output.
    Refusal = "refusal",
    /// Handoffs between agents.
    Handoffs = "handoffs",
    /// Most times one exact (tool, args) call was made.
    RepeatCalls = "repeat_calls",
    /// Most consecutive repeats of one short tool cycle (length 1–4).
    CycleRepeats = "cycle_repeats",
    /// Cost of agent tool calls priced by `[tools]` (included in `cost_usd`).
    ToolCostUsd = "tool_cost_usd",
    /// Prompt tokens per minute of session duration (token burn over time).
    InputTokensPerMin = "input_tokens_per_min",
    /// Completion tokens per minute of session duration.
    OutputTokensPerMin = "output_tokens_per_min",
    /// Memory reads (absent without memory steps).
    MemoryReads = "memory_reads",
    /// Memory writes (absent without memory steps).
    MemoryWrites = "memory_writes",
    /// Memory size at the last memory step minus at the first (`memory.size`),
    /// else characters written (absent without memory steps).
    MemoryGrowth = "memory_growth",
    /// memory_growth per user turn (at least one turn).
    MemoryGrowthPerTurn = "memory_growth_per_turn",
    /// Conversation length in messages: user turns + model calls.
    Messages = "messages",
    /// Checkable claims in the model's outputs (amounts, dates, ids, …; absent without output text).
    Claims = "claims",
    /// Share of those claims no earlier source of the session gave (absent without claims).
    UnsupportedClaimShare = "unsupported_claim_share",
    /// Claims an earlier source of the session contradicts.
    Contradictions = "contradictions",
}

/// Number of features.
pub const N_FEATURES: usize = Feature::ALL.len();

impl Feature {
    /// Index into a feature vector.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Lexicon score features, in lexicon order.
pub const LEXICON_FEATURES: [Feature; N_LEXICONS] = [
    Feature::Apology,
    Feature::Hostility,
    Feature::Politeness,
    Feature::Hedging,
    Feature::Confidence,
    Feature::Refusal,
];

/// Error class used for failed steps that name none.
pub const UNCLASSIFIED: &str = "unclassified";

/// Everything measured about one finished session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionFeatures {
    /// Feature values by [`Feature::index`]; `None` where not measurable.
    pub values: Vec<Option<f64>>,
    /// The outcome, when the session has an end step with one.
    pub outcome: Option<Outcome>,
    /// The reward, when given.
    pub reward: Option<f64>,
    /// Failed steps per error class.
    pub error_classes: BTreeMap<String, u32>,
    /// True if any output carried a confidence marker.
    pub confident: bool,
    /// Markov states of the agent's actions, in order (without start/end).
    pub states: Vec<String>,
    /// Agent tool calls per tool.
    pub tool_counts: BTreeMap<String, u32>,
    /// Largest repeat count per cycle length 1..=4.
    pub max_cycle_reps: [u32; MAX_CYCLE],
    /// Number of steps of every kind, end included.
    pub total_steps: u32,
    /// The agent handed the task to a person: it called an escalation tool
    /// or handed off to a human agent (the taxonomy's `[escalation]` lists).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub escalation_requested: bool,
    /// The part of `error_classes` the taxonomy inferred (the rest is what
    /// producers labelled, plus `unclassified`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inferred_error_classes: BTreeMap<String, u32>,
    /// The session's intent (the first step that names one), for success by intent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
}

/// Conversation-length bands in messages (user turns + model calls), for
/// success by length; sessions reaching 50 messages are "long".
pub const LENGTH_BANDS: [(&str, u32); 6] = [
    ("1-9", 0),
    ("10-19", 10),
    ("20-49", 20),
    ("50-99", 50),
    ("100-199", 100),
    ("200+", 200),
];

/// Messages from which a session is long (reported apart).
pub const LONG_SESSION_MESSAGES: f64 = 50.0;

/// The length band of a session with this many messages.
pub fn length_band(messages: f64) -> &'static str {
    LENGTH_BANDS
        .iter()
        .rev()
        .find(|(_, from)| messages >= f64::from(*from))
        .map_or(LENGTH_BANDS[0].0, |(name, _)| name)
}

impl SessionFeatures {
    /// A feature's value (absent for features newer than a saved state).
    pub fn get(&self, f: Feature) -> Option<f64> {
        self.values.get(f.index()).copied().flatten()
    }

    /// 1.0 for success, 0.0 for failure or escalation, `None` when unknown.
    pub fn success(&self) -> Option<f64> {
        self.outcome.map(|o| if o == Outcome::Success { 1.0 } else { 0.0 })
    }

    /// True when the session was escalated: its outcome, an escalation error,
    /// or the agent handing the task to a person.
    pub fn escalated(&self) -> bool {
        self.outcome == Some(Outcome::Escalated)
            || self.error_classes.contains_key(ErrorClass::Escalation.as_str())
            || self.escalation_requested
    }
}

/// What one step contributed, for in-session detectors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepObs {
    /// Scores of an llm output with text.
    pub output: Option<OutputObs>,
    /// Repetition at an agent tool call.
    pub tool_loop: Option<(String, LoopObs)>,
    /// Whether an agent tool call failed.
    pub tool_failed: Option<bool>,
    /// The claims of a model output with text, checked against the session's sources.
    pub grounding: Option<GroundingObs>,
}

/// One model output's features.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OutputObs {
    /// Text scores.
    pub text: TextScores,
    /// Completion tokens, when reported.
    pub tokens: Option<u64>,
}

/// Folds a session's steps (in `seq` order) into [`SessionFeatures`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SessionAccumulator {
    total: u32,
    steps: u32,
    llm: u32,
    tool: u32,
    user: u32,
    handoffs: u32,
    tool_counts: BTreeMap<String, u32>,
    reason_run: u32,
    max_reason_run: u32,
    in_tok: Option<u64>,
    out_tok: Option<u64>,
    out_tok_calls: u32,
    cost: Option<f64>,
    first_ts: Option<i64>,
    last_ts: Option<i64>,
    lat_sum: f64,
    lat_n: u32,
    tool_ok: u32,
    tool_err: u32,
    error_classes: BTreeMap<String, u32>,
    ctx_util: Option<f64>,
    out_n: u32,
    out_chars: u64,
    lex: [u64; N_LEXICONS],
    confident: bool,
    depth_of_span: HashMap<String, u32>,
    max_depth: Option<u32>,
    outcome: Option<Outcome>,
    reward: Option<f64>,
    loops: LoopTracker,
    states: Vec<String>,
    /// An llm step whose tool request is unknown until the next acting step.
    pending_reason: bool,
    /// An escalation tool was called or a human took over.
    #[serde(default)]
    escalation: bool,
    #[serde(default)]
    inferred: BTreeMap<String, u32>,
    #[serde(default)]
    tool_cost: Option<f64>,
    #[serde(default)]
    memory: Option<MemoryTally>,
    #[serde(default)]
    state: StateTracker,
    #[serde(default)]
    intent: Option<String>,
    #[serde(default)]
    grounding: GroundingTracker,
    #[serde(default)]
    claims: u32,
    #[serde(default)]
    unsupported_claims: u32,
    #[serde(default)]
    contradictions: u32,
}

/// What memory steps did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct MemoryTally {
    reads: u32,
    writes: u32,
    first_size: Option<f64>,
    last_size: Option<f64>,
    written_chars: f64,
}

/// Cap on Markov states kept per session (bounded state for endless sessions).
pub const MAX_STATES: usize = 10_000;

impl SessionAccumulator {
    /// Adds the next step.
    pub fn push(&mut self, step: &Step, rules: &Rules) -> StepObs {
        let (prices, lex, taxonomy, grounding) = (rules.prices, rules.lexicons, rules.taxonomy, rules.grounding);
        let mut obs = StepObs::default();
        self.total += 1;
        if self.intent.is_none() {
            self.intent.clone_from(&step.intent);
        }
        self.first_ts = Some(self.first_ts.map_or(step.ts, |t| t.min(step.ts)));
        self.last_ts = Some(self.last_ts.map_or(step.ts, |t| t.max(step.ts)));
        if let Some(d) = step.depth.or_else(|| {
            let id = step.span_id.as_ref()?;
            let d = match step.parent_span_id.as_deref() {
                None => 0,
                Some(p) => self.depth_of_span.get(p).map_or(1, |d| d + 1),
            };
            if self.depth_of_span.len() < MAX_STATES {
                self.depth_of_span.insert(id.clone(), d);
            }
            Some(d)
        }) {
            self.max_depth = Some(self.max_depth.map_or(d, |m| m.max(d)));
        }
        if step.kind == StepKind::End {
            self.outcome = step.outcome.or(self.outcome);
            self.reward = step.reward.or(self.reward);
            return obs;
        }
        self.steps += 1;
        if let Some(l) = step.latency_ms {
            self.lat_sum += l;
            self.lat_n += 1;
        }
        // A step gets at most one class: a failure's, else a state rule's.
        let mut classified = step.status == Some(Status::Error);
        if classified {
            match (&step.error_class, step.kind) {
                (Some(c), _) => self.count_class(c.as_str(), false),
                (None, StepKind::Tool) => match taxonomy.classify_failure(step) {
                    Some(c) => self.count_class(c.as_str(), true),
                    None => self.count_class(UNCLASSIFIED, false),
                },
                (None, _) => self.count_class(UNCLASSIFIED, false),
            }
        }
        let acting = matches!(step.kind, StepKind::Llm | StepKind::Handoff | StepKind::Memory) || step.is_agent_tool();
        if acting && self.pending_reason {
            self.pending_reason = false;
            if !step.is_agent_tool() {
                self.push_state(REASON);
            }
        }
        if step.kind == StepKind::Llm {
            self.llm += 1;
            self.reason_run += 1;
            self.max_reason_run = self.max_reason_run.max(self.reason_run);
        } else {
            self.reason_run = 0;
        }
        match step.kind {
            StepKind::Llm => {
                if let Some(t) = step.input_tokens {
                    self.in_tok = Some(self.in_tok.unwrap_or(0) + t);
                    let attr = |k: &str| step.attributes.as_ref().and_then(|a| a.get(k)?.as_u64());
                    if let Some(window) = attr("gen_ai.request.context_window")
                        .or_else(|| prices.context_window(step.model.as_deref()?))
                        .filter(|w| *w > 0)
                    {
                        // The call's share of the window: its prompt and what it
                        // generated, or reserved (`max_tokens`) when that is more.
                        let out = step
                            .output_tokens
                            .unwrap_or(0)
                            .max(attr("gen_ai.request.max_tokens").unwrap_or(0));
                        let u = (t + out) as f64 / window as f64;
                        self.ctx_util = Some(self.ctx_util.map_or(u, |c| c.max(u)));
                    }
                }
                if let Some(t) = step.output_tokens {
                    self.out_tok = Some(self.out_tok.unwrap_or(0) + t);
                    self.out_tok_calls += 1;
                }
                let cost = step.cost_usd.or_else(|| {
                    step.model
                        .as_deref()
                        .and_then(|m| prices.cost_of(m, step.input_tokens, step.output_tokens))
                });
                if let Some(c) = cost {
                    self.cost = Some(self.cost.unwrap_or(0.0) + c);
                }
                if let Some(text) = step.text.as_deref().filter(|t| !t.is_empty()) {
                    let scores = lex.score(text);
                    self.out_n += 1;
                    self.out_chars += u64::from(scores.chars);
                    for (s, v) in self.lex.iter_mut().zip(scores.lexicon) {
                        *s += u64::from(v);
                    }
                    self.confident |= scores.lexicon[CONFIDENCE] > 0;
                    obs.output = Some(OutputObs {
                        text: scores,
                        tokens: step.output_tokens,
                    });
                    let g = self.grounding.check(grounding, text, step.seq);
                    self.claims += g.claims;
                    self.unsupported_claims += g.unsupported;
                    self.contradictions += g.contradictions.len() as u32;
                    obs.grounding = Some(g);
                }
                match step.tool_calls_requested {
                    Some(0) => self.push_state(REASON),
                    Some(_) => {}
                    None => self.pending_reason = true,
                }
            }
            StepKind::Tool if step.is_agent_tool() => {
                let name = step.tool.as_deref().unwrap_or("");
                self.tool += 1;
                let room = self.tool_counts.len() < MAX_STATES;
                match self.tool_counts.get_mut(name) {
                    Some(c) => *c += 1,
                    None if room => {
                        self.tool_counts.insert(name.to_string(), 1);
                    }
                    None => {}
                }
                let failed = step.status == Some(Status::Error);
                if failed {
                    self.tool_err += 1;
                } else {
                    self.tool_ok += 1;
                }
                obs.tool_failed = Some(failed);
                let repeat = self.loops.push(name, step.args.as_ref());
                obs.tool_loop = Some((name.to_string(), repeat));
                self.escalation |= taxonomy.escalation_tool(name);
                self.push_state(name);
                let cost = step.cost_usd.or_else(|| prices.tool_cost(step));
                if let Some(c) = cost {
                    self.tool_cost = Some(self.tool_cost.unwrap_or(0.0) + c);
                    self.cost = Some(self.cost.unwrap_or(0.0) + c);
                }
                // State rules: a re-read of unchanged state, or an argument
                // that contradicts what earlier results said.
                if taxonomy.read_tool(name) {
                    if !failed && self.state.re_read(repeat.key) && !classified {
                        self.count_class(ErrorClass::State.as_str(), true);
                        classified = true;
                    }
                } else {
                    self.state.reads.clear();
                }
                if !classified && step.args.as_ref().is_some_and(|a| self.state.contradicts(a)) {
                    self.count_class(ErrorClass::State.as_str(), true);
                }
                let result = super::state::successful_result(step);
                if let Some(r) = &result {
                    self.state.learn_result(r);
                }
                self.grounding.learn_parsed(grounding, step, result.as_deref());
            }
            // A tool the user runs changes the environment: earlier reads may be stale.
            StepKind::Tool => {
                self.state.reads.clear();
                self.grounding.learn(grounding, step);
            }
            StepKind::Memory => {
                let m = self.memory.get_or_insert_with(MemoryTally::default);
                match step.memory_op {
                    Some(MemoryOp::Read) => m.reads += 1,
                    Some(MemoryOp::Write) => m.writes += 1,
                    None => {}
                }
                self.grounding.learn(grounding, step);
                let size = step.attributes.as_ref().and_then(|a| a.get("memory.size")?.as_f64());
                if let Some(sz) = size.filter(|v| v.is_finite()) {
                    m.first_size.get_or_insert(sz);
                    m.last_size = Some(sz);
                } else if step.memory_op == Some(MemoryOp::Write) {
                    let chars = step
                        .text
                        .as_ref()
                        .map(|t| t.chars().count())
                        .or_else(|| step.args.as_ref().map(|a| a.to_string().chars().count()))
                        .unwrap_or(0);
                    m.written_chars += chars as f64;
                }
            }
            StepKind::User => {
                self.user += 1;
                if let Some(t) = &step.text {
                    self.state.learn_user(t);
                }
                self.grounding.learn(grounding, step);
            }
            StepKind::Handoff => {
                self.handoffs += 1;
                self.escalation |= step.to_agent.as_deref().is_some_and(|a| taxonomy.human_agent(a));
            }
            StepKind::End => unreachable!("handled above"),
        }
        obs
    }

    /// Records an outcome learnt without an end step (a later report, an
    /// evaluation, or one inferred from root spans).
    pub fn set_outcome(&mut self, outcome: Outcome, reward: Option<f64>) {
        self.outcome = Some(outcome);
        if reward.is_some() {
            self.reward = reward;
        }
    }

    fn count_class(&mut self, class: &str, inferred: bool) {
        *self.error_classes.entry(class.to_string()).or_insert(0) += 1;
        if inferred {
            *self.inferred.entry(class.to_string()).or_insert(0) += 1;
        }
    }

    fn push_state(&mut self, s: &str) {
        if self.states.len() < MAX_STATES {
            self.states.push(s.to_string());
        }
    }

    /// Number of steps pushed so far (end included).
    pub fn len(&self) -> u32 {
        self.total
    }

    /// True before the first step.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The features of the session so far.
    pub fn finish(&self) -> SessionFeatures {
        let mut states = self.states.clone();
        if self.pending_reason {
            states.push(REASON.to_string());
        }
        let ratio = |num: f64, den: f64| (den > 0.0).then(|| num / den);
        let mut v = vec![None; N_FEATURES];
        let steps = f64::from(self.steps);
        v[Feature::Steps.index()] = Some(steps);
        v[Feature::LlmCalls.index()] = Some(f64::from(self.llm));
        v[Feature::ToolCalls.index()] = Some(f64::from(self.tool));
        v[Feature::UserTurns.index()] = Some(f64::from(self.user));
        v[Feature::DistinctTools.index()] = Some(self.tool_counts.len() as f64);
        v[Feature::ToolCallRatio.index()] = ratio(f64::from(self.tool), f64::from(self.llm + self.tool));
        v[Feature::LlmDensity.index()] = ratio(f64::from(self.llm), steps);
        v[Feature::MaxDepth.index()] = self.max_depth.map(f64::from);
        v[Feature::ReasoningDepth.index()] = Some(f64::from(self.max_reason_run));
        v[Feature::InputTokens.index()] = self.in_tok.map(|t| t as f64);
        v[Feature::OutputTokens.index()] = self.out_tok.map(|t| t as f64);
        v[Feature::TokensPerStep.index()] = match (self.in_tok, self.out_tok) {
            (None, None) => None,
            (i, o) => ratio((i.unwrap_or(0) + o.unwrap_or(0)) as f64, steps),
        };
        v[Feature::CostUsd.index()] = self.cost;
        v[Feature::DurationMs.index()] = match (self.first_ts, self.last_ts) {
            (Some(a), Some(b)) if self.total >= 2 => Some((b - a) as f64),
            _ => None,
        };
        v[Feature::LatencyMs.index()] = ratio(self.lat_sum, f64::from(self.lat_n));
        v[Feature::ToolSuccessRatio.index()] = ratio(f64::from(self.tool_ok), f64::from(self.tool));
        v[Feature::ToolErrors.index()] = Some(f64::from(self.tool_err));
        v[Feature::ContextUtilisation.index()] = self.ctx_util;
        v[Feature::OutputChars.index()] = ratio(self.out_chars as f64, f64::from(self.out_n));
        v[Feature::OutputTokensPerCall.index()] = self
            .out_tok
            .and_then(|t| ratio(t as f64, f64::from(self.out_tok_calls)));
        for (f, s) in LEXICON_FEATURES.iter().zip(self.lex) {
            v[f.index()] = ratio(s as f64, f64::from(self.out_n));
        }
        v[Feature::Handoffs.index()] = Some(f64::from(self.handoffs));
        v[Feature::RepeatCalls.index()] = Some(f64::from(self.loops.max_same_call));
        v[Feature::CycleRepeats.index()] =
            Some(f64::from(self.loops.max_cycle_reps.iter().copied().max().unwrap_or(0)));
        v[Feature::ToolCostUsd.index()] = self.tool_cost;
        let minutes = v[Feature::DurationMs.index()]
            .filter(|d| *d >= 1000.0)
            .map(|d| d / 60_000.0);
        v[Feature::InputTokensPerMin.index()] = self.in_tok.zip(minutes).map(|(t, m)| t as f64 / m);
        v[Feature::OutputTokensPerMin.index()] = self.out_tok.zip(minutes).map(|(t, m)| t as f64 / m);
        if let Some(m) = &self.memory {
            let growth = match (m.first_size, m.last_size) {
                (Some(a), Some(b)) => b - a,
                _ => m.written_chars,
            };
            v[Feature::MemoryReads.index()] = Some(f64::from(m.reads));
            v[Feature::MemoryWrites.index()] = Some(f64::from(m.writes));
            v[Feature::MemoryGrowth.index()] = Some(growth);
            v[Feature::MemoryGrowthPerTurn.index()] = Some(growth / f64::from(self.user.max(1)));
        }
        v[Feature::Messages.index()] = Some(f64::from(self.user + self.llm));
        if self.out_n > 0 {
            v[Feature::Claims.index()] = Some(f64::from(self.claims));
            v[Feature::Contradictions.index()] = Some(f64::from(self.contradictions));
        }
        v[Feature::UnsupportedClaimShare.index()] = ratio(f64::from(self.unsupported_claims), f64::from(self.claims));
        // Session-level classes: escalation (a tool, a handoff to a person, or
        // the outcome), reasoning (a failed outcome with no tool or state error).
        let mut error_classes = self.error_classes.clone();
        let mut inferred = self.inferred.clone();
        let mut infer = |class: &str| {
            if !error_classes.contains_key(class) {
                error_classes.insert(class.to_string(), 1);
                inferred.insert(class.to_string(), 1);
            }
        };
        let escalated = self.escalation || self.outcome == Some(Outcome::Escalated);
        if escalated {
            infer(ErrorClass::Escalation.as_str());
        } else if self.outcome == Some(Outcome::Failure)
            && self.tool_err == 0
            && !self.error_classes.contains_key(ErrorClass::State.as_str())
        {
            infer(ErrorClass::Reasoning.as_str());
        }
        SessionFeatures {
            values: v,
            outcome: self.outcome,
            reward: self.reward,
            error_classes,
            inferred_error_classes: inferred,
            intent: self.intent.clone(),
            confident: self.confident,
            states,
            tool_counts: self.tool_counts.clone(),
            max_cycle_reps: self.loops.max_cycle_reps,
            total_steps: self.total,
            escalation_requested: self.escalation,
        }
    }
}

/// Features of a whole session.
pub fn session_features(session: &Session, rules: &Rules) -> SessionFeatures {
    let mut acc = SessionAccumulator::default();
    for s in &session.steps {
        acc.push(s, rules);
    }
    acc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PriceTable, Requestor};

    fn llm(seq: u64, text: &str, calls: Option<u32>) -> Step {
        let mut s = Step::new("s", seq, 1000 * seq as i64, StepKind::Llm, "a");
        s.text = Some(text.into());
        s.tool_calls_requested = calls;
        s
    }

    fn tool(seq: u64, name: &str, ok: bool) -> Step {
        let mut s = Step::new("s", seq, 1000 * seq as i64, StepKind::Tool, "a");
        s.tool = Some(name.into());
        s.status = Some(if ok { Status::Ok } else { Status::Error });
        s
    }

    #[test]
    fn handing_the_task_to_a_person_is_an_escalation() {
        let run = |steps: Vec<Step>| {
            let mut acc = SessionAccumulator::default();
            for st in &steps {
                acc.push(st, &Rules::builtin(&PriceTable::default()));
            }
            acc.finish()
        };
        let plain = run(vec![llm(0, "hi", Some(1)), tool(1, "get_customer", true)]);
        assert!(!plain.escalated());
        let t = run(vec![llm(0, "hi", Some(1)), tool(1, "transfer_to_human_agents", true)]);
        assert!(t.escalated() && t.escalation_requested, "tau-bench's transfer tool");
        assert_eq!(t.outcome, None, "the outcome stays the producer's");
        assert!(
            run(vec![tool(0, "Escalate_Ticket", true)]).escalated(),
            "case-insensitive"
        );
        let mut h = Step::new("s", 0, 0, StepKind::Handoff, "a");
        h.to_agent = Some("human_support".into());
        assert!(run(vec![h.clone()]).escalated(), "a handoff to a human");
        h.to_agent = Some("billing_agent".into());
        assert!(!run(vec![h]).escalated(), "a handoff to another agent");
    }

    #[test]
    fn inferred_classes_memory_messages_tool_cost_and_burn() {
        let prices = PriceTable::parse(
            "version = 1\n[models]\n[tools.web_search]\nusd_per_call = 0.01\n",
            "t.toml",
        )
        .unwrap();
        let rules = Rules::builtin(&prices);
        let mut steps = vec![Step::new("s", 0, 0, StepKind::User, "a")];
        steps[0].text = Some("Please move my booking to flight HAT002.".into());
        let mut read = tool(1, "get_reservation_details", true);
        read.args = Some(serde_json::json!({"reservation_id": "ABC123"}));
        read.result = Some(serde_json::json!(
            r#"{"reservation_id": "ABC123", "flight_number": "HAT001", "amount": 120}"#
        ));
        steps.push(read.clone());
        let mut again = read.clone();
        again.seq = 2;
        steps.push(again); // re-read, nothing in between: state
        let mut search = tool(3, "web_search", true);
        search.args = Some(serde_json::json!({"q": "weather"}));
        steps.push(search); // priced, and not a read tool: re-reads start afresh
        let mut book = tool(4, "update_reservation_flights", true);
        book.args = Some(serde_json::json!({"reservation_id": "ABC123", "flight_number": "HAT002"}));
        steps.push(book.clone()); // HAT002 came from the user: no contradiction
        let mut wrong = book.clone();
        wrong.seq = 5;
        wrong.args = Some(serde_json::json!({"reservation_id": "XYZ999", "amount": 150}));
        steps.push(wrong); // values no result and no user gave, under keys results carried
        let mut fail = tool(6, "book_reservation", false);
        fail.error = Some("Error: not enough seats on flight HAT002".into());
        steps.push(fail);
        let mut labelled = tool(7, "book_reservation", false);
        labelled.error = Some("Error: not enough seats".into());
        labelled.error_class = Some(ErrorClass::Other("quota".into()));
        steps.push(labelled); // the producer's label wins
        for (seq, op, size) in [
            (8, MemoryOp::Write, 10.0),
            (9, MemoryOp::Read, 10.0),
            (10, MemoryOp::Write, 40.0),
        ] {
            let mut m = Step::new("s", seq, 1000 * seq as i64, StepKind::Memory, "a");
            m.memory_op = Some(op);
            let mut a = serde_json::Map::new();
            a.insert("memory.size".into(), size.into());
            m.attributes = Some(a);
            steps.push(m);
        }
        let mut l = llm(11, "Done.", Some(0));
        l.input_tokens = Some(600);
        l.output_tokens = Some(60);
        steps.push(l);
        let mut end = Step::new("s", 12, 120_000, StepKind::End, "a");
        end.outcome = Some(Outcome::Failure);
        steps.push(end);
        let f = session_features(&Session::from_sorted("s", steps), &rules);
        let g = |x: Feature| f.get(x);
        assert_eq!(
            f.inferred_error_classes.get("state"),
            Some(&3),
            "re-read, contradiction, refused: {f:?}"
        );
        assert_eq!(f.error_classes.get("quota"), Some(&1));
        assert!(!f.inferred_error_classes.contains_key("quota"));
        assert!(
            !f.inferred_error_classes.contains_key("reasoning"),
            "a failed outcome with tool errors is not a reasoning failure"
        );
        assert_eq!(g(Feature::ToolCostUsd), Some(0.01));
        assert_eq!(
            g(Feature::CostUsd),
            Some(0.01),
            "tool cost is part of the session's cost"
        );
        assert_eq!(g(Feature::MemoryReads), Some(1.0));
        assert_eq!(g(Feature::MemoryWrites), Some(2.0));
        assert_eq!(g(Feature::MemoryGrowth), Some(30.0));
        assert_eq!(g(Feature::MemoryGrowthPerTurn), Some(30.0), "one user turn");
        assert_eq!(g(Feature::Messages), Some(2.0), "one user turn and one model call");
        assert_eq!(
            g(Feature::InputTokensPerMin),
            Some(600.0 / 2.0),
            "600 tokens over 2 minutes"
        );
        assert_eq!(g(Feature::OutputTokensPerMin), Some(30.0));
        assert!(
            g(Feature::ContextUtilisation).is_none(),
            "a model call without a model: no window"
        );

        // Context use: prompt + completion, or + the reserved max_tokens when larger.
        let mut c = llm(0, "hi", Some(0));
        c.model = Some("gpt-4o".into());
        c.input_tokens = Some(64_000);
        c.output_tokens = Some(1_000);
        let util = |c: &Step| {
            session_features(&Session::from_sorted("s", vec![c.clone()]), &rules)
                .get(Feature::ContextUtilisation)
                .unwrap()
        };
        assert!((util(&c) - 65_000.0 / 128_000.0).abs() < 1e-15);
        let mut a = serde_json::Map::new();
        a.insert("gen_ai.request.max_tokens".into(), 16_000.into());
        c.attributes = Some(a.clone());
        assert!((util(&c) - 80_000.0 / 128_000.0).abs() < 1e-15, "max_tokens reserved");
        a.insert("gen_ai.request.context_window".into(), 160_000.into());
        c.attributes = Some(a);
        assert!((util(&c) - 0.5).abs() < 1e-15, "the source's own window wins");

        // A failed outcome with no tool or state error is a reasoning failure.
        let mut end = Step::new("s", 2, 2000, StepKind::End, "a");
        end.outcome = Some(Outcome::Failure);
        let f = session_features(
            &Session::from_sorted("s", vec![llm(0, "hi", Some(1)), tool(1, "book", true), end]),
            &rules,
        );
        assert_eq!(f.inferred_error_classes.get("reasoning"), Some(&1));
        assert!(f.get(Feature::MemoryGrowth).is_none(), "no memory steps: absent, not 0");
        assert_eq!(length_band(9.0), "1-9");
        assert_eq!(length_band(50.0), "50-99");
        assert_eq!(length_band(250.0), "200+");
    }

    #[test]
    fn hand_counted_session() {
        let mut steps = vec![
            Step::new("s", 0, 0, StepKind::User, "a"),
            llm(1, "Sorry, let me check.", Some(1)),
            tool(2, "lookup", true),
            llm(3, "", None),
            tool(4, "lookup", false),
            llm(5, "Done, thank you.", Some(0)),
            llm(6, "Anything else?", None),
        ];
        steps[1].input_tokens = Some(100);
        steps[1].output_tokens = Some(10);
        steps[5].input_tokens = Some(200);
        steps[5].output_tokens = Some(30);
        let mut dev = tool(7, "toggle_airplane_mode", true);
        dev.requestor = Some(Requestor::User);
        steps.push(dev);
        let mut end = Step::new("s", 8, 9000, StepKind::End, "a");
        end.outcome = Some(Outcome::Success);
        steps.push(end);
        let f = session_features(
            &Session::from_sorted("s", steps),
            &Rules::builtin(&PriceTable::default()),
        );
        let g = |x: Feature| f.get(x).unwrap();
        assert_eq!(g(Feature::Steps), 8.0);
        assert_eq!(g(Feature::LlmCalls), 4.0);
        assert_eq!(
            g(Feature::ToolCalls),
            2.0,
            "the user's device tool is not an agent tool call"
        );
        assert_eq!(g(Feature::ToolSuccessRatio), 0.5);
        assert_eq!(g(Feature::ReasoningDepth), 2.0);
        assert_eq!(g(Feature::InputTokens), 300.0);
        assert_eq!(g(Feature::TokensPerStep), 340.0 / 8.0);
        assert_eq!(g(Feature::DurationMs), 9000.0);
        assert_eq!(g(Feature::Apology), 1.0 / 3.0);
        assert_eq!(g(Feature::RepeatCalls), 2.0, "lookup twice with the same (absent) args");
        assert!(f.get(Feature::MaxDepth).is_none(), "no span information: absent, not 0");
        assert!(f.get(Feature::CostUsd).is_none(), "no model: no cost invented");
        assert_eq!(f.states, vec!["lookup", "lookup", "<reason>", "<reason>"]);
        assert_eq!(f.error_classes.get(UNCLASSIFIED), Some(&1));
        assert_eq!(f.success(), Some(1.0));
    }
}
