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
    let fresh = Config::load(path).map_err(|e| e.to_string())?;
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

/// Reloads on every `SIGHUP`, logging what it did or why it refused.
pub async fn on_hangup(state: Arc<AppState>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("Cannot listen for SIGHUP; reload with POST /-/reload.");
            return;
        };
        while hangups.recv().await.is_some() {
            log(&reload(&state));
        }
    }
    #[cfg(not(unix))]
    let _ = state;
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
