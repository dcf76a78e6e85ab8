//! `homeostat serve`: the service. Receives Alertmanager's webhook, tracks
//! incidents and, with `actions:`, acts on them through the configured backend.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use homeostat_adapters::executor::{AnyExecutor, Bounded, DryRun};
use homeostat_adapters::preflight::{self, Verdict};
use homeostat_core::action::Backend;
use homeostat_core::playbook::Playbook;
use homeostat_server::pipeline::Responder;
use homeostat_server::pipeline::{LogTransitions, Parts};

use crate::{exit, PREFLIGHT_TIMEOUT};

#[derive(Args)]
pub struct ServeArgs {
    /// The YAML config file.
    #[arg(long, short)]
    config: PathBuf,
    /// Listen address, overriding `server.listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Allow a non-loopback listen address without `auth` (overrides `server.allow_unauthenticated`).
    #[arg(long)]
    allow_unauthenticated: bool,
}

pub fn run(args: ServeArgs) -> ExitCode {
    let (config, credentials) = match crate::load(&args.config, |config| {
        if let Some(listen) = args.listen {
            config.server.listen = listen;
        }
        config.server.allow_unauthenticated |= args.allow_unauthenticated;
    }) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let runtime = match crate::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let listen = config.server.listen;
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(listener) => listener,
            Err(err) => {
                eprintln!("homeostat: cannot listen on {listen}: {err} (server.listen or --listen)");
                return ExitCode::from(exit::STARTUP);
            }
        };
        // From now on a SIGHUP is not fatal (tokio keeps its handler for the
        // process' life); those before the server listens for them are dropped.
        drop(homeostat_server::reload::listen());
        // Listen for signals from now on, not from the first time the server polls for them.
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop.send(());
        });
        let shutdown = async move {
            let _ = stopped.await;
        };
        // A query Prometheus rejects is a config error; one it could not
        // judge (Prometheus down) is not, or homeostat could not start
        // before its Prometheus. A signal meanwhile stops the service as
        // soon as it starts.
        let mut rejected = false;
        for (query, verdict) in preflight::check(&config, PREFLIGHT_TIMEOUT).await {
            match verdict {
                Verdict::Accepted => {}
                Verdict::Rejected(why) => {
                    eprintln!("homeostat: {}: {}: {why}", args.config.display(), query.key);
                    rejected = true;
                }
                Verdict::Unchecked(why) => tracing::warn!(key = %query.key, "PromQL not checked: {why}"),
            }
        }
        if rejected {
            return ExitCode::from(exit::CONFIG);
        }
        let served = match config.actions.clone() {
            None => {
                tracing::info!("No actions section: incidents are recorded and nothing is acted on.");
                homeostat_server::app::serve(config, credentials, listener, shutdown, |_| LogTransitions).await
            }
            Some(actions) => {
                let playbook = match Playbook::load(&actions.playbook) {
                    Ok(playbook) => playbook,
                    Err(err) => {
                        eprintln!("homeostat: {err}");
                        return ExitCode::from(exit::CONFIG);
                    }
                };
                let executor = match AnyExecutor::connect(&actions).await {
                    Ok(executor) => executor,
                    Err(err) => {
                        // Docker's errors name the address and its key; the Kubernetes client's do not.
                        let key = match actions.backend {
                            Backend::Docker => "",
                            Backend::Kubernetes => {
                                " (actions.kubernetes, or the kubeconfig / in-cluster service account)"
                            }
                        };
                        eprintln!("homeostat: cannot act: {err}{key}");
                        return ExitCode::from(exit::STARTUP);
                    }
                };
                // Every backend call is bounded in time (actions.execute_timeout).
                let executor = Bounded::new(executor, &actions);
                tracing::info!(
                    backend = ?actions.backend,
                    dry_run = actions.dry_run,
                    playbook = %actions.playbook.display(),
                    "Acting on incidents{}.",
                    if actions.dry_run { " in dry run: every decision is recorded, nothing is done" } else { "" }
                );
                if actions.dry_run {
                    let respond = move |parts: Parts| Responder::new(DryRun(executor), parts, playbook, actions);
                    homeostat_server::app::serve(config, credentials, listener, shutdown, respond).await
                } else {
                    let respond = move |parts: Parts| Responder::new(executor, parts, playbook, actions);
                    homeostat_server::app::serve(config, credentials, listener, shutdown, respond).await
                }
            }
        };
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(
                err @ (homeostat_server::app::AppError::Journal(_)
                | homeostat_server::app::AppError::JournalPassword(_)),
            ) => {
                eprintln!("homeostat: {err}");
                ExitCode::from(exit::STARTUP)
            }
            Err(err) => {
                eprintln!("homeostat: {err}");
                ExitCode::from(exit::RUNTIME)
            }
        }
    })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "Cannot listen for SIGTERM; only SIGINT stops homeostat.");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
