//! The guard stage, right before acting: gathers what the safety limits
//! need — the target's history, its readiness, the pause switch — into a
//! [`Situation`] that `homeostat_core::guard::check` judges; then, only if
//! the limits allow the action (so an alert storm deferred by the budget
//! costs no calls), checks the [`premise`]: the alert is still active in
//! Alertmanager, not silenced and not inhibited, the action would do what
//! it is for on this target (a clone would serve), and a rollback would
//! undo what the alert is about.

use chrono::{DateTime, Utc};
use homeostat_adapters::alertmanager::{self, AlertState};
use homeostat_adapters::executor::{Deployed, ExecError, Executor};
use homeostat_core::action::{Action, Target};
use homeostat_core::condition::Condition;
use homeostat_core::config::ActionsConfig;
use homeostat_core::decision::Verdict;
use homeostat_core::guard::{Readiness, Situation};
use homeostat_core::incident::Incident;
use homeostat_core::playbook::DeliberateStop;
use homeostat_journal::known_good::KnownGood;
use homeostat_journal::Journal;

use super::decide::Stop;

/// The target's readiness as the context stage read it, if it did: the
/// guard reuses it instead of reading again.
pub type ReadinessRead = Option<Result<Option<Readiness>, ExecError>>;

/// What the guard stage reads from.
pub struct Sources<'a, E> {
    pub journal: &'a Journal,
    pub executor: &'a E,
    pub config: &'a ActionsConfig,
    pub paused: bool,
    pub now: DateTime<Utc>,
    /// When this incident's last action was decided, if it was verified
    /// failed: the next step of its playbook is not held by the cooldown
    /// that action started.
    pub failed_step: Option<DateTime<Utc>>,
}

/// What Alertmanager says of the incident's alert; active when
/// `alertmanager_url` is not set. (Prometheus' `ALERTS` is no substitute:
/// the alert may come from another Prometheus than the one configured.)
pub(super) async fn alert_state(
    http: &reqwest::Client,
    config: &ActionsConfig,
    incident: &Incident,
) -> Result<AlertState, String> {
    match &config.alertmanager_url {
        Some(url) => alertmanager::state(http, url, incident).await,
        None => Ok(AlertState::Active),
    }
}

/// Why a rollback would not undo what the incident is about, if it would not.
fn rollback_premise(incident: &Incident, deployed: &Deployed) -> Option<String> {
    // Fixed before the alert came (its `startsAt` is when it fired, after
    // its `for:`, so a fix made while it was pending is not "after" it).
    if deployed.known_good {
        return Some(format!(
            "{} runs and is known good (it ran long enough before): a rollback would undo a fix",
            deployed.what
        ));
    }
    if let Some(implicated) = incident.implicated.as_ref().filter(|i| **i != deployed.what) {
        return Some(format!(
            "the implicated {implicated} no longer runs ({} does); a rollback would undo something else",
            deployed.what
        ));
    }
    let since = deployed.since.filter(|since| *since > incident.starts_at)?;
    Some(format!(
        "{} was deployed at {since}, after the alert started ({}): the alert is not about it",
        deployed.what, incident.starts_at
    ))
}

/// The situation `action` on `target` would act in (not silenced: that is
/// the [`premise`]'s to tell); a [`Stop`] when it cannot be told safely
/// (readiness that cannot be read refuses an action taking capacity away;
/// a target gone is `premise_gone`, as right before acting).
/// `readiness` is the one the context stage read, if it did.
pub async fn situation<E: Executor>(
    sources: Sources<'_, E>,
    target_key: &str,
    target: &Target,
    action: Action,
    readiness: ReadinessRead,
) -> homeostat_journal::Result<Result<Situation, Stop>> {
    let Sources {
        journal,
        executor,
        config,
        paused,
        now,
        failed_step,
    } = sources;
    let since = now - config.guard.budget.window.as_delta();
    // In dry run the would-be actions count, in flight for as long as a
    // real one could be verifying.
    let dry_run = config.dry_run.then(|| now - config.verify_timeout.as_delta());
    let history = journal.history(target_key.to_owned(), since, dry_run).await?;
    let last_action_on_target = history
        .last_action_on_target
        .filter(|last| failed_step.is_none_or(|step| *last > step));
    let readiness = if action.removes_capacity() {
        let read = match readiness {
            Some(read) => read,
            None => executor.readiness(target).await,
        };
        match read {
            Ok(readiness) => readiness,
            // Nothing is left to act on: a human should know, at once.
            Err(err @ ExecError::NotFound(_)) => {
                return Ok(Err(Stop::new(action, Verdict::PremiseGone, err.to_string())));
            }
            // Taking capacity away from something that cannot be seen is never safe.
            Err(err) => {
                let reason = format!("{action} takes capacity away and the target's readiness cannot be read: {err}");
                return Ok(Err(Stop::new(action, Verdict::Refuse, reason)));
            }
        }
    } else {
        None
    };
    Ok(Ok(Situation {
        now,
        paused,
        namespace: target.namespace.clone(),
        silenced: false,
        last_action_on_target,
        consecutive_failures: history.consecutive_failures,
        recent_actions: history.recent_actions,
        in_flight: history.in_flight,
        readiness,
    }))
}

/// What the target's own state must still say for an action to fit.
pub struct Intent<'a> {
    /// The rule's answer to a target stopped on purpose.
    pub deliberate_stop: DeliberateStop,
    /// The spec a repair restores.
    pub known_good: Option<&'a KnownGood>,
    /// When homeostat last acted on the incident, if it did.
    pub acted_at: Option<DateTime<Utc>>,
}

/// Why nothing is done to a target stopped on purpose, if it was and the
/// rule leaves it alone.
pub fn left_alone(condition: &Condition, deliberate_stop: DeliberateStop) -> Option<Stop> {
    let how = condition.stopped_deliberately.as_ref()?;
    (deliberate_stop == DeliberateStop::Leave).then(|| {
        let reason = format!("stopped deliberately: {how}; left alone (the rule's deliberate_stop is leave)");
        Stop::new(Action::Notify, Verdict::Notify, reason)
    })
}

/// Right before acting, from the target's condition: a [`Stop`] when it was
/// stopped on purpose (and the rule leaves it alone), when the runtime is
/// restarting it already (a restart or recreate would fight it: refused,
/// looked at again after a backoff), or when a repair finds nothing drifted
/// any more (`premise_gone`).
fn condition_premise<E: Executor>(
    executor: &E,
    condition: &Condition,
    incident: &Incident,
    action: Action,
    intent: &Intent<'_>,
) -> Result<(), Stop> {
    if let Some(stop) = left_alone(condition, intent.deliberate_stop) {
        return Err(stop);
    }
    if matches!(action, Action::Restart | Action::Recreate) {
        if let Some(why) = condition.runtime_restarting(incident.starts_at, intent.acted_at) {
            return Err(Stop::new(action, Verdict::Refuse, why));
        }
    }
    if action == Action::Repair {
        let drift = match (intent.known_good, &condition.spec) {
            (Some(good), Some(now)) => executor.drift(&good.spec, now),
            _ => Vec::new(),
        };
        if drift.is_empty() {
            let reason = "the target no longer differs from its last known good spec: nothing to repair";
            return Err(Stop::new(action, Verdict::PremiseGone, reason));
        }
    }
    Ok(())
}

/// Right before acting: whether the alert is silenced (for the guard to
/// judge), or a [`Stop`] when what the action is for no longer holds — the
/// alert is gone from Alertmanager (`premise_gone`), a rollback would undo
/// something deployed after the alert started (`premise_gone`), the
/// target's condition says otherwise (see [`condition_premise`]) — or does
/// not hold here (the executor finds the action unfit for the target, a
/// scale-out whose clone would not serve: `unplannable`, which escalates
/// rather than moving on to the playbook's next step as a failed action
/// would), or not yet (the alert is inhibited by another that explains it:
/// deferred until the inhibition lifts), or cannot be told (Alertmanager
/// unanswered: deferred; the condition, or for a rollback or a scale-out
/// the target, unreadable: refused; the target gone: `premise_gone`).
pub async fn premise<E: Executor>(
    http: &reqwest::Client,
    config: &ActionsConfig,
    executor: &E,
    incident: &Incident,
    target: &Target,
    action: Action,
    intent: &Intent<'_>,
) -> Result<bool, Stop> {
    let silenced = match alert_state(http, config, incident).await {
        Ok(AlertState::Active) => false,
        Ok(AlertState::Silenced) => true,
        Ok(AlertState::Gone) => {
            let reason = "the alert is no longer active (resolved or expired before homeostat acted)";
            return Err(Stop::new(action, Verdict::PremiseGone, reason));
        }
        // Inhibited: the inhibiting alert is about the cause (a failing
        // dependency), this one about its effect; acting here would act on
        // the wrong target. Looked at again when the inhibition lifts
        // (Alertmanager then notifies) or after the deferral's backoff.
        Ok(AlertState::Inhibited { by }) => {
            let reason = format!(
                "the alert is inhibited in Alertmanager by {}: that alert explains this one, so not acting on it \
                 while the inhibition holds",
                by.join(", ")
            );
            return Err(Stop::new(action, Verdict::Defer, reason));
        }
        Err(why) => {
            let reason = format!("cannot tell whether the alert is still active or silenced, so not acting: {why}");
            return Err(Stop::new(action, Verdict::Defer, reason));
        }
    };
    match executor.condition(target).await {
        Ok(Some(condition)) => condition_premise(executor, &condition, incident, action, intent)?,
        Ok(None) => {}
        // Gone: nothing is left to act on, a human should know.
        Err(err @ ExecError::NotFound(_)) => {
            return Err(Stop::new(action, Verdict::PremiseGone, err.to_string()));
        }
        Err(err) => {
            let reason = format!("cannot read the target's condition right before acting, so not acting: {err}");
            return Err(Stop::new(action, Verdict::Refuse, reason));
        }
    }
    match executor.unfit(target, action).await {
        Ok(None) => {}
        Ok(Some(why)) => return Err(Stop::new(action, Verdict::Unplannable, why)),
        Err(err) => {
            let reason = format!("cannot tell whether {action} would do what it is for here: {err}");
            return Err(Stop::new(action, Verdict::Refuse, reason));
        }
    }
    if action == Action::Rollback {
        match executor.deployed(target).await {
            Ok(deployed) => {
                if let Some(gone) = deployed.and_then(|d| rollback_premise(incident, &d)) {
                    return Err(Stop::new(action, Verdict::PremiseGone, gone));
                }
            }
            Err(err) => {
                let reason = format!("a rollback needs to know what runs, and it cannot be read: {err}");
                return Err(Stop::new(action, Verdict::Refuse, reason));
            }
        }
    }
    Ok(silenced)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident(implicated: Option<&str>) -> Incident {
        let at: DateTime<Utc> = "2026-12-07T08:00:00Z".parse().unwrap();
        Incident {
            id: 1,
            fingerprint: "f".into(),
            alertname: "BadDeploy".into(),
            status: homeostat_core::alert::AlertStatus::Firing,
            labels: Default::default(),
            annotations: Default::default(),
            starts_at: at,
            ends_at: None,
            generator_url: String::new(),
            first_seen: at,
            last_seen: at,
            resolved_at: None,
            deliveries: 1,
            next_check: None,
            vanished: false,
            implicated: implicated.map(str::to_owned),
            last_decision: None,
        }
    }

    fn deployed(what: &str, since: &str, known_good: bool) -> Deployed {
        Deployed {
            what: what.into(),
            since: Some(since.parse().unwrap()),
            known_good,
        }
    }

    #[test]
    fn a_rollback_undoes_only_a_new_image_deployed_before_the_alert() {
        let bad = deployed("app:2", "2026-12-07T07:59:50Z", false);
        assert_eq!(rollback_premise(&incident(None), &bad), None);
        assert_eq!(rollback_premise(&incident(Some("app:2")), &bad), None);
        // Fixed while the alert was pending: what runs is known good.
        let fixed = deployed("app:1", "2026-12-07T07:59:58Z", true);
        assert!(rollback_premise(&incident(None), &fixed)
            .unwrap()
            .contains("known good"));
        // Deployed after the alert fired.
        let later = deployed("app:3", "2026-12-07T08:00:05Z", false);
        assert!(rollback_premise(&incident(None), &later)
            .unwrap()
            .contains("after the alert started"));
        // Not what the incident implicated on its first look.
        assert!(rollback_premise(
            &incident(Some("app:2")),
            &deployed("app:3", "2026-12-07T07:00:00Z", false)
        )
        .unwrap()
        .contains("no longer runs"));
    }
}
