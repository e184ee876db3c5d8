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
}

/// Initialises structured logs on stderr (`RUST_LOG` filters, default info).
pub fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "text" {
        builder.try_init()
    } else {
        builder.json().flatten_event(true).with_current_span(false).try_init()
    };
}

/// The effective configuration.
pub fn config(a: &ServeArgs) -> anyhow::Result<Config> {
    let mut cfg = Config::load(a.config.as_deref())?;
    cfg.apply_env(&std::env::vars().collect())?;
    if let Some(d) = &a.data_dir {
        cfg.serve.data_dir = d.display().to_string();
    }
    if let Some(l) = &a.listen {
        cfg.serve.listen = l.clone();
    }
    if let Some(l) = &a.otlp_grpc_listen {
        cfg.serve.otlp_grpc_listen = if l == "off" { String::new() } else { l.clone() };
    }
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
    let store: Arc<dyn crate::store::Store> = Arc::new(SqliteStore::open(std::path::Path::new(&cfg.serve.data_dir))?);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(serve(store, baseline, cfg, prices))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(
    store: Arc<dyn crate::store::Store>,
    baseline: Arc<crate::baseline::Baseline>,
    cfg: Config,
    prices: PriceTable,
) -> anyhow::Result<()> {
    let (shared, workers, stop_tx) = start(store, baseline.clone(), cfg.clone(), prices).await?;
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
    tracing::info!(%addr, grpc = ?grpc_addr, data_dir = %cfg.serve.data_dir, segments = baseline.segments.len(), "agentdrift serving");
    // One line on stdout for scripts (and tests) that asked for port 0.
    println!("listening on http://{addr}");
    if let Some(g) = grpc_addr {
        println!("otlp-grpc on http://{g}");
    }
    serve_on(shared, workers, listener, grpc, stop_tx, signal).await
}

/// Opens the store's state (recovery included) and starts the service threads.
pub async fn start(
    store: Arc<dyn crate::store::Store>,
    baseline: Arc<crate::baseline::Baseline>,
    cfg: Config,
    prices: PriceTable,
) -> anyhow::Result<(
    Arc<crate::service::Shared>,
    crate::service::Workers,
    tokio::sync::watch::Sender<bool>,
)> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (shared, workers) =
        tokio::task::spawn_blocking(move || crate::service::start(store, baseline, &cfg, prices, stop_rx)).await??;
    Ok((shared, workers, stop_tx))
}

/// Serves a started service on `listener` until `stop` resolves, then lets
/// in-flight requests finish (20 s at most) and flushes scorer and store.
pub async fn serve_on(
    shared: Arc<crate::service::Shared>,
    workers: crate::service::Workers,
    listener: tokio::net::TcpListener,
    grpc: Option<tokio::net::TcpListener>,
    stop_tx: tokio::sync::watch::Sender<bool>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let app = crate::api::router(shared.clone());
    let mut stopping = shared.shutdown.clone();
    let grpc_task = grpc.map(|l| {
        let mut stopping = shared.shutdown.clone();
        let routes = crate::api::grpc::routes(shared.clone());
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(l);
            let r = tonic::transport::Server::builder()
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stopping.wait_for(|v| *v).await;
                })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "the OTLP/gRPC receiver stopped");
            }
        })
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stopping.wait_for(|v| *v).await;
    });
    let deadline = async {
        stop.await;
        let _ = stop_tx.send(true);
        // In-flight requests get this long to finish; then we stop anyway.
        tokio::time::sleep(std::time::Duration::from_secs(20)).await;
    };
    tokio::select! {
        r = server => r?,
        _ = deadline => tracing::warn!("connections still open 20 s after the signal; stopping"),
    }
    if let Some(t) = grpc_task {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
    }
    tracing::info!("shutting down: flushing the scorer and the store");
    let s = shared.clone();
    tokio::task::spawn_blocking(move || workers.shutdown(&s)).await?;
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
