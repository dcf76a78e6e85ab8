//! Reload on `SIGHUP` or `POST /-/reload`: the config file is read and
//! validated again, and its playbook put in effect. A config or playbook
//! that does not validate is refused, saying why, and the running one stays.
//! What else changed in the file takes effect at the next restart, and the
//! answer says which sections those are.

use std::sync::Arc;

use homeostat_core::config::{Config, ProcessEnv};
use homeostat_core::playbook::Playbook;
use serde::Serialize;

use crate::server::AppState;

/// What a reload did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reloaded {
    /// Rules in the playbook now in effect.
    pub playbook_rules: usize,
    /// Sections of the file that changed but wait for a restart.
    pub restart_needed: Vec<String>,
}

/// Reads the config file again and puts its playbook in effect.
pub fn reload(state: &AppState) -> Result<Reloaded, String> {
    let running = &state.config;
    let Some(path) = &running.source else {
        return Err("homeostat was started without a config file: there is nothing to reload".into());
    };
    let mut fresh = Config::load(path).map_err(|e| e.to_string())?;
    // What the command line set (`--listen`, `--allow-unauthenticated`) stays.
    fresh.server.listen = running.server.listen;
    fresh.server.allow_unauthenticated = running.server.allow_unauthenticated;
    fresh.validate(path, &ProcessEnv).map_err(|e| e.to_string())?;
    let (Some(now), Some(then)) = (&fresh.actions, &running.actions) else {
        return Err(format!(
            "{}: `actions:` was added or removed; acting is switched on or off only by a restart",
            path.display()
        ));
    };
    let playbook = Playbook::load(&now.playbook).map_err(|e| e.to_string())?;
    let playbook_rules = playbook.rules.len();
    state.controls.set_playbook(playbook);
    // Compared with the playbook's path as it ran: a new path was just reloaded.
    let mut compared = fresh.clone();
    if let Some(actions) = compared.actions.as_mut() {
        actions.playbook = then.playbook.clone();
    }
    let sections = |c: &Config| serde_json::to_value(c).unwrap_or_default();
    let (old, new) = (sections(running), sections(&compared));
    let restart_needed = new
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, value)| old.get(key.as_str()) != Some(value))
        .map(|(key, _)| key.clone())
        .collect();
    Ok(Reloaded {
        playbook_rules,
        restart_needed,
    })
}

/// `SIGHUP`s from now on: until this is called, a `SIGHUP` stops the
/// process (its default), so `serve` calls it before anything slow.
#[cfg(unix)]
pub type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
pub type Hangups = ();

#[cfg(unix)]
pub fn listen() -> Hangups {
    use tokio::signal::unix::{signal, SignalKind};
    let hangups = signal(SignalKind::hangup()).ok();
    if hangups.is_none() {
        tracing::warn!("Cannot listen for SIGHUP; reload with POST /-/reload.");
    }
    hangups
}

#[cfg(not(unix))]
pub fn listen() -> Hangups {}

/// Reloads on every `SIGHUP`, logging what it did or why it refused.
pub async fn on_hangup(state: Arc<AppState>, hangups: Hangups) {
    #[cfg(unix)]
    if let Some(mut hangups) = hangups {
        while hangups.recv().await.is_some() {
            log(&reload(&state));
        }
    }
    #[cfg(not(unix))]
    let _ = (state, hangups);
}

/// Logs a reload's outcome.
pub fn log(result: &Result<Reloaded, String>) {
    match result {
        Ok(done) if done.restart_needed.is_empty() => {
            tracing::info!(playbook_rules = done.playbook_rules, "Reloaded the playbook.")
        }
        Ok(done) => tracing::warn!(
            playbook_rules = done.playbook_rules,
            restart_needed = ?done.restart_needed,
            "Reloaded the playbook; the other changes take effect at the next restart."
        ),
        Err(why) => tracing::error!(error = %why, "Reload refused; the running config and playbook stay."),
    }
}
