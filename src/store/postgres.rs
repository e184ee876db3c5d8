//! The query [`Store`] in PostgreSQL (`--store postgres://…`): events,
//! closed sessions, the session listing, trace links, snapshots and saved
//! session states kept off the machine, for a replica whose disk is
//! disposable and, later, for several replicas sharing one store. The log
//! stays where `--log` puts it; only what the scorer derived lives here.
//!
//! Same contract as SQLite (the conformance suite runs on both): events
//! idempotent by id, a repeated closed session keeps its first close time,
//! listing updates leave absent fields alone. Connections come from a small
//! pool; a broken connection is dropped, not reused, and its error is a
//! retryable [`StoreError::Busy`].

use super::{
    Derived, EventPage, EventQuery, SessionPage, SessionQuery, SessionRow, SessionTraces, Snapshot, Store, StoreError,
    StoredSession,
};
use crate::detect::DriftEvent;
use crate::engine::saved::{SavedRef, StateRow};
use crate::model::{Outcome, OutcomeSource};
use postgres::{Client, GenericClient, NoTls, Row};
use std::sync::Mutex;

/// Version of the schema below, kept in `agentdrift_meta`.
const SCHEMA_VERSION: i64 = 1;

/// Tables, created if missing (under an advisory lock, so replicas starting
/// together do not race).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS agentdrift_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    rid BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    ts BIGINT NOT NULL,
    segment TEXT NOT NULL,
    detector TEXT NOT NULL,
    kind TEXT NOT NULL,
    session_id TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_segment ON events(segment, rid);
CREATE INDEX IF NOT EXISTS events_detector ON events(detector, rid);
CREATE INDEX IF NOT EXISTS events_session ON events(session_id, rid);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    segment TEXT,
    closed_ms BIGINT NOT NULL,
    body JSONB NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_segment ON sessions(segment, closed_ms);
CREATE TABLE IF NOT EXISTS trace_requests (
    trace_id TEXT NOT NULL,
    log_id BIGINT NOT NULL,
    PRIMARY KEY (trace_id, log_id)
);
CREATE TABLE IF NOT EXISTS trace_sessions (
    session_id TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    PRIMARY KEY (session_id, trace_id)
);
CREATE INDEX IF NOT EXISTS trace_sessions_trace ON trace_sessions(trace_id);
CREATE TABLE IF NOT EXISTS session_index (
    rid BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id TEXT NOT NULL UNIQUE,
    agent TEXT,
    segment TEXT,
    scored BOOLEAN,
    identity TEXT,
    status TEXT,
    steps BIGINT,
    outcome TEXT,
    outcome_source TEXT,
    first_ts BIGINT,
    last_ts BIGINT
);
CREATE INDEX IF NOT EXISTS session_index_agent ON session_index(agent, rid);
CREATE INDEX IF NOT EXISTS session_index_segment ON session_index(segment, rid);
CREATE TABLE IF NOT EXISTS session_states (
    session_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    last_pos BIGINT NOT NULL,
    state BYTEA NOT NULL,
    PRIMARY KEY (session_id, version)
);
CREATE TABLE IF NOT EXISTS snapshot (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    position BIGINT NOT NULL,
    baseline_id TEXT NOT NULL,
    state BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);
";

/// Connections kept for reuse.
const POOL: usize = 8;

/// The query store in a PostgreSQL database.
pub struct PgStore {
    config: postgres::Config,
    /// Where it is, for messages (no password).
    name: String,
    idle: Mutex<Vec<Client>>,
}

/// A PostgreSQL failure, classified: a full disk, a connection that failed
/// or broke (retry), or anything else.
fn pg(e: postgres::Error) -> StoreError {
    use postgres::error::SqlState;
    match e.code() {
        Some(c) if *c == SqlState::DISK_FULL => StoreError::Full(Box::new(e)),
        Some(c)
            if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::TOO_MANY_CONNECTIONS
                || *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW =>
        {
            StoreError::Busy(Box::new(e))
        }
        Some(_) => StoreError::Database(Box::new(e)),
        // No SQL state: the connection failed (retry), or a value did not convert.
        None if e.is_closed() || std::error::Error::source(&e).is_some_and(|c| c.is::<std::io::Error>()) => {
            StoreError::Busy(Box::new(e))
        }
        None => StoreError::Database(Box::new(e)),
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`, libpq keys such as
    /// `options=-csearch_path%3Dschema` allowed) and creates the tables if missing.
    pub fn open(url: &str) -> Result<PgStore, StoreError> {
        let config: postgres::Config = url.parse().map_err(|e: postgres::Error| StoreError::Open {
            path: redact(url),
            message: format!("not a PostgreSQL connection URL: {e}"),
        })?;
        let store = PgStore {
            config,
            name: redact(url),
            idle: Mutex::new(Vec::new()),
        };
        store.migrate().map_err(|e| StoreError::Open {
            path: store.name.clone(),
            message: e.to_string(),
        })?;
        Ok(store)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            // One creator at a time: CREATE … IF NOT EXISTS is not safe under concurrency.
            tx.execute("SELECT pg_advisory_xact_lock(7302615240)", &[])?;
            tx.batch_execute(SCHEMA)?;
            let found: Option<String> = tx
                .query_opt("SELECT value FROM agentdrift_meta WHERE key = 'schema_version'", &[])?
                .map(|r| r.get(0));
            tx.execute(
                "INSERT INTO agentdrift_meta (key, value) VALUES ('schema_version', $1) ON CONFLICT (key) DO NOTHING",
                &[&SCHEMA_VERSION.to_string()],
            )?;
            tx.commit()?;
            Ok(found)
        })
        .and_then(|found| match found.map(|v| v.parse::<i64>()) {
            Some(Ok(v)) if v > SCHEMA_VERSION => Err(StoreError::database(format!(
                "store schema version {v} is newer than this build ({SCHEMA_VERSION}); upgrade agentdrift"
            ))),
            Some(Err(e)) => Err(corrupt("agentdrift_meta.schema_version", e)),
            _ => Ok(()),
        })
    }

    /// Runs `f` on a pooled connection (a new one if none is idle); a
    /// connection that broke is not put back.
    fn with<T>(&self, f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>) -> Result<T, StoreError> {
        let pooled = self.idle.lock().ok().and_then(|mut p| p.pop());
        let mut c = match pooled {
            Some(c) if !c.is_closed() => c,
            _ => self
                .config
                .connect(NoTls)
                .map_err(|e| StoreError::Busy(format!("cannot connect to PostgreSQL at {}: {e}", self.name).into()))?,
        };
        let out = f(&mut c).map_err(pg);
        if !c.is_closed()
            && let Ok(mut p) = self.idle.lock()
            && p.len() < POOL
        {
            p.push(c);
        }
        out
    }

    /// Runs `f` in one transaction.
    fn in_tx<T>(
        &self,
        f: impl FnOnce(&mut postgres::Transaction) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let cred = &url[s + 3..at];
            let user = cred.split(':').next().unwrap_or("");
            format!("{}{user}@{}", &url[..s + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn insert_events_in(tx: &mut impl GenericClient, events: &[DriftEvent]) -> Result<Vec<DriftEvent>, postgres::Error> {
    let mut new = Vec::new();
    let q = tx.prepare(
        "INSERT INTO events (id, ts, segment, detector, kind, session_id, body) VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO NOTHING",
    )?;
    for e in events {
        let body = serde_json::to_string(e).expect("events serialise");
        let n = tx.execute(
            &q,
            &[
                &e.id,
                &e.ts,
                &e.segment.to_string(),
                &e.detector,
                &e.kind,
                &e.session_id,
                &body,
            ],
        )?;
        if n == 1 {
            new.push(e.clone());
        }
    }
    Ok(new)
}

/// Records closed sessions; a repeated one keeps its first close time.
fn insert_sessions_in(tx: &mut impl GenericClient, sessions: &[StoredSession]) -> Result<(), postgres::Error> {
    let q = tx.prepare(
        "INSERT INTO sessions (session_id, segment, closed_ms, body) VALUES ($1, $2, $3, CAST($4::text AS jsonb))
         ON CONFLICT (session_id) DO UPDATE SET segment = excluded.segment,
           body = excluded.body || jsonb_build_object('closed_ms', sessions.closed_ms)",
    )?;
    for s in sessions {
        let body = serde_json::to_string(s).expect("sessions serialise");
        tx.execute(
            &q,
            &[
                &s.closed.session_id,
                &s.closed.segment.as_ref().map(|k| k.to_string()),
                &s.closed_ms,
                &body,
            ],
        )?;
    }
    Ok(())
}

fn set_session_outcome_in(
    tx: &mut impl GenericClient,
    id: &str,
    outcome: Outcome,
    reward: Option<f64>,
    source: OutcomeSource,
) -> Result<(), postgres::Error> {
    tx.execute(
        "UPDATE sessions SET body = jsonb_set(jsonb_set(jsonb_set(body,
             '{closed,features,outcome}', to_jsonb($2::text)),
             '{closed,features,reward}', COALESCE(to_jsonb($3::float8), 'null'::jsonb)),
             '{closed,outcome_source}', to_jsonb($4::text))
         WHERE session_id = $1",
        &[&id, &outcome.as_str(), &reward, &source.as_str()],
    )?;
    tx.execute(
        "UPDATE session_index SET outcome = $2, outcome_source = $3 WHERE session_id = $1",
        &[&id, &outcome.as_str(), &source.as_str()],
    )?;
    Ok(())
}

fn link_requests_in(tx: &mut impl GenericClient, links: &[(String, i64)]) -> Result<(), postgres::Error> {
    let q = tx.prepare("INSERT INTO trace_requests (trace_id, log_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")?;
    for (trace, id) in links {
        tx.execute(&q, &[trace, id])?;
    }
    Ok(())
}

fn link_traces_in(tx: &mut impl GenericClient, links: &[(String, String)]) -> Result<(), postgres::Error> {
    let q = tx.prepare("INSERT INTO trace_sessions (session_id, trace_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")?;
    for (trace, session) in links {
        tx.execute(&q, &[session, trace])?;
    }
    Ok(())
}

fn upsert_session_rows_in(tx: &mut impl GenericClient, rows: &[SessionRow]) -> Result<(), postgres::Error> {
    let q = tx.prepare(
        "INSERT INTO session_index (session_id, agent, segment, scored, identity, status, steps, outcome, outcome_source, first_ts, last_ts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (session_id) DO UPDATE SET
           agent = COALESCE(excluded.agent, session_index.agent),
           segment = COALESCE(excluded.segment, session_index.segment),
           scored = COALESCE(excluded.scored, session_index.scored),
           identity = COALESCE(excluded.identity, session_index.identity),
           status = COALESCE(excluded.status, session_index.status),
           steps = COALESCE(excluded.steps, session_index.steps),
           outcome = COALESCE(excluded.outcome, session_index.outcome),
           outcome_source = COALESCE(excluded.outcome_source, session_index.outcome_source),
           first_ts = COALESCE(excluded.first_ts, session_index.first_ts),
           last_ts = COALESCE(excluded.last_ts, session_index.last_ts)",
    )?;
    for r in rows {
        tx.execute(
            &q,
            &[
                &r.session_id,
                &r.agent,
                &r.segment,
                &r.scored,
                &r.identity,
                &r.status,
                &r.steps.map(i64_of),
                &r.outcome.map(|o| o.as_str()),
                &r.outcome_source,
                &r.first_ts,
                &r.last_ts,
            ],
        )?;
    }
    Ok(())
}

/// The listing columns, in `SELECT` order from `at`.
const ROW_COLUMNS: &str =
    "session_id, agent, segment, scored, identity, status, steps, outcome, outcome_source, first_ts, last_ts";

fn session_row(r: &Row, at: usize) -> SessionRow {
    let outcome: Option<String> = r.get(at + 7);
    SessionRow {
        session_id: r.get(at),
        agent: r.get(at + 1),
        segment: r.get(at + 2),
        scored: r.get(at + 3),
        identity: r.get(at + 4),
        status: r.get(at + 5),
        steps: r.get::<_, Option<i64>>(at + 6).map(u64_of),
        outcome: outcome.and_then(|o| serde_json::from_value(serde_json::Value::String(o)).ok()),
        outcome_source: r.get(at + 8),
        first_ts: r.get(at + 9),
        last_ts: r.get(at + 10),
    }
}

fn decode_session(body: &str) -> Result<StoredSession, StoreError> {
    serde_json::from_str(body).map_err(|e| corrupt("stored session", e))
}

impl Store for PgStore {
    fn store_derived(&self, d: &Derived) -> Result<Vec<DriftEvent>, StoreError> {
        if d.is_empty() {
            return Ok(Vec::new());
        }
        self.in_tx(|tx| {
            link_traces_in(tx, &d.links)?;
            link_requests_in(tx, &d.request_links)?;
            upsert_session_rows_in(tx, &d.rows)?;
            let new = insert_events_in(tx, &d.events)?;
            insert_sessions_in(tx, &d.sessions)?;
            for (id, outcome, reward, source) in &d.outcomes {
                set_session_outcome_in(tx, id, *outcome, *reward, *source)?;
            }
            Ok(new)
        })
    }

    fn events(&self, q: &EventQuery) -> Result<EventPage, StoreError> {
        let limit = q.limit.clamp(1, 1000);
        let start = match (q.cursor, q.newest_first) {
            (Some(c), _) => c,
            (None, false) => 0,
            (None, true) => i64::MAX,
        };
        let sql = format!(
            "SELECT rid, body FROM events
             WHERE rid {} $1
               AND ($2::text IS NULL OR segment = $2)
               AND ($3::text IS NULL OR detector = $3 OR kind = $3)
               AND ($4::bigint IS NULL OR ts >= $4)
               AND ($5::text IS NULL OR session_id = $5)
             ORDER BY rid {} LIMIT $6",
            if q.newest_first { "<" } else { ">" },
            if q.newest_first { "DESC" } else { "ASC" },
        );
        let rows: Vec<(i64, String)> = self.with(|c| {
            Ok(c.query(
                &sql,
                &[
                    &start,
                    &q.segment,
                    &q.detector,
                    &q.since,
                    &q.session,
                    &(limit as i64 + 1),
                ],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
        })?;
        let more = rows.len() > limit;
        let rows = &rows[..rows.len().min(limit)];
        let events = rows
            .iter()
            .map(|(_, b)| serde_json::from_str(b).map_err(|e| corrupt("stored event", e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EventPage {
            events,
            next_cursor: if more { rows.last().map(|r| r.0) } else { None },
        })
    }

    fn event(&self, id: &str) -> Result<Option<DriftEvent>, StoreError> {
        let body: Option<String> = self.with(|c| {
            Ok(c.query_opt("SELECT body FROM events WHERE id = $1", &[&id])?
                .map(|r| r.get(0)))
        })?;
        body.map(|b| serde_json::from_str(&b).map_err(|e| corrupt("stored event", e)))
            .transpose()
    }

    fn session(&self, id: &str) -> Result<Option<StoredSession>, StoreError> {
        let body: Option<String> = self.with(|c| {
            Ok(
                c.query_opt("SELECT body::text FROM sessions WHERE session_id = $1", &[&id])?
                    .map(|r| r.get(0)),
            )
        })?;
        body.as_deref().map(decode_session).transpose()
    }

    fn segment_sessions(&self, segment: &str, limit: usize) -> Result<Vec<StoredSession>, StoreError> {
        let bodies: Vec<String> = self.with(|c| {
            Ok(c.query(
                "SELECT body::text FROM sessions WHERE segment = $1 ORDER BY closed_ms DESC, session_id LIMIT $2",
                &[&segment, &(limit as i64)],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
        })?;
        bodies.iter().map(|b| decode_session(b)).collect()
    }

    fn session_traces(&self, session_id: &str) -> Result<SessionTraces, StoreError> {
        self.with(|c| {
            let traces = c
                .query(
                    "SELECT trace_id FROM trace_sessions WHERE session_id = $1 ORDER BY trace_id",
                    &[&session_id],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let requests = c
                .query(
                    "SELECT DISTINCT r.log_id FROM trace_sessions t JOIN trace_requests r ON r.trace_id = t.trace_id
                     WHERE t.session_id = $1 ORDER BY 1",
                    &[&session_id],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            Ok(SessionTraces { traces, requests })
        })
    }

    fn trace_sessions(&self, trace_id: &str) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            Ok(c.query(
                "SELECT session_id FROM trace_sessions WHERE trace_id = $1 ORDER BY 1",
                &[&trace_id],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
        })
    }

    fn sessions_page(&self, q: &SessionQuery) -> Result<SessionPage, StoreError> {
        let limit = q.limit.clamp(1, 1000);
        let sql = format!(
            "SELECT rid, {ROW_COLUMNS} FROM session_index
             WHERE rid > $1
               AND ($2::text IS NULL OR agent = $2)
               AND ($3::text IS NULL OR segment = $3)
               AND ($4::boolean IS NULL OR scored = $4)
               AND ($5::bigint IS NULL OR last_ts >= $5)
             ORDER BY rid LIMIT $6"
        );
        let rows: Vec<(i64, SessionRow)> = self.with(|c| {
            Ok(c.query(
                &sql,
                &[
                    &q.cursor.unwrap_or(0),
                    &q.agent,
                    &q.segment,
                    &q.scored,
                    &q.since,
                    &(limit as i64 + 1),
                ],
            )?
            .iter()
            .map(|r| (r.get(0), session_row(r, 1)))
            .collect())
        })?;
        let more = rows.len() > limit;
        let next_cursor = if more { rows.get(limit - 1).map(|r| r.0) } else { None };
        Ok(SessionPage {
            sessions: rows.into_iter().take(limit).map(|r| r.1).collect(),
            next_cursor,
        })
    }

    fn session_row(&self, id: &str) -> Result<Option<SessionRow>, StoreError> {
        let sql = format!("SELECT {ROW_COLUMNS} FROM session_index WHERE session_id = $1");
        self.with(|c| Ok(c.query_opt(&sql, &[&id])?.map(|r| session_row(&r, 0))))
    }

    fn save_snapshot(&self, s: &Snapshot) -> Result<(), StoreError> {
        self.in_tx(|tx| {
            tx.execute(
                "INSERT INTO snapshot (one, position, baseline_id, state) VALUES (1, $1, $2, $3)
                 ON CONFLICT (one) DO UPDATE SET position = excluded.position, baseline_id = excluded.baseline_id,
                   state = excluded.state",
                &[&s.position, &s.baseline_id, &s.state],
            )?;
            let del = tx.prepare("DELETE FROM session_states WHERE session_id = $1 AND version = $2")?;
            for (id, v) in &s.obsolete {
                tx.execute(&del, &[id, &i64_of(*v)])?;
            }
            Ok(())
        })
    }

    fn snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        self.with(|c| {
            Ok(
                c.query_opt("SELECT position, baseline_id, state FROM snapshot WHERE one = 1", &[])?
                    .map(|r| Snapshot {
                        position: r.get(0),
                        baseline_id: r.get(1),
                        state: r.get(2),
                        obsolete: Vec::new(),
                    }),
            )
        })
    }

    fn save_session_states(&self, rows: &[StateRow]) -> Result<(), StoreError> {
        self.in_tx(|tx| {
            let ins = tx.prepare(
                "INSERT INTO session_states (session_id, version, last_seen_ms, last_pos, state)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (session_id, version) DO UPDATE SET last_seen_ms = excluded.last_seen_ms,
                   last_pos = excluded.last_pos, state = excluded.state",
            )?;
            for r in rows {
                tx.execute(
                    &ins,
                    &[
                        &r.session_id,
                        &i64_of(r.version),
                        &r.last_seen_ms,
                        &r.last_pos,
                        &r.state,
                    ],
                )?;
            }
            Ok(())
        })
    }

    fn session_state(&self, session_id: &str, version: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|c| {
            Ok(c.query_opt(
                "SELECT state FROM session_states WHERE session_id = $1 AND version = $2",
                &[&session_id, &i64_of(version)],
            )?
            .map(|r| r.get(0)))
        })
    }

    fn session_state_refs(&self, max_version: u64) -> Result<Vec<(String, SavedRef)>, StoreError> {
        self.with(|c| {
            Ok(c.query(
                "SELECT DISTINCT ON (session_id) session_id, version, last_seen_ms, last_pos FROM session_states
                 WHERE version <= $1 ORDER BY session_id, version DESC",
                &[&i64_of(max_version)],
            )?
            .iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    SavedRef {
                        version: u64_of(r.get(1)),
                        last_seen_ms: r.get(2),
                        last_pos: r.get(3),
                    },
                )
            })
            .collect())
        })
    }

    fn retain_session_states(&self, keep: &[(String, u64)]) -> Result<u64, StoreError> {
        let ids: Vec<&str> = keep.iter().map(|(s, _)| s.as_str()).collect();
        let versions: Vec<i64> = keep.iter().map(|(_, v)| i64_of(*v)).collect();
        self.in_tx(|tx| {
            tx.execute(
                "DELETE FROM session_states s WHERE NOT EXISTS (
                   SELECT 1 FROM unnest($1::text[], $2::bigint[]) AS k(session_id, version)
                   WHERE k.session_id = s.session_id AND k.version = s.version)",
                &[&ids, &versions],
            )
        })
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.with(|c| c.simple_query("SELECT 1").map(|_| ()))
    }

    fn events_after(&self, after: i64, limit: usize) -> Result<Vec<(i64, DriftEvent)>, StoreError> {
        let rows = self.with(|c| {
            c.query(
                "SELECT rid, body FROM events WHERE rid > $1 ORDER BY rid LIMIT $2",
                &[&after, &(limit.clamp(1, 1000) as i64)],
            )
        })?;
        rows.iter()
            .map(|r| {
                let rid: i64 = r.try_get(0).map_err(pg)?;
                let body: String = r.try_get(1).map_err(pg)?;
                Ok((
                    rid,
                    serde_json::from_str(&body).map_err(|e| corrupt("stored event", e))?,
                ))
            })
            .collect()
    }

    fn events_count_after(&self, after: i64) -> Result<u64, StoreError> {
        let n: i64 = self.with(|c| {
            c.query_one("SELECT COUNT(*) FROM events WHERE rid > $1", &[&after])?
                .try_get(0)
        })?;
        Ok(n.max(0) as u64)
    }

    fn last_event_position(&self) -> Result<i64, StoreError> {
        self.with(|c| {
            c.query_one("SELECT COALESCE(MAX(rid), 0)::BIGINT FROM events", &[])?
                .try_get(0)
        })
    }

    fn cursor(&self, name: &str) -> Result<Option<i64>, StoreError> {
        self.with(|c| {
            c.query_opt("SELECT position FROM cursors WHERE name = $1", &[&name])?
                .map(|r| r.try_get(0))
                .transpose()
        })
    }

    fn set_cursor(&self, name: &str, position: i64) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO cursors (name, position) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                &[&name, &position],
            )
            .map(drop)
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::conformance::StoreBackend;

    /// The test server (pre-started on every development and CI machine).
    pub const TEST_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

    /// A PostgreSQL store in a schema of its own, dropped at the end.
    pub struct PgBackend {
        schema: String,
        store: Option<PgStore>,
    }

    fn url_in(schema: &str) -> String {
        format!("{TEST_URL}?options=-csearch_path%3D{schema}")
    }

    impl PgBackend {
        /// A fresh, empty store.
        pub fn fresh() -> PgBackend {
            let schema = format!("agentdrift_test_{:016x}", rand::random::<u64>());
            let mut admin = postgres::Client::connect(TEST_URL, NoTls).unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is not answering at {TEST_URL} ({e}). Start it (e.g. `service postgresql start`, \
                     or `docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust -e POSTGRES_DB=test postgres:16`)"
                )
            });
            admin
                .batch_execute(&format!("CREATE SCHEMA {schema}"))
                .expect("create schema");
            let store = PgStore::open(&url_in(&schema)).expect("open");
            PgBackend {
                schema,
                store: Some(store),
            }
        }
    }

    impl Drop for PgBackend {
        fn drop(&mut self) {
            self.store = None;
            if let Ok(mut admin) = postgres::Client::connect(TEST_URL, NoTls) {
                let _ = admin.batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema));
            }
        }
    }

    impl StoreBackend for PgBackend {
        fn store(&self) -> &dyn Store {
            self.store.as_ref().expect("open")
        }
        fn reopen(&mut self) {
            self.store = None;
            self.store = Some(PgStore::open(&url_in(&self.schema)).expect("reopen"));
        }
    }

    crate::store_suite!(postgres_store, crate::store::postgres::tests::PgBackend::fresh);

    #[test]
    fn the_password_never_reaches_a_message() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u@h:5432/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        let e = PgStore::open("postgres://u:secret@127.0.0.1:1/db")
            .err()
            .expect("nothing listens on port 1");
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
    }

    #[test]
    fn a_newer_schema_is_refused_naming_both_versions() {
        let b = PgBackend::fresh();
        let mut admin = postgres::Client::connect(&url_in(&b.schema), NoTls).unwrap();
        admin
            .execute(
                "UPDATE agentdrift_meta SET value = '99' WHERE key = 'schema_version'",
                &[],
            )
            .unwrap();
        let e = PgStore::open(&url_in(&b.schema)).err().expect("refused");
        assert!(e.to_string().contains("99") && e.to_string().contains("upgrade"), "{e}");
    }
}
