//! The state rules' memory of one session: which reads it has made since
//! the state last changed, and which values tool results and the user gave,
//! so re-reads and contradicted results can be told apart from fresh calls.
//! Bounded: a session never holds more than a few KiB here.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// What the state rules remember: successful reads since the last other
/// call, and the values tool results and users gave (bounded).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct StateTracker {
    pub(super) reads: Vec<u64>,
    by_key: BTreeMap<String, Vec<String>>,
    values: std::collections::BTreeSet<String>,
    /// The words of the user's messages as a Bloom filter of
    /// [`USER_WORD_BITS`] bits (empty before the first user message): memory
    /// stays fixed however much the user says, and a false positive can only
    /// hide a contradiction, never invent one.
    #[serde(default)]
    user_words: Vec<u64>,
}

/// Bits of the user-word filter (256 bytes per session with user text).
const USER_WORD_BITS: usize = 2048;

/// The words of a text for the user-word filter: runs of letters, digits
/// and `-_.@:/`, ASCII-lower-cased, as hashes.
fn word_hashes(text: &str) -> impl Iterator<Item = u64> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || "-_.@:/".contains(c)))
        .map(|w| w.trim_end_matches(['.', ':', '/']))
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut h = super::sequence::Fnv::default();
            for b in w.bytes() {
                std::hash::Hasher::write_u8(&mut h, b.to_ascii_lowercase());
            }
            std::hash::Hasher::finish(&h)
        })
}

/// The filter bits of one word hash.
fn word_bits(h: u64) -> [usize; 3] {
    let m = USER_WORD_BITS as u64;
    [(h % m) as usize, ((h >> 21) % m) as usize, ((h >> 42) % m) as usize]
}

/// Bounds on [`StateTracker`]: reads remembered, result keys, values per key,
/// values in all.
const MAX_READS: usize = 256;
const MAX_KEYS: usize = 256;
const MAX_VALUES_PER_KEY: usize = 64;
const MAX_VALUES: usize = 4096;
/// Largest result body parsed for values.
const MAX_RESULT_BYTES: usize = 64 * 1024;

/// A tool result given as text that holds a JSON object or array (bounded), parsed.
pub(super) fn json_body(s: &str) -> Option<Value> {
    let t = s.trim_start();
    if s.len() > MAX_RESULT_BYTES || !(t.starts_with('{') || t.starts_with('[')) {
        return None;
    }
    serde_json::from_str(s).ok()
}

/// A successful tool step's result, a JSON text parsed once (the state and
/// grounding rules both read it); `None` for a failed step or no result.
pub(super) fn successful_result(step: &crate::model::Step) -> Option<std::borrow::Cow<'_, Value>> {
    if step.status == Some(crate::model::Status::Error) {
        return None;
    }
    let r = step.result.as_ref()?;
    Some(match r {
        Value::String(s) => json_body(s).map_or(std::borrow::Cow::Borrowed(r), std::borrow::Cow::Owned),
        _ => std::borrow::Cow::Borrowed(r),
    })
}

/// A scalar JSON value as text, when it can name state (ids, amounts, dates).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if (2..=200).contains(&s.len()) => Some(s.to_lowercase()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Visits the (key, scalar) leaves of a JSON value.
fn leaves(v: &Value, key: Option<&str>, f: &mut impl FnMut(&str, String)) {
    match v {
        Value::Object(m) => m.iter().for_each(|(k, x)| leaves(x, Some(k), f)),
        Value::Array(a) => a.iter().for_each(|x| leaves(x, key, f)),
        other => {
            if let (Some(k), Some(s)) = (key, scalar(other)) {
                f(k, s)
            }
        }
    }
}

impl StateTracker {
    /// Whether this successful read repeats one made since the last other call.
    pub(super) fn re_read(&mut self, key: u64) -> bool {
        if self.reads.contains(&key) {
            return true;
        }
        if self.reads.len() < MAX_READS {
            self.reads.push(key);
        }
        false
    }

    /// Whether the call's arguments carry a value under a key that tool
    /// results gave other values for, which no result and no user message gave.
    pub(super) fn contradicts(&self, args: &Value) -> bool {
        if self.by_key.is_empty() {
            return false; // no tool result has given a value yet (always so without result bodies)
        }
        let mut found = false;
        leaves(args, None, &mut |k, v| {
            found |= self.by_key.get(k).is_some_and(|seen| !seen.contains(&v))
                && !self.values.contains(&v)
                && !self.user_said(&v);
        });
        found
    }

    pub(super) fn learn_result(&mut self, result: &Value) {
        let parsed;
        let body = match result {
            Value::String(s) => match json_body(s) {
                Some(v) => {
                    parsed = v;
                    &parsed
                }
                None => return,
            },
            Value::Object(_) | Value::Array(_) => result,
            _ => return,
        };
        leaves(body, None, &mut |k, v| {
            if self.values.len() < MAX_VALUES {
                self.values.insert(v.clone());
            }
            let room = self.by_key.len() < MAX_KEYS;
            match self.by_key.get_mut(k) {
                Some(seen) if seen.len() < MAX_VALUES_PER_KEY && !seen.contains(&v) => seen.push(v),
                None if room => {
                    self.by_key.insert(k.to_string(), vec![v]);
                }
                _ => {}
            }
        });
    }

    pub(super) fn learn_user(&mut self, text: &str) {
        if self.user_words.is_empty() {
            self.user_words = vec![0; USER_WORD_BITS / 64];
        }
        for h in word_hashes(text) {
            for b in word_bits(h) {
                self.user_words[b / 64] |= 1 << (b % 64);
            }
        }
    }

    /// Whether every word of `value` is (probably) in the user's messages.
    pub(super) fn user_said(&self, value: &str) -> bool {
        let set = |b: usize| self.user_words.get(b / 64).is_some_and(|w| w & (1 << (b % 64)) != 0);
        let mut any = false;
        for h in word_hashes(value) {
            any = true;
            if !word_bits(h).into_iter().all(set) {
                return false;
            }
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_word_filter_remembers_what_was_said_and_nothing_else() {
        let mut t = StateTracker::default();
        assert!(!t.user_said("hat002"), "nothing said yet");
        t.learn_user("Please move me to flight HAT002, business class, on 2024-05-18.");
        for said in ["hat002", "business class", "2024-05-18", "Business"] {
            assert!(t.user_said(said), "{said}");
        }
        // 1,000 values never said: a false positive only hides a contradiction,
        // and with 12 words in 2,048 bits it is rare (≈ (1 − e^(−36/2048))³ ≈ 5·10⁻⁶ each).
        let hits = (0..1000).filter(|i| t.user_said(&format!("xyz{i}"))).count();
        assert_eq!(hits, 0);
        assert!(
            !t.user_said("business lounge"),
            "every word of a value must have been said"
        );
        assert_eq!(
            t.user_words.len() * 64,
            USER_WORD_BITS,
            "fixed size however much is said"
        );
    }

    #[test]
    fn reads_and_result_values_are_bounded() {
        let mut t = StateTracker::default();
        for k in 0..(MAX_READS as u64 + 10) {
            assert!(!t.re_read(k));
        }
        assert_eq!(t.reads.len(), MAX_READS);
        let body: serde_json::Map<String, Value> = (0..MAX_KEYS + 50)
            .map(|i| (format!("k{i}"), Value::from(format!("v{i}"))))
            .collect();
        t.learn_result(&Value::Object(body));
        assert_eq!(t.by_key.len(), MAX_KEYS);
        assert!(t.contradicts(&serde_json::json!({"k1": "other"})));
        assert!(!t.contradicts(&serde_json::json!({"k1": "v1"})));
        assert!(
            !t.contradicts(&serde_json::json!({"k1": "v2"})),
            "a value some result gave"
        );
        assert!(
            !t.contradicts(&serde_json::json!({"unseen_key": "x"})),
            "a key no result carried"
        );
    }
}
