//! The scorer: the one piece of code that turns a stream of steps into drift
//! events, used by `replay`, `eval` and `serve` alike. Synchronous and pure
//! (time comes in with the calls); its whole state serialises, so a service
//! can snapshot and restore it.
//!
//! Per session it keeps a reorder buffer: steps are scored in `seq` order,
//! a step is released when every lower `seq` has been; the session closes
//! when its `end` step is released, or when it has been idle for
//! `idle_timeout_ms` (then buffered steps are released in `seq` order across
//! gaps). Sessions resolve their segment at their first step: their own
//! (agent, task) segment if the baseline has it, else the agent's pooled `*`
//! segment (events then carry `fallback_from`), else they are not scored.

pub mod pipeline;
pub mod replay;
pub mod saved;

use crate::baseline::types::{Baseline, SegmentBaseline};
use crate::detect::{Ctx, DriftEvent, InSession, SegmentDetectors};
use crate::features::{Grounding, Lexicons, Rules, SessionAccumulator, SessionFeatures, Taxonomy};
use crate::model::{Outcome, OutcomeSource, PriceTable, SegmentKey, Step, StepKind};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

/// Sessions remembered as closed, to recognise late steps (bounded).
const CLOSED_MEMORY: usize = 100_000;

/// Why a session closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// Its end step was scored.
    End,
    /// No step arrived for the idle timeout.
    Idle,
    /// The input ended (replay) or the scorer was flushed.
    Flush,
}

/// A session that finished scoring.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClosedSession {
    /// Session id.
    pub session_id: String,
    /// Segment whose baseline scored it (`None`: unknown agent, not scored).
    pub segment: Option<SegmentKey>,
    /// The session's own segment when it fell back to a pooled one.
    pub fallback_from: Option<SegmentKey>,
    /// Why it closed.
    pub reason: CloseReason,
    /// Its features.
    pub features: SessionFeatures,
    /// Steps scored.
    pub steps: u64,
    /// Time of its last step, unix ms.
    pub last_ts: i64,
    /// Where its outcome came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome_source: Option<OutcomeSource>,
    /// Agent of its first step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Time of its first step, unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_ts: Option<i64>,
    /// Trace id of its first step (OTLP), to join logs with traces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// A session whose first step was scored.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenedSession {
    /// Session id.
    pub session_id: String,
    /// Agent of its first step.
    pub agent: String,
    /// Segment it is scored against (`None`: not scored).
    pub segment: Option<SegmentKey>,
    /// Time of its first step, unix ms.
    pub first_ts: i64,
    /// Trace id of its first step (OTLP).
    pub trace_id: Option<String>,
}

/// What became of an outcome reported for a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum OutcomeVerdict {
    /// The session was open: the outcome ends it and every chart sees it.
    Ended,
    /// The session had closed without an outcome: the outcome-rate charts see it now.
    Charted,
    /// Recorded on the session, but no chart sees it.
    Recorded {
        /// Why not.
        reason: String,
    },
    /// The scorer does not know the session.
    Unknown,
}

/// What one call produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Output {
    /// Events, in the order they fired.
    pub events: Vec<DriftEvent>,
    /// Sessions that closed.
    pub closed: Vec<ClosedSession>,
    /// Steps that arrived after their session closed (stored, not scored).
    pub late: u64,
    /// Sessions whose first step was scored.
    pub opened: Vec<OpenedSession>,
    /// Session-level chart readings, one entry per session, when
    /// [`Scorer::record_chart_points`] asked for them.
    pub points: Vec<crate::detect::event::SessionReadings>,
}

impl Output {
    fn extend(&mut self, o: Output) {
        self.events.extend(o.events);
        self.closed.extend(o.closed);
        self.late += o.late;
        self.opened.extend(o.opened);
        self.points.extend(o.points);
    }
}

/// The chart readings segment `i`'s detectors recorded for the session in `ctx`, if any.
fn readings_of(det: &mut SegmentDetectors, i: usize, ctx: &Ctx) -> Option<crate::detect::event::SessionReadings> {
    let readings = det.take_points();
    (!readings.is_empty()).then(|| crate::detect::event::SessionReadings {
        segment: i,
        session_id: ctx.session_id.to_string(),
        ts: ctx.ts,
        readings,
    })
}

/// Why a scorer cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The baseline was scored with other lexicons.
    #[error(
        "the baseline's tone lexicons (version {baseline}, hash {hash}…) differ from this build's (version {build}); retrain the baseline"
    )]
    Lexicon {
        /// Version in the baseline.
        baseline: String,
        /// Hash prefix in the baseline.
        hash: String,
        /// Version of this build.
        build: String,
    },
    /// A chart of the baseline cannot run.
    #[error(transparent)]
    Detect(#[from] crate::detect::DetectError),
    /// The taxonomy stored in the baseline does not parse.
    #[error(transparent)]
    Taxonomy(#[from] crate::features::taxonomy::TaxonomyError),
    /// The grounding rules stored in the baseline do not parse.
    #[error(transparent)]
    Grounding(#[from] crate::features::grounding::GroundingError),
    /// A snapshot does not belong to this baseline.
    #[error("the saved scorer state belongs to another baseline")]
    Snapshot,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct OpenSession {
    segment: Option<usize>,
    fallback_from: Option<SegmentKey>,
    acc: SessionAccumulator,
    next_seq: u64,
    pending: BTreeMap<u64, Step>,
    last_seen_ms: i64,
    last_ts: i64,
    ended: bool,
    state: InSession,
    scored: u64,
    /// Input position of the session's latest step (log id in the service).
    last_pos: i64,
    #[serde(default)]
    outcome_source: Option<OutcomeSource>,
    #[serde(default)]
    agent: String,
    #[serde(default)]
    first_ts: i64,
    #[serde(default)]
    trace_id: Option<String>,
    /// Bytes its reorder buffer holds (recomputed on restore).
    #[serde(skip)]
    buffered: usize,
    /// Version of its latest row in the session store.
    #[serde(skip)]
    row: Option<u64>,
    /// Whether it changed since that row was written.
    #[serde(skip)]
    changed: bool,
}

/// What is remembered of a closed session, for late steps and late outcomes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct ClosedInfo {
    segment: Option<usize>,
    fallback: Option<SegmentKey>,
    confident: bool,
    outcome_source: Option<OutcomeSource>,
    cost: Option<f64>,
    /// Log time it closed at (the received time of the entry that closed it).
    closed_ms: i64,
    last_ts: i64,
    trace_id: Option<String>,
}

/// Running totals of one segment's closed sessions, for reports and metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SegmentTotals {
    /// Sessions closed.
    pub sessions: u64,
    /// Of which scored against this segment as a fallback.
    pub fallback: u64,
    /// Sessions with a known outcome.
    pub with_outcome: u64,
    /// Successful sessions.
    pub successes: u64,
    /// Escalated sessions.
    pub escalated: u64,
    /// Agent tool calls.
    pub tool_calls: u64,
    /// Failed agent tool calls.
    pub tool_errors: u64,
    /// Sessions with at least one failed tool call.
    pub tool_error_sessions: u64,
    /// Summed cost, USD.
    pub cost_usd: f64,
    /// Summed cost of successful sessions, USD.
    pub success_cost_usd: f64,
    /// Sessions reporting cost.
    pub cost_sessions: u64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Steps (end excluded).
    pub steps: u64,
    /// Summed duration, ms.
    pub duration_ms: f64,
    /// Sessions with a duration.
    pub duration_sessions: u64,
    /// Sessions reaching 50, 100 and 200 messages (user turns + model calls).
    pub over: [u64; 3],
    /// Failed steps per error class (at most 100 classes; the rest as `other`).
    pub error_classes: BTreeMap<String, u64>,
    /// (successes, sessions with outcome) per tool used.
    pub success_by_tool: BTreeMap<String, (u64, u64)>,
    /// The part of `error_classes` the taxonomy inferred.
    #[serde(default)]
    pub inferred_error_classes: BTreeMap<String, u64>,
    /// (successes, sessions with outcome) per intent (at most 50; the rest as `other`).
    #[serde(default)]
    pub success_by_intent: BTreeMap<String, (u64, u64)>,
    /// (successes, sessions with outcome) per conversation-length band.
    #[serde(default)]
    pub success_by_length: BTreeMap<String, (u64, u64)>,
    /// The sessions reaching 50 messages, apart.
    #[serde(default)]
    pub long: crate::baseline::LongSessions,
    /// Summed cost of priced tool calls, USD, and the sessions that had one.
    #[serde(default)]
    pub tool_cost_usd: f64,
    /// Sessions with a priced tool call.
    #[serde(default)]
    pub tool_cost_sessions: u64,
}

/// Adds a session's failures per class to a bounded table: at most 100
/// classes, the rest counted as `other`.
fn count_classes(table: &mut BTreeMap<String, u64>, session: &BTreeMap<String, u32>) {
    for (class, n) in session {
        let key = if table.len() < 100 || table.contains_key(class) {
            class.clone()
        } else {
            "other".to_string()
        };
        *table.entry(key).or_insert(0) += u64::from(*n);
    }
}

/// Adds a session to a bounded (successes, sessions) table: at most `cap`
/// keys, the rest counted as `other`.
fn count_success(table: &mut BTreeMap<String, (u64, u64)>, key: &str, ok: bool, cap: usize) {
    let key = if table.len() < cap || table.contains_key(key) {
        key
    } else {
        "other"
    };
    let e = table.entry(key.to_string()).or_insert((0, 0));
    e.0 += u64::from(ok);
    e.1 += 1;
}

impl SegmentTotals {
    /// (input, output) tokens per minute of the closed sessions' summed durations.
    pub fn tokens_per_minute(&self) -> Option<(f64, f64)> {
        let minutes = (self.duration_ms > 0.0).then_some(self.duration_ms / 60_000.0)?;
        Some((self.input_tokens as f64 / minutes, self.output_tokens as f64 / minutes))
    }

    /// Counts an outcome that arrived after its session was counted.
    fn add_late_outcome(&mut self, outcome: Outcome, cost: Option<f64>) {
        self.with_outcome += 1;
        if outcome == Outcome::Success {
            self.successes += 1;
            if let Some(c) = cost {
                self.success_cost_usd += c;
            }
        }
        self.escalated += u64::from(outcome == Outcome::Escalated);
    }

    fn add(&mut self, f: &SessionFeatures, fallback: bool) {
        use crate::features::Feature as F;
        self.sessions += 1;
        self.fallback += u64::from(fallback);
        let success = f.success();
        if let Some(s) = success {
            self.with_outcome += 1;
            self.successes += u64::from(s == 1.0);
        }
        self.escalated += u64::from(f.escalated());
        let calls = f.get(F::ToolCalls).unwrap_or(0.0) as u64;
        let errors = f.get(F::ToolErrors).unwrap_or(0.0) as u64;
        self.tool_calls += calls;
        self.tool_errors += errors;
        self.tool_error_sessions += u64::from(errors > 0);
        if let Some(c) = f.get(F::CostUsd) {
            self.cost_usd += c;
            self.cost_sessions += 1;
            if success == Some(1.0) {
                self.success_cost_usd += c;
            }
        }
        self.input_tokens += f.get(F::InputTokens).unwrap_or(0.0) as u64;
        self.output_tokens += f.get(F::OutputTokens).unwrap_or(0.0) as u64;
        self.steps += f.get(F::Steps).unwrap_or(0.0) as u64;
        let messages = f.get(F::Messages).unwrap_or(0.0);
        for (i, limit) in [50.0, 100.0, 200.0].into_iter().enumerate() {
            self.over[i] += u64::from(messages >= limit);
        }
        self.long.add(f);
        if let Some(c) = f.get(F::ToolCostUsd) {
            self.tool_cost_usd += c;
            self.tool_cost_sessions += 1;
        }
        if let Some(s) = success {
            let ok = s == 1.0;
            count_success(
                &mut self.success_by_length,
                crate::features::length_band(messages),
                ok,
                10,
            );
            if let Some(intent) = &f.intent {
                count_success(&mut self.success_by_intent, intent, ok, 50);
            }
        }
        if let Some(d) = f.get(F::DurationMs) {
            self.duration_ms += d;
            self.duration_sessions += 1;
        }
        count_classes(&mut self.error_classes, &f.error_classes);
        count_classes(&mut self.inferred_error_classes, &f.inferred_error_classes);
        if let Some(s) = success {
            for tool in f.tool_counts.keys().take(100) {
                if self.success_by_tool.len() < 200 || self.success_by_tool.contains_key(tool) {
                    let e = self.success_by_tool.entry(tool.clone()).or_insert((0, 0));
                    e.0 += u64::from(s == 1.0);
                    e.1 += 1;
                }
            }
        }
    }
}

/// Counters for reports and metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScorerStats {
    /// Steps scored.
    pub steps: u64,
    /// Sessions closed, by reason.
    pub closed_end: u64,
    /// Sessions closed by idle timeout.
    pub closed_idle: u64,
    /// Sessions closed by flush.
    pub closed_flush: u64,
    /// Sessions scored against a pooled segment.
    pub fallback_sessions: u64,
    /// Sessions of unknown agents (not scored).
    pub unscored_sessions: u64,
    /// Late steps.
    pub late_steps: u64,
    /// Steps with a `seq` already buffered in their session (kept once).
    #[serde(default)]
    pub duplicate_steps: u64,
    /// Outcomes that reached charts after their session closed.
    #[serde(default)]
    pub late_outcomes: u64,
    /// Log rows that could not be read back (damaged storage), skipped.
    #[serde(default)]
    pub unreadable_log_rows: u64,
    /// Times a reorder buffer over its cap released its steps across a gap.
    #[serde(default)]
    pub forced_releases: u64,
    /// Open sessions moved to the session store (over `max_open_sessions`).
    #[serde(default)]
    pub sessions_evicted: u64,
    /// Saved sessions brought back into memory.
    #[serde(default)]
    pub sessions_restored: u64,
    /// Writes or reads of the session store that failed.
    #[serde(default)]
    pub session_store_failures: u64,
    /// Events per detector id.
    pub events: BTreeMap<String, u64>,
    /// Totals per segment (`agent/task_type`).
    pub segments: BTreeMap<String, SegmentTotals>,
}

/// The part of a scorer that changes, for snapshots.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScorerState {
    baseline_id: String,
    detectors: Vec<SegmentDetectors>,
    open: HashMap<String, OpenSession>,
    /// Highest row version written (open sessions not in `open` are rows up to it).
    #[serde(default)]
    versions: u64,
    closed_order: VecDeque<String>,
    #[serde(default)]
    closed_info: HashMap<String, ClosedInfo>,
    /// Counters.
    pub stats: ScorerStats,
}

/// The scorer's state borrowed, serialised exactly as [`ScorerState`]:
/// a snapshot is encoded without first copying every open session.
#[derive(Serialize)]
pub struct ScorerStateRef<'a> {
    baseline_id: &'a str,
    detectors: &'a [SegmentDetectors],
    open: saved::Unsaved<'a>,
    versions: u64,
    closed_order: &'a VecDeque<String>,
    closed_info: &'a HashMap<String, ClosedInfo>,
    stats: &'a ScorerStats,
}

/// Scores steps against a baseline.
pub struct Scorer {
    baseline: Arc<Baseline>,
    baseline_id: String,
    prices: PriceTable,
    /// The error taxonomy the baseline was trained with.
    taxonomy: Taxonomy,
    /// The grounding rules the baseline was trained with (shared by every scorer of them).
    grounding: Arc<Grounding>,
    index: HashMap<SegmentKey, usize>,
    idle_timeout_ms: i64,
    detectors: Vec<SegmentDetectors>,
    /// Boxed: the table's spare capacity then costs a pointer per slot, not a session.
    open: HashMap<String, Box<OpenSession>>,
    closed: HashMap<String, ClosedInfo>,
    closed_order: VecDeque<String>,
    stats: ScorerStats,
    /// Segments whose detectors panicked, with why: they score nothing more.
    failed: BTreeMap<usize, String>,
    limits: Limits,
    /// Bytes every reorder buffer holds together.
    buffered: usize,
    /// Open sessions out of memory, in the session store.
    saved: HashMap<String, saved::SavedRef>,
    /// Highest row version written.
    versions: u64,
    /// Rows superseded since the last checkpoint.
    obsolete: Vec<(String, u64)>,
    session_store: Option<Box<dyn saved::SessionStore>>,
    /// After a failed eviction, steps before trying again.
    evict_pause: usize,
    last_store_error: Option<String>,
}

/// Memory bounds of a scorer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes one session's reorder buffer may hold before it releases across its gap.
    pub session_buffer_bytes: usize,
    /// Bytes all reorder buffers may hold together; over it, the largest releases.
    pub total_buffer_bytes: usize,
    /// Open sessions held in memory at most; beyond, the longest-idle go to
    /// the session store (only with one: see [`Scorer::with_session_store`]).
    pub max_open_sessions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            session_buffer_bytes: 8 << 20,
            total_buffer_bytes: 256 << 20,
            max_open_sessions: usize::MAX,
        }
    }
}

/// Runs detector code, turning a panic into an error (one segment's bug or
/// inconsistent baseline must not stop the others).
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into())
    })
}

/// The segment baseline a session with this first step is scored against,
/// and its own segment when that is a fallback (same rule as the scorer).
pub fn resolve_segment<'a>(baseline: &'a Baseline, first: &Step) -> (Option<&'a SegmentBaseline>, Option<SegmentKey>) {
    crate::model::resolve(first, &baseline.meta.config.segment_by, |k| baseline.segment(k))
}

/// Identity of a baseline for snapshot matching (its training time and inputs).
pub fn baseline_id(b: &Baseline) -> String {
    let mut h = crate::features::sequence::Fnv::default();
    h.write(&b.meta.created_unix_ms.to_le_bytes());
    for i in &b.meta.inputs {
        h.write(i.sha256.as_bytes());
    }
    h.write(&b.meta.sessions.to_le_bytes());
    format!("{:016x}", h.finish())
}

impl Scorer {
    /// A scorer at its initial state.
    pub fn new(baseline: Arc<Baseline>, prices: PriceTable, idle_timeout_ms: i64) -> Result<Scorer, EngineError> {
        let lex = Lexicons::builtin();
        if baseline.meta.lexicon_hash != lex.hash {
            return Err(EngineError::Lexicon {
                baseline: baseline.meta.lexicon_version.clone(),
                hash: baseline.meta.lexicon_hash.chars().take(12).collect(),
                build: lex.version.clone(),
            });
        }
        Ok(Scorer {
            index: baseline
                .segments
                .iter()
                .enumerate()
                .map(|(i, s)| (s.key.clone(), i))
                .collect(),
            detectors: baseline
                .segments
                .iter()
                .map(SegmentDetectors::new)
                .collect::<Result<_, _>>()?,
            baseline_id: baseline_id(&baseline),
            taxonomy: Taxonomy::of_baseline(baseline.meta.taxonomy.as_ref())?,
            grounding: Grounding::of_baseline(baseline.meta.grounding.as_ref())?,
            baseline,
            prices,
            idle_timeout_ms,
            open: HashMap::new(),
            closed: HashMap::new(),
            closed_order: VecDeque::new(),
            stats: ScorerStats::default(),
            failed: BTreeMap::new(),
            limits: Limits::default(),
            buffered: 0,
            saved: HashMap::new(),
            versions: 0,
            obsolete: Vec::new(),
            session_store: None,
            evict_pause: 0,
            last_store_error: None,
        })
    }

    /// The error taxonomy it classifies with (the baseline's).
    pub fn taxonomy(&self) -> &Taxonomy {
        &self.taxonomy
    }

    /// The grounding rules it extracts claims with (the baseline's).
    pub fn grounding(&self) -> &Arc<Grounding> {
        &self.grounding
    }

    /// The same scorer with other memory bounds.
    pub fn with_limits(mut self, limits: Limits) -> Scorer {
        self.limits = limits;
        self
    }

    /// Bytes the reorder buffers hold.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// The baseline.
    pub fn baseline(&self) -> &Baseline {
        &self.baseline
    }

    /// Counters.
    pub fn stats(&self) -> &ScorerStats {
        &self.stats
    }

    /// Sessions open right now (in memory or in the session store).
    pub fn open_sessions(&self) -> usize {
        self.open.len() + self.saved.len()
    }

    /// Running detectors per segment (for reports).
    pub fn detectors(&self) -> impl Iterator<Item = (&SegmentBaseline, &SegmentDetectors)> {
        self.baseline.segments.iter().zip(&self.detectors)
    }

    /// Resolves the segment a session is scored against.
    pub fn resolve(&self, first: &Step) -> (Option<usize>, Option<SegmentKey>) {
        crate::model::resolve(first, &self.baseline.meta.config.segment_by, |k| {
            self.index.get(k).copied()
        })
    }

    /// Takes one step (any order); returns what it caused.
    pub fn ingest(&mut self, step: Step, now_ms: i64) -> Output {
        self.ingest_at(step, now_ms, 0)
    }

    /// Takes one step at input position `pos` (the service's log id), so an
    /// idle close decided at a position can be checked against later steps.
    pub fn ingest_at(&mut self, step: Step, now_ms: i64, pos: i64) -> Output {
        let mut out = Output::default();
        if self.closed.contains_key(&step.session_id) {
            self.stats.late_steps += 1;
            out.late = 1;
            return out;
        }
        let sid = step.session_id.clone();
        if self.saved.contains_key(&sid) && !self.load(&sid) {
            // Its state cannot be read now: the step stays in the log, unscored.
            self.stats.late_steps += 1;
            out.late = 1;
            return out;
        }
        let open = self.open.entry(sid.clone()).or_insert_with(|| {
            Box::new(OpenSession {
                segment: None,
                fallback_from: None,
                acc: SessionAccumulator::default(),
                next_seq: 0,
                pending: BTreeMap::new(),
                last_seen_ms: now_ms,
                last_ts: step.ts,
                ended: false,
                state: InSession::default(),
                scored: 0,
                last_pos: pos,
                outcome_source: None,
                agent: step.agent.clone(),
                first_ts: step.ts,
                trace_id: None,
                buffered: 0,
                row: None,
                changed: true,
            })
        });
        open.changed = true;
        open.last_seen_ms = now_ms;
        open.last_pos = open.last_pos.max(pos);
        if step.seq < open.next_seq {
            // A duplicate of a scored step, or a step that arrived after the
            // scorer moved past its gap: it cannot be scored in order.
            self.stats.late_steps += 1;
            out.late = 1;
            return out;
        }
        match open.pending.entry(step.seq) {
            std::collections::btree_map::Entry::Vacant(v) => {
                let bytes = step.approx_bytes();
                v.insert(step);
                open.buffered += bytes;
                self.buffered += bytes;
            }
            // Two steps with one seq (a session fed natively and over OTLP): the first stays.
            std::collections::btree_map::Entry::Occupied(_) => self.stats.duplicate_steps += 1,
        }
        out.extend(self.release(&sid, false));
        // A buffer waiting too long for a missing seq gives up on it: its steps
        // are scored in seq order across the gap (a late step for it is late).
        if self
            .open
            .get(&sid)
            .is_some_and(|o| o.buffered > self.limits.session_buffer_bytes)
        {
            self.stats.forced_releases += 1;
            out.extend(self.release(&sid, true));
        }
        while self.buffered > self.limits.total_buffer_bytes {
            let Some(largest) = self
                .open
                .iter()
                .filter(|(_, o)| o.buffered > 0)
                .max_by(|a, b| a.1.buffered.cmp(&b.1.buffered).then_with(|| b.0.cmp(a.0)))
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.stats.forced_releases += 1;
            out.extend(self.release(&largest, true));
        }
        self.evict_over_cap(&sid);
        out
    }

    /// Scores the session's releasable steps; `force` releases across gaps.
    fn release(&mut self, sid: &str, force: bool) -> Output {
        let mut out = Output::default();
        while let Some(open) = self.open.get_mut(sid) {
            let next = match open.pending.first_key_value() {
                Some((&seq, _)) if seq == open.next_seq || force => seq,
                _ => break,
            };
            let step = open.pending.remove(&next).expect("present");
            open.changed = true;
            let bytes = step.approx_bytes();
            open.buffered = open.buffered.saturating_sub(bytes);
            self.buffered = self.buffered.saturating_sub(bytes);
            open.next_seq = next + 1;
            if open.scored == 0 {
                let (seg, fallback) = self.resolve(&step);
                let open = self.open.get_mut(sid).expect("still open");
                open.segment = seg;
                open.fallback_from = fallback;
                open.agent = step.agent.clone();
                open.first_ts = step.ts;
                open.trace_id = step.trace_id.clone();
                out.opened.push(OpenedSession {
                    session_id: sid.to_string(),
                    agent: step.agent.clone(),
                    segment: seg.map(|i| self.baseline.segments[i].key.clone()),
                    first_ts: step.ts,
                    trace_id: step.trace_id.clone(),
                });
            }
            let open = self.open.get_mut(sid).expect("still open");
            open.scored += 1;
            open.last_ts = open.last_ts.max(step.ts);
            self.stats.steps += 1;
            let obs = open.acc.push(
                &step,
                &Rules::new(&self.prices, &self.taxonomy).with_grounding(&self.grounding),
            );
            if let Some(i) = open.segment.filter(|i| !self.failed.contains_key(i)) {
                let ctx = Ctx {
                    session_id: sid,
                    ts: step.ts,
                    fallback_from: open.fallback_from.as_ref(),
                };
                let (det, seg, state) = (&mut self.detectors[i], &self.baseline.segments[i], &mut open.state);
                match guarded(|| det.on_step(seg, &ctx, step.seq, &obs, state)) {
                    Ok(events) => {
                        for e in &events {
                            *self.stats.events.entry(e.detector.clone()).or_insert(0) += 1;
                        }
                        out.events.extend(events);
                    }
                    Err(why) => {
                        self.failed.insert(i, why);
                    }
                }
            }
            let open = self.open.get_mut(sid).expect("still open");
            if step.kind == StepKind::End {
                open.ended = true;
                if step.outcome.is_some() {
                    open.outcome_source = Some(OutcomeSource::Explicit);
                }
                out.extend(self.close(sid, CloseReason::End));
                break;
            }
        }
        // An emptied BTreeMap keeps its ~7 KB leaf node: with most sessions in
        // order that node would be most of an open session's memory.
        if let Some(open) = self.open.get_mut(sid)
            && open.pending.is_empty()
        {
            open.pending = BTreeMap::new();
        }
        out
    }

    fn close(&mut self, sid: &str, reason: CloseReason) -> Output {
        let mut out = Output::default();
        let Some(open) = self.open.remove(sid) else { return out };
        self.buffered = self.buffered.saturating_sub(open.buffered);
        if let Some(v) = open.row {
            self.obsolete.push((sid.to_string(), v));
        }
        let features = open.acc.finish();
        match reason {
            CloseReason::End => self.stats.closed_end += 1,
            CloseReason::Idle => self.stats.closed_idle += 1,
            CloseReason::Flush => self.stats.closed_flush += 1,
        }
        let segment = open.segment.map(|i| self.baseline.segments[i].key.clone());
        if let Some(i) = open.segment.filter(|i| !self.failed.contains_key(i)) {
            if open.fallback_from.is_some() {
                self.stats.fallback_sessions += 1;
            }
            self.stats
                .segments
                .entry(self.baseline.segments[i].key.to_string())
                .or_default()
                .add(&features, open.fallback_from.is_some());
            let ctx = Ctx {
                session_id: sid,
                ts: open.last_ts,
                fallback_from: open.fallback_from.as_ref(),
            };
            let (det, seg) = (&mut self.detectors[i], &self.baseline.segments[i]);
            match guarded(|| det.on_session_end(seg, &ctx, &features)) {
                Ok(events) => {
                    for e in &events {
                        *self.stats.events.entry(e.detector.clone()).or_insert(0) += 1;
                    }
                    out.events.extend(events);
                    out.points.extend(readings_of(det, i, &ctx));
                }
                Err(why) => self.fail_segment(i, why),
            }
        } else {
            self.stats.unscored_sessions += 1;
        }
        self.remember_closed(
            sid,
            ClosedInfo {
                segment: open.segment,
                fallback: open.fallback_from.clone(),
                confident: features.confident,
                outcome_source: features.outcome.and(open.outcome_source),
                cost: features.get(crate::features::Feature::CostUsd),
                closed_ms: open.last_seen_ms,
                last_ts: open.last_ts,
                trace_id: open.trace_id.clone(),
            },
        );
        out.closed.push(ClosedSession {
            session_id: sid.to_string(),
            segment,
            fallback_from: open.fallback_from,
            reason,
            outcome_source: features.outcome.and(open.outcome_source),
            features,
            steps: open.scored,
            last_ts: open.last_ts,
            agent: (!open.agent.is_empty()).then(|| open.agent.clone()),
            first_ts: (open.scored > 0).then_some(open.first_ts),
            trace_id: open.trace_id.clone(),
        });
        out
    }

    fn remember_closed(&mut self, sid: &str, info: ClosedInfo) {
        if self.closed.insert(sid.to_string(), info).is_none() {
            self.closed_order.push_back(sid.to_string());
            if self.closed_order.len() > CLOSED_MEMORY
                && let Some(old) = self.closed_order.pop_front()
            {
                self.closed.remove(&old);
            }
        }
    }

    fn fail_segment(&mut self, i: usize, why: String) {
        self.failed.insert(i, why);
    }

    /// Starts (or stops) reporting session-level chart readings in each
    /// [`Output`] (the console's chart view; off by default, and after a restore).
    pub fn record_chart_points(&mut self, on: bool) {
        for d in &mut self.detectors {
            d.record_points(on);
        }
    }

    /// How many segments stopped scoring.
    pub fn failed_count(&self) -> usize {
        self.failed.len()
    }

    /// Segments that stopped scoring (a detector panicked), with why.
    pub fn failed_segments(&self) -> Vec<(String, String)> {
        self.failed
            .iter()
            .map(|(i, why)| (self.baseline.segments[*i].key.to_string(), why.clone()))
            .collect()
    }

    /// Whether a session is open.
    pub fn is_open(&self, sid: &str) -> bool {
        self.open.contains_key(sid) || self.saved.contains_key(sid)
    }

    /// The trace id of a session's first step, open or recently closed.
    pub fn trace_of(&self, sid: &str) -> Option<&str> {
        match self.open.get(sid) {
            Some(o) => o.trace_id.as_deref(),
            None => self.closed.get(sid).and_then(|c| c.trace_id.as_deref()),
        }
    }

    /// Gives an open session an outcome without closing it (an evaluation,
    /// or one inferred from its root spans); a weaker source never replaces
    /// a stronger one. False when the session is not open.
    pub fn set_outcome(&mut self, sid: &str, outcome: Outcome, reward: Option<f64>, source: OutcomeSource) -> bool {
        self.load(sid);
        let Some(open) = self.open.get_mut(sid) else {
            return false;
        };
        if open.outcome_source.is_none_or(|s| source >= s) {
            open.acc.set_outcome(outcome, reward);
            open.outcome_source = Some(source);
            open.changed = true;
        }
        true
    }

    /// An outcome reported for a session, at log time `now_ms`. An open
    /// session ends with it. A session that closed without an outcome less
    /// than `window_ms` ago feeds it to its outcome-rate charts (failure,
    /// calibration) and its totals; anything else is only recorded.
    pub fn report_outcome(
        &mut self,
        sid: &str,
        outcome: Outcome,
        reward: Option<f64>,
        source: OutcomeSource,
        now_ms: i64,
        window_ms: i64,
    ) -> (Output, OutcomeVerdict) {
        self.load(sid);
        if self.open.contains_key(sid) {
            self.set_outcome(sid, outcome, reward, source);
            return (self.close_session(sid, CloseReason::End), OutcomeVerdict::Ended);
        }
        let Some(info) = self.closed.get_mut(sid) else {
            return (Output::default(), OutcomeVerdict::Unknown);
        };
        let recorded = |reason: String| (Output::default(), OutcomeVerdict::Recorded { reason });
        if let Some(had) = info.outcome_source {
            return recorded(format!("the session closed with an outcome ({})", had.as_str()));
        }
        let late_by = now_ms - info.closed_ms;
        if late_by > window_ms {
            return recorded(format!(
                "it arrived {} s after the session closed; the window is {} s",
                late_by / 1000,
                window_ms / 1000
            ));
        }
        info.outcome_source = Some(source);
        let info = info.clone();
        let Some(i) = info.segment else {
            return recorded("the session is not scored".into());
        };
        let mut out = Output::default();
        let success = outcome == Outcome::Success;
        let totals = self
            .stats
            .segments
            .entry(self.baseline.segments[i].key.to_string())
            .or_default();
        totals.add_late_outcome(outcome, info.cost);
        self.stats.late_outcomes += 1;
        let ctx = Ctx {
            session_id: sid,
            ts: info.last_ts,
            fallback_from: info.fallback.as_ref(),
        };
        if self.failed.contains_key(&i) {
            return recorded("the session's segment stopped scoring".into());
        }
        let seg = &self.baseline.segments[i];
        let det = &mut self.detectors[i];
        match guarded(|| det.on_late_outcome(seg, &ctx, success, info.confident)) {
            Ok(events) => {
                for e in &events {
                    *self.stats.events.entry(e.detector.clone()).or_insert(0) += 1;
                }
                out.events = events;
                out.points.extend(readings_of(det, i, &ctx));
            }
            Err(why) => self.fail_segment(i, why),
        }
        (out, OutcomeVerdict::Charted)
    }

    /// Sessions idle since before `now_ms − idle_timeout_ms`, oldest first.
    pub fn idle_sessions(&self, now_ms: i64) -> Vec<String> {
        let idle = |seen: i64| now_ms - seen >= self.idle_timeout_ms;
        let mut v: Vec<(&String, i64)> = self
            .open
            .iter()
            .map(|(k, o)| (k, o.last_seen_ms))
            .chain(self.saved.iter().map(|(k, r)| (k, r.last_seen_ms)))
            .filter(|(_, seen)| idle(*seen))
            .collect();
        v.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(b.0)));
        v.into_iter().map(|(k, _)| k.clone()).collect()
    }

    /// Closes one session at log time `now_ms` (an outcome reported later
    /// counts its window from then).
    pub fn close_session_at(&mut self, sid: &str, reason: CloseReason, now_ms: i64) -> Output {
        self.load(sid);
        if let Some(o) = self.open.get_mut(sid) {
            o.last_seen_ms = o.last_seen_ms.max(now_ms);
        }
        self.close_session(sid, reason)
    }

    /// Closes one session now (idle timeout or flush), scoring buffered steps across gaps.
    pub fn close_session(&mut self, sid: &str, reason: CloseReason) -> Output {
        self.load(sid);
        let mut out = self.release(sid, true);
        if self.open.contains_key(sid) {
            out.extend(self.close(sid, reason));
        }
        out
    }

    /// Whether a session is open and got no step after input position `after`.
    pub fn idle_since(&self, sid: &str, after: i64) -> bool {
        match self.open.get(sid) {
            Some(o) => o.last_pos <= after,
            None => self.saved.get(sid).is_some_and(|r| r.last_pos <= after),
        }
    }

    /// Closes a session for idleness only if no step arrived after input
    /// position `after` (a close decided at `after` and applied later).
    pub fn close_if_idle_since(&mut self, sid: &str, after: i64) -> Output {
        if self.idle_since(sid, after) {
            self.close_session(sid, CloseReason::Idle)
        } else {
            Output::default()
        }
    }

    /// Closes every idle session.
    pub fn close_idle(&mut self, now_ms: i64) -> Output {
        let mut out = Output::default();
        for sid in self.idle_sessions(now_ms) {
            out.extend(self.close_session(&sid, CloseReason::Idle));
        }
        out
    }

    /// Counts a log row that could not be read (it is skipped, not lost silently).
    pub fn count_unreadable(&mut self) {
        self.stats.unreadable_log_rows += 1;
    }

    /// Closes every open session (end of a replay).
    pub fn flush(&mut self) -> Output {
        let mut ids: Vec<String> = self.open.keys().chain(self.saved.keys()).cloned().collect();
        ids.sort();
        let mut out = Output::default();
        for sid in ids {
            out.extend(self.close_session(&sid, CloseReason::Flush));
        }
        out
    }

    /// The changing state, for a snapshot.
    pub fn state(&self) -> ScorerState {
        ScorerState {
            baseline_id: self.baseline_id.clone(),
            detectors: self.detectors.clone(),
            open: self
                .open
                .iter()
                .filter(|(_, o)| o.needs_row())
                .map(|(k, v)| (k.clone(), (**v).clone()))
                .collect(),
            versions: self.versions,
            closed_order: self.closed_order.clone(),
            closed_info: self.closed.clone(),
            stats: self.stats.clone(),
        }
    }

    /// The changing state borrowed, to encode a snapshot without copying it.
    pub fn state_ref(&self) -> ScorerStateRef<'_> {
        ScorerStateRef {
            baseline_id: &self.baseline_id,
            detectors: &self.detectors,
            open: saved::Unsaved(&self.open),
            versions: self.versions,
            closed_order: &self.closed_order,
            closed_info: &self.closed,
            stats: &self.stats,
        }
    }

    /// Restores a snapshot taken from a scorer of the same baseline.
    pub fn restore(&mut self, s: ScorerState) -> Result<(), EngineError> {
        if s.baseline_id != self.baseline_id || s.detectors.len() != self.detectors.len() {
            return Err(EngineError::Snapshot);
        }
        self.detectors = s.detectors;
        self.open = s
            .open
            .into_iter()
            .map(|(k, mut v)| {
                v.changed = true;
                (k, Box::new(v))
            })
            .collect();
        self.saved.clear();
        self.versions = s.versions;
        self.obsolete.clear();
        self.buffered = 0;
        for o in self.open.values_mut() {
            o.buffered = o.pending.values().map(Step::approx_bytes).sum();
            self.buffered += o.buffered;
        }
        let mut info = s.closed_info;
        self.closed = s
            .closed_order
            .iter()
            .map(|id| (id.clone(), info.remove(id).unwrap_or_default()))
            .collect();
        self.closed_order = s.closed_order;
        self.stats = s.stats;
        Ok(())
    }
}
