//! Every Prometheus metric of the service, declared in one place with where
//! it is measured. Labels stay bounded: segments and detectors come from the
//! baseline, endpoints are route templates.

use crate::detect::DriftEvent;
use crate::engine::ClosedSession;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

/// Labels: ingest format.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FormatLabel {
    /// `ndjson`, `msgpack`, `otlp-proto`, `otlp-json`.
    pub format: String,
}

/// Labels: endpoint and status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route template.
    pub endpoint: String,
    /// HTTP status code.
    pub code: String,
}

/// Labels: segment.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SegmentLabel {
    /// `agent/task_type`.
    pub segment: String,
}

/// Labels: segment and detector.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DetectorLabels {
    /// `agent/task_type`.
    pub segment: String,
    /// Detector id.
    pub detector: String,
}

/// Labels: segment and close reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloseLabels {
    /// `agent/task_type`.
    pub segment: String,
    /// `end`, `idle`, `flush`.
    pub reason: String,
}

/// Labels: segment and token direction.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// `agent/task_type`.
    pub segment: String,
    /// `input` or `output`.
    pub direction: String,
}

/// Labels: segment and a group of its sessions (an intent, a length band).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    /// `agent/task_type`.
    pub segment: String,
    /// The intent or the length band.
    pub group: String,
}

/// Labels: segment, error class and who named it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `agent/task_type`.
    pub segment: String,
    /// One of the taxonomy's classes, `unclassified`, or `other` for producers' own names.
    pub class: String,
    /// `producer` (a label the data carried) or `inferred` (the taxonomy's rules).
    pub source: String,
}

/// Labels: what the span assembler counted.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AssemblyLabel {
    /// `traces_resolved`, `traces_unresolved`, `traces_forced`, `late_spans`, `late_content`,
    /// `orphan_content`, `session_conflicts`, `repeated_outcomes`, `user_steps`,
    /// `synthesized_tools`, `nested_llm`.
    pub what: String,
}

type FGauge = Gauge<f64, AtomicU64>;

/// The metrics.
pub struct Metrics {
    registry: Registry,
    /// Steps accepted (new, durable), by format; measured after commit.
    pub ingest_steps: Family<FormatLabel, Counter>,
    /// Steps already stored (retries), measured after commit.
    pub ingest_duplicates: Counter,
    /// Records rejected at parsing, by format.
    pub ingest_rejected: Family<FormatLabel, Counter>,
    /// Requests by endpoint and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Time from request to acknowledgement of ingest requests.
    pub ack_seconds: Histogram,
    /// Duration of one store commit (group of requests).
    pub commit_seconds: Histogram,
    /// Steps per store commit.
    pub commit_steps: Histogram,
    /// Duration of one flush to disk (covering one or more commits).
    pub sync_seconds: Histogram,
    /// Log entries applied by the scorer.
    pub engine_entries: Counter,
    /// Drift events stored, by segment and detector.
    pub events: Family<DetectorLabels, Counter>,
    /// Sessions closed, by segment and reason.
    pub sessions_closed: Family<CloseLabels, Counter>,
    /// Sessions open in the scorer.
    pub sessions_open: Gauge,
    /// Log rows skipped because they could not be read back.
    pub unreadable_log_rows: Gauge,
    /// Bytes held by reorder buffers.
    pub buffered_bytes: Gauge,
    /// Reorder buffers released across a gap because they were over their cap.
    pub forced_releases: Gauge,
    /// Open sessions held in the store rather than in memory.
    pub sessions_saved: Gauge,
    /// Open sessions moved out of memory, since the store began.
    pub sessions_evicted: Gauge,
    /// Saved sessions brought back into memory.
    pub sessions_restored: Gauge,
    /// Failed writes or reads of saved session states.
    pub session_store_failures: Gauge,
    /// Per segment, from closed sessions: success ratio.
    pub success_ratio: Family<SegmentLabel, FGauge>,
    /// Escalation ratio.
    pub escalation_ratio: Family<SegmentLabel, FGauge>,
    /// Share of agent tool calls that failed.
    pub tool_failure_ratio: Family<SegmentLabel, FGauge>,
    /// Total cost.
    pub cost_usd: Family<SegmentLabel, FGauge>,
    /// Cost per successful session.
    pub cost_per_success_usd: Family<SegmentLabel, FGauge>,
    /// Tokens burnt.
    pub tokens: Family<TokenLabels, FGauge>,
    /// Tokens per minute of session time.
    pub tokens_per_minute: Family<TokenLabels, FGauge>,
    /// Cost of priced tool calls.
    pub tool_cost_usd: Family<SegmentLabel, FGauge>,
    /// Success ratio per intent.
    pub success_by_intent: Family<GroupLabels, FGauge>,
    /// Success ratio per conversation-length band.
    pub success_by_length: Family<GroupLabels, FGauge>,
    /// Failures per class and source.
    pub error_classes: Family<ErrorLabels, FGauge>,
    /// Mean session duration.
    pub session_duration_seconds: Family<SegmentLabel, FGauge>,
    /// Mean steps per session.
    pub session_steps: Family<SegmentLabel, FGauge>,
    /// OTLP spans of other instrumentation (kept for the tree only).
    pub otlp_foreign_spans: Counter,
    /// OTLP log records that are no GenAI event.
    pub otlp_log_records_ignored: Counter,
    /// GenAI log events without a span to attach to (rejected).
    pub otlp_log_records_unattached: Counter,
    /// Traces waiting to settle.
    pub otlp_pending_traces: Gauge,
    /// Spans those traces hold.
    pub otlp_pending_spans: Gauge,
    /// What span assembly counted (from the assembler's own counters).
    pub otlp_assembly: Family<AssemblyLabel, Counter>,
    assembly_seen: Mutex<crate::ingest::otel::assemble::AssembleStats>,
    /// Open HTTP connections.
    pub http_connections: Gauge,
    /// Connections refused at the cap (every open one busy).
    pub http_connections_refused: Counter,
    /// Idle connections closed to make room at the cap.
    pub http_connections_evicted: Counter,
    /// Failed accepts (out of file descriptors, …).
    pub http_accept_errors: Counter,
    /// Group commits that failed and were retried request by request.
    pub commit_retries: Counter,
    /// Panics caught in a segment's detectors (the segment stops scoring).
    pub scoring_panics: Counter,
    /// Latest chart statistic.
    pub chart_statistic: Family<DetectorLabels, FGauge>,
    /// Its limit.
    pub chart_limit: Family<DetectorLabels, FGauge>,
    /// Observations a chart refused (non-finite scores).
    pub chart_rejected: Family<DetectorLabels, Gauge>,
    /// Alert delivery per sink.
    pub alerts: crate::alerts::AlertMetrics,
    lock: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers everything.
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        let m = Metrics {
            ingest_steps: Family::default(),
            ingest_duplicates: Counter::default(),
            ingest_rejected: Family::default(),
            requests: Family::default(),
            ack_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            commit_seconds: Histogram::new(exponential_buckets(0.0002, 2.0, 16)),
            commit_steps: Histogram::new(exponential_buckets(1.0, 4.0, 10)),
            sync_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            engine_entries: Counter::default(),
            events: Family::default(),
            sessions_closed: Family::default(),
            sessions_open: Gauge::default(),
            unreadable_log_rows: Gauge::default(),
            buffered_bytes: Gauge::default(),
            forced_releases: Gauge::default(),
            sessions_saved: Gauge::default(),
            sessions_evicted: Gauge::default(),
            sessions_restored: Gauge::default(),
            session_store_failures: Gauge::default(),
            success_ratio: Family::default(),
            escalation_ratio: Family::default(),
            tool_failure_ratio: Family::default(),
            cost_usd: Family::default(),
            cost_per_success_usd: Family::default(),
            tokens: Family::default(),
            tokens_per_minute: Family::default(),
            tool_cost_usd: Family::default(),
            success_by_intent: Family::default(),
            success_by_length: Family::default(),
            error_classes: Family::default(),
            session_duration_seconds: Family::default(),
            session_steps: Family::default(),
            http_connections: Gauge::default(),
            http_connections_refused: Counter::default(),
            http_connections_evicted: Counter::default(),
            http_accept_errors: Counter::default(),
            commit_retries: Counter::default(),
            scoring_panics: Counter::default(),
            otlp_foreign_spans: Counter::default(),
            otlp_log_records_ignored: Counter::default(),
            otlp_log_records_unattached: Counter::default(),
            otlp_pending_traces: Gauge::default(),
            otlp_pending_spans: Gauge::default(),
            otlp_assembly: Family::default(),
            assembly_seen: Mutex::new(Default::default()),
            chart_statistic: Family::default(),
            chart_limit: Family::default(),
            chart_rejected: Family::default(),
            alerts: crate::alerts::AlertMetrics::default(),
            registry: Registry::default(),
            lock: Mutex::new(()),
        };
        r.register(
            "agentdrift_ingest_steps",
            "Steps accepted and committed, by format",
            m.ingest_steps.clone(),
        );
        r.register(
            "agentdrift_ingest_duplicate_steps",
            "Steps received again and skipped",
            m.ingest_duplicates.clone(),
        );
        r.register(
            "agentdrift_ingest_rejected_records",
            "Records rejected at parsing, by format",
            m.ingest_rejected.clone(),
        );
        r.register(
            "agentdrift_http_requests",
            "HTTP requests by endpoint and status",
            m.requests.clone(),
        );
        r.register_with_unit(
            "agentdrift_ingest_ack",
            "Ingest request to durable acknowledgement",
            Unit::Seconds,
            m.ack_seconds.clone(),
        );
        r.register_with_unit(
            "agentdrift_store_commit",
            "Duration of one store commit",
            Unit::Seconds,
            m.commit_seconds.clone(),
        );
        r.register(
            "agentdrift_store_commit_steps",
            "Steps per store commit",
            m.commit_steps.clone(),
        );
        r.register_with_unit(
            "agentdrift_store_sync",
            "Duration of one flush of committed writes to disk",
            Unit::Seconds,
            m.sync_seconds.clone(),
        );
        r.register(
            "agentdrift_engine_log_entries",
            "Log entries applied by the scorer",
            m.engine_entries.clone(),
        );
        r.register(
            "agentdrift_drift_events",
            "Drift events stored, by segment and detector",
            m.events.clone(),
        );
        r.register(
            "agentdrift_sessions_closed",
            "Sessions closed, by segment and reason",
            m.sessions_closed.clone(),
        );
        r.register(
            "agentdrift_sessions_open",
            "Sessions open in the scorer",
            m.sessions_open.clone(),
        );
        r.register(
            "agentdrift_reorder_buffered_bytes",
            "Bytes held by reorder buffers (steps waiting for a missing seq)",
            m.buffered_bytes.clone(),
        );
        r.register(
            "agentdrift_reorder_forced_releases",
            "Reorder buffers scored across their gap because they were over max_buffered_bytes(_per_session)",
            m.forced_releases.clone(),
        );
        r.register(
            "agentdrift_sessions_saved",
            "Open sessions whose state waits in the store, out of memory (over max_open_sessions)",
            m.sessions_saved.clone(),
        );
        r.register(
            "agentdrift_sessions_evicted",
            "Open sessions moved from memory to the store because max_open_sessions was exceeded",
            m.sessions_evicted.clone(),
        );
        r.register(
            "agentdrift_sessions_restored",
            "Saved open sessions brought back into memory by a step, an outcome or their close",
            m.sessions_restored.clone(),
        );
        r.register(
            "agentdrift_session_store_failures",
            "Writes or reads of saved session states that failed (the sessions stay where they were)",
            m.session_store_failures.clone(),
        );
        r.register(
            "agentdrift_store_unreadable_log_rows",
            "Log rows that could not be read back (damaged storage) and were skipped",
            m.unreadable_log_rows.clone(),
        );
        r.register(
            "agentdrift_segment_success_ratio",
            "Share of closed sessions that succeeded",
            m.success_ratio.clone(),
        );
        r.register(
            "agentdrift_segment_escalation_ratio",
            "Share of closed sessions escalated",
            m.escalation_ratio.clone(),
        );
        r.register(
            "agentdrift_segment_tool_failure_ratio",
            "Share of agent tool calls that failed",
            m.tool_failure_ratio.clone(),
        );
        r.register_with_unit(
            "agentdrift_segment_cost",
            "Cost of closed sessions",
            Unit::Other("usd".into()),
            m.cost_usd.clone(),
        );
        r.register_with_unit(
            "agentdrift_segment_cost_per_success",
            "Cost per successful task: the total cost of closed sessions over those that succeeded",
            Unit::Other("usd".into()),
            m.cost_per_success_usd.clone(),
        );
        r.register_with_unit(
            "agentdrift_segment_closed_session",
            "Tokens of all closed sessions, by direction",
            Unit::Other("tokens".into()),
            m.tokens.clone(),
        );
        r.register(
            "agentdrift_segment_tokens_per_minute",
            "Tokens of closed sessions per minute of their summed durations, by direction",
            m.tokens_per_minute.clone(),
        );
        r.register_with_unit(
            "agentdrift_segment_tool_cost",
            "Cost of the priced tool calls of closed sessions ([tools] prices)",
            Unit::Other("usd".into()),
            m.tool_cost_usd.clone(),
        );
        r.register(
            "agentdrift_segment_success_by_intent_ratio",
            "Share of closed sessions that succeeded, per intent (at most 50 per segment, the rest as other)",
            m.success_by_intent.clone(),
        );
        r.register(
            "agentdrift_segment_success_by_length_ratio",
            "Share of closed sessions that succeeded, per length band in messages (1-9, 10-19, 20-49, 50-99, 100-199, 200+)",
            m.success_by_length.clone(),
        );
        r.register(
            "agentdrift_segment_failures",
            "Failures of closed sessions by class and by source (producer label or inferred by the taxonomy)",
            m.error_classes.clone(),
        );
        r.register_with_unit(
            "agentdrift_segment_session_duration",
            "Mean duration of closed sessions",
            Unit::Seconds,
            m.session_duration_seconds.clone(),
        );
        r.register(
            "agentdrift_segment_session_steps",
            "Mean steps per closed session",
            m.session_steps.clone(),
        );
        r.register(
            "agentdrift_chart_statistic",
            "Latest statistic of each chart",
            m.chart_statistic.clone(),
        );
        r.register("agentdrift_chart_limit", "Limit of each chart", m.chart_limit.clone());
        r.register(
            "agentdrift_chart_rejected_observations",
            "Observations a chart refused since start (non-finite scores; charts that refuse none have no series)",
            m.chart_rejected.clone(),
        );
        r.register(
            "agentdrift_http_connections",
            "Open HTTP connections",
            m.http_connections.clone(),
        );
        r.register(
            "agentdrift_http_connections_refused",
            "Connections refused at max_connections (every open one busy)",
            m.http_connections_refused.clone(),
        );
        r.register(
            "agentdrift_http_connections_evicted",
            "Idle connections closed to make room at max_connections",
            m.http_connections_evicted.clone(),
        );
        r.register(
            "agentdrift_http_accept_errors",
            "Failed accepts (out of file descriptors, ...), each followed by a back-off",
            m.http_accept_errors.clone(),
        );
        r.register(
            "agentdrift_store_commit_retries",
            "Group commits that failed and were retried one request at a time",
            m.commit_retries.clone(),
        );
        r.register(
            "agentdrift_scoring_panics",
            "Panics caught in a segment's detectors (that segment stops scoring)",
            m.scoring_panics.clone(),
        );
        r.register(
            "agentdrift_otlp_foreign_spans",
            "OTLP spans of other instrumentation, kept for the span tree only",
            m.otlp_foreign_spans.clone(),
        );
        r.register(
            "agentdrift_otlp_log_records_ignored",
            "OTLP log records that are no GenAI content or evaluation event",
            m.otlp_log_records_ignored.clone(),
        );
        r.register(
            "agentdrift_otlp_log_records_unattached",
            "GenAI log events without trace and span ids, rejected",
            m.otlp_log_records_unattached.clone(),
        );
        r.register(
            "agentdrift_otlp_pending_traces",
            "Traces waiting to settle before their sessions are scored",
            m.otlp_pending_traces.clone(),
        );
        r.register(
            "agentdrift_otlp_pending_spans",
            "Spans held by traces waiting to settle",
            m.otlp_pending_spans.clone(),
        );
        r.register(
            "agentdrift_otlp_assembly",
            "Span assembly: traces settled with and without root, late spans and content, orphan content, conflicts",
            m.otlp_assembly.clone(),
        );
        r.register(
            "agentdrift_alerts_sent",
            "Drift events per alert sink: delivered, failed (attempts to retry), filtered (skipped by the sink's filters)",
            m.alerts.sent.clone(),
        );
        r.register(
            "agentdrift_alert_queue_lag",
            "Stored drift events an alert sink has not yet delivered or skipped",
            m.alerts.lag.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// Text exposition.
    pub fn encode(&self) -> String {
        let _g = self.lock.lock();
        let mut s = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }

    /// The same metrics in the Prometheus text format 0.0.4, for scrapers
    /// and tools (`promtool`) that do not ask for OpenMetrics.
    pub fn encode_prometheus_text(&self) -> String {
        prometheus_text_of(&self.encode())
    }

    /// A store commit.
    pub fn observe_commit(&self, secs: f64, steps: usize) {
        self.commit_seconds.observe(secs);
        self.commit_steps.observe(steps as f64);
    }

    /// A flush to disk.
    pub fn observe_sync(&self, secs: f64) {
        self.sync_seconds.observe(secs);
    }

    /// A stored event.
    pub fn event(&self, e: &DriftEvent) {
        self.events
            .get_or_create(&DetectorLabels {
                segment: e.segment.to_string(),
                detector: e.detector.clone(),
            })
            .inc();
    }

    /// A closed session.
    pub fn closed(&self, c: &ClosedSession) {
        let segment = c.segment.as_ref().map_or("unscored".to_string(), |k| k.to_string());
        let reason = match c.reason {
            crate::engine::CloseReason::End => "end",
            crate::engine::CloseReason::Idle => "idle",
            crate::engine::CloseReason::Flush => "flush",
        };
        self.sessions_closed
            .get_or_create(&CloseLabels {
                segment,
                reason: reason.into(),
            })
            .inc();
    }

    /// A log entry applied.
    pub fn engine_step(&self) {
        self.engine_entries.inc();
    }

    /// Refreshes gauges from a report of the scorer.
    pub fn refresh(&self, r: &super::messages::EngineReport) {
        self.sessions_open.set(r.open_sessions as i64);
        self.unreadable_log_rows.set(r.stats.unreadable_log_rows as i64);
        self.buffered_bytes.set(r.buffered_bytes as i64);
        self.forced_releases.set(r.stats.forced_releases as i64);
        self.sessions_saved.set(r.saved_sessions as i64);
        self.sessions_evicted.set(r.stats.sessions_evicted as i64);
        self.sessions_restored.set(r.stats.sessions_restored as i64);
        self.session_store_failures.set(r.stats.session_store_failures as i64);
        self.otlp_pending_traces.set(r.pending_traces as i64);
        self.otlp_pending_spans.set(r.pending_spans as i64);
        if let Ok(mut seen) = self.assembly_seen.lock() {
            let a = &r.assembly;
            let pairs = [
                ("traces_resolved", a.traces_resolved, seen.traces_resolved),
                ("traces_unresolved", a.traces_unresolved, seen.traces_unresolved),
                ("traces_forced", a.traces_forced, seen.traces_forced),
                ("late_spans", a.late_spans, seen.late_spans),
                ("late_content", a.late_content, seen.late_content),
                ("orphan_content", a.orphan_content, seen.orphan_content),
                ("session_conflicts", a.session_conflicts, seen.session_conflicts),
                ("repeated_outcomes", a.repeated_outcomes, seen.repeated_outcomes),
                ("user_steps", a.user_steps, seen.user_steps),
                ("synthesized_tools", a.synthesized_tools, seen.synthesized_tools),
                ("nested_llm", a.nested_llm, seen.nested_llm),
            ];
            for (what, now, before) in pairs {
                let c = self.otlp_assembly.get_or_create(&AssemblyLabel { what: what.into() });
                // The assembler's counters survive restarts (snapshots); the
                // metric counts what was added since this process started.
                if now > before {
                    c.inc_by(now - before);
                }
            }
            *seen = a.clone();
        }
        for (seg, t) in &r.stats.segments {
            let l = SegmentLabel { segment: seg.clone() };
            let ratio = |a: u64, b: u64| if b > 0 { a as f64 / b as f64 } else { f64::NAN };
            self.success_ratio
                .get_or_create(&l)
                .set(ratio(t.successes, t.with_outcome));
            self.escalation_ratio
                .get_or_create(&l)
                .set(ratio(t.escalated, t.sessions));
            self.tool_failure_ratio
                .get_or_create(&l)
                .set(ratio(t.tool_errors, t.tool_calls));
            self.cost_usd.get_or_create(&l).set(t.cost_usd);
            self.cost_per_success_usd
                .get_or_create(&l)
                .set(crate::model::cost_per_success(t.cost_usd, t.cost_sessions, t.successes).unwrap_or(f64::NAN));
            for (direction, v) in [("input", t.input_tokens), ("output", t.output_tokens)] {
                self.tokens
                    .get_or_create(&TokenLabels {
                        segment: seg.clone(),
                        direction: direction.into(),
                    })
                    .set(v as f64);
            }
            self.session_duration_seconds
                .get_or_create(&l)
                .set(if t.duration_sessions > 0 {
                    t.duration_ms / t.duration_sessions as f64 / 1000.0
                } else {
                    f64::NAN
                });
            self.session_steps.get_or_create(&l).set(ratio(t.steps, t.sessions));
            let per_minute = t.tokens_per_minute();
            for (direction, v) in [("input", per_minute.map(|m| m.0)), ("output", per_minute.map(|m| m.1))] {
                self.tokens_per_minute
                    .get_or_create(&TokenLabels {
                        segment: seg.clone(),
                        direction: direction.into(),
                    })
                    .set(v.unwrap_or(f64::NAN));
            }
            self.tool_cost_usd.get_or_create(&l).set(t.tool_cost_usd);
            for (family, table) in [
                (&self.success_by_intent, &t.success_by_intent),
                (&self.success_by_length, &t.success_by_length),
            ] {
                for (group, (ok, n)) in table {
                    family
                        .get_or_create(&GroupLabels {
                            segment: seg.clone(),
                            group: group.clone(),
                        })
                        .set(ratio(*ok, *n));
                }
            }
            for (class, source, n) in failure_classes(&t.error_classes, &t.inferred_error_classes) {
                self.error_classes
                    .get_or_create(&ErrorLabels {
                        segment: seg.clone(),
                        class,
                        source: source.into(),
                    })
                    .set(n as f64);
            }
        }
        for (seg, charts) in &r.charts {
            for c in charts {
                if c.rejected > 0 {
                    let l = DetectorLabels {
                        segment: seg.clone(),
                        detector: c.id.clone(),
                    };
                    self.chart_rejected.get_or_create(&l).set(c.rejected as i64);
                }
                let (Some(stat), Some(limit)) = (c.statistic, c.limit) else {
                    continue;
                };
                let l = DetectorLabels {
                    segment: seg.clone(),
                    detector: c.id.clone(),
                };
                self.chart_statistic.get_or_create(&l).set(stat);
                self.chart_limit.get_or_create(&l).set(limit);
            }
        }
    }
}

/// OpenMetrics text → Prometheus text format 0.0.4: a counter family is
/// named after its `_total` samples (OpenMetrics names it without the
/// suffix), and the `# UNIT` and `# EOF` lines, which 0.0.4 lacks, go.
pub fn prometheus_text_of(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let tail = if tail == "info" || tail == "stateset" {
                    "gauge"
                } else {
                    tail
                };
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) && !name.ends_with("_total") {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Failure counts by (class, source) with a bounded label set: the
/// taxonomy's classes and `unclassified` by name, producers' own class names
/// summed as `other`.
fn failure_classes(
    all: &std::collections::BTreeMap<String, u64>,
    inferred: &std::collections::BTreeMap<String, u64>,
) -> Vec<(String, &'static str, u64)> {
    let known = |c: &str| {
        c == crate::features::session::UNCLASSIFIED
            || !matches!(crate::model::ErrorClass::parse(c), crate::model::ErrorClass::Other(_))
    };
    let mut out: std::collections::BTreeMap<(String, &'static str), u64> = Default::default();
    for (class, n) in all {
        let by_rule = inferred.get(class).copied().unwrap_or(0).min(*n);
        let name = if known(class) { class.as_str() } else { "other" };
        if by_rule > 0 {
            *out.entry((name.to_string(), "inferred")).or_insert(0) += by_rule;
        }
        if *n > by_rule {
            *out.entry((name.to_string(), "producer")).or_insert(0) += n - by_rule;
        }
    }
    out.into_iter().map(|((c, s), n)| (c, s, n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, type, labels, help) of every family, from the Prometheus text
    /// of a registry where every family has a sample.
    fn families() -> Vec<(String, String, String, String)> {
        let m = Metrics::new();
        let x = || "x".to_string();
        m.ingest_steps.get_or_create(&FormatLabel { format: x() }).inc();
        m.ingest_rejected.get_or_create(&FormatLabel { format: x() }).inc();
        m.requests
            .get_or_create(&RequestLabels {
                endpoint: x(),
                code: x(),
            })
            .inc();
        m.events
            .get_or_create(&DetectorLabels {
                segment: x(),
                detector: x(),
            })
            .inc();
        m.sessions_closed
            .get_or_create(&CloseLabels {
                segment: x(),
                reason: x(),
            })
            .inc();
        for g in [
            &m.success_ratio,
            &m.escalation_ratio,
            &m.tool_failure_ratio,
            &m.cost_usd,
            &m.cost_per_success_usd,
            &m.session_duration_seconds,
            &m.session_steps,
        ] {
            g.get_or_create(&SegmentLabel { segment: x() }).set(1.0);
        }
        m.tokens
            .get_or_create(&TokenLabels {
                segment: x(),
                direction: x(),
            })
            .set(1.0);
        m.tokens_per_minute
            .get_or_create(&TokenLabels {
                segment: x(),
                direction: x(),
            })
            .set(1.0);
        m.tool_cost_usd.get_or_create(&SegmentLabel { segment: x() }).set(1.0);
        for g in [&m.success_by_intent, &m.success_by_length] {
            g.get_or_create(&GroupLabels {
                segment: x(),
                group: x(),
            })
            .set(1.0);
        }
        m.error_classes
            .get_or_create(&ErrorLabels {
                segment: x(),
                class: x(),
                source: x(),
            })
            .set(1.0);
        m.otlp_assembly.get_or_create(&AssemblyLabel { what: x() }).inc();
        m.chart_statistic
            .get_or_create(&DetectorLabels {
                segment: x(),
                detector: x(),
            })
            .set(1.0);
        m.chart_limit
            .get_or_create(&DetectorLabels {
                segment: x(),
                detector: x(),
            })
            .set(1.0);
        m.chart_rejected
            .get_or_create(&DetectorLabels {
                segment: x(),
                detector: x(),
            })
            .set(1);
        m.alerts
            .sent
            .get_or_create(&crate::alerts::deliver::SentLabels {
                sink: x(),
                outcome: x(),
            })
            .inc();
        m.alerts
            .lag
            .get_or_create(&crate::alerts::deliver::SinkLabel { sink: x() })
            .set(1);
        let text = m.encode_prometheus_text();
        let mut out: Vec<(String, String, String, String)> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap();
                out.push((name.into(), String::new(), String::new(), help.into()));
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                out.last_mut().unwrap().1 = rest.split_once(' ').unwrap().1.into();
            } else if let Some((_, labels)) = line.split_once('{') {
                let last = out.last_mut().unwrap();
                if last.2.is_empty() {
                    let names: Vec<String> = labels
                        .split(',')
                        .filter_map(|kv| kv.split_once('=').map(|(k, _)| format!("`{k}`")))
                        .filter(|k| k != "`le`")
                        .collect();
                    last.2 = names.join(", ");
                }
            }
        }
        out
    }

    #[test]
    fn the_readme_metric_table_is_the_registry() {
        let expected: Vec<String> = families()
            .into_iter()
            .map(|(name, kind, labels, help)| {
                let labels = if labels.is_empty() { "—".to_string() } else { labels };
                format!("| `{name}` | {kind} | {labels} | {help} |")
            })
            .collect();
        let readme = include_str!("../../README.md");
        let start = readme
            .find("<!-- metrics -->")
            .expect("README holds the metric table after <!-- metrics -->");
        let table: Vec<String> = readme[start..]
            .lines()
            .skip(3)
            .take_while(|l| l.starts_with('|'))
            .map(String::from)
            .collect();
        assert!(
            table == expected,
            "README's metric table differs from the registry; it should read:\n{}",
            expected.join("\n")
        );
    }

    #[test]
    fn openmetrics_becomes_prometheus_text() {
        let om = "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total{code=\"200\"} 3\n\
                  # HELP a_wait_seconds Wait.\n# TYPE a_wait_seconds histogram\n# UNIT a_wait_seconds seconds\n\
                  a_wait_seconds_sum 0.5\na_wait_seconds_count 1\na_wait_seconds_bucket{le=\"+Inf\"} 1\n\
                  # HELP a_open Open.\n# TYPE a_open gauge\na_open 2\n# HELP a_done_total Done.\n\
                  # TYPE a_done_total counter\na_done_total 1\n# EOF\n";
        let expected = "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\na_requests_total{code=\"200\"} 3\n\
                        # HELP a_wait_seconds Wait.\n# TYPE a_wait_seconds histogram\n\
                        a_wait_seconds_sum 0.5\na_wait_seconds_count 1\na_wait_seconds_bucket{le=\"+Inf\"} 1\n\
                        # HELP a_open Open.\n# TYPE a_open gauge\na_open 2\n# HELP a_done_total Done.\n\
                        # TYPE a_done_total counter\na_done_total 1\n";
        assert_eq!(prometheus_text_of(om), expected);
    }
}
