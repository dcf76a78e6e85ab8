//! What a backend says of a target right before homeostat acts on it:
//! whether it was stopped on purpose, whether the runtime's own restart
//! policy is already restarting it, and its spec, which the pipeline holds
//! against the last known good one to find drift. Read by the executor,
//! judged here with no I/O.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::action::Target;

/// A target's condition as the backend reads it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    /// The instance the target resolves to, as the known good specs are
    /// keyed (a container: `docker/container/<name>`).
    pub instance: String,
    /// Its spec now, in the executor's terms; `None` when it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<serde_json::Value>,
    /// How it was stopped on purpose, if it was (a container stopped
    /// through the Docker API that exited 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_deliberately: Option<String>,
    /// The runtime's own restart policy, when it has one that restarts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeRestarts>,
}

/// A runtime restart policy and what it has done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeRestarts {
    /// As the runtime names it (`unless-stopped`, `always`, `on-failure`).
    pub policy: String,
    /// Restarting it right now.
    pub restarting: bool,
    /// Restarts by the policy since the target was last started by hand.
    pub restarts: i64,
    /// When it last started.
    pub started_at: Option<DateTime<Utc>>,
}

/// How long before an alert started a restart by the runtime still counts
/// as its answer to what the alert is about: the alert fires only after its
/// `for:` and a scrape or two, while the runtime restarts in about a second.
pub const RUNTIME_ANSWER_SLACK: Duration = Duration::minutes(1);

impl Condition {
    /// Why homeostat should not restart the target as well, if the runtime
    /// is at it: it is restarting it now, or restarted it since shortly
    /// before the alert started and after homeostat's own last action on
    /// the incident (`acted_at`). A second restart on top of the runtime's
    /// would only cut short the one under way.
    pub fn runtime_restarting(&self, alert_started: DateTime<Utc>, acted_at: Option<DateTime<Utc>>) -> Option<String> {
        let runtime = self.runtime.as_ref()?;
        if runtime.restarting {
            return Some(format!(
                "the runtime is restarting it (restart policy {}, {} restarts): homeostat does not restart it too",
                runtime.policy, runtime.restarts
            ));
        }
        let started = runtime.started_at?;
        let since = (alert_started - RUNTIME_ANSWER_SLACK).max(acted_at.unwrap_or(DateTime::<Utc>::MIN_UTC));
        (runtime.restarts > 0 && started >= since).then(|| {
            format!(
                "the runtime restarted it at {started} (restart policy {}, {} restarts), after the alert's fault \
                 began: homeostat does not restart it a second time",
                runtime.policy, runtime.restarts
            )
        })
    }
}

/// One instance as the executor sees it, for recording known good specs.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// As [`Condition::instance`].
    pub instance: String,
    /// What the alerts about it name (for telling whether one fires).
    pub target: Target,
    pub spec: serde_json::Value,
    /// Running and not reported unhealthy.
    pub ready: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + Duration::seconds(seconds)
    }

    fn restarted(restarts: i64, started: i64, restarting: bool) -> Condition {
        Condition {
            instance: "docker/container/web-1".into(),
            runtime: Some(RuntimeRestarts {
                policy: "unless-stopped".into(),
                restarting,
                restarts,
                started_at: Some(at(started)),
            }),
            ..Condition::default()
        }
    }

    #[test]
    fn a_restart_by_the_runtime_around_the_alert_is_not_repeated() {
        let alert = at(1_000);
        // Restarted 20 s before the alert fired: the runtime answered the fault.
        let why = restarted(1, 980, false).runtime_restarting(alert, None).unwrap();
        assert!(why.contains("restart policy unless-stopped, 1 restarts"), "{why}");
        assert!(restarted(0, 980, true).runtime_restarting(alert, None).is_some());
        // Long before the alert: another fault's.
        assert_eq!(restarted(1, 800, false).runtime_restarting(alert, None), None);
        // Started by hand (or by homeostat): the policy restarted nothing.
        assert_eq!(restarted(0, 990, false).runtime_restarting(alert, None), None);
        // Before homeostat's own last action: that action is what counts.
        assert_eq!(
            restarted(2, 1_010, false).runtime_restarting(alert, Some(at(1_020))),
            None
        );
        // No policy that restarts.
        assert_eq!(Condition::default().runtime_restarting(alert, None), None);
    }
}
