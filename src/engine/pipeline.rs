//! The service's whole scoring state as one pure function of its log: the
//! span [`Assembler`] in front of the [`Scorer`]. Every input carries the
//! time it was received, so replaying the log after a restart rebuilds the
//! same sessions, steps and events.

use super::{CloseReason, OutcomeVerdict, Output, Scorer, ScorerState};
use crate::ingest::otel::assemble::{AssembleConfig, Assembled, Assembler, ContentRecord};
use crate::ingest::otel::span::SpanRecord;
use crate::model::{Outcome, OutcomeSource, PriceTable, Step};
use serde::{Deserialize, Serialize};

/// One log entry, as the pipeline sees it.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // steps are the common case
pub enum Input {
    /// A native step.
    Step {
        /// The step.
        step: Step,
        /// When it was received, unix ms.
        received_ms: i64,
        /// Its log position.
        pos: i64,
    },
    /// The spans of one OTLP request.
    Spans {
        /// The spans.
        spans: Vec<SpanRecord>,
        /// When they were received, unix ms.
        received_ms: i64,
        /// The request's log position.
        pos: i64,
    },
    /// Model-call content of one OTLP logs request.
    Content {
        /// The content.
        content: Vec<ContentRecord>,
        /// When it was received, unix ms.
        received_ms: i64,
        /// The request's log position.
        pos: i64,
    },
    /// Settle a trace judged quiet at position `after`.
    Settle {
        /// Trace.
        trace_id: String,
        /// Position it was judged at.
        after: i64,
        /// When it was decided, unix ms.
        received_ms: i64,
        /// Its log position.
        pos: i64,
    },
    /// Close a session judged idle at position `after`.
    Close {
        /// Session.
        session_id: String,
        /// Position it was judged at.
        after: i64,
        /// When it was decided, unix ms.
        received_ms: i64,
    },
    /// A log row that could not be read back: counted, skipped.
    Unreadable,
    /// An outcome reported for a session.
    Outcome {
        /// Session.
        session_id: String,
        /// How it ended.
        outcome: Outcome,
        /// The reward.
        reward: Option<f64>,
        /// When it was received, unix ms.
        received_ms: i64,
    },
}

/// A change to a session's listing row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RowChange {
    /// Session.
    pub session_id: String,
    /// Agent of its first step.
    pub agent: Option<String>,
    /// Segment it is scored against.
    pub segment: Option<String>,
    /// Whether it is scored.
    pub scored: Option<bool>,
    /// `native`, `resolved`, `unresolved`.
    pub identity: Option<&'static str>,
    /// `open` or `closed`.
    pub status: Option<&'static str>,
    /// Steps scored.
    pub steps: Option<u64>,
    /// Outcome.
    pub outcome: Option<Outcome>,
    /// Where it came from.
    pub outcome_source: Option<OutcomeSource>,
    /// First step time.
    pub first_ts: Option<i64>,
    /// Last step time.
    pub last_ts: Option<i64>,
}

/// An outcome to record on a stored closed session.
#[derive(Clone, Debug, PartialEq)]
pub struct OutcomeUpdate {
    /// Session.
    pub session_id: String,
    /// Outcome.
    pub outcome: Outcome,
    /// Reward.
    pub reward: Option<f64>,
    /// Source.
    pub source: OutcomeSource,
    /// What became of it.
    pub verdict: OutcomeVerdict,
}

/// What applying one input produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applied {
    /// Events, closed and opened sessions, late steps.
    pub out: Output,
    /// (trace, session) pairs first seen: replay finds a session's spans through them.
    pub links: Vec<(String, String)>,
    /// (trace, log position) of the stored requests that hold each trace.
    pub request_links: Vec<(String, i64)>,
    /// Tool steps assembled from spans that failed (for the logs).
    pub failed_tools: Vec<Step>,
    /// Session listing changes.
    pub rows: Vec<RowChange>,
    /// Outcomes to record on closed sessions.
    pub outcomes: Vec<OutcomeUpdate>,
}

/// Settings of the pipeline beyond the scorer's.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineConfig {
    /// The assembler's.
    pub assemble: AssembleConfig,
    /// How long after a session's last step an outcome still reaches its charts, ms.
    pub outcome_window_ms: i64,
    /// The scorer's memory bounds.
    pub limits: super::Limits,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            assemble: AssembleConfig::default(),
            outcome_window_ms: 86_400_000,
            limits: super::Limits::default(),
        }
    }
}

/// The pipeline's state, for snapshots (version 2; version 1 was a bare [`ScorerState`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PipelineState {
    /// Format version.
    pub version: u32,
    /// The scorer's.
    pub scorer: ScorerState,
    /// The assembler's.
    pub assembler: Assembler,
}

/// [`PipelineState`] borrowed.
#[derive(Serialize)]
pub struct PipelineStateRef<'a> {
    version: u32,
    scorer: super::ScorerStateRef<'a>,
    assembler: &'a Assembler,
}

/// Snapshot format version written by this build (3: open sessions carry
/// what the grounding check learnt of their sources; a version-2 snapshot is
/// refused and the log replayed, so no open session misses its sources).
pub const STATE_VERSION: u32 = 3;

/// Assembler and scorer.
pub struct Pipeline {
    scorer: Scorer,
    assembler: Assembler,
    prices: PriceTable,
    config: PipelineConfig,
}

fn row_of_closed(c: &super::ClosedSession) -> RowChange {
    RowChange {
        session_id: c.session_id.clone(),
        status: Some("closed"),
        steps: Some(c.steps),
        outcome: c.features.outcome,
        outcome_source: c.outcome_source,
        last_ts: Some(c.last_ts),
        ..RowChange::default()
    }
}

impl Pipeline {
    /// A pipeline at its initial state.
    pub fn new(scorer: Scorer, prices: PriceTable, config: PipelineConfig) -> Pipeline {
        Pipeline {
            scorer,
            assembler: Assembler::new(config.assemble.clone()),
            prices,
            config,
        }
    }

    /// The scorer.
    pub fn scorer(&self) -> &Scorer {
        &self.scorer
    }

    /// Reports session-level chart readings in each output (see [`Scorer::record_chart_points`]).
    pub fn record_chart_points(&mut self, on: bool) {
        self.scorer.record_chart_points(on);
    }

    /// Writes changed open sessions as rows before a snapshot; returns the
    /// rows the snapshot supersedes ([`Scorer::checkpoint`]).
    pub fn checkpoint(&mut self) -> Result<Vec<(String, u64)>, String> {
        self.scorer.checkpoint()
    }

    /// After a restore, the open sessions its snapshot left in the session store.
    pub fn adopt_saved(&mut self, refs: impl IntoIterator<Item = (String, super::saved::SavedRef)>) {
        self.scorer.adopt_saved(refs);
    }

    /// The assembler.
    pub fn assembler(&self) -> &Assembler {
        &self.assembler
    }

    /// Traces due to settle at `now_ms` (decide, log, then apply [`Input::Settle`]).
    pub fn due_traces(&self, now_ms: i64) -> Vec<(String, i64)> {
        self.assembler.due(now_ms)
    }

    /// Sessions idle at `now_ms` (decide, log, then apply [`Input::Close`]).
    pub fn idle_sessions(&self, now_ms: i64) -> Vec<String> {
        self.scorer.idle_sessions(now_ms)
    }

    /// The state, for a snapshot.
    pub fn state(&self) -> PipelineState {
        PipelineState {
            version: STATE_VERSION,
            scorer: self.scorer.state(),
            assembler: self.assembler.clone(),
        }
    }

    /// The state borrowed, serialised exactly as [`PipelineState`] (snapshots
    /// are encoded from it without copying every open session first).
    pub fn state_ref(&self) -> PipelineStateRef<'_> {
        PipelineStateRef {
            version: STATE_VERSION,
            scorer: self.scorer.state_ref(),
            assembler: &self.assembler,
        }
    }

    /// Restores a snapshot; the configuration stays this pipeline's.
    pub fn restore(&mut self, s: PipelineState) -> Result<(), super::EngineError> {
        self.scorer.restore(s.scorer)?;
        self.assembler = s.assembler;
        self.assembler.set_config(self.config.assemble.clone());
        Ok(())
    }

    /// Restores a version-1 snapshot (scorer only).
    pub fn restore_v1(&mut self, s: ScorerState) -> Result<(), super::EngineError> {
        self.scorer.restore(s)
    }

    fn score(&mut self, mut step: Step, now_ms: i64, pos: i64, native: bool, a: &mut Applied) {
        self.prices.fill_cost(&mut step);
        if !native && step.kind == crate::model::StepKind::Tool && step.status == Some(crate::model::Status::Error) {
            a.failed_tools.push(step.clone());
        }
        let out = self.scorer.ingest_at(step, now_ms, pos);
        self.collect(out, native, a);
    }

    fn collect(&mut self, out: Output, native: bool, a: &mut Applied) {
        for o in &out.opened {
            a.rows.push(RowChange {
                session_id: o.session_id.clone(),
                agent: Some(o.agent.clone()),
                segment: o.segment.as_ref().map(|k| k.to_string()),
                scored: Some(o.segment.is_some()),
                identity: native.then_some("native"),
                status: Some("open"),
                first_ts: Some(o.first_ts),
                last_ts: Some(o.first_ts),
                ..RowChange::default()
            });
        }
        for c in &out.closed {
            a.rows.push(row_of_closed(c));
            // Later spans of it are late: the assembler keeps only its seq counter.
            let _ = self.assembler.closing(&c.session_id);
        }
        a.out.events.extend(out.events);
        a.out.closed.extend(out.closed);
        a.out.opened.extend(out.opened);
        a.out.late += out.late;
        a.out.points.extend(out.points);
    }

    fn assembled(&mut self, asm: Assembled, now_ms: i64, pos: i64, a: &mut Applied) {
        for (sid, identity) in asm.sessions {
            a.rows.push(RowChange {
                session_id: sid,
                identity: Some(identity.as_str()),
                ..RowChange::default()
            });
        }
        a.links.extend(asm.links);
        a.request_links.extend(asm.request_links);
        for step in asm.steps {
            self.score(step, now_ms, pos, false, a);
        }
        for (sid, hint) in asm.outcomes {
            self.outcome(&sid, hint.outcome, hint.reward, hint.source, now_ms, a);
        }
    }

    fn outcome(
        &mut self,
        sid: &str,
        outcome: Outcome,
        reward: Option<f64>,
        source: OutcomeSource,
        now_ms: i64,
        a: &mut Applied,
    ) {
        let window = self.config.outcome_window_ms;
        let (out, verdict) = self.scorer.report_outcome(sid, outcome, reward, source, now_ms, window);
        let ended = verdict == OutcomeVerdict::Ended;
        self.collect(out, false, a);
        if !ended {
            a.outcomes.push(OutcomeUpdate {
                session_id: sid.to_string(),
                outcome,
                reward,
                source,
                verdict,
            });
        }
    }

    /// Applies one log entry.
    pub fn apply(&mut self, input: Input) -> Applied {
        let mut a = Applied::default();
        match input {
            Input::Step { step, received_ms, pos } => self.score(step, received_ms, pos, true, &mut a),
            Input::Unreadable => self.scorer.count_unreadable(),
            Input::Spans {
                spans,
                received_ms,
                pos,
            } => {
                for span in spans {
                    let asm = self.assembler.add_span(span, received_ms, pos);
                    self.assembled(asm, received_ms, pos, &mut a);
                }
            }
            Input::Content {
                content,
                received_ms,
                pos,
            } => {
                for c in content {
                    let asm = self.assembler.add_content(c, received_ms, pos);
                    self.assembled(asm, received_ms, pos, &mut a);
                }
            }
            Input::Settle {
                trace_id,
                after,
                received_ms,
                pos,
            } => {
                let asm = self.assembler.settle(&trace_id, after);
                self.assembled(asm, received_ms, pos, &mut a);
            }
            Input::Close {
                session_id,
                after,
                received_ms,
            } => {
                if self.scorer.idle_since(&session_id, after) {
                    let (owed, hint) = self.assembler.closing(&session_id);
                    for step in owed {
                        let out = self.scorer.ingest_at(step, received_ms, after);
                        self.collect(out, false, &mut a);
                    }
                    if let Some(h) = hint {
                        self.scorer.set_outcome(&session_id, h.outcome, h.reward, h.source);
                    }
                    let out = self
                        .scorer
                        .close_session_at(&session_id, CloseReason::Idle, received_ms);
                    self.collect(out, false, &mut a);
                }
            }
            Input::Outcome {
                session_id,
                outcome,
                reward,
                received_ms,
            } => self.outcome(
                &session_id,
                outcome,
                reward,
                OutcomeSource::Explicit,
                received_ms,
                &mut a,
            ),
        }
        a
    }

    /// Settles every pending trace and closes every open session (the end of a replay).
    pub fn flush(&mut self) -> Applied {
        let mut a = Applied::default();
        let asm = self.assembler.flush();
        self.assembled(asm, 0, 0, &mut a);
        let out = self.scorer.flush();
        self.collect(out, false, &mut a);
        a
    }
}
