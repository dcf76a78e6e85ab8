//! The verify stage: within `actions.verify_timeout`, did the alert resolve
//! and does the rule's health query (if any) hold? Resolved and healthy:
//! success. Still firing, or resolved while the health query never held:
//! failure ("ran but still firing" is a failure). Resolved but Prometheus
//! never answered: timeout.
//!
//! A success is credited to the action only when nothing else changed the
//! target meanwhile: the executor is asked for outside changes from when
//! the action's call returned until now (a network reconnected by hand, a
//! limit restored with `docker update`, a redeploy by someone else), and
//! any makes the outcome confounded — the incident is over, but nothing is
//! learned about the action.
//!
//! Resolved means the journal holds the resolution, or Alertmanager
//! (`alertmanager_url`) no longer reports the alert: with Alertmanager's
//! default `group_interval` (5m) the resolution is delivered long after
//! the alert ended, later than a verification deadline of 2m.

use std::time::Duration;

use chrono::{DateTime, Utc};
use homeostat_adapters::alertmanager::AlertState;
use homeostat_adapters::executor::{ExecError, Executor};
use homeostat_adapters::prometheus::query_holds;
use homeostat_core::action::Target;
use homeostat_core::alert::AlertStatus;
use homeostat_core::clock::Clock;
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
    /// What the action was done to, whose outside changes are looked for.
    pub target: Target,
    /// When the action's call returned: changes after it are not its own.
    pub acted_at: DateTime<Utc>,
}

/// What verification found, and how long it watched.
#[derive(Clone, Debug, PartialEq)]
pub struct Verified {
    pub verification: Verification,
    pub seconds: f64,
    /// Why the health query could not be run, when that was the last word.
    pub health_error: Option<String>,
    /// The outside changes that made a recovery confounded, in words.
    pub outside_changes: Vec<String>,
}

/// What the recovery is credited to, given the outside changes to the
/// target read after a success: the action (still a success) when there
/// were none, nobody (confounded) when there were. Only a success is
/// looked at: a failure or timeout stays what it is.
pub fn credit(verification: Verification, outside: &[String]) -> Verification {
    match verification {
        Verification::Success if !outside.is_empty() => Verification::Confounded,
        other => other,
    }
}

/// Watches the incident until it is judged or the deadline passes (on
/// tokio's clock, so paused time drives it in tests); a success is then
/// checked for outside changes to the target (see [`credit`]).
pub async fn verify<E: Executor>(
    journal: &Journal,
    http: &reqwest::Client,
    executor: &E,
    clock: &dyn Clock,
    check: &Check,
) -> Verified {
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
    let seconds = started.elapsed().as_secs_f64();
    let outside_changes = match verification {
        Verification::Success => outside_changes(executor, check, clock.now()).await,
        _ => Vec::new(),
    };
    Verified {
        verification: credit(verification, &outside_changes),
        seconds,
        health_error: match last_health {
            Some(Err(why)) => Some(why),
            _ => None,
        },
        outside_changes,
    }
}

/// The outside changes to the check's target since its action returned.
/// When they cannot be read, none: the success stands, with a warning —
/// an unreadable event log (an engine or API server away for a moment) is
/// no sign that someone else fixed the target, and holding back every
/// lesson whenever it hiccups would starve the policy.
async fn outside_changes<E: Executor>(executor: &E, check: &Check, now: DateTime<Utc>) -> Vec<String> {
    if check.target.is_empty() {
        return Vec::new();
    }
    let read: Result<Vec<String>, ExecError> = executor.changes(&check.target, check.acted_at, now).await;
    read.unwrap_or_else(|err| {
        tracing::warn!(
            incident = check.incident_id,
            error = %err,
            "Cannot read outside changes to the target; crediting the recovery to the action."
        );
        Vec::new()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_success_with_outside_changes_is_confounded() {
        let changed = ["network demo: container web-1 connected at 20:31:02 UTC".to_owned()];
        assert_eq!(credit(Verification::Success, &changed), Verification::Confounded);
        assert_eq!(credit(Verification::Success, &[]), Verification::Success);
        for other in [Verification::Failure, Verification::Timeout] {
            assert_eq!(credit(other, &changed), other);
        }
    }
}
