//! The responder: each look the reconciler takes at a firing incident runs
//! the stages in order — context → decide → guard → execute — and spawns
//! verify → learn for an action that was done. Each look says when the
//! incident needs the next one. Refusals and deferrals are recorded once
//! per incident, not on every look.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use serde::Serialize;
use serde_json::json;

use homeostat_adapters::executor::Executor;
use homeostat_adapters::notify::{Notice, Tried};
use homeostat_core::action::{plan_retire, Action, Backend, Operation, Target};
use homeostat_core::alert::AlertStatus;
use homeostat_core::clock::Clock;
use homeostat_core::condition::Condition;
use homeostat_core::config::NoticeEvent;
use homeostat_core::config::{ActionsConfig, PolicyMode};
use homeostat_core::decision::{ActionResult, Verdict};
use homeostat_core::guard;
use homeostat_core::incident::LATE_DELIVERY_GRACE;
use homeostat_core::incident::{EventKind, Incident};
use homeostat_core::playbook::{Playbook, Rule};
use homeostat_core::policy::{Choice, Decide, Outcome, PolicyKey, RulePrior, Verification};
use homeostat_journal::decisions::{Decision, NewDecision};
use homeostat_journal::known_good::KnownGood;
use homeostat_journal::leadership::Term;
use homeostat_journal::{Delivery, Journal};

use super::decide::{self, PolicyChoice, Stop};
use super::execute::{self, Executed};
use super::guard::ReadinessRead;
use super::learn::{self, Learner, Lesson};
use super::verify::{self, Check};
use super::{context, guard as guard_stage, known_good, Controls, Parts, Processor};
use crate::metrics::Metrics;
use crate::notifier::Notifier;

/// An action did harm when the error ratio after it exceeds the one before
/// by more than this (HighErrorRatio's threshold).
const HARM_MARGIN: f64 = 0.05;

/// What the policy saw and chose (its features are in the choice),
/// recorded with the decision.
#[derive(Serialize)]
struct PolicyView {
    /// Context features Prometheus could not give, and why.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    missing: BTreeMap<String, String>,
    choice: Choice,
}

/// What the target's own state says before choosing (see `target_state`).
#[derive(Default)]
struct TargetState {
    condition: Option<Condition>,
    known_good: Option<KnownGood>,
    /// How it differs from its known good spec, in words.
    drift: Vec<String>,
    /// What could not be read.
    error: Option<String>,
}

impl TargetState {
    /// What the decision records of it, if there is anything to say.
    fn record(&self) -> Option<serde_json::Value> {
        if self.condition.is_none() && self.error.is_none() {
            return None;
        }
        let condition = self.condition.as_ref();
        Some(json!({
            "drift": self.drift,
            "known_good_since": self.known_good.as_ref().map(|k| k.healthy_since),
            "stopped_deliberately": condition.and_then(|c| c.stopped_deliberately.as_ref()),
            "runtime": condition.and_then(|c| c.runtime.as_ref()),
            "error": self.error,
        }))
    }
}

/// When an incident needs its next look; `None`: only when a delivery comes.
pub type Next = Option<DateTime<Utc>>;

/// Where an incident's latest proposal stands.
enum Answered {
    /// No proposal open or answered (or its approval was acted on).
    None,
    /// Approved: this action with this operation may go ahead once the
    /// guard and premise allow it.
    Approved(Action, serde_json::Value),
    /// No answer yet; it expires then.
    Waiting(DateTime<Utc>),
    /// Rejected, or expired: escalated, and not proposed again.
    Declined(Stop),
}

pub struct Responder<E> {
    executor: Arc<E>,
    pub(super) http: reqwest::Client,
    pub(super) journal: Journal,
    pub(super) config: ActionsConfig,
    pub(super) controls: Arc<Controls>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) clock: Arc<dyn Clock>,
    learner: Arc<tokio::sync::Mutex<Learner>>,
    /// Tells humans: escalations and `notify` decisions.
    notifier: Arc<Notifier>,
    /// One lock per target: actions on a target are one at a time.
    targets: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The verifications under way: a clean stop waits for them.
    verifications: tokio_util::task::TaskTracker,
}

/// Target locks kept before unused ones are dropped.
const TARGET_LOCKS: usize = 1024;

impl<E: Executor> Responder<E> {
    pub fn new(executor: E, parts: Parts, playbook: Playbook, config: ActionsConfig) -> Self {
        let Parts {
            journal,
            metrics,
            controls,
            clock,
        } = parts;
        controls.set_playbook(playbook);
        Responder {
            executor: Arc::new(executor),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            learner: Arc::new(tokio::sync::Mutex::new(Learner::new(config.policy.learning.clone()))),
            notifier: Arc::new(Notifier::new(
                &config,
                journal.clone(),
                Arc::clone(&metrics),
                Arc::clone(&clock),
            )),
            targets: Mutex::new(HashMap::new()),
            verifications: tokio_util::task::TaskTracker::new(),
            journal,
            config,
            controls,
            metrics,
            clock,
        }
    }

    /// Asks the learning policy: gathers the context, masks what cannot or
    /// may not be done, and lets the policy choose. Also returns the
    /// target's readiness when it was read, for the guard to reuse.
    async fn consult(
        &self,
        incident: &Incident,
        target: &Target,
        rule: &Rule,
        failed: &[Action],
        drifted: bool,
    ) -> (PolicyView, ReadinessRead) {
        let context = context::gather(&self.http, &self.config, &incident.labels).await;
        let mut features = context.features();
        features.anomaly_score = self.controls.anomaly.score_for(&incident.labels);
        let readiness = if target.is_empty() {
            None
        } else {
            Some(self.executor.readiness(target).await)
        };
        // A scale-out whose clone would not serve is not offered (unreadable:
        // offered, and the premise tells before acting).
        let unfit_scale_out = if target.is_empty() {
            None
        } else {
            self.executor.unfit(target, Action::ScaleOut).await.ok().flatten()
        };
        // Only the capacity limit differs between actions; the rest of the
        // guard is checked for real after the choice.
        let known_readiness = readiness.clone().and_then(Result::ok).flatten();
        let mask = decide::mask(
            target,
            self.executor.backend(),
            rule,
            self.config.drain_on_cordon,
            drifted,
            |action| (action == Action::ScaleOut).then(|| unfit_scale_out.clone()).flatten(),
            |action| {
                let verdict = guard::capacity(&self.config.guard, action, known_readiness);
                (!verdict.is_allow()).then(|| verdict.reason().to_owned())
            },
        );
        let key = PolicyKey::from_labels(&incident.labels);
        let mut learner = self.learner.lock().await;
        learn::refresh(&self.journal, &self.metrics, &self.config.policy.learning, &mut learner).await;
        let Learner { policy, rng, .. } = &mut *learner;
        let input = Decide {
            key: &key,
            features: &features,
            rule: Some(RulePrior::from(rule)),
            mask: &mask,
            failed,
        };
        let choice = policy.decide(&input, rng);
        let view = PolicyView {
            missing: context.missing,
            choice,
        };
        (view, readiness)
    }

    /// The target's condition, its last known good spec and how it drifted
    /// from it. What cannot be read is said in the record, and counts as
    /// no drift and no deliberate stop (the premise reads again).
    async fn target_state(&self, target: &Target) -> TargetState {
        let mut state = TargetState::default();
        if target.is_empty() {
            return state;
        }
        let condition = match self.executor.condition(target).await {
            Ok(condition) => condition,
            Err(err) => {
                state.error = Some(format!("cannot read the target's condition: {err}"));
                return state;
            }
        };
        if let Some(condition) = &condition {
            match self.journal.known_good(condition.instance.clone()).await {
                Ok(known_good) => state.known_good = known_good,
                Err(err) => state.error = Some(format!("cannot read the known good spec: {err}")),
            }
            if let (Some(good), Some(now)) = (&state.known_good, &condition.spec) {
                state.drift = self.executor.drift(&good.spec, now);
            }
        }
        state.condition = condition;
        state
    }

    /// The lock that keeps actions on `target_key` one at a time.
    fn target_lock(&self, target_key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        if targets.len() >= TARGET_LOCKS {
            targets.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        Arc::clone(targets.entry(target_key.to_owned()).or_default())
    }

    /// When an action decided at `decided_at` is verified at the latest:
    /// the look after it, should its verification never report back.
    fn verified_by(&self, decided_at: DateTime<Utc>) -> DateTime<Utc> {
        decided_at
            + self.config.execute_timeout.as_delta()
            + self.config.verify_timeout.as_delta()
            + LATE_DELIVERY_GRACE
    }

    /// Looks at the incident once, as the reconciler does when it is due;
    /// returns when it needs the next look.
    pub(super) async fn look(&self, incident_id: i64) -> homeostat_journal::Result<Next> {
        let Some(mut incident) = self.journal.incident(incident_id).await? else {
            return Ok(None);
        };
        // Resolved since: nothing to do, ever.
        if incident.status != AlertStatus::Firing {
            return Ok(None);
        }
        let backend = self.executor.backend();
        let target = Target::from_labels(&incident.labels, &self.config.target_labels);
        let target_key = if target.is_empty() {
            "-".into()
        } else {
            target.key(backend)
        };
        let lock = self.target_lock(&target_key);
        let _one_at_a_time = lock.lock().await;
        let past = self.journal.decisions(incident_id).await?;
        let now = self.clock.now();
        if let Some(last) = decide::under_way(&past) {
            // Verification reports back when it ends; this is the fallback.
            let period = self.config.reconcile.period.as_delta();
            return Ok(Some(self.verified_by(last).max(now + period)));
        }
        // Verified fixed: its resolution is on the way (Alertmanager sends
        // it at its next group_interval; the vanish check closes it if not).
        // Not acted on again for a verify_timeout.
        if let Some(quiet_until) = decide::fixed_at(&past).map(|t| t + self.config.verify_timeout.as_delta()) {
            if now < quiet_until {
                return Ok(Some(quiet_until));
            }
        }
        // In dry run a would-be action is "under way" for as long as a real
        // one could be verifying, so that dry run decides as acting would.
        let verify = self.config.verify_timeout.as_delta();
        if past
            .iter()
            .any(|d| d.new.dry_run && d.new.verdict == Verdict::Allow && d.new.decided_at + verify > now)
        {
            return Ok(None);
        }
        if past.is_empty() {
            self.implicate(&mut incident, &target).await?;
        }
        let mut decision = NewDecision {
            incident_id,
            decided_at: now,
            target_key,
            action: Action::Notify.as_str().into(),
            rule: None,
            attempt: decide::failures(&past) as i64,
            verdict: Verdict::Notify,
            reason: String::new(),
            record: json!({ "target": target, "labels": incident.labels }),
            dry_run: self.config.dry_run,
        };
        // A proposal waits for a human's answer; a rejection, or no answer
        // within approval_timeout, escalates; an approval lets its action
        // through below, past the guard and the premise checked again.
        let approved = match self.answered(&past, now).await? {
            Answered::None => None,
            Answered::Approved(action, operation) => Some((action, operation)),
            Answered::Waiting(until) => return Ok(Some(until)),
            Answered::Declined(stop) => return self.stop(&incident, &past, decision, stop).await,
        };
        // What the target's own state says: drift from its last known good
        // spec, a deliberate stop. Read here for the choice; the premise
        // reads it again right before acting.
        let state = self.target_state(&target).await;
        if let Some(record) = state.record() {
            decision.record["condition"] = record;
        }
        let playbook = self.controls.playbook();
        let progress = match decide::progress(&past, &playbook, &incident.labels, !state.drift.is_empty()) {
            Ok(progress) => progress,
            Err(stop) => return self.stop(&incident, &past, decision, stop).await,
        };
        decision.rule = Some(progress.rule.name.clone());
        let left_alone = state
            .condition
            .as_ref()
            .and_then(|c| guard_stage::left_alone(c, progress.rule.deliberate_stop));
        if let Some(stop) = left_alone {
            return self.stop(&incident, &past, decision, stop).await;
        }
        let mode = self.config.policy.mode;
        let mut consulted = match mode {
            PolicyMode::Playbook => None,
            PolicyMode::Shadow | PolicyMode::Learn => Some(
                self.consult(
                    &incident,
                    &target,
                    progress.rule,
                    &progress.failed_actions,
                    !state.drift.is_empty(),
                )
                .await,
            ),
        };
        if let Some((view, _)) = &consulted {
            let acted = mode == PolicyMode::Learn;
            decision.record["policy"] = json!({
                "mode": mode,
                "acted": acted,
                "playbook_action": progress.next,
                "view": view,
            });
            let agrees = view.choice.action.is_some() && view.choice.action == progress.next;
            self.metrics.count_policy_choice(acted, view.choice.explored, agrees);
        }
        let policy_choice = consulted.as_ref().map(|(view, _)| PolicyChoice {
            action: view.choice.action,
            why: &view.choice.why,
        });
        let chosen = decide::choose(
            &progress,
            mode,
            policy_choice,
            &target,
            backend,
            self.config.drain_on_cordon,
        );
        let (action, mut operation) = match chosen {
            Ok(chosen) => chosen,
            Err(stop) => return self.stop(&incident, &past, decision, stop).await,
        };
        decision.action = action.as_str().into();
        // A repair restores exactly the spec recorded as known good.
        if let Operation::RepairContainer { spec, .. } = &mut operation {
            match &state.known_good {
                Some(good) => *spec = good.spec.clone(),
                None => {
                    let reason = "no known good spec is recorded for the target: nothing to repair it to";
                    let stop = Stop::new(action, Verdict::Unplannable, reason);
                    return self.stop(&incident, &past, decision, stop).await;
                }
            }
        }

        let sources = guard_stage::Sources {
            journal: &self.journal,
            executor: &*self.executor,
            config: &self.config,
            paused: self.controls.paused.load(Ordering::Acquire),
            now,
            failed_step: decide::failed_step(&past),
        };
        let readiness = consulted.as_mut().and_then(|(_, read)| read.take());
        let mut situation =
            match guard_stage::situation(sources, &decision.target_key, &target, action, readiness).await? {
                Ok(situation) => situation,
                Err(stop) => return self.stop(&incident, &past, decision, stop).await,
            };
        let mut verdict = guard::check(&self.config.guard, action, &situation);
        // The premise last, right before acting, and only when it matters.
        if verdict.is_allow() && action != Action::Notify {
            let intent = guard_stage::Intent {
                deliberate_stop: progress.rule.deliberate_stop,
                known_good: state.known_good.as_ref(),
                acted_at: past
                    .iter()
                    .rev()
                    .find(|d| d.new.verdict == Verdict::Allow && !d.new.dry_run)
                    .map(|d| d.new.decided_at),
            };
            let premise = guard_stage::premise(
                &self.http,
                &self.config,
                &*self.executor,
                &incident,
                &target,
                action,
                &intent,
            )
            .await;
            match premise {
                Ok(false) => {}
                Ok(true) => {
                    situation.silenced = true;
                    verdict = guard::check(&self.config.guard, action, &situation);
                }
                Err(stop) => return self.stop(&incident, &past, decision, stop).await,
            }
        }
        decision.record["operation"] = json!(operation);
        decision.record["guard"] = json!({
            "verdict": verdict,
            "consecutive_failures": situation.consecutive_failures,
            "in_flight": situation.in_flight,
            "recent_actions": situation.recent_actions.len(),
            "readiness": situation.readiness,
        });
        if !verdict.is_allow() {
            let mut stop = Stop::new(action, verdict.decided(), verdict.reason());
            if let guard::Verdict::Defer { until, .. } = verdict {
                stop.until = until;
            }
            return self.stop(&incident, &past, decision, stop).await;
        }

        // Approved is this action and this exact operation: anything else
        // (another known-good revision by now, say) is proposed anew.
        let is_approved = approved
            .as_ref()
            .is_some_and(|(a, op)| *a == action && *op == decision.record["operation"]);
        if progress.rule.needs_approval.contains(&action) && !is_approved {
            return self.propose(&incident, &past, decision, action).await;
        }
        decision.verdict = Verdict::Allow;
        decision.reason = if is_approved {
            "within every limit; approved".into()
        } else {
            "within every limit".into()
        };
        let since_alert = (self.clock.now() - incident.starts_at).to_std().unwrap_or_default();
        self.metrics.alert_to_action_seconds.observe(since_alert.as_secs_f64());
        let executed = execute::execute(
            &self.journal,
            &self.metrics,
            &*self.executor,
            &*self.clock,
            decision,
            action,
            &operation,
        )
        .await?;
        match executed {
            Executed::Done { id, at } => {
                let check = Check {
                    incident_id,
                    health: progress.rule.health_query_for(&incident.labels),
                    prometheus: self.config.prometheus_url.clone(),
                    timeout: self.config.verify_timeout.0,
                    probe: Some((self.config.clone(), incident.clone())),
                    target,
                    acted_at: at,
                };
                let lesson = consulted.map(|(view, _)| Lesson {
                    key: view.choice.key,
                    features: view.choice.features,
                });
                let fallback = self.verified_by(now);
                self.spawn_verification(id, incident, action, check, lesson, fallback);
                Ok(Some(fallback))
            }
            // The call failed: the next step, at once.
            Executed::Failed => Ok(Some(self.clock.now())),
            // Nothing was done, so nothing follows but another delivery.
            Executed::DryRun => Ok(None),
        }
    }

    /// Once `incident_id` has resolved (or vanished), removes the replicas
    /// homeostat added for it: for each of its scale-outs not yet undone, a
    /// `scale_in` decision journalled like any other, held to the minimum
    /// of ready replicas (and by the executor to its `min_replicas` and to
    /// never removing the last ready one), carried out by an operation that
    /// removes only a replica homeostat added. Nothing fires to verify it
    /// against: the removal done is its outcome. A refusal leaves the
    /// replica, and says so in the journal.
    pub(super) async fn retire(&self, incident_id: i64) -> homeostat_journal::Result<()> {
        if !self.journal.leadership().may_act() {
            return Ok(());
        }
        let Some(incident) = self.journal.incident(incident_id).await? else {
            return Ok(());
        };
        if incident.status == AlertStatus::Firing {
            return Ok(());
        }
        let backend = self.executor.backend();
        let target = Target::from_labels(&incident.labels, &self.config.target_labels);
        if target.is_empty() {
            return Ok(());
        }
        let target_key = target.key(backend);
        let lock = self.target_lock(&target_key);
        let _one_at_a_time = lock.lock().await;
        let past = self.journal.decisions(incident_id).await?;
        for added in decide::added_replicas(&past, self.config.dry_run) {
            let mut decision = NewDecision {
                incident_id,
                decided_at: self.clock.now(),
                target_key: target_key.clone(),
                action: Action::ScaleIn.as_str().into(),
                rule: None,
                attempt: 0,
                verdict: Verdict::Allow,
                reason: format!("incident {incident_id} resolved: removing the replica homeostat added for it"),
                record: json!({ "target": target, "labels": incident.labels, "retires": added }),
                dry_run: self.config.dry_run,
            };
            let stays = |why: String| {
                format!("incident {incident_id} resolved, but the replica homeostat added for it stays: {why}")
            };
            let operation = match plan_retire(backend, &target) {
                Ok(operation) => operation,
                Err(refusal) => {
                    let reason = stays(refusal.to_string());
                    self.escalate(&incident, &past, &reason).await;
                    self.record_held(decision, Verdict::Unplannable, reason).await?;
                    continue;
                }
            };
            decision.record["operation"] = json!(operation);
            if self.controls.paused.load(Ordering::Acquire) {
                let reason = stays("homeostat is paused; remove it by hand".into());
                self.record_held(decision, Verdict::Refuse, reason).await?;
                continue;
            }
            let readiness = match self.executor.readiness(&target).await {
                // In dry run the clone was never started: count it as it
                // would be, so that dry run decides as acting would.
                Ok(Some(mut readiness)) if self.config.dry_run => {
                    readiness.ready += 1;
                    readiness.total += 1;
                    Some(readiness)
                }
                Ok(readiness) => readiness,
                Err(err) => {
                    let reason = stays(format!("the service's readiness cannot be read: {err}"));
                    self.record_held(decision, Verdict::Refuse, reason).await?;
                    continue;
                }
            };
            decision.record["guard"] = json!({ "readiness": readiness });
            let verdict = guard::capacity(&self.config.guard, Action::ScaleIn, readiness);
            if !verdict.is_allow() {
                let reason = stays(verdict.reason().to_owned());
                self.record_held(decision, verdict.decided(), reason).await?;
                continue;
            }
            let executed = execute::execute(
                &self.journal,
                &self.metrics,
                &*self.executor,
                &*self.clock,
                decision,
                Action::ScaleIn,
                &operation,
            )
            .await?;
            if let Executed::Done { id, .. } = executed {
                // Done: removed, its outcome. Timed out: unknown.
                let done = self.journal.decisions(incident_id).await?;
                let result = done.iter().find(|d| d.id == id).and_then(|d| d.result);
                let outcome = if result == Some(ActionResult::Done) {
                    Verification::Success
                } else {
                    Verification::Timeout
                };
                self.journal.record_outcome(id, outcome, self.clock.now()).await?;
                self.metrics.count_outcome(Action::ScaleIn.as_str(), outcome.as_str());
            }
        }
        Ok(())
    }

    /// Records a decision that does nothing, with `verdict` and `reason`.
    async fn record_held(
        &self,
        mut decision: NewDecision,
        verdict: Verdict,
        reason: String,
    ) -> homeostat_journal::Result<()> {
        tracing::warn!(incident = decision.incident_id, %verdict, %reason, "Not removing a replica homeostat added.");
        decision.verdict = verdict;
        decision.reason = reason;
        self.metrics.count_decision(&decision.action, verdict.as_str());
        self.journal.record_decision(decision).await.map(drop)
    }

    /// Where the incident's latest proposal stands. An answer counts only
    /// within `approval_timeout` of the proposal, and an approval only for
    /// `approval_timeout` after it was given (a deferral meanwhile, say).
    async fn answered(&self, past: &[Decision], now: DateTime<Utc>) -> homeostat_journal::Result<Answered> {
        let Some(at) = past.iter().rposition(|d| d.new.verdict == Verdict::Propose) else {
            return Ok(Answered::None);
        };
        let (proposal, after) = (&past[at], &past[at + 1..]);
        let Some(action) = Action::parse(&proposal.new.action) else {
            return Ok(Answered::None);
        };
        // Acted on since (or dry-run acted): the approval is spent.
        if after.iter().any(|d| d.new.verdict == Verdict::Allow) {
            return Ok(Answered::None);
        }
        let timeout = self.config.approval_timeout;
        let until = proposal.new.decided_at + timeout.as_delta();
        let declined = |why: String| Answered::Declined(Stop::new(action, Verdict::Escalate, why));
        Ok(match self.journal.approval(proposal.id).await? {
            Some(answer) if answer.approved && answer.at < until => {
                if now < answer.at + timeout.as_delta() {
                    Answered::Approved(action, proposal.new.record["operation"].clone())
                } else {
                    declined(format!(
                        "{} approved {action} at {}, but it could not be done within {timeout} \
                         (actions.approval_timeout); escalating to a human",
                        answer.who,
                        answer.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ))
                }
            }
            Some(answer) if answer.approved => declined(format!(
                "{} approved {action} after the proposal expired; escalating to a human",
                answer.who
            )),
            Some(answer) => declined(format!(
                "{} rejected {action}{}; escalating to a human",
                answer.who,
                answer.reason.map(|r| format!(": {r}")).unwrap_or_default()
            )),
            None => match after.iter().find(|d| d.new.verdict == Verdict::Escalate) {
                // Expired before: escalated once, and not proposed again.
                Some(escalated) => declined(escalated.new.reason.clone()),
                None if now < until => Answered::Waiting(until),
                None => declined(format!(
                    "no one approved {action} within {timeout} (actions.approval_timeout); escalating to a human"
                )),
            },
        })
    }

    /// Records `action` as proposed, with its exact operation in the
    /// decision, and asks the sinks for an approval.
    async fn propose(
        &self,
        incident: &Incident,
        past: &[Decision],
        mut decision: NewDecision,
        action: Action,
    ) -> homeostat_journal::Result<Next> {
        let timeout = self.config.approval_timeout;
        let until = decision.decided_at + timeout.as_delta();
        decision.verdict = Verdict::Propose;
        decision.reason = format!(
            "{action} needs approval: `homeostat approve {}` (or `reject`) before {}; the guard and the premise are \
             checked again then",
            incident.id,
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        tracing::warn!(incident = incident.id, %action, %timeout, "Waiting for approval.");
        let operation = decision.record["operation"].to_string();
        self.metrics.count_decision(action.as_str(), Verdict::Propose.as_str());
        let reason = format!("{} (operation: {operation})", decision.reason);
        self.journal.record_decision(decision).await?;
        self.tell(NoticeEvent::Approval, incident, past, &reason).await;
        Ok(Some(until))
    }

    /// Records what the incident implicates when its rule may roll back:
    /// what its target runs on the first look, so a rollback later undoes
    /// that and nothing deployed since.
    async fn implicate(&self, incident: &mut Incident, target: &Target) -> homeostat_journal::Result<()> {
        let may_roll_back = self
            .controls
            .playbook()
            .rule_for(&incident.labels)
            .is_some_and(|rule| rule.actions.contains(&Action::Rollback));
        if !may_roll_back || target.is_empty() {
            return Ok(());
        }
        match self.executor.deployed(target).await {
            Ok(Some(deployed)) => {
                self.journal.implicate(incident.id, deployed.what.clone()).await?;
                incident.implicated.get_or_insert(deployed.what);
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(incident = incident.id, error = %err, "Cannot read what the target runs."),
        }
        Ok(())
    }

    /// Records a decision that leads to no action, unless the incident's
    /// last decision already said the same; an escalation also tells a
    /// human, once per incident. Returns when to look again: a deferral at
    /// its end, a refusal (or a deferral without one) after a backoff that
    /// grows with how long it has lasted; a refusal that lasted past
    /// `actions.reconcile.escalate_after` is also escalated.
    async fn stop(
        &self,
        incident: &Incident,
        past: &[Decision],
        mut decision: NewDecision,
        stop: Stop,
    ) -> homeostat_journal::Result<Next> {
        let Stop {
            action,
            verdict,
            reason,
            until,
        } = stop;
        let now = decision.decided_at;
        decision.action = action.as_str().into();
        if verdict.escalates() {
            self.escalate(incident, past, &reason).await;
        }
        let held = decide::held_since(past, verdict, now);
        let settings = &self.config.reconcile;
        let next = match (verdict, until) {
            (Verdict::Defer, Some(until)) => Some(until),
            (Verdict::Defer | Verdict::Refuse, _) => {
                let lasted = (now - held).max(settings.period.as_delta());
                Some(now + lasted.min(settings.max_backoff.as_delta()))
            }
            _ => None,
        };
        if verdict == Verdict::Refuse
            && now - held >= settings.escalate_after.as_delta()
            && !past.iter().any(|d| d.new.verdict.escalates())
        {
            let why = format!("refused since {held} ({} or longer): {reason}", settings.escalate_after);
            self.escalate(incident, past, &why).await;
            let mut escalation = decision.clone();
            escalation.verdict = Verdict::Escalate;
            escalation.reason = why;
            self.metrics
                .count_decision(&escalation.action, Verdict::Escalate.as_str());
            self.journal.record_decision(escalation).await?;
            return Ok(next);
        }
        let repeated = past.last().is_some_and(|last| {
            last.new.verdict == verdict && last.new.action == decision.action && last.new.reason == reason
        });
        if repeated {
            return Ok(next);
        }
        tracing::info!(incident = decision.incident_id, %verdict, %reason, "Not acting.");
        if verdict == Verdict::Notify {
            self.tell(NoticeEvent::Notice, incident, past, &reason).await;
        }
        decision.verdict = verdict;
        decision.reason = reason;
        self.metrics.count_decision(&decision.action, verdict.as_str());
        self.journal.record_decision(decision).await?;
        Ok(next)
    }

    /// Tells a human, once per incident: log, metric, and every sink that
    /// takes escalations, with what was tried.
    /// Logged once too: repeated deliveries of an escalated incident say nothing.
    async fn escalate(&self, incident: &Incident, past: &[Decision], reason: &str) {
        if past.iter().any(|d| d.new.verdict.escalates()) {
            return;
        }
        tracing::error!(incident = incident.id, alertname = %incident.alertname, %reason, "Escalating to a human.");
        self.metrics.escalations.inc();
        self.tell(NoticeEvent::Escalation, incident, past, reason).await;
    }

    /// Queues a notice about `incident` for the sinks that take `event`.
    async fn tell(&self, event: NoticeEvent, incident: &Incident, past: &[Decision], reason: &str) {
        let tried = past
            .iter()
            .filter(|d| d.new.verdict == Verdict::Allow)
            .map(|d| Tried {
                action: d.new.action.clone(),
                result: d.result,
                detail: d.detail.clone(),
                outcome: d.outcome,
            })
            .collect();
        let notice = Notice {
            event,
            incident: incident.id,
            alertname: incident.alertname.clone(),
            labels: incident.labels.clone(),
            reason: reason.to_owned(),
            tried,
            starts_at: incident.starts_at,
            link: self.notifier.link(incident.id),
        };
        self.notifier.queue(&notice).await;
    }

    /// Verifies the action in the background, records the outcome and, when
    /// the policy chose with context, learns from it — unless the outcome is
    /// confounded (an outside change came with the recovery), which teaches
    /// nothing about the action.
    /// Then it wakes the reconciler for the incident, whose next look was
    /// `fallback` meanwhile.
    fn spawn_verification(
        &self,
        id: i64,
        incident: Incident,
        action: Action,
        check: Check,
        lesson: Option<Lesson>,
        fallback: DateTime<Utc>,
    ) {
        let incident_id = incident.id;
        let wake = Arc::clone(&self.controls.wake);
        let journal = self.journal.clone();
        let metrics = Arc::clone(&self.metrics);
        let clock = Arc::clone(&self.clock);
        let http = self.http.clone();
        let learner = Arc::clone(&self.learner);
        let config = self.config.clone();
        let executor = Arc::clone(&self.executor);
        self.verifications.spawn(async move {
            let verified = verify::verify(&journal, &http, &*executor, &*clock, &check).await;
            let outcome = verified.verification;
            if let Some(why) = &verified.health_error {
                tracing::warn!(incident = incident_id, %why, "The health query could not be run.");
            }
            let recorded = if outcome == Verification::Confounded {
                let changes = verified.outside_changes.join("; ");
                tracing::info!(
                    incident = incident_id,
                    %action,
                    outcome = outcome.as_str(),
                    %changes,
                    "Verified: the alert resolved, but the target was also changed from outside; \
                     the action is not credited and nothing is learned."
                );
                journal
                    .record_confounded(id, &verified.outside_changes, clock.now())
                    .await
            } else {
                tracing::info!(incident = incident_id, %action, outcome = outcome.as_str(), "Verified.");
                journal.record_outcome(id, outcome, clock.now()).await
            };
            metrics.count_outcome(action.as_str(), outcome.as_str());
            if let Err(err) = recorded {
                tracing::error!(decision = id, error = %err, "Cannot record the outcome.");
                return;
            }
            // The next step, if any, at once.
            if let Err(err) = due_now(&journal, &*clock, incident_id, fallback).await {
                tracing::error!(incident = incident_id, error = %err, "Cannot schedule the next look.");
            }
            wake.notify_one();
            let Some(lesson) = lesson.filter(|_| outcome.teaches()) else {
                return;
            };
            // Harm: more errors after the action than before it.
            let before = lesson.features.error_ratio;
            let after = context::error_ratio(&http, &config, &incident.labels).await;
            let harm = matches!((before, after), (Some(b), Some(a)) if a > b + HARM_MARGIN);
            let outcome = Outcome {
                verification: outcome,
                seconds_to_resolve: (outcome == Verification::Success).then_some(verified.seconds),
                harm,
            };
            let mut learner = learner.lock().await;
            let sources = learn::Sources {
                journal: &journal,
                metrics: &metrics,
                clock: &*clock,
                config: &config.policy.learning,
            };
            learn::learn(sources, &mut learner, id, lesson, action, outcome).await;
        });
    }
}

/// Makes the incident due now, in place of the `fallback` look its action
/// left. The look that acted stores that fallback only after it spawned
/// the verification, so a verification over at once may come first: it
/// tries again for a moment, unless something else made the incident due.
async fn due_now(
    journal: &Journal,
    clock: &dyn Clock,
    incident_id: i64,
    fallback: DateTime<Utc>,
) -> homeostat_journal::Result<()> {
    for _ in 0..20 {
        if journal.schedule(incident_id, Some(fallback), Some(clock.now())).await? {
            return Ok(());
        }
        let Some(incident) = journal.incident(incident_id).await? else {
            return Ok(());
        };
        if incident.status != AlertStatus::Firing || incident.next_check.is_some_and(|t| t <= clock.now()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// A delivery has already made its incidents due (the journal sets their
/// next check as it ingests it): the responder wakes the reconciler.
impl<E: Executor> Processor for Responder<E> {
    async fn process(&self, delivery: &Delivery) {
        if delivery
            .events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Opened | EventKind::Repeated))
        {
            self.controls.wake.notify_one();
        }
        // Before the watermark moves past the delivery: a crash replays it.
        for event in delivery.events.iter().filter(|e| e.kind == EventKind::Resolved) {
            if let Err(err) = self.retire(event.incident_id).await {
                tracing::error!(incident = event.incident_id, error = %err, "Cannot remove the replicas homeostat added for the incident.");
            }
        }
    }

    async fn background(self: Arc<Self>, stop: tokio::sync::watch::Receiver<bool>) {
        let notifier = tokio::spawn(Arc::clone(&self.notifier).run(stop.clone()));
        let known_good_after = match self.executor.backend() {
            Backend::Docker => self.config.docker.known_good_after,
            Backend::Kubernetes => self.config.kubernetes.known_good_after,
        };
        let watch = known_good::Watch::new(
            Arc::clone(&self.executor),
            self.journal.clone(),
            Arc::clone(&self.clock),
            self.config.target_labels.clone(),
            known_good_after.as_delta(),
            Arc::clone(&self.metrics),
        );
        let watching = tokio::spawn(watch.run(stop.clone()));
        super::reconcile::run(Arc::clone(&self), stop).await;
        // They stop at the same signal; what is not sent stays journalled.
        let _ = notifier.await;
        let _ = watching.await;
        // At a clean stop, verifications end by their own deadline first
        // (`serve` bounds the stop by its drain timeout), so the next leader
        // does not find them unverified. A deposed leader does not wait: its
        // verifications can record nothing, and it may lead again meanwhile.
        self.verifications.close();
        let mut leadership = self.journal.leadership();
        if let Term::Leading(term) = leadership.term() {
            tokio::select! {
                () = self.verifications.wait() => {}
                () = leadership.ended(term) => {}
            }
        }
        self.verifications.reopen();
    }
}
