//! The responder: the pipeline stages after ingest, for each firing
//! incident — decide (playbook) → plan → guard → record → execute → verify.
//!
//! The decision is journalled before the executor is called and the result
//! after; verification records whether the alert resolved within
//! `actions.verify_timeout` ("ran but still firing" is a failure). Refusals
//! and deferrals are recorded once per incident, not on every repeated
//! delivery.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use homeostat_core::action::{plan, Action, Target};
use homeostat_core::alert::AlertStatus;
use homeostat_core::config::{ActionsConfig, PolicyMode};
use homeostat_adapters::prometheus::{self as context, query_holds};
use homeostat_adapters::executor::Executor;
use homeostat_core::guard::{self, Readiness, Situation, Verdict};
use homeostat_core::incident::EventKind;
use homeostat_journal::decisions::{Decision, NewDecision};
use homeostat_journal::{Delivery, Journal};
use crate::metrics::Metrics;
use crate::pipeline::{Parts, Processor};
use homeostat_core::playbook::{Playbook, Rule, Step};
use homeostat_core::policy::{
    self, Choice, Decide, Features, Mask, Outcome, Policy, PolicyKey, PolicyState, RulePrior, Verification,
};

/// Switches an operator flips at run time (`POST /api/v1/pause`, `/resume`).
#[derive(Debug, Default)]
pub struct Controls {
    pub paused: AtomicBool,
}

/// How often verification looks at the incident.
const VERIFY_POLL: Duration = Duration::from_millis(500);

/// How long one context query may take: context helps a decision but must
/// not hold it up when Prometheus is slow or down.
const CONTEXT_TIMEOUT: Duration = Duration::from_secs(1);

/// An action did harm when the error ratio after it exceeds the one before
/// by more than this (HighErrorRatio's threshold).
const HARM_MARGIN: f64 = 0.05;

/// Saves of learned state refused because the stored state moved on (an
/// import) are retried on top of it this many times.
const LEARN_ATTEMPTS: usize = 3;

/// The learning policy as the responder holds it: the journal's state at
/// `revision`, reloaded whenever the journal's revision moves (an import
/// from the command line).
struct Learner {
    /// The journal revision `policy` was loaded from; -1 before the first load.
    revision: i64,
    policy: Policy,
    rng: StdRng,
    /// Why the stored state could not be loaded: nothing is saved over it
    /// until it is replaced (`homeostat policy import`).
    broken: Option<String>,
}

/// What the policy saw and chose (its features are in the choice),
/// recorded with the decision.
#[derive(Serialize)]
struct PolicyView {
    /// Context features Prometheus could not give, and why.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    missing: std::collections::BTreeMap<String, String>,
    choice: Choice,
}

/// What verification needs in order to learn from an outcome.
struct Lesson {
    key: PolicyKey,
    features: Features,
}

pub struct Responder<E> {
    executor: Arc<E>,
    http: reqwest::Client,
    journal: Journal,
    playbook: Playbook,
    config: ActionsConfig,
    controls: Arc<Controls>,
    metrics: Arc<Metrics>,
    learner: Arc<tokio::sync::Mutex<Learner>>,
}

impl<E: Executor> Responder<E> {
    pub fn new(executor: E, parts: Parts, playbook: Playbook, config: ActionsConfig) -> Self {
        let Parts {
            journal,
            metrics,
            controls,
        } = parts;
        Responder {
            executor: Arc::new(executor),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            learner: Arc::new(tokio::sync::Mutex::new(Learner {
                revision: -1,
                policy: Policy::new(config.policy.learning.clone()),
                rng: StdRng::from_entropy(),
                broken: None,
            })),
            journal,
            playbook,
            config,
            controls,
            metrics,
        }
    }

    /// Asks the learning policy: gathers the context, masks what cannot or
    /// may not be done, and lets the policy choose. Also returns the
    /// target's readiness when it was read, for the guard to reuse.
    ///
    /// The mask holds what is specific to an action: it cannot be planned
    /// on this backend or target, it would leave too few ready replicas, or
    /// it takes capacity away or touches a node (`scale_in`, `cordon`)
    /// without the playbook rule naming it. Limits on the target as a whole
    /// (pause, silences, cooldown, budget, circuit breaker, …) apply to
    /// whichever action is chosen, in the guard's check after the choice.
    async fn consult(
        &self,
        incident: &homeostat_core::incident::Incident,
        target: &Target,
        rule: &Rule,
        failed: &[Action],
    ) -> (PolicyView, Option<Result<Option<Readiness>, String>>) {
        let settings = &self.config.policy;
        let http = &self.http;
        let context = context::gather(
            http,
            self.config.prometheus_url.as_deref(),
            &settings.context,
            &incident.labels,
            CONTEXT_TIMEOUT,
        )
        .await;
        let features = context.features();
        let rule_actions = &rule.actions[..];
        let backend = self.executor.backend();
        let readiness = if target.is_empty() {
            None
        } else {
            Some(self.executor.readiness(target).await.map_err(|e| e.to_string()))
        };
        // Only the capacity limit differs between actions; the rest of the
        // guard is checked for real after the choice.
        let known_readiness = readiness.clone().and_then(Result::ok).flatten();
        let mut mask = Mask::none();
        for action in Action::ALL.into_iter().filter(|a| *a != Action::Notify) {
            if target.is_empty() {
                mask.refuse(action, "the alert's labels name nothing to act on");
            } else if let Err(refusal) = plan(action, backend, target, self.config.drain_on_cordon) {
                mask.refuse(action, format!("unplannable: {refusal}"));
            } else if matches!(action, Action::ScaleIn | Action::Cordon) && !rule_actions.contains(&action) {
                mask.refuse(
                    action,
                    "takes capacity away or touches a node, and the playbook rule does not name it",
                );
            } else {
                let verdict = guard::capacity(&self.config.guard, action, known_readiness);
                if !verdict.is_allow() {
                    mask.refuse(action, format!("guard: {}", verdict.reason()));
                }
            }
        }
        let key = PolicyKey::from_labels(&incident.labels);
        let mut learner = self.learner.lock().await;
        self.refresh(&mut learner).await;
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

    /// Reloads the learned state when the journal holds a newer one.
    async fn refresh(&self, learner: &mut Learner) {
        refresh(&self.journal, &self.metrics, &self.config.policy.learning, learner).await;
    }

    async fn respond(&self, incident_id: i64) -> homeostat_journal::Result<()> {
        let Some(incident) = self.journal.incident(incident_id).await? else {
            return Ok(());
        };
        // Resolved since this delivery was journalled: nothing to do, ever.
        if incident.status != AlertStatus::Firing {
            return Ok(());
        }
        let past = self.journal.decisions(incident_id).await?;
        let allowed = |d: &&Decision| d.new.verdict == "allow" && !d.new.dry_run;
        if past
            .iter()
            .filter(allowed)
            .any(|d| d.outcome.is_none() && matches!(d.result.as_deref(), None | Some("done")))
        {
            return Ok(()); // an action is under way or being verified
        }
        let failed = past
            .iter()
            .filter(|d| matches!(d.outcome.as_deref(), Some("failure" | "timeout")))
            .count();
        let backend = self.executor.backend();
        let target = Target::from_labels(&incident.labels, &self.config.target_labels);
        let now = Utc::now();
        let mut decision = NewDecision {
            incident_id,
            decided_at: now,
            target_key: if target.is_empty() {
                "-".into()
            } else {
                target.key(backend)
            },
            action: Action::Notify.as_str().into(),
            rule: None,
            attempt: failed as i64,
            verdict: String::new(),
            reason: String::new(),
            record: json!({ "target": target, "labels": incident.labels }),
            dry_run: self.config.dry_run,
        };
        // An action whose effect is unknown (homeostat stopped mid-way) is
        // never tried again blindly: a human decides.
        if past
            .iter()
            .filter(allowed)
            .any(|d| d.result.as_deref() == Some("interrupted"))
        {
            let reason = "an earlier action on this incident was interrupted and its effect is unknown; \
                          escalating instead of acting again"
                .to_owned();
            self.escalate(&incident, &past, &reason).await;
            return self.record_once(&past, decision, "escalate", reason).await;
        }
        let failed_actions: Vec<Action> = past
            .iter()
            .filter(|d| matches!(d.outcome.as_deref(), Some("failure" | "timeout")))
            .filter_map(|d| Action::parse(&d.new.action))
            .collect();
        let Some(matched) = self.playbook.rule_for(&incident.labels) else {
            return self
                .record_once(&past, decision, "no_rule", "no playbook rule matches the alert".into())
                .await;
        };
        let rule = matched.name.as_str();
        // The playbook's next action, `None` when every one failed.
        let playbook_action = match matched.step(failed) {
            Step::Try { action, .. } => Some(action),
            Step::Exhausted { .. } | Step::NoRule => None,
        };
        decision.rule = Some(rule.to_owned());
        let mode = self.config.policy.mode;
        let mut consulted = match mode {
            PolicyMode::Playbook => None,
            PolicyMode::Shadow | PolicyMode::Learn => {
                Some(self.consult(&incident, &target, matched, &failed_actions).await)
            }
        };
        if let Some((view, _)) = &consulted {
            let acted = mode == PolicyMode::Learn;
            decision.record["policy"] = json!({
                "mode": mode,
                "acted": acted,
                "playbook_action": playbook_action,
                "view": view,
            });
            let agrees = view.choice.action.is_some() && view.choice.action == playbook_action;
            self.metrics.count_policy_choice(acted, view.choice.explored, agrees);
        }
        // Whoever chooses, a rule whose every action failed goes to a human;
        // so does the learning policy preferring to do nothing where the
        // rule says to act (it has learned that nothing there works).
        let Some(playbook_action) = playbook_action else {
            let reason = format!("all {failed} actions of rule {rule:?} failed; escalating to a human");
            tracing::error!(incident = incident_id, rule, "Playbook exhausted; escalating.");
            self.escalate(&incident, &past, &reason).await;
            return self.record_once(&past, decision, "escalate", reason).await;
        };
        let rule_notifies = matched.actions.contains(&Action::Notify);
        let action = match &consulted {
            Some((view, _)) if mode == PolicyMode::Learn => match view.choice.action {
                Some(Action::Notify) | None if !rule_notifies => {
                    let reason = format!(
                        "the learning policy finds no action worth taking where rule {rule:?} says to act ({}); \
                         escalating to a human",
                        view.choice.why
                    );
                    tracing::error!(incident = incident_id, rule, "No action worth taking; escalating.");
                    self.escalate(&incident, &past, &reason).await;
                    return self.record_once(&past, decision, "escalate", reason).await;
                }
                Some(action) => action,
                None => Action::Notify,
            },
            _ => playbook_action,
        };
        decision.action = action.as_str().into();
        let chooser = if mode == PolicyMode::Learn {
            "the learning policy chose"
        } else {
            "the playbook says"
        };
        // Notify touches nothing: recorded for a human, never executed or verified.
        if action == Action::Notify {
            let reason = format!("{chooser} to notify a human; nothing is done");
            return self.record_once(&past, decision, "notify", reason).await;
        }
        if target.is_empty() {
            let reason = "the alert's labels name nothing to act on (see actions.target_labels)".to_owned();
            return self.record_once(&past, decision, "no_target", reason).await;
        }
        let operation = match plan(action, backend, &target, self.config.drain_on_cordon) {
            Ok(operation) => operation,
            Err(refusal) => {
                return self
                    .record_once(&past, decision, "unplannable", refusal.to_string())
                    .await
            }
        };
        let silenced = match self.silenced(&incident).await {
            Ok(silenced) => silenced,
            Err(why) => {
                let reason = format!("cannot tell whether the alert is silenced, so not acting: {why}");
                return self.record_once(&past, decision, "defer", reason).await;
            }
        };
        let history = self
            .journal
            .history(
                decision.target_key.clone(),
                now - chrono_delta(self.config.guard.budget.window.0),
            )
            .await?;
        let readiness = if action.removes_capacity() {
            let read = match consulted.as_mut().and_then(|(_, read)| read.take()) {
                Some(read) => read,
                _ => self.executor.readiness(&target).await.map_err(|e| e.to_string()),
            };
            match read {
                Ok(readiness) => readiness,
                // Taking capacity away from something that cannot be seen is never safe.
                Err(err) => {
                    let reason =
                        format!("{action} takes capacity away and the target's readiness cannot be read: {err}");
                    return self.record_once(&past, decision, "refuse", reason).await;
                }
            }
        } else {
            None
        };
        let situation = Situation {
            now,
            paused: self.controls.paused.load(Ordering::Acquire),
            silenced,
            namespace: target.namespace.clone(),
            last_action_on_target: history.last_action_on_target,
            consecutive_failures: history.consecutive_failures,
            recent_actions: history.recent_actions,
            in_flight: history.in_flight,
            readiness,
        };
        let verdict = guard::check(&self.config.guard, action, &situation);
        decision.record["operation"] = json!(operation);
        decision.record["guard"] = json!({
            "verdict": verdict,
            "consecutive_failures": situation.consecutive_failures,
            "in_flight": situation.in_flight,
            "recent_actions": situation.recent_actions.len(),
            "readiness": situation.readiness,
        });
        if !verdict.is_allow() {
            if let Verdict::Escalate { reason, .. } = &verdict {
                tracing::error!(incident = incident_id, %reason, "Circuit breaker open; escalating.");
                self.escalate(&incident, &past, reason).await;
            }
            let reason = verdict.reason().to_owned();
            return self.record_once(&past, decision, verdict.kind(), reason).await;
        }

        // Journalled before the call: a crash in between leaves a decision
        // without a result, which the next start marks interrupted.
        decision.verdict = "allow".into();
        decision.reason = "within every limit".into();
        let id = self.journal.record_decision(decision).await?;
        self.metrics.count_decision(action.as_str(), "allow");
        let since_alert = (chrono::Utc::now() - incident.starts_at).to_std().unwrap_or_default();
        self.metrics.alert_to_action_seconds.observe(since_alert.as_secs_f64());
        tracing::info!(incident = incident_id, %action, dry_run = self.config.dry_run, "Acting.");
        match self.executor.execute(&operation).await {
            Ok(done) if self.config.dry_run => self.journal.record_result(id, "dry_run", &done).await?,
            Ok(done) => {
                self.journal.record_result(id, "done", &done).await?;
                tracing::info!(incident = incident_id, %action, %done, "Action done; verifying.");
                let health = matched.health_query_for(&incident.labels);
                let lesson = consulted.map(|(view, _)| Lesson {
                    key: view.choice.key,
                    features: view.choice.features,
                });
                self.spawn_verification(id, incident, action, health, lesson);
            }
            Err(err) => {
                tracing::warn!(incident = incident_id, %action, error = %err, "Action failed.");
                self.journal.record_result(id, "error", &err.to_string()).await?;
                self.journal.record_outcome(id, "failure").await?;
                self.metrics.count_outcome(action.as_str(), "failure");
            }
        }
        Ok(())
    }

    /// Asks Alertmanager whether the incident's alert is silenced, when configured.
    async fn silenced(&self, incident: &homeostat_core::incident::Incident) -> Result<bool, String> {
        let Some(url) = &self.config.alertmanager_url else {
            return Ok(false);
        };
        let filter = format!("alertname=\"{}\"", incident.alertname.replace('"', "\\\""));
        let query = [
            ("filter", filter.as_str()),
            ("silenced", "true"),
            ("inhibited", "true"),
            ("active", "true"),
        ];
        let alerts = get_json(&self.http, url, "/api/v2/alerts", &query, "Alertmanager").await?;
        let silenced = alerts.as_array().into_iter().flatten().any(|alert| {
            alert["fingerprint"] == incident.fingerprint.as_str()
                && alert["status"]["silencedBy"].as_array().is_some_and(|s| !s.is_empty())
        });
        Ok(silenced)
    }

    /// Tells a human, once per incident: log, metric, and the escalation webhook if configured.
    async fn escalate(&self, incident: &homeostat_core::incident::Incident, past: &[Decision], reason: &str) {
        if past.iter().any(|d| d.new.verdict == "escalate") {
            return;
        }
        self.metrics.escalations.inc();
        let Some(url) = &self.config.escalation_webhook else {
            return;
        };
        let notice = json!({
            "incident": incident.id,
            "alertname": incident.alertname,
            "labels": incident.labels,
            "reason": reason,
        });
        let sent = self
            .http
            .post(url)
            .json(&notice)
            .send()
            .await
            .and_then(|r| r.error_for_status());
        if let Err(err) = sent {
            tracing::error!(incident = incident.id, error = %err, "The escalation webhook failed.");
        }
    }

    /// Records a decision that leads to no action, unless the incident's
    /// last decision already said the same.
    async fn record_once(
        &self,
        past: &[Decision],
        mut decision: NewDecision,
        verdict: &str,
        reason: String,
    ) -> homeostat_journal::Result<()> {
        let repeated = past.last().is_some_and(|last| {
            last.new.verdict == verdict && last.new.action == decision.action && last.new.reason == reason
        });
        if repeated {
            return Ok(());
        }
        tracing::info!(incident = decision.incident_id, verdict, %reason, "Not acting.");
        decision.verdict = verdict.to_owned();
        decision.reason = reason;
        self.metrics.count_decision(&decision.action, verdict);
        self.journal.record_decision(decision).await.map(drop)
    }

    /// Watches, until `actions.verify_timeout`, for the alert to resolve
    /// and the rule's health query (if any) to hold. Resolved and healthy:
    /// success. Still firing, or resolved while the health query never
    /// held: failure. Resolved but Prometheus never answered: timeout.
    fn spawn_verification(
        &self,
        id: i64,
        incident: homeostat_core::incident::Incident,
        action: Action,
        health: Option<String>,
        lesson: Option<Lesson>,
    ) {
        let incident_id = incident.id;
        let journal = self.journal.clone();
        let metrics = Arc::clone(&self.metrics);
        let timeout = self.config.verify_timeout.0;
        let (http, prometheus) = (self.http.clone(), self.config.prometheus_url.clone());
        let learner = Arc::clone(&self.learner);
        let settings = self.config.policy.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let deadline = started + timeout;
            let mut last_health: Option<Result<bool, String>> = None;
            let outcome = loop {
                let resolved = match journal.incident(incident_id).await {
                    Ok(Some(incident)) => incident.status == AlertStatus::Resolved,
                    Ok(None) => false,
                    Err(err) => {
                        tracing::warn!(incident = incident_id, error = %err, "Verification cannot read the incident.");
                        false
                    }
                };
                if resolved {
                    match (&health, &prometheus) {
                        (Some(query), Some(url)) => {
                            let healthy = query_holds(&http, url, query).await;
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
            let outcome_name = verification_name(outcome);
            if let Some(Err(why)) = &last_health {
                tracing::warn!(incident = incident_id, %why, "The health query could not be run.");
            }
            tracing::info!(incident = incident_id, %action, outcome = outcome_name, "Verified.");
            metrics.count_outcome(action.as_str(), outcome_name);
            if let Err(err) = journal.record_outcome(id, outcome_name).await {
                tracing::error!(decision = id, error = %err, "Cannot record the outcome.");
                return;
            }
            let Some(lesson) = lesson else { return };
            // Harm: more errors after the action than before it.
            let before = lesson.features.error_ratio;
            let after = match settings.context.get("error_ratio") {
                Some(template) => {
                    let labels = std::collections::BTreeMap::from([("error_ratio".to_owned(), template.clone())]);
                    context::gather(&http, prometheus.as_deref(), &labels, &incident.labels, CONTEXT_TIMEOUT)
                        .await
                        .get("error_ratio")
                }
                None => None,
            };
            let harm = matches!((before, after), (Some(b), Some(a)) if a > b + HARM_MARGIN);
            let outcome = Outcome {
                verification: outcome,
                seconds_to_resolve: (outcome == Verification::Success).then_some(seconds),
                harm,
            };
            let mut learner = learner.lock().await;
            learn(
                &journal,
                &metrics,
                &settings.learning,
                &mut learner,
                id,
                lesson,
                action,
                outcome,
            )
            .await;
        });
    }
}

fn verification_name(v: Verification) -> &'static str {
    match v {
        Verification::Success => "success",
        Verification::Failure => "failure",
        Verification::Timeout => "timeout",
    }
}

/// Reloads `learner` from the journal when the journal's revision moved.
async fn refresh(journal: &Journal, metrics: &Metrics, config: &policy::PolicyConfig, learner: &mut Learner) {
    let revision = match journal.policy_revision().await {
        Ok(revision) => revision,
        Err(err) => {
            metrics.policy_errors.inc();
            tracing::error!(error = %err, "Cannot read the learned policy's revision; deciding with the one in memory.");
            return;
        }
    };
    if revision == learner.revision {
        return;
    }
    let stored = match journal.policy().await {
        Ok(stored) => stored,
        Err(err) => {
            metrics.policy_errors.inc();
            tracing::error!(error = %err, "Cannot read the learned policy; deciding with the one in memory.");
            return;
        }
    };
    let Some(stored) = stored else {
        learner.revision = 0;
        return;
    };
    let restored = PolicyState::from_json(&stored.state).and_then(|state| Policy::restore(config.clone(), state));
    match restored {
        Ok(policy) => {
            learner.policy = policy;
            learner.broken = None;
            tracing::info!(revision, source = %stored.source, "Learned policy loaded.");
        }
        Err(err) => {
            metrics.policy_errors.inc();
            let why = format!("the stored policy (revision {revision}) cannot be read: {err}");
            tracing::error!(%why, "Deciding with the playbook's priors; nothing is saved over it until `homeostat policy import` replaces it.");
            learner.policy = Policy::new(config.clone());
            learner.broken = Some(why);
        }
    }
    learner.revision = revision;
}

/// Folds a verified outcome into the policy and saves it with its reward.
/// A save refused because the stored state moved on (an import) reloads
/// that state and learns again on top of it.
#[allow(clippy::too_many_arguments)]
async fn learn(
    journal: &Journal,
    metrics: &Metrics,
    config: &policy::PolicyConfig,
    learner: &mut Learner,
    decision_id: i64,
    lesson: Lesson,
    action: Action,
    outcome: Outcome,
) {
    let reward = policy::reward(&config.reward, action, &outcome);
    for _ in 0..LEARN_ATTEMPTS {
        refresh(journal, metrics, config, learner).await;
        if let Some(why) = &learner.broken {
            tracing::error!(decision = decision_id, %why, "Not learning from this outcome.");
            metrics.policy_errors.inc();
            return;
        }
        let mut next = learner.policy.clone();
        next.learn(&lesson.key, &lesson.features, action, reward);
        let learned = homeostat_journal::policy::Learned {
            reward: homeostat_journal::policy::Reward {
                decision_id,
                at: Utc::now(),
                policy_key: lesson.key.to_string(),
                action: action.as_str().to_owned(),
                reward,
                outcome: json!(outcome),
            },
            base_revision: learner.revision.max(0),
            state: next.state().to_json(),
        };
        match journal.record_learned(learned).await {
            Ok(Some(revision)) => {
                learner.policy = next;
                learner.revision = revision;
                metrics.policy_learned.inc();
                tracing::info!(decision = decision_id, key = %lesson.key, %action, reward, "Learned.");
                return;
            }
            Ok(None) => continue,
            Err(err) => {
                metrics.policy_errors.inc();
                tracing::error!(decision = decision_id, error = %err, "Cannot save what was learned.");
                return;
            }
        }
    }
    metrics.policy_errors.inc();
    tracing::error!(
        decision = decision_id,
        "The stored policy kept changing; this outcome was not learned."
    );
}

/// GETs `path` on the server at `base` and reads the JSON answer; errors
/// name the server (`what`) and its URL.
async fn get_json(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    query: &[(&str, &str)],
    what: &str,
) -> Result<serde_json::Value, String> {
    http.get(format!("{}{path}", base.trim_end_matches('/')))
        .query(query)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("{what} at {base}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("{what} at {base} answered unreadable JSON: {e}"))
}

fn chrono_delta(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl<E: Executor> Processor for Responder<E> {
    async fn process(&self, delivery: &Delivery) {
        for event in &delivery.events {
            if !matches!(event.kind, EventKind::Opened | EventKind::Repeated) {
                continue;
            }
            if let Err(err) = self.respond(event.incident_id).await {
                tracing::error!(incident = event.incident_id, error = %err, "Could not decide on the incident.");
            }
        }
    }
}
