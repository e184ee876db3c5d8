//! Reports: events (list, one, live stream), session reports and replay,
//! segment reports.

use super::bodies::{
    BaselineRates, ChartReading, ChartSeries, ErrorBody, FeatureReading, LiveRates, OtlpStatus, Replay, ReplayNode,
    SegmentList, SegmentReport, SegmentSummary, SessionReport, SessionStatus, SpanTreeSummary, Tokens, ToolSuccess,
    Transition,
};
use super::error::ApiError;
use crate::detect::DriftEvent;
use crate::engine::resolve_segment;
use crate::features::{Feature, session_features};
use crate::model::{SegmentKey, Session, Step};
use crate::service::Shared;
use crate::store::{EventPage, EventQuery, SessionPage, SessionQuery};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::Arc;

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Unavailable(format!("worker failed: {e}")))?
}

/// Query of `GET /v1/events` (numbers are parsed by hand, so a bad one is
/// refused naming its parameter).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsParams {
    /// Segment `agent/task_type`.
    segment: Option<String>,
    /// Detector id (`ewma:steps`) or family (`ewma`).
    detector: Option<String>,
    /// Events at or after this time, unix ms.
    #[param(value_type = Option<i64>)]
    since: Option<String>,
    /// Events of one session.
    session: Option<String>,
    /// Page size, 1–1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<i64>)]
    cursor: Option<String>,
    /// `oldest` first (default) or `newest` first (listing only).
    #[param(inline, value_type = Option<EventOrder>)]
    order: Option<String>,
}

/// Which end of the event log a listing starts from.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // documents the accepted values of `order`
#[schema(rename_all = "snake_case")]
enum EventOrder {
    /// Oldest first (the default).
    Oldest,
    /// Newest first.
    Newest,
}

fn parse_num<T: std::str::FromStr>(field: &str, v: &Option<String>) -> Result<Option<T>, ApiError> {
    v.as_deref()
        .map(|s| {
            s.parse::<T>().map_err(|_| ApiError::BadQuery {
                field: field.into(),
                message: format!("expected a number, got `{s}`"),
            })
        })
        .transpose()
}

/// One of two spellings of a query parameter, or a 400 naming both.
fn parse_choice<T: Copy>(field: &str, v: &Option<String>, choices: [(&str, T); 2]) -> Result<Option<T>, ApiError> {
    let Some(s) = v.as_deref() else { return Ok(None) };
    match choices.iter().find(|(name, _)| *name == s) {
        Some((_, value)) => Ok(Some(*value)),
        None => Err(ApiError::BadQuery {
            field: field.into(),
            message: format!("expected {} or {}, got `{s}`", choices[0].0, choices[1].0),
        }),
    }
}

fn params<T>(q: Result<Query<T>, axum::extract::rejection::QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(p)| p).map_err(|e| {
        let text = e.body_text();
        let field = text.split('`').nth(1).unwrap_or("query").to_string();
        ApiError::BadQuery { field, message: text }
    })
}

/// The `limit` of a listing: 1–1000, 100 when absent.
fn page_limit(v: &Option<String>) -> Result<usize, ApiError> {
    let limit: usize = parse_num("limit", v)?.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadQuery {
            field: "limit".into(),
            message: "must be between 1 and 1000".into(),
        });
    }
    Ok(limit)
}

/// `GET /v1/events`.
#[utoipa::path(get, path = "/v1/events", tag = "reports",
    summary = "Drift events, oldest first (or newest first), paged by cursor",
    params(EventsParams),
    responses((status = 200, description = "A page", body = EventPage),
              (status = 400, description = "Bad query parameter", body = ErrorBody)))]
pub async fn list_events(
    State(s): State<Arc<Shared>>,
    q: Result<Query<EventsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<EventPage>, ApiError> {
    let p = params(q)?;
    let limit = page_limit(&p.limit)?;
    let query = EventQuery {
        segment: p.segment,
        detector: p.detector,
        since: parse_num("since", &p.since)?,
        session: p.session,
        cursor: parse_num("cursor", &p.cursor)?,
        limit,
        newest_first: parse_choice("order", &p.order, [("oldest", false), ("newest", true)])?.unwrap_or(false),
    };
    let store = s.storage.store.clone();
    Ok(Json(blocking(move || Ok(store.events(&query)?)).await?))
}

/// Query of `GET /v1/sessions`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SessionsParams {
    /// Agent of the session's first step.
    agent: Option<String>,
    /// Segment `agent/task_type` it is scored against.
    segment: Option<String>,
    /// Scored by a baseline or not.
    #[param(value_type = Option<bool>)]
    scored: Option<String>,
    /// Sessions whose last step is at or after this time, unix ms.
    #[param(value_type = Option<i64>)]
    since: Option<String>,
    /// Page size, 1–1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<i64>)]
    cursor: Option<String>,
}

/// `GET /v1/sessions`: every session seen (open and closed), in the order
/// first seen, a page at a time.
#[utoipa::path(get, path = "/v1/sessions", tag = "reports",
    summary = "Every session seen (open and closed), in the order first seen, paged by cursor",
    params(SessionsParams),
    responses((status = 200, description = "A page", body = SessionPage),
              (status = 400, description = "Bad query parameter", body = ErrorBody)))]
pub async fn list_sessions(
    State(s): State<Arc<Shared>>,
    q: Result<Query<SessionsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SessionPage>, ApiError> {
    let p = params(q)?;
    let limit = page_limit(&p.limit)?;
    let scored = parse_choice("scored", &p.scored, [("true", true), ("false", false)])?;
    let query = SessionQuery {
        agent: p.agent,
        segment: p.segment,
        scored,
        since: parse_num("since", &p.since)?,
        cursor: parse_num("cursor", &p.cursor)?,
        limit,
    };
    let store = s.storage.store.clone();
    Ok(Json(blocking(move || Ok(store.sessions_page(&query)?)).await?))
}

/// `GET /v1/otlp/status`: span assembly at a glance (traces waiting to
/// settle, how traces settled, late and orphan content).
#[utoipa::path(get, path = "/v1/otlp/status", tag = "reports",
    summary = "Span assembly counters: traces waiting to settle, settled with and without root, late and orphan content",
    responses((status = 200, description = "Status", body = OtlpStatus),
              (status = 503, description = "Scorer not answering", body = ErrorBody)))]
pub async fn otlp_status(State(s): State<Arc<Shared>>) -> Result<Json<OtlpStatus>, ApiError> {
    let r = s
        .engine
        .report()
        .await
        .ok_or_else(|| ApiError::Unavailable("the scorer did not answer".into()))?;
    Ok(Json(OtlpStatus {
        pending_traces: r.pending_traces,
        pending_spans: r.pending_spans,
        assembly: r.assembly,
        log_records_ignored: s.metrics.otlp_log_records_ignored.get(),
        log_records_unattached: s.metrics.otlp_log_records_unattached.get(),
        foreign_spans: s.metrics.otlp_foreign_spans.get(),
    }))
}

/// `GET /v1/events/{id}`.
#[utoipa::path(get, path = "/v1/events/{id}", tag = "reports", summary = "One drift event",
    params(("id" = String, Path, description = "Event id")),
    responses((status = 200, description = "The event", body = DriftEvent),
              (status = 404, description = "No such event", body = ErrorBody)))]
pub async fn get_event(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Json<DriftEvent>, ApiError> {
    let store = s.storage.store.clone();
    let idc = id.clone();
    blocking(move || Ok(store.event(&idc)?))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("event {id}")))
}

/// `GET /v1/events/stream`: stored events as Server-Sent Events, optionally
/// filtered by `segment` and `detector` (id or family).
#[utoipa::path(get, path = "/v1/events/stream", tag = "reports",
    summary = "Live drift events as Server-Sent Events (`event: drift`, data = a DriftEvent as JSON; `event: lagged` when a slow client missed some)",
    params(("segment" = Option<String>, Query, description = "Segment filter"),
           ("detector" = Option<String>, Query, description = "Detector id or family filter")),
    responses((status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
              (status = 400, description = "Bad query parameter", body = ErrorBody)))]
pub async fn stream_events(
    State(s): State<Arc<Shared>>,
    q: Result<Query<EventsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let p = params(q)?;
    let rx = s.events.subscribe();
    let mut stop = s.shutdown.clone();
    let stream = tokio_stream::wrappers::BroadcastStream::new(rx).filter_map(move |e| {
        let keep = match &e {
            Ok(e) => {
                p.segment.as_ref().is_none_or(|seg| *seg == e.segment.to_string())
                    && p.detector.as_ref().is_none_or(|d| *d == e.detector || *d == e.kind)
            }
            Err(_) => true,
        };
        let out = match e {
            Ok(e) if keep => Some(Ok(Event::default()
                .event("drift")
                .id(e.id.clone())
                .json_data(&*e)
                .unwrap_or_default())),
            Ok(_) => None,
            // A slow client missed events: say so; it can page them from /v1/events.
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                Some(Ok(Event::default().event("lagged").data(n.to_string())))
            }
        };
        futures::future::ready(out)
    });
    // The stream ends when the server shuts down, so shutdown never waits on it.
    let stream = stream.take_until(async move {
        let _ = stop.wait_for(|v| *v).await;
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// A session's steps: native ones as received, then the ones assembled
/// again from its stored spans and log events (costs filled in), each with
/// its JSON.
fn load_steps(s: &Shared, id: &str) -> Result<Vec<(u64, String, Step)>, ApiError> {
    let rows = s.storage.log.session_steps(id)?;
    let mut out: Vec<(u64, String, Step)> = rows
        .into_iter()
        .map(|r| {
            let step: Step = serde_json::from_str(&r.raw)
                .map_err(|e| ApiError::Store(crate::store::StoreError::Corrupt(e.to_string())))?;
            Ok((r.seq, r.raw, step))
        })
        .collect::<Result<_, ApiError>>()?;
    let (traces, requests) = s.storage.session_requests(id)?;
    if !requests.is_empty() {
        let traces: std::collections::HashSet<String> = traces.into_iter().collect();
        let (mut spans, mut content) = (Vec::new(), Vec::new());
        for r in &requests {
            match crate::service::engine_task::records_of_request(r, &s.read_opts) {
                crate::store::OtlpRecords::Spans(v) => {
                    spans.extend(v.into_iter().filter(|x| traces.contains(&x.trace_id)))
                }
                crate::store::OtlpRecords::Content(v) => {
                    content.extend(v.into_iter().filter(|x| traces.contains(&x.trace_id)))
                }
            }
        }
        for mut step in crate::ingest::otel::assemble_session(spans, content, id) {
            s.prices.fill_cost(&mut step);
            let raw = serde_json::to_string(&step).expect("steps serialise");
            out.push((step.seq, raw, step));
        }
    }
    Ok(out)
}

/// `GET /v1/sessions/{id}`: each feature with its baseline percentile, the
/// events the session triggered, and a span tree summary.
#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "reports",
    summary = "Session report: features with baseline percentiles, events, span tree summary",
    params(("id" = String, Path, description = "Session id")),
    responses((status = 200, description = "The report", body = SessionReport),
              (status = 404, description = "No such session", body = ErrorBody)))]
pub async fn session_report(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<SessionReport>, ApiError> {
    let shared = s.clone();
    blocking(move || {
        let rows = load_steps(&shared, &id)?;
        if rows.is_empty() {
            return Err(ApiError::NotFound(format!("session {id}")));
        }
        let mut steps: Vec<Step> = rows.into_iter().map(|r| r.2).collect();
        for st in &mut steps {
            shared.prices.fill_cost(st);
        }
        let session = Session::from_sorted(id.clone(), steps);
        let f = session_features(
            &session,
            &crate::features::Rules::new(&shared.prices, &shared.taxonomy).with_grounding(&shared.grounding),
        );
        let (seg, fallback) = resolve_segment(&shared.baseline, &session.steps[0]);
        let features: Vec<FeatureReading> = Feature::ALL
            .iter()
            .filter_map(|&feat| {
                let value = f.get(feat)?;
                let b = seg.and_then(|s| s.feature(feat));
                Some(FeatureReading {
                    feature: feat.name(),
                    value,
                    baseline_percentile: b.map(|b| b.ecdf.percentile(value)),
                    baseline_median: b.map(|b| b.quantiles[2]),
                    baseline_p05: b.map(|b| b.quantiles[0]),
                    baseline_p95: b.map(|b| b.quantiles[4]),
                })
            })
            .collect();
        let closed = shared.storage.store.session(&id)?;
        let events = shared.storage.store.events(&EventQuery {
            session: Some(id.clone()),
            limit: 1000,
            ..EventQuery::default()
        })?;
        let depths = session.depths();
        Ok(Json(SessionReport {
            session_id: id,
            status: if closed.is_some() {
                SessionStatus::Closed
            } else {
                SessionStatus::Open
            },
            close_reason: closed.as_ref().map(|c| c.closed.reason),
            segment: seg.map(|s| s.key.clone()),
            fallback_from: fallback.filter(|_| seg.is_some()),
            scored: seg.is_some(),
            steps: session.steps.len(),
            // A closed session's outcome may have come without an end step
            // (an evaluation, the root spans, a later report).
            outcome: closed
                .as_ref()
                .map_or(f.outcome, |c| c.closed.features.outcome.or(f.outcome)),
            outcome_source: closed.as_ref().and_then(|c| c.closed.outcome_source),
            features,
            events: events.events,
            span_tree: SpanTreeSummary {
                max_depth: depths.iter().flatten().max().copied(),
                spans: session.steps.iter().filter(|s| s.span_id.is_some()).count(),
                tool_call_ratio: f.get(Feature::ToolCallRatio),
                llm_density: f.get(Feature::LlmDensity),
                input_tokens: f.get(Feature::InputTokens),
                output_tokens: f.get(Feature::OutputTokens),
                cost_usd: f.get(Feature::CostUsd),
                handoffs: f.get(Feature::Handoffs),
                agents: session.steps.iter().map(|s| s.agent.clone()).collect(),
            },
            error_classes: f.error_classes,
            inferred_error_classes: f.inferred_error_classes,
            intent: f.intent,
        }))
    })
    .await
}

/// `GET /v1/tasks/{id}`: the sessions sharing a correlation id (native
/// `correlation_id`, or an OTLP trace) merged into one task.
#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "reports",
    summary = "A multi-agent task: the sessions sharing a correlation id (or trace id) as one tree across agents, with per-agent and total tokens, cost, latency and the outcome",
    params(("id" = String, Path, description = "Correlation id, or OTLP trace id")),
    responses((status = 200, description = "The task", body = crate::model::task::TaskReport),
              (status = 404, description = "No session carries this id", body = ErrorBody)))]
pub async fn task_report(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<crate::model::task::TaskReport>, ApiError> {
    blocking(move || {
        let ids = s.storage.correlated_sessions(&id)?;
        if ids.is_empty() {
            return Err(ApiError::NotFound(format!(
                "task {id} (no session carries this correlation or trace id)"
            )));
        }
        let sessions = ids
            .iter()
            .map(|sid| {
                let mut steps: Vec<Step> = load_steps(&s, sid)?.into_iter().map(|r| r.2).collect();
                steps.sort_by_key(|st| st.seq);
                Ok(Session::from_sorted(sid.clone(), steps))
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        Ok(Json(crate::model::task::merge(&id, sessions)))
    })
    .await
}

/// `GET /v1/sessions/{id}/replay`: every step as stored (the bytes received),
/// in `seq` order, with the span tree and the sessions correlated with it.
/// `Accept: application/x-ndjson` returns the stored records one per line.
#[utoipa::path(get, path = "/v1/sessions/{id}/replay", tag = "reports",
    summary = "The session as stored: every step (bytes as received) in seq order, span tree, correlated sessions",
    params(("id" = String, Path, description = "Session id"),
           ("accept" = Option<String>, Header, description = "`application/x-ndjson` for the stored records, one per line")),
    responses((status = 200, description = "The session whole",
               content((Replay = "application/json"), (String = "application/x-ndjson"))),
              (status = 404, description = "No such session", body = ErrorBody)))]
pub async fn session_replay(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let ndjson = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("ndjson") || a.contains("jsonl"));
    let shared = s.clone();
    blocking(move || {
        let rows = load_steps(&shared, &id)?;
        if rows.is_empty() {
            return Err(ApiError::NotFound(format!("session {id}")));
        }
        if ndjson {
            let mut body = String::new();
            for (_, raw, _) in &rows {
                body.push_str(raw);
                body.push('\n');
            }
            return Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response());
        }
        let session = Session::from_sorted(id.clone(), rows.iter().map(|r| r.2.clone()).collect());
        let depths = session.depths();
        let span_tree: Vec<ReplayNode> = session
            .steps
            .iter()
            .zip(&depths)
            .map(|(st, d)| ReplayNode {
                seq: st.seq,
                kind: st.kind,
                agent: st.agent.clone(),
                to_agent: st.to_agent.clone(),
                span_id: st.span_id.clone(),
                parent_span_id: st.parent_span_id.clone(),
                depth: *d,
            })
            .collect();
        let correlation: BTreeSet<String> = session.steps.iter().filter_map(|s| s.correlation_id.clone()).collect();
        let mut correlated = BTreeSet::new();
        for c in &correlation {
            correlated.extend(shared.storage.correlated_sessions(c)?);
        }
        correlated.remove(&id);
        let raws: Vec<Box<RawValue>> = rows
            .into_iter()
            .map(|(_, raw, _)| {
                RawValue::from_string(raw)
                    .map_err(|e| ApiError::Store(crate::store::StoreError::Corrupt(e.to_string())))
            })
            .collect::<Result<_, _>>()?;
        Ok(Json(Replay {
            agents: session.steps.iter().map(|s| s.agent.clone()).collect(),
            session_id: id,
            steps: raws,
            span_tree,
            correlation_ids: correlation,
            correlated_sessions: correlated,
        })
        .into_response())
    })
    .await
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

fn success_table(t: &BTreeMap<String, (u64, u64)>) -> BTreeMap<String, ToolSuccess> {
    t.iter()
        .map(|(k, (s, n))| {
            (
                k.clone(),
                ToolSuccess {
                    sessions: *n,
                    success_rate: ratio(*s, *n),
                },
            )
        })
        .collect()
}

fn segment_summary(
    b: &crate::baseline::SegmentBaseline,
    t: Option<&crate::engine::SegmentTotals>,
    alarms: u64,
) -> SegmentSummary {
    let t = t.cloned().unwrap_or_default();
    let r = &b.rates;
    SegmentSummary {
        segment: b.key.clone(),
        baseline: BaselineRates {
            sessions: b.sessions,
            success_rate: ratio(
                u64::from(r.outcome_sessions - r.failures),
                u64::from(r.outcome_sessions),
            ),
            escalation_rate: ratio(u64::from(r.escalations), u64::from(r.sessions)),
            tool_failure_rate: ratio(r.tool_errors, r.tool_calls),
            cost_per_task_usd: r.cost_per_task,
            cost_per_success_usd: r.cost_per_success,
            mean_duration_ms: r.mean_duration_ms,
            tool_cost_per_task_usd: r.tool_cost_per_task,
            error_classes: r.error_classes.clone(),
            inferred_error_classes: r.inferred_error_classes.clone(),
            session_length_share_50_100_200: r.length_shares,
            long_sessions: (&r.long_sessions).into(),
        },
        live: LiveRates {
            sessions: t.sessions,
            fallback_sessions: t.fallback,
            success_rate: ratio(t.successes, t.with_outcome),
            escalation_rate: ratio(t.escalated, t.sessions),
            tool_failure_rate: ratio(t.tool_errors, t.tool_calls),
            tool_efficiency: ratio(t.tool_calls - t.tool_errors.min(t.tool_calls), t.tool_calls),
            sessions_with_tool_failure: t.tool_error_sessions,
            mean_completion_time_ms: (t.duration_sessions > 0).then(|| t.duration_ms / t.duration_sessions as f64),
            tokens: Tokens {
                input: t.input_tokens,
                output: t.output_tokens,
                per_session: ratio(t.input_tokens + t.output_tokens, t.sessions),
                input_per_minute: t.tokens_per_minute().map(|m| m.0),
                output_per_minute: t.tokens_per_minute().map(|m| m.1),
            },
            cost_per_task_usd: (t.cost_sessions > 0).then(|| t.cost_usd / t.cost_sessions as f64),
            cost_per_success_usd: crate::model::cost_per_success(t.cost_usd, t.cost_sessions, t.successes),
            session_length_share_50_100_200: t.over.map(|o| ratio(o, t.sessions)),
            success_by_tool: success_table(&t.success_by_tool),
            success_by_intent: success_table(&t.success_by_intent),
            success_by_length: success_table(&t.success_by_length),
            long_sessions: (&t.long).into(),
            tool_cost_per_task_usd: (t.tool_cost_sessions > 0).then(|| t.tool_cost_usd / t.tool_cost_sessions as f64),
            inferred_error_classes: t.inferred_error_classes,
            error_classes: t.error_classes,
        },
        alarms,
    }
}

/// Query of `GET /v1/charts`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ChartParams {
    /// Segment `agent/task_type`.
    segment: Option<String>,
    /// Chart id (`ewma:output_tokens`, `markov`, …; `GET /v1/segments/{segment}` lists them).
    chart: Option<String>,
}

/// `GET /v1/charts?segment=&chart=`: one chart's recent readings with its
/// limit and centre line (the console's control-chart view).
#[utoipa::path(get, path = "/v1/charts", tag = "reports",
    summary = "A chart's recent readings (the statistic after each session against its limit, alarm points with their events)",
    params(ChartParams),
    responses((status = 200, description = "The chart", body = ChartSeries),
              (status = 400, description = "Missing or bad query parameter", body = ErrorBody),
              (status = 404, description = "No such segment or chart", body = ErrorBody),
              (status = 503, description = "The scorer is busy", body = ErrorBody)))]
pub async fn chart_series(
    State(s): State<Arc<Shared>>,
    q: Result<Query<ChartParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ChartSeries>, ApiError> {
    let q = params(q)?;
    let need = |v: Option<String>, field: &str| {
        v.filter(|x| !x.is_empty()).ok_or_else(|| ApiError::BadQuery {
            field: field.into(),
            message: "required".into(),
        })
    };
    let segment = need(q.segment, "segment")?;
    let chart = need(q.chart, "chart")?;
    let (agent, task) = segment.rsplit_once('/').ok_or_else(|| ApiError::BadQuery {
        field: "segment".into(),
        message: "use AGENT/TASK_TYPE".into(),
    })?;
    let key = SegmentKey::new(agent, task);
    let b = s
        .baseline
        .segment(&key)
        .ok_or_else(|| ApiError::NotFound(format!("segment {key}")))?;
    let spec = b
        .charts
        .iter()
        .find(|c| c.id == chart)
        .ok_or_else(|| ApiError::NotFound(format!("chart {chart} of segment {key}")))?
        .clone();
    let points = s
        .engine
        .chart(&key.to_string(), &chart)
        .await
        .ok_or_else(|| ApiError::Unavailable("the scorer is busy; retry".into()))?;
    // Charts of N(0,1) scores and CUSUMs start at 0; EWMA and Shewhart charts are two-sided.
    let centre = matches!(spec.family.as_str(), "ewma" | "cusum" | "shewhart" | "bernoulli").then_some(0.0);
    let two_sided = matches!(spec.family.as_str(), "ewma" | "shewhart");
    Ok(Json(ChartSeries {
        segment: key.to_string(),
        chart,
        family: spec.family,
        unit: spec.unit,
        arl0: spec.arl0,
        centre,
        two_sided,
        points,
    }))
}

/// `GET /v1/segments`.
#[utoipa::path(get, path = "/v1/segments", tag = "reports",
    summary = "Every segment: baseline and live rates, alarms",
    responses((status = 200, description = "Segments", body = SegmentList)))]
pub async fn list_segments(State(s): State<Arc<Shared>>) -> Result<Json<SegmentList>, ApiError> {
    let report = s.engine.report().await;
    let segments: Vec<SegmentSummary> = s
        .baseline
        .segments
        .iter()
        .map(|b| {
            let key = b.key.to_string();
            let alarms = report
                .as_ref()
                .and_then(|r| r.charts.get(&key))
                .map_or(0, |c| c.iter().map(|x| x.alarms).sum());
            segment_summary(b, report.as_ref().and_then(|r| r.stats.segments.get(&key)), alarms)
        })
        .collect();
    Ok(Json(SegmentList {
        segments,
        open_sessions: report.as_ref().map(|r| r.open_sessions),
        unscored_sessions: report.as_ref().map(|r| r.stats.unscored_sessions),
    }))
}

/// `GET /v1/segments/{agent}/{task_type}` (the agent may contain slashes).
#[utoipa::path(get, path = "/v1/segments/{segment}", tag = "reports",
    summary = "One segment (`AGENT/TASK_TYPE`; the agent may contain slashes): rates, costs, token burn, session lengths, error classes, success by tool, each chart's statistic and limit, moved transitions, recent events",
    params(("segment" = String, Path, description = "`agent/task_type`")),
    responses((status = 200, description = "The report", body = SegmentReport),
              (status = 404, description = "No such segment", body = ErrorBody)))]
pub async fn segment_report(
    State(s): State<Arc<Shared>>,
    Path(segment): Path<String>,
) -> Result<Json<SegmentReport>, ApiError> {
    let (agent, task) = segment
        .rsplit_once('/')
        .ok_or_else(|| ApiError::NotFound(format!("segment {segment} (use AGENT/TASK_TYPE)")))?;
    let key = SegmentKey::new(agent, task);
    let b = s
        .baseline
        .segment(&key)
        .ok_or_else(|| ApiError::NotFound(format!("segment {key}")))?
        .clone();
    let report = s.engine.report().await;
    let name = key.to_string();
    let charts = report
        .as_ref()
        .and_then(|r| r.charts.get(&name))
        .cloned()
        .unwrap_or_default();
    let alarms = charts.iter().map(|c| c.alarms).sum();
    let summary = segment_summary(&b, report.as_ref().and_then(|r| r.stats.segments.get(&name)), alarms);
    let store = s.storage.store.clone();
    let n2 = name.clone();
    let recent = blocking(move || {
        // The newest 20, oldest of them first.
        let mut page = store.events(&EventQuery {
            segment: Some(n2),
            limit: 20,
            newest_first: true,
            ..EventQuery::default()
        })?;
        page.events.reverse();
        Ok(page.events)
    })
    .await?;
    let moved = recent
        .iter()
        .rev()
        .find(|e| e.kind == "markov")
        .map(|e| e.moved.clone())
        .unwrap_or_default();
    let k = b.markov.states.len();
    let mut top: Vec<(f64, usize)> = (0..k * k)
        .filter(|c| b.markov.counts[*c] > 0.0)
        .map(|c| (b.markov.counts[c], c))
        .collect();
    top.sort_by(|x, y| y.0.total_cmp(&x.0));
    Ok(Json(SegmentReport {
        summary,
        charts: charts
            .iter()
            .map(|c| {
                let spec = b.charts.iter().find(|x| x.id == c.id);
                ChartReading {
                    id: c.id.clone(),
                    statistic: c.statistic,
                    limit: c.limit,
                    alarms: c.alarms,
                    rejected: c.rejected,
                    arl0: spec.map(|x| x.arl0),
                    unit: spec.map(|x| x.unit.clone()),
                }
            })
            .collect(),
        top_moved_transitions: moved,
        baseline_top_transitions: top
            .iter()
            .take(10)
            .map(|(n, c)| Transition {
                from: b.markov.states[c / k].clone(),
                to: b.markov.states[c % k].clone(),
                count: *n,
                p: b.markov.probs[*c],
            })
            .collect(),
        baseline_success_by_task_type: b.rates.success_by_task.clone(),
        baseline_success_by_intent: b.rates.success_by_intent.clone(),
        baseline_success_by_tool: b.rates.success_by_tool.clone(),
        baseline_success_by_length: b.rates.success_by_length.clone(),
        recent_events: recent,
    }))
}
