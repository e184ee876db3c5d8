//! The HTTP transport under the router: an accept loop that one client
//! cannot lock up. Request headers must arrive within `header_timeout`
//! (which also closes a keep-alive connection idle that long, and a
//! slowloris one), bodies within `body_timeout` ([`super::RawBody`]), and at
//! most `max_connections` connections are open: at the cap a new connection
//! closes the longest-idle one (no request in flight), else it is refused.
//! Accept errors (out of file descriptors) back off instead of spinning.

use crate::service::metrics::Metrics;
use axum::Router;
use axum::body::Body;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tower::ServiceExt;

/// Limits of the HTTP transport.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConnLimits {
    /// Time allowed for a request's headers, counted from when the server
    /// waits for them (so also the keep-alive idle timeout).
    pub header_timeout: Duration,
    /// Connections open at most.
    pub max_connections: usize,
}

/// One open connection, as the registry sees it.
struct Conn {
    /// Requests in flight (a streaming response counts until its body ends).
    active: Arc<AtomicUsize>,
    /// When it last finished a request (or opened).
    idle_since: Arc<Mutex<Instant>>,
    /// Asks the connection to close gracefully.
    close: Arc<Notify>,
}

/// The open connections.
#[derive(Default)]
struct Registry {
    next: AtomicUsize,
    conns: Mutex<BTreeMap<usize, Conn>>,
    /// Connections asked to close whose sockets are not closed yet: they
    /// still hold a descriptor, so they count against the cap.
    closing: AtomicUsize,
    /// Woken when a closing connection's socket is closed.
    drained: Notify,
}

/// Evictions in flight at most; past it new connections are refused, so
/// descriptors never run out while evicted sockets close.
const MAX_CLOSING: usize = 64;

impl Registry {
    /// Connections holding a descriptor (open and closing).
    fn len(&self) -> usize {
        self.conns.lock().map_or(0, |c| c.len()) + self.closing.load(Ordering::SeqCst)
    }

    /// Asks the longest-idle connection with no request in flight to close
    /// (it leaves the registry at once, so it is never chosen twice).
    fn evict_idle(&self) -> bool {
        if self.closing.load(Ordering::SeqCst) >= MAX_CLOSING {
            return false;
        }
        let Ok(mut conns) = self.conns.lock() else { return false };
        let oldest = conns
            .iter()
            .filter(|(_, c)| c.active.load(Ordering::SeqCst) == 0)
            .min_by_key(|(_, c)| *c.idle_since.lock().expect("idle lock"))
            .map(|(id, _)| *id);
        match oldest.and_then(|id| conns.remove(&id)) {
            Some(c) => {
                self.closing.fetch_add(1, Ordering::SeqCst);
                c.close.notify_one();
                true
            }
            None => false,
        }
    }

    /// A connection's task ended: it leaves the registry, or the closing count.
    fn ended(&self, id: usize) {
        let removed = self.conns.lock().map(|mut c| c.remove(&id).is_some()).unwrap_or(true);
        if !removed {
            self.closing.fetch_sub(1, Ordering::SeqCst);
            self.drained.notify_waiters();
        }
    }
}

/// How long a new connection at the cap waits for evicted sockets to close
/// when as many evictions as allowed are already in flight.
const DRAIN_WAIT: Duration = Duration::from_millis(250);

/// Evicts an idle connection for a new one; when evictions are saturated it
/// waits (briefly) for evicted sockets to close rather than refusing a client
/// while idle connections could still make room.
async fn make_room(registry: &Registry) -> bool {
    let deadline = tokio::time::Instant::now() + DRAIN_WAIT;
    loop {
        let drained = registry.drained.notified();
        if registry.evict_idle() {
            return true;
        }
        if registry.closing.load(Ordering::SeqCst) < MAX_CLOSING
            || tokio::time::timeout_at(deadline, drained).await.is_err()
        {
            return false;
        }
    }
}

/// Marks a request in flight until its response body is done (or dropped).
struct InFlight {
    active: Arc<AtomicUsize>,
    idle_since: Arc<Mutex<Instant>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut t) = self.idle_since.lock() {
            *t = Instant::now();
        }
        self.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that holds its connection's in-flight mark.
struct Guarded {
    inner: Body,
    _flight: InFlight,
}

impl http_body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A connection that must send its first byte within a deadline: hyper's
/// header timeout starts only once the protocol is known, and finding it
/// out (HTTP/1 or HTTP/2) waits for bytes without one.
struct FirstByte<I> {
    inner: I,
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<I> FirstByte<I> {
    fn new(inner: I, timeout: Duration) -> FirstByte<I> {
        FirstByte {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
        }
    }
}

impl<I: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for FirstByte<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let Some(deadline) = self.deadline.as_mut() else {
            return r;
        };
        match r {
            std::task::Poll::Ready(Ok(())) if buf.filled().len() > before => self.deadline = None,
            std::task::Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                return std::task::Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no request within the header timeout",
                )));
            }
            _ => {}
        }
        r
    }
}

impl<I: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for FirstByte<I> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What a connection task shares with the registry.
struct ConnState {
    active: Arc<AtomicUsize>,
    idle_since: Arc<Mutex<Instant>>,
    close: Arc<Notify>,
}

/// Serves one connection (plain or TLS) until it ends, is asked to close, or the service stops.
async fn serve_conn<I>(io: I, app: Router, limits: ConnLimits, conn: ConnState, mut stop: watch::Receiver<bool>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let ConnState {
        active,
        idle_since,
        close,
    } = conn;
    let in_flight = active.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        active.fetch_add(1, Ordering::SeqCst);
        let flight = InFlight {
            active: active.clone(),
            idle_since: idle_since.clone(),
        };
        let app = app.clone();
        async move {
            let resp = app.oneshot(req.map(Body::new)).await?;
            Ok::<_, std::convert::Infallible>(resp.map(|b| {
                Body::new(Guarded {
                    inner: b,
                    _flight: flight,
                })
            }))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.header_timeout))
        .keep_alive_timeout(limits.header_timeout);
    let conn = builder.serve_connection(TokioIo::new(FirstByte::new(io, limits.header_timeout)), svc);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            _ = close.notified(), if !closing => {
                // Evicted while idle: drop the socket now (it may still be
                // waiting for its first byte, where a graceful shutdown waits too).
                if in_flight.load(Ordering::SeqCst) == 0 {
                    break;
                }
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = stop.wait_for(|v| *v), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Serves `app` on `listener` until `stop` turns true, then lets open
/// connections finish their requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let registry = Arc::new(Registry::default());
    let mut tasks = tokio::task::JoinSet::new();
    let mut backoff = Duration::from_millis(5);
    let mut last_warning: Option<Instant> = None;
    let mut suppressed = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|v| *v) => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((s, _)) => {
                backoff = Duration::from_millis(5);
                s
            }
            Err(e) => {
                // EMFILE/ENFILE and the like: wait for descriptors to come back
                // rather than spinning on the error.
                metrics.http_accept_errors.inc();
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(error = %e, suppressed, "accept failed; backing off");
                    last_warning = Some(Instant::now());
                    suppressed = 0;
                } else {
                    suppressed += 1;
                }
                registry.evict_idle();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        if registry.len() >= limits.max_connections {
            if make_room(&registry).await {
                metrics.http_connections_evicted.inc();
            } else {
                metrics.http_connections_refused.inc();
                drop(stream);
                continue;
            }
        }
        let _ = stream.set_nodelay(true);
        let id = registry.next.fetch_add(1, Ordering::SeqCst);
        let active = Arc::new(AtomicUsize::new(0));
        let idle_since = Arc::new(Mutex::new(Instant::now()));
        let close = Arc::new(Notify::new());
        if let Ok(mut c) = registry.conns.lock() {
            c.insert(
                id,
                Conn {
                    active: active.clone(),
                    idle_since: idle_since.clone(),
                    close: close.clone(),
                },
            );
        }
        metrics.http_connections.set(registry.len() as i64);
        let (app, registry, metrics, stop, tls) = (
            app.clone(),
            registry.clone(),
            metrics.clone(),
            stop.clone(),
            tls.clone(),
        );
        tasks.spawn(async move {
            let conn = ConnState {
                active,
                idle_since,
                close,
            };
            match tls {
                None => serve_conn(stream, app, limits, conn, stop).await,
                Some(acceptor) => match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => serve_conn(s, app, limits, conn, stop).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                },
            }
            registry.ended(id);
            metrics.http_connections.set(registry.len() as i64);
        });
        // Reap finished connection tasks as we go.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}
