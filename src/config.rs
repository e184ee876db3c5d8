//! `agentdrift.toml`: one file for training and service settings, with
//! `AGENTDRIFT_*` environment overrides for the service (environment wins
//! over the file, flags win over both). Unknown keys are errors.

use crate::baseline::TrainConfig;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// The whole configuration file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[train]`: baseline training.
    pub train: TrainConfig,
    /// `[serve]`: the scoring service.
    pub serve: ServeConfig,
    /// `[auth]`: tokens and scopes.
    pub auth: AuthConfig,
    /// `[alerts]`: where drift events are delivered.
    pub alerts: crate::alerts::AlertsConfig,
}

/// `[auth]` settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Tokens, stored hashed (`agentdrift token` prints an entry).
    pub tokens: Vec<TokenConfig>,
    /// `read` (a read token is needed) or `open` (no token) for `/metrics`.
    pub metrics: String,
    /// Plaintext tokens from `AGENTDRIFT_AUTH_TOKENS` (`name=scopes:secret;…`), never from a file.
    #[serde(skip)]
    pub env_tokens: Vec<(String, Vec<Scope>, String)>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            tokens: Vec::new(),
            metrics: "read".into(),
            env_tokens: Vec::new(),
        }
    }
}

/// `[serve]` settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Address to listen on.
    pub listen: String,
    /// Directory of the embedded store.
    pub data_dir: String,
    /// Where the query store lives: empty for the embedded SQLite beside the
    /// log, or a `postgres://` URL to keep it off the machine.
    pub store: String,
    /// Seconds without a step after which a session without an `end` step closes.
    pub idle_timeout_secs: u64,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
    /// Bytes all sessions' reorder buffers (steps waiting for a missing `seq`) may hold together.
    pub max_buffered_bytes: usize,
    /// Bytes one session's reorder buffer may hold before it scores across its gap.
    pub max_buffered_bytes_per_session: usize,
    /// Open sessions held in memory; beyond, the longest-idle wait in the store.
    pub max_open_sessions: usize,
    /// `json` or `text` logs.
    pub log_format: String,
    /// Price table file (default: built-in).
    pub prices: Option<String>,
    /// Span/resource attributes holding the task type in OTLP input.
    pub task_type_attributes: Vec<String>,
    /// Seconds between detector-state snapshots.
    pub snapshot_secs: u64,
    /// OTLP: seconds of quiet after a trace's root span arrived before its
    /// sessions are assembled and scored.
    pub trace_settle_secs: u64,
    /// OTLP: seconds of quiet after which a trace whose root never came is
    /// assembled anyway (identity `unresolved`).
    pub trace_timeout_secs: u64,
    /// OTLP: a session with no other outcome gets one from its root spans' status.
    pub root_status_outcome: bool,
    /// Seconds after a session's last step within which a reported outcome still feeds the charts.
    pub outcome_window_secs: u64,
    /// OTLP/gRPC address (empty: no gRPC receiver).
    pub otlp_grpc_listen: String,
    /// Seconds for a request's headers to arrive (also the keep-alive idle timeout).
    pub http_header_timeout_secs: u64,
    /// Seconds for a request's body to arrive.
    pub http_body_timeout_secs: u64,
    /// Open connections at most (0: the open-file limit minus a reserve).
    pub max_connections: usize,
    /// PEM certificate chain: serve HTTPS (and gRPC over TLS).
    pub tls_cert: Option<String>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<String>,
    /// Serve a non-loopback address without tokens (refused otherwise).
    pub allow_unauthenticated: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: "127.0.0.1:7878".into(),
            data_dir: "./agentdrift-data".into(),
            store: String::new(),
            idle_timeout_secs: 300,
            max_body_bytes: 16 * 1024 * 1024,
            max_buffered_bytes: 256 << 20,
            max_buffered_bytes_per_session: 8 << 20,
            max_open_sessions: 250_000,
            log_format: "json".into(),
            prices: None,
            task_type_attributes: Vec::new(),
            snapshot_secs: 30,
            trace_settle_secs: 5,
            trace_timeout_secs: 300,
            root_status_outcome: true,
            outcome_window_secs: 86_400,
            otlp_grpc_listen: "127.0.0.1:4317".into(),
            http_header_timeout_secs: 10,
            http_body_timeout_secs: 30,
            max_connections: 0,
            tls_cert: None,
            tls_key: None,
            allow_unauthenticated: false,
        }
    }
}

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Send steps, spans, log events and outcomes.
    Ingest,
    /// Read reports, events, sessions and metrics.
    Read,
    /// Everything.
    Admin,
}

impl Scope {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Scope> {
        match s.trim() {
            "ingest" => Some(Scope::Ingest),
            "read" => Some(Scope::Read),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// One configured token: its name (for logs), the hash of its secret and its scopes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it (shown in logs, never the secret).
    pub name: String,
    /// Hex SHA-256 of the secret (`agentdrift token` prints it).
    pub sha256: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
}

/// Parses `AGENTDRIFT_AUTH_TOKENS`: `name=scope,scope:secret` entries separated by `;`.
pub fn parse_env_tokens(v: &str) -> Result<Vec<(String, Vec<Scope>, String)>, String> {
    let mut out = Vec::new();
    for entry in v.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, rest) = entry.split_once('=').ok_or_else(|| {
            format!(
                "`{}…`: expected name=scopes:secret",
                entry.chars().take(8).collect::<String>()
            )
        })?;
        let (scopes, secret) = rest
            .split_once(':')
            .ok_or_else(|| format!("token `{name}`: expected name=scopes:secret"))?;
        let scopes = scopes
            .split(',')
            .map(|s| {
                Scope::parse(s).ok_or_else(|| format!("token `{name}`: unknown scope `{s}` (ingest, read, admin)"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.push((name.trim().to_string(), scopes, secret.to_string()));
    }
    Ok(out)
}

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Bad TOML or unknown keys.
    #[error("config {path}: {message}")]
    Parse {
        /// File.
        path: String,
        /// Parser message (line and column).
        message: String,
    },
    /// A bad environment override.
    #[error("environment variable {name}={value}: {message}")]
    Env {
        /// Variable.
        name: String,
        /// Value.
        value: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Parses TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })
    }

    /// Loads a file, or defaults when `path` is None.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            None => Ok(Config::default()),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Io {
                    path: p.display().to_string(),
                    source,
                })?;
                Config::parse(&text, &p.display().to_string())
            }
        }
    }

    /// Applies `AGENTDRIFT_*` overrides from `env` (passed in so tests need no globals).
    pub fn apply_env(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        let num = |name: &str, v: &str| -> Result<u64, ConfigError> {
            v.trim().parse().map_err(|_| ConfigError::Env {
                name: name.into(),
                value: v.into(),
                message: "expected a non-negative integer".into(),
            })
        };
        for (k, v) in env {
            match k.as_str() {
                "AGENTDRIFT_LISTEN" => self.serve.listen = v.clone(),
                "AGENTDRIFT_DATA_DIR" => self.serve.data_dir = v.clone(),
                "AGENTDRIFT_STORE" => self.serve.store = v.clone(),
                "AGENTDRIFT_IDLE_TIMEOUT_SECS" => self.serve.idle_timeout_secs = num(k, v)?,
                "AGENTDRIFT_MAX_BODY_BYTES" => self.serve.max_body_bytes = num(k, v)? as usize,
                "AGENTDRIFT_MAX_BUFFERED_BYTES" => self.serve.max_buffered_bytes = num(k, v)? as usize,
                "AGENTDRIFT_MAX_BUFFERED_BYTES_PER_SESSION" => {
                    self.serve.max_buffered_bytes_per_session = num(k, v)? as usize
                }
                "AGENTDRIFT_MAX_OPEN_SESSIONS" => self.serve.max_open_sessions = num(k, v)? as usize,
                "AGENTDRIFT_SNAPSHOT_SECS" => self.serve.snapshot_secs = num(k, v)?,
                "AGENTDRIFT_TRACE_SETTLE_SECS" => self.serve.trace_settle_secs = num(k, v)?,
                "AGENTDRIFT_TRACE_TIMEOUT_SECS" => self.serve.trace_timeout_secs = num(k, v)?,
                "AGENTDRIFT_OUTCOME_WINDOW_SECS" => self.serve.outcome_window_secs = num(k, v)?,
                "AGENTDRIFT_OTLP_GRPC_LISTEN" => self.serve.otlp_grpc_listen = v.clone(),
                "AGENTDRIFT_HTTP_HEADER_TIMEOUT_SECS" => self.serve.http_header_timeout_secs = num(k, v)?,
                "AGENTDRIFT_HTTP_BODY_TIMEOUT_SECS" => self.serve.http_body_timeout_secs = num(k, v)?,
                "AGENTDRIFT_MAX_CONNECTIONS" => self.serve.max_connections = num(k, v)? as usize,
                "AGENTDRIFT_ALLOW_UNAUTHENTICATED" => {
                    self.serve.allow_unauthenticated = match v.as_str() {
                        "1" | "true" => true,
                        "0" | "false" | "" => false,
                        _ => {
                            return Err(ConfigError::Env {
                                name: k.clone(),
                                value: v.into(),
                                message: "expected true or false".into(),
                            });
                        }
                    }
                }
                "AGENTDRIFT_TLS_CERT" => self.serve.tls_cert = Some(v.clone()),
                "AGENTDRIFT_TLS_KEY" => self.serve.tls_key = Some(v.clone()),
                "AGENTDRIFT_AUTH_TOKENS" => {
                    self.auth.env_tokens = parse_env_tokens(v).map_err(|message| ConfigError::Env {
                        name: k.clone(),
                        value: "(hidden)".into(),
                        message,
                    })?
                }
                "AGENTDRIFT_PRICES" => self.serve.prices = Some(v.clone()),
                "AGENTDRIFT_LOG_FORMAT" => {
                    if v != "json" && v != "text" {
                        return Err(ConfigError::Env {
                            name: k.clone(),
                            value: v.clone(),
                            message: "expected json or text".into(),
                        });
                    }
                    self.serve.log_format = v.clone();
                }
                "AGENTDRIFT_ARL0" => {
                    self.train.arl0 = v.trim().parse().map_err(|_| ConfigError::Env {
                        name: k.clone(),
                        value: v.clone(),
                        message: "expected a number of sessions".into(),
                    })?
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_holds_every_key_at_its_default() {
        let text = include_str!("../deploy/agentdrift.toml");
        let shipped = Config::parse(text, "deploy/agentdrift.toml").unwrap();
        assert_eq!(
            shipped,
            Config::default(),
            "deploy/agentdrift.toml says it writes the defaults"
        );
        // Every key the defaults serialise to is written out (options without a default are
        // documented in comments).
        fn missing(want: &toml::Table, have: &toml::Table, at: &str, out: &mut Vec<String>) {
            for (k, v) in want {
                let path = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
                match (v, have.get(k)) {
                    (toml::Value::Table(w), Some(toml::Value::Table(h))) => missing(w, h, &path, out),
                    (_, None) => out.push(path),
                    _ => {}
                }
            }
        }
        let want: toml::Table = toml::from_str(&toml::to_string(&Config::default()).unwrap()).unwrap();
        let have: toml::Table = toml::from_str(text).unwrap();
        let mut out = Vec::new();
        missing(&want, &have, "", &mut out);
        assert!(
            out.is_empty(),
            "deploy/agentdrift.toml lacks {out:?}; the defaults are:\n{}",
            toml::to_string(&Config::default()).unwrap()
        );
    }

    #[test]
    fn defaults_round_trip_and_unknown_keys_fail() {
        let text = toml::to_string(&Config::default()).unwrap();
        assert_eq!(Config::parse(&text, "x").unwrap(), Config::default());
        let e = Config::parse("[serve]\nlisten_port = 3\n", "a.toml").unwrap_err();
        assert!(
            e.to_string().contains("a.toml") && e.to_string().contains("listen_port"),
            "{e}"
        );
    }

    #[test]
    fn environment_overrides_file() {
        let mut c = Config::parse("[serve]\nidle_timeout_secs = 10\n", "x").unwrap();
        let env = HashMap::from([("AGENTDRIFT_IDLE_TIMEOUT_SECS".to_string(), "42".to_string())]);
        c.apply_env(&env).unwrap();
        assert_eq!(c.serve.idle_timeout_secs, 42);
        let bad = HashMap::from([("AGENTDRIFT_IDLE_TIMEOUT_SECS".to_string(), "soon".to_string())]);
        assert!(
            c.apply_env(&bad)
                .unwrap_err()
                .to_string()
                .contains("AGENTDRIFT_IDLE_TIMEOUT_SECS=soon")
        );
    }
}
