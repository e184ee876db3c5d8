//! The writer thread: the only place that writes. Appends from concurrent
//! requests that arrive while a commit runs are grouped into the next
//! transaction (group commit); each request is answered only after its
//! transaction committed. New log entries go to the engine in commit order.

use super::engine_task::EngineMsg;
use super::metrics::Metrics;
use crate::detect::DriftEvent;
use crate::store::{Appended, LogEntry, NewStep, Snapshot, Store, StoreError, StoredSession};
use std::sync::{Arc, mpsc};
use std::time::Instant;
use tokio::sync::{broadcast, oneshot};

/// Largest group of steps committed in one transaction.
const MAX_GROUP_STEPS: usize = 50_000;

/// Work for the writer.
pub enum WriteMsg {
    /// Append steps; answer after commit.
    Append {
        /// Steps.
        steps: Vec<NewStep>,
        /// Receive time.
        received_ms: i64,
        /// Answer.
        reply: oneshot::Sender<Result<Appended, StoreError>>,
    },
    /// Log an idle close decided after processing the log up to `after`.
    Close {
        /// Session.
        session_id: String,
        /// Position.
        after: i64,
    },
    /// Store events and closed sessions (then publish the new events).
    Persist {
        /// Events.
        events: Vec<DriftEvent>,
        /// Closed sessions.
        sessions: Vec<StoredSession>,
    },
    /// Save a scorer snapshot.
    Snapshot(Snapshot),
    /// Finish pending work and stop.
    Shutdown(oneshot::Sender<()>),
}

/// Sends work to the writer.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<WriteMsg>,
}

impl WriterHandle {
    /// Appends steps and waits for the commit.
    pub async fn append(&self, steps: Vec<NewStep>, received_ms: i64) -> Result<Appended, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(WriteMsg::Append {
                steps,
                received_ms,
                reply,
            })
            .map_err(|_| StoreError::Database("the writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Database("the writer has stopped".into()))?
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
    store: Arc<dyn Store>,
    engine: mpsc::SyncSender<EngineMsg>,
    events: broadcast::Sender<Arc<DriftEvent>>,
    metrics: Arc<Metrics>,
) -> (WriterHandle, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<WriteMsg>();
    let handle = std::thread::Builder::new()
        .name("agentdrift-writer".into())
        .spawn(move || run(store.as_ref(), rx, engine, events, metrics))
        .expect("spawn the writer thread");
    (WriterHandle { tx }, handle)
}

type Pending = (usize, usize, oneshot::Sender<Result<Appended, StoreError>>);

fn run(
    store: &dyn Store,
    rx: mpsc::Receiver<WriteMsg>,
    engine: mpsc::SyncSender<EngineMsg>,
    events: broadcast::Sender<Arc<DriftEvent>>,
    metrics: Arc<Metrics>,
) {
    let mut carry: Option<WriteMsg> = None;
    loop {
        let msg = match carry.take() {
            Some(m) => m,
            None => match rx.recv() {
                Ok(m) => m,
                Err(_) => return,
            },
        };
        match msg {
            WriteMsg::Append {
                steps,
                received_ms,
                reply,
            } => {
                // Group every append already waiting.
                let mut all = steps;
                let mut pending: Vec<Pending> = vec![(0, all.len(), reply)];
                let mut when = received_ms;
                while all.len() < MAX_GROUP_STEPS {
                    match rx.try_recv() {
                        Ok(WriteMsg::Append {
                            steps,
                            received_ms,
                            reply,
                        }) => {
                            let start = all.len();
                            all.extend(steps);
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
                let t0 = Instant::now();
                let result = store.append_steps(&all, when);
                metrics.observe_commit(t0.elapsed().as_secs_f64(), all.len());
                match result {
                    Ok(app) => {
                        for (start, end, reply) in pending {
                            let stored: Vec<_> = app
                                .stored
                                .iter()
                                .filter(|(i, _, _)| *i >= start && *i < end)
                                .map(|&(i, id, seq)| (i - start, id, seq))
                                .collect();
                            let duplicates = (end - start) - stored.len();
                            let _ = reply.send(Ok(Appended { stored, duplicates }));
                        }
                        // The steps move on to the engine (no copies): `stored` is in input order.
                        let mut steps = all.into_iter().enumerate();
                        let entries: Vec<LogEntry> = app
                            .stored
                            .iter()
                            .filter_map(|&(i, id, seq)| {
                                let (_, n) = steps.find(|(j, _)| *j == i)?;
                                let mut step = n.step;
                                step.seq = seq;
                                Some(LogEntry::Step {
                                    id,
                                    received_ms: when,
                                    step,
                                })
                            })
                            .collect();
                        if !entries.is_empty() {
                            // Blocks when the engine lags: backpressure reaches the requests.
                            let _ = engine.send(EngineMsg::Log(entries));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "append failed");
                        for (_, _, reply) in pending {
                            let _ = reply.send(Err(StoreError::Database(e.to_string())));
                        }
                    }
                }
            }
            WriteMsg::Close { session_id, after } => match store.append_close(&session_id, after) {
                Ok(id) => {
                    let _ = engine.send(EngineMsg::Log(vec![LogEntry::Close { id, after, session_id }]));
                }
                Err(e) => tracing::error!(error = %e, "cannot log an idle close"),
            },
            WriteMsg::Persist { events: evs, sessions } => {
                match store.insert_events(&evs) {
                    Ok(new) => {
                        for e in new {
                            metrics.event(&e);
                            tracing::info!(
                                event_id = %e.id,
                                detector = %e.detector,
                                segment = %e.segment,
                                session_id = %e.session_id,
                                "{}",
                                e.message
                            );
                            let _ = events.send(Arc::new(e));
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot store events"),
                }
                if !sessions.is_empty()
                    && let Err(e) = store.insert_sessions(&sessions)
                {
                    tracing::error!(error = %e, "cannot store closed sessions");
                }
            }
            WriteMsg::Snapshot(s) => {
                if let Err(e) = store.save_snapshot(&s) {
                    tracing::error!(error = %e, "cannot save the scorer snapshot");
                }
            }
            WriteMsg::Shutdown(done) => {
                // Everything queued before the shutdown has been handled (FIFO).
                let _ = done.send(());
                return;
            }
        }
    }
}
