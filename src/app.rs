//! Wiring: opens the journal, replays what it holds unprocessed, starts the
//! pipeline and the HTTP server, and shuts them down in order.
//!
//! The caller passes the listener and the shutdown signal, so tests bind
//! `127.0.0.1:0`, start a server in-process and stop it when they like.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::config::{Config, Credentials};
use crate::journal::{Journal, JournalError, JournalMetrics};
use crate::metrics::Metrics;
use crate::pipeline::{self, Processor};
use crate::server::{self, AppState};

pub type Result<T, E = AppError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("the HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Runs homeostat until `shutdown` completes, then drains the queue (up to
/// `server.drain_timeout`) and closes the journal.
pub async fn serve<P: Processor>(
    config: Config,
    credentials: Credentials,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    processor: P,
) -> Result<()> {
    let metrics = Arc::new(Metrics::new(config.server.queue_capacity));
    let journal_metrics = JournalMetrics {
        commit_seconds: Some(metrics.journal_commit_seconds.clone()),
        batch_size: Some(metrics.journal_batch_size.clone()),
    };
    let (journal, writer) = Journal::open(&config.journal, journal_metrics)?;
    let (queue, queue_rx) = mpsc::channel(config.server.queue_capacity);

    // In journal order: what a crash left unprocessed comes before anything new.
    pipeline::replay(&journal, &metrics, &processor).await?;
    let worker = tokio::spawn(pipeline::run(
        queue_rx,
        journal.clone(),
        Arc::clone(&metrics),
        processor,
    ));

    let state = Arc::new(AppState {
        journal: journal.clone(),
        queue,
        metrics,
        credentials,
        max_body_bytes: config.server.max_body_bytes,
        ready: true.into(),
    });
    let address = listener.local_addr().map_err(AppError::Serve)?;
    tracing::info!(%address, journal = %config.journal.path.display(), "Listening.");

    let shutting_down = Arc::clone(&state);
    axum::serve(listener, server::router(Arc::clone(&state)))
        .with_graceful_shutdown(async move {
            shutdown.await;
            shutting_down.ready.store(false, Ordering::Release);
            tracing::info!("Shutting down: no new connections; draining the queue.");
        })
        .await
        .map_err(AppError::Serve)?;

    // The router and its state are gone: the queue closes once the worker has emptied it.
    drop(state);
    let drain = config.server.drain_timeout.0;
    let mut worker = worker;
    if tokio::time::timeout(drain, &mut worker).await.is_err() {
        worker.abort();
        tracing::warn!(
            timeout = %config.server.drain_timeout,
            "Queue not drained in time; the remaining deliveries are journalled and will be processed at the next start."
        );
    }
    drop(journal);
    tokio::task::spawn_blocking(move || writer.join())
        .await
        .map_err(|e| AppError::Serve(std::io::Error::other(e)))?;
    tracing::info!("Stopped.");
    Ok(())
}
