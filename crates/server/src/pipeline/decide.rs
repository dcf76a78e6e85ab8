//! The decide stage: from an incident's past decisions, the playbook and
//! (in learn mode) the policy's choice to one action and its operation — or
//! to why nothing is done. Pure: values in, values out.

use chrono::{DateTime, Utc};
use homeostat_core::action::{plan, Action, Backend, Operation, Target};
use homeostat_core::alert::LabelSet;
use homeostat_core::config::PolicyMode;
use homeostat_core::decision::{ActionResult, Verdict, Verification};
use homeostat_core::playbook::{Playbook, Rule, Step};
use homeostat_core::policy::Mask;
use homeostat_journal::decisions::Decision;

/// Why nothing is done for now: the decision recorded instead of an action.
#[derive(Clone, Debug, PartialEq)]
pub struct Stop {
    /// The action the decision names (`notify` when none could be chosen).
    pub action: Action,
    pub verdict: Verdict,
    pub reason: String,
    /// For a deferral, when it ends (if it is known).
    pub until: Option<DateTime<Utc>>,
}

impl Stop {
    pub fn new(action: Action, verdict: Verdict, reason: impl Into<String>) -> Stop {
        Stop {
            action,
            verdict,
            reason: reason.into(),
            until: None,
        }
    }

    /// Ends in a human's hands.
    fn escalate(reason: String) -> Stop {
        Stop::new(Action::Notify, Verdict::Escalate, reason)
    }
}

/// Allowed for real: what the guard and the executor count.
fn acted(d: &Decision) -> bool {
    d.new.verdict == Verdict::Allow && !d.new.dry_run
}

/// Verified failed or timed out. A confounded outcome is no failure (the
/// alert resolved), so the playbook does not move past its action.
fn failed(d: &Decision) -> bool {
    d.outcome.is_some_and(Verification::failed)
}

/// When the incident's action under way or being verified was decided, if one is.
pub fn under_way(past: &[Decision]) -> Option<DateTime<Utc>> {
    past.iter()
        .filter(|d| acted(d))
        .find(|d| d.outcome.is_none() && d.result.is_none_or(ActionResult::needs_verifying))
        .map(|d| d.new.decided_at)
}

/// When the incident's last action was verified as recovered, if it was:
/// a success, or a recovery that came with an outside change (confounded),
/// which quiets the incident just the same though the action gets no credit.
pub fn fixed_at(past: &[Decision]) -> Option<DateTime<Utc>> {
    past.iter()
        .rev()
        .find(|d| acted(d))
        .filter(|d| d.outcome.is_some_and(Verification::recovered))
        .and_then(|d| d.verified_at)
}

/// When the incident's last action was decided, if it was verified failed:
/// its cooldown does not hold back the playbook's next step.
pub fn failed_step(past: &[Decision]) -> Option<DateTime<Utc>> {
    past.iter()
        .rev()
        .find(|d| acted(d))
        .filter(|d| failed(d))
        .map(|d| d.new.decided_at)
}

/// Since when the incident has been held back with `verdict`: when the
/// trailing run of such decisions began (escalations within it do not
/// break it), or `now` when the last decision said something else.
pub fn held_since(past: &[Decision], verdict: Verdict, now: DateTime<Utc>) -> DateTime<Utc> {
    past.iter()
        .rev()
        .filter(|d| d.new.verdict != Verdict::Escalate)
        .take_while(|d| d.new.verdict == verdict)
        .last()
        .map_or(now, |d| d.new.decided_at)
}

/// The incident's scale-outs that added a replica and that no `scale_in`
/// decision has undone yet (its record's `retires` names the scale-out's
/// decision id): what to remove once it resolved. In `dry_run`, those that
/// would have added one count too (what was never added is not removed
/// once acting for real).
pub fn added_replicas(past: &[Decision], dry_run: bool) -> Vec<i64> {
    let undone: Vec<i64> = past
        .iter()
        .filter(|d| d.new.action == Action::ScaleIn.as_str())
        .filter_map(|d| d.new.record["retires"].as_i64())
        .collect();
    past.iter()
        .filter(|d| d.new.verdict == Verdict::Allow && d.new.action == Action::ScaleOut.as_str())
        .filter(|d| match d.result {
            Some(ActionResult::Done) => !d.new.dry_run,
            Some(ActionResult::DryRun) => d.new.dry_run && dry_run,
            _ => false,
        })
        .map(|d| d.id)
        .filter(|id| !undone.contains(id))
        .collect()
}

/// How many of the incident's actions failed.
pub fn failures(past: &[Decision]) -> usize {
    past.iter().filter(|d| failed(d)).count()
}

/// Where the incident stands in its playbook rule.
#[derive(Debug)]
pub struct Progress<'a> {
    pub rule: &'a Rule,
    /// How many of the incident's actions failed.
    pub failed: usize,
    /// The actions that failed, oldest first.
    pub failed_actions: Vec<Action>,
    /// The rule's next action; `None` when every one failed.
    pub next: Option<Action>,
}

/// The incident's rule and how far along it is; a [`Stop`] when an earlier
/// action was interrupted (its effect is unknown) or no rule matches.
/// `drifted`: whether the target drifted from its last known good spec (a
/// `repair` applies only then).
pub fn progress<'a>(
    past: &[Decision],
    playbook: &'a Playbook,
    labels: &LabelSet,
    drifted: bool,
) -> Result<Progress<'a>, Stop> {
    // An action whose effect is unknown (homeostat stopped mid-way) is
    // never tried again blindly: a human decides.
    if past
        .iter()
        .filter(|d| acted(d))
        .any(|d| d.result == Some(ActionResult::Interrupted))
    {
        return Err(Stop::escalate(
            "an earlier action on this incident was interrupted and its effect is unknown; \
             escalating instead of acting again"
                .into(),
        ));
    }
    let Some(rule) = playbook.rule_for(labels) else {
        return Err(Stop::new(
            Action::Notify,
            Verdict::NoRule,
            "no playbook rule matches the alert",
        ));
    };
    let failed_actions: Vec<Action> = past
        .iter()
        .filter(|d| failed(d))
        .filter_map(|d| Action::parse(&d.new.action))
        .collect();
    let failed = failures(past);
    let next = match rule.step_where(failed, |action| drifted || action != Action::Repair) {
        Step::Try { action, .. } => Some(action),
        Step::Exhausted { .. } | Step::NoRule => None,
    };
    Ok(Progress {
        rule,
        failed,
        failed_actions,
        next,
    })
}

/// What the learning policy chose, as [`choose`] needs it.
#[derive(Clone, Copy, Debug)]
pub struct PolicyChoice<'a> {
    pub action: Option<Action>,
    pub why: &'a str,
}

/// The action to take and its operation, or why none is taken. `policy` is
/// the learning policy's choice, which decides only in [`PolicyMode::Learn`].
pub fn choose(
    progress: &Progress<'_>,
    mode: PolicyMode,
    policy: Option<PolicyChoice<'_>>,
    target: &Target,
    backend: Backend,
    drain_on_cordon: bool,
) -> Result<(Action, Operation), Stop> {
    let rule = progress.rule.name.as_str();
    // Whoever chooses, a rule whose every action failed goes to a human;
    // so does the learning policy preferring to do nothing where the rule
    // says to act (it has learned that nothing there works).
    let Some(playbook_action) = progress.next else {
        return Err(Stop::escalate(format!(
            "all {} actions of rule {rule:?} failed; escalating to a human",
            progress.failed
        )));
    };
    let rule_notifies = progress.rule.actions.contains(&Action::Notify);
    let action = match policy {
        Some(choice) if mode == PolicyMode::Learn => match choice.action {
            Some(Action::Notify) | None if !rule_notifies => {
                return Err(Stop::escalate(format!(
                    "the learning policy finds no action worth taking where rule {rule:?} says to act ({}); \
                     escalating to a human",
                    choice.why
                )));
            }
            Some(action) => action,
            None => Action::Notify,
        },
        _ => playbook_action,
    };
    let chooser = if mode == PolicyMode::Learn {
        "the learning policy chose"
    } else {
        "the playbook says"
    };
    // Notify touches nothing: recorded for a human, never executed or verified.
    if action == Action::Notify {
        let reason = format!("{chooser} to notify a human; nothing is done");
        return Err(Stop::new(action, Verdict::Notify, reason));
    }
    if target.is_empty() {
        let reason = "the alert's labels name nothing to act on (see actions.target_labels)";
        return Err(Stop::new(action, Verdict::NoTarget, reason));
    }
    match plan(action, backend, target, drain_on_cordon) {
        Ok(operation) => Ok((action, operation)),
        Err(refusal) => Err(Stop::new(action, Verdict::Unplannable, refusal.to_string())),
    }
}

/// What the policy may not choose for this target, and why. The mask holds
/// what is specific to an action: it cannot be planned on this backend or
/// target, or the executor finds it unfit there (`unfit`: a scale-out whose
/// clone would not serve), it would leave too few ready replicas (`capacity`), or it takes
/// capacity away or touches a node (`scale_in`, `cordon`) without the
/// playbook rule naming it, or it repairs a target that did not drift
/// (`drifted`), or it restarts or recreates a drifted one, which would keep
/// the drift where a repair can undo it. Limits on the target as a whole (pause,
/// silences, cooldown, budget, circuit breaker, …) apply to whichever action
/// is chosen, in the guard's check after the choice.
pub fn mask(
    target: &Target,
    backend: Backend,
    rule: &Rule,
    drain_on_cordon: bool,
    drifted: bool,
    unfit: impl Fn(Action) -> Option<String>,
    capacity: impl Fn(Action) -> Option<String>,
) -> Mask {
    let mut mask = Mask::none();
    let repairable = !target.is_empty() && plan(Action::Repair, backend, target, drain_on_cordon).is_ok();
    for action in Action::ALL.into_iter().filter(|a| *a != Action::Notify) {
        if target.is_empty() {
            mask.refuse(action, "the alert's labels name nothing to act on");
        } else if let Err(refusal) = plan(action, backend, target, drain_on_cordon) {
            mask.refuse(action, format!("unplannable: {refusal}"));
        } else if let Some(why) = unfit(action) {
            mask.refuse(action, format!("unplannable: {why}"));
        } else if matches!(action, Action::ScaleIn | Action::Cordon) && !rule.actions.contains(&action) {
            mask.refuse(
                action,
                "takes capacity away or touches a node, and the playbook rule does not name it",
            );
        } else if action == Action::Repair && !drifted {
            mask.refuse(action, "nothing drifted from a known good spec");
        } else if matches!(action, Action::Restart | Action::Recreate) && drifted && repairable {
            mask.refuse(
                action,
                "keeps the drift from the last known good spec, which repair undoes (and restarts it as well)",
            );
        } else if let Some(why) = capacity(action) {
            mask.refuse(action, format!("guard: {why}"));
        }
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use homeostat_journal::decisions::NewDecision;

    const PLAYBOOK: &str =
        "rules:\n  - name: down\n    matchers: ['alertname=\"ServiceDown\"']\n    actions: [restart, recreate]\n";

    fn at(second: u32) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_796_670_000 + i64::from(second), 0).unwrap()
    }

    /// A restart done at `second` and verified with `outcome` a second later.
    fn restart(id: i64, second: u32, outcome: Verification) -> Decision {
        Decision {
            id,
            new: NewDecision {
                incident_id: 1,
                decided_at: at(second),
                target_key: "docker/container/web-1".into(),
                action: "restart".into(),
                rule: Some("down".into()),
                attempt: 0,
                verdict: Verdict::Allow,
                reason: "within every limit".into(),
                record: serde_json::json!({}),
                dry_run: false,
            },
            executed_at: Some(at(second)),
            result: Some(ActionResult::Done),
            detail: Some("restarted container web-1".into()),
            outcome: Some(outcome),
            verified_at: Some(at(second + 1)),
        }
    }

    /// A confounded outcome quiets the incident as a success does, and the
    /// playbook does not count it as a failure: its next action stays the
    /// same, and nothing failed is ruled out for the policy.
    #[test]
    fn a_confounded_outcome_quiets_the_incident_and_is_no_failed_step() {
        let playbook = Playbook::parse(std::path::Path::new("playbook.yml"), PLAYBOOK).unwrap();
        let labels: LabelSet = [("alertname".to_owned(), "ServiceDown".to_owned())]
            .into_iter()
            .collect();

        let confounded = [restart(1, 0, Verification::Confounded)];
        assert_eq!(fixed_at(&confounded), Some(at(1)));
        assert_eq!(failed_step(&confounded), None);
        assert_eq!(failures(&confounded), 0);
        let step = progress(&confounded, &playbook, &labels, false).unwrap();
        assert_eq!((step.failed, step.next), (0, Some(Action::Restart)));
        assert!(step.failed_actions.is_empty());

        // The contrast: a failure moves the playbook on and quiets nothing.
        let failed = [restart(1, 0, Verification::Failure)];
        assert_eq!(fixed_at(&failed), None);
        assert_eq!(failed_step(&failed), Some(at(0)));
        let step = progress(&failed, &playbook, &labels, false).unwrap();
        assert_eq!((step.failed, step.next), (1, Some(Action::Recreate)));
    }

    use serde_json::json;

    /// Drifted: repair, never a restart or recreate that keeps the drift.
    /// Not drifted: no repair. A target repair cannot name (no container)
    /// keeps its restart.
    #[test]
    fn a_drifted_target_is_offered_repair_instead_of_a_restart() {
        let playbook = Playbook::parse(
            std::path::Path::new("playbook.yml"),
            "rules: [{name: down, actions: [repair, restart, recreate]}]",
        )
        .unwrap();
        let rule = &playbook.rules[0];
        let container = Target {
            container: Some("web-1".into()),
            ..Target::default()
        };
        let masked = |target: &Target, drifted| mask(target, Backend::Docker, rule, false, drifted, |_| None, |_| None);
        let drifted = masked(&container, true);
        assert!(drifted.allows(Action::Repair));
        for action in [Action::Restart, Action::Recreate] {
            assert!(drifted.reason(action).unwrap().contains("keeps the drift"), "{action}");
        }
        let steady = masked(&container, false);
        assert!(steady.allows(Action::Restart) && !steady.allows(Action::Repair));
        let service = Target {
            compose_project: Some("demo".into()),
            compose_service: Some("web".into()),
            ..Target::default()
        };
        assert!(masked(&service, true).allows(Action::Restart));
    }

    fn decision(
        id: i64,
        action: Action,
        result: Option<ActionResult>,
        dry_run: bool,
        retires: Option<i64>,
    ) -> Decision {
        Decision {
            id,
            new: NewDecision {
                incident_id: 1,
                decided_at: DateTime::<Utc>::UNIX_EPOCH,
                target_key: "docker/demo/web".into(),
                action: action.as_str().into(),
                rule: None,
                attempt: 0,
                verdict: Verdict::Allow,
                reason: String::new(),
                record: json!({ "retires": retires }),
                dry_run,
            },
            executed_at: None,
            result,
            detail: None,
            outcome: None,
            verified_at: None,
        }
    }

    #[test]
    fn each_replica_added_is_removed_once() {
        let done = Some(ActionResult::Done);
        let past = [
            decision(1, Action::ScaleOut, done, false, None),
            decision(2, Action::ScaleOut, Some(ActionResult::Error), false, None),
            decision(3, Action::ScaleOut, done, false, None),
            decision(4, Action::ScaleIn, done, false, Some(1)),
        ];
        // The failed one added nothing; the first is undone already.
        assert_eq!(added_replicas(&past, false), vec![3]);
        // What dry run would have added is removed (as it would be) only in dry run.
        let dry = [decision(5, Action::ScaleOut, Some(ActionResult::DryRun), true, None)];
        assert_eq!(added_replicas(&dry, true), vec![5]);
        assert_eq!(added_replicas(&dry, false), Vec::<i64>::new());
    }
}
