//! Alert delivery: drift events reach people through webhooks, Slack and
//! Alertmanager, at least once, without ever holding ingest back.
//!
//! Each configured sink runs on its own thread, reads the events the store
//! holds after its cursor (saved in the store, so a restart resumes where it
//! stopped and a sink that was down for hours catches up), keeps those its
//! filters match, groups a burst into one message, waits for its rate limit,
//! and retries with exponential backoff and jitter until the receiver accepts.
//! The event id is the dedup key every format carries.

pub mod deliver;
pub mod format;
pub mod http;
pub mod severity;

pub use deliver::{AlertMetrics, Deliveries};
pub use severity::{Severity, severity};

use serde::{Deserialize, Serialize};

/// `[alerts]` in `agentdrift.toml`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Base URL alerts link to (events, sessions); default `http://` + the listen address.
    pub public_url: String,
    /// `[[alerts.sink]]` entries: where events go.
    pub sink: Vec<SinkConfig>,
}

/// What a sink speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// POST of the events as JSON, optionally signed (HMAC-SHA256).
    Webhook,
    /// A Slack incoming-webhook message with the evidence and links.
    Slack,
    /// Alertmanager's `POST /api/v2/alerts`.
    Alertmanager,
}

impl SinkKind {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Webhook => "webhook",
            SinkKind::Slack => "slack",
            SinkKind::Alertmanager => "alertmanager",
        }
    }
}

/// One `[[alerts.sink]]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// Unique name: the saved cursor and the metrics' `sink` label.
    pub name: String,
    /// `webhook`, `slack` or `alertmanager`.
    #[serde(rename = "type")]
    pub kind: SinkKind,
    /// Receiver URL (Alertmanager: its base URL, `/api/v2/alerts` is added).
    pub url: String,
    /// Environment variable holding the URL instead (a Slack webhook URL is a secret).
    pub url_env: String,
    /// Webhook: HMAC-SHA256 key; the body's signature goes in `X-Agentdrift-Signature: sha256=<hex>`.
    pub secret: String,
    /// Environment variable holding the secret instead.
    pub secret_env: String,
    /// Segments (`agent/task_type`, `*` matches any characters) to send; empty: all.
    pub segments: Vec<String>,
    /// Detector families (`ewma`, `cusum`, `markov`, `loop`, `bernoulli`, …) or ids to send; empty: all.
    pub detectors: Vec<String>,
    /// Lowest severity sent: `info`, `warning` or `critical`.
    pub min_severity: Severity,
    /// Messages per minute at most; a burst beyond waits and is grouped into the next one.
    pub max_per_minute: u32,
    /// Seconds to wait after an event for others to go in the same message.
    pub group_secs: u64,
    /// Events per message at most.
    pub max_group: usize,
    /// Seconds one delivery attempt may take.
    pub timeout_secs: u64,
    /// Longest wait between retries, seconds (the backoff doubles up to it).
    pub max_backoff_secs: u64,
    /// Alertmanager: seconds after its delivery an alert resolves (`endsAt`) unless an event renews it.
    pub resolve_secs: u64,
    /// Extra request headers (e.g. `Authorization`).
    pub headers: std::collections::BTreeMap<String, String>,
    /// PEM file of extra CA certificates to trust for an `https://` receiver (a private CA).
    pub ca_file: String,
    /// Where a new sink starts: `new` (events stored from now on) or `all` (every stored event).
    pub start: String,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            name: String::new(),
            kind: SinkKind::Webhook,
            url: String::new(),
            url_env: String::new(),
            secret: String::new(),
            secret_env: String::new(),
            segments: Vec::new(),
            detectors: Vec::new(),
            min_severity: Severity::Info,
            max_per_minute: 20,
            group_secs: 10,
            max_group: 20,
            timeout_secs: 10,
            max_backoff_secs: 300,
            resolve_secs: 3600,
            headers: Default::default(),
            ca_file: String::new(),
            start: "new".into(),
        }
    }
}

/// Why the alert configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// A sink's setting is wrong.
    #[error("[[alerts.sink]] {sink}: {message}")]
    Sink {
        /// The sink's name (or its position when unnamed).
        sink: String,
        /// What is wrong.
        message: String,
    },
    /// The HTTP client could not be built (a CA file that cannot be read).
    #[error("[[alerts.sink]] {sink}: {source}")]
    Client {
        /// The sink.
        sink: String,
        /// Why.
        #[source]
        source: http::ClientError,
    },
}

/// A sink ready to run: its settings with secrets resolved from the environment.
#[derive(Clone, Debug)]
pub struct Sink {
    /// The settings.
    pub config: SinkConfig,
    /// The URL posted to.
    pub url: String,
    /// HMAC key, if any.
    pub secret: Option<Vec<u8>>,
}

impl AlertsConfig {
    /// Checks every sink and resolves `url_env`/`secret_env` from `env`
    /// (passed in so tests need no globals).
    pub fn sinks(&self, env: &std::collections::HashMap<String, String>) -> Result<Vec<Sink>, AlertError> {
        let mut names = std::collections::HashSet::new();
        let mut out = Vec::new();
        for (i, c) in self.sink.iter().enumerate() {
            let label = if c.name.is_empty() {
                format!("#{}", i + 1)
            } else {
                c.name.clone()
            };
            let bad = |message: String| AlertError::Sink {
                sink: label.clone(),
                message,
            };
            if c.name.is_empty() {
                return Err(bad(
                    "`name` is required (the saved cursor and the metrics are keyed by it)".into(),
                ));
            }
            if !c
                .name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
            {
                return Err(bad("`name` may hold only letters, digits, `-`, `_` and `.`".into()));
            }
            if !names.insert(c.name.clone()) {
                return Err(bad("another sink has this `name`".into()));
            }
            let from_env = |value: &str, var: &str, key: &str| -> Result<String, AlertError> {
                match (value.is_empty(), var.is_empty()) {
                    (false, false) => Err(bad(format!("set `{key}` or `{key}_env`, not both"))),
                    (false, true) => Ok(value.to_string()),
                    (true, false) => env
                        .get(var)
                        .filter(|v| !v.is_empty())
                        .cloned()
                        .ok_or_else(|| bad(format!("`{key}_env` names {var}, which is not set"))),
                    (true, true) => Ok(String::new()),
                }
            };
            let url = from_env(&c.url, &c.url_env, "url")?;
            if url.is_empty() {
                return Err(bad("`url` (or `url_env`) is required".into()));
            }
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.parse::<hyper::Uri>().is_err() {
                return Err(bad(format!(
                    "`url` must be an http:// or https:// URL, not {:?}",
                    redact(&url)
                )));
            }
            let secret = from_env(&c.secret, &c.secret_env, "secret")?;
            if !secret.is_empty() && c.kind != SinkKind::Webhook {
                return Err(bad("`secret` signs webhook bodies only".into()));
            }
            if c.max_per_minute == 0 {
                return Err(bad("`max_per_minute` must be at least 1".into()));
            }
            if c.max_group == 0 || c.max_group > 1000 {
                return Err(bad("`max_group` must be between 1 and 1000".into()));
            }
            if c.timeout_secs == 0 || c.max_backoff_secs == 0 {
                return Err(bad("`timeout_secs` and `max_backoff_secs` must be at least 1".into()));
            }
            if c.start != "new" && c.start != "all" {
                return Err(bad(format!("`start` must be `new` or `all`, not {:?}", c.start)));
            }
            for (k, v) in &c.headers {
                if k.parse::<hyper::header::HeaderName>().is_err() || v.parse::<hyper::header::HeaderValue>().is_err() {
                    return Err(bad(format!("header {k:?} is not a valid HTTP header")));
                }
            }
            let url = match c.kind {
                SinkKind::Alertmanager => format!("{}/api/v2/alerts", url.trim_end_matches('/')),
                _ => url,
            };
            out.push(Sink {
                config: c.clone(),
                url,
                secret: (!secret.is_empty()).then(|| secret.into_bytes()),
            });
        }
        Ok(out)
    }
}

/// A URL fit for messages: no user info, no path (Slack puts its secret in the path).
pub fn redact(url: &str) -> String {
    match url.parse::<hyper::Uri>() {
        Ok(u) => match (u.scheme_str(), u.authority()) {
            (Some(s), Some(a)) => {
                let host = a.as_str().rsplit('@').next().unwrap_or_default();
                format!("{s}://{host}/…")
            }
            _ => "(a URL)".into(),
        },
        Err(_) => "(not a URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(toml_text: &str) -> AlertsConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn sinks_parse_with_defaults_and_resolve_secrets_from_the_environment() {
        let c = parse(
            r#"
            public_url = "https://drift.example"
            [[sink]]
            name = "hook"
            type = "webhook"
            url = "http://127.0.0.1:9/x"
            secret_env = "HOOK_KEY"
            [[sink]]
            name = "am"
            type = "alertmanager"
            url = "http://127.0.0.1:9093/"
            min_severity = "warning"
            "#,
        );
        let env = HashMap::from([("HOOK_KEY".to_string(), "k3y".to_string())]);
        let s = c.sinks(&env).unwrap();
        assert_eq!(s[0].secret.as_deref(), Some(&b"k3y"[..]));
        assert_eq!(s[0].config.group_secs, 10);
        assert_eq!(s[1].url, "http://127.0.0.1:9093/api/v2/alerts");
        assert_eq!(s[1].config.min_severity, Severity::Warning);
    }

    #[test]
    fn bad_sinks_are_refused_with_the_sink_and_key_named() {
        let err = |t: &str| parse(t).sinks(&HashMap::new()).unwrap_err().to_string();
        assert!(err("[[sink]]\ntype = \"slack\"\nurl = \"http://x\"").contains("`name` is required"));
        let e = err("[[sink]]\nname = \"s\"\ntype = \"slack\"\nurl_env = \"NOPE\"");
        assert!(e.contains("[[alerts.sink]] s") && e.contains("NOPE"), "{e}");
        let e = err("[[sink]]\nname = \"s\"\ntype = \"slack\"\nurl = \"ftp://hooks/T0/secret\"");
        assert!(
            e.contains("http:// or https://") && !e.contains("secret"),
            "the URL is redacted: {e}"
        );
        assert!(
            err("[[sink]]\nname = \"a\"\nurl = \"http://x\"\n[[sink]]\nname = \"a\"\nurl = \"http://y\"")
                .contains("another sink")
        );
        assert!(
            err("[[sink]]\nname = \"a\"\ntype = \"slack\"\nurl = \"http://x\"\nsecret = \"k\"")
                .contains("webhook bodies only")
        );
        assert!(err("[[sink]]\nname = \"a\"\nurl = \"http://x\"\nmax_per_minute = 0").contains("max_per_minute"));
        assert!(toml::from_str::<AlertsConfig>("[[sink]]\nname = \"a\"\ntype = \"pager\"").is_err());
    }

    #[test]
    fn redacted_urls_keep_only_scheme_and_host() {
        assert_eq!(
            redact("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(redact("http://user:pw@am:9093/"), "http://am:9093/…");
    }
}
