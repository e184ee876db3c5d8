//! Deterministic uniforms for the randomized probability integral transform:
//! drawn from a hash of what is scored, so a replay scores exactly as live.

use super::hash::Fnv;

/// A deterministic uniform in (0, 1) from a 64-bit hash.
pub fn unit_from_hash(h: u64) -> f64 {
    ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// Deterministic U(0,1) for randomized PIT, from the session and what is scored.
pub fn pit_uniform(session_id: &str, what: &str, seq: u64) -> f64 {
    let mut h = Fnv::default();
    h.write(session_id.as_bytes());
    h.write(&[0]);
    h.write(what.as_bytes());
    h.write(&seq.to_le_bytes());
    unit_from_hash(h.finish())
}

/// The uniform shared by all of a session's features. One draw per session
/// (not per feature) breaks ties the same way for every feature, so two
/// features with the same ranks get the same score and a multivariate chart
/// sees no spurious spread between them; each feature's score stays exactly
/// N(0,1) on its own.
pub fn session_uniform(session_id: &str) -> f64 {
    pit_uniform(session_id, "session", 0)
}
