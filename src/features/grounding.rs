//! Grounding: the checkable claims of a model output (amounts, quantities,
//! dates, times, identifiers, e-mails, phone numbers, names, statuses),
//! compared with what the session's earlier tool results, tool arguments,
//! error messages, retrieved memory and user messages said, so an agent that
//! states a value its own sources give differently is caught on every
//! session: deterministic, streaming, no model weights. The rules are a data
//! file (`grounding/claims.toml`), versioned and hashed into every baseline.

use super::RuleSource;
use crate::model::{MemoryOp, Step, StepKind};
use regex::{Captures, Regex};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The grounding rules shipped with agentdrift.
pub const DEFAULT_GROUNDING_TOML: &str = include_str!("../../grounding/claims.toml");

/// Why a grounding rules file was refused.
#[derive(Debug, thiserror::Error)]
pub enum GroundingError {
    /// The file could not be read.
    #[error("cannot read grounding rules {origin}: {source}")]
    Io {
        /// The file.
        origin: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The TOML is malformed, has unknown keys, or a rule is invalid.
    #[error("grounding rules {origin}: {message}")]
    Invalid {
        /// Where the text came from.
        origin: String,
        /// What is wrong (the parser's line and column, or the rule).
        message: String,
    },
}

/// What kind of value a claim states; values support each other within a
/// kind (and numbers across money and quantities).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClaimKind {
    /// An amount of money.
    Money,
    /// A number with a unit.
    Quantity,
    /// A calendar date.
    Date,
    /// A time of day.
    Time,
    /// A code or identifier.
    Id,
    /// An e-mail address.
    Email,
    /// A phone number.
    Phone,
    /// A name a tool result gave.
    Name,
    /// A status of an identified entity.
    Status,
}

impl ClaimKind {
    fn parse(s: &str) -> Option<ClaimKind> {
        Some(match s {
            "money" => ClaimKind::Money,
            "quantity" => ClaimKind::Quantity,
            "date" => ClaimKind::Date,
            "time" => ClaimKind::Time,
            "id" => ClaimKind::Id,
            "email" => ClaimKind::Email,
            "phone" => ClaimKind::Phone,
            _ => return None,
        })
    }

    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimKind::Money => "money",
            ClaimKind::Quantity => "quantity",
            ClaimKind::Date => "date",
            ClaimKind::Time => "time",
            ClaimKind::Id => "id",
            ClaimKind::Email => "email",
            ClaimKind::Phone => "phone",
            ClaimKind::Name => "name",
            ClaimKind::Status => "status",
        }
    }

    /// The class a value is remembered under: numbers of money and
    /// quantities are one class (a source's `370` supports "$370" and "370 kg").
    fn class(self) -> u8 {
        match self {
            ClaimKind::Money | ClaimKind::Quantity => 0,
            other => other as u8,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: String,
    #[serde(default)]
    claim: Vec<ClaimFile>,
    #[serde(default)]
    key: Vec<KeyFile>,
    status: StatusFile,
    names: NamesFile,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimFile {
    kind: String,
    pattern: String,
    #[serde(default)]
    letter_and_digit: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    group: String,
    kind: String,
    words: Vec<String>,
    #[serde(default)]
    key_also: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusFile {
    keys: Vec<String>,
    states: Vec<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamesFile {
    keys: Vec<String>,
}

/// One claim pattern.
#[derive(Clone, Debug)]
struct ClaimRule {
    kind: ClaimKind,
    re: Regex,
    letter_and_digit: bool,
}

/// A group of keys whose values are one entity's (a price, a refund, a date).
#[derive(Clone, Debug)]
struct KeyGroup {
    name: String,
    kind: ClaimKind,
    words: Vec<String>,
    /// A JSON key must also hold one of these (when any).
    key_also: Vec<String>,
}

/// Compiled grounding rules.
#[derive(Clone, Debug)]
pub struct Grounding {
    version: String,
    hash: String,
    text: String,
    claims: Vec<ClaimRule>,
    /// The claim patterns as one set (which rules match at all, in one pass).
    set: regex::RegexSet,
    keys: Vec<KeyGroup>,
    status_keys: Vec<String>,
    /// Lower-cased status words → state index.
    status_words: Vec<(String, u8)>,
    name_keys: Vec<String>,
}

/// A claim as extracted from a text.
#[derive(Clone, Debug, PartialEq)]
struct Extracted {
    kind: ClaimKind,
    /// Normalised value.
    value: String,
    /// Byte range in the text.
    start: usize,
    end: usize,
}

/// What one output's claims came to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroundingObs {
    /// Checkable claims in the output.
    pub claims: u32,
    /// Of which no source supports.
    pub unsupported: u32,
    /// Those a source contradicts.
    pub contradictions: Vec<Contradiction>,
}

/// A claim a source of the same session contradicts, with both sides.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Contradiction {
    /// What the claim states.
    pub kind: ClaimKind,
    /// The claim as the output wrote it.
    pub claim: String,
    /// The step of the output.
    pub claim_seq: u64,
    /// The value the source gave instead.
    pub source_value: String,
    /// The step the source came from.
    pub source_seq: u64,
    /// Which source: `<tool> result`, `<tool> arguments`, `user message`, ….
    pub source: String,
    /// The source's words (at most 100 characters).
    pub excerpt: String,
    /// The rule: `id` (a near-miss of a source's identifier), `keyed:<group>`
    /// (a value under the same key), `status` (another status of the same entity).
    pub rule: String,
}

fn month(m: &str) -> Option<u32> {
    if let Ok(n) = m.parse::<u32>() {
        return (1..=12).contains(&n).then_some(n);
    }
    let m = m.to_ascii_lowercase();
    const NAMES: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    NAMES.iter().position(|p| m.starts_with(p)).map(|i| i as u32 + 1)
}

/// A number in canonical text: `370`, `12.5` (at most two decimals).
fn number(x: f64) -> Option<String> {
    if !x.is_finite() || x.abs() > 1e15 {
        return None;
    }
    let s = format!("{:.2}", x);
    Some(s.trim_end_matches('0').trim_end_matches('.').to_string())
}

impl ClaimRule {
    /// The normalised value of one match, if it is one of this kind.
    fn value(&self, c: &Captures) -> Option<String> {
        let g = |n: &str| c.name(n).map(|m| m.as_str());
        let v = g("v").unwrap_or_else(|| c.get(0).map_or("", |m| m.as_str()));
        match self.kind {
            ClaimKind::Money => number(v.replace(',', "").parse().ok()?),
            ClaimKind::Quantity => {
                let unit = g("unit")?.to_ascii_lowercase();
                let unit = unit.trim_end_matches('s');
                Some(format!("{} {unit}", number(v.parse().ok()?)?))
            }
            ClaimKind::Date => {
                let m = month(g("m")?)?;
                let d: u32 = g("d")?.parse().ok()?;
                if !(1..=31).contains(&d) {
                    return None;
                }
                Some(match g("y") {
                    Some(y) => format!("{y}-{m:02}-{d:02}"),
                    None => format!("{m:02}-{d:02}"),
                })
            }
            ClaimKind::Time => {
                let mut h: u32 = g("h")?.parse().ok()?;
                let min: u32 = g("min")?.parse().ok()?;
                match g("ampm").map(|s| s.to_ascii_lowercase()) {
                    Some(p) if p.starts_with('p') && h < 12 => h += 12,
                    Some(p) if p.starts_with('a') && h == 12 => h = 0,
                    _ => {}
                }
                (h < 24 && min < 60).then(|| format!("{h:02}:{min:02}"))
            }
            ClaimKind::Id => {
                if self.letter_and_digit
                    && !(v.bytes().any(|b| b.is_ascii_digit()) && v.bytes().any(|b| b.is_ascii_alphabetic()))
                {
                    return None;
                }
                Some(v.to_lowercase())
            }
            ClaimKind::Email => Some(v.to_lowercase()),
            ClaimKind::Phone => {
                let digits: String = v.chars().filter(char::is_ascii_digit).collect();
                (digits.len() >= 10).then(|| digits[digits.len() - 10..].to_string())
            }
            ClaimKind::Name | ClaimKind::Status => None,
        }
    }
}

/// The words of a key (`departure_date` → `departure`, `date`).
fn key_words(key: &str) -> impl Iterator<Item = String> + '_ {
    key.split(['_', '-', '.', ' '])
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
}

impl Grounding {
    /// The rules shipped with agentdrift.
    pub fn builtin() -> &'static Grounding {
        static G: OnceLock<Grounding> = OnceLock::new();
        G.get_or_init(|| {
            Grounding::parse(DEFAULT_GROUNDING_TOML, "<built-in grounding/claims.toml>")
                .expect("the shipped grounding rules are valid (tested)")
        })
    }

    /// Parses a rules file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Grounding, GroundingError> {
        let invalid = |message: String| GroundingError::Invalid {
            origin: origin.to_string(),
            message,
        };
        let f: File = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let kind = |what: String, k: &str| {
            ClaimKind::parse(k).ok_or_else(|| {
                invalid(format!(
                    "{what}: kind \"{k}\" is not one of money, quantity, date, time, id, email, phone"
                ))
            })
        };
        let mut claims = Vec::new();
        for (i, c) in f.claim.iter().enumerate() {
            // ASCII mode: `\b`, `\d` and `(?i)` are ASCII, so the fast engines
            // run on any text (a Unicode word boundary sends non-ASCII text to
            // the slowest one); literal non-ASCII characters (`€`) still match.
            let re = regex::RegexBuilder::new(&c.pattern)
                .unicode(false)
                .build()
                .map_err(|e| invalid(format!("claim[{i}].pattern: {e}")))?;
            if re.is_match("") {
                return Err(invalid(format!("claim[{i}].pattern matches the empty text")));
            }
            claims.push(ClaimRule {
                kind: kind(format!("claim[{i}]"), &c.kind)?,
                re,
                letter_and_digit: c.letter_and_digit,
            });
        }
        let mut keys = Vec::new();
        for (i, k) in f.key.iter().enumerate() {
            if k.words.is_empty() || k.words.iter().any(|w| w.trim().is_empty()) {
                return Err(invalid(format!("key[{i}] ({}): words must be non-empty", k.group)));
            }
            keys.push(KeyGroup {
                name: k.group.clone(),
                kind: kind(format!("key[{i}]"), &k.kind)?,
                words: k.words.iter().map(|w| w.to_ascii_lowercase()).collect(),
                key_also: k.key_also.iter().map(|w| w.to_ascii_lowercase()).collect(),
            });
        }
        if f.status.states.len() > usize::from(u8::MAX) {
            return Err(invalid("status.states: at most 255 states".into()));
        }
        let mut status_words = Vec::new();
        for (i, words) in f.status.states.iter().enumerate() {
            for w in words {
                if w.trim().is_empty() {
                    return Err(invalid(format!("status.states[{i}]: an empty word")));
                }
                status_words.push((w.to_lowercase(), i as u8));
            }
        }
        let set = regex::RegexSetBuilder::new(f.claim.iter().map(|c| c.pattern.as_str()))
            .unicode(false)
            .build()
            .map_err(|e| invalid(format!("claim patterns: {e}")))?;
        Ok(Grounding {
            version: f.version,
            hash: hex::encode(Sha256::digest(text.as_bytes())),
            text: text.to_string(),
            set,
            claims,
            keys,
            status_keys: f.status.keys.iter().map(|k| k.to_ascii_lowercase()).collect(),
            status_words,
            name_keys: f.names.keys.iter().map(|k| k.to_ascii_lowercase()).collect(),
        })
    }

    /// Loads a rules file.
    pub fn load(path: &std::path::Path) -> Result<Grounding, GroundingError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| GroundingError::Io {
            origin: origin.clone(),
            source,
        })?;
        Grounding::parse(&text, &origin)
    }

    /// The rules a baseline was trained with (the built-in ones for baselines
    /// older than grounding), compiled once per process and shared: every
    /// scorer of the same rules uses the same patterns and their warm caches.
    pub fn of_baseline(source: Option<&RuleSource>) -> Result<Arc<Grounding>, GroundingError> {
        static COMPILED: OnceLock<Mutex<HashMap<String, Arc<Grounding>>>> = OnceLock::new();
        let text = source.map_or(DEFAULT_GROUNDING_TOML, |s| s.text.as_str());
        let key = hex::encode(Sha256::digest(text.as_bytes()));
        let compiled = COMPILED.get_or_init(|| Mutex::new(HashMap::new()));
        if let Some(g) = compiled.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(g);
        }
        let g = Arc::new(Grounding::parse(text, "stored in the baseline")?);
        if let Ok(mut m) = compiled.lock() {
            m.insert(key, g.clone());
        }
        Ok(g)
    }

    /// What a baseline stores.
    pub fn source(&self) -> RuleSource {
        RuleSource {
            version: self.version.clone(),
            sha256: self.hash.clone(),
            text: self.text.clone(),
        }
    }

    /// The claims of a text, in order, overlaps resolved by rule order.
    fn extract(&self, text: &str) -> Vec<Extracted> {
        let mut out: Vec<Extracted> = Vec::new();
        // A claim holds a digit or an `@` (a match without one is not kept), so
        // a text with neither costs one scan. The rest run one pass of the
        // whole set, then the capturing engine only for the rules that matched.
        let checkable = |s: &str| s.bytes().any(|b| b.is_ascii_digit() || b == b'@');
        if !checkable(text) {
            return out;
        }
        let hits = self.set.matches(text);
        if !hits.matched_any() {
            return out;
        }
        for rule in hits.iter().map(|i| &self.claims[i]) {
            for c in rule.re.captures_iter(text) {
                let whole = c.get(0).expect("group 0 always matches");
                if !checkable(whole.as_str()) || out.iter().any(|e| e.start < whole.end() && whole.start() < e.end) {
                    continue;
                }
                if let Some(value) = rule.value(&c) {
                    out.push(Extracted {
                        kind: rule.kind,
                        value,
                        start: whole.start(),
                        end: whole.end(),
                    });
                }
            }
        }
        out.sort_by_key(|e| e.start);
        out
    }

    /// The key groups of a JSON key, as a bit set (`total_price`: total and price).
    fn groups_of_key(&self, key: &str, kind: ClaimKind) -> u32 {
        let words: Vec<String> = key_words(key).collect();
        self.keys
            .iter()
            .enumerate()
            .take(32)
            .filter(|(_, g)| {
                let holds = |list: &[String]| list.iter().any(|w| words.iter().any(|k| k == w));
                g.kind == kind && holds(&g.words) && (g.key_also.is_empty() || holds(&g.key_also))
            })
            .fold(0, |m, (i, _)| m | 1 << i)
    }

    /// The key group of a claim: the last group word in its sentence before it.
    fn group_before(&self, text: &str, sentence_start: usize, claim_start: usize, kind: ClaimKind) -> Option<usize> {
        let from = claim_start.saturating_sub(60).max(sentence_start);
        let from = (from..=claim_start)
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(claim_start);
        let before = text[from..claim_start].to_lowercase();
        let mut best: Option<(usize, usize)> = None;
        for (gi, g) in self.keys.iter().enumerate().take(32).filter(|(_, g)| g.kind == kind) {
            for w in &g.words {
                for (pos, _) in before.match_indices(w.as_str()) {
                    let end = pos + w.len();
                    let bounded = |i: Option<char>| i.is_none_or(|c| !c.is_alphanumeric());
                    if bounded(before[..pos].chars().next_back())
                        && bounded(before[end..].chars().next())
                        && best.is_none_or(|(p, _)| end > p)
                    {
                        best = Some((end, gi));
                    }
                }
            }
        }
        best.map(|(_, g)| g)
    }

    /// The state a status word names.
    fn state_of(&self, word: &str) -> Option<u8> {
        let w = word.to_lowercase();
        self.status_words.iter().find(|(s, _)| *s == w).map(|(_, i)| *i)
    }

    /// The states a sentence names.
    fn states_in(&self, sentence: &str) -> Vec<(u8, String)> {
        let lower = sentence.to_lowercase();
        let mut out = Vec::new();
        for (w, i) in &self.status_words {
            for (pos, _) in lower.match_indices(w.as_str()) {
                let end = pos + w.len();
                let bounded = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric());
                if bounded(lower[..pos].chars().next_back()) && bounded(lower[end..].chars().next()) {
                    out.push((*i, w.clone()));
                    break;
                }
            }
        }
        out
    }
}

/// Bounds on [`GroundingTracker`]: values remembered, identifiers, keyed
/// values, statuses, names; the largest source text read.
const MAX_SEEN: usize = 2048;
const MAX_IDS: usize = 64;
const MAX_KEYED: usize = 64;
const MAX_STATUSES: usize = 32;
const MAX_NAMES: usize = 32;
const MAX_SOURCE_BYTES: usize = 64 * 1024;

/// A value a JSON source carried under a key group.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Keyed {
    /// Bit set of the key's groups.
    groups: u32,
    value: String,
    seq: u64,
    source: String,
    excerpt: String,
}

/// An identifier a source named, where, and the status a result gave it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SourceId {
    value: String,
    seq: u64,
    source: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Status {
    id: String,
    state: u8,
    word: String,
    seq: u64,
    source: String,
    excerpt: String,
}

/// What one session's sources said so far (bounded: a few KiB at most).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct GroundingTracker {
    /// Hashes of (value class, normalised value), sorted.
    seen: Vec<u32>,
    ids: Vec<SourceId>,
    keyed: Vec<Keyed>,
    statuses: Vec<Status>,
    names: Vec<String>,
}

/// A remembered value as 32 bits: with at most 2,048 of them a claim
/// matches one by chance with probability under 5·10⁻⁷ (it would then count
/// as supported: a collision can hide a finding, never invent one).
fn value_hash(class: u8, value: impl AsRef<[u8]>) -> u32 {
    let mut h = super::sequence::Fnv::default();
    std::hash::Hasher::write_u8(&mut h, class);
    std::hash::Hasher::write(&mut h, value.as_ref());
    let x = std::hash::Hasher::finish(&h);
    (x ^ (x >> 32)) as u32
}

/// A number as whole cents, the form numbers are remembered and compared in.
fn cents(x: f64) -> Option<i64> {
    (x.is_finite() && x.abs() < 1e15).then(|| (x * 100.0).round() as i64)
}

fn clip(s: &str, chars: usize) -> String {
    if s.chars().count() <= chars {
        return s.to_string();
    }
    let mut out: String = s.chars().take(chars.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A prefix and a number (`hat170`, `#w2378156`, `mia_li_3668`): numbered in
/// sequence, so a neighbour is another entity.
fn sequential(id: &str) -> bool {
    let prefix = id.trim_end_matches(|c: char| c.is_ascii_digit());
    prefix.len() < id.len() && !prefix.bytes().any(|b| b.is_ascii_digit())
}

/// Identifiers and one-character slips: same length, one position differs,
/// or two neighbours swapped; codes that mix letters and digits only.
fn near_miss(a: &str, b: &str) -> bool {
    if a.len() != b.len() || a == b || a.len() < 4 || sequential(a) || sequential(b) {
        return false;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let diff: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
    match diff.as_slice() {
        [_] => true,
        [i, j] => *j == i + 1 && a[*i] == b[*j] && a[*j] == b[*i],
        _ => false,
    }
}

/// The sentence spans of a text: ends at `. `, `! `, `? ` and newlines.
fn sentences(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    for i in 0..b.len() {
        let end = b[i] == b'\n'
            || (matches!(b[i], b'.' | b'!' | b'?') && b.get(i + 1).is_none_or(|c| c.is_ascii_whitespace()));
        if end {
            out.push((start, i + 1));
            start = i + 1;
        }
    }
    if start < b.len() {
        out.push((start, b.len()));
    }
    out
}

impl GroundingTracker {
    fn remember(&mut self, class: u8, value: &str) {
        self.remember_hash(value_hash(class, value));
    }

    fn remember_hash(&mut self, h: u32) {
        if let Err(i) = self.seen.binary_search(&h)
            && self.seen.len() < MAX_SEEN
        {
            self.seen.insert(i, h);
        }
    }

    fn has(&self, class: u8, value: &str) -> bool {
        self.has_hash(value_hash(class, value))
    }

    fn has_hash(&self, h: u32) -> bool {
        self.seen.binary_search(&h).is_ok()
    }

    /// Whether a claim's value appears in a source.
    fn supported(&self, e: &Extracted) -> bool {
        let class = e.kind.class();
        match e.kind {
            ClaimKind::Money | ClaimKind::Quantity => e
                .value
                .split(' ')
                .next()
                .and_then(|n| cents(n.parse().ok()?))
                .is_some_and(|c| self.has_hash(value_hash(class, c.to_le_bytes()))),
            // A date without a year (`05-20`) matches the same day of any year:
            // sources remember each date with and without its year.
            _ => self.has(class, &e.value),
        }
    }

    /// An identifier a source named (its excerpt is made when it contradicts:
    /// the source and the value, so an open session keeps no text).
    fn add_id(&mut self, value: &str, seq: u64, source: &str) {
        if self.ids.len() < MAX_IDS && !self.ids.iter().any(|i| i.value == value) {
            self.ids.push(SourceId {
                value: value.to_string(),
                seq,
                source: source.to_string(),
            });
        }
    }

    /// Learns the values of a text source.
    fn learn_text(&mut self, g: &Grounding, text: &str, seq: u64, source: &str) {
        if text.len() > MAX_SOURCE_BYTES {
            return;
        }
        for e in g.extract(text) {
            self.learn_value(e.kind, &e.value);
            if e.kind == ClaimKind::Id {
                self.add_id(&e.value, seq, source);
            }
        }
        // Bare numbers support amounts and quantities ("my budget is 370").
        for w in text
            .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
            .map(|w| w.trim_matches(['.', ',']))
            .filter(|w| !w.is_empty())
        {
            let x = if w.contains(',') {
                w.replace(',', "").parse::<f64>()
            } else {
                w.parse::<f64>()
            };
            if let Ok(x) = x {
                self.remember_number(x);
            }
        }
    }

    /// A number, remembered by its value in cents (no text made).
    fn remember_number(&mut self, x: f64) {
        if let Some(c) = cents(x) {
            self.remember_hash(value_hash(0, c.to_le_bytes()));
        }
    }

    fn learn_value(&mut self, kind: ClaimKind, value: &str) {
        let class = kind.class();
        match kind {
            ClaimKind::Money | ClaimKind::Quantity => {
                if let Some(x) = value.split(' ').next().and_then(|n| n.parse().ok()) {
                    self.remember_number(x);
                }
            }
            ClaimKind::Date => {
                self.remember(class, value);
                if value.len() == 10 {
                    self.remember(class, &value[5..]); // the same day without its year
                }
            }
            _ => self.remember(class, value),
        }
    }

    /// Learns the values of a JSON source; keyed values only when `keyed`.
    fn walk(&mut self, g: &Grounding, v: &Value, key: Option<&str>, seq: u64, source: &str, keyed: bool) {
        match v {
            Value::Object(m) => {
                // Identifiers can be keys (`{"ZFA04Y": {…}}`).
                for k in m.keys() {
                    self.learn_string(g, k, seq, source);
                }
                if keyed {
                    self.learn_status(g, m, seq, source);
                }
                for (k, x) in m {
                    self.walk(g, x, Some(k), seq, source, keyed);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| self.walk(g, x, key, seq, source, keyed)),
            Value::Number(n) => {
                if let Some(x) = n.as_f64() {
                    self.remember_number(x);
                }
                if let (true, Some(k)) = (keyed, key)
                    && let Some(s) = n.as_f64().and_then(number)
                {
                    let groups = g.groups_of_key(k, ClaimKind::Money);
                    self.add_keyed(groups, &s, seq, source, || format!("{source}: \"{k}\": {n}"));
                }
            }
            Value::String(s) => {
                self.learn_string(g, s, seq, source);
                if let (true, Some(k)) = (keyed, key) {
                    let money = s.replace([',', '$'], "").parse().ok().and_then(number);
                    let date = g
                        .extract(s)
                        .into_iter()
                        .find(|e| e.kind == ClaimKind::Date)
                        .map(|e| e.value);
                    for (kind, value) in [(ClaimKind::Money, money), (ClaimKind::Date, date)] {
                        if let Some(value) = value {
                            let groups = g.groups_of_key(k, kind);
                            self.add_keyed(groups, &value, seq, source, || {
                                format!("{source}: \"{k}\": \"{}\"", clip(s, 80))
                            });
                        }
                    }
                }
                if let (true, Some(k)) = (keyed, key)
                    && g.name_keys.iter().any(|n| n == &k.to_ascii_lowercase())
                    && (2..=40).contains(&s.chars().count())
                    && self.names.len() < MAX_NAMES
                    && !self.names.iter().any(|n| n == s)
                {
                    self.names.push(s.clone());
                }
            }
            _ => {}
        }
    }

    /// A string value of a JSON source: itself an identifier, and the claims inside it.
    fn learn_string(&mut self, g: &Grounding, s: &str, seq: u64, source: &str) {
        if s.len() > 512 {
            return self.learn_text(g, s, seq, source);
        }
        // Only a string with a digit or `@` can support a claim.
        if !s.bytes().any(|b| b.is_ascii_digit() || b == b'@') {
            return;
        }
        self.remember(ClaimKind::Id.class(), &s.to_lowercase());
        for e in g.extract(s) {
            self.learn_value(e.kind, &e.value);
            if e.kind == ClaimKind::Id {
                self.add_id(&e.value, seq, source);
            }
        }
        if let Ok(x) = s.replace(',', "").parse::<f64>() {
            self.remember_number(x);
        }
    }

    fn add_keyed(&mut self, groups: u32, value: &str, seq: u64, source: &str, excerpt: impl FnOnce() -> String) {
        if groups == 0 {
            return;
        }
        if self.keyed.len() < MAX_KEYED && !self.keyed.iter().any(|k| k.groups == groups && k.value == value) {
            self.keyed.push(Keyed {
                groups,
                value: value.to_string(),
                seq,
                source: source.to_string(),
                excerpt: excerpt(),
            });
        }
    }

    /// An object with a status key gives that status to the identifiers among its values.
    fn learn_status(&mut self, g: &Grounding, m: &serde_json::Map<String, Value>, seq: u64, source: &str) {
        let Some((key, word, state)) = m.iter().find_map(|(k, v)| {
            let k_lower = k.to_ascii_lowercase();
            if !g.status_keys.contains(&k_lower) {
                return None;
            }
            let w = v.as_str()?;
            Some((k.clone(), w.to_string(), g.state_of(w)?))
        }) else {
            return;
        };
        for (k, v) in m {
            let Some(s) = v.as_str() else { continue };
            let ids = g
                .extract(s)
                .into_iter()
                .filter(|e| e.kind == ClaimKind::Id && e.start == 0 && e.end == s.len());
            for e in ids {
                if self.statuses.len() < MAX_STATUSES {
                    self.statuses.retain(|x| x.id != e.value);
                    self.statuses.push(Status {
                        id: e.value,
                        state,
                        word: word.clone(),
                        seq,
                        source: source.to_string(),
                        excerpt: format!("{source}: \"{k}\": \"{}\", \"{key}\": \"{word}\"", clip(s, 40)),
                    });
                }
            }
        }
    }

    /// Learns what a step tells the check: a user message, a tool call's
    /// arguments, result (unless it failed) and error, retrieved memory.
    /// Model outputs are not sources (an agent repeating itself is not support).
    pub(super) fn learn(&mut self, g: &Grounding, step: &Step) {
        let result = super::state::successful_result(step);
        self.learn_parsed(g, step, result.as_deref());
    }

    /// [`learn`](Self::learn) with the step's successful result already
    /// parsed (`state::successful_result`), so it is parsed once per step.
    pub(super) fn learn_parsed(&mut self, g: &Grounding, step: &Step, result: Option<&Value>) {
        match step.kind {
            StepKind::User => {
                if let Some(t) = &step.text {
                    self.learn_text(g, t, step.seq, "user message");
                }
            }
            StepKind::Tool => self.learn_tool(
                g,
                step.tool.as_deref().unwrap_or(""),
                step.seq,
                step.args.as_ref(),
                result,
                step.error.as_deref(),
            ),
            StepKind::Memory if step.memory_op == Some(MemoryOp::Read) => {
                if let Some(t) = &step.text {
                    self.learn_text(g, t, step.seq, "retrieved memory");
                }
            }
            _ => {}
        }
    }

    /// The claims of an output that an earlier source supports.
    fn supported_in(&self, g: &Grounding, text: &str) -> Vec<Extracted> {
        g.extract(text).into_iter().filter(|e| self.supported(e)).collect()
    }

    /// Learns a tool step's values.
    fn learn_tool(
        &mut self,
        g: &Grounding,
        tool: &str,
        seq: u64,
        args: Option<&Value>,
        result: Option<&Value>,
        error: Option<&str>,
    ) {
        if let Some(a) = args {
            let source = format!("{tool} arguments");
            self.walk(g, a, None, seq, &source, false);
        }
        // A result held as JSON text arrives parsed; a string here is plain text.
        match result {
            Some(Value::String(s)) => self.learn_text(g, s, seq, &format!("{tool} result")),
            Some(v @ (Value::Object(_) | Value::Array(_))) => {
                self.walk(g, v, None, seq, &format!("{tool} result"), true)
            }
            Some(v @ Value::Number(_)) => self.walk(g, v, None, seq, &format!("{tool} result"), false),
            _ => {}
        }
        if let Some(e) = error {
            self.learn_text(g, e, seq, &format!("{tool} error"));
        }
    }

    /// Checks an output's claims against what the sources said so far.
    pub(super) fn check(&self, g: &Grounding, text: &str, seq: u64) -> GroundingObs {
        let mut obs = GroundingObs::default();
        let claims = g.extract(text);
        let spans = sentences(text);
        let sentence_of = |at: usize| {
            spans
                .iter()
                .copied()
                .find(|(a, b)| (*a..*b).contains(&at))
                .unwrap_or((0, text.len()))
        };
        for e in &claims {
            obs.claims += 1;
            let claim_text = text[e.start..e.end].trim();
            if self.supported(e) {
                continue;
            }
            obs.unsupported += 1;
            let contradiction =
                |source_value: &str, src_seq: u64, source: &str, excerpt: &str, rule: String| Contradiction {
                    kind: e.kind,
                    claim: clip(claim_text, 80),
                    claim_seq: seq,
                    source_value: source_value.to_string(),
                    source_seq: src_seq,
                    source: source.to_string(),
                    excerpt: excerpt.to_string(),
                    rule,
                };
            // 1. An identifier one slip away from a source's.
            if e.kind == ClaimKind::Id
                && let Some(s) = self.ids.iter().find(|s| near_miss(&s.value, &e.value))
            {
                let excerpt = format!("{}: \"{}\"", s.source, s.value);
                obs.contradictions
                    .push(contradiction(&s.value, s.seq, &s.source, &excerpt, "id".into()));
                continue;
            }
            // 2. A value under a key the sources gave other values for.
            if self.keyed.is_empty() {
                continue; // no tool result gave a keyed value (always so without result bodies)
            }
            let (s0, _) = sentence_of(e.start);
            if let Some(gi) = g.group_before(text, s0, e.start, e.kind) {
                let group: Vec<&Keyed> = self.keyed.iter().filter(|k| k.groups & (1 << gi) != 0).collect();
                if let Some(last) = group.last()
                    && !self.derived(e, &group)
                {
                    let rule = format!("keyed:{}", g.keys[gi].name);
                    obs.contradictions
                        .push(contradiction(&last.value, last.seq, &last.source, &last.excerpt, rule));
                }
            }
        }
        // 3. A status word of another state than a result gave the entity named beside it.
        if !self.statuses.is_empty() {
            for &(a, b) in &spans {
                let named: Vec<&Status> = claims
                    .iter()
                    .filter(|e| e.kind == ClaimKind::Id && e.start >= a && e.end <= b)
                    .filter_map(|e| self.statuses.iter().find(|s| s.id == e.value))
                    .collect();
                if named.is_empty() {
                    continue;
                }
                let said = g.states_in(&text[a..b]);
                for s in named {
                    if said.is_empty() {
                        continue;
                    }
                    obs.claims += 1;
                    if said.iter().any(|(i, _)| *i == s.state) {
                        continue;
                    }
                    obs.unsupported += 1;
                    let (_, word) = &said[0];
                    obs.contradictions.push(Contradiction {
                        kind: ClaimKind::Status,
                        claim: clip(text[a..b].trim(), 160),
                        claim_seq: seq,
                        source_value: s.word.clone(),
                        source_seq: s.seq,
                        source: s.source.clone(),
                        excerpt: s.excerpt.clone(),
                        rule: format!("status: \"{word}\" against \"{}\"", s.word),
                    });
                }
            }
        }
        // Names a tool result gave.
        for n in &self.names {
            if text.contains(n.as_str()) {
                obs.claims += 1;
            }
        }
        obs
    }

    /// Whether a money claim is a total or multiple of its group's values
    /// (the agent computed it): 2–9 times one of them, or the sum of them all.
    fn derived(&self, e: &Extracted, group: &[&Keyed]) -> bool {
        let Ok(x) = e.value.split(' ').next().unwrap_or("").parse::<f64>() else {
            return false;
        };
        let vals: Vec<f64> = group.iter().filter_map(|k| k.value.parse().ok()).collect();
        let close = |a: f64, b: f64| (a - b).abs() < 0.005;
        vals.iter().any(|v| (2..=9).any(|k| close(x, v * f64::from(k))))
            || (vals.len() > 1 && close(x, vals.iter().sum()))
    }
}

/// A claim of a model output that an earlier source of its session supports
/// (what `inject --drift contradiction` alters).
#[derive(Clone, Debug, PartialEq)]
pub struct SupportedClaim {
    /// Index of the output's step in the session.
    pub step: usize,
    /// Byte range of the claim in the output's text.
    pub range: std::ops::Range<usize>,
    /// What it states.
    pub kind: ClaimKind,
}

/// The supported claims of a session's outputs, in order.
pub fn supported_claims(g: &Grounding, steps: &[Step]) -> Vec<SupportedClaim> {
    let mut t = GroundingTracker::default();
    let mut out = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        match (s.kind, s.text.as_deref()) {
            (StepKind::Llm, Some(text)) => out.extend(t.supported_in(g, text).into_iter().map(|e| SupportedClaim {
                step: i,
                range: e.start..e.end,
                kind: e.kind,
            })),
            _ => t.learn(g, s),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn g() -> &'static Grounding {
        Grounding::builtin()
    }

    fn values(text: &str) -> Vec<(ClaimKind, String)> {
        g().extract(text).into_iter().map(|e| (e.kind, e.value)).collect()
    }

    #[test]
    fn claims_are_extracted_and_normalised_by_kind() {
        use ClaimKind::*;
        let v = values(
            "Your reservation ZFA04Y on flight HAT170 departs May 20th, 2024 at 3:05 pm; \
             the total is $1,370.50 (2 checked bags). A refund of 30 dollars goes to mia.li@example.com, \
             call +1 (555) 123-4567. Order #W2378156, user mia_li_3668, date 2024-05-21, 10 kg.",
        );
        let want = [
            (Id, "zfa04y"),
            (Id, "hat170"),
            (Date, "2024-05-20"),
            (Time, "15:05"),
            (Money, "1370.5"),
            (Quantity, "2 checked bag"),
            (Money, "30"),
            (Email, "mia.li@example.com"),
            (Phone, "5551234567"),
            (Id, "#w2378156"),
            (Id, "mia_li_3668"),
            (Date, "2024-05-21"),
            (Quantity, "10 kg"),
        ];
        assert_eq!(v, want.iter().map(|(k, s)| (*k, s.to_string())).collect::<Vec<_>>());
        assert_eq!(values("CANCEL the BOOKING please"), vec![], "words are not codes");
        assert_eq!(values("on 12/31/2024"), vec![(Date, "2024-12-31".into())]);
        assert_eq!(values("the 3rd of June"), vec![(Date, "06-03".into())]);
    }

    #[test]
    fn a_claim_a_source_gave_is_supported_and_one_nobody_gave_is_not() {
        let mut t = GroundingTracker::default();
        t.learn_text(g(), "I want to fly on May 20, my id is mia_li_3668", 0, "user message");
        // The result as JSON text, as producers send it: parsed once on the step's way in.
        let mut step = Step::new("s", 2, 2000, StepKind::Tool, "a");
        step.tool = Some("get_reservation_details".into());
        step.args = Some(json!({"reservation_id": "ZFA04Y"}));
        step.result = Some(json!(
            r#"{"reservation_id": "ZFA04Y", "flights": [{"flight_number": "HAT170", "date": "2024-05-20", "price": 370}], "status": "active"}"#
        ));
        t.learn(g(), &step);
        let o = t.check(
            g(),
            "Booking ZFA04Y (user mia_li_3668) on HAT170 on 2024-05-20 costs $370. Insurance costs $30.",
            5,
        );
        assert_eq!(o.claims, 6);
        assert_eq!(o.unsupported, 1, "$30 appears in no source");
        assert!(o.contradictions.is_empty(), "{:?}", o.contradictions);
    }

    #[test]
    fn the_three_contradiction_rules_fire_with_both_sides() {
        let mut t = GroundingTracker::default();
        t.learn_tool(
            g(),
            "get_reservation_details",
            3,
            None,
            Some(
                &json!({"reservation_id": "ZFA04Y", "status": "cancelled", "total_price": 370,
                         "passengers": [{"first_name": "Mia", "last_name": "Li"}]}),
            ),
            None,
        );
        // An id one slip away.
        let o = t.check(g(), "Your reservation ZFA05Y is ready.", 7);
        assert_eq!(o.contradictions.len(), 1);
        let c = &o.contradictions[0];
        assert_eq!(
            (c.kind, c.rule.as_str(), c.source_value.as_str()),
            (ClaimKind::Id, "id", "zfa04y")
        );
        assert_eq!(
            (c.claim_seq, c.source_seq, c.source.as_str()),
            (7, 3, "get_reservation_details result")
        );
        // A price under the same key.
        let o = t.check(g(), "The total price was $340.", 8);
        assert_eq!(o.contradictions.len(), 1, "{o:?}");
        let c = &o.contradictions[0];
        assert_eq!(
            (c.rule.as_str(), c.source_value.as_str(), c.claim.as_str()),
            ("keyed:price", "370", "$340")
        );
        assert!(c.excerpt.contains("\"total_price\": 370"), "{}", c.excerpt);
        // Totals the agent computed are not contradictions; unkeyed amounts are only unsupported.
        assert!(
            t.check(g(), "For two of you the total is $740.", 9)
                .contradictions
                .is_empty()
        );
        let o = t.check(g(), "Lunch is about $12.", 9);
        assert_eq!((o.unsupported, o.contradictions.len()), (1, 0));
        // Another status of the same entity.
        let o = t.check(g(), "Good news, Mia: reservation ZFA04Y is confirmed.", 10);
        assert_eq!(o.contradictions.len(), 1, "{o:?}");
        let c = &o.contradictions[0];
        assert_eq!((c.kind, c.source_value.as_str()), (ClaimKind::Status, "cancelled"));
        assert!(
            t.check(g(), "Reservation ZFA04Y was cancelled as you asked.", 11)
                .contradictions
                .is_empty()
        );
        assert_eq!(
            t.check(g(), "Mia Li, reservation ZFA04Y was cancelled.", 11).claims,
            4,
            "id, status, two names"
        );
    }

    #[test]
    fn memory_stays_bounded_whatever_the_sources_say() {
        let mut t = GroundingTracker::default();
        for i in 0..2000u64 {
            let body =
                json!({"reservation_id": format!("R{i:05}X"), "status": "active", "price": i, "name": format!("N{i}")});
            t.learn_tool(g(), "get", i, None, Some(&body), None);
        }
        assert!(t.seen.len() <= MAX_SEEN && t.ids.len() <= MAX_IDS && t.keyed.len() <= MAX_KEYED);
        assert!(t.statuses.len() <= MAX_STATUSES && t.names.len() <= MAX_NAMES);
        let big = "9".repeat(MAX_SOURCE_BYTES + 1);
        let before = t.seen.len();
        t.learn_text(g(), &big, 1, "user message");
        assert_eq!(t.seen.len(), before, "oversized sources are not read");
    }

    #[test]
    fn bad_rule_files_are_refused_with_the_rule_named() {
        let base = DEFAULT_GROUNDING_TOML;
        let bad = format!("{base}\n[[claim]]\nkind = \"money\"\npattern = '(unclosed'\n");
        let e = Grounding::parse(&bad, "x.toml").unwrap_err().to_string();
        assert!(e.contains("x.toml") && e.contains("pattern"), "{e}");
        let bad = format!("{base}\n[[claim]]\nkind = \"colour\"\npattern = 'red'\n");
        assert!(Grounding::parse(&bad, "x").unwrap_err().to_string().contains("colour"));
        let bad = format!("{base}\n[[claim]]\nkind = \"id\"\npattern = 'a*'\n");
        assert!(Grounding::parse(&bad, "x").unwrap_err().to_string().contains("empty"));
        assert!(Grounding::parse("version = 1", "x").is_err());
    }

    #[test]
    fn near_misses_are_one_slip() {
        assert!(near_miss("zfa04y", "zfa05y"));
        assert!(near_miss("zfa04y", "zfa40y"));
        assert!(!near_miss("zfa04y", "zfa04y"));
        assert!(!near_miss("zfa04y", "qqa04y"));
        assert!(!near_miss("abc", "abd"), "too short to tell from a different code");
        assert!(
            !near_miss("hat258", "hat268"),
            "flight numbers are numbered in sequence"
        );
        assert!(!near_miss("#w2378156", "#w2378157") && !near_miss("mia_li_3668", "mia_li_3669"));
        assert!(near_miss("4wq150", "4wq151"), "a code mixing letters and digits");
    }
}
