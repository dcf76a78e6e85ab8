//! The verify stage: within `actions.verify_timeout`, did the alert resolve
//! and does the rule's health query (if any) hold? Resolved and healthy:
//! success. Still firing, or resolved while the health query never held:
//! failure ("ran but still firing" is a failure). Resolved but Prometheus
//! never answered: timeout.
//!
//! Resolved means the journal holds the resolution, or Alertmanager
//! (`alertmanager_url`) no longer reports the alert: with Alertmanager's
//! default `group_interval` (5m) the resolution is delivered long after
//! the alert ended, later than a verification deadline of 2m.

use std::time::Duration;

use homeostat_adapters::alertmanager::AlertState;
use homeostat_adapters::prometheus::query_holds;
use homeostat_core::alert::AlertStatus;
use homeostat_core::config::ActionsConfig;
use homeostat_core::decision::Verification;
use homeostat_core::incident::Incident;
use homeostat_journal::Journal;

use super::guard::alert_state;

/// How often verification looks at the incident in the journal.
const VERIFY_POLL: Duration = Duration::from_millis(500);
/// How often it asks Alertmanager whether the alert ended (every 2 s).
const PROBE_EVERY: u32 = 4;

/// An action to verify.
#[derive(Clone, Debug)]
pub struct Check {
    pub incident_id: i64,
    /// The rule's health query, with the alert's labels filled in.
    pub health: Option<String>,
    /// Prometheus, for the health query.
    pub prometheus: Option<String>,
    pub timeout: Duration,
    /// Where to ask whether the incident's alert ended.
    pub probe: Option<(ActionsConfig, Incident)>,
}

/// What verification found, and how long it watched.
#[derive(Clone, Debug, PartialEq)]
pub struct Verified {
    pub verification: Verification,
    pub seconds: f64,
    /// Why the health query could not be run, when that was the last word.
    pub health_error: Option<String>,
}

/// Watches the incident until it is judged or the deadline passes (on
/// tokio's clock, so paused time drives it in tests).
pub async fn verify(journal: &Journal, http: &reqwest::Client, check: &Check) -> Verified {
    let started = tokio::time::Instant::now();
    let deadline = started + check.timeout;
    let mut last_health: Option<Result<bool, String>> = None;
    let mut polls = 0u32;
    let verification = loop {
        let mut resolved = match journal.incident(check.incident_id).await {
            Ok(Some(incident)) => incident.status == AlertStatus::Resolved,
            Ok(None) => false,
            Err(err) => {
                tracing::warn!(incident = check.incident_id, error = %err, "Verification cannot read the incident.");
                false
            }
        };
        polls += 1;
        if let (false, Some((config, incident)), 0) = (resolved, &check.probe, polls % PROBE_EVERY) {
            resolved = alert_state(http, config, incident).await == Ok(AlertState::Gone);
        }
        if resolved {
            match (&check.health, &check.prometheus) {
                (Some(query), Some(url)) => {
                    let healthy = query_holds(http, url, query).await;
                    if healthy == Ok(true) {
                        break Verification::Success;
                    }
                    last_health = Some(healthy);
                }
                _ => break Verification::Success,
            }
        }
        if tokio::time::Instant::now() >= deadline {
            break match (resolved, &last_health) {
                (false, _) | (true, Some(Ok(false))) => Verification::Failure,
                (true, _) => Verification::Timeout,
            };
        }
        tokio::time::sleep(VERIFY_POLL).await;
    };
    Verified {
        verification,
        seconds: started.elapsed().as_secs_f64(),
        health_error: match last_health {
            Some(Err(why)) => Some(why),
            _ => None,
        },
    }
}
