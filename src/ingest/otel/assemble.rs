//! Spans → sessions, whatever the batching. An exporter sends a trace's
//! spans in any order over any number of requests (children usually before
//! their parents), and content may come separately as log events. The
//! assembler holds a trace's spans until the trace is *settled* — its root
//! span arrived and nothing more came for `settle_ms`, or nothing came for
//! `timeout_ms` (then its identity is *unresolved*) — and only then decides
//! session, agent and task type from the whole tree and releases its steps
//! in start order. A span that arrives after its trace settled joins the
//! session its trace went to.
//!
//! Pure and deterministic: time comes in with the calls, decisions that
//! depend on time are made by [`Assembler::settle`] when the caller says
//! so, and the whole state serialises (the service snapshots it).
//!
//! Identity rules (README "OpenTelemetry mapping"):
//! - **session**: the nearest ancestor-or-self span with `session.id` /
//!   `gen_ai.conversation.id`; else the root-most span of the trace with
//!   one; else the resource's; else the trace id. Traces sharing a session
//!   id form one session. A trace naming several sessions is counted.
//! - **agent**: the nearest ancestor-or-self span naming an agent
//!   (`gen_ai.agent.name`, `agent.name`, an `invoke_agent NAME` span, an
//!   OpenLLMetry `agent` entity); else the resource's `service.name`. An
//!   unnamed agent or workflow span is neither an agent nor a handoff.
//! - **handoff**: a named agent span that starts while another named agent
//!   is active in the session.
//! - **user steps**: the user messages of a model call's input that follow
//!   its last assistant message (the turns new since the previous call).
//! - **tool steps** when no tool span exists in the session: one per tool
//!   call the model requested, completed by the tool result the next call's
//!   input carries (matched by call id).

use super::messages::{Message, MsgRole, ToolCall};
use super::span::{OutcomeHint, SpanRecord, SpanRole};
use crate::model::{Outcome, OutcomeSource, Status, Step, StepKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};

/// Content of one model call sent as log events (all the events of one
/// span in one export request, reduced).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContentRecord {
    /// Trace id, hex.
    pub trace_id: String,
    /// Span id, hex.
    pub span_id: String,
    /// Time of the first event, unix ns (orders several records of a span).
    pub time_ns: u64,
    /// Input messages after the last assistant one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_tail: Vec<Message>,
    /// Whether the input held an assistant message.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub input_has_assistant: bool,
    /// The model's output messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output: Vec<Message>,
    /// An evaluation result for the span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<OutcomeHint>,
}

/// Settings of the assembler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssembleConfig {
    /// Quiet time after the root arrived before a trace settles, ms.
    pub settle_ms: i64,
    /// Quiet time after which a trace without root settles unresolved, ms.
    pub timeout_ms: i64,
    /// Spans held in unsettled traces at most; beyond, the oldest trace settles.
    pub max_pending_spans: usize,
    /// Settled traces remembered for late spans.
    pub remembered_traces: usize,
    /// Sessions remembered (seq counters, handoff state).
    pub remembered_sessions: usize,
    /// Infer an outcome from root-span status when nothing else gives one.
    pub root_status_outcome: bool,
}

impl Default for AssembleConfig {
    fn default() -> Self {
        AssembleConfig {
            settle_ms: 5_000,
            timeout_ms: 300_000,
            max_pending_spans: 1_000_000,
            remembered_traces: 50_000,
            remembered_sessions: 100_000,
            root_status_outcome: true,
        }
    }
}

/// How a session's identity was settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Identity {
    /// Every trace of it settled with its root.
    Resolved,
    /// A trace of it settled without its root (after the timeout).
    Unresolved,
}

impl Identity {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Identity::Resolved => "resolved",
            Identity::Unresolved => "unresolved",
        }
    }
}

/// What one call produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Assembled {
    /// Steps to score, each session's in `seq` order.
    pub steps: Vec<Step>,
    /// (trace, session) pairs first seen: where to find a session's spans.
    pub links: Vec<(String, String)>,
    /// (trace, input position) of the inputs that hold a trace's spans and content.
    pub request_links: Vec<(String, i64)>,
    /// Sessions first seen, or whose identity changed.
    pub sessions: Vec<(String, Identity)>,
    /// Outcomes (evaluations) that arrived for sessions already closed.
    pub outcomes: Vec<(String, OutcomeHint)>,
}

impl Assembled {
    fn extend(&mut self, o: Assembled) {
        self.steps.extend(o.steps);
        self.links.extend(o.links);
        self.request_links.extend(o.request_links);
        self.sessions.extend(o.sessions);
        self.outcomes.extend(o.outcomes);
    }
}

/// Counters, for metrics and `/v1/otlp/status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AssembleStats {
    /// Spans taken.
    pub spans: u64,
    /// Traces settled after their root arrived.
    pub traces_resolved: u64,
    /// Traces settled without a root (timeout, or the input ended).
    pub traces_unresolved: u64,
    /// Traces settled early because too many spans were held.
    pub traces_forced: u64,
    /// Spans that arrived after their trace settled.
    pub late_spans: u64,
    /// Content records that arrived after their model call was released
    /// (replay shows them; the scored features do not).
    pub late_content: u64,
    /// Content records whose span never arrived.
    pub orphan_content: u64,
    /// Traces that named more than one session.
    pub session_conflicts: u64,
    /// Explicit outcomes for a session that already had one.
    pub repeated_outcomes: u64,
    /// User steps taken from model inputs.
    pub user_steps: u64,
    /// Tool steps rebuilt from requested calls (no tool spans).
    pub synthesized_tools: u64,
    /// Model spans nested in model spans, counted once.
    pub nested_llm: u64,
    /// Spans received again (same trace and span id), dropped.
    #[serde(default)]
    pub duplicate_spans: u64,
}

/// A bounded map that forgets its oldest entries.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Fifo<V> {
    map: HashMap<String, V>,
    order: VecDeque<String>,
}

impl<V> Fifo<V> {
    fn get(&self, k: &str) -> Option<&V> {
        self.map.get(k)
    }
    fn get_mut(&mut self, k: &str) -> Option<&mut V> {
        self.map.get_mut(k)
    }
    /// Inserts; returns the entries pushed out by the cap.
    fn insert(&mut self, k: String, v: V, cap: usize) -> Vec<(String, V)> {
        if self.map.insert(k.clone(), v).is_none() {
            self.order.push_back(k);
        }
        let mut out = Vec::new();
        while self.order.len() > cap.max(1) {
            if let Some(old) = self.order.pop_front()
                && let Some(v) = self.map.remove(&old)
            {
                out.push((old, v));
            }
        }
        out
    }
    fn remove(&mut self, k: &str) -> Option<V> {
        let v = self.map.remove(k)?;
        if let Some(i) = self.order.iter().position(|x| x == k) {
            self.order.remove(i);
        }
        Some(v)
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct PendingTrace {
    spans: Vec<SpanRecord>,
    content: Vec<ContentRecord>,
    root: bool,
    first_ms: i64,
    last_ms: i64,
    last_pos: i64,
    /// Input positions that hold its spans or content.
    positions: Vec<i64>,
}

impl PendingTrace {
    /// When its earliest span started (content-only traces sort last).
    fn started(&self) -> u64 {
        self.spans.iter().map(|s| s.start_ns).min().unwrap_or(u64::MAX)
    }
}

/// What is remembered of a settled span, for late spans and late content.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SpanInfo {
    depth: u32,
    /// Session, agent and task type as indices into the trace's `names`.
    session: u32,
    agent: u32,
    task_type: Option<u32>,
    /// Whether it is a model call (late content patches it).
    llm: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct SettledTrace {
    session: String,
    task_type: Option<String>,
    /// The distinct session, agent and task-type strings its spans use.
    names: Vec<String>,
    spans: HashMap<String, SpanInfo>,
    /// Content for spans that have not arrived.
    waiting: Vec<ContentRecord>,
}

/// A tool call requested by the model, waiting for its result.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PendingCall {
    call: ToolCall,
    ts: i64,
    time_ns: u64,
    template: Step,
    index: usize,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct SessionState {
    /// Tool calls the latest model call requested, and whether a tool span took each.
    #[serde(default)]
    requested: Vec<(ToolCall, bool)>,
    next_seq: u64,
    agent: Option<String>,
    user_seen: Vec<u64>,
    tool_spans: bool,
    unanswered: Vec<PendingCall>,
    outcome: Option<OutcomeHint>,
    roots: u32,
    root_errors: u32,
    ended: bool,
    unresolved: bool,
    last_ts: i64,
}

/// The whole assembler state (serialisable for snapshots).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Assembler {
    config: AssembleConfig,
    pending: BTreeMap<String, PendingTrace>,
    pending_spans: usize,
    settled: Fifo<SettledTrace>,
    sessions: Fifo<SessionState>,
    /// Next seq of sessions forgotten after they closed.
    closed_seq: Fifo<u64>,
    stats: AssembleStats,
}

fn hash_text(t: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    t.hash(&mut h);
    h.finish()
}

/// One step with its place in the session's order.
struct Item {
    time_ns: u64,
    rank: u8,
    depth: u32,
    key: String,
    step: Step,
    /// For a tool span answering a requested call: (which model call of
    /// this batch asked, the call's index in its request).
    call: Option<(u32, usize)>,
}

/// Puts the tool spans that answer one model call's parallel requests in
/// the order the model asked for them: concurrent tools start in whatever
/// order their threads ran, which must not change the session's sequence.
fn in_request_order(items: &mut [Item]) {
    let mut i = 0;
    while i < items.len() {
        let Some((generation, _)) = items[i].call else {
            i += 1;
            continue;
        };
        let mut j = i + 1;
        while j < items.len() && items[j].call.is_some_and(|(g, _)| g == generation) {
            j += 1;
        }
        items[i..j].sort_by_key(|it| it.call.map(|c| c.1));
        i = j;
    }
}

impl Assembler {
    /// An empty assembler.
    pub fn new(config: AssembleConfig) -> Assembler {
        Assembler {
            config,
            ..Assembler::default()
        }
    }

    /// Counters.
    pub fn stats(&self) -> &AssembleStats {
        &self.stats
    }

    /// Traces waiting to settle, and the spans they hold.
    pub fn pending(&self) -> (usize, usize) {
        (self.pending.len(), self.pending_spans)
    }

    /// Replaces the settings (after a restore: the configuration wins).
    pub fn set_config(&mut self, config: AssembleConfig) {
        self.config = config;
    }

    /// Takes one span, received at `received_ms` at input position `pos`.
    pub fn add_span(&mut self, rec: SpanRecord, received_ms: i64, pos: i64) -> Assembled {
        self.stats.spans += 1;
        if let Some(t) = self.settled.get(&rec.trace_id) {
            if t.spans.contains_key(&rec.span_id) {
                self.stats.duplicate_spans += 1;
                return Assembled::default();
            }
            self.stats.late_spans += 1;
            return self.late_span(rec, pos);
        }
        let t = self
            .pending
            .entry(rec.trace_id.clone())
            .or_insert_with(|| PendingTrace {
                first_ms: received_ms,
                ..PendingTrace::default()
            });
        t.root |= rec.parent.is_none();
        t.last_ms = t.last_ms.max(received_ms);
        t.last_pos = t.last_pos.max(pos);
        if t.positions.last() != Some(&pos) {
            t.positions.push(pos);
        }
        t.spans.push(rec);
        self.pending_spans += 1;
        self.enforce_cap()
    }

    /// Takes the content of a model call sent as log events.
    pub fn add_content(&mut self, c: ContentRecord, received_ms: i64, pos: i64) -> Assembled {
        if let Some(t) = self.settled.get_mut(&c.trace_id) {
            let link = Assembled {
                request_links: vec![(c.trace_id.clone(), pos)],
                ..Assembled::default()
            };
            let Some(info) = t.spans.get(&c.span_id) else {
                t.waiting.push(c);
                self.stats.orphan_content += 1;
                return link;
            };
            self.stats.late_content += 1;
            let mut out = link;
            let session = t.names[info.session as usize].clone();
            // Replay re-assembles the trace with it; the scored features do not change.
            if let Some(hint) = c.evaluation
                && let Some(late) = self.note_outcome(&session, hint)
            {
                out.outcomes.push((session, late));
            }
            return out;
        }
        let t = self.pending.entry(c.trace_id.clone()).or_insert_with(|| PendingTrace {
            first_ms: received_ms,
            ..PendingTrace::default()
        });
        t.last_ms = t.last_ms.max(received_ms);
        t.last_pos = t.last_pos.max(pos);
        if t.positions.last() != Some(&pos) {
            t.positions.push(pos);
        }
        t.content.push(c);
        Assembled::default()
    }

    /// Traces due to settle at `now_ms`, with the input position each was
    /// judged at (pass it back to [`Assembler::settle`]).
    /// Traces due together come in the order they started, so the traces
    /// of one conversation settle turn by turn.
    pub fn due(&self, now_ms: i64) -> Vec<(String, i64)> {
        let mut due: Vec<(u64, &String, i64)> = self
            .pending
            .iter()
            .filter(|(_, t)| {
                let quiet = now_ms - t.last_ms;
                (t.root && quiet >= self.config.settle_ms) || quiet >= self.config.timeout_ms
            })
            .map(|(id, t)| (t.started(), id, t.last_pos))
            .collect();
        due.sort();
        due.into_iter().map(|(_, id, pos)| (id.clone(), pos)).collect()
    }

    /// Settles a trace judged due at input position `after`, unless a span
    /// of it arrived since.
    pub fn settle(&mut self, trace_id: &str, after: i64) -> Assembled {
        match self.pending.get(trace_id) {
            Some(t) if t.last_pos <= after => {
                let t = self.pending.remove(trace_id).expect("present");
                self.release(trace_id, t)
            }
            _ => Assembled::default(),
        }
    }

    /// Settles every pending trace (the end of a file), in the order they started.
    pub fn flush(&mut self) -> Assembled {
        let mut order: Vec<(u64, String)> = self.pending.iter().map(|(id, t)| (t.started(), id.clone())).collect();
        order.sort();
        let ids: Vec<String> = order.into_iter().map(|(_, id)| id).collect();
        let mut out = Assembled::default();
        for id in ids {
            let t = self.pending.remove(&id).expect("present");
            out.extend(self.release(&id, t));
        }
        out
    }

    /// A session is closing: steps still owed to it (requested tool calls
    /// whose result never came) and the outcome its traces implied.
    pub fn closing(&mut self, session_id: &str) -> (Vec<Step>, Option<OutcomeHint>) {
        let Some(mut s) = self.sessions.remove(session_id) else {
            return (Vec::new(), None);
        };
        let mut steps = Vec::new();
        for p in std::mem::take(&mut s.unanswered) {
            let mut step = synthesized_tool(&p, None);
            step.seq = s.next_seq;
            s.next_seq += 1;
            self.stats.synthesized_tools += 1;
            steps.push(step);
        }
        let outcome = s.outcome.clone().or_else(|| {
            (self.config.root_status_outcome && s.roots > 0 && !s.ended).then_some(OutcomeHint {
                outcome: if s.root_errors > 0 {
                    Outcome::Failure
                } else {
                    Outcome::Success
                },
                reward: None,
                source: OutcomeSource::RootStatus,
                termination_reason: None,
            })
        });
        let cap = self.config.remembered_sessions;
        self.closed_seq.insert(session_id.to_string(), s.next_seq, cap);
        (steps, outcome.filter(|_| !s.ended))
    }

    fn enforce_cap(&mut self) -> Assembled {
        let mut out = Assembled::default();
        while self.pending_spans > self.config.max_pending_spans {
            // The trace that has waited longest goes first.
            let Some(oldest) = self
                .pending
                .iter()
                .min_by_key(|(id, t)| (t.first_ms, (*id).clone()))
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            let t = self.pending.remove(&oldest).expect("present");
            self.stats.traces_forced += 1;
            out.extend(self.release(&oldest, t));
        }
        out
    }

    /// Records an outcome for an open session; returns it back when the
    /// session is no longer tracked (closed: it is a late outcome).
    fn note_outcome(&mut self, session: &str, hint: OutcomeHint) -> Option<OutcomeHint> {
        match self.sessions.get_mut(session) {
            Some(s) => {
                let better = s.outcome.as_ref().is_none_or(|o| hint.source >= o.source);
                if better {
                    s.outcome = Some(hint);
                }
                None
            }
            None => Some(hint),
        }
    }

    fn session_mut(&mut self, id: &str, out: &mut Assembled, unresolved: bool) -> &mut SessionState {
        if self.sessions.get(id).is_none() {
            let next_seq = self.closed_seq.remove(id).unwrap_or(0);
            let cap = self.config.remembered_sessions;
            let evicted = self.sessions.insert(
                id.to_string(),
                SessionState {
                    next_seq,
                    unresolved,
                    ..SessionState::default()
                },
                cap,
            );
            for (old, st) in evicted {
                self.closed_seq.insert(old, st.next_seq, cap);
            }
            out.sessions.push((
                id.to_string(),
                if unresolved {
                    Identity::Unresolved
                } else {
                    Identity::Resolved
                },
            ));
        } else if unresolved {
            let s = self.sessions.get_mut(id).expect("present");
            if !s.unresolved {
                s.unresolved = true;
                out.sessions.push((id.to_string(), Identity::Unresolved));
            }
        }
        self.sessions.get_mut(id).expect("present")
    }

    /// A span of a settled trace: its identity comes from what is
    /// remembered of its ancestors.
    fn late_span(&mut self, mut rec: SpanRecord, pos: i64) -> Assembled {
        let trace = self.settled.get_mut(&rec.trace_id).expect("settled");
        let parent = rec.parent.as_ref().and_then(|p| trace.spans.get(p)).cloned();
        let depth = match (&rec.parent, &parent) {
            (None, _) => 0,
            (Some(_), Some(p)) => p.depth + 1,
            (Some(_), None) => 1,
        };
        let name = |i: u32| trace.names[i as usize].clone();
        let session = rec
            .session
            .clone()
            .or_else(|| parent.as_ref().map(|p| name(p.session)))
            .unwrap_or_else(|| trace.session.clone());
        let agent = rec
            .agent
            .clone()
            .or_else(|| parent.as_ref().map(|p| name(p.agent)))
            .or_else(|| rec.resource.service.clone())
            .unwrap_or_else(|| UNKNOWN_AGENT.to_string());
        let task_type = rec
            .task_type
            .clone()
            .or_else(|| parent.as_ref().and_then(|p| p.task_type.map(name)))
            .or_else(|| trace.task_type.clone())
            .or_else(|| rec.resource.task_type.clone());
        // Content that waited for this span.
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut trace.waiting)
            .into_iter()
            .partition(|c| c.span_id == rec.span_id);
        trace.waiting = rest;
        let found = mine.len() as u64;
        merge_content(&mut rec, mine);
        let info = SpanInfo {
            depth,
            session: intern(&mut trace.names, &session),
            agent: intern(&mut trace.names, &agent),
            task_type: task_type.as_deref().map(|t| intern(&mut trace.names, t)),
            llm: rec.role == SpanRole::Llm,
        };
        trace.spans.insert(rec.span_id.clone(), info);
        let resolved = ResolvedSpan {
            depth,
            session,
            agent,
            task_type,
            inside_llm: parent.as_ref().is_some_and(|p| p.llm),
        };
        self.stats.orphan_content = self.stats.orphan_content.saturating_sub(found);
        let mut out = Assembled {
            request_links: vec![(rec.trace_id.clone(), pos)],
            ..Assembled::default()
        };
        self.emit(vec![(rec, resolved)], false, &mut out);
        out
    }

    /// Settles a trace: identity from the whole tree, then its steps.
    fn release(&mut self, trace_id: &str, t: PendingTrace) -> Assembled {
        let mut out = Assembled::default();
        self.pending_spans -= t.spans.len();
        let unresolved = !t.root;
        if unresolved {
            self.stats.traces_unresolved += 1;
        } else {
            self.stats.traces_resolved += 1;
        }
        out.request_links = t.positions.iter().map(|p| (trace_id.to_string(), *p)).collect();
        let mut spans = t.spans;
        // Duplicate span ids (a re-export) keep the first.
        let before = spans.len();
        let mut seen = std::collections::HashSet::new();
        spans.retain(|s| seen.insert(s.span_id.clone()));
        self.stats.duplicate_spans += (before - spans.len()) as u64;
        let mut content: BTreeMap<String, Vec<ContentRecord>> = BTreeMap::new();
        for c in t.content {
            content.entry(c.span_id.clone()).or_default().push(c);
        }
        for s in &mut spans {
            if let Some(parts) = content.remove(&s.span_id) {
                merge_content(s, parts);
            }
        }
        let waiting: Vec<ContentRecord> = content.into_values().flatten().collect();
        // Content whose span is not in the trace: orphan unless the span comes late.
        self.stats.orphan_content += waiting.len() as u64;

        let index: HashMap<&str, usize> = spans.iter().enumerate().map(|(i, s)| (s.span_id.as_str(), i)).collect();
        let parent_of: Vec<Option<usize>> = spans
            .iter()
            .map(|s| s.parent.as_deref().and_then(|p| index.get(p).copied()))
            .collect();
        // Ancestors, nearest first, bounded against parent cycles.
        let chain = |i: usize| {
            let mut c = vec![i];
            let mut cur = parent_of[i];
            while let Some(p) = cur {
                if c.len() > spans.len() {
                    break;
                }
                c.push(p);
                cur = parent_of[p];
            }
            c
        };
        let chains: Vec<Vec<usize>> = (0..spans.len()).map(chain).collect();
        let depth = |i: usize| {
            let c = &chains[i];
            let top = *c.last().expect("self");
            (c.len() - 1) as u32 + u32::from(spans[top].parent.is_some())
        };
        // The trace's own session and task type: the root-most span carrying one.
        let root_most = |f: &dyn Fn(&SpanRecord) -> Option<&String>| -> Option<String> {
            (0..spans.len())
                .filter(|&i| f(&spans[i]).is_some())
                .min_by_key(|&i| (depth(i), spans[i].start_ns, spans[i].span_id.clone()))
                .and_then(|i| f(&spans[i]).cloned())
        };
        let trace_session = root_most(&|s| s.session.as_ref())
            .or_else(|| spans.iter().find_map(|s| s.resource.session.clone()))
            .unwrap_or_else(|| trace_id.to_string());
        let trace_task =
            root_most(&|s| s.task_type.as_ref()).or_else(|| spans.iter().find_map(|s| s.resource.task_type.clone()));
        let distinct: std::collections::BTreeSet<&String> = spans.iter().filter_map(|s| s.session.as_ref()).collect();
        if distinct.len() > 1 {
            self.stats.session_conflicts += 1;
        }
        let mut resolved: Vec<ResolvedSpan> = Vec::with_capacity(spans.len());
        for i in 0..spans.len() {
            let c = &chains[i];
            let session = c
                .iter()
                .find_map(|&j| spans[j].session.clone())
                .unwrap_or_else(|| trace_session.clone());
            let agent = c
                .iter()
                .find_map(|&j| spans[j].agent.clone())
                .or_else(|| spans[i].resource.service.clone())
                .unwrap_or_else(|| UNKNOWN_AGENT.to_string());
            let task_type = c
                .iter()
                .find_map(|&j| spans[j].task_type.clone())
                .or_else(|| trace_task.clone())
                .or_else(|| spans[i].resource.task_type.clone());
            resolved.push(ResolvedSpan {
                depth: depth(i),
                session,
                agent,
                task_type,
                inside_llm: c[1..].iter().any(|&j| spans[j].role == SpanRole::Llm),
            });
        }
        let mut settled = SettledTrace {
            session: trace_session,
            task_type: trace_task,
            names: Vec::new(),
            spans: HashMap::with_capacity(spans.len()),
            waiting,
        };
        for (s, r) in spans.iter().zip(&resolved) {
            let info = SpanInfo {
                depth: r.depth,
                session: intern(&mut settled.names, &r.session),
                agent: intern(&mut settled.names, &r.agent),
                task_type: r.task_type.as_deref().map(|t| intern(&mut settled.names, t)),
                llm: s.role == SpanRole::Llm,
            };
            settled.spans.insert(s.span_id.clone(), info);
        }
        let cap = self.config.remembered_traces;
        let _ = self.settled.insert(trace_id.to_string(), settled, cap);
        self.emit(spans.into_iter().zip(resolved).collect(), unresolved, &mut out);
        out
    }

    /// Turns resolved spans into each session's steps, in order.
    fn emit(&mut self, spans: Vec<(SpanRecord, ResolvedSpan)>, unresolved: bool, out: &mut Assembled) {
        let mut by_session: BTreeMap<String, Vec<(SpanRecord, ResolvedSpan)>> = BTreeMap::new();
        for (s, r) in spans {
            by_session.entry(r.session.clone()).or_default().push((s, r));
        }
        for (sid, mut spans) in by_session {
            // Traces of other instrumentation only (no step, agent or outcome) make no session.
            let relevant = spans.iter().any(|(s, _)| {
                s.step.is_some() || s.outcome.is_some() || (s.role == SpanRole::Agent && s.agent.is_some())
            });
            if !relevant {
                continue;
            }
            out.links.push((spans[0].0.trace_id.clone(), sid.clone()));
            spans.sort_by(|a, b| (a.0.start_ns, a.1.depth, &a.0.span_id).cmp(&(b.0.start_ns, b.1.depth, &b.0.span_id)));
            let has_tool_spans = spans
                .iter()
                .any(|(s, _)| matches!(s.role, SpanRole::Tool | SpanRole::Retrieval));
            let mut items: Vec<Item> = Vec::new();
            let mut end: Option<(u64, Step)> = None;
            let mut stats = (0u64, 0u64, 0u64, 0u64);
            {
                let state = self.session_mut(&sid, out, unresolved);
                if has_tool_spans && !state.tool_spans {
                    state.tool_spans = true;
                    state.unanswered.clear();
                }
                let mut generation = 0u32;
                for (rec, r) in spans.iter_mut() {
                    // The step moves out of the record (no copy); the record is read only from here.
                    let template = rec.step.take();
                    let (rec, r) = (&*rec, &*r);
                    let base = |kind: StepKind| {
                        let mut s = Step::new(sid.clone(), 0, (rec.start_ns / 1_000_000) as i64, kind, r.agent.clone());
                        s.task_type = r.task_type.clone();
                        s.trace_id = Some(rec.trace_id.clone());
                        s.parent_span_id = Some(rec.span_id.clone());
                        s.correlation_id = Some(rec.trace_id.clone());
                        s.depth = Some(r.depth);
                        s
                    };
                    if rec.parent.is_none() {
                        state.roots += 1;
                        state.root_errors += u32::from(rec.error);
                    }
                    if rec.role == SpanRole::Agent
                        && let Some(name) = &rec.agent
                    {
                        match &state.agent {
                            Some(prev) if prev != name => {
                                let mut h = base(StepKind::Handoff);
                                h.agent = prev.clone();
                                h.to_agent = Some(name.clone());
                                h.span_id = Some(rec.span_id.clone());
                                h.parent_span_id = rec.parent.clone();
                                items.push(Item {
                                    time_ns: rec.start_ns,
                                    rank: 0,
                                    depth: r.depth,
                                    key: rec.span_id.clone(),
                                    step: h,
                                    call: None,
                                });
                            }
                            _ => {}
                        }
                        state.agent = Some(name.clone());
                    }
                    if let Some(hint) = &rec.outcome {
                        if hint.source == OutcomeSource::Explicit {
                            if state.ended {
                                stats.1 += 1;
                            } else if end.as_ref().is_none_or(|(t, _)| *t <= rec.end_ns) {
                                let mut e = base(StepKind::End);
                                e.ts = (rec.end_ns / 1_000_000) as i64;
                                e.span_id = Some(format!("{}:end", rec.span_id));
                                e.outcome = Some(hint.outcome);
                                e.reward = hint.reward;
                                e.termination_reason = hint.termination_reason.clone();
                                end = Some((rec.end_ns, e));
                            }
                        } else if state.outcome.as_ref().is_none_or(|o| hint.source >= o.source) {
                            state.outcome = Some(hint.clone());
                        }
                    }
                    let Some(template) = template else { continue };
                    if r.inside_llm && template.kind == StepKind::Llm {
                        stats.3 += 1;
                        continue;
                    }
                    let mut step = template;
                    step.trace_id = Some(rec.trace_id.clone());
                    step.span_id = Some(rec.span_id.clone());
                    step.parent_span_id = rec.parent.clone();
                    step.correlation_id = Some(rec.trace_id.clone());
                    step.session_id = sid.clone();
                    step.agent = r.agent.clone();
                    step.task_type = r.task_type.clone();
                    step.depth = Some(r.depth);
                    let mut call_order = None;
                    if step.kind == StepKind::Tool {
                        // The tool span of a call the model asked for: the model's
                        // arguments when the span recorded only the bare value
                        // (LangChain tools of one argument), and the call id.
                        let name = step.tool.clone().unwrap_or_default();
                        if let Some((index, (call, used))) = state
                            .requested
                            .iter_mut()
                            .enumerate()
                            .find(|(_, (c, u))| !*u && c.name == name)
                        {
                            *used = true;
                            call_order = Some((generation, index));
                            if !matches!(step.args, Some(Value::Object(_)))
                                && let Some(a @ Value::Object(_)) = &call.arguments
                            {
                                step.args = Some(a.clone());
                            }
                            if let (Some(id), Some(attrs)) = (&call.id, step.attributes.as_mut()) {
                                attrs
                                    .entry("gen_ai.tool.call.id")
                                    .or_insert_with(|| Value::String(id.clone()));
                            }
                        }
                    }
                    if step.kind == StepKind::Llm {
                        generation += 1;
                        state.requested = rec.tool_calls.iter().map(|c| (c.clone(), false)).collect();
                        // Tool results answer the calls the previous model call asked for.
                        for m in rec.input_tail.iter().filter(|m| m.role == MsgRole::Tool) {
                            let pos = match &m.tool_call_id {
                                Some(id) => state.unanswered.iter().position(|p| p.call.id.as_deref() == Some(id)),
                                None => (!state.unanswered.is_empty()).then_some(0),
                            };
                            if let Some(pos) = pos {
                                let p = state.unanswered.remove(pos);
                                stats.0 += 1;
                                items.push(Item {
                                    time_ns: p.time_ns,
                                    rank: 1,
                                    depth: r.depth,
                                    key: format!("{:08}", p.index),
                                    step: synthesized_tool(&p, Some(m)),
                                    call: None,
                                });
                            }
                        }
                        let fresh_context = !rec.input_has_assistant;
                        for (k, m) in rec.input_tail.iter().filter(|m| m.role == MsgRole::User).enumerate() {
                            let text = m.text.clone().unwrap_or_default();
                            let h = hash_text(&text);
                            if fresh_context && state.user_seen.contains(&h) {
                                continue;
                            }
                            if state.user_seen.len() < 10_000 {
                                state.user_seen.push(h);
                            }
                            let mut u = base(StepKind::User);
                            u.span_id = Some(format!("{}:user:{k}", rec.span_id));
                            u.text = Some(text);
                            u.latency_ms = None;
                            stats.2 += 1;
                            items.push(Item {
                                time_ns: rec.start_ns,
                                rank: 1,
                                depth: r.depth,
                                key: format!("{}:user:{k:04}", rec.span_id),
                                step: u,
                                call: None,
                            });
                        }
                        if !state.tool_spans {
                            for (j, call) in rec.tool_calls.iter().enumerate() {
                                let mut t = base(StepKind::Tool);
                                t.ts = (rec.end_ns / 1_000_000) as i64;
                                t.span_id = Some(format!("{}:tool:{j}", rec.span_id));
                                state.unanswered.push(PendingCall {
                                    call: call.clone(),
                                    ts: t.ts,
                                    time_ns: rec.end_ns.saturating_add(j as u64),
                                    template: t,
                                    index: j,
                                });
                            }
                        }
                    }
                    items.push(Item {
                        time_ns: rec.start_ns,
                        rank: 2,
                        depth: r.depth,
                        key: rec.span_id.clone(),
                        step,
                        call: call_order,
                    });
                }
                items.sort_by(|a, b| (a.time_ns, a.rank, a.depth, &a.key).cmp(&(b.time_ns, b.rank, b.depth, &b.key)));
                in_request_order(&mut items);
                if let Some((_, e)) = end.take() {
                    state.ended = true;
                    items.push(Item {
                        time_ns: u64::MAX,
                        rank: 9,
                        depth: 0,
                        key: String::new(),
                        step: e,
                        call: None,
                    });
                }
                for mut it in items {
                    it.step.seq = state.next_seq;
                    state.next_seq += 1;
                    state.last_ts = state.last_ts.max(it.step.ts);
                    out.steps.push(it.step);
                }
            }
            self.stats.synthesized_tools += stats.0;
            self.stats.repeated_outcomes += stats.1;
            self.stats.user_steps += stats.2;
            self.stats.nested_llm += stats.3;
        }
    }
}

/// The index of `s` in a trace's string table (added when new; tables are short).
fn intern(names: &mut Vec<String>, s: &str) -> u32 {
    match names.iter().position(|n| n == s) {
        Some(i) => i as u32,
        None => {
            names.push(s.to_string());
            (names.len() - 1) as u32
        }
    }
}

/// Agent of steps no span or resource names.
pub const UNKNOWN_AGENT: &str = "unknown_agent";

struct ResolvedSpan {
    depth: u32,
    session: String,
    agent: String,
    task_type: Option<String>,
    /// A model span inside another model span: the same call seen by a
    /// second instrumentation (e.g. the Agents SDK and the OpenAI client).
    inside_llm: bool,
}

/// A tool step rebuilt from a requested call and, when it came, its result.
fn synthesized_tool(p: &PendingCall, result: Option<&Message>) -> Step {
    let mut t = p.template.clone();
    t.tool = Some(p.call.name.clone());
    t.args = p.call.arguments.clone();
    t.latency_ms = None;
    let mut attrs = serde_json::Map::new();
    attrs.insert("agentdrift.synthesized".into(), Value::Bool(true));
    if let Some(id) = &p.call.id {
        attrs.insert("gen_ai.tool.call.id".into(), Value::String(id.clone()));
    }
    t.attributes = Some(attrs);
    if let Some(m) = result {
        let text = m.text.clone().unwrap_or_default();
        t.result_chars = Some(text.chars().count() as u64);
        t.result = Some(Value::String(text));
        t.status = Some(Status::Ok);
    }
    let _ = p.ts;
    t
}

/// Merges a model call's log-event content into its span record.
fn merge_content(rec: &mut SpanRecord, mut parts: Vec<ContentRecord>) {
    if parts.is_empty() {
        return;
    }
    parts.sort_by_key(|c| c.time_ns);
    let from_span = !rec.input_tail.is_empty() || rec.input_has_assistant;
    let mut tail: Vec<Message> = Vec::new();
    let mut has_assistant = false;
    let mut output: Vec<Message> = Vec::new();
    for p in parts {
        if p.input_has_assistant {
            tail = p.input_tail;
            has_assistant = true;
        } else {
            tail.extend(p.input_tail);
        }
        output.extend(p.output);
        if let Some(e) = p.evaluation
            && rec.outcome.as_ref().is_none_or(|o| e.source >= o.source)
        {
            rec.outcome = Some(e);
        }
    }
    if !from_span {
        rec.input_tail = tail;
        rec.input_has_assistant = has_assistant;
    }
    if let Some(step) = &mut rec.step
        && step.kind == StepKind::Llm
        && !output.is_empty()
        && step.text.as_deref().is_none_or(str::is_empty)
        && rec.tool_calls.is_empty()
    {
        let (text, calls) = super::span::output_summary(&output);
        step.text = Some(text);
        step.tool_calls_requested = Some(calls.len() as u32);
        rec.tool_calls = calls;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::otel::messages::Message;
    use crate::model::StepKind;
    use proptest::prelude::*;

    /// A span record built by hand: (id, parent, start ms, role).
    fn span(id: &str, parent: Option<&str>, start: u64, role: SpanRole) -> SpanRecord {
        let mut step = None;
        if matches!(role, SpanRole::Llm | SpanRole::Tool) {
            let mut s = Step::new(
                String::new(),
                0,
                start as i64,
                if role == SpanRole::Llm {
                    StepKind::Llm
                } else {
                    StepKind::Tool
                },
                String::new(),
            );
            s.trace_id = Some("t1".into());
            s.span_id = Some(id.into());
            s.parent_span_id = parent.map(str::to_string);
            if role == SpanRole::Tool {
                s.tool = Some(format!("tool_{id}"));
                s.status = Some(Status::Ok);
            }
            step = Some(s);
        }
        SpanRecord {
            trace_id: "t1".into(),
            span_id: id.into(),
            parent: parent.map(str::to_string),
            name: id.into(),
            start_ns: start * 1_000_000,
            end_ns: (start + 5) * 1_000_000,
            role,
            agent: None,
            session: None,
            task_type: None,
            resource: ResourceHints {
                service: Some("svc".into()),
                ..ResourceHints::default()
            },
            error: false,
            step,
            input_tail: Vec::new(),
            input_has_assistant: false,
            tool_calls: Vec::new(),
            outcome: None,
        }
    }

    use super::super::span::ResourceHints;

    fn user(text: &str) -> Message {
        let mut m = Message::new(MsgRole::User);
        m.text = Some(text.into());
        m
    }

    /// root(conv) → agent A (named) → llm, tool, agent B (named) → llm; an unnamed AGENT wraps it all.
    fn trace() -> Vec<SpanRecord> {
        let mut root = span("root", None, 0, SpanRole::Agent);
        root.session = Some("conv-1".into());
        root.task_type = Some("airline".into());
        let mut a = span("a", Some("root"), 1, SpanRole::Agent);
        a.agent = Some("A".into());
        let mut l1 = span("l1", Some("a"), 2, SpanRole::Llm);
        l1.input_tail = vec![user("hello")];
        let t1 = span("t1", Some("a"), 10, SpanRole::Tool);
        let mut b = span("b", Some("a"), 20, SpanRole::Agent);
        b.agent = Some("B".into());
        let mut l2 = span("l2", Some("b"), 21, SpanRole::Llm);
        // Repeated history: the user message is before an assistant message, so not new.
        l2.input_tail = Vec::new();
        l2.input_has_assistant = true;
        vec![root, a, l1, t1, b, l2]
    }

    fn run(batches: &[Vec<SpanRecord>]) -> Vec<Step> {
        let mut a = Assembler::new(AssembleConfig::default());
        let mut steps = Vec::new();
        let mut pos = 0;
        for b in batches {
            for s in b {
                pos += 1;
                steps.extend(a.add_span(s.clone(), 1000, pos).steps);
            }
        }
        for (t, after) in a.due(1000 + a.config.settle_ms) {
            steps.extend(a.settle(&t, after).steps);
        }
        steps
    }

    #[test]
    fn identity_agents_handoffs_and_user_turns_from_the_whole_tree() {
        let steps = run(&[trace()]);
        let got: Vec<(StepKind, &str, Option<&str>)> = steps
            .iter()
            .map(|s| (s.kind, s.agent.as_str(), s.to_agent.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (StepKind::User, "A", None),
                (StepKind::Llm, "A", None),
                (StepKind::Tool, "A", None),
                (StepKind::Handoff, "A", Some("B")),
                (StepKind::Llm, "B", None),
            ],
            "the unnamed root agent span is neither an agent nor a handoff"
        );
        assert!(
            steps
                .iter()
                .all(|s| s.session_id == "conv-1" && s.task_type.as_deref() == Some("airline"))
        );
        assert_eq!(steps.iter().map(|s| s.seq).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        assert_eq!(steps[0].text.as_deref(), Some("hello"));
        // Depth counts from the root span.
        assert_eq!(steps[1].depth, Some(2));
        assert_eq!(steps[4].depth, Some(3));
    }

    #[test]
    fn parallel_tools_take_the_order_the_model_asked_for_not_their_start_order() {
        let mut root = span("root", None, 0, SpanRole::Agent);
        root.session = Some("conv-p".into());
        root.agent = Some("A".into());
        let mut l1 = span("l1", Some("root"), 1, SpanRole::Llm);
        l1.tool_calls = ["tool_x", "tool_y", "tool_z"]
            .iter()
            .map(|n| ToolCall {
                id: Some(format!("call_{n}")),
                name: n.to_string(),
                arguments: None,
            })
            .collect();
        // Their threads started z, then x, then y.
        let [z, x, y] = [("z", 10), ("x", 11), ("y", 12)].map(|(id, start)| {
            let mut t = span(id, Some("root"), start, SpanRole::Tool);
            t.step.as_mut().unwrap().attributes = Some(Default::default());
            t
        });
        let l2 = span("l2", Some("root"), 20, SpanRole::Llm);
        let steps = run(&[vec![root, l1, z, x, y, l2]]);
        let got: Vec<(StepKind, Option<&str>)> = steps.iter().map(|s| (s.kind, s.tool.as_deref())).collect();
        assert_eq!(
            got,
            [
                (StepKind::Llm, None),
                (StepKind::Tool, Some("tool_x")),
                (StepKind::Tool, Some("tool_y")),
                (StepKind::Tool, Some("tool_z")),
                (StepKind::Llm, None),
            ]
        );
        assert_eq!(steps.iter().map(|s| s.seq).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        let ids: Vec<_> = steps[1..4]
            .iter()
            .map(|s| s.attributes.as_ref().unwrap()["gen_ai.tool.call.id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["call_tool_x", "call_tool_y", "call_tool_z"]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever order and batching the spans arrive in, the steps are the same.
        #[test]
        fn steps_do_not_depend_on_arrival_order_or_batching(perm in Just((0..6usize).collect::<Vec<_>>()).prop_shuffle(), cuts in proptest::collection::vec(0..6usize, 0..4)) {
            let base = run(&[trace()]);
            let t = trace();
            let shuffled: Vec<SpanRecord> = perm.iter().map(|&i| t[i].clone()).collect();
            let mut batches = Vec::new();
            let mut cuts = cuts.clone();
            cuts.sort();
            let mut last = 0;
            for c in cuts.into_iter().chain([6]) {
                batches.push(shuffled[last..c.max(last)].to_vec());
                last = c.max(last);
            }
            prop_assert_eq!(run(&batches), base);
        }
    }

    #[test]
    fn a_trace_waits_for_its_root_and_quiet_then_settles_or_times_out_unresolved() {
        let mut a = Assembler::new(AssembleConfig {
            settle_ms: 100,
            timeout_ms: 1000,
            ..AssembleConfig::default()
        });
        let t = trace();
        // Children first (as exporters send them), no root yet.
        for (i, s) in t[1..].iter().enumerate() {
            assert!(a.add_span(s.clone(), 0, i as i64).steps.is_empty());
        }
        assert!(a.due(500).is_empty(), "no root: wait for the timeout");
        let due = a.due(1000);
        assert_eq!(due.len(), 1);
        let out = a.settle(&due[0].0, due[0].1);
        assert_eq!(
            out.sessions,
            [("t1".to_string(), Identity::Unresolved)],
            "no session attribute came: the trace id"
        );
        assert_eq!(a.stats().traces_unresolved, 1);
        // The root arrives late: it joins the settled trace's session.
        let late = a.add_span(t[0].clone(), 2000, 99);
        assert!(late.steps.is_empty());
        assert_eq!(a.stats().late_spans, 1);
        // A new trace with its root settles after the quiet time, not before.
        let mut t2 = trace();
        for s in &mut t2 {
            s.trace_id = "t2".into();
        }
        for (i, s) in t2.iter().enumerate() {
            a.add_span(s.clone(), 5000, 100 + i as i64);
        }
        assert!(a.due(5050).is_empty());
        let due = a.due(5100);
        assert_eq!(due.len(), 1);
        // A span that arrived after the judgement defers the settle.
        assert!(a.settle("t2", due[0].1 - 1).steps.is_empty());
        let out = a.settle("t2", due[0].1);
        assert_eq!(out.steps.len(), 5);
        assert_eq!(out.sessions, [("conv-1".to_string(), Identity::Resolved)]);
    }

    #[test]
    fn late_spans_join_their_session_and_late_content_is_counted() {
        let mut a = Assembler::new(AssembleConfig::default());
        let t = trace();
        let mut steps = Vec::new();
        for s in &t {
            steps.extend(a.add_span(s.clone(), 0, 1).steps);
        }
        let settled = a.settle("t1", 1);
        assert_eq!(settled.links, [("t1".to_string(), "conv-1".to_string())]);
        steps.extend(settled.steps);
        assert_eq!(steps.len(), 5);
        let late_tool = span("t9", Some("b"), 30, SpanRole::Tool);
        let out = a.add_span(late_tool, 10, 2);
        assert_eq!(out.steps.len(), 1);
        let s = &out.steps[0];
        assert_eq!(
            (s.session_id.as_str(), s.agent.as_str(), s.seq, s.depth),
            ("conv-1", "B", 5, Some(3))
        );
        let mut m = Message::new(MsgRole::Assistant);
        m.text = Some("late answer".into());
        let late = a.add_content(
            ContentRecord {
                trace_id: "t1".into(),
                span_id: "l2".into(),
                time_ns: 0,
                input_tail: Vec::new(),
                input_has_assistant: false,
                output: vec![m],
                evaluation: None,
            },
            11,
            3,
        );
        assert!(late.steps.is_empty(), "the released model call is not scored again");
        assert_eq!(a.stats().late_content, 1);
    }

    #[test]
    fn content_from_log_events_before_the_span_fills_the_model_call() {
        let mut a = Assembler::new(AssembleConfig::default());
        let mut m = Message::new(MsgRole::Assistant);
        m.text = Some("From the event".into());
        m.tool_calls.push(ToolCall {
            id: Some("c1".into()),
            name: "lookup".into(),
            arguments: Some(serde_json::json!({"id": 7})),
        });
        a.add_content(
            ContentRecord {
                trace_id: "t1".into(),
                span_id: "l1".into(),
                time_ns: 0,
                input_tail: vec![user("hello")],
                input_has_assistant: false,
                output: vec![m],
                evaluation: None,
            },
            0,
            0,
        );
        // Only model spans: no tool spans, so the requested call becomes a tool step.
        let t: Vec<SpanRecord> = trace().into_iter().filter(|s| s.span_id != "t1").collect();
        let mut t = t;
        let mut tool_msg = Message::new(MsgRole::Tool);
        tool_msg.tool_call_id = Some("c1".into());
        tool_msg.text = Some("{\"ok\":true}".into());
        let l2 = t.iter_mut().find(|s| s.span_id == "l2").unwrap();
        l2.input_tail = vec![tool_msg];
        for s in &t {
            a.add_span(s.clone(), 0, 1);
        }
        let out = a.settle("t1", 1);
        let kinds: Vec<StepKind> = out.steps.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            [
                StepKind::User,
                StepKind::Llm,
                StepKind::Tool,
                StepKind::Handoff,
                StepKind::Llm
            ]
        );
        let llm = &out.steps[1];
        assert_eq!(
            (llm.text.as_deref(), llm.tool_calls_requested),
            (Some("From the event"), Some(1))
        );
        let tool = &out.steps[2];
        assert_eq!(tool.tool.as_deref(), Some("lookup"));
        assert_eq!(tool.args, Some(serde_json::json!({"id": 7})));
        assert_eq!(tool.result, Some(Value::String("{\"ok\":true}".into())));
        assert_eq!(tool.status, Some(Status::Ok));
        assert_eq!(a.stats().synthesized_tools, 1);
    }

    #[test]
    fn a_requested_call_never_answered_is_flushed_at_close_and_root_status_gives_the_outcome() {
        let mut a = Assembler::new(AssembleConfig::default());
        let mut t: Vec<SpanRecord> = trace().into_iter().filter(|s| s.span_id != "t1").collect();
        t[0].error = true; // the root span failed
        let l2 = t.iter_mut().find(|s| s.span_id == "l2").unwrap();
        l2.tool_calls.push(ToolCall {
            id: Some("c9".into()),
            name: "refund".into(),
            arguments: None,
        });
        for s in &t {
            a.add_span(s.clone(), 0, 1);
        }
        let released = a.settle("t1", 1).steps;
        let (owed, outcome) = a.closing("conv-1");
        assert_eq!(owed.len(), 1);
        assert_eq!(owed[0].tool.as_deref(), Some("refund"));
        assert_eq!(owed[0].status, None, "no result came: status unknown");
        assert_eq!(owed[0].seq, released.len() as u64);
        let outcome = outcome.unwrap();
        assert_eq!(
            (outcome.outcome, outcome.source),
            (Outcome::Failure, OutcomeSource::RootStatus)
        );
    }

    #[test]
    fn a_model_span_inside_a_model_span_counts_once() {
        let mut t = trace();
        t.push(span("inner", Some("l2"), 22, SpanRole::Llm));
        let steps = run(&[t]);
        assert_eq!(steps.iter().filter(|s| s.kind == StepKind::Llm).count(), 2);
    }
}
