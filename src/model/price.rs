//! The price table: model → USD per 1M input/output tokens, tool → USD per
//! call or per unit, and model → context window, so cost and context use can
//! be computed where a source gives tokens but no cost.

use super::step::{Step, StepKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The table shipped with agentdrift (`pricing/default.toml`).
pub const DEFAULT_PRICES_TOML: &str = include_str!("../../pricing/default.toml");

/// The model-window table shipped beside it (`pricing/windows.toml`).
pub const DEFAULT_WINDOWS_TOML: &str = include_str!("../../pricing/windows.toml");

/// Price of one tool: per call, per unit of a step attribute, or both.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolPrice {
    /// USD per call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_call: Option<f64>,
    /// USD per unit of `unit_attribute` (e.g. per search result, per second of execution).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_unit: Option<f64>,
    /// The step attribute holding the number of units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_attribute: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowsFile {
    version: u32,
    windows: BTreeMap<String, u64>,
}

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
    /// Tool prices keyed by tool name or `*` pattern (first match in key order wins).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tools: BTreeMap<String, ToolPrice>,
    /// Context windows keyed by lower-case model name: the shipped table
    /// (`pricing/windows.toml`) with this file's `[windows]` over it.
    #[serde(default)]
    pub windows: BTreeMap<String, u64>,
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
        for (name, p) in &t.tools {
            for (what, v) in [("usd_per_call", p.usd_per_call), ("usd_per_unit", p.usd_per_unit)] {
                if let Some(v) = v.filter(|v| !v.is_finite() || *v < 0.0) {
                    return Err(PriceError::Invalid {
                        path: origin.to_string(),
                        message: format!("tools.\"{name}\".{what} must be a non-negative number, got {v}"),
                    });
                }
            }
            if p.usd_per_unit.is_some() != p.unit_attribute.is_some() {
                return Err(PriceError::Invalid {
                    path: origin.to_string(),
                    message: format!("tools.\"{name}\": usd_per_unit and unit_attribute go together"),
                });
            }
        }
        t.models = t.models.into_iter().map(|(k, v)| (k.to_lowercase(), v)).collect();
        let own = std::mem::take(&mut t.windows);
        t.windows = builtin_windows().clone();
        t.windows.extend(own.into_iter().map(|(k, v)| (k.to_lowercase(), v)));
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
        by_model(&self.models, model)
    }

    /// A model's context window: its price entry's, else the window table's
    /// (same name rules as [`PriceTable::lookup`]).
    pub fn context_window(&self, model: &str) -> Option<u64> {
        self.lookup(model)
            .and_then(|p| p.context_window)
            .or_else(|| by_model(&self.windows, model).copied())
    }

    /// The cost of an agent tool call from the `[tools]` prices, if the tool is priced.
    pub fn tool_cost(&self, step: &Step) -> Option<f64> {
        let name = step.tool.as_deref()?;
        let p = self
            .tools
            .iter()
            .find(|(k, _)| super::glob::matches_ignore_case(k, name))
            .map(|(_, p)| p)?;
        let units = p.unit_attribute.as_ref().and_then(|a| {
            let v = step.attributes.as_ref()?.get(a)?;
            v.as_f64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .filter(|u: &f64| u.is_finite() && *u >= 0.0)
        });
        match (p.usd_per_call, p.usd_per_unit.zip(units)) {
            (None, None) => None,
            (call, unit) => Some(call.unwrap_or(0.0) + unit.map_or(0.0, |(price, n)| price * n)),
        }
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

fn builtin_windows() -> &'static BTreeMap<String, u64> {
    static W: std::sync::OnceLock<BTreeMap<String, u64>> = std::sync::OnceLock::new();
    W.get_or_init(|| {
        let f: WindowsFile = toml::from_str(DEFAULT_WINDOWS_TOML).expect("the shipped window table is valid (tested)");
        assert_eq!(f.version, 1, "pricing/windows.toml version");
        f.windows.into_iter().map(|(k, v)| (k.to_lowercase(), v)).collect()
    })
}

/// An entry by model name: exact, else the longest key the name extends with
/// a date stamp (`-2…`), `:tag` or `@version`; a `provider/` prefix is ignored.
fn by_model<'a, V>(table: &'a BTreeMap<String, V>, model: &str) -> Option<&'a V> {
    let lower: std::borrow::Cow<str> = if !model.is_ascii() || model.bytes().any(|b| b.is_ascii_uppercase()) {
        model.to_lowercase().into()
    } else {
        model.into()
    };
    let name = lower.rsplit_once('/').map_or(&*lower, |(_, n)| n);
    if let Some(p) = table.get(name) {
        return Some(p);
    }
    name.char_indices()
        .rev()
        .filter(|&(i, _)| {
            let rest = &name[i..];
            rest.starts_with("-2") || rest.starts_with(':') || rest.starts_with('@')
        })
        .find_map(|(i, _)| table.get(&name[..i]))
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
    fn every_model_of_the_shared_data_has_a_window() {
        let t = PriceTable::default();
        for (model, window) in [
            ("gpt-4o", 128_000),
            ("ft:gpt-4.1-2025-04-14:sierra:tau2-full-sft:BzrYdMNm", 1_047_576),
            ("gpt-4.1-mini-2025-04-14", 1_047_576),
            ("claude-opus-4-6", 200_000),
            ("openai/gpt-oss-120b", 131_072),
            ("gpt-5.4", 1_050_000),
            ("claude-sonnet-4-5", 200_000),
        ] {
            assert_eq!(t.context_window(model), Some(window), "{model}");
        }
        let own = PriceTable::parse(
            "version = 1\n[models.x]\ninput_usd_per_mtok = 1\noutput_usd_per_mtok = 1\ncontext_window = 10\n[windows]\n\"GPT-5.4\" = 5\n",
            "own.toml",
        )
        .unwrap();
        assert_eq!(own.context_window("gpt-5.4"), Some(5), "a price file's [windows] wins");
        assert_eq!(own.context_window("x"), Some(10));
        assert_eq!(
            own.context_window("gpt-4o"),
            Some(128_000),
            "the shipped windows stay underneath"
        );
    }

    #[test]
    fn tools_are_priced_per_call_and_per_unit() {
        let t = PriceTable::parse(
            "version = 1\n[models]\n[tools.\"web_search*\"]\nusd_per_call = 0.01\n[tools.code_exec]\nusd_per_call = 0.001\nusd_per_unit = 0.0001\nunit_attribute = \"exec.seconds\"\n",
            "t.toml",
        )
        .unwrap();
        let mut s = Step::new("s", 0, 0, StepKind::Tool, "a");
        s.tool = Some("web_search_v2".into());
        assert_eq!(t.tool_cost(&s), Some(0.01));
        s.tool = Some("code_exec".into());
        let mut m = serde_json::Map::new();
        m.insert("exec.seconds".into(), 30.into());
        s.attributes = Some(m);
        assert!((t.tool_cost(&s).unwrap() - (0.001 + 30.0 * 0.0001)).abs() < 1e-15);
        s.attributes = None;
        assert_eq!(t.tool_cost(&s), Some(0.001), "no units reported: the per-call price");
        s.tool = Some("lookup".into());
        assert_eq!(t.tool_cost(&s), None, "unpriced tool");
        let e = PriceTable::parse("version = 1\n[models]\n[tools.x]\nusd_per_unit = 1\n", "t.toml").unwrap_err();
        assert!(e.to_string().contains("tools.\"x\""), "{e}");
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
