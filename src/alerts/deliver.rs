//! One thread per sink: read after the cursor, filter, group a burst, wait
//! for the rate limit, post until accepted (backoff with jitter), move the
//! cursor. Nothing here can hold ingest back: the thread only reads the
//! store and writes its own cursor row.

use super::format::{self, Links};
use super::http::Client;
use super::severity::severity;
use super::{AlertError, Sink, SinkKind};
use crate::detect::event::DriftEvent;
use crate::store::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// `sink` and `outcome` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SentLabels {
    /// The sink's name.
    pub sink: String,
    /// `delivered` (events in accepted messages), `failed` (events in attempts
    /// that failed and will be retried) or `filtered` (events the sink's filters skip).
    pub outcome: String,
}

/// The `sink` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    /// The sink's name.
    pub sink: String,
}

/// What delivery exposes on `/metrics`.
#[derive(Clone, Default)]
pub struct AlertMetrics {
    /// `agentdrift_alerts_sent_total{sink,outcome}`: events by what became of them.
    pub sent: Family<SentLabels, Counter>,
    /// `agentdrift_alert_queue_lag{sink}`: stored events the sink has not yet delivered or skipped.
    pub lag: Family<SinkLabel, Gauge>,
}

impl AlertMetrics {
    fn count(&self, sink: &str, outcome: &str, n: usize) {
        self.sent
            .get_or_create(&SentLabels {
                sink: sink.into(),
                outcome: outcome.into(),
            })
            .inc_by(n as u64);
    }
}

/// How often a sink looks for new events when it has none.
const POLL: Duration = Duration::from_millis(250);
/// First retry wait.
const BASE_BACKOFF: Duration = Duration::from_millis(500);

/// The wait before retry `attempt` (0-based): doubling from [`BASE_BACKOFF`]
/// up to `max`, then "equal jitter" (half fixed, half uniform by `u` in
/// [0, 1)), so sinks that failed together do not retry together.
pub fn backoff(attempt: u32, max: Duration, u: f64) -> Duration {
    let full = BASE_BACKOFF.saturating_mul(1u32 << attempt.min(20)).min(max);
    full / 2 + full.mul_f64(u.clamp(0.0, 1.0) / 2.0)
}

/// A token bucket: `per_minute` messages a minute, bursts up to that many.
#[derive(Clone, Debug)]
pub struct RateLimit {
    per_minute: f64,
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    /// A full bucket at `now`.
    pub fn new(per_minute: u32, now: Instant) -> RateLimit {
        RateLimit {
            per_minute: f64::from(per_minute.max(1)),
            tokens: f64::from(per_minute.max(1)),
            at: now,
        }
    }

    /// Takes a token, or says how long until one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.per_minute / 60.0).min(self.per_minute);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) * 60.0 / self.per_minute))
        }
    }
}

/// Whether a sink's filters keep an event.
pub fn wanted(sink: &super::SinkConfig, e: &DriftEvent) -> bool {
    let seg = e.segment.to_string();
    (sink.segments.is_empty() || sink.segments.iter().any(|p| crate::model::glob::matches(p, &seg)))
        && (sink.detectors.is_empty() || sink.detectors.iter().any(|d| *d == e.kind || *d == e.detector))
        && severity(e) >= sink.min_severity
}

/// Wall-clock time, unix ms: the service's injected clock.
pub type NowMs = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The running sink threads; dropping them does not stop them, [`Deliveries::stop`] does.
pub struct Deliveries {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Deliveries {
    /// Starts one thread per sink. Fails only on a sink whose client cannot be built.
    pub fn start(
        sinks: Vec<Sink>,
        store: Arc<dyn Store>,
        links: Links,
        metrics: AlertMetrics,
        now_ms: NowMs,
    ) -> Result<Deliveries, AlertError> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for sink in sinks {
            let ca = (!sink.config.ca_file.is_empty()).then_some(sink.config.ca_file.as_str());
            let client = Client::new(ca, Duration::from_secs(sink.config.timeout_secs)).map_err(|source| {
                AlertError::Client {
                    sink: sink.config.name.clone(),
                    source,
                }
            })?;
            let worker = Worker {
                sink,
                client,
                store: store.clone(),
                links: links.clone(),
                metrics: metrics.clone(),
                stop: stop.clone(),
                now_ms: now_ms.clone(),
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("agentdrift-alerts-{}", worker.sink.config.name))
                    .spawn(move || worker.run())
                    .expect("spawn an alert sink thread"),
            );
        }
        Ok(Deliveries { stop, threads })
    }

    /// Stops every sink (an attempt in flight ends at its deadline) and waits for them.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

struct Worker {
    sink: Sink,
    client: Client,
    store: Arc<dyn Store>,
    links: Links,
    metrics: AlertMetrics,
    stop: Arc<AtomicBool>,
    now_ms: NowMs,
}

impl Worker {
    fn name(&self) -> &str {
        &self.sink.config.name
    }

    fn cursor_key(&self) -> String {
        format!("alerts:{}", self.sink.config.name)
    }

    /// Sleeps up to `d`, waking early to stop; false when stopping.
    fn pause(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= end {
                return true;
            }
            std::thread::sleep((end - now).min(Duration::from_millis(50)));
        }
        false
    }

    /// `f` retried with backoff until it works (its attempt number, from 0,
    /// is its argument); `None` when the sink stops first.
    fn retry<T, E: std::fmt::Display>(&self, what: &str, mut f: impl FnMut(u32) -> Result<T, E>) -> Option<T> {
        let mut attempt = 0u32;
        loop {
            match f(attempt) {
                Ok(v) => {
                    if attempt > 0 {
                        tracing::info!(
                            sink = self.name(),
                            attempts = attempt + 1,
                            "alert sink could {what} after retries"
                        );
                    }
                    return Some(v);
                }
                Err(e) => {
                    let max = Duration::from_secs(self.sink.config.max_backoff_secs);
                    let wait = backoff(attempt, max, rand::random());
                    tracing::warn!(sink = self.name(), error = %e, retry_in_ms = wait.as_millis() as u64, "alert sink cannot {what}; retrying");
                    attempt = attempt.saturating_add(1);
                    if !self.pause(wait) {
                        return None;
                    }
                }
            }
        }
    }

    fn run(self) {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(sink = self.name(), error = %e, "alert sink cannot start its runtime; it delivers nothing");
                return;
            }
        };
        let key = self.cursor_key();
        let Some(saved) = self.retry("read its cursor", |_| self.store.cursor(&key)) else {
            return;
        };
        let mut cursor = match saved {
            Some(c) => c,
            None => {
                let start = if self.sink.config.start == "all" {
                    0
                } else {
                    let Some(last) = self.retry("find the newest event", |_| self.store.last_event_position()) else {
                        return;
                    };
                    last
                };
                if self
                    .retry("save its cursor", |_| self.store.set_cursor(&key, start))
                    .is_none()
                {
                    return;
                }
                start
            }
        };
        tracing::info!(sink = self.name(), kind = self.sink.config.kind.as_str(), url = %super::redact(&self.sink.url), cursor, "alert sink started");
        let cfg = self.sink.config.clone();
        let group = Duration::from_secs(cfg.group_secs);
        let mut limit = RateLimit::new(cfg.max_per_minute, Instant::now());
        let mut first_seen: Option<Instant> = None;
        // A handle of its own: the family's guard would hold its lock for the whole loop.
        let lag = self
            .metrics
            .lag
            .get_or_create(&SinkLabel { sink: cfg.name.clone() })
            .clone();
        while !self.stop.load(Ordering::SeqCst) {
            if let Ok(n) = self.store.events_count_after(cursor) {
                lag.set(n as i64);
            }
            let page = match self.store.events_after(cursor, cfg.max_group) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(sink = self.name(), error = %e, "alert delivery cannot read events; retrying");
                    self.pause(POLL * 4);
                    continue;
                }
            };
            if page.is_empty() {
                first_seen = None;
                self.pause(POLL);
                continue;
            }
            // A burst: wait for the group window after the first event seen, unless the message is full.
            let seen = *first_seen.get_or_insert_with(Instant::now);
            if page.len() < cfg.max_group && seen.elapsed() < group {
                self.pause((group - seen.elapsed()).min(POLL));
                continue;
            }
            let last = page.last().map(|(p, _)| *p).unwrap_or(cursor);
            let (keep, skip): (Vec<_>, Vec<_>) = page.into_iter().map(|(_, e)| e).partition(|e| wanted(&cfg, e));
            if !skip.is_empty() {
                self.metrics.count(&cfg.name, "filtered", skip.len());
            }
            if !keep.is_empty() {
                // The rate limit delays, never drops: what arrives meanwhile goes in later messages.
                loop {
                    match limit.take(Instant::now()) {
                        Ok(()) => break,
                        Err(wait) => {
                            if !self.pause(wait) {
                                return;
                            }
                        }
                    }
                }
                if !self.deliver(&rt, &keep, cursor, &lag) {
                    return;
                }
                self.metrics.count(&cfg.name, "delivered", keep.len());
            }
            cursor = last;
            // A lost cursor write costs a re-delivery after a restart (at least once), never an event.
            if let Err(e) = self.store.set_cursor(&key, cursor) {
                tracing::warn!(sink = self.name(), error = %e, "cannot save the alert cursor; the next start may send again");
            }
            first_seen = None;
        }
    }

    /// Posts one message until the receiver accepts it; false when stopping first.
    /// The lag gauge keeps counting what waits behind `cursor` meanwhile.
    fn deliver(&self, rt: &tokio::runtime::Runtime, events: &[DriftEvent], cursor: i64, lag: &Gauge) -> bool {
        let cfg = &self.sink.config;
        let what = format!("deliver {} event(s)", events.len());
        self.retry(&what, |attempt| {
            if attempt > 0
                && let Ok(n) = self.store.events_count_after(cursor)
            {
                lag.set(n as i64);
            }
            let now = (self.now_ms)();
            let body = match cfg.kind {
                SinkKind::Webhook => format::webhook(&cfg.name, events, &self.links, now),
                SinkKind::Slack => format::slack(events, &self.links),
                SinkKind::Alertmanager => format::alertmanager(events, &self.links, now, cfg.resolve_secs),
            };
            let mut headers: Vec<(String, String)> = cfg.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            if cfg.kind == SinkKind::Webhook {
                if let Some(secret) = &self.sink.secret {
                    headers.push(("x-agentdrift-signature".into(), format::signature(secret, &body)));
                }
                let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
                headers.push(("x-agentdrift-events".into(), ids.join(",")));
            }
            let sent = rt.block_on(self.client.post_json(&self.sink.url, &headers, body));
            if sent.is_err() {
                self.metrics.count(&cfg.name, "failed", events.len());
            }
            sent
        })
        .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_equal_jitter() {
        let max = Duration::from_secs(300);
        assert_eq!(backoff(0, max, 0.0), Duration::from_millis(250));
        assert_eq!(backoff(0, max, 1.0), Duration::from_millis(500));
        assert_eq!(backoff(3, max, 0.5), Duration::from_millis(3000), "4 s full, 2 s + 1 s");
        assert_eq!(backoff(30, max, 1.0), max, "capped");
        assert_eq!(backoff(30, max, 0.0), max / 2);
    }

    #[test]
    fn the_rate_limit_allows_a_burst_then_one_per_interval() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(6, t0);
        for _ in 0..6 {
            assert!(r.take(t0).is_ok());
        }
        let wait = r.take(t0).unwrap_err();
        assert!(
            (wait.as_secs_f64() - 10.0).abs() < 1e-9,
            "6 a minute: one every 10 s, {wait:?}"
        );
        assert!(r.take(t0 + Duration::from_secs(5)).is_err());
        assert!(r.take(t0 + Duration::from_secs(10)).is_ok());
    }
}
