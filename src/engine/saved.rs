//! Open sessions kept outside memory. A scorer given a [`SessionStore`]
//! bounds the sessions it holds (`Limits::max_open_sessions`): over the
//! bound, the longest-idle ones are written out as rows and dropped from
//! memory, and a session comes back the moment anything names it (a step,
//! an outcome, its idle close). The same rows make snapshots incremental:
//! [`Scorer::checkpoint`] writes only the sessions that changed since their
//! row, and the snapshot carries no session that has an up-to-date row: its
//! size and cost follow activity, not the number of open sessions.
//!
//! Rows are never overwritten: each has a fresh version, so the durable
//! snapshot's rows stay intact while newer ones are written. A row is
//! obsolete once a newer row or a close supersedes it; the list of obsolete
//! rows goes with the next snapshot, to be deleted in its transaction. So
//! at a restore the open sessions a snapshot does not carry are, per
//! session, the newest row no newer than the snapshot's version counter
//! ([`Scorer::adopt_saved`]); newer rows were written after it.

use super::{OpenSession, Scorer};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Steps after a failed eviction before the next try.
const EVICT_PAUSE_STEPS: usize = 100;

/// One session's state written out.
#[derive(Clone, Debug, PartialEq)]
pub struct StateRow {
    /// The session.
    pub session_id: String,
    /// Unique per row of this scorer (never reused for another state).
    pub version: u64,
    /// When it last received anything, log time ms (its idle close).
    pub last_seen_ms: i64,
    /// Input position of its latest step.
    pub last_pos: i64,
    /// The encoded session.
    pub state: Vec<u8>,
}

/// Where a scorer keeps sessions it does not hold in memory (the service's
/// store); injected so the scorer stays free of IO of its own.
pub trait SessionStore: Send {
    /// Writes rows; they must be readable by `load` once this returns.
    fn save(&mut self, rows: &[StateRow]) -> Result<(), String>;
    /// Reads one row.
    fn load(&mut self, session_id: &str, version: u64) -> Result<Vec<u8>, String>;
}

/// A session whose state is in a row: what the scorer remembers of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedRef {
    /// Row version.
    pub version: u64,
    /// When it last received anything, log time ms (idle closes).
    pub last_seen_ms: i64,
    /// Input position of its latest step.
    pub last_pos: i64,
}

/// The open sessions a snapshot carries inline: those without an up-to-date row.
pub(super) struct Unsaved<'a>(pub &'a HashMap<String, Box<OpenSession>>);

impl Serialize for Unsaved<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let inline = self.0.iter().filter(|(_, o)| o.needs_row());
        let mut m = s.serialize_map(Some(inline.clone().count()))?;
        for (k, v) in inline {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl OpenSession {
    /// Whether its state differs from its row (or it has none).
    pub(super) fn needs_row(&self) -> bool {
        self.changed || self.row.is_none()
    }

    /// Its row, when up to date.
    fn saved_ref(&self) -> Option<SavedRef> {
        self.row.filter(|_| !self.changed).map(|version| SavedRef {
            version,
            last_seen_ms: self.last_seen_ms,
            last_pos: self.last_pos,
        })
    }
}

impl Scorer {
    /// The same scorer keeping sessions in `store` beyond `max_open_sessions`
    /// and writing incremental snapshots through it.
    pub fn with_session_store(mut self, store: Box<dyn SessionStore>) -> Scorer {
        self.session_store = Some(store);
        self
    }

    /// Sessions open but held in the session store, not in memory.
    pub fn saved_sessions(&self) -> usize {
        self.saved.len()
    }

    /// Every row the scorer's state refers to (the rest of the store's rows are garbage).
    pub fn referenced_rows(&self) -> Vec<(String, u64)> {
        // Those out of memory, and those in memory whose row is up to date.
        self.saved
            .iter()
            .map(|(k, r)| (k.clone(), r.version))
            .chain(
                self.open
                    .iter()
                    .filter_map(|(k, o)| o.saved_ref().map(|r| (k.clone(), r.version))),
            )
            .collect()
    }

    /// The highest row version written (a restore adopts rows up to it).
    pub fn row_versions(&self) -> u64 {
        self.versions
    }

    /// After a restore: the open sessions the snapshot did not carry, from
    /// the session store (per session, its newest row up to [`Scorer::row_versions`]).
    pub fn adopt_saved(&mut self, refs: impl IntoIterator<Item = (String, SavedRef)>) {
        for (sid, r) in refs {
            if r.version <= self.versions && !self.open.contains_key(&sid) {
                self.saved.insert(sid, r);
            }
        }
    }

    /// Writes every open session that changed since its row, so the next
    /// snapshot leaves them out (a restore adopts their rows); returns the rows
    /// that snapshot makes obsolete (delete them when it is saved). On a
    /// write failure the sessions stay unsaved: the snapshot carries them.
    pub fn checkpoint(&mut self) -> Result<Vec<(String, u64)>, String> {
        if self.session_store.is_none() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = self
            .open
            .iter()
            .filter(|(_, o)| o.needs_row())
            .map(|(k, _)| k.clone())
            .collect();
        self.write_rows(&ids)?;
        self.evict_pause = 0;
        Ok(std::mem::take(&mut self.obsolete))
    }

    /// Writes the rows of these open sessions (those that need one).
    fn write_rows(&mut self, ids: &[String]) -> Result<(), String> {
        let mut rows = Vec::new();
        let mut next = self.versions;
        for id in ids {
            let Some(o) = self.open.get(id) else { continue };
            if !o.needs_row() {
                continue;
            }
            let state = rmp_serde::to_vec_named(&**o).map_err(|e| format!("cannot encode session {id}: {e}"))?;
            next += 1;
            rows.push(StateRow {
                session_id: id.clone(),
                version: next,
                last_seen_ms: o.last_seen_ms,
                last_pos: o.last_pos,
                state,
            });
        }
        if rows.is_empty() {
            return Ok(());
        }
        let store = self.session_store.as_mut().expect("checked by the callers");
        if let Err(e) = store.save(&rows) {
            self.stats.session_store_failures += 1;
            return Err(e);
        }
        self.versions = next;
        for r in rows {
            let o = self.open.get_mut(&r.session_id).expect("present");
            if let Some(old) = o.row.replace(r.version) {
                self.obsolete.push((r.session_id, old));
            }
            o.changed = false;
        }
        Ok(())
    }

    /// Over `max_open_sessions`: the longest-idle tenth of the open sessions
    /// (never `keep`) go to the session store. A failed write keeps them in
    /// memory and is retried a hundred steps later (or at the next checkpoint).
    pub(super) fn evict_over_cap(&mut self, keep: &str) {
        let cap = self.limits.max_open_sessions;
        if self.session_store.is_none() || self.open.len() <= cap {
            return;
        }
        if self.evict_pause > 0 {
            self.evict_pause -= 1;
            return;
        }
        let n = (cap / 10).max(1).min(self.open.len() - 1);
        let mut by_age: Vec<(i64, &String)> = self
            .open
            .iter()
            .filter(|(k, _)| k.as_str() != keep)
            .map(|(k, o)| (o.last_seen_ms, k))
            .collect();
        if by_age.len() > n {
            by_age.select_nth_unstable(n - 1);
            by_age.truncate(n);
        }
        let ids: Vec<String> = by_age.into_iter().map(|(_, k)| k.clone()).collect();
        if let Err(e) = self.write_rows(&ids) {
            self.last_store_error = Some(e);
            self.evict_pause = EVICT_PAUSE_STEPS;
            return;
        }
        for id in ids {
            let o = self.open.remove(&id).expect("present");
            let r = o.saved_ref().expect("written just now");
            self.buffered = self.buffered.saturating_sub(o.buffered);
            self.saved.insert(id, r);
            self.stats.sessions_evicted += 1;
        }
    }

    /// Brings a saved session back into memory; false when it is not saved
    /// or its row cannot be read (it stays saved, and the failure is counted).
    pub(super) fn load(&mut self, sid: &str) -> bool {
        let Some(r) = self.saved.get(sid).copied() else {
            return false;
        };
        let Some(store) = self.session_store.as_mut() else {
            self.stats.session_store_failures += 1;
            self.last_store_error = Some(format!("session {sid} is saved but the scorer has no session store"));
            return false;
        };
        let decoded = store.load(sid, r.version).and_then(|bytes| {
            rmp_serde::from_slice::<OpenSession>(&bytes)
                .map_err(|e| format!("session {sid} row {}: cannot decode: {e}", r.version))
        });
        match decoded {
            Ok(mut o) => {
                o.row = Some(r.version);
                o.changed = false;
                o.buffered = o.pending.values().map(crate::model::Step::approx_bytes).sum();
                self.buffered += o.buffered;
                self.saved.remove(sid);
                self.open.insert(sid.to_string(), Box::new(o));
                self.stats.sessions_restored += 1;
                true
            }
            Err(e) => {
                self.stats.session_store_failures += 1;
                self.last_store_error = Some(e);
                false
            }
        }
    }

    /// Why the latest write or read of the session store failed, if one did.
    pub fn last_store_error(&self) -> Option<&str> {
        self.last_store_error.as_deref()
    }
}
