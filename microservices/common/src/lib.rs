//! Everything the two demo microservices of `homeostat demo` share: the HTTP servers, the metrics,
//! the fault injection and the admin API.
//!
//! A service listens on two ports. The main port serves the API (`/api/work` on service_a, which
//! calls service_b's `/api/data`), `/healthz` and `/metrics`, and is subject to the injected faults.
//! The admin port injects and clears faults (`/faults`) and also serves `/healthz` and `/metrics`;
//! it is never affected by faults.

mod config;
mod faults;
mod http;
mod metrics;

use std::future::{Future, IntoFuture};
use std::io::{self, IsTerminal};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

pub use config::{parse_base_url, CommonArgs, ExitHook, Role, Settings};
pub use faults::{parse_injection, FaultKind, FaultSpec, Injection};
pub use metrics::{memory_limit, parse_memory_limit, CONTENT_TYPE as METRICS_CONTENT_TYPE, DURATION_BUCKETS};

/// How long graceful shutdown may take before open connections are dropped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Why a service could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} (the {port} port): {source}")]
    Bind {
        /// "main" or "admin".
        port: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// Another I/O failure (signal handlers, listener addresses).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// The HTTP client for service_b could not be built.
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
    /// A server stopped on its own.
    #[error("the {port} server stopped unexpectedly: {message}")]
    Server {
        /// "main" or "admin".
        port: &'static str,
        /// What happened.
        message: String,
    },
}

/// The fault kinds a role accepts (service_b has no dependency).
pub fn supported_faults(role: &Role) -> Vec<FaultKind> {
    FaultKind::ALL
        .into_iter()
        .filter(|k| *k != FaultKind::Dependency || matches!(role, Role::ServiceA { .. }))
        .collect()
}

/// Serves the main port on `main` and the admin port on `admin` until `shutdown` completes, then
/// shuts both down gracefully within [`SHUTDOWN_GRACE`] (requests held by a hang answer 503 at once;
/// whatever is still open after the grace period is dropped) and clears every fault.
pub async fn run(
    settings: Settings,
    main: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let main_addr = main.local_addr().map_err(|source| Error::Io {
        what: "cannot read the main port's address",
        source,
    })?;
    let admin_addr = admin.local_addr().map_err(|source| Error::Io {
        what: "cannot read the admin port's address",
        source,
    })?;
    let kinds = supported_faults(&settings.role);
    let metrics = Arc::new(metrics::Metrics::new(&settings, &kinds));
    let faults = Arc::new(faults::Faults::new(kinds, metrics.clone()));
    let client = reqwest::Client::builder().no_proxy().build()?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let app = Arc::new(http::App {
        role: settings.role.clone(),
        version: settings.version.clone(),
        bad_version: settings.bad_version,
        metrics,
        faults: faults.clone(),
        exit: settings.exit.clone(),
        client,
        shutdown: shutdown_rx.clone(),
        served: AtomicU64::new(0),
    });

    let stopping = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut main_server = tokio::spawn(
        axum::serve(main, http::main_router(app.clone()))
            .with_graceful_shutdown(stopping(shutdown_rx.clone()))
            .into_future(),
    );
    let mut admin_server = tokio::spawn(
        axum::serve(admin, http::admin_router(app.clone()))
            .with_graceful_shutdown(stopping(shutdown_rx.clone()))
            .into_future(),
    );
    info!(
        service = settings.role.service_name(),
        version = %settings.version,
        bad_version = settings.bad_version,
        main = %main_addr,
        admin = %admin_addr,
        "started"
    );

    let stopped_early = tokio::select! {
        () = shutdown => None,
        r = &mut main_server => Some(("main", r)),
        r = &mut admin_server => Some(("admin", r)),
    };
    shutdown_tx.send_replace(true);
    faults.clear_all(faults::ClearReason::Shutdown);
    if let Some((port, result)) = stopped_early {
        main_server.abort();
        admin_server.abort();
        let message = match result {
            Ok(Ok(())) => "it returned".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        return Err(Error::Server { port, message });
    }

    info!("shutting down");
    let graceful = async {
        let _ = (&mut main_server).await;
        let _ = (&mut admin_server).await;
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful).await.is_err() {
        warn!(
            grace_seconds = SHUTDOWN_GRACE.as_secs_f64(),
            "graceful shutdown timed out; dropping connections"
        );
        main_server.abort();
        admin_server.abort();
    }
    info!("stopped");
    Ok(())
}

/// Sends the `tracing` logs to stderr as text (`RUST_LOG` overrides the `info` level).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .try_init();
}

/// Installs the SIGTERM and SIGINT handlers now (the process may be PID 1 in a container, where
/// unhandled signals are ignored) and returns a future that completes on the first of them.
/// Must be called inside a tokio runtime.
pub fn shutdown_signal() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(signal = name, "signal received");
    })
}

/// Binds a listener; the error names the address.
pub async fn bind(port: &'static str, addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { port, addr, source })
}

/// The whole life of a service binary: logs, runtime, signal handlers, listeners, [`run`].
/// Returns exit code 0 after a signal-initiated shutdown and 1 (with an `error:` line on stderr)
/// when the service cannot start or fails.
pub fn launch(args: CommonArgs, role: Role, default_version: &str) -> ExitCode {
    init_tracing();
    let settings = Settings::from_args(&args, role, default_version);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        let shutdown = shutdown_signal().map_err(|source| Error::Io {
            what: "cannot install the signal handlers",
            source,
        })?;
        let main = bind("main", args.listen).await?;
        let admin = bind("admin", args.admin_listen).await?;
        run(settings, main, admin, shutdown).await
    });
    // Don't wait for blocked resolver threads or anything else still running.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
