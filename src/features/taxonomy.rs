//! The error taxonomy: documented rules that name a failure's class when the
//! producer names none, so error mixes mean something on unlabelled data.
//! The rules are a data file (`taxonomy/errors.toml`), versioned and hashed
//! into every baseline like the lexicons.

use super::RuleSource;
use crate::model::glob::matches_ignore_case;
use crate::model::{ErrorClass, Step};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// The taxonomy shipped with agentdrift.
pub const DEFAULT_TAXONOMY_TOML: &str = include_str!("../../taxonomy/errors.toml");

/// Why a taxonomy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TaxonomyError {
    /// The file could not be read.
    #[error("cannot read taxonomy {origin}: {source}")]
    Io {
        /// The file.
        origin: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown keys.
    #[error("taxonomy {origin}: {message}")]
    Parse {
        /// Where the text came from.
        origin: String,
        /// What the parser said (line and column).
        message: String,
    },
    /// A value is out of range (a status code, a timeout, a class name).
    #[error("taxonomy {origin}: {message}")]
    Invalid {
        /// Where the text came from.
        origin: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: String,
    #[serde(default)]
    timeout: TimeoutFile,
    escalation: EscalationFile,
    state: StateFile,
    #[serde(default)]
    rule: Vec<RuleFile>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeoutFile {
    default_ms: Option<f64>,
    #[serde(default)]
    tools: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EscalationFile {
    tools: Vec<String>,
    human_agents: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    read_tools: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    class: String,
    #[allow(dead_code)]
    why: String,
    #[serde(default)]
    status_codes: Vec<String>,
    #[serde(default)]
    patterns: Vec<String>,
}

/// One classification rule: a class and what makes a failure belong to it.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// The class it names.
    pub class: ErrorClass,
    /// Inclusive status-code ranges.
    pub codes: Vec<(u16, u16)>,
    /// Case-insensitive `*` patterns over the failure's text.
    pub patterns: Vec<String>,
}

/// A compiled taxonomy.
#[derive(Clone, Debug, PartialEq)]
pub struct Taxonomy {
    /// The file's `version`.
    pub version: String,
    /// SHA-256 of the file's text, so a baseline names exactly what classified it.
    pub hash: String,
    /// The file's text (stored in baselines so scoring uses the training rules).
    pub text: String,
    default_timeout_ms: Option<f64>,
    tool_timeouts: Vec<(String, f64)>,
    escalation_tools: Vec<String>,
    human_agents: Vec<String>,
    read_tools: Vec<String>,
    rules: Vec<Rule>,
}

fn parse_codes(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let (a, b) = (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?);
    ((100..=599).contains(&a) && (a..=599).contains(&b)).then_some((a, b))
}

impl Taxonomy {
    /// The rules shipped in `taxonomy/errors.toml`.
    pub fn builtin() -> &'static Taxonomy {
        static T: OnceLock<Taxonomy> = OnceLock::new();
        T.get_or_init(|| {
            Taxonomy::parse(DEFAULT_TAXONOMY_TOML, "<built-in taxonomy/errors.toml>")
                .expect("the shipped taxonomy is valid (tested)")
        })
    }

    /// Parses a taxonomy file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Taxonomy, TaxonomyError> {
        let invalid = |message: String| TaxonomyError::Invalid {
            origin: origin.to_string(),
            message,
        };
        let f: File = toml::from_str(text).map_err(|e| TaxonomyError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        let ms = |what: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                Err(invalid(format!(
                    "{what} must be a positive number of milliseconds, got {v}"
                )))
            }
        };
        let default_timeout_ms = f.timeout.default_ms.map(|v| ms("timeout.default_ms", v)).transpose()?;
        let mut tool_timeouts = Vec::new();
        for (pattern, v) in &f.timeout.tools {
            let what = format!("timeout.tools.\"{pattern}\"");
            let n = v
                .as_float()
                .or_else(|| v.as_integer().map(|i| i as f64))
                .ok_or_else(|| invalid(format!("{what} must be a number of milliseconds")))?;
            tool_timeouts.push((pattern.clone(), ms(&what, n)?));
        }
        let mut rules = Vec::new();
        for (i, r) in f.rule.iter().enumerate() {
            let class = ErrorClass::parse(&r.class);
            if matches!(class, ErrorClass::Other(_))
                || class == ErrorClass::Escalation
                || class == ErrorClass::Reasoning
            {
                return Err(invalid(format!(
                    "rule[{i}].class \"{}\" is not a tool failure class (tool_timeout, tool_api_error, tool_invalid_args, state)",
                    r.class
                )));
            }
            let codes = r
                .status_codes
                .iter()
                .map(|c| {
                    parse_codes(c).ok_or_else(|| {
                        invalid(format!(
                            "rule[{i}].status_codes: \"{c}\" is not a status code or range like \"500-599\""
                        ))
                    })
                })
                .collect::<Result<_, _>>()?;
            if r.patterns.iter().any(String::is_empty) {
                return Err(invalid(format!(
                    "rule[{i}].patterns: an empty pattern matches nothing useful"
                )));
            }
            rules.push(Rule {
                class,
                codes,
                patterns: r.patterns.clone(),
            });
        }
        Ok(Taxonomy {
            version: f.version,
            hash: hex::encode(Sha256::digest(text.as_bytes())),
            text: text.to_string(),
            default_timeout_ms,
            tool_timeouts,
            escalation_tools: f.escalation.tools,
            human_agents: f.escalation.human_agents,
            read_tools: f.state.read_tools,
            rules,
        })
    }

    /// Loads a taxonomy file.
    pub fn load(path: &std::path::Path) -> Result<Taxonomy, TaxonomyError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TaxonomyError::Io {
            origin: origin.clone(),
            source,
        })?;
        Taxonomy::parse(&text, &origin)
    }

    /// The rules a baseline was trained with (the built-in ones for baselines older than the taxonomy).
    pub fn of_baseline(source: Option<&RuleSource>) -> Result<Taxonomy, TaxonomyError> {
        match source {
            None => Ok(Taxonomy::builtin().clone()),
            Some(s) => Taxonomy::parse(&s.text, "stored in the baseline"),
        }
    }

    /// What a baseline stores.
    pub fn source(&self) -> RuleSource {
        RuleSource {
            version: self.version.clone(),
            sha256: self.hash.clone(),
            text: self.text.clone(),
        }
    }

    /// The classification rules, in the order they are tried.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether calling this tool hands the task to a person.
    pub fn escalation_tool(&self, name: &str) -> bool {
        self.escalation_tools.iter().any(|p| matches_ignore_case(p, name))
    }

    /// Whether this handoff target is a person.
    pub fn human_agent(&self, name: &str) -> bool {
        self.human_agents.iter().any(|p| matches_ignore_case(p, name))
    }

    /// Whether this tool only reads state (re-reading it unchanged is a state failure).
    pub fn read_tool(&self, name: &str) -> bool {
        self.read_tools.iter().any(|p| matches_ignore_case(p, name))
    }

    /// The timeout that applies to a tool, ms.
    pub fn timeout_ms(&self, tool: &str) -> Option<f64> {
        self.tool_timeouts
            .iter()
            .find(|(p, _)| matches_ignore_case(p, tool))
            .map(|(_, ms)| *ms)
            .or(self.default_timeout_ms)
    }

    /// The class of a failed tool step with no producer label, `None` when no
    /// rule matches (the failure stays unclassified).
    pub fn classify_failure(&self, step: &Step) -> Option<ErrorClass> {
        let timeout = self.timeout_ms(step.tool.as_deref().unwrap_or(""));
        if let (Some(l), Some(t)) = (step.latency_ms, timeout)
            && l >= t
        {
            return Some(ErrorClass::ToolTimeout);
        }
        let text = failure_text(step);
        let code = status_code_attr(step).or_else(|| text.and_then(status_code_in));
        self.rules
            .iter()
            .find(|r| {
                code.is_some_and(|c| r.codes.iter().any(|&(a, b)| (a..=b).contains(&c)))
                    || text.is_some_and(|t| r.patterns.iter().any(|p| matches_ignore_case(p, t)))
            })
            .map(|r| r.class.clone())
    }
}

/// Longest failure text looked at: error texts are short, a result body may not be.
const MAX_TEXT: usize = 2_000;

fn failure_text(step: &Step) -> Option<&str> {
    let t = step
        .error
        .as_deref()
        .or_else(|| step.result.as_ref().and_then(|r| r.as_str()))?;
    let mut end = t.len().min(MAX_TEXT);
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    Some(&t[..end])
}

fn status_code_attr(step: &Step) -> Option<u16> {
    let attrs = step.attributes.as_ref()?;
    ["http.response.status_code", "http.status_code", "status_code"]
        .iter()
        .find_map(|k| {
            let v = attrs.get(*k)?;
            v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        })
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (100..=599).contains(c))
}

/// A status code stated in a failure's text: a leading `503 …`, or three
/// digits after `http`, `status`, `status code` or `code`.
pub fn status_code_in(text: &str) -> Option<u16> {
    let b = text.as_bytes();
    let code_at = |i: usize| -> Option<u16> {
        let d = b.get(i..i + 3)?;
        if !d.iter().all(u8::is_ascii_digit) || b.get(i + 3).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        let c = d.iter().fold(0u16, |acc, x| acc * 10 + u16::from(x - b'0'));
        (100..=599).contains(&c).then_some(c)
    };
    if let Some(c) = code_at(0) {
        return Some(c);
    }
    let lower = text.to_ascii_lowercase();
    for key in ["status code", "status", "http", "code"] {
        let mut from = 0;
        while let Some(i) = lower[from..].find(key) {
            let mut j = from + i + key.len();
            if key == "http" && b.get(j) == Some(&b'/') {
                // `HTTP/1.1 503`: skip the protocol version.
                while b.get(j).is_some_and(|c| *c != b' ') {
                    j += 1;
                }
            }
            while matches!(b.get(j), Some(b' ' | b':' | b'=')) {
                j += 1;
            }
            if let Some(c) = code_at(j) {
                return Some(c);
            }
            from += i + key.len();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Status, StepKind};

    fn failed(error: &str) -> Step {
        let mut s = Step::new("s", 0, 0, StepKind::Tool, "a");
        s.tool = Some("book".into());
        s.status = Some(Status::Error);
        s.error = Some(error.into());
        s
    }

    fn class(step: &Step) -> Option<String> {
        Taxonomy::builtin().classify_failure(step).map(|c| c.to_string())
    }

    #[test]
    fn the_shipped_rules_classify_the_messages_they_document() {
        let cases = [
            ("Error: request timed out after 30s", Some("tool_timeout")),
            ("HTTP 503 Service Unavailable", Some("tool_api_error")),
            ("upstream returned status 429", Some("tool_api_error")),
            ("Traceback (most recent call last): KeyError", Some("tool_api_error")),
            (
                "Error: 1 validation error for Payment amount Field required",
                Some("tool_invalid_args"),
            ),
            ("Error: User not found", Some("tool_invalid_args")),
            (
                "Error: payment amount does not add up, total price is 10, but paid 9",
                Some("tool_invalid_args"),
            ),
            (
                "Error: certificate cannot be used to update reservation",
                Some("tool_invalid_args"),
            ),
            ("Error: flight HAT001 not available on date 2024-05-16", Some("state")),
            ("Error: gift card balance is not enough", Some("state")),
            ("Error: Non-delivered order cannot be exchanged", Some("state")),
            ("Error: Line must be suspended to resume", Some("state")),
            ("Error: something odd happened", None),
        ];
        for (text, want) in cases {
            assert_eq!(class(&failed(text)).as_deref(), want, "{text}");
        }
    }

    #[test]
    fn latency_over_the_timeout_is_a_timeout_whatever_the_text() {
        let mut s = failed("Error: User not found");
        s.latency_ms = Some(30_000.0);
        assert_eq!(class(&s).as_deref(), Some("tool_timeout"));
        s.latency_ms = Some(29_999.0);
        assert_eq!(class(&s).as_deref(), Some("tool_invalid_args"));
        let t = Taxonomy::parse(
            &DEFAULT_TAXONOMY_TOML.replace("[timeout.tools]", "[timeout.tools]\n\"bo*\" = 500"),
            "t",
        )
        .unwrap();
        s.latency_ms = Some(600.0);
        assert_eq!(
            t.classify_failure(&s),
            Some(ErrorClass::ToolTimeout),
            "per-tool timeout"
        );
        assert_eq!(t.timeout_ms("search"), Some(30_000.0));
    }

    #[test]
    fn status_codes_come_from_attributes_or_text() {
        let mut s = failed("something odd");
        let mut m = serde_json::Map::new();
        m.insert("http.response.status_code".into(), 502.into());
        s.attributes = Some(m);
        assert_eq!(class(&s).as_deref(), Some("tool_api_error"));
        assert_eq!(status_code_in("HTTP/1.1 404 Not Found"), Some(404));
        assert_eq!(status_code_in("503 Service Unavailable"), Some(503));
        assert_eq!(status_code_in("status code: 422"), Some(422));
        assert_eq!(
            status_code_in("order 5031 not found"),
            None,
            "digits that are not a code"
        );
        assert_eq!(status_code_in("code 1234"), None);
        assert_eq!(status_code_in("flight HAT404"), None);
    }

    #[test]
    fn escalation_and_read_tools_are_configurable() {
        let t = Taxonomy::builtin();
        assert!(t.escalation_tool("transfer_to_human_agents") && t.escalation_tool("Escalate_Ticket"));
        assert!(!t.escalation_tool("get_human_resources_policy"));
        assert!(t.human_agent("human") && t.human_agent("tier2_human") && !t.human_agent("humane_bot"));
        assert!(t.read_tool("get_user_details") && !t.read_tool("book_reservation"));
        let own = Taxonomy::parse(
            &DEFAULT_TAXONOMY_TOML.replace("\"escalate*\"", "\"page_oncall\""),
            "own.toml",
        )
        .unwrap();
        assert!(own.escalation_tool("page_oncall") && !own.escalation_tool("escalate"));
        assert_ne!(own.hash, t.hash, "the hash names the rules");
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let e = Taxonomy::parse(&DEFAULT_TAXONOMY_TOML.replace("\"500-599\"", "\"5xx\""), "t.toml").unwrap_err();
        assert!(
            e.to_string().contains("t.toml") && e.to_string().contains("\"5xx\""),
            "{e}"
        );
        let e = Taxonomy::parse(
            &DEFAULT_TAXONOMY_TOML.replace("class = \"state\"", "class = \"oops\""),
            "t",
        )
        .unwrap_err();
        assert!(e.to_string().contains("rule[3].class"), "{e}");
        let e = Taxonomy::parse("version = \"1\"\n[escalation]\ntools = []\n", "t").unwrap_err();
        assert!(
            e.to_string().contains("human_agents") || e.to_string().contains("state"),
            "{e}"
        );
        let e = Taxonomy::parse(
            &DEFAULT_TAXONOMY_TOML.replace("default_ms = 30000", "default_ms = -1"),
            "t",
        )
        .unwrap_err();
        assert!(e.to_string().contains("timeout.default_ms"), "{e}");
    }
}
