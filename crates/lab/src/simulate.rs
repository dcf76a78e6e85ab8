//! The learning policy in a simulator of the demo's fault scenarios.
//!
//! Each episode injects one fault. The fault fires the alert that
//! `rules/services.rules.yml` defines for it, with its labels, so the real
//! playbook rule matches; context [`Features`] are drawn from a
//! scenario-specific distribution. Then, as `respond` does, attempt after
//! attempt: the guard ([`guard::check`], with a [`Situation`] kept per
//! target: cooldowns, the budget, consecutive failures, readiness) and the
//! planner ([`plan`]) say which actions may run; the policy picks one;
//! the guard is asked again before the action "runs" (a refusal there is
//! counted as an unsafe choice and nothing runs); the action's effect is
//! drawn (it may fix the fault, do nothing, or harm); verification turns
//! that into an [`Outcome`]. A failed attempt moves on to the next, after
//! the cooldown the guard imposes; picking `notify`, or having nothing
//! allowed, hands the incident to a human.
//!
//! Three policies run on the same sequence of faults: the learned
//! [`Policy`] (the code `serve` uses, learning from every outcome), the
//! static playbook (what `respond` does today), and a random action among
//! those the guard allows. Each scenario has a known best action: the one
//! with the highest expected reward under the same [`reward`] the policy
//! learns from.
//!
//! Time is simulated; nothing sleeps. One run is seeded and repeatable.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use chrono::{DateTime, Duration as TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use homeostat_core::action::{plan, Action, Backend, Target};
use homeostat_core::alert::LabelSet;
use homeostat_core::guard::{self, GuardConfig, Readiness, Situation, Verdict};
use homeostat_core::playbook::{Playbook, PlaybookError, Step};
use homeostat_core::policy::{
    evaluate, reward, Decide, Features, Logged, Mask, OffPolicyEstimate, Outcome, Policy, PolicyConfig, PolicyKey,
    RewardConfig, Verification,
};

/// The shipped playbook and alert rules, the simulator's defaults.
pub const SHIPPED_PLAYBOOK: &str = include_str!("../../../rules/playbook.yml");
pub const SHIPPED_ALERT_RULES: &str = include_str!("../../../rules/services.rules.yml");

/// How long verification waits for the alert to resolve, as `actions.verify_timeout`.
pub const VERIFY_SECONDS: f64 = 120.0;
/// From escalation to a human fixing the fault.
pub const HUMAN_SECONDS: f64 = 1800.0;
/// Extra SLO-violation time a harmful action causes.
pub const HARM_SECONDS: f64 = 60.0;
/// Simulated time between the starts of two episodes: longer than the
/// guard's budget window, so episodes do not share a budget.
const EPISODE_SPACING_SECONDS: i64 = 2 * 3600;
/// A bound on attempts per incident, besides the guard's circuit breaker.
const MAX_ATTEMPTS: usize = 7;

#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error(transparent)]
    Playbook(#[from] PlaybookError),
    #[error("invalid alert rules {path}: {message}")]
    AlertRules { path: String, message: String },
    #[error("scenario {scenario}: alert {alert:?} is not defined in {path}")]
    MissingAlert {
        scenario: &'static str,
        alert: &'static str,
        path: String,
    },
    #[error("scenario {scenario}: no playbook rule matches alert {alert:?}")]
    NoRule {
        scenario: &'static str,
        alert: &'static str,
    },
    #[error("cannot write the plot to {path}: {message}")]
    Plot { path: String, message: String },
    #[error("--episodes must be at least 1")]
    NoEpisodes,
}

pub type Result<T, E = SimulateError> = std::result::Result<T, E>;

/// What one action does in one scenario.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Effect {
    /// Probability that it fixes the fault.
    fix: f64,
    /// Mean seconds from the action to the alert resolving, when it fixes.
    seconds: f64,
    /// Probability that it makes things worse (more errors).
    harm: f64,
}

const fn fx(fix: f64, seconds: f64, harm: f64) -> Effect {
    Effect { fix, seconds, harm }
}

/// One fault scenario.
#[derive(Clone)]
struct Scenario {
    name: &'static str,
    /// The alerts it may fire, with their weights; each must exist in the
    /// alert rules.
    alerts: Vec<(&'static str, f64)>,
    service: &'static str,
    /// The best action, checked against the expected rewards.
    best: Action,
    /// From the fault to the alert reaching homeostat (services.rules.yml's `for` and windows).
    detect_seconds: f64,
    /// Replicas, and how many are ready while the fault lasts.
    replicas: u32,
    ready: u32,
    /// Whether the instance the alert names still serves.
    instance_ready: bool,
    /// Whether the fault violates the SLO (no-fault does not).
    violates_slo: bool,
    /// The fault ends by itself this many seconds after it starts
    /// (a dependency recovering), drawn uniformly from the range.
    self_heal: Option<(f64, f64)>,
    features: fn(&mut StdRng) -> Features,
    /// Actions not listed do nothing.
    effects: Vec<(Action, Effect)>,
}

impl Scenario {
    fn effect(&self, action: Action) -> Effect {
        self.effects
            .iter()
            .find(|(a, _)| *a == action)
            .map_or(fx(0.0, 0.0, 0.0), |(_, e)| *e)
    }

    /// The expected reward of `action`'s first attempt.
    fn expected_reward(&self, costs: &RewardConfig, action: Action) -> f64 {
        if action == Action::Notify {
            return reward(costs, action, &outcome(Verification::Failure, None, false));
        }
        let e = self.effect(action);
        let fixed = reward(costs, action, &outcome(Verification::Success, Some(e.seconds), false));
        let failed = reward(costs, action, &outcome(Verification::Failure, None, false));
        e.fix * fixed + (1.0 - e.fix) * failed - e.harm * costs.harm
    }
}

fn outcome(verification: Verification, seconds_to_resolve: Option<f64>, harm: bool) -> Outcome {
    Outcome {
        verification,
        seconds_to_resolve,
        harm,
    }
}

/// `Some(value)` with probability 0.9: PromQL does not always answer.
fn maybe<T>(rng: &mut StdRng, value: impl FnOnce(&mut StdRng) -> T) -> Option<T> {
    let value = value(rng);
    rng.gen_bool(0.9).then_some(value)
}

fn uniform(rng: &mut StdRng, lo: f64, hi: f64) -> f64 {
    rng.gen_range(lo..hi)
}

/// A scenario firing `alerts` on `service` with two ready replicas, the
/// alert naming one that still serves; its features and effects to fill in.
fn scenario(
    name: &'static str,
    alerts: Vec<(&'static str, f64)>,
    service: &'static str,
    best: Action,
    detect_seconds: f64,
) -> Scenario {
    Scenario {
        name,
        alerts,
        service,
        best,
        detect_seconds,
        replicas: 2,
        ready: 2,
        instance_ready: true,
        violates_slo: true,
        self_heal: None,
        features: |_| Features::default(),
        effects: Vec::new(),
    }
}

/// The scenarios of DESIGN.md, on the demo's two services.
fn scenarios() -> Vec<Scenario> {
    use Action::*;
    vec![
        Scenario {
            features: |r| Features {
                error_ratio: maybe(r, |r| uniform(r, 0.3, 0.6)),
                recent_restarts: maybe(r, |r| r.gen_range(0..2)),
                recent_deploy: maybe(r, |r| r.gen_bool(0.05)),
                ready_ratio: maybe(r, |_| 0.5),
                ..Features::default()
            },
            effects: vec![
                (Restart, fx(0.95, 20.0, 0.0)),
                (Recreate, fx(0.9, 60.0, 0.0)),
                (Rollback, fx(0.85, 90.0, 0.05)),
                (ScaleIn, fx(0.0, 0.0, 0.3)),
            ],
            ready: 1,
            instance_ready: false,
            ..scenario("crash", vec![("ServiceDown", 1.0)], "service_b", Restart, 4.0)
        },
        Scenario {
            // The new version dies at start: ServiceDown fires within
            // seconds; starts going on past the fourth in 5 minutes fire
            // ServiceCrashLooping.
            // ServiceDown is also what a plain crash fires: only the context
            // (a deploy, restarts) tells them apart.
            features: |r| Features {
                error_ratio: maybe(r, |r| uniform(r, 0.6, 1.0)),
                recent_restarts: maybe(r, |r| r.gen_range(4..9)),
                recent_deploy: maybe(r, |r| r.gen_bool(0.95)),
                ready_ratio: maybe(r, |_| 0.0),
                ..Features::default()
            },
            effects: vec![
                (Rollback, fx(0.95, 45.0, 0.0)),
                (Restart, fx(0.05, 20.0, 0.0)),
                (Recreate, fx(0.05, 60.0, 0.0)),
                (ScaleOut, fx(0.0, 0.0, 0.2)),
            ],
            ready: 0,
            instance_ready: false,
            ..scenario(
                "crash-loop-after-deploy",
                vec![("ServiceDown", 0.5), ("ServiceCrashLooping", 0.5)],
                "service_b",
                Rollback,
                40.0,
            )
        },
        Scenario {
            features: |r| Features {
                error_ratio: maybe(r, |r| uniform(r, 0.2, 0.5)),
                latency_ratio: maybe(r, |r| uniform(r, 2.0, 10.0)),
                recent_restarts: maybe(r, |_| 0),
                ready_ratio: maybe(r, |_| 0.5),
                recent_deploy: maybe(r, |r| r.gen_bool(0.05)),
                ..Features::default()
            },
            effects: vec![
                (Restart, fx(0.95, 20.0, 0.0)),
                (Recreate, fx(0.9, 60.0, 0.0)),
                (Rollback, fx(0.3, 90.0, 0.05)),
                (ScaleOut, fx(0.05, 60.0, 0.0)),
            ],
            ready: 1,
            instance_ready: false,
            ..scenario("hang", vec![("ServiceHung", 1.0)], "service_a", Restart, 4.0)
        },
        Scenario {
            features: |r| Features {
                error_ratio: maybe(r, |r| uniform(r, 0.0, 0.04)),
                latency_ratio: maybe(r, |r| uniform(r, 0.5, 1.5)),
                memory_exhaustion_seconds: maybe(r, |r| uniform(r, 60.0, 300.0)),
                ready_ratio: maybe(r, |_| 1.0),
                recent_deploy: maybe(r, |r| r.gen_bool(0.1)),
                ..Features::default()
            },
            effects: vec![
                (Restart, fx(0.9, 20.0, 0.0)),
                (Recreate, fx(0.9, 60.0, 0.0)),
                (Rollback, fx(0.4, 90.0, 0.05)),
            ],
            ..scenario("memory-leak", vec![("MemoryLeak", 1.0)], "service_a", Restart, 20.0)
        },
        Scenario {
            features: |r| Features {
                error_ratio: maybe(r, |r| uniform(r, 0.0, 0.02)),
                latency_ratio: maybe(r, |r| uniform(r, 1.0, 3.0)),
                ready_ratio: maybe(r, |_| 1.0),
                recent_restarts: maybe(r, |_| 0),
                ..Features::default()
            },
            effects: vec![
                (Restart, fx(0.9, 20.0, 0.0)),
                (Recreate, fx(0.9, 60.0, 0.0)),
                (ScaleOut, fx(0.1, 60.0, 0.0)),
                (Rollback, fx(0.4, 90.0, 0.05)),
            ],
            ..scenario("cpu-hog", vec![("CPUSaturation", 1.0)], "service_a", Restart, 120.0)
        },
        Scenario {
            features: |r| Features {
                error_ratio: maybe(r, |r| uniform(r, 0.0, 0.01)),
                latency_ratio: maybe(r, |r| uniform(r, 1.2, 4.0)),
                ready_ratio: maybe(r, |_| 1.0),
                recent_restarts: maybe(r, |_| 0),
                ..Features::default()
            },
            effects: vec![
                (Restart, fx(0.9, 20.0, 0.0)),
                (Recreate, fx(0.85, 60.0, 0.0)),
                (ScaleOut, fx(0.15, 60.0, 0.0)),
                (ScaleIn, fx(0.2, 30.0, 0.4)),
            ],
            replicas: 3,
            ready: 3,
            ..scenario(
                "slow-replica",
                vec![("HighLatencyP99", 1.0)],
                "service_b",
                Restart,
                35.0,
            )
        },
        Scenario {
            features: |r| Features {
                error_ratio: maybe(r, |r| uniform(r, 0.1, 0.5)),
                ready_ratio: maybe(r, |_| 1.0),
                recent_deploy: maybe(r, |_| false),
                ..Features::default()
            },
            effects: vec![
                (Restart, fx(0.85, 20.0, 0.0)),
                (Recreate, fx(0.85, 60.0, 0.0)),
                (Rollback, fx(0.2, 90.0, 0.1)),
            ],
            ..scenario("error-burst", vec![("HighErrorRatio", 1.0)], "service_a", Restart, 11.0)
        },
        Scenario {
            features: |r| Features {
                error_ratio: maybe(r, |r| uniform(r, 0.1, 0.8)),
                ready_ratio: maybe(r, |_| 1.0),
                recent_deploy: maybe(r, |_| true),
                ..Features::default()
            },
            effects: vec![
                (Rollback, fx(0.95, 45.0, 0.0)),
                (Restart, fx(0.0, 0.0, 0.1)),
                (Recreate, fx(0.0, 0.0, 0.1)),
            ],
            ..scenario("bad-deploy", vec![("BadDeploy", 1.0)], "service_b", Rollback, 11.0)
        },
        Scenario {
            features: |r| Features {
                error_ratio: maybe(r, |r| uniform(r, 0.2, 0.9)),
                ready_ratio: maybe(r, |_| 1.0),
                recent_deploy: maybe(r, |r| r.gen_bool(0.1)),
                ..Features::default()
            },
            effects: vec![
                (Recreate, fx(0.0, 0.0, 0.3)),
                (Rollback, fx(0.0, 0.0, 0.3)),
                (ScaleOut, fx(0.0, 0.0, 0.1)),
            ],
            replicas: 1,
            ready: 1,
            self_heal: Some((300.0, 900.0)),
            ..scenario(
                "dependency-failure",
                vec![("UpstreamErrors", 1.0)],
                "service_a",
                Notify,
                17.0,
            )
        },
        Scenario {
            features: |r| Features {
                error_ratio: maybe(r, |r| uniform(r, 0.0, 0.03)),
                latency_ratio: maybe(r, |r| uniform(r, 0.3, 0.9)),
                ready_ratio: maybe(r, |_| 1.0),
                ..Features::default()
            },
            effects: vec![
                (Recreate, fx(0.0, 0.0, 0.2)),
                (Rollback, fx(0.0, 0.0, 0.5)),
                (ScaleOut, fx(0.0, 0.0, 0.0)),
            ],
            replicas: 1,
            ready: 1,
            violates_slo: false,
            ..scenario("no-fault", vec![("ErrorBudgetBurn", 1.0)], "service_a", Notify, 0.0)
        },
    ]
}

/// The names of the scenarios, in report order.
pub fn scenario_names() -> Vec<&'static str> {
    scenarios().iter().map(|s| s.name).collect()
}

/// A Prometheus rule file, as far as the simulator reads it.
#[derive(Deserialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
struct RuleGroup {
    rules: Vec<AlertRule>,
}

#[derive(Deserialize)]
struct AlertRule {
    alert: Option<String>,
    #[serde(default)]
    labels: LabelSet,
}

/// Options of one run.
#[derive(Clone, Debug)]
pub struct Options {
    pub episodes: usize,
    pub seed: u64,
    /// Episodes of a scenario per window of the oracle-share series.
    pub window: usize,
    pub policy: PolicyConfig,
    pub guard: GuardConfig,
    /// The playbook's YAML and a name for errors.
    pub playbook: (String, String),
    /// The alert rules' YAML and a name for errors.
    pub alert_rules: (String, String),
}

impl Options {
    /// The shipped playbook and rules, default policy and guard.
    pub fn new(episodes: usize, seed: u64) -> Options {
        Options {
            episodes,
            seed,
            window: 10,
            policy: PolicyConfig::default(),
            guard: GuardConfig::default(),
            playbook: ("rules/playbook.yml".into(), SHIPPED_PLAYBOOK.into()),
            alert_rules: ("rules/services.rules.yml".into(), SHIPPED_ALERT_RULES.into()),
        }
    }
}

/// The three policies compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Contender {
    Learned,
    Playbook,
    Random,
}

impl Contender {
    pub const ALL: [Contender; 3] = [Contender::Learned, Contender::Playbook, Contender::Random];

    pub fn as_str(self) -> &'static str {
        match self {
            Contender::Learned => "learned",
            Contender::Playbook => "playbook",
            Contender::Random => "random",
        }
    }
}

/// One contender's results on one scenario.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    pub episodes: usize,
    /// Share of incidents whose first action was the best one, per window
    /// of `window` episodes of this scenario.
    pub oracle_share_by_window: Vec<f64>,
    /// The same over the episodes after the 20th of this scenario.
    pub oracle_share_after_20: Option<f64>,
    /// Episodes of this scenario after which the first action is the best
    /// one in at least 95% of the remaining episodes.
    pub episodes_to_reliable: Option<usize>,
    /// Sum over episodes of (best expected reward − first action's expected reward).
    pub cumulative_regret: f64,
    /// Cumulative regret after each window.
    pub regret_by_window: Vec<f64>,
    /// Actions carried out (not notify).
    pub actions: usize,
    pub actions_by_kind: BTreeMap<Action, usize>,
    /// Actions chosen that the guard refused when asked again: must be 0.
    pub unsafe_actions: usize,
    /// Actions that made things worse.
    pub harmful_actions: usize,
    /// Incidents handed to a human.
    pub escalations: usize,
    pub slo_violation_seconds: f64,
    pub mean_slo_violation_seconds: f64,
    pub mean_reward_first_action: f64,
    #[serde(skip)]
    first_oracle: Vec<bool>,
    #[serde(skip)]
    regret: Vec<f64>,
    #[serde(skip)]
    first_rewards: f64,
}

/// One scenario's results.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioReport {
    pub name: &'static str,
    pub alerts: Vec<AlertReport>,
    pub best: Action,
    pub expected_rewards: BTreeMap<Action, f64>,
    pub contenders: BTreeMap<Contender, Stats>,
}

/// An alert a scenario fires, and the playbook rule it matches.
#[derive(Clone, Debug, Serialize)]
pub struct AlertReport {
    pub alert: &'static str,
    /// The share of the scenario's incidents that fire it.
    pub weight: f64,
    pub rule: String,
    pub rule_actions: Vec<Action>,
}

/// One contender over every scenario.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    pub cumulative_regret: f64,
    /// Mean regret per episode in the first and last quarter of the run.
    pub regret_per_episode_first_quarter: f64,
    pub regret_per_episode_last_quarter: f64,
    pub unsafe_actions: usize,
    pub harmful_actions: usize,
    pub actions_on_no_fault: usize,
    pub slo_violation_seconds: f64,
    pub escalations: usize,
    /// Time spent simulating this contender's incidents (its decisions,
    /// learning, the guard and the simulated effects).
    pub seconds: f64,
    /// Cumulative regret after every episode (for the plot; not in JSON).
    #[serde(skip)]
    pub regret_curve: Vec<f64>,
}

/// The targets of issue #7, checked.
#[derive(Clone, Debug, Serialize)]
pub struct Targets {
    /// The learned policy's regret per episode in the last quarter is under
    /// a quarter of the first quarter's.
    pub sublinear_regret: bool,
    /// Every scenario's oracle share after its 20th episode is ≥ 95%.
    pub oracle_95_after_20: bool,
    pub scenarios_below_95: Vec<&'static str>,
    pub zero_unsafe: bool,
    /// 1 − learned SLO-violation time / playbook's.
    pub slo_reduction_vs_playbook: f64,
    pub slo_reduction_at_least_30pct: bool,
    pub zero_actions_on_no_fault: bool,
}

/// Off-policy evaluation inside the simulation: from the random policy's
/// logged first decisions (known propensities), the static playbook's
/// value estimated by IPS, against its value measured by running it.
#[derive(Clone, Debug, Serialize)]
pub struct OffPolicyCheck {
    pub estimate: OffPolicyEstimate,
    /// The playbook's mean first-action reward in its own run.
    pub playbook_actual: f64,
}

/// Everything one run found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub seed: u64,
    pub episodes: usize,
    pub window: usize,
    pub scenarios: Vec<ScenarioReport>,
    pub totals: BTreeMap<Contender, Totals>,
    pub targets: Targets,
    pub off_policy: OffPolicyCheck,
    pub elapsed_seconds: f64,
    pub episodes_per_second: f64,
}

/// What the guard has seen of one target.
#[derive(Clone, Debug, Default)]
struct TargetHistory {
    last_action: Option<DateTime<Utc>>,
    consecutive_failures: u32,
}

/// One contender's world: its own policy, targets and randomness.
struct World {
    contender: Contender,
    policy: Policy,
    targets: BTreeMap<&'static str, TargetHistory>,
    /// Start times of actions on any target, for the guard's budget.
    recent: Vec<DateTime<Utc>>,
    rng: StdRng,
    log: Vec<Logged>,
}

/// One incident's course for one contender.
struct Incident {
    first: Option<Action>,
    first_expected: f64,
    actions: usize,
    executed: Vec<Action>,
    unsafe_actions: usize,
    harmful: usize,
    escalated: bool,
    slo_seconds: f64,
}

/// One alert of a scenario, with what it was matched to.
struct Prepared {
    /// The scenario's position in [`scenarios`].
    index: usize,
    alert: &'static str,
    weight: f64,
    scenario: Scenario,
    labels: LabelSet,
    key: PolicyKey,
    rule_name: String,
    rule_actions: Vec<Action>,
    target: Target,
    expected: BTreeMap<Action, f64>,
}

fn prepare(options: &Options) -> Result<Vec<Prepared>> {
    let playbook = Playbook::parse(Path::new(&options.playbook.0), &options.playbook.1)?;
    let (rules_path, rules_text) = &options.alert_rules;
    let rules: RuleFile =
        serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(rules_text)).map_err(|e| {
            SimulateError::AlertRules {
                path: rules_path.clone(),
                message: format!("at `{}`: {}", e.path(), e.inner()),
            }
        })?;
    let alerts: Vec<&AlertRule> = rules.groups.iter().flat_map(|g| &g.rules).collect();
    let mut prepared = Vec::new();
    for (index, scenario) in scenarios().into_iter().enumerate() {
        for &(alert, weight) in &scenario.alerts {
            let rule = alerts
                .iter()
                .find(|r| r.alert.as_deref() == Some(alert))
                .ok_or_else(|| SimulateError::MissingAlert {
                    scenario: scenario.name,
                    alert,
                    path: rules_path.clone(),
                })?;
            let mut labels = rule.labels.clone();
            let pod = format!("{}-7d9f-x2k4q", scenario.service.replace('_', "-"));
            for (k, v) in [
                ("alertname", alert.to_owned()),
                ("service", scenario.service.to_owned()),
                ("namespace", "demo".to_owned()),
                ("deployment", scenario.service.replace('_', "-")),
                ("pod", pod),
            ] {
                labels.insert(k.to_owned(), v);
            }
            let matched = playbook.rule_for(&labels).ok_or(SimulateError::NoRule {
                scenario: scenario.name,
                alert,
            })?;
            let target = Target::from_labels(&labels, &Default::default());
            let expected = Action::ALL
                .iter()
                .map(|a| (*a, scenario.expected_reward(&options.policy.reward, *a)))
                .collect();
            prepared.push(Prepared {
                index,
                alert,
                weight,
                key: PolicyKey::from_labels(&labels),
                rule_name: matched.name.clone(),
                // No scenario drifts from a known good spec, so the
                // pipeline passes a rule's `repair` over, as here.
                rule_actions: matched
                    .actions
                    .iter()
                    .copied()
                    .filter(|a| *a != Action::Repair)
                    .collect(),
                labels,
                target,
                expected,
                scenario: scenario.clone(),
            });
        }
    }
    Ok(prepared)
}

/// The best action's expected reward and the action, among those the
/// guard and planner allow on a first attempt.
fn oracle(p: &Prepared, mask: &Mask) -> (Action, f64) {
    Action::ALL
        .iter()
        .filter(|a| mask.allows(**a))
        .map(|a| (*a, p.expected[a]))
        .max_by(|x, y| x.1.total_cmp(&y.1))
        .unwrap_or((Action::Notify, 0.0))
}

impl World {
    fn situation(&self, p: &Prepared, now: DateTime<Utc>) -> Situation {
        let history = self.targets.get(p.scenario.name).cloned().unwrap_or_default();
        situation(p, now, &history, self.recent.clone())
    }

    /// What may run now: the planner's and the guard's refusals, with the
    /// earliest time a deferral ends.
    fn mask(&self, p: &Prepared, guard: &GuardConfig, now: DateTime<Utc>) -> (Mask, Option<DateTime<Utc>>, bool) {
        mask(p, guard, &self.situation(p, now))
    }
}

/// The guard's view of `p`'s target at `now`.
fn situation(p: &Prepared, now: DateTime<Utc>, history: &TargetHistory, recent: Vec<DateTime<Utc>>) -> Situation {
    Situation {
        now,
        namespace: p.target.namespace.clone(),
        last_action_on_target: history.last_action,
        consecutive_failures: history.consecutive_failures,
        recent_actions: recent,
        readiness: Some(Readiness {
            ready: p.scenario.ready,
            total: p.scenario.replicas,
            instance_ready: Some(p.scenario.instance_ready),
        }),
        ..Situation::default()
    }
}

/// The planner's and the guard's refusals in `situation`, the earliest time
/// a deferral ends, and whether any action other than notify may run.
fn mask(p: &Prepared, guard: &GuardConfig, situation: &Situation) -> (Mask, Option<DateTime<Utc>>, bool) {
    let now = situation.now;
    let mut mask = Mask::none();
    let mut until: Option<DateTime<Utc>> = None;
    let mut acting_allowed = false;
    for action in Action::ALL {
        if let Err(refusal) = plan(action, Backend::Kubernetes, &p.target, false) {
            mask.refuse(action, format!("unplannable: {refusal}"));
            continue;
        }
        let verdict = guard::check(guard, action, situation);
        match &verdict {
            Verdict::Allow if action != Action::Notify => acting_allowed = true,
            Verdict::Defer { until: u, .. } => {
                let u = u.unwrap_or(now + TimeDelta::seconds(30));
                until = Some(until.map_or(u, |t| t.min(u)));
            }
            _ => {}
        }
        if !verdict.is_allow() {
            mask.refuse(action, format!("guard: {}: {}", verdict.kind(), verdict.reason()));
        }
    }
    (mask, until, acting_allowed)
}

impl World {
    fn choose(&mut self, p: &Prepared, features: &Features, mask: &Mask, failed: &[Action]) -> Option<(Action, f64)> {
        let open: Vec<Action> = Action::ALL
            .into_iter()
            .filter(|a| mask.allows(*a) && !failed.contains(a))
            .collect();
        match self.contender {
            Contender::Learned => {
                let choice = self.policy.decide(
                    &Decide {
                        key: &p.key,
                        features,
                        rule: Some(homeostat_core::policy::RulePrior {
                            name: &p.rule_name,
                            actions: &p.rule_actions,
                        }),
                        mask,
                        failed,
                    },
                    &mut self.rng,
                );
                choice.action.map(|a| (a, choice.propensity))
            }
            Contender::Playbook => match playbook_step(&p.rule_actions, failed.len()) {
                Some(a) if mask.allows(a) => Some((a, 1.0)),
                // respond records the refusal and does nothing more: a human takes over.
                _ => None,
            },
            Contender::Random => {
                if open.is_empty() {
                    None
                } else {
                    let a = open[self.rng.gen_range(0..open.len())];
                    Some((a, 1.0 / open.len() as f64))
                }
            }
        }
    }

    /// Runs one incident of `p` starting at `start`.
    fn incident(&mut self, p: &Prepared, options: &Options, start: DateTime<Utc>, features: &Features) -> Incident {
        let s = &p.scenario;
        let self_heal = s.self_heal.map(|(lo, hi)| self.rng.gen_range(lo..hi));
        let mut clock = s.detect_seconds;
        let at = |t: f64| start + TimeDelta::milliseconds((t * 1000.0) as i64);
        let mut failed: Vec<Action> = Vec::new();
        let mut result = Incident {
            first: None,
            first_expected: 0.0,
            actions: 0,
            executed: Vec::new(),
            unsafe_actions: 0,
            harmful: 0,
            escalated: false,
            slo_seconds: 0.0,
        };
        let mut recovered_at: Option<f64> = None;
        for attempt in 0..MAX_ATTEMPTS {
            if let Some(end) = self_heal.filter(|end| *end <= clock) {
                recovered_at = Some(end);
                break;
            }
            let (mut mask, mut until, mut acting) = self.mask(p, &options.guard, at(clock));
            // respond waits while the guard defers every action (cooldown,
            // budget, concurrency): the next delivery asks again.
            for _ in 0..100 {
                if acting {
                    break;
                }
                let Some(u) = until else { break };
                clock = (u - start).num_milliseconds() as f64 / 1000.0;
                (mask, until, acting) = self.mask(p, &options.guard, at(clock));
            }
            let chosen = self.choose(p, features, &mask, &failed);
            if attempt == 0 {
                result.first = chosen.map(|(a, _)| a);
                result.first_expected = chosen.map_or(0.0, |(a, _)| p.expected[&a]);
            }
            let Some((action, propensity)) = chosen.filter(|(a, _)| *a != Action::Notify) else {
                if let Some((Action::Notify, propensity)) = chosen {
                    let r = reward(
                        &options.policy.reward,
                        Action::Notify,
                        &outcome(Verification::Failure, None, false),
                    );
                    self.log_decision(p, features, &mask, &failed, Action::Notify, propensity, r, attempt);
                    if self.contender == Contender::Learned {
                        self.policy.learn(&p.key, features, Action::Notify, r);
                    }
                }
                result.escalated = true;
                break;
            };
            // The guard has the last word before anything runs.
            if !guard::check(&options.guard, action, &self.situation(p, at(clock))).is_allow() {
                result.unsafe_actions += 1;
                result.escalated = true;
                break;
            }
            result.actions += 1;
            result.executed.push(action);
            self.targets.entry(s.name).or_default().last_action = Some(at(clock));
            let cutoff = at(clock) - TimeDelta::from_std(options.guard.budget.window.0).unwrap_or(TimeDelta::zero());
            self.recent.retain(|t| *t > cutoff);
            self.recent.push(at(clock));
            let effect = s.effect(action);
            let harm = self.rng.gen_bool(effect.harm);
            if harm {
                result.harmful += 1;
                result.slo_seconds += HARM_SECONDS;
            }
            let fixes = self.rng.gen_bool(effect.fix);
            let fix_seconds = effect.seconds * self.rng.gen_range(0.5..1.5);
            let healed_within = self_heal.map(|end| end - clock).filter(|d| *d <= VERIFY_SECONDS);
            let resolved_after = match (fixes, healed_within) {
                (true, Some(d)) => Some(fix_seconds.min(d)),
                (true, None) => Some(fix_seconds),
                (false, d) => d,
            };
            let verified = match resolved_after {
                Some(d) if d <= VERIFY_SECONDS => outcome(Verification::Success, Some(d), harm),
                _ => outcome(Verification::Failure, None, harm),
            };
            let r = reward(&options.policy.reward, action, &verified);
            self.log_decision(p, features, &mask, &failed, action, propensity, r, attempt);
            if self.contender == Contender::Learned {
                self.policy.learn(&p.key, features, action, r);
            }
            let history = self.targets.entry(s.name).or_default();
            if verified.verification == Verification::Success {
                history.consecutive_failures = 0;
                recovered_at = Some(clock + resolved_after.unwrap_or(0.0));
                break;
            }
            history.consecutive_failures += 1;
            clock += VERIFY_SECONDS;
            failed.push(action);
        }
        if recovered_at.is_none() {
            // Whoever fixes it (a human, or the fault ending) closes the
            // circuit breaker, as `serve` does when an escalated incident
            // resolves; without it the breaker, which otherwise only a
            // successful action resets, would never close.
            self.targets.entry(s.name).or_default().consecutive_failures = 0;
        }
        let end = match (recovered_at, self_heal) {
            (Some(t), _) => t,
            // A human fixes it, or it ends by itself, whichever comes first.
            (None, Some(heal)) => heal.min(clock + HUMAN_SECONDS),
            (None, None) => {
                result.escalated = true;
                clock + HUMAN_SECONDS
            }
        };
        if s.violates_slo {
            result.slo_seconds += end;
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn log_decision(
        &mut self,
        p: &Prepared,
        features: &Features,
        mask: &Mask,
        failed: &[Action],
        action: Action,
        propensity: f64,
        reward: f64,
        attempt: usize,
    ) {
        // First decisions of the random policy feed the off-policy check.
        if self.contender != Contender::Random || attempt > 0 {
            return;
        }
        self.log.push(Logged {
            key: p.key.clone(),
            features: features.clone(),
            rule_actions: p.rule_actions.clone(),
            allowed: Action::ALL
                .into_iter()
                .filter(|a| mask.allows(*a) && !failed.contains(a))
                .collect(),
            action,
            propensity,
            reward,
        });
    }
}

/// The playbook's action for the attempt after `failed` failures, as
/// [`Playbook::next_step`] does for the matched rule (its repair passed over:
/// nothing drifted).
fn playbook_step(rule_actions: &[Action], failed: usize) -> Option<Action> {
    rule_actions.get(failed).copied()
}

/// Runs the simulation.
pub fn run(options: &Options) -> Result<Report> {
    if options.episodes == 0 {
        return Err(SimulateError::NoEpisodes);
    }
    let started = Instant::now();
    let prepared = prepare(options)?;
    // The playbook contender must be exactly what `respond` does.
    let playbook = Playbook::parse(Path::new(&options.playbook.0), &options.playbook.1)?;
    for p in &prepared {
        for failed in 0..=p.rule_actions.len() {
            let step = playbook
                .rule_for(&p.labels)
                .map(|rule| rule.step_where(failed, |a| a != Action::Repair));
            let expected = match step {
                Some(Step::Try { action, .. }) => Some(action),
                _ => None,
            };
            debug_assert_eq!(playbook_step(&p.rule_actions, failed), expected);
        }
    }
    let epoch: DateTime<Utc> = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
    let mut scenario_rng = StdRng::seed_from_u64(options.seed);
    let mut worlds: Vec<World> = Contender::ALL
        .iter()
        .enumerate()
        .map(|(i, c)| World {
            contender: *c,
            policy: Policy::new(options.policy.clone()),
            targets: BTreeMap::new(),
            recent: Vec::new(),
            rng: StdRng::seed_from_u64(options.seed.wrapping_add(1 + i as u64)),
            log: Vec::new(),
        })
        .collect();
    let scenario_count = prepared.iter().map(|p| p.index + 1).max().unwrap_or(0);
    let mut stats: Vec<BTreeMap<Contender, Stats>> = (0..scenario_count).map(|_| BTreeMap::new()).collect();
    let mut totals: BTreeMap<Contender, Totals> = Contender::ALL.iter().map(|c| (*c, Totals::default())).collect();
    for episode in 0..options.episodes {
        let which = scenario_rng.gen_range(0..scenario_count);
        let variants: Vec<&Prepared> = prepared.iter().filter(|p| p.index == which).collect();
        let total: f64 = variants.iter().map(|p| p.weight).sum();
        let mut pick = scenario_rng.gen_range(0.0..total.max(f64::MIN_POSITIVE));
        let p = variants
            .iter()
            .find(|p| {
                pick -= p.weight;
                pick < 0.0
            })
            .unwrap_or(&variants[0]);
        let features = (p.scenario.features)(&mut scenario_rng);
        let start = epoch + TimeDelta::seconds(episode as i64 * EPISODE_SPACING_SECONDS);
        // The oracle is judged on what a target with no history allows: a
        // policy locked out by its own earlier failures (the circuit
        // breaker) is not excused.
        let fresh = situation(p, start, &TargetHistory::default(), Vec::new());
        let (fresh_mask, _, _) = mask(p, &options.guard, &fresh);
        for world in &mut worlds {
            let (best, best_value) = oracle(p, &fresh_mask);
            let timer = Instant::now();
            let incident = world.incident(p, options, start, &features);
            let spent = timer.elapsed().as_secs_f64();
            let regret = (best_value - incident.first_expected).max(0.0);
            let s = stats[which].entry(world.contender).or_default();
            s.episodes += 1;
            s.first_oracle.push(incident.first == Some(best));
            s.regret.push(regret);
            s.first_rewards += incident.first_expected;
            s.actions += incident.actions;
            for a in &incident.executed {
                *s.actions_by_kind.entry(*a).or_default() += 1;
            }
            s.unsafe_actions += incident.unsafe_actions;
            s.harmful_actions += incident.harmful;
            s.escalations += usize::from(incident.escalated);
            s.slo_violation_seconds += incident.slo_seconds;
            let t = totals.entry(world.contender).or_default();
            t.cumulative_regret += regret;
            t.seconds += spent;
            t.regret_curve.push(t.cumulative_regret);
            t.unsafe_actions += incident.unsafe_actions;
            t.harmful_actions += incident.harmful;
            t.escalations += usize::from(incident.escalated);
            t.slo_violation_seconds += incident.slo_seconds;
            if !p.scenario.violates_slo {
                t.actions_on_no_fault += incident.actions;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    for per in &mut stats {
        for s in per.values_mut() {
            summarize(s, options.window);
        }
    }
    for t in totals.values_mut() {
        let n = t.regret_curve.len();
        let quarter = (n / 4).max(1);
        let at = |i: usize| if i == 0 { 0.0 } else { t.regret_curve[i - 1] };
        t.regret_per_episode_first_quarter = at(quarter.min(n)) / quarter as f64;
        t.regret_per_episode_last_quarter = (at(n) - at(n - quarter.min(n))) / quarter as f64;
    }
    let scenarios: Vec<ScenarioReport> = stats
        .into_iter()
        .enumerate()
        .filter_map(|(index, contenders)| {
            let variants: Vec<&Prepared> = prepared.iter().filter(|p| p.index == index).collect();
            let p = variants.first()?;
            let total: f64 = variants.iter().map(|p| p.weight).sum();
            Some(ScenarioReport {
                name: p.scenario.name,
                alerts: variants
                    .iter()
                    .map(|v| AlertReport {
                        alert: v.alert,
                        weight: v.weight / total,
                        rule: v.rule_name.clone(),
                        rule_actions: v.rule_actions.clone(),
                    })
                    .collect(),
                best: p.scenario.best,
                expected_rewards: p.expected.clone(),
                contenders,
            })
        })
        .collect();
    let targets = targets(&scenarios, &totals);
    let random_log = &worlds[2].log;
    let estimate = evaluate(random_log, |e| {
        let step = playbook_step(&e.rule_actions, 0).filter(|a| e.allowed.contains(a));
        if step == Some(e.action) {
            1.0
        } else {
            0.0
        }
    });
    let (sum, n) = scenarios
        .iter()
        .filter_map(|s| s.contenders.get(&Contender::Playbook))
        .fold((0.0, 0usize), |(sum, n), s| {
            (sum + s.mean_reward_first_action * s.episodes as f64, n + s.episodes)
        });
    Ok(Report {
        seed: options.seed,
        episodes: options.episodes,
        window: options.window,
        scenarios,
        totals,
        targets,
        off_policy: OffPolicyCheck {
            estimate,
            playbook_actual: if n == 0 { 0.0 } else { sum / n as f64 },
        },
        elapsed_seconds: elapsed,
        episodes_per_second: options.episodes as f64 / elapsed.max(1e-9),
    })
}

fn summarize(s: &mut Stats, window: usize) {
    let window = window.max(1);
    s.oracle_share_by_window = s
        .first_oracle
        .chunks(window)
        .map(|c| c.iter().filter(|x| **x).count() as f64 / c.len() as f64)
        .collect();
    let after = &s.first_oracle[s.first_oracle.len().min(20)..];
    s.oracle_share_after_20 =
        (!after.is_empty()).then(|| after.iter().filter(|x| **x).count() as f64 / after.len() as f64);
    s.episodes_to_reliable = (0..s.first_oracle.len()).find(|&k| {
        let rest = &s.first_oracle[k..];
        rest.iter().filter(|x| **x).count() as f64 >= 0.95 * rest.len() as f64
    });
    let mut cumulative = 0.0;
    s.regret_by_window = s
        .regret
        .chunks(window)
        .map(|c| {
            cumulative += c.iter().sum::<f64>();
            cumulative
        })
        .collect();
    s.cumulative_regret = cumulative;
    s.mean_slo_violation_seconds = s.slo_violation_seconds / s.episodes.max(1) as f64;
    s.mean_reward_first_action = s.first_rewards / s.episodes.max(1) as f64;
}

fn targets(scenarios: &[ScenarioReport], totals: &BTreeMap<Contender, Totals>) -> Targets {
    let learned = &totals[&Contender::Learned];
    let playbook = &totals[&Contender::Playbook];
    let below: Vec<&'static str> = scenarios
        .iter()
        .filter(|s| {
            s.contenders
                .get(&Contender::Learned)
                .and_then(|st| st.oracle_share_after_20)
                .is_some_and(|share| share < 0.95)
        })
        .map(|s| s.name)
        .collect();
    let reduction = if playbook.slo_violation_seconds > 0.0 {
        1.0 - learned.slo_violation_seconds / playbook.slo_violation_seconds
    } else {
        0.0
    };
    Targets {
        sublinear_regret: learned.regret_per_episode_last_quarter < 0.25 * learned.regret_per_episode_first_quarter
            || learned.regret_per_episode_last_quarter == 0.0,
        oracle_95_after_20: below.is_empty(),
        scenarios_below_95: below,
        zero_unsafe: totals.values().all(|t| t.unsafe_actions == 0),
        slo_reduction_vs_playbook: reduction,
        slo_reduction_at_least_30pct: reduction >= 0.3,
        zero_actions_on_no_fault: learned.actions_on_no_fault == 0,
    }
}

/// The report as a text table.
pub fn table(report: &Report) -> String {
    let mut out = format!(
        "homeostat simulate: {} episodes, seed {}, {:.0} episodes/s ({:.2} s)\n\n",
        report.episodes, report.seed, report.episodes_per_second, report.elapsed_seconds
    );
    out.push_str(
        "| scenario | alert | playbook rule | best | oracle share after 20 (learned / playbook / random) | episodes to reliable (learned) | regret (learned / playbook / random) | mean SLO violation s (learned / playbook / random) | harmful (l / p / r) |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for s in &report.scenarios {
        let get = |c: Contender| s.contenders.get(&c);
        let share = |c| {
            get(c)
                .and_then(|st| st.oracle_share_after_20)
                .map_or("—".to_owned(), |v| format!("{:.0}%", v * 100.0))
        };
        let num = |c, f: fn(&Stats) -> f64, digits: usize| {
            get(c).map_or("—".to_owned(), |st| format!("{:.*}", digits, f(st)))
        };
        let count = |c, f: fn(&Stats) -> usize| get(c).map_or("—".to_owned(), |st| f(st).to_string());
        let alerts: Vec<&str> = s.alerts.iter().map(|a| a.alert).collect();
        let rules: Vec<String> = s
            .alerts
            .iter()
            .map(|a| {
                let actions: Vec<&str> = a.rule_actions.iter().map(|x| x.as_str()).collect();
                format!("{} [{}]", a.rule, actions.join(", "))
            })
            .collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} / {} / {} | {} | {} / {} / {} | {} / {} / {} | {} / {} / {} |\n",
            s.name,
            alerts.join(" or "),
            rules.join(" or "),
            s.best,
            share(Contender::Learned),
            share(Contender::Playbook),
            share(Contender::Random),
            get(Contender::Learned)
                .and_then(|st| st.episodes_to_reliable)
                .map_or("never".to_owned(), |k| k.to_string()),
            num(Contender::Learned, |st| st.cumulative_regret, 2),
            num(Contender::Playbook, |st| st.cumulative_regret, 2),
            num(Contender::Random, |st| st.cumulative_regret, 2),
            num(Contender::Learned, |st| st.mean_slo_violation_seconds, 0),
            num(Contender::Playbook, |st| st.mean_slo_violation_seconds, 0),
            num(Contender::Random, |st| st.mean_slo_violation_seconds, 0),
            count(Contender::Learned, |st| st.harmful_actions),
            count(Contender::Playbook, |st| st.harmful_actions),
            count(Contender::Random, |st| st.harmful_actions),
        ));
    }
    out.push_str("\n| policy | cumulative regret | regret/episode first → last quarter | SLO violation (h) | unsafe | harmful | actions on no-fault | escalations | µs per episode |\n|---|---|---|---|---|---|---|---|---|\n");
    for (c, t) in &report.totals {
        out.push_str(&format!(
            "| {} | {:.2} | {:.3} → {:.3} | {:.1} | {} | {} | {} | {} | {:.1} |\n",
            c.as_str(),
            t.cumulative_regret,
            t.regret_per_episode_first_quarter,
            t.regret_per_episode_last_quarter,
            t.slo_violation_seconds / 3600.0,
            t.unsafe_actions,
            t.harmful_actions,
            t.actions_on_no_fault,
            t.escalations,
            t.seconds * 1e6 / report.episodes as f64
        ));
    }
    let t = &report.targets;
    let mark = |ok: bool| if ok { "met" } else { "MISSED" };
    out.push_str(&format!(
        "\nTargets: sublinear regret {}; ≥95% oracle after 20 episodes per scenario {}{}; 0 unsafe {}; SLO violation {:.0}% below the playbook ({}); 0 actions on no-fault {}\n",
        mark(t.sublinear_regret),
        mark(t.oracle_95_after_20),
        if t.scenarios_below_95.is_empty() {
            String::new()
        } else {
            format!(" (below: {})", t.scenarios_below_95.join(", "))
        },
        mark(t.zero_unsafe),
        t.slo_reduction_vs_playbook * 100.0,
        mark(t.slo_reduction_at_least_30pct),
        mark(t.zero_actions_on_no_fault),
    ));
    let o = &report.off_policy;
    out.push_str(&format!(
        "Off-policy check: the playbook's first-action value estimated from the random policy's log: IPS {:.3}, SNIPS {}, {} of {} decisions matched (effective sample size {:.0}); measured by running it: {:.3}\n",
        o.estimate.ips,
        o.estimate.snips.map_or("—".to_owned(), |v| format!("{v:.3}")),
        o.estimate.matched,
        o.estimate.decisions,
        o.estimate.effective_sample_size,
        o.playbook_actual
    ));
    out
}

/// Draws the cumulative regret of the three policies over episodes (SVG).
pub fn plot(report: &Report, path: &Path) -> Result<()> {
    use plotters::prelude::*;
    let failed = |message: String| SimulateError::Plot {
        path: path.display().to_string(),
        message,
    };
    let mut svg = String::new();
    {
        let peak = report
            .totals
            .values()
            .filter_map(|t| t.regret_curve.last())
            .fold(1.0_f64, |a, b| a.max(*b));
        let root = SVGBackend::with_string(&mut svg, (1000, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| failed(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("homeostat simulate: cumulative regret (seed {})", report.seed),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..report.episodes as f64, 0.0..peak * 1.05)
            .map_err(|e| failed(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("episode")
            .y_desc("cumulative regret")
            .draw()
            .map_err(|e| failed(e.to_string()))?;
        for (contender, color) in [
            (Contender::Learned, BLUE),
            (Contender::Playbook, RED),
            (Contender::Random, BLACK),
        ] {
            let Some(t) = report.totals.get(&contender) else {
                continue;
            };
            let points = t.regret_curve.iter().enumerate().map(|(i, v)| ((i + 1) as f64, *v));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| failed(e.to_string()))?
                .label(contender.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(|e| failed(e.to_string()))?;
        root.present().map_err(|e| failed(e.to_string()))?;
    }
    std::fs::write(path, svg).map_err(|e| failed(e.to_string()))
}

#[cfg(test)]
mod tests;
