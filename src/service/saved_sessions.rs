//! The scorer's session store over the service's store: open sessions over
//! `max_open_sessions`, and the rows incremental snapshots name.

use crate::engine::saved::{SessionStore, StateRow};
use crate::store::Store;
use std::sync::Arc;

/// Saved session states in the service's store.
pub struct StoreSessions(pub Arc<dyn Store>);

impl SessionStore for StoreSessions {
    fn save(&mut self, rows: &[StateRow]) -> Result<(), String> {
        self.0.save_session_states(rows).map_err(|e| e.to_string())
    }

    fn load(&mut self, session_id: &str, version: u64) -> Result<Vec<u8>, String> {
        match self.0.session_state(session_id, version) {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => Err(format!(
                "session {session_id}: its saved state (row {version}) is missing"
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}
