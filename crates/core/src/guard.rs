//! The safety guard: every limit an action must pass before it runs.
//!
//! The guard takes values and returns a [`Verdict`]; everything it needs
//! (recent actions, failures, readiness, silences) is gathered beforehand
//! into a [`Situation`], so each limit is tested with plain values. A
//! verdict always carries its reason, which is recorded with the decision.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::action::Action;
use crate::duration::PromDuration;

/// `guard:` — the limits. Defaults err on the side of doing nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    /// No second action on the same target within this time. Default 5m.
    pub cooldown: PromDuration,
    /// At most `max_actions` actions started per `window`, across all targets.
    pub budget: Budget,
    /// Actions running (executing or being verified) at once. Default 2.
    pub max_concurrent: u32,
    /// Never take capacity away (restart a pod, scale in, cordon) if fewer
    /// than this many ready replicas would remain. Default 1.
    pub min_ready_replicas: u32,
    /// After this many consecutive failed actions on a target, stop acting
    /// on it and escalate. Default 3. It closes again with a successful
    /// action on the target, or when the escalated incident's alert
    /// resolves (fixed by whoever it went to, or gone by itself); each new
    /// incident then gets at most this many failed attempts again.
    pub circuit_breaker_failures: u32,
    /// Namespaces to act in; empty means all not denied.
    pub allow_namespaces: Vec<String>,
    /// Namespaces never acted in. Default `kube-system`.
    pub deny_namespaces: Vec<String>,
    /// Periods in which nothing is acted on.
    pub maintenance_windows: Vec<MaintenanceWindow>,
}

/// `guard.budget:`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub max_actions: u32,
    pub window: PromDuration,
}

/// `guard.maintenance_windows[]:` — from `start` to `end` (RFC 3339).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindow {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    #[serde(default)]
    pub reason: String,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            cooldown: PromDuration(std::time::Duration::from_secs(300)),
            budget: Budget {
                max_actions: 10,
                window: PromDuration(std::time::Duration::from_secs(3600)),
            },
            max_concurrent: 2,
            min_ready_replicas: 1,
            circuit_breaker_failures: 3,
            allow_namespaces: Vec::new(),
            deny_namespaces: vec!["kube-system".into()],
            maintenance_windows: Vec::new(),
        }
    }
}

impl GuardConfig {
    /// Refuses settings that would quietly switch a limit off or stop every
    /// action for a reason no one would guess; errors name the key.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let key = |name: &str| format!("actions.guard.{name}");
        let to_stop = "; to stop acting, set `actions.dry_run: true`";
        if self.budget.window.0.is_zero() {
            let why = "must be longer than 0: an empty window counts no actions, which switches the budget off";
            return Err((key("budget.window"), why.into()));
        }
        if self.budget.max_actions == 0 {
            return Err((key("budget.max_actions"), format!("must be at least 1{to_stop}")));
        }
        if self.max_concurrent == 0 {
            let why = format!("must be at least 1: 0 defers every action for ever{to_stop}");
            return Err((key("max_concurrent"), why));
        }
        if self.circuit_breaker_failures == 0 {
            let why = "must be at least 1: 0 would switch the circuit breaker off";
            return Err((key("circuit_breaker_failures"), why.into()));
        }
        for (i, window) in self.maintenance_windows.iter().enumerate() {
            if window.end <= window.start {
                let why = format!("must be after its start ({})", window.start.to_rfc3339());
                return Err((key(&format!("maintenance_windows[{i}].end")), why));
            }
        }
        Ok(())
    }
}

/// Everything the guard needs to know, gathered before it is asked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Situation {
    pub now: DateTime<Utc>,
    /// `POST /api/v1/pause` is in force.
    pub paused: bool,
    /// The alert is silenced in Alertmanager.
    pub silenced: bool,
    pub namespace: Option<String>,
    /// When the last action on this target started.
    pub last_action_on_target: Option<DateTime<Utc>>,
    /// Failed actions on this target since its last success.
    pub consecutive_failures: u32,
    /// Start times of actions within the budget window, any target.
    pub recent_actions: Vec<DateTime<Utc>>,
    /// Actions executing or being verified now.
    pub in_flight: u32,
    /// How much of the target's workload serves, when known.
    pub readiness: Option<Readiness>,
}

/// How much of a workload serves, as the executor sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    /// Replicas (pods, containers) ready to serve.
    pub ready: u32,
    /// Replicas there are.
    pub total: u32,
    /// Whether the instance the alert names is ready; `None` when the
    /// executor chooses the instance, which it does unready ones first.
    pub instance_ready: Option<bool>,
}

impl Readiness {
    /// A workload of one instance, ready or not.
    pub fn single(ready: bool) -> Readiness {
        Readiness {
            ready: u32::from(ready),
            total: 1,
            instance_ready: Some(ready),
        }
    }

    /// Whether acting on the instance takes a serving replica away.
    fn instance_serves(&self) -> bool {
        self.instance_ready.unwrap_or(self.ready >= self.total)
    }
}

/// The guard's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    /// Not now; ask again at `until` (or when the condition clears).
    Defer {
        limit: Limit,
        until: Option<DateTime<Utc>>,
        reason: String,
    },
    /// Not for this incident.
    Refuse {
        limit: Limit,
        reason: String,
    },
    /// Stop acting on the target and hand it to a human.
    Escalate {
        limit: Limit,
        reason: String,
    },
}

/// Which limit spoke; a bounded label for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    Paused,
    MaintenanceWindow,
    Silenced,
    Namespace,
    CircuitBreaker,
    Cooldown,
    Budget,
    Concurrency,
    MinReadyReplicas,
}

impl Verdict {
    pub fn is_allow(&self) -> bool {
        matches!(self, Verdict::Allow)
    }

    /// The decision this verdict records: allow, defer, refuse or escalate.
    pub fn decided(&self) -> crate::decision::Verdict {
        use crate::decision::Verdict as Decided;
        match self {
            Verdict::Allow => Decided::Allow,
            Verdict::Defer { .. } => Decided::Defer,
            Verdict::Refuse { .. } => Decided::Refuse,
            Verdict::Escalate { .. } => Decided::Escalate,
        }
    }

    /// `allow`, `defer`, `refuse` or `escalate`.
    pub fn kind(&self) -> &'static str {
        self.decided().as_str()
    }

    pub fn reason(&self) -> &str {
        match self {
            Verdict::Allow => "within every limit",
            Verdict::Defer { reason, .. } | Verdict::Refuse { reason, .. } | Verdict::Escalate { reason, .. } => reason,
        }
    }
}

/// Checks `action` against every limit, in order of precedence: a global
/// stop first, then what concerns the alert, the target, and capacity.
/// `notify` touches nothing and always passes.
pub fn check(config: &GuardConfig, action: Action, s: &Situation) -> Verdict {
    if action == Action::Notify {
        return Verdict::Allow;
    }
    let defer = |limit, until, reason: String| Verdict::Defer { limit, until, reason };
    if s.paused {
        return defer(
            Limit::Paused,
            None,
            "homeostat is paused (POST /api/v1/resume to resume)".into(),
        );
    }
    if let Some(w) = config
        .maintenance_windows
        .iter()
        .find(|w| w.start <= s.now && s.now < w.end)
    {
        let why = if w.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", w.reason)
        };
        return defer(
            Limit::MaintenanceWindow,
            Some(w.end),
            format!("in a maintenance window until {}{why}", w.end.to_rfc3339()),
        );
    }
    if s.silenced {
        return Verdict::Refuse {
            limit: Limit::Silenced,
            reason: "the alert is silenced in Alertmanager".into(),
        };
    }
    if let Some(ns) = &s.namespace {
        let denied = config.deny_namespaces.contains(ns);
        let not_allowed = !config.allow_namespaces.is_empty() && !config.allow_namespaces.contains(ns);
        if denied || not_allowed {
            return Verdict::Refuse {
                limit: Limit::Namespace,
                reason: format!(
                    "namespace {ns:?} is {}",
                    if denied {
                        "in guard.deny_namespaces"
                    } else {
                        "not in guard.allow_namespaces"
                    }
                ),
            };
        }
    }
    if config.circuit_breaker_failures > 0 && s.consecutive_failures >= config.circuit_breaker_failures {
        return Verdict::Escalate {
            limit: Limit::CircuitBreaker,
            reason: format!(
                "{} consecutive actions on this target failed (guard.circuit_breaker_failures: {})",
                s.consecutive_failures, config.circuit_breaker_failures
            ),
        };
    }
    if let Some(last) = s.last_action_on_target {
        let until = last + config.cooldown.as_delta();
        if s.now < until {
            return defer(
                Limit::Cooldown,
                Some(until),
                format!(
                    "the target was acted on at {}; cooldown {}",
                    last.to_rfc3339(),
                    config.cooldown
                ),
            );
        }
    }
    let window_start = s.now - config.budget.window.as_delta();
    let mut in_window: Vec<DateTime<Utc>> = s.recent_actions.iter().copied().filter(|t| *t > window_start).collect();
    if in_window.len() >= config.budget.max_actions as usize {
        in_window.sort();
        // Room comes back when the oldest action in the window ages out.
        let until = in_window
            .first()
            .map(|oldest| *oldest + config.budget.window.as_delta());
        return defer(
            Limit::Budget,
            until,
            format!(
                "{} actions in the last {} (guard.budget.max_actions: {})",
                in_window.len(),
                config.budget.window,
                config.budget.max_actions
            ),
        );
    }
    if s.in_flight >= config.max_concurrent {
        return defer(
            Limit::Concurrency,
            None,
            format!(
                "{} actions in flight (guard.max_concurrent: {})",
                s.in_flight, config.max_concurrent
            ),
        );
    }
    capacity(config, action, s.readiness)
}

/// The one limit that differs between actions on the same target: whether
/// `action` would leave fewer than `guard.min_ready_replicas` ready
/// replicas. [`check`] ends with it; the learning policy masks by it.
pub fn capacity(config: &GuardConfig, action: Action, readiness: Option<Readiness>) -> Verdict {
    if action.removes_capacity() {
        // Restarting an instance that does not serve takes nothing away.
        let takes_nothing = |r: &Readiness| action == Action::Restart && !r.instance_serves();
        let remaining = readiness.map(|r| {
            if takes_nothing(&r) {
                u32::MAX
            } else {
                r.ready.saturating_sub(1)
            }
        });
        match remaining {
            Some(left) if left >= config.min_ready_replicas => {}
            Some(left) => {
                return Verdict::Refuse {
                    limit: Limit::MinReadyReplicas,
                    reason: format!(
                        "{action} would leave {left} ready replica(s) (guard.min_ready_replicas: {})",
                        config.min_ready_replicas
                    ),
                }
            }
            None if config.min_ready_replicas == 0 => {}
            None => {
                return Verdict::Refuse {
                    limit: Limit::MinReadyReplicas,
                    reason: format!("{action} takes capacity away and the ready replicas are unknown"),
                }
            }
        }
    }
    Verdict::Allow
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    /// A situation every limit allows.
    fn calm() -> Situation {
        Situation {
            now: at("2026-11-28T12:00:00Z"),
            namespace: Some("shop".into()),
            readiness: Some(Readiness {
                ready: 3,
                total: 3,
                instance_ready: None,
            }),
            ..Situation::default()
        }
    }

    fn limit_of(v: &Verdict) -> Option<Limit> {
        match v {
            Verdict::Allow => None,
            Verdict::Defer { limit, .. } | Verdict::Refuse { limit, .. } | Verdict::Escalate { limit, .. } => {
                Some(*limit)
            }
        }
    }

    #[test]
    fn a_calm_situation_is_allowed() {
        let config = GuardConfig::default();
        for action in Action::ALL {
            assert_eq!(check(&config, action, &calm()), Verdict::Allow, "{action}");
        }
    }

    #[test]
    fn pause_defers_everything_but_notify() {
        let s = Situation { paused: true, ..calm() };
        let v = check(&GuardConfig::default(), Action::Restart, &s);
        assert_eq!((v.kind(), limit_of(&v)), ("defer", Some(Limit::Paused)));
        assert!(v.reason().contains("/api/v1/resume"));
        assert_eq!(check(&GuardConfig::default(), Action::Notify, &s), Verdict::Allow);
    }

    #[test]
    fn maintenance_windows_defer_until_their_end() {
        let config = GuardConfig {
            maintenance_windows: vec![MaintenanceWindow {
                start: at("2026-11-28T11:00:00Z"),
                end: at("2026-11-28T13:00:00Z"),
                reason: "database upgrade".into(),
            }],
            ..GuardConfig::default()
        };
        let v = check(&config, Action::Rollback, &calm());
        assert_eq!(
            v,
            Verdict::Defer {
                limit: Limit::MaintenanceWindow,
                until: Some(at("2026-11-28T13:00:00Z")),
                reason: "in a maintenance window until 2026-11-28T13:00:00+00:00: database upgrade".into()
            }
        );
        let after = Situation {
            now: at("2026-11-28T13:00:00Z"),
            ..calm()
        };
        assert_eq!(check(&config, Action::Rollback, &after), Verdict::Allow);
    }

    #[test]
    fn silenced_alerts_are_not_acted_on() {
        let v = check(
            &GuardConfig::default(),
            Action::Restart,
            &Situation {
                silenced: true,
                ..calm()
            },
        );
        assert_eq!((v.kind(), limit_of(&v)), ("refuse", Some(Limit::Silenced)));
    }

    #[test]
    fn namespaces_are_allowed_and_denied() {
        let system = Situation {
            namespace: Some("kube-system".into()),
            ..calm()
        };
        let v = check(&GuardConfig::default(), Action::Restart, &system);
        assert_eq!(limit_of(&v), Some(Limit::Namespace));
        assert!(v.reason().contains("deny_namespaces"), "{}", v.reason());
        let only_prod = GuardConfig {
            allow_namespaces: vec!["prod".into()],
            ..GuardConfig::default()
        };
        let v = check(&only_prod, Action::Restart, &calm());
        assert!(v.reason().contains("not in guard.allow_namespaces"), "{}", v.reason());
        let prod = Situation {
            namespace: Some("prod".into()),
            ..calm()
        };
        assert_eq!(check(&only_prod, Action::Restart, &prod), Verdict::Allow);
    }

    #[test]
    fn repeated_failures_open_the_circuit_and_escalate() {
        let config = GuardConfig::default();
        let two = Situation {
            consecutive_failures: 2,
            ..calm()
        };
        assert_eq!(check(&config, Action::Restart, &two), Verdict::Allow);
        let three = Situation {
            consecutive_failures: 3,
            ..calm()
        };
        let v = check(&config, Action::Restart, &three);
        assert_eq!((v.kind(), limit_of(&v)), ("escalate", Some(Limit::CircuitBreaker)));
    }

    #[test]
    fn cooldown_defers_until_it_ends() {
        let s = Situation {
            last_action_on_target: Some(at("2026-11-28T11:58:00Z")),
            ..calm()
        };
        let v = check(&GuardConfig::default(), Action::Restart, &s);
        assert_eq!(
            (limit_of(&v), &v),
            (
                Some(Limit::Cooldown),
                &Verdict::Defer {
                    limit: Limit::Cooldown,
                    until: Some(at("2026-11-28T12:03:00Z")),
                    reason: "the target was acted on at 2026-11-28T11:58:00+00:00; cooldown 5m".into()
                }
            )
        );
        let later = Situation {
            last_action_on_target: Some(at("2026-11-28T11:55:00Z")),
            ..calm()
        };
        assert_eq!(check(&GuardConfig::default(), Action::Restart, &later), Verdict::Allow);
    }

    #[test]
    fn the_budget_defers_until_the_oldest_action_ages_out() {
        let config = GuardConfig {
            budget: Budget {
                max_actions: 2,
                window: "1h".parse().unwrap(),
            },
            ..GuardConfig::default()
        };
        let s = Situation {
            recent_actions: vec![
                at("2026-11-28T11:30:00Z"),
                at("2026-11-28T11:10:00Z"),
                at("2026-11-28T10:00:00Z"), // outside the window
            ],
            ..calm()
        };
        let v = check(&config, Action::ScaleOut, &s);
        assert_eq!(limit_of(&v), Some(Limit::Budget));
        assert!(
            matches!(v, Verdict::Defer { until: Some(u), .. } if u == at("2026-11-28T12:10:00Z")),
            "{v:?}"
        );
        let one = Situation {
            recent_actions: vec![at("2026-11-28T11:30:00Z")],
            ..calm()
        };
        assert_eq!(check(&config, Action::ScaleOut, &one), Verdict::Allow);
    }

    #[test]
    fn concurrency_is_bounded() {
        let v = check(
            &GuardConfig::default(),
            Action::Recreate,
            &Situation { in_flight: 2, ..calm() },
        );
        assert_eq!((v.kind(), limit_of(&v)), ("defer", Some(Limit::Concurrency)));
    }

    #[test]
    fn capacity_is_never_taken_below_the_minimum() {
        let config = GuardConfig {
            min_ready_replicas: 2,
            ..GuardConfig::default()
        };
        let two_ready = Situation {
            readiness: Some(Readiness {
                ready: 2,
                total: 2,
                instance_ready: None,
            }),
            ..calm()
        };
        for action in [Action::Restart, Action::ScaleIn] {
            let v = check(&config, action, &two_ready);
            assert_eq!(
                (v.kind(), limit_of(&v)),
                ("refuse", Some(Limit::MinReadyReplicas)),
                "{action}"
            );
            assert!(v.reason().contains("would leave 1 ready replica"), "{}", v.reason());
        }
        // Adding capacity, replacing it gradually, or cordoning (whose drain
        // PodDisruptionBudgets guard) is not limited by it.
        for action in [Action::ScaleOut, Action::Recreate, Action::Rollback, Action::Cordon] {
            assert_eq!(check(&config, action, &two_ready), Verdict::Allow, "{action}");
        }
        let unknown = Situation {
            readiness: None,
            ..calm()
        };
        let v = check(&config, Action::Restart, &unknown);
        assert!(v.reason().contains("unknown"), "{}", v.reason());
        let three_ready = Situation {
            readiness: Some(Readiness {
                ready: 3,
                total: 3,
                instance_ready: None,
            }),
            ..calm()
        };
        assert_eq!(check(&config, Action::Restart, &three_ready), Verdict::Allow);
    }

    #[test]
    fn restarting_what_does_not_serve_takes_no_capacity() {
        let config = GuardConfig::default();
        let with = |ready, total, instance_ready| Situation {
            readiness: Some(Readiness {
                ready,
                total,
                instance_ready,
            }),
            ..calm()
        };
        // A single container that died: restarting it cannot make things worse.
        assert_eq!(
            check(&config, Action::Restart, &with(0, 1, Some(false))),
            Verdict::Allow
        );
        // One of two replicas down, chosen by the executor (unready first).
        assert_eq!(check(&config, Action::Restart, &with(1, 2, None)), Verdict::Allow);
        // But the alert names the one that still serves: refused.
        assert_eq!(
            check(&config, Action::Restart, &with(1, 2, Some(true))).kind(),
            "refuse"
        );
        // Scaling in always removes a replica.
        assert_eq!(check(&config, Action::ScaleIn, &with(1, 2, None)).kind(), "refuse");
    }

    #[test]
    fn verdicts_serialize_for_the_journal() {
        let v = Verdict::Refuse {
            limit: Limit::Silenced,
            reason: "x".into(),
        };
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(
            (json["verdict"].as_str(), json["limit"].as_str()),
            (Some("refuse"), Some("silenced"))
        );
    }
}
