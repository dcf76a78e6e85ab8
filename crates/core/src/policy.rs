//! The learning policy: which recovery action to take for an alert, learned
//! from verified outcomes, starting from the playbook.
//!
//! Everything here is pure: [`Policy::decide`] takes the alert's key, its
//! context [`Features`], the matched playbook rule, the actions the guard
//! refused and the actions already tried and failed on the incident, plus a
//! seeded random number generator, and returns a [`Choice`] that explains
//! itself. [`Policy::learn`] folds a [`reward`] in; [`Policy::state`] and
//! [`Policy::restore`] move what was learned to and from JSON; [`evaluate`]
//! estimates, from logged decisions, how another policy would have done.
//!
//! # The model: Thompson sampling on playbook priors, with context backoff
//!
//! Each (alert, service) key keeps, per action, a Gaussian estimate of the
//! action's reward (known noise `noise_sd`, conjugate normal prior). The
//! prior mean comes from the playbook ([`prior`]): the rule's first action
//! highest, later ones lower, actions outside the rule lower still
//! (`notify` at its fixed reward 0, the others below it, least disruptive
//! first), each worth `prior_strength` pseudo-outcomes.
//! Beside the per-key estimate, each of a few coarse context buckets
//! ([`Context`], six yes/no/unknown facts such as "deployed in the last 15
//! minutes") keeps its own, whose prior is the key's estimate worth up to
//! `context_strength` outcomes (default 6): a new context starts from what
//! the alert taught, and moves away from it only as its own outcomes say.
//! A context with unknown facts pools every bucket it matches.
//!
//! Why this rather than LinUCB: the target is to converge within 20
//! incidents of a kind. A linear model over six features needs many more
//! outcomes before its covariance is tight, its scores are hard to explain,
//! and it cannot express "on day one, do what the playbook says" except by
//! hand-tuned bias terms. Discrete buckets with strong playbook priors start
//! exactly where the runbook is, move after one failed outcome, and every
//! number in an explanation is an average of rewards a human can check.
//!
//! Thompson sampling draws one plausible value per allowed action from its
//! estimate and takes the best draw, so an action is tried about as often
//! as it could be the best. Exploring disrupts services, so it is fenced:
//! - it only ever ranges over the candidates: actions the guard allows
//!   ([`Mask`]) and not already failed on this incident;
//! - a key explores only once it has been *disappointed* (an outcome with a
//!   negative reward): while the playbook's choices keep working there is
//!   nothing worth disrupting a service to learn, so an alert that only
//!   ever needs `notify` is never acted on;
//! - once the greedy action is *good enough* (value at least
//!   `satisfactory`, default 0.5: it usually fixes within `slow_seconds`)
//!   the policy stops sampling. It still *probes* the one thing that can
//!   beat a working fix: a less disruptive action (lower cost) whose
//!   optimistic value (value + `probe_deviations` standard deviations,
//!   default 3.5) exceeds the greedy one's. A probe that fails drops that
//!   optimism below, so probing ends after a few tries; one that works
//!   soon becomes the greedy action. Many
//!   faults have two fixes of similar success, a cheap one and a costly
//!   one, that sampling alone would take hundreds of incidents to tell
//!   apart: costs are known, so the cheap one is tried rather than sampled;
//! - below good enough, sampling is also skipped when it would pick the
//!   greedy action with probability `confidence` or more (default 0.95,
//!   estimated with the propensity draws below): rare draws of long-shot
//!   actions disrupt services for nothing.
//!
//! `notify`'s reward is fixed (0, see [`reward`]), so outside the rule it
//! has exactly that value with no uncertainty. When exploration is
//! switched off (globally or per service) the policy is greedy: the
//! highest estimated value, ties to the playbook's order.
//!
//! So with no data the greedy choice is the rule's first allowed action:
//! day one behaves exactly like the playbook.
//!
//! # Propensity
//!
//! The probability that this policy picks the chosen action given the same
//! inputs and state, logged for off-policy evaluation. Greedy choices and
//! probes are deterministic given the state: propensity 1 (so off-policy
//! evaluation learns about other actions only from sampled decisions). For
//! Thompson sampling it is estimated with
//! `propensity_draws` further independent draws (default 1,000): the share
//! of draws the chosen action wins, counting the draw that chose it as one
//! more, `(wins + 1) / (draws + 1)`, which is never 0 (an inverse-propensity
//! weight stays finite) and has a standard error below 1.6 points.

use std::collections::BTreeMap;
use std::fmt;

use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::action::Action;
use crate::alert::LabelSet;
use crate::guard::Verdict;
use crate::playbook::Rule;

/// The version of [`PolicyState`] this code writes and reads.
pub const STATE_VERSION: u32 = 1;

/// Errors reading or restoring learned state.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy state is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("policy state has no `version` field (expected version {STATE_VERSION})")]
    NoVersion,
    #[error("policy state version {found} is not supported: this homeostat reads version {STATE_VERSION}")]
    UnknownVersion { found: serde_json::Value },
    #[error("policy state at `{path}`: {message}")]
    Invalid { path: String, message: String },
}

impl PolicyError {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            PolicyError::Json(_) => "json",
            PolicyError::NoVersion | PolicyError::UnknownVersion { .. } => "version",
            PolicyError::Invalid { .. } => "invalid",
        }
    }
}

pub type Result<T, E = PolicyError> = std::result::Result<T, E>;

/// What the policy learns about: an alert on a service.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyKey {
    pub alertname: String,
    pub service: String,
}

impl PolicyKey {
    pub fn new(alertname: impl Into<String>, service: impl Into<String>) -> PolicyKey {
        PolicyKey {
            alertname: alertname.into(),
            service: service.into(),
        }
    }

    /// The key of an alert: its `alertname`, and the first of the labels
    /// `service`, `compose_service`, `deployment`, `container` that is set
    /// (`-` when none is).
    pub fn from_labels(labels: &LabelSet) -> PolicyKey {
        let get = |name: &str| labels.get(name).filter(|v| !v.is_empty());
        let service = ["service", "compose_service", "deployment", "container"]
            .iter()
            .find_map(|name| get(name))
            .map_or("-", String::as_str);
        PolicyKey::new(get("alertname").map_or("-", String::as_str), service)
    }
}

impl fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.alertname, self.service)
    }
}

/// What PromQL said about the service when the alert fired. Every field is
/// optional: a query may return nothing, and its [`Context`] fact is then
/// unknown.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Features {
    /// Share of requests failing (0–1), e.g. `service:http_error_ratio:rate1m`.
    pub error_ratio: Option<f64>,
    /// p99 latency divided by its alert threshold (1 = at the threshold).
    pub latency_ratio: Option<f64>,
    /// Restarts in the last 5 minutes (`changes(process_start_time_seconds[5m])`).
    pub recent_restarts: Option<u32>,
    /// Seconds until memory reaches its limit at the current trend; `None`
    /// when it is not rising, has no limit, or is unknown.
    pub memory_exhaustion_seconds: Option<f64>,
    /// A version change within the last [`DEPLOY_WINDOW_MINUTES`] minutes.
    pub recent_deploy: Option<bool>,
    /// Ready replicas divided by desired replicas (0–1).
    pub ready_ratio: Option<f64>,
    /// The anomaly detector's held score (0–1) of the live series about the
    /// incident (`anomaly:` specs in `serve`; the highest when several are),
    /// scaled so that its spec's threshold is [`thresholds::ANOMALY_SCORE`]
    /// (the same for a spec with the default threshold); `None` when no
    /// scored series concerns it.
    pub anomaly_score: Option<f64>,
}

/// The window [`Features::recent_deploy`] looks back over, as the
/// `BadDeploy` alert does (`service:build_versions:count15m`).
pub const DEPLOY_WINDOW_MINUTES: u32 = 15;

/// The thresholds that turn [`Features`] into a [`Context`]; the same as the
/// alerts' own where one exists.
pub mod thresholds {
    /// `HighErrorRatio`'s 5%.
    pub const ERROR_RATIO: f64 = 0.05;
    /// `HighLatencyP99`'s threshold itself.
    pub const LATENCY_RATIO: f64 = 1.0;
    /// Three restarts in 5 minutes: one short of `ServiceCrashLooping`.
    pub const RESTARTS: u32 = 3;
    /// Memory exhausted within 10 minutes.
    pub const MEMORY_EXHAUSTION_SECONDS: f64 = 600.0;
    /// Any replica not ready.
    pub const READY_RATIO: f64 = 1.0;
    /// The detector's threshold fixed before it was measured on NAB (an
    /// anomaly spec's default); `serve` scales each series' score so that
    /// its spec's threshold lands here.
    pub const ANOMALY_SCORE: f64 = crate::detect::THRESHOLD;
}

/// A coarse context bucket: seven facts, each yes, no or unknown (PromQL
/// did not answer), so few buckets exist per key and most alerts see one
/// or two. An unknown fact matches either answer: a decision in a context
/// with unknowns draws on every bucket it could be (see [`Context::matches`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Context {
    pub deploy: Option<bool>,
    pub restarting: Option<bool>,
    pub erroring: Option<bool>,
    pub slow: Option<bool>,
    /// Never unknown: no forecast of exhaustion counts as none.
    pub exhausting: Option<bool>,
    pub degraded: Option<bool>,
    /// Never unknown: no scored series counts as none anomalous (so what was
    /// learned before anomaly scores existed is about the usual case).
    pub anomalous: Option<bool>,
}

impl Features {
    /// The bucket these features fall in.
    pub fn context(&self) -> Context {
        Context {
            deploy: self.recent_deploy,
            restarting: self.recent_restarts.map(|n| n >= thresholds::RESTARTS),
            erroring: self.error_ratio.map(|r| r >= thresholds::ERROR_RATIO),
            slow: self.latency_ratio.map(|r| r >= thresholds::LATENCY_RATIO),
            exhausting: Some(
                self.memory_exhaustion_seconds
                    .is_some_and(|s| s <= thresholds::MEMORY_EXHAUSTION_SECONDS),
            ),
            degraded: self.ready_ratio.map(|r| r < thresholds::READY_RATIO),
            anomalous: Some(self.anomaly_score.is_some_and(|s| s >= thresholds::ANOMALY_SCORE)),
        }
    }
}

impl Context {
    fn facts(&self) -> [(Option<bool>, &'static str); 7] {
        [
            (self.deploy, "deploy"),
            (self.restarting, "restarting"),
            (self.erroring, "erroring"),
            (self.slow, "slow"),
            (self.exhausting, "exhausting"),
            (self.degraded, "degraded"),
            (self.anomalous, "anomalous"),
        ]
    }

    /// Whether the two could be the same situation: no fact known in both
    /// differs.
    pub fn matches(&self, other: &Context) -> bool {
        self.facts()
            .iter()
            .zip(other.facts())
            .all(|((a, _), (b, _))| a.is_none() || b.is_none() || *a == b)
    }
}

impl fmt::Display for Context {
    /// The facts that hold, `+`-separated, unknown ones with a `?`
    /// (`deploy+erroring+slow?`); `steady` when every fact is known not to hold.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut any = false;
        for (value, name) in self.facts() {
            let mark = match value {
                Some(true) => "",
                None => "?",
                Some(false) => continue,
            };
            if any {
                f.write_str("+")?;
            }
            write!(f, "{name}{mark}")?;
            any = true;
        }
        if !any {
            f.write_str("steady")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Context {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Context, String> {
        let mut c = Context {
            deploy: Some(false),
            restarting: Some(false),
            erroring: Some(false),
            slow: Some(false),
            exhausting: Some(false),
            degraded: Some(false),
            anomalous: Some(false),
        };
        if text == "steady" {
            return Ok(c);
        }
        for fact in text.split('+') {
            let (name, value) = match fact.strip_suffix('?') {
                Some(name) => (name, None),
                None => (fact, Some(true)),
            };
            let slot = match name {
                "deploy" => &mut c.deploy,
                "restarting" => &mut c.restarting,
                "erroring" => &mut c.erroring,
                "slow" => &mut c.slow,
                "exhausting" => &mut c.exhausting,
                "degraded" => &mut c.degraded,
                "anomalous" => &mut c.anomalous,
                other => {
                    return Err(format!(
                        "{other:?} is not a context fact (deploy, restarting, erroring, slow, exhausting, degraded, anomalous)"
                    ))
                }
            };
            *slot = value;
        }
        Ok(c)
    }
}

impl Serialize for Context {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Context {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Context, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// How the policy learns and explores: `policy:` in the config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Explore (Thompson sampling) at all. Off: always the greedy choice.
    pub explore: bool,
    /// Per-service override of `explore`, by [`PolicyKey::service`].
    pub services: BTreeMap<String, ServicePolicy>,
    /// How many outcomes the playbook's prior is worth. Default 2.
    pub prior_strength: f64,
    /// How many outcomes a key's estimate is worth as a context's prior
    /// (at most: never more than the key has seen, plus its prior). Default 6:
    /// one bad outcome in a context should not overrule a dozen good ones
    /// for the alert.
    pub context_strength: f64,
    /// The assumed standard deviation of one reward. Default 0.5.
    pub noise_sd: f64,
    /// Draws estimating a Thompson-sampled choice's propensity. Default 1000.
    pub propensity_draws: u32,
    /// Take the greedy action outright when sampling would pick it with at
    /// least this probability. Default 0.95; 1 is pure Thompson sampling.
    pub confidence: f64,
    /// Stop sampling once the greedy action's value reaches this (then
    /// only less disruptive actions are probed). Default 0.5.
    pub satisfactory: f64,
    /// How optimistic a probe of a less disruptive action is: its value
    /// plus this many standard deviations must beat the greedy value. Default 3.5.
    pub probe_deviations: f64,
    /// What outcomes are worth.
    pub reward: RewardConfig,
}

/// `policy.services.NAME:`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicePolicy {
    pub explore: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            explore: true,
            services: BTreeMap::new(),
            prior_strength: 2.0,
            context_strength: 6.0,
            noise_sd: 0.5,
            propensity_draws: 1000,
            confidence: 0.95,
            satisfactory: 0.5,
            probe_deviations: 3.5,
            reward: RewardConfig::default(),
        }
    }
}

impl PolicyConfig {
    /// Whether exploration is on for `service`.
    pub fn explores(&self, service: &str) -> bool {
        self.services.get(service).map_or(self.explore, |s| s.explore)
    }

    /// Checks the numbers, naming the key at fault.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("policy.{name} must be a positive number, got {v}"))
            }
        };
        positive("prior_strength", self.prior_strength)?;
        positive("context_strength", self.context_strength)?;
        positive("noise_sd", self.noise_sd)?;
        positive("reward.slow_seconds", self.reward.slow_seconds)?;
        if !(self.confidence > 0.0 && self.confidence <= 1.0) {
            return Err(format!("policy.confidence must be in (0, 1], got {}", self.confidence));
        }
        positive("probe_deviations", self.probe_deviations)?;
        if !self.satisfactory.is_finite() {
            return Err(format!(
                "policy.satisfactory must be a number, got {}",
                self.satisfactory
            ));
        }
        if self.propensity_draws == 0 {
            return Err("policy.propensity_draws must be at least 1".into());
        }
        for (action, cost) in &self.reward.costs {
            if !cost.is_finite() || *cost < 0.0 {
                return Err(format!("policy.reward.costs.{action} must be 0 or more, got {cost}"));
            }
        }
        Ok(())
    }
}

/// `policy.reward:` — the reward formula's constants (see [`reward`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardConfig {
    /// A success this slow or slower earns half a fast one. Default 300 s.
    pub slow_seconds: f64,
    /// Default -0.5.
    pub failure: f64,
    /// Default -0.7: no verdict within the deadline is worse than "still firing".
    pub timeout: f64,
    /// Subtracted when errors rose after the action. Default 0.5.
    pub harm: f64,
    /// Disruption and resource cost per action, subtracted from every outcome.
    pub costs: BTreeMap<Action, f64>,
}

impl Default for RewardConfig {
    fn default() -> Self {
        RewardConfig {
            slow_seconds: 300.0,
            failure: -0.5,
            timeout: -0.7,
            harm: 0.5,
            costs: default_costs(),
        }
    }
}

/// Notify costs nothing; restarting one instance little; replacing every
/// instance, adding a replica or going back a version more; taking
/// capacity away or cordoning a node most.
fn default_costs() -> BTreeMap<Action, f64> {
    [
        (Action::Notify, 0.0),
        (Action::Restart, 0.05),
        (Action::Recreate, 0.1),
        (Action::Repair, 0.1),
        (Action::ScaleOut, 0.1),
        (Action::Rollback, 0.15),
        (Action::ScaleIn, 0.15),
        (Action::Cordon, 0.25),
    ]
    .into_iter()
    .collect()
}

impl RewardConfig {
    pub fn cost(&self, action: Action) -> f64 {
        self.costs.get(&action).copied().unwrap_or(0.0)
    }
}

pub use crate::decision::Verification;

/// A verified outcome, the input of [`reward`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub verification: Verification,
    /// From the action to the alert resolving; used for successes.
    pub seconds_to_resolve: Option<f64>,
    /// More errors after the action than before it.
    pub harm: bool,
}

/// The reward of `action` with `outcome`:
///
/// ```text
/// success:  1 - 0.5 · min(seconds_to_resolve / slow_seconds, 1)   (1 instantly, 0.5 when slow)
/// failure:  reward.failure  (-0.5)
/// timeout:  reward.timeout  (-0.7)
///           - reward.harm (0.5) when errors rose after the action
///           - reward.costs[action]
/// notify:   0, whatever verification says: it neither disrupts nor fixes
///           anything, it hands the incident to a human.
/// ```
///
/// A confounded outcome is never learned from ([`Verification::teaches`]);
/// scored, it counts 0 before harm and cost.
///
/// So a fast fix earns up to 0.95 (restart), a failed restart −0.55, a
/// harmful failed rollback −1.15, and anything that works beats paging a
/// human, which beats anything that does not.
pub fn reward(config: &RewardConfig, action: Action, outcome: &Outcome) -> f64 {
    if action == Action::Notify {
        return 0.0;
    }
    let base = match outcome.verification {
        Verification::Success => {
            let t = outcome.seconds_to_resolve.unwrap_or(config.slow_seconds).max(0.0);
            1.0 - 0.5 * (t / config.slow_seconds).min(1.0)
        }
        Verification::Failure => config.failure,
        Verification::Timeout => config.timeout,
        Verification::Confounded => 0.0,
    };
    base - if outcome.harm { config.harm } else { 0.0 } - config.cost(action)
}

/// The playbook rule that matched, as the policy's prior.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RulePrior<'a> {
    pub name: &'a str,
    pub actions: &'a [Action],
}

impl<'a> From<&'a Rule> for RulePrior<'a> {
    fn from(rule: &'a Rule) -> Self {
        RulePrior {
            name: &rule.name,
            actions: &rule.actions,
        }
    }
}

/// The actions that may not be chosen, with why: the guard's refusals,
/// deferrals and escalations, or anything else the caller rules out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mask {
    refused: BTreeMap<Action, String>,
}

impl Mask {
    /// Nothing masked.
    pub fn none() -> Mask {
        Mask::default()
    }

    /// Asks the guard about every action; masks each it does not allow,
    /// with the verdict's kind and reason.
    pub fn from_guard(mut verdict: impl FnMut(Action) -> Verdict) -> Mask {
        let mut mask = Mask::none();
        for action in Action::ALL {
            let v = verdict(action);
            if !v.is_allow() {
                mask.refuse(action, format!("guard: {}: {}", v.kind(), v.reason()));
            }
        }
        mask
    }

    pub fn refuse(&mut self, action: Action, reason: impl Into<String>) {
        self.refused.insert(action, reason.into());
    }

    pub fn allows(&self, action: Action) -> bool {
        !self.refused.contains_key(&action)
    }

    /// Why `action` is masked, when it is.
    pub fn reason(&self, action: Action) -> Option<&str> {
        self.refused.get(&action).map(String::as_str)
    }
}

/// Everything [`Policy::decide`] looks at for one decision.
#[derive(Clone, Copy, Debug)]
pub struct Decide<'a> {
    pub key: &'a PolicyKey,
    pub features: &'a Features,
    /// The playbook rule matching the alert; `None` counts as a rule
    /// `[notify]` (the playbook records and does nothing).
    pub rule: Option<RulePrior<'a>>,
    /// Actions the guard (or the caller) rules out.
    pub mask: &'a Mask,
    /// Actions already tried and failed on this incident.
    pub failed: &'a [Action],
}

/// The largest mean reward a restored arm may have, in millionths: rewards
/// are within a few units, so ±1,000 only rejects sums no outcome made.
const MAX_MEAN_REWARD_MICROS: i64 = 1_000_000_000;

/// Running sums of one action's rewards. The sum is kept in millionths
/// as an integer, so that state survives JSON exactly and a restored
/// policy decides exactly as the one saved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arm {
    /// Outcomes seen.
    pub n: u32,
    /// Their rewards' sum, in millionths.
    pub sum_micros: i64,
}

impl Arm {
    fn add(&mut self, reward: f64) {
        self.n = self.n.saturating_add(1);
        // `as` saturates; rewards are within a few units.
        self.sum_micros = self.sum_micros.saturating_add((reward * 1e6).round() as i64);
    }

    /// The rewards' sum.
    pub fn sum(&self) -> f64 {
        self.sum_micros as f64 / 1e6
    }

    /// The rewards' mean, `None` before the first outcome.
    pub fn mean_reward(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum() / f64::from(self.n))
    }

    /// Posterior mean with `prior` worth `strength` outcomes.
    fn mean(&self, prior: f64, strength: f64) -> f64 {
        (strength * prior + self.sum()) / (strength + f64::from(self.n))
    }
}

/// What one key has learned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    pub key: PolicyKey,
    /// Outcomes with a negative reward; exploration starts after the first.
    pub disappointments: u32,
    /// Per action, over every context.
    pub actions: BTreeMap<Action, Arm>,
    /// Per context bucket and action.
    pub contexts: BTreeMap<Context, BTreeMap<Action, Arm>>,
}

/// Everything learned, as persisted and exported.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyState {
    /// [`STATE_VERSION`].
    pub version: u32,
    pub keys: Vec<KeyState>,
}

impl PolicyState {
    /// Reads state from JSON, checking the version before anything else so
    /// a file from another homeostat says so rather than "missing field".
    pub fn from_json(text: &str) -> Result<PolicyState> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(PolicyError::Json)?;
        match value.get("version") {
            None => return Err(PolicyError::NoVersion),
            Some(v) if v.as_u64() != Some(u64::from(STATE_VERSION)) => {
                return Err(PolicyError::UnknownVersion { found: v.clone() })
            }
            Some(_) => {}
        }
        serde_path_to_error::deserialize(value).map_err(|e| PolicyError::Invalid {
            path: e.path().to_string(),
            message: e.into_inner().to_string(),
        })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("policy state serializes")
    }
}

/// One candidate action of a decision, as recorded and explained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub action: Action,
    /// Position in the matched rule (0 = first), `None` if not in it.
    pub playbook_rank: Option<usize>,
    /// The playbook prior's value.
    pub prior: f64,
    /// Estimated reward (posterior mean in this context).
    pub value: f64,
    /// Its standard deviation.
    pub uncertainty: f64,
    /// The standard deviation of the key's estimate, over all contexts.
    pub key_uncertainty: f64,
    /// Outcomes of this action for this key, and in this context.
    pub outcomes_key: u32,
    pub outcomes_context: u32,
    /// The Thompson draw, when the decision sampled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample: Option<f64>,
    /// Why it could not be chosen, when masked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub masked: Option<String>,
    /// The probability this policy picks it, given these inputs.
    pub propensity: f64,
}

/// How a decision was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Thompson sampling among the candidates.
    Sampled,
    /// Highest estimated value: exploration is switched off.
    GreedyExploreOff,
    /// Highest estimated value: no outcome of this key disappointed yet.
    GreedyNoDisappointment,
    /// Highest estimated value: sampling would choose it with probability
    /// `policy.confidence` or more (or it is the only candidate).
    GreedyConfident,
    /// Highest estimated value, which is good enough (`policy.satisfactory`),
    /// and no less disruptive action could plausibly beat it.
    GreedySatisfied,
    /// A less disruptive action than the good-enough greedy one, whose
    /// optimistic value beats it.
    ProbeCheaper,
}

/// A decision, with everything needed to explain and evaluate it later.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub key: PolicyKey,
    /// The features decided on (kept for explanations and off-policy evaluation).
    pub features: Features,
    pub context: Context,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// `None`: every action is masked or failed; escalate.
    pub action: Option<Action>,
    /// Probability of `action` under this policy and these inputs.
    pub propensity: f64,
    /// The greedy (highest estimated value) candidate.
    pub greedy: Option<Action>,
    /// Whether `action` differs from `greedy`.
    pub explored: bool,
    pub mode: Mode,
    /// Every action of the catalog, masked or not.
    pub candidates: Vec<Candidate>,
    /// One line: why the winner won.
    pub why: String,
}

impl Choice {
    pub fn candidate(&self, action: Action) -> Option<&Candidate> {
        self.candidates.iter().find(|c| c.action == action)
    }
}

/// The order actions outside a rule are tried in: least disruptive first.
const OUTSIDE_RULE_ORDER: [Action; 7] = [
    Action::Restart,
    Action::ScaleOut,
    Action::Recreate,
    Action::Repair,
    Action::Rollback,
    Action::ScaleIn,
    Action::Cordon,
];

/// The playbook's prior for `action` under `rule_actions`, in reward
/// units: 0.5 for the rule's first action and 0.6 times that for each
/// later one (0.5, 0.3, 0.18, …: expected to work); `notify` outside the
/// rule 0, which is exactly its reward (handing over to a human); other
/// actions outside the rule below that, from −0.1 down by 0.02 in the
/// order least disruptive first (restart, scale_out, recreate, repair, rollback,
/// scale_in, cordon). So after a rule's actions failed, the policy leans
/// towards a human, and explores other actions only as the sampling says.
pub fn prior(rule_actions: &[Action], action: Action) -> f64 {
    match rule_actions.iter().position(|a| *a == action) {
        Some(rank) => 0.5 * 0.6_f64.powi(i32::try_from(rank).unwrap_or(i32::MAX)),
        None if action == Action::Notify => 0.0,
        None => {
            let order = OUTSIDE_RULE_ORDER.iter().position(|a| *a == action).unwrap_or(0);
            -0.1 - 0.02 * order as f64
        }
    }
}

/// The learning policy.
#[derive(Clone, Debug)]
pub struct Policy {
    config: PolicyConfig,
    keys: BTreeMap<PolicyKey, KeyState>,
}

/// An action's estimate in one decision.
#[derive(Clone, Copy, Debug)]
struct Estimate {
    prior: f64,
    mean: f64,
    sd: f64,
    /// The standard deviation of the key's estimate (all contexts).
    sd_key: f64,
    n_key: u32,
    n_context: u32,
}

impl Policy {
    /// A policy that has learned nothing.
    pub fn new(config: PolicyConfig) -> Policy {
        Policy {
            config,
            keys: BTreeMap::new(),
        }
    }

    /// A policy with learned `state`, which must be of [`STATE_VERSION`].
    pub fn restore(config: PolicyConfig, state: PolicyState) -> Result<Policy> {
        if state.version != STATE_VERSION {
            return Err(PolicyError::UnknownVersion {
                found: state.version.into(),
            });
        }
        let mut keys = BTreeMap::new();
        for (i, entry) in state.keys.into_iter().enumerate() {
            if keys.contains_key(&entry.key) {
                return Err(PolicyError::Invalid {
                    path: format!("keys[{i}].key"),
                    message: format!("{} appears twice", entry.key),
                });
            }
            let contexts = entry.contexts.iter().flat_map(|(context, arms)| {
                arms.iter()
                    .map(move |(action, arm)| (format!("keys[{i}].contexts.{context:?}.{action}"), arm))
            });
            let actions = entry
                .actions
                .iter()
                .map(|(action, arm)| (format!("keys[{i}].actions.{action}"), arm));
            for (path, arm) in actions.chain(contexts) {
                // Rewards are within a few units (see `reward`): a mean far
                // outside that, or a sum without outcomes, was not learned.
                let bound = i64::from(arm.n).saturating_mul(MAX_MEAN_REWARD_MICROS);
                if arm.sum_micros.checked_abs().is_none_or(|sum| sum > bound) {
                    return Err(PolicyError::Invalid {
                        path,
                        message: format!(
                            "a reward sum of {} over {} outcome(s) is not one rewards can add up to",
                            arm.sum(),
                            arm.n
                        ),
                    });
                }
            }
            keys.insert(entry.key.clone(), entry);
        }
        Ok(Policy { config, keys })
    }

    /// What has been learned, for persistence and export.
    pub fn state(&self) -> PolicyState {
        PolicyState {
            version: STATE_VERSION,
            keys: self.keys.values().cloned().collect(),
        }
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// What one key has learned, if anything.
    pub fn key_state(&self, key: &PolicyKey) -> Option<&KeyState> {
        self.keys.get(key)
    }

    /// Folds one outcome's `reward` (see [`reward`]) for `action` in.
    pub fn learn(&mut self, key: &PolicyKey, features: &Features, action: Action, reward: f64) {
        if !reward.is_finite() {
            return;
        }
        let state = self.keys.entry(key.clone()).or_insert_with(|| KeyState {
            key: key.clone(),
            disappointments: 0,
            actions: BTreeMap::new(),
            contexts: BTreeMap::new(),
        });
        if reward < 0.0 {
            state.disappointments = state.disappointments.saturating_add(1);
        }
        state.actions.entry(action).or_default().add(reward);
        state
            .contexts
            .entry(features.context())
            .or_default()
            .entry(action)
            .or_default()
            .add(reward);
    }

    fn estimate(&self, key: &PolicyKey, context: Context, rule_actions: &[Action], action: Action) -> Estimate {
        let c = &self.config;
        let prior = prior(rule_actions, action);
        let state = self.keys.get(key);
        let n_of = |arms: Option<&BTreeMap<Action, Arm>>| arms.and_then(|a| a.get(&action)).map_or(0, |a| a.n);
        if action == Action::Notify && !rule_actions.contains(&action) {
            // Its reward is fixed by the formula: nothing to learn.
            return Estimate {
                prior,
                mean: prior,
                sd: 0.0,
                sd_key: 0.0,
                n_key: n_of(state.map(|s| &s.actions)),
                n_context: n_of(state.and_then(|s| s.contexts.get(&context))),
            };
        }
        let key_arm = state.and_then(|s| s.actions.get(&action)).copied().unwrap_or_default();
        // This context's outcomes, and those of every context it could be.
        let context_arm = state.map_or(Arm::default(), |s| {
            s.contexts
                .iter()
                .filter(|(c, _)| c.matches(&context))
                .filter_map(|(_, arms)| arms.get(&action))
                .fold(Arm::default(), |a, b| Arm {
                    n: a.n + b.n,
                    sum_micros: a.sum_micros.saturating_add(b.sum_micros),
                })
        });
        let key_mean = key_arm.mean(prior, c.prior_strength);
        // The key's estimate is the context's prior, worth at most what it knows.
        let borrowed = c.context_strength.min(c.prior_strength + f64::from(key_arm.n));
        let mean = context_arm.mean(key_mean, borrowed);
        let sd = c.noise_sd / (borrowed + f64::from(context_arm.n)).sqrt();
        Estimate {
            prior,
            mean,
            sd,
            sd_key: c.noise_sd / (c.prior_strength + f64::from(key_arm.n)).sqrt(),
            n_key: key_arm.n,
            n_context: context_arm.n,
        }
    }

    /// Chooses an action for one decision. Never returns a masked or
    /// already-failed action.
    pub fn decide<R: Rng + ?Sized>(&self, input: &Decide<'_>, rng: &mut R) -> Choice {
        let context = input.features.context();
        let rule_actions: &[Action] = input.rule.map_or(&[Action::Notify], |r| r.actions);
        let mut candidates: Vec<Candidate> = Action::ALL
            .iter()
            .map(|&action| {
                let e = self.estimate(input.key, context, rule_actions, action);
                let masked = if let Some(reason) = input.mask.reason(action) {
                    Some(reason.to_owned())
                } else if input.failed.contains(&action) {
                    Some("tried and failed on this incident".to_owned())
                } else {
                    None
                };
                Candidate {
                    action,
                    playbook_rank: rule_actions.iter().position(|a| *a == action),
                    prior: e.prior,
                    value: e.mean,
                    uncertainty: e.sd,
                    key_uncertainty: e.sd_key,
                    outcomes_key: e.n_key,
                    outcomes_context: e.n_context,
                    sample: None,
                    masked,
                    propensity: 0.0,
                }
            })
            .collect();
        let open: Vec<usize> = (0..candidates.len())
            .filter(|&i| candidates[i].masked.is_none())
            .collect();
        // Greedy: highest value, ties to the playbook's order (its prior).
        let greedy = open.iter().copied().max_by(|&a, &b| {
            let (a, b) = (&candidates[a], &candidates[b]);
            a.value.total_cmp(&b.value).then(a.prior.total_cmp(&b.prior))
        });
        let explores = self.config.explores(&input.key.service);
        let disappointed = self.keys.get(input.key).is_some_and(|s| s.disappointments > 0);
        let mut mode = match (explores, disappointed) {
            (false, _) => Mode::GreedyExploreOff,
            (true, false) => Mode::GreedyNoDisappointment,
            (true, true) if open.len() <= 1 => Mode::GreedyConfident,
            (true, true) => Mode::Sampled,
        };
        let cost = |c: &Candidate| self.config.reward.cost(c.action);
        let mut probe = None;
        if let (Mode::Sampled, Some(g)) = (mode, greedy) {
            let g = &candidates[g];
            if g.value >= self.config.satisfactory {
                mode = Mode::GreedySatisfied;
                // The least disruptive action that could plausibly do better.
                probe = open
                    .iter()
                    .copied()
                    .filter(|&i| {
                        let c = &candidates[i];
                        cost(c) < cost(g) && c.value + self.config.probe_deviations * c.uncertainty > g.value
                    })
                    .min_by(|&a, &b| {
                        let (a, b) = (&candidates[a], &candidates[b]);
                        cost(a).total_cmp(&cost(b)).then(b.value.total_cmp(&a.value))
                    });
                if probe.is_some() {
                    mode = Mode::ProbeCheaper;
                }
            }
        }
        let mut greedy_share = None;
        let chosen = if mode == Mode::Sampled {
            let draw = |rng: &mut R, c: &Candidate| c.value + c.uncertainty * rng.sample::<f64, _>(StandardNormal);
            // How often each candidate wins a draw: the propensities, and
            // whether there is doubt enough to explore.
            let mut wins = vec![0u32; candidates.len()];
            for _ in 0..self.config.propensity_draws {
                let winner = open
                    .iter()
                    .map(|&i| (i, draw(rng, &candidates[i])))
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(i, _)| i);
                if let Some(i) = winner {
                    wins[i] += 1;
                }
            }
            let share = greedy.map_or(0.0, |g| f64::from(wins[g]) / f64::from(self.config.propensity_draws));
            greedy_share = Some(share);
            if share >= self.config.confidence {
                mode = Mode::GreedyConfident;
                if let Some(i) = greedy {
                    candidates[i].propensity = 1.0;
                }
                greedy
            } else {
                // The deciding draw, counted as one more for the propensities.
                let mut best: Option<(usize, f64)> = None;
                for &i in &open {
                    let s = draw(rng, &candidates[i]);
                    candidates[i].sample = Some(s);
                    if best.is_none_or(|(_, b)| s > b) {
                        best = Some((i, s));
                    }
                }
                if let Some((i, _)) = best {
                    wins[i] += 1;
                }
                let total = f64::from(self.config.propensity_draws + 1);
                for &i in &open {
                    candidates[i].propensity = f64::from(wins[i]) / total;
                }
                best.map(|(i, _)| i)
            }
        } else {
            let chosen = probe.or(greedy);
            if let Some(i) = chosen {
                candidates[i].propensity = 1.0;
            }
            chosen
        };
        let action = chosen.map(|i| candidates[i].action);
        let greedy_action = greedy.map(|i| candidates[i].action);
        let why = explain(
            &candidates,
            chosen,
            mode,
            greedy_share,
            context,
            &self.config,
            input.key,
        );
        Choice {
            key: input.key.clone(),
            features: input.features.clone(),
            context,
            rule: input.rule.map(|r| r.name.to_owned()),
            action,
            propensity: chosen.map_or(1.0, |i| candidates[i].propensity),
            greedy: greedy_action,
            explored: action != greedy_action,
            mode,
            candidates,
            why,
        }
    }

    /// What the greedy policy (no exploration) would choose.
    pub fn greedy(&self, input: &Decide<'_>) -> Option<Action> {
        let context = input.features.context();
        let rule_actions: &[Action] = input.rule.map_or(&[Action::Notify], |r| r.actions);
        Action::ALL
            .iter()
            .filter(|a| input.mask.allows(**a) && !input.failed.contains(a))
            .map(|&a| (a, self.estimate(input.key, context, rule_actions, a)))
            .max_by(|(_, x), (_, y)| x.mean.total_cmp(&y.mean).then(x.prior.total_cmp(&y.prior)))
            .map(|(a, _)| a)
    }
}

/// One line: why the winner won.
fn explain(
    candidates: &[Candidate],
    chosen: Option<usize>,
    mode: Mode,
    greedy_share: Option<f64>,
    context: Context,
    config: &PolicyConfig,
    key: &PolicyKey,
) -> String {
    let Some(i) = chosen else {
        return "no candidate: every action is masked or failed on this incident; escalate".into();
    };
    let w = &candidates[i];
    let score = |c: &Candidate| c.sample.unwrap_or(c.value);
    let runner_up = candidates
        .iter()
        .filter(|c| c.masked.is_none() && c.action != w.action)
        .max_by(|a, b| score(a).total_cmp(&score(b)));
    let how = match mode {
        Mode::Sampled => format!("drew {:.2} (value {:.2} ± {:.2})", score(w), w.value, w.uncertainty),
        Mode::ProbeCheaper => format!(
            "less disruptive, and could do better: value {:.2} ± {:.2}",
            w.value, w.uncertainty
        ),
        Mode::GreedyExploreOff | Mode::GreedyNoDisappointment | Mode::GreedyConfident | Mode::GreedySatisfied => {
            format!("highest estimated value {:.2} ± {:.2}", w.value, w.uncertainty)
        }
    };
    let evidence = match (w.outcomes_context, w.outcomes_key) {
        (0, 0) => "no outcomes yet, so the playbook's prior".to_owned(),
        (c, k) => format!("{c} outcome(s) in context {context}, {k} for {key}"),
    };
    let rank = w.playbook_rank.map_or("not in the playbook rule".to_owned(), |r| {
        format!("playbook rank {}", r + 1)
    });
    let against = runner_up.map_or("the only candidate".to_owned(), |r| {
        format!("next {} at {:.2}", r.action, score(r))
    });
    let masked = candidates.iter().filter(|c| c.masked.is_some()).count();
    let why_mode = match mode {
        Mode::Sampled => format!(
            "exploring (Thompson sampling; the greedy choice would win {:.0}% of draws)",
            greedy_share.unwrap_or(0.0) * 100.0
        ),
        Mode::GreedyExploreOff if config.services.contains_key(&key.service) => {
            "exploration is off for this service".to_owned()
        }
        Mode::GreedyExploreOff => "exploration is off".to_owned(),
        Mode::GreedyNoDisappointment => "no outcome has disappointed yet, so not exploring".to_owned(),
        Mode::GreedySatisfied => format!(
            "good enough (≥ {:.2}) and nothing less disruptive could beat it, so not exploring",
            config.satisfactory
        ),
        Mode::ProbeCheaper => "probing a less disruptive action than a working one".to_owned(),
        Mode::GreedyConfident => match greedy_share {
            Some(share) => format!(
                "sampling would pick it {:.0}% of the time, so not exploring",
                share * 100.0
            ),
            None => "the only candidate".to_owned(),
        },
    };
    format!(
        "{}: {how}; {against}; {evidence}; {rank}; {masked} action(s) masked; {why_mode}",
        w.action
    )
}

/// One logged decision and its reward, for off-policy evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Logged {
    pub key: PolicyKey,
    pub features: Features,
    /// The matched rule's actions (the prior); empty when none matched.
    pub rule_actions: Vec<Action>,
    /// The actions that could have been chosen (unmasked, not failed).
    pub allowed: Vec<Action>,
    pub action: Action,
    /// The logging policy's probability of `action`.
    pub propensity: f64,
    pub reward: f64,
}

impl Logged {
    /// The log entry of a recorded decision and the reward its outcome
    /// earned; `None` when it chose nothing.
    pub fn from_choice(choice: &Choice, reward: f64) -> Option<Logged> {
        let mut ranked: Vec<(usize, Action)> = choice
            .candidates
            .iter()
            .filter_map(|c| c.playbook_rank.map(|r| (r, c.action)))
            .collect();
        ranked.sort();
        Some(Logged {
            key: choice.key.clone(),
            features: choice.features.clone(),
            rule_actions: ranked.into_iter().map(|(_, a)| a).collect(),
            allowed: choice
                .candidates
                .iter()
                .filter(|c| c.masked.is_none())
                .map(|c| c.action)
                .collect(),
            action: choice.action?,
            propensity: choice.propensity,
            reward,
        })
    }

    /// The mask and failed list equivalent to `allowed`.
    pub fn mask(&self) -> Mask {
        let mut mask = Mask::none();
        for action in Action::ALL.iter().filter(|a| !self.allowed.contains(a)) {
            mask.refuse(*action, "not allowed when logged");
        }
        mask
    }
}

/// An off-policy estimate of a candidate policy's mean reward per decision.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OffPolicyEstimate {
    /// Decisions in the log.
    pub decisions: usize,
    /// Decisions the candidate could have made as logged (weight > 0).
    pub matched: usize,
    /// Inverse propensity scoring: mean of `w·r`, `w = π(a|x) / p`.
    pub ips: f64,
    /// Self-normalised IPS: `Σ w·r / Σ w`; `None` when nothing matched.
    pub snips: Option<f64>,
    /// Kish's effective sample size, `(Σ w)² / Σ w²`.
    pub effective_sample_size: f64,
}

/// Evaluates a candidate policy on logged decisions. `target` gives the
/// probability that the candidate picks the logged action in the logged
/// situation (1 or 0 for a deterministic candidate). Entries with a
/// non-positive or non-finite propensity are skipped (not counted).
pub fn evaluate(log: &[Logged], mut target: impl FnMut(&Logged) -> f64) -> OffPolicyEstimate {
    let (mut n, mut matched) = (0usize, 0usize);
    let (mut sum_wr, mut sum_w, mut sum_w2) = (0.0, 0.0, 0.0);
    for entry in log {
        if !(entry.propensity.is_finite() && entry.propensity > 0.0) {
            continue;
        }
        n += 1;
        let w = target(entry).clamp(0.0, 1.0) / entry.propensity;
        if w > 0.0 {
            matched += 1;
        }
        sum_wr += w * entry.reward;
        sum_w += w;
        sum_w2 += w * w;
    }
    OffPolicyEstimate {
        decisions: n,
        matched,
        ips: if n == 0 { 0.0 } else { sum_wr / n as f64 },
        snips: (sum_w > 0.0).then(|| sum_wr / sum_w),
        effective_sample_size: if sum_w2 > 0.0 { sum_w * sum_w / sum_w2 } else { 0.0 },
    }
}

impl Policy {
    /// The greedy choice of this policy for a logged decision, as an
    /// off-policy `target` (1 when it matches the logged action, else 0).
    pub fn greedy_target(&self, entry: &Logged) -> f64 {
        let mask = entry.mask();
        let input = Decide {
            key: &entry.key,
            features: &entry.features,
            rule: (!entry.rule_actions.is_empty()).then_some(RulePrior {
                name: "",
                actions: &entry.rule_actions,
            }),
            mask: &mask,
            failed: &[],
        };
        if self.greedy(&input) == Some(entry.action) {
            1.0
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests;
