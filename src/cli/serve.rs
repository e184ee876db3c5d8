//! `agentdrift serve`: configuration (file < environment < flags), logs,
//! store, recovery, the HTTP server, and a graceful shutdown that flushes
//! everything on SIGTERM/SIGINT.

use crate::baseline::load;
use crate::config::Config;
use crate::model::PriceTable;
use crate::store::sqlite::SqliteStore;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Options of `agentdrift serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Baseline file to score against.
    #[arg(long)]
    pub baseline: PathBuf,
    /// Directory of the embedded store (default ./agentdrift-data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Query store: a `postgres://` URL keeps events, sessions, reports and snapshots in
    /// PostgreSQL (default: the embedded SQLite in --data-dir, beside the log).
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// Address to listen on (default 127.0.0.1:7878; port 0 picks a free one).
    #[arg(long)]
    pub listen: Option<String>,
    /// OTLP/gRPC address (default 127.0.0.1:4317; `off` for none; port 0 picks a free one).
    #[arg(long)]
    pub otlp_grpc_listen: Option<String>,
    /// agentdrift.toml ([serve] section; AGENTDRIFT_* variables override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Log format: json (default) or text.
    #[arg(long)]
    pub log_format: Option<String>,
    /// Serve a non-loopback address without `[auth]` tokens (refused otherwise).
    #[arg(long)]
    pub allow_unauthenticated: bool,
    /// Integrity check of the store before starting: `quick` (default, every page) or `full` (every index too).
    #[arg(long, value_name = "quick|full", default_value = "quick")]
    pub check_store: String,
}

/// Writes text log lines to stderr with every control character inside a
/// line escaped (`\n`, `\u{1b}`, …), so a value sent by a client (a session
/// id with a newline, terminal escapes) can neither forge a line nor reach
/// the terminal. JSON lines are escaped by the JSON encoder already.
pub struct EscapedStderr;

impl std::io::Write for EscapedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let (body, end) = match text.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (&*text, ""),
        };
        let out = escape_control(body) + end;
        std::io::stderr().write_all(out.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// `s` with control characters written as escapes.
pub fn escape_control(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Initialises structured logs on stderr (`RUST_LOG` filters, default info).
pub fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if format == "text" {
        builder.with_ansi(false).with_writer(|| EscapedStderr).try_init()
    } else {
        builder
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    };
}

/// The effective configuration.
pub fn config(a: &ServeArgs) -> anyhow::Result<Config> {
    let mut cfg = Config::load(a.config.as_deref())?;
    cfg.apply_env(&std::env::vars().collect())?;
    if let Some(d) = &a.data_dir {
        cfg.serve.data_dir = d.display().to_string();
    }
    if let Some(s) = &a.store {
        cfg.serve.store = s.clone();
    }
    if let Some(l) = &a.listen {
        cfg.serve.listen = l.clone();
    }
    if let Some(l) = &a.otlp_grpc_listen {
        cfg.serve.otlp_grpc_listen = if l == "off" { String::new() } else { l.clone() };
    }
    cfg.serve.allow_unauthenticated |= a.allow_unauthenticated;
    if let Some(f) = &a.log_format {
        anyhow::ensure!(f == "json" || f == "text", "--log-format must be json or text");
        cfg.serve.log_format = f.clone();
    }
    Ok(cfg)
}

/// Runs the service until a signal.
pub fn run(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let cfg = config(&a)?;
    init_logs(&cfg.serve.log_format);
    let baseline = Arc::new(load(&a.baseline)?);
    let prices = match &cfg.serve.prices {
        Some(p) => PriceTable::load(std::path::Path::new(p))?,
        None => PriceTable::default(),
    };
    let check = match a.check_store.as_str() {
        "quick" => crate::store::sqlite::Check::Quick,
        "full" => crate::store::sqlite::Check::Full,
        other => anyhow::bail!("--check-store must be quick or full, got `{other}`"),
    };
    let local = SqliteStore::open_checked(std::path::Path::new(&cfg.serve.data_dir), check)?;
    let storage = match cfg.serve.store.as_str() {
        "" | "sqlite" => crate::store::Storage::single(local),
        url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let store = crate::store::postgres::PgStore::open(url)?;
            crate::store::Storage::split(local, store)
        }
        other => anyhow::bail!("--store must be a postgres:// URL (or empty for the embedded store), got `{other}`"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(serve(storage, baseline, cfg, prices))?;
    Ok(ExitCode::SUCCESS)
}

/// Whether an address is only reachable from this machine.
fn is_loopback(addr: &str) -> bool {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(a) => a.ip().is_loopback(),
        Err(_) => addr.rsplit_once(':').is_some_and(|(h, _)| h == "localhost"),
    }
}

/// Connections one listener may hold: `configured`, or a share of the
/// open-file limit with a reserve for the store and the rest.
fn connection_cap(configured: usize, share: f64) -> usize {
    if configured > 0 {
        return configured;
    }
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse::<usize>().ok())
        })
        .unwrap_or(1024);
    // Descriptors beyond connections: the store's (a few per SQLite
    // connection), listeners, the runtime, and sockets being closed.
    let reserve = (soft / 8).max(256);
    (((soft.saturating_sub(reserve)) as f64 * share) as usize).max(16)
}

/// The TLS acceptor for `tls_cert`/`tls_key`, if both are set.
fn tls(cfg: &crate::config::ServeConfig) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = match (&cfg.tls_cert, &cfg.tls_key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        _ => anyhow::bail!("TLS needs both tls_cert and tls_key"),
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("tls_cert {cert}: {e}"))?;
    anyhow::ensure!(!certs.is_empty(), "tls_cert {cert}: no certificate in the file");
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| anyhow::anyhow!("tls_key {key}: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| anyhow::anyhow!("tls_cert/tls_key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

async fn serve(
    storage: crate::store::Storage,
    baseline: Arc<crate::baseline::Baseline>,
    cfg: Config,
    prices: PriceTable,
) -> anyhow::Result<()> {
    let exposed = !is_loopback(&cfg.serve.listen)
        || (!cfg.serve.otlp_grpc_listen.is_empty()
            && cfg.serve.otlp_grpc_listen != "off"
            && !is_loopback(&cfg.serve.otlp_grpc_listen));
    let has_tokens = !cfg.auth.tokens.is_empty() || !cfg.auth.env_tokens.is_empty();
    anyhow::ensure!(
        !exposed || has_tokens || cfg.serve.allow_unauthenticated,
        "refusing to serve {} without authentication: add tokens under [auth] (see `agentdrift token`) \
         or AGENTDRIFT_AUTH_TOKENS, or pass --allow-unauthenticated",
        cfg.serve.listen
    );
    let tls = tls(&cfg.serve)?;
    // Sinks are checked before recovery, so a bad one is reported at once.
    let sinks = cfg.alerts.sinks(&std::env::vars().collect())?;
    let (shared, mut workers, stop_tx) = start(storage, baseline.clone(), cfg.clone(), prices).await?;
    let listener = tokio::net::TcpListener::bind(&cfg.serve.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cfg.serve.listen))?;
    let addr = listener.local_addr()?;
    let grpc = match cfg.serve.otlp_grpc_listen.as_str() {
        "" | "off" => None,
        a => Some(tokio::net::TcpListener::bind(a).await.map_err(|e| {
            anyhow::anyhow!("cannot listen for OTLP/gRPC on {a}: {e} (set --otlp-grpc-listen, or `off`)")
        })?),
    };
    let grpc_addr = grpc.as_ref().map(|l| l.local_addr()).transpose()?;
    // Handlers first: a signal that comes right after the address is printed
    // must still shut down cleanly.
    let signal = shutdown_signal()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, grpc = ?grpc_addr, tls = tls.is_some(), auth = has_tokens, data_dir = %cfg.serve.data_dir, segments = baseline.segments.len(), "agentdrift serving");
    // One line on stdout for scripts (and tests) that asked for port 0.
    println!("listening on {scheme}://{addr}");
    if let Some(g) = grpc_addr {
        println!("otlp-grpc on {scheme}://{g}");
    }
    let public = if cfg.alerts.public_url.is_empty() {
        format!("{scheme}://{addr}")
    } else {
        cfg.alerts.public_url.clone()
    };
    workers.start_alerts(&shared, sinks, &public)?;
    let limits = Transport {
        header_timeout: std::time::Duration::from_secs(cfg.serve.http_header_timeout_secs.max(1)),
        max_connections: cfg.serve.max_connections,
        tls,
    };
    serve_on(shared, workers, listener, grpc, limits, stop_tx, signal).await
}

/// How the listeners serve: timeouts, connection caps, TLS.
#[derive(Clone)]
pub struct Transport {
    /// Time for a request's headers (and the keep-alive idle timeout).
    pub header_timeout: std::time::Duration,
    /// Connections at most (0: from the open-file limit).
    pub max_connections: usize,
    /// TLS, when configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Default for Transport {
    fn default() -> Self {
        Transport {
            header_timeout: std::time::Duration::from_secs(10),
            max_connections: 0,
            tls: None,
        }
    }
}

/// Opens the store's state (recovery included) and starts the service threads.
pub async fn start(
    storage: crate::store::Storage,
    baseline: Arc<crate::baseline::Baseline>,
    cfg: Config,
    prices: PriceTable,
) -> anyhow::Result<(
    Arc<crate::service::Shared>,
    crate::service::Workers,
    tokio::sync::watch::Sender<bool>,
)> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (shared, workers) = tokio::task::spawn_blocking(move || {
        crate::service::start(
            storage,
            baseline,
            &cfg,
            prices,
            stop_rx,
            std::sync::Arc::new(crate::service::clock::SystemClock),
        )
    })
    .await??;
    Ok((shared, workers, stop_tx))
}

/// Serves a started service on `listener` until `stop` resolves, then lets
/// in-flight requests finish (20 s at most) and flushes scorer and store.
#[allow(clippy::too_many_arguments)]
pub async fn serve_on(
    shared: Arc<crate::service::Shared>,
    workers: crate::service::Workers,
    listener: tokio::net::TcpListener,
    grpc: Option<tokio::net::TcpListener>,
    transport: Transport,
    stop_tx: tokio::sync::watch::Sender<bool>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    use crate::api::server::{ConnLimits, serve as serve_http};
    let share = if grpc.is_some() { 0.75 } else { 1.0 };
    let limits = |share: f64| ConnLimits {
        header_timeout: transport.header_timeout,
        max_connections: connection_cap(transport.max_connections, share),
    };
    let grpc_task = grpc.map(|l| {
        let router = crate::api::grpc::router(shared.clone());
        tokio::spawn(serve_http(
            l,
            router,
            limits(0.25),
            transport.tls.clone(),
            shared.metrics.clone(),
            shared.shutdown.clone(),
        ))
    });
    let server = serve_http(
        listener,
        crate::api::router(shared.clone()),
        limits(share),
        transport.tls.clone(),
        shared.metrics.clone(),
        shared.shutdown.clone(),
    );
    let deadline = async {
        stop.await;
        let _ = stop_tx.send(true);
        // In-flight requests get this long to finish; then we stop anyway.
        tokio::time::sleep(std::time::Duration::from_secs(20)).await;
    };
    tokio::select! {
        _ = server => {},
        _ = deadline => tracing::warn!("connections still open 20 s after the signal; stopping"),
    }
    if let Some(t) = grpc_task {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
    }
    tracing::info!("shutting down: flushing the scorer and the store");
    let s = shared.clone();
    let flushed = tokio::task::spawn_blocking(move || workers.shutdown(&s)).await?;
    if let Err(e) = flushed {
        tracing::error!(error = %e, "stopped, but not cleanly");
        anyhow::bail!(e);
    }
    tracing::info!("stopped");
    Ok(())
}

/// A future that resolves on SIGINT (Ctrl-C) or SIGTERM; the handlers are
/// installed when this returns, not when the future is first polled.
pub fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
    })
}
