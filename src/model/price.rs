//! The price table: model → USD per 1M input/output tokens and context window,
//! so cost can be computed where a source gives tokens but no cost.

use super::step::{Step, StepKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The table shipped with agentdrift (`pricing/default.toml`).
pub const DEFAULT_PRICES_TOML: &str = include_str!("../../pricing/default.toml");

/// Price and window of one model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// USD per 1M input (prompt) tokens.
    pub input_usd_per_mtok: f64,
    /// USD per 1M output (completion) tokens.
    pub output_usd_per_mtok: f64,
    /// Context window in tokens, where known (for context utilisation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u64>,
}

/// A loaded price table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    /// Format version of the file (1).
    pub version: u32,
    /// Prices keyed by lower-case model name.
    pub models: BTreeMap<String, ModelPrice>,
}

/// Why a price table could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    /// The file could not be read.
    #[error("cannot read price table {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown keys.
    #[error("price table {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What the parser said (with line and column).
        message: String,
    },
    /// A price is negative or not finite, or the version is unknown.
    #[error("price table {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl Default for PriceTable {
    fn default() -> Self {
        PriceTable::parse(DEFAULT_PRICES_TOML, "<built-in pricing/default.toml>")
            .expect("the shipped price table is valid (tested)")
    }
}

impl PriceTable {
    /// Parses a TOML price table; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<PriceTable, PriceError> {
        let mut t: PriceTable = toml::from_str(text).map_err(|e| PriceError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        if t.version != 1 {
            return Err(PriceError::Invalid {
                path: origin.to_string(),
                message: format!("unsupported version {} (expected 1)", t.version),
            });
        }
        for (name, p) in &t.models {
            for (what, v) in [
                ("input_usd_per_mtok", p.input_usd_per_mtok),
                ("output_usd_per_mtok", p.output_usd_per_mtok),
            ] {
                if !v.is_finite() || v < 0.0 {
                    return Err(PriceError::Invalid {
                        path: origin.to_string(),
                        message: format!("models.\"{name}\".{what} must be a non-negative number, got {v}"),
                    });
                }
            }
        }
        t.models = t.models.into_iter().map(|(k, v)| (k.to_lowercase(), v)).collect();
        Ok(t)
    }

    /// Loads a TOML price table from a file.
    pub fn load(path: &Path) -> Result<PriceTable, PriceError> {
        let text = std::fs::read_to_string(path).map_err(|source| PriceError::Io {
            path: path.display().to_string(),
            source,
        })?;
        PriceTable::parse(&text, &path.display().to_string())
    }

    /// The price of a model: exact name, else the longest key the name starts
    /// with when what follows is a date stamp (`-2…`), `:` or `@`; so
    /// `gpt-4.1-2025-04-14` uses `gpt-4.1` but `claude-opus-4-6` does not use
    /// `claude-opus-4`. A `provider/` prefix is ignored.
    pub fn lookup(&self, model: &str) -> Option<&ModelPrice> {
        let lower: std::borrow::Cow<str> = if !model.is_ascii() || model.bytes().any(|b| b.is_ascii_uppercase()) {
            model.to_lowercase().into()
        } else {
            model.into()
        };
        let name = lower.rsplit_once('/').map_or(&*lower, |(_, n)| n);
        if let Some(p) = self.models.get(name) {
            return Some(p);
        }
        // The longest priced name that `name` extends with a date, `:tag` or `@version`.
        name.char_indices()
            .rev()
            .filter(|&(i, _)| {
                let rest = &name[i..];
                rest.starts_with("-2") || rest.starts_with(':') || rest.starts_with('@')
            })
            .find_map(|(i, _)| self.models.get(&name[..i]))
    }

    /// The cost of a model call from its tokens, if the model is priced.
    pub fn cost_of(&self, model: &str, input_tokens: Option<u64>, output_tokens: Option<u64>) -> Option<f64> {
        if input_tokens.is_none() && output_tokens.is_none() {
            return None;
        }
        let p = self.lookup(model)?;
        Some(
            input_tokens.unwrap_or(0) as f64 * p.input_usd_per_mtok / 1e6
                + output_tokens.unwrap_or(0) as f64 * p.output_usd_per_mtok / 1e6,
        )
    }

    /// Fills `cost_usd` (and sets `cost_computed`) on an llm step that has
    /// tokens but no cost and a priced model; returns whether it did.
    pub fn fill_cost(&self, step: &mut Step) -> bool {
        if step.kind != StepKind::Llm || step.cost_usd.is_some() {
            return false;
        }
        let Some(cost) = step
            .model
            .as_deref()
            .and_then(|m| self.cost_of(m, step.input_tokens, step.output_tokens))
        else {
            return false;
        };
        step.cost_usd = Some(cost);
        step.cost_computed = true;
        true
    }
}

/// Cost per successful task, the one definition baselines, live reports,
/// `/metrics` and `baseline diff` share: the total cost of all tasks (that
/// have a cost) divided by the tasks that succeeded, so failed attempts are
/// part of the price of a success. `None` without costs or without successes.
pub fn cost_per_success(total_cost_usd: f64, sessions_with_cost: u64, successes: u64) -> Option<f64> {
    (sessions_with_cost > 0 && successes > 0).then(|| total_cost_usd / successes as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_table_loads() {
        let t = PriceTable::default();
        assert!(t.models.len() >= 10);
    }

    #[test]
    fn lookup_rules() {
        let t = PriceTable::default();
        assert_eq!(t.lookup("gpt-4.1-2025-04-14").unwrap().input_usd_per_mtok, 2.0);
        assert_eq!(t.lookup("GPT-4o").unwrap().output_usd_per_mtok, 10.0);
        assert_eq!(t.lookup("openai/gpt-4o-mini").unwrap().input_usd_per_mtok, 0.15);
        assert_eq!(
            t.lookup("ft:gpt-4.1-2025-04-14:sierra:x").unwrap().input_usd_per_mtok,
            3.0
        );
        assert!(
            t.lookup("claude-opus-4-6").is_none(),
            "a newer model must not take an older price"
        );
        assert!(t.lookup("mystery-model").is_none());
    }

    #[test]
    fn cost_per_success_counts_every_task_s_cost_against_the_successes() {
        // 3 tasks costing 1, 2 and 3, two of them successful: 6 / 2.
        assert_eq!(cost_per_success(6.0, 3, 2), Some(3.0));
        assert_eq!(cost_per_success(6.0, 3, 0), None, "no success");
        assert_eq!(cost_per_success(0.0, 0, 2), None, "no cost known");
    }

    #[test]
    fn cost_is_computed_and_marked_only_when_missing() {
        let t = PriceTable::default();
        let mut s = Step::new("s", 0, 0, StepKind::Llm, "a");
        s.model = Some("gpt-4o".into());
        s.input_tokens = Some(1_000_000);
        s.output_tokens = Some(100_000);
        assert!(t.fill_cost(&mut s));
        assert!((s.cost_usd.unwrap() - 3.5).abs() < 1e-12);
        assert!(s.cost_computed);
        let mut given = s.clone();
        given.cost_usd = Some(0.1);
        given.cost_computed = false;
        assert!(!t.fill_cost(&mut given));
        assert_eq!(given.cost_usd, Some(0.1));
    }

    #[test]
    fn bad_tables_are_clear_errors() {
        let e = PriceTable::parse(
            "version = 1\n[models.x]\ninput_usd_per_mtok = -1\noutput_usd_per_mtok = 1\n",
            "f.toml",
        )
        .unwrap_err();
        assert!(e.to_string().contains("models.\"x\".input_usd_per_mtok"), "{e}");
        let e = PriceTable::parse("version = 1\n[models.x]\ninput = 1\n", "f.toml").unwrap_err();
        assert!(e.to_string().contains("f.toml"), "{e}");
    }
}
