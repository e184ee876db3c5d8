//! Tool sequences: the Markov state of each agent action, and in-session
//! repetition (same call with same arguments, short tool cycles) that loop
//! detection calibrates against.

pub use crate::stats::hash::{Fnv, FnvState};
use serde_json::Value;
use std::collections::HashMap;

/// Markov state before the first action.
pub const START: &str = "<start>";
/// Markov state after the last action.
pub const END: &str = "<end>";
/// Markov state of a model call that asked for no tool (reasoning or answering without acting).
pub const REASON: &str = "<reason>";
/// Markov state of a tool the baseline never saw.
pub const NEW_TOOL: &str = "<new>";

/// Longest tool cycle loop detection looks for.
pub const MAX_CYCLE: usize = 4;

/// Cap on distinct (tool, args) keys tracked per session, so state stays bounded.
pub const MAX_CALL_KEYS: usize = 4096;

/// Hash of a string.
pub fn hash_str(s: &str) -> u64 {
    let mut h = Fnv::default();
    h.write(s.as_bytes());
    h.finish()
}

/// Hash of JSON arguments that ignores object key order.
pub fn hash_args(v: Option<&Value>) -> u64 {
    fn walk(v: &Value, h: &mut Fnv) {
        match v {
            Value::Null => h.write(b"n"),
            Value::Bool(b) => h.write(if *b { b"t" } else { b"f" }),
            Value::Number(n) => {
                h.write(b"#");
                h.write(n.to_string().as_bytes());
            }
            Value::String(s) => {
                h.write(b"s");
                h.write(&(s.len() as u64).to_le_bytes());
                h.write(s.as_bytes());
            }
            Value::Array(a) => {
                h.write(b"[");
                for x in a {
                    walk(x, h);
                }
                h.write(b"]");
            }
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                h.write(b"{");
                for k in keys {
                    h.write(&(k.len() as u64).to_le_bytes());
                    h.write(k.as_bytes());
                    walk(&m[k], h);
                }
                h.write(b"}");
            }
        }
    }
    let mut h = Fnv::default();
    if let Some(v) = v {
        walk(v, &mut h);
    }
    h.finish()
}

/// Hasher for keys that are already hashes (identity on the u64).
#[derive(Clone, Copy, Default)]
pub struct PreHashed(u64);

impl std::hash::Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Build hasher for [`PreHashed`] keys.
pub type PreHashedState = std::hash::BuildHasherDefault<PreHashed>;

/// Repetition seen at one tool call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopObs {
    /// How many times this exact (tool, args) call has now been made in the session.
    pub same_call: u32,
    /// For cycle length L = 1..=4 (index L-1): how many consecutive times the
    /// current cycle of L tools has now repeated (1 = no repetition).
    pub cycle_reps: [u32; MAX_CYCLE],
    /// The call's (tool, arguments) key, for other rules that compare calls.
    pub key: u64,
}

/// Streaming repetition tracker over one session's agent tool calls.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct LoopTracker {
    #[serde(with = "prehashed_map")]
    calls: HashMap<u64, u32, PreHashedState>,
    recent: [u64; 2 * MAX_CYCLE],
    n: usize,
    runs: [u32; MAX_CYCLE],
    /// Largest `same_call` so far.
    pub max_same_call: u32,
    /// Largest `cycle_reps` per cycle length so far.
    pub max_cycle_reps: [u32; MAX_CYCLE],
}

impl LoopTracker {
    /// Records one agent tool call.
    pub fn push(&mut self, tool: &str, args: Option<&Value>) -> LoopObs {
        let tool_h = hash_str(tool);
        let key = tool_h ^ hash_args(args).rotate_left(17);
        let full = self.calls.len() >= MAX_CALL_KEYS;
        let same_call = match self.calls.entry(key) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                *e.get_mut() += 1;
                *e.get()
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                if !full {
                    e.insert(1);
                }
                1
            }
        };
        let len = self.recent.len();
        self.recent[self.n % len] = tool_h;
        self.n += 1;
        let at = |back: usize| self.recent[(self.n - 1 - back) % len];
        let mut cycle_reps = [1u32; MAX_CYCLE];
        for l in 1..=MAX_CYCLE {
            let periodic = self.n > l && at(0) == at(l);
            // A cycle of length L >= 2 must hold two different tools, else it
            // is a shorter cycle (AAAA is period 1, not 2).
            let distinct = periodic && (l == 1 || (1..l).any(|j| at(j) != at(0)));
            self.runs[l - 1] = if periodic { self.runs[l - 1] + 1 } else { 0 };
            if periodic && distinct {
                cycle_reps[l - 1] = 1 + self.runs[l - 1] / l as u32;
            }
        }
        self.max_same_call = self.max_same_call.max(same_call);
        for (m, c) in self.max_cycle_reps.iter_mut().zip(cycle_reps) {
            *m = (*m).max(c);
        }
        LoopObs {
            same_call,
            cycle_reps,
            key,
        }
    }
}

mod prehashed_map {
    use super::PreHashedState;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::HashMap;

    pub fn serialize<S: Serializer>(m: &HashMap<u64, u32, PreHashedState>, s: S) -> Result<S::Ok, S::Error> {
        let mut v: Vec<(u64, u32)> = m.iter().map(|(k, v)| (*k, *v)).collect();
        v.sort_unstable();
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HashMap<u64, u32, PreHashedState>, D::Error> {
        Ok(Vec::<(u64, u32)>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn argument_hash_ignores_key_order_only() {
        assert_eq!(
            hash_args(Some(&json!({"a": 1, "b": [1, "x"]}))),
            hash_args(Some(&json!({"b": [1, "x"], "a": 1})))
        );
        assert_ne!(hash_args(Some(&json!({"a": 1}))), hash_args(Some(&json!({"a": 2}))));
        assert_ne!(
            hash_args(Some(&json!(["ab", "c"]))),
            hash_args(Some(&json!(["a", "bc"])))
        );
    }

    #[test]
    fn counts_same_calls_and_cycles() {
        let mut t = LoopTracker::default();
        let a = json!({"q": 1});
        let seq = ["A", "B", "A", "B", "A", "B", "C", "C", "C"];
        let obs: Vec<LoopObs> = seq.iter().map(|s| t.push(s, Some(&a))).collect();
        // ABABAB: the AB cycle repeats 3 times by the sixth call.
        assert_eq!(obs[5].cycle_reps[1], 3);
        assert_eq!(obs[5].same_call, 3);
        // CCC: period 1, three in a row; it is not counted as a 2-cycle.
        assert_eq!(obs[8].cycle_reps[0], 3);
        assert_eq!(obs[8].cycle_reps[1], 1);
        assert_eq!(t.max_cycle_reps, [3, 3, 1, 1]);
        assert_eq!(t.max_same_call, 3);
    }

    #[test]
    fn state_is_bounded() {
        let mut t = LoopTracker::default();
        for i in 0..(MAX_CALL_KEYS + 100) {
            t.push("search", Some(&json!(i)));
        }
        assert_eq!(t.calls.len(), MAX_CALL_KEYS);
    }
}
