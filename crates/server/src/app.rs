//! Wiring: opens the journal, replays what it holds unprocessed, starts the
//! pipeline and the HTTP server, and shuts them down in order.
//!
//! The caller passes the listener and the shutdown signal, so tests bind
//! `127.0.0.1:0`, start a server in-process and stop it when they like.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::leader::in_each_term;
use crate::metrics::Metrics;
use crate::pipeline::Controls;
use crate::pipeline::{self, Parts, Processor};
use crate::server::{self, AppState};
use crate::thresholds::Scheduler;
use homeostat_core::clock::{Clock, SystemClock};
use homeostat_core::config::{Config, Credentials};
use homeostat_journal::{JournalError, JournalMetrics};

pub type Result<T, E = AppError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("the HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error("cannot start adaptive thresholds: {0} (thresholds.prometheus_url)")]
    Thresholds(String),
    #[error("cannot start anomaly detection: {0} (anomaly.prometheus_url)")]
    Anomaly(String),
    #[error("cannot read the journal's password: {0}")]
    JournalPassword(String),
}

/// Runs homeostat until `shutdown` completes, then drains the queue (up to
/// `server.drain_timeout`) and closes the journal. `make_processor` builds
/// the pipeline's processor from the journal, metrics and controls.
pub async fn serve<P: Processor>(
    config: Config,
    credentials: Credentials,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    make_processor: impl FnOnce(Parts) -> P,
) -> Result<()> {
    // Before anything slow (the journal's replay): SIGHUP must not stop it.
    let hangups = crate::reload::listen();
    let metrics = Arc::new(Metrics::new(config.server.queue_capacity));
    let journal_metrics = JournalMetrics {
        commit_seconds: Some(metrics.journal_commit_seconds.clone()),
        batch_size: Some(metrics.journal_batch_size.clone()),
    };
    let password = config
        .journal
        .read_password(&homeostat_core::config::ProcessEnv)
        .map_err(|(key, message)| AppError::JournalPassword(format!("{key}: {message}")))?;
    let password = password.as_ref().map(|p| p.expose());
    let (journal, writer) = homeostat_journal::connect(&config.journal, password, journal_metrics).await?;
    let (queue, queue_rx) = mpsc::channel(config.server.queue_capacity);
    // Read before the webhook opens, so nothing new can be both replayed and queued.
    let pending = journal.unprocessed().await?;

    let controls = Arc::new(Controls::default());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    if journal.paused().await? {
        controls.paused.store(true, Ordering::Release);
        metrics.paused.set(1);
        tracing::warn!("Actions are paused, as they were at the last stop (POST /api/v1/resume to resume).");
    }
    let scheduler = config
        .thresholds
        .clone()
        .map(|t| Scheduler::new(t, journal.clone(), Arc::clone(&metrics), Arc::clone(&clock)))
        .transpose()
        .map_err(AppError::Thresholds)?;
    let detector = config
        .anomaly
        .clone()
        .map(|a| {
            crate::anomaly::Detector::new(
                a,
                journal.clone(),
                Arc::clone(&metrics),
                Arc::clone(&clock),
                Arc::clone(&controls.anomaly),
            )
        })
        .transpose()
        .map_err(AppError::Anomaly)?;
    let state = Arc::new(AppState {
        config: config.clone(),
        journal: journal.clone(),
        queue,
        metrics: Arc::clone(&metrics),
        controls: Arc::clone(&controls),
        clock: Arc::clone(&clock),
        credentials,
        thresholds: config.thresholds.clone().map(Arc::new),
        max_body_bytes: config.server.max_body_bytes,
        ready: false.into(),
        stopping: false.into(),
    });
    let address = listener.local_addr().map_err(AppError::Serve)?;
    let shutting_down = Arc::clone(&state);
    let (stop_background, stopped) = watch::channel(false);
    let router = server::router(Arc::clone(&state), config.server.request_timeout.0);
    let drain = config.server.drain_timeout.0;
    // Open connections get the drain timeout, then are closed (with the
    // state they hold), so a stalled client cannot hold up the stop.
    let server = tokio::spawn(server::serve_http(
        listener,
        router,
        config.server.request_timeout.0,
        drain,
        config.server.max_connections,
        async move {
            shutdown.await;
            shutting_down.stopping.store(true, Ordering::Release);
            let _ = stop_background.send(true);
            tracing::info!("Shutting down: no new connections; draining the queue.");
        },
    ));
    tracing::info!(%address, journal = %config.journal.describe(), "Listening.");

    // In journal order: what a crash left unprocessed comes before anything
    // new, which waits in the queue meanwhile; /readyz says 503 until then.
    let shared_controls = Arc::clone(&controls);
    let processor = Arc::new(make_processor(Parts {
        journal: journal.clone(),
        metrics: Arc::clone(&metrics),
        controls,
        clock,
    }));
    pipeline::replay(pending, &journal, &metrics, &processor).await?;
    // What acts runs only while this replica leads (always, on SQLite).
    let leadership = journal.leadership();
    let reporter = tokio::spawn(crate::leader::report(leadership.clone(), Arc::clone(&metrics)));
    let relay = journal.changes().map(|changes| {
        tokio::spawn(crate::leader::relay(
            changes,
            journal.clone(),
            Arc::clone(&shared_controls),
            Arc::clone(&metrics),
        ))
    });
    let background = {
        let processor = Arc::clone(&processor);
        in_each_term(leadership.clone(), stopped.clone(), move |stop| {
            Arc::clone(&processor).background(stop)
        })
    };
    let worker = tokio::spawn(pipeline::run(
        queue_rx,
        journal.clone(),
        Arc::clone(&metrics),
        processor,
    ));
    let retention = {
        let (journal, metrics, clock) = (journal.clone(), Arc::clone(&metrics), Arc::clone(&state.clock));
        let retention = config.journal.retention;
        in_each_term(leadership.clone(), stopped.clone(), move |stop| {
            crate::retention::run(
                journal.clone(),
                Arc::clone(&metrics),
                Arc::clone(&clock),
                retention,
                stop,
            )
        })
    };
    let anomaly = detector.map(|detector| {
        let detector = Arc::new(tokio::sync::Mutex::new(detector));
        in_each_term(leadership.clone(), stopped.clone(), move |stop| {
            let detector = Arc::clone(&detector);
            async move { detector.lock().await.run(stop).await }
        })
    });
    let thresholds = scheduler.map(|scheduler| {
        let scheduler = Arc::new(tokio::sync::Mutex::new(scheduler));
        in_each_term(leadership, stopped, move |stop| {
            let scheduler = Arc::clone(&scheduler);
            async move { scheduler.lock().await.run(stop).await }
        })
    });
    let hangups = tokio::spawn(crate::reload::on_hangup(Arc::clone(&state), hangups));
    state.ready.store(true, Ordering::Release);

    server.await.map_err(|e| AppError::Serve(std::io::Error::other(e)))?;

    // Both stop at the shutdown signal, each once its round under way is
    // done, for up to the drain timeout together. The refit round is then
    // abandoned (a slow Prometheus could hold it for its whole query
    // timeout): each rule file is replaced atomically, so what it wrote so
    // far is whole. Anomaly scoring journals its detectors' state as it
    // stops: worth the wait of a round (one range query).
    let (thresholds, anomaly) = tokio::join!(finish_within(drain, thresholds), finish_within(drain, anomaly));
    if !thresholds {
        tracing::warn!(
            timeout = %config.server.drain_timeout,
            "A threshold refit was still running after the drain timeout; abandoned it (the next start refits)."
        );
    }
    if !anomaly {
        tracing::warn!(
            timeout = %config.server.drain_timeout,
            "Anomaly scoring was still running after the drain timeout; abandoned it (the next start resumes from the last journalled state)."
        );
    }
    // A prune step is one transaction: stopping between steps loses nothing.
    retention.abort();
    // It holds the state (and so the queue's sender): gone before the drain.
    hangups.abort();
    let _ = hangups.await;
    // Looks under way finish (their actions are journalled before they run).
    if !finish_within(drain, Some(background)).await {
        tracing::warn!(
            timeout = %config.server.drain_timeout,
            "Incidents were still being acted on after the drain timeout; abandoned (the next start settles them)."
        );
    }
    // Nothing acts any more: another replica may lead at once.
    journal.step_down().await;
    reporter.abort();
    if let Some(relay) = relay {
        relay.abort();
    }
    // The router and its state are gone: the queue closes once the worker has emptied it.
    drop(state);
    if !finish_within(drain, Some(worker)).await {
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

/// Waits up to `drain` for `task` (if any) to end, else aborts it; whether it ended.
async fn finish_within(drain: std::time::Duration, task: Option<tokio::task::JoinHandle<()>>) -> bool {
    let Some(mut task) = task else { return true };
    if tokio::time::timeout(drain, &mut task).await.is_ok() {
        return true;
    }
    task.abort();
    false
}
