//! The writer thread: the only place that writes. Appends from concurrent
//! requests that arrive while a commit runs are grouped into the next
//! transaction (group commit). A second thread makes commits durable
//! (`Store::sync`) while the writer goes on committing, and only then
//! answers each request and passes its log entries to the engine, in
//! commit order (pipelined group commit).

use super::messages::{EngineMsg, WriteMsg};
use super::metrics::Metrics;
use crate::detect::DriftEvent;
use crate::store::{Appended, Log, LogEntry, NewRecord, Storage, StoreError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Instant;
use tokio::sync::{broadcast, oneshot};

/// Largest group of steps committed in one transaction.
const MAX_GROUP_STEPS: usize = 50_000;

/// Sends work to the writer.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<WriteMsg>,
    failed: Arc<AtomicBool>,
    snapshot_error: Arc<std::sync::Mutex<Option<String>>>,
}

impl WriterHandle {
    /// Appends records and waits until they are durable.
    pub async fn append(&self, records: Vec<NewRecord>, received_ms: i64) -> Result<Appended, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(WriteMsg::Append {
                records,
                received_ms,
                reply,
            })
            .map_err(|_| StoreError::Stopped("the writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Stopped("the writer has stopped".into()))?
    }

    /// Why the latest snapshot could not be saved (`None`: it was).
    pub fn snapshot_error(&self) -> Option<String> {
        self.snapshot_error.lock().ok().and_then(|e| e.clone())
    }

    /// Whether appends are refused (a flush to disk failed).
    pub fn refusing(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Queues other work (never blocks).
    pub fn send(&self, msg: WriteMsg) {
        let _ = self.tx.send(msg);
    }

    /// Drains and stops the writer.
    pub fn shutdown_blocking(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(WriteMsg::Shutdown(tx)).is_ok() {
            let _ = rx.blocking_recv();
        }
    }
}

/// Starts the writer thread.
pub fn spawn(
    storage: Storage,
    engine: mpsc::SyncSender<EngineMsg>,
    events: broadcast::Sender<Arc<DriftEvent>>,
    metrics: Arc<Metrics>,
) -> (WriterHandle, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<WriteMsg>();
    let failed = Arc::new(AtomicBool::new(false));
    let snapshot_error = Arc::new(std::sync::Mutex::new(None));
    let (f, se) = (failed.clone(), snapshot_error.clone());
    let handle = std::thread::Builder::new()
        .name("agentdrift-writer".into())
        .spawn(move || run(storage, rx, engine, events, metrics, f, se))
        .expect("spawn the writer thread");
    (
        WriterHandle {
            tx,
            failed,
            snapshot_error,
        },
        handle,
    )
}

type Pending = (usize, usize, oneshot::Sender<Result<Appended, StoreError>>);
type Reply = (oneshot::Sender<Result<Appended, StoreError>>, Appended);

/// Committed work waiting for the sync that makes it durable, in commit order.
enum Committed {
    /// Appended steps: the answers to send and the entries for the engine.
    Steps {
        replies: Vec<Reply>,
        entries: Vec<LogEntry>,
    },
    /// Logged trace settles, for the engine.
    Settles(Vec<LogEntry>),
    /// A logged idle close, for the engine.
    Close {
        /// Log position.
        id: i64,
        /// Position the engine had processed when it decided.
        after: i64,
        /// When it decided.
        received_ms: i64,
        /// Session.
        session_id: String,
    },
    /// Everything before this is handled: answer and stop.
    Shutdown(oneshot::Sender<()>),
}

fn run(
    storage: Storage,
    rx: mpsc::Receiver<WriteMsg>,
    engine: mpsc::SyncSender<EngineMsg>,
    events: broadcast::Sender<Arc<DriftEvent>>,
    metrics: Arc<Metrics>,
    failed: Arc<AtomicBool>,
    snapshot_error: Arc<std::sync::Mutex<Option<String>>>,
) {
    let (synced_tx, synced_rx) = mpsc::channel::<Committed>();
    let syncer = {
        let (log, metrics, failed) = (storage.log.clone(), metrics.clone(), failed.clone());
        std::thread::Builder::new()
            .name("agentdrift-sync".into())
            .spawn(move || sync_loop(log.as_ref(), synced_rx, engine, &metrics, &failed))
            .expect("spawn the sync thread")
    };
    let (log, store) = (storage.log.as_ref(), storage.store.as_ref());
    let mut carry: Option<WriteMsg> = None;
    let mut unsaved_obsolete: Vec<(String, u64)> = Vec::new();
    loop {
        let msg = match carry.take() {
            Some(m) => m,
            None => match rx.recv() {
                Ok(m) => m,
                Err(_) => break,
            },
        };
        match msg {
            WriteMsg::Append {
                records,
                received_ms,
                reply,
            } => {
                // Group every append already waiting.
                let mut all = records;
                let mut pending: Vec<Pending> = vec![(0, all.len(), reply)];
                let mut when = received_ms;
                while all.len() < MAX_GROUP_STEPS {
                    match rx.try_recv() {
                        Ok(WriteMsg::Append {
                            records,
                            received_ms,
                            reply,
                        }) => {
                            let start = all.len();
                            all.extend(records);
                            pending.push((start, all.len(), reply));
                            when = when.max(received_ms);
                        }
                        Ok(other) => {
                            carry = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if failed.load(Ordering::SeqCst) {
                    for (_, _, reply) in pending {
                        let _ = reply.send(Err(StoreError::SyncFailed(SYNC_FAILED.into())));
                    }
                    continue;
                }
                commit_group(log, all, pending, when, &metrics, &synced_tx);
            }
            WriteMsg::Close {
                session_id,
                after,
                decided_ms,
            } => match log.append_close(&session_id, after, decided_ms) {
                Ok(id) => {
                    let _ = synced_tx.send(Committed::Close {
                        id,
                        after,
                        received_ms: decided_ms,
                        session_id,
                    });
                }
                Err(e) => tracing::error!(error = %e, "cannot log an idle close"),
            },
            WriteMsg::Settle {
                trace_ids,
                after,
                decided_ms,
            } => match log.append_settles(&trace_ids, after, decided_ms) {
                Ok(ids) => {
                    let entries = ids
                        .into_iter()
                        .zip(trace_ids)
                        .map(|(id, trace_id)| LogEntry::Settle {
                            id,
                            after,
                            received_ms: decided_ms,
                            trace_id,
                        })
                        .collect();
                    let _ = synced_tx.send(Committed::Settles(entries));
                }
                Err(e) => tracing::error!(error = %e, "cannot log trace settles"),
            },
            WriteMsg::Persist(p) => {
                // Everything the engine queued meanwhile goes in the same transaction.
                let mut d = *p;
                loop {
                    match rx.try_recv() {
                        Ok(WriteMsg::Persist(more)) => d.merge(*more),
                        Ok(other) => {
                            carry = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                match store.store_derived(&d) {
                    Ok(new) => {
                        for e in new {
                            metrics.event(&e);
                            let _ = events.send(Arc::new(e));
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot store what the engine derived (events, sessions)"),
                }
            }
            WriteMsg::Snapshot(mut s) => {
                // Rows a failed snapshot should have deleted go with the next one:
                // a restore would otherwise find a closed session's row.
                s.obsolete.append(&mut unsaved_obsolete);
                let result = store.save_snapshot(&s);
                if let Err(e) = &result {
                    tracing::error!(error = %e, "cannot save the scorer snapshot");
                    unsaved_obsolete = s.obsolete;
                }
                if let Ok(mut slot) = snapshot_error.lock() {
                    *slot = result.err().map(|e| e.to_string());
                }
            }
            WriteMsg::Shutdown(done) => {
                // Everything queued before the shutdown has been committed
                // (FIFO); the sync thread answers once it is durable.
                let _ = synced_tx.send(Committed::Shutdown(done));
                break;
            }
        }
    }
    drop(synced_tx);
    let _ = syncer.join();
}

/// Commits a group of appends in one transaction and hands it to the sync
/// thread. When the group fails for a reason other than a full disk or a
/// passing shortage, each request is committed alone, so only the request
/// whose data fails gets the error (one client's bad data never fails another's).
fn commit_group(
    log: &dyn Log,
    all: Vec<NewRecord>,
    pending: Vec<Pending>,
    when: i64,
    metrics: &Metrics,
    synced_tx: &mpsc::Sender<Committed>,
) {
    let t0 = Instant::now();
    let result = log.append(&all, when);
    metrics.observe_commit(t0.elapsed().as_secs_f64(), all.len());
    match result {
        Ok(app) => {
            let replies = pending
                .into_iter()
                .map(|(start, end, reply)| {
                    let stored: Vec<_> = app
                        .stored
                        .iter()
                        .filter(|x| x.index >= start && x.index < end)
                        .map(|x| crate::store::Stored {
                            index: x.index - start,
                            id: x.id,
                        })
                        .collect();
                    let duplicates = (end - start) - stored.len();
                    (reply, Appended { stored, duplicates })
                })
                .collect();
            // The records move on to the engine (no copies): `stored` is in input order.
            let mut records = all.into_iter().enumerate();
            let entries: Vec<LogEntry> = app
                .stored
                .iter()
                .filter_map(|x| {
                    let (_, r) = records.find(|(j, _)| *j == x.index)?;
                    entry_of(r, x.id, when)
                })
                .collect();
            let _ = synced_tx.send(Committed::Steps { replies, entries });
        }
        Err(e) if pending.len() > 1 && matches!(e, StoreError::Database(_) | StoreError::Corrupt(_)) => {
            tracing::warn!(error = %e, requests = pending.len(), "a group commit failed; committing its requests one by one");
            metrics.commit_retries.inc();
            let mut all = all;
            // Split back into requests (from the end, so indices stay valid).
            let mut parts: Vec<(Vec<NewRecord>, Pending)> = Vec::with_capacity(pending.len());
            for (start, end, reply) in pending.into_iter().rev() {
                let records = all.split_off(start);
                parts.push((records, (0, end - start, reply)));
            }
            for (records, p) in parts.into_iter().rev() {
                commit_group(log, records, vec![p], when, metrics, synced_tx);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "append failed");
            // Each request gets the same failure: its kind, with the cause's words (not the
            // kind's sentence again, which the answer adds).
            let reason = std::error::Error::source(&e).map_or_else(|| e.to_string(), |c| c.to_string());
            let kind = |msg: String| -> StoreError {
                match &e {
                    StoreError::Full(_) => StoreError::Full(msg.into()),
                    StoreError::Busy(_) => StoreError::Busy(msg.into()),
                    StoreError::SyncFailed(_) => StoreError::SyncFailed(msg.into()),
                    _ => StoreError::database(msg),
                }
            };
            for (_, _, reply) in pending {
                let _ = reply.send(Err(kind(reason.clone())));
            }
        }
    }
}

/// The log entry an appended record becomes.
fn entry_of(r: NewRecord, id: i64, received_ms: i64) -> Option<LogEntry> {
    Some(match r {
        NewRecord::Step(n) => LogEntry::Step {
            id,
            received_ms,
            step: n.step,
        },
        NewRecord::Otlp { request, records, .. } => LogEntry::Otlp {
            id,
            received_ms,
            request,
            records: Some(records),
        },
        NewRecord::Outcome { report, .. } => LogEntry::Outcome {
            id,
            received_ms,
            report,
        },
    })
}

/// Why appends fail after a failed flush.
const SYNC_FAILED: &str =
    "the store could not flush to disk, so nothing more is acknowledged; restart the service to recover from the log";

/// Makes committed work durable and only then answers it and passes it
/// to the engine, in commit order. One flush covers every commit that
/// arrived while the previous flush ran.
fn sync_loop(
    log: &dyn Log,
    rx: mpsc::Receiver<Committed>,
    engine: mpsc::SyncSender<EngineMsg>,
    metrics: &Metrics,
    failed: &AtomicBool,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let t0 = Instant::now();
        let synced = log.sync();
        metrics.observe_sync(t0.elapsed().as_secs_f64());
        match &synced {
            // After a failed fsync the kernel may have dropped the dirty
            // pages, so nothing later can be promised durable either.
            Err(e @ StoreError::SyncFailed(_)) => {
                tracing::error!(error = %e, "flushing the store failed; appends are refused from now on");
                failed.store(true, Ordering::SeqCst);
            }
            // Not even started (no file descriptor to open the WAL with): the
            // commits stay unacknowledged, clients retry, nothing is poisoned.
            Err(e) => tracing::warn!(error = %e, "could not flush the store; those requests are asked to retry"),
            Ok(()) => {}
        }
        for item in batch {
            match item {
                Committed::Steps { replies, entries } => {
                    if !entries.is_empty() {
                        // Blocks when the engine lags: backpressure reaches the requests.
                        let _ = engine.send(EngineMsg::Log(entries));
                    }
                    for (reply, appended) in replies {
                        let answer = match &synced {
                            Ok(()) => Ok(appended),
                            Err(e @ StoreError::SyncFailed(_)) => {
                                Err(StoreError::SyncFailed(format!("{SYNC_FAILED}: {e}").into()))
                            }
                            Err(e) => Err(StoreError::Busy(e.to_string().into())),
                        };
                        let _ = reply.send(answer);
                    }
                }
                Committed::Close {
                    id,
                    after,
                    received_ms,
                    session_id,
                } => {
                    let _ = engine.send(EngineMsg::Log(vec![LogEntry::Close {
                        id,
                        after,
                        received_ms,
                        session_id,
                    }]));
                }
                Committed::Settles(entries) => {
                    let _ = engine.send(EngineMsg::Log(entries));
                }
                Committed::Shutdown(done) => {
                    let _ = done.send(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Step, StepKind};
    use crate::store::sqlite::SqliteStore;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Op {
        Commit,
        SyncStart,
        SyncEnd,
    }

    /// SQLite with a slow, recorded (and optionally failing) flush.
    struct Recording {
        inner: Arc<SqliteStore>,
        clock: Arc<AtomicU64>,
        log: Mutex<Vec<(u64, Op)>>,
        fail_sync: AtomicBool,
        /// Flushes fail as when the WAL cannot be opened for lack of descriptors.
        fail_open: AtomicBool,
    }

    impl Recording {
        fn note(&self, op: Op) {
            let t = self.clock.fetch_add(1, Ordering::SeqCst);
            self.log.lock().unwrap().push((t, op));
        }
        fn ops(&self) -> Vec<(u64, Op)> {
            self.log.lock().unwrap().clone()
        }
    }

    impl Log for Recording {
        fn append(&self, records: &[NewRecord], received_ms: i64) -> Result<Appended, StoreError> {
            let out = self.inner.append(records, received_ms);
            self.note(Op::Commit);
            out
        }
        fn sync(&self) -> Result<(), StoreError> {
            self.note(Op::SyncStart);
            std::thread::sleep(Duration::from_millis(150));
            let out = if self.fail_sync.load(Ordering::SeqCst) {
                Err(StoreError::SyncFailed("injected fsync failure".into()))
            } else if self.fail_open.load(Ordering::SeqCst) {
                Err(crate::store::sqlite::classify_io(
                    "open",
                    std::path::Path::new("agentdrift.sqlite3-wal"),
                    std::io::Error::from_raw_os_error(24),
                ))
            } else {
                self.inner.sync()
            };
            self.note(Op::SyncEnd);
            out
        }
        fn append_close(&self, session_id: &str, after: i64, decided_ms: i64) -> Result<i64, StoreError> {
            self.inner.append_close(session_id, after, decided_ms)
        }
        fn append_settles(&self, trace_ids: &[String], after: i64, decided_ms: i64) -> Result<Vec<i64>, StoreError> {
            self.inner.append_settles(trace_ids, after, decided_ms)
        }
        fn log_after(&self, position: i64, limit: usize) -> Result<Vec<LogEntry>, StoreError> {
            self.inner.log_after(position, limit)
        }
        fn requests(&self, positions: &[i64]) -> Result<Vec<crate::store::OtlpRequest>, StoreError> {
            self.inner.requests(positions)
        }
        fn session_steps(&self, session_id: &str) -> Result<Vec<crate::store::RawStep>, StoreError> {
            self.inner.session_steps(session_id)
        }
        fn correlated_sessions(&self, correlation_id: &str) -> Result<Vec<String>, StoreError> {
            Log::correlated_sessions(self.inner.as_ref(), correlation_id)
        }
        fn step_count(&self) -> Result<u64, StoreError> {
            self.inner.step_count()
        }
        fn ping(&self) -> Result<(), StoreError> {
            Log::ping(self.inner.as_ref())
        }
    }

    type Answer = oneshot::Receiver<Result<Appended, StoreError>>;

    fn append(w: &WriterHandle, session: &str) -> Answer {
        let (reply, rx) = oneshot::channel();
        let step = Step::new(session, 0, 1, StepKind::Llm, "agent");
        w.send(WriteMsg::Append {
            records: vec![NewRecord::Step(crate::store::NewStep {
                raw: serde_json::to_string(&step).unwrap(),
                step,
            })],
            received_ms: 1,
            reply,
        });
        rx
    }

    fn wait_for(store: &Recording, n: usize, op: Op) {
        for _ in 0..500 {
            if store.ops().iter().filter(|x| x.1 == op).count() >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("no {op:?} #{n}: {:?}", store.ops());
    }

    fn setup() -> (
        tempfile::TempDir,
        Arc<Recording>,
        WriterHandle,
        mpsc::Receiver<EngineMsg>,
        Arc<AtomicU64>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(AtomicU64::new(0));
        let inner = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let store = Arc::new(Recording {
            inner: inner.clone(),
            clock: clock.clone(),
            log: Mutex::new(Vec::new()),
            fail_sync: AtomicBool::new(false),
            fail_open: AtomicBool::new(false),
        });
        let (engine_tx, engine_rx) = mpsc::sync_channel(64);
        let (events, _) = broadcast::channel(16);
        let storage = Storage {
            log: store.clone(),
            store: inner,
        };
        let (w, _thread) = spawn(storage, engine_tx, events, Arc::new(Metrics::new()));
        (dir, store, w, engine_rx, clock)
    }

    fn logged_sessions(msg: EngineMsg) -> Vec<String> {
        match msg {
            EngineMsg::Log(entries) => entries
                .into_iter()
                .map(|e| match e {
                    LogEntry::Step { step, .. } => step.session_id,
                    LogEntry::Close { session_id, .. } => session_id,
                    other => panic!("unexpected {other:?}"),
                })
                .collect(),
            _ => panic!("expected log entries"),
        }
    }

    #[test]
    fn acknowledgements_wait_for_a_flush_that_began_after_their_commit_while_commits_go_on() {
        let (_dir, store, w, engine, clock) = setup();
        let first = append(&w, "s1");
        wait_for(&store, 1, Op::SyncStart);
        // These commit while the first flush is still running.
        let second = append(&w, "s2");
        let third = append(&w, "s3");
        for _ in 0..500 {
            if store.step_count().unwrap() == 3 {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let acked = |rx: Answer| {
            let a = rx.blocking_recv().unwrap().unwrap();
            (clock.fetch_add(1, Ordering::SeqCst), a)
        };
        let (t1, a1) = acked(first);
        let (t2, a2) = acked(second);
        let (t3, a3) = acked(third);
        assert_eq!((a1.stored.len(), a2.stored.len(), a3.stored.len()), (1, 1, 1));
        let ops = store.ops();
        let at = |op: Op, n: usize| ops.iter().filter(|x| x.1 == op).nth(n).unwrap().0;
        let last_commit = ops.iter().rfind(|x| x.1 == Op::Commit).unwrap().0;
        // Pipelining: s2 and s3 committed (in one or two transactions)
        // while flush 1 ran, and one more flush covered them.
        assert!(last_commit < at(Op::SyncEnd, 0), "{ops:?}");
        assert_eq!(ops.iter().filter(|x| x.1 == Op::SyncStart).count(), 2, "{ops:?}");
        // Durability before acknowledgement: each ack follows the end of a
        // flush that started after its commit.
        assert!(at(Op::Commit, 0) < at(Op::SyncStart, 0) && at(Op::SyncEnd, 0) < t1);
        assert!(
            last_commit < at(Op::SyncStart, 1) && at(Op::SyncEnd, 1) < t2.min(t3),
            "{ops:?}"
        );
        // The engine gets the entries after the flush, in commit order.
        let mut seen = Vec::new();
        while let Ok(msg) = engine.recv_timeout(Duration::from_millis(200)) {
            seen.extend(logged_sessions(msg));
        }
        assert_eq!(seen, ["s1", "s2", "s3"]);
        let (done, rx) = oneshot::channel();
        w.send(WriteMsg::Shutdown(done));
        rx.blocking_recv().unwrap();
    }

    #[test]
    fn a_descriptor_shortage_at_a_flush_asks_to_retry_and_never_poisons_the_store() {
        let (_dir, store, w, _engine, _clock) = setup();
        store.fail_open.store(true, Ordering::SeqCst);
        let err = append(&w, "s1").blocking_recv().unwrap().unwrap_err();
        assert!(matches!(err, StoreError::Busy(_)), "{err}");
        assert!(err.to_string().contains("Too many open files"), "{err}");
        assert!(!w.refusing(), "a shortage of descriptors is not a failed fsync");
        // Once descriptors are back, appends are acknowledged again.
        store.fail_open.store(false, Ordering::SeqCst);
        let ok = append(&w, "s2").blocking_recv().unwrap().unwrap();
        assert_eq!(ok.stored.len(), 1);
    }

    #[test]
    fn a_failed_flush_refuses_that_append_and_every_later_one() {
        let (_dir, store, w, _engine, _clock) = setup();
        store.fail_sync.store(true, Ordering::SeqCst);
        let err = append(&w, "s1").blocking_recv().unwrap().unwrap_err();
        assert!(err.to_string().contains("injected fsync failure"), "{err}");
        store.fail_sync.store(false, Ordering::SeqCst);
        let err = append(&w, "s2").blocking_recv().unwrap().unwrap_err();
        assert!(err.to_string().contains("restart the service"), "{err}");
        assert_eq!(store.step_count().unwrap(), 1, "s2 was not even committed");
    }
}
