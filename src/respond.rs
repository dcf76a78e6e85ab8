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

use crate::action::{plan, Action, Target};
use crate::alert::AlertStatus;
use crate::config::ActionsConfig;
use crate::context::{get_json, query_holds};
use crate::executor::Executor;
use crate::guard::{self, Situation, Verdict};
use crate::incident::EventKind;
use crate::journal::decisions::{Decision, NewDecision};
use crate::journal::{Delivery, Journal};
use crate::metrics::Metrics;
use crate::pipeline::{Parts, Processor};
use crate::playbook::{Playbook, Step};

/// Switches an operator flips at run time (`POST /api/v1/pause`, `/resume`).
#[derive(Debug, Default)]
pub struct Controls {
    pub paused: AtomicBool,
}

/// How often verification looks at the incident.
const VERIFY_POLL: Duration = Duration::from_millis(500);

pub struct Responder<E> {
    executor: Arc<E>,
    http: reqwest::Client,
    journal: Journal,
    playbook: Playbook,
    config: ActionsConfig,
    controls: Arc<Controls>,
    metrics: Arc<Metrics>,
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
            journal,
            playbook,
            config,
            controls,
            metrics,
        }
    }

    async fn respond(&self, incident_id: i64) -> crate::journal::Result<()> {
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
        let (rule, action) = match self.playbook.next_step(&incident.labels, failed) {
            Step::NoRule => {
                return self
                    .record_once(&past, decision, "no_rule", "no playbook rule matches the alert".into())
                    .await
            }
            Step::Exhausted { rule, attempts } => {
                decision.rule = Some(rule.to_owned());
                let reason = format!("all {attempts} actions of rule {rule:?} failed; escalating to a human");
                tracing::error!(incident = incident_id, rule, "Playbook exhausted; escalating.");
                self.escalate(&incident, &past, &reason).await;
                return self.record_once(&past, decision, "escalate", reason).await;
            }
            Step::Try { rule, action, .. } => (rule.to_owned(), action),
        };
        decision.rule = Some(rule);
        decision.action = action.as_str().into();
        // Notify touches nothing: recorded for a human, never executed or verified.
        if action == Action::Notify {
            let reason = "the playbook says to notify a human; nothing is done".to_owned();
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
            match self.executor.readiness(&target).await {
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
                let health = self
                    .playbook
                    .rule_for(&incident.labels)
                    .and_then(|r| r.health_query_for(&incident.labels));
                self.spawn_verification(id, incident_id, action, health);
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
    async fn silenced(&self, incident: &crate::incident::Incident) -> Result<bool, String> {
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
    async fn escalate(&self, incident: &crate::incident::Incident, past: &[Decision], reason: &str) {
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
    ) -> crate::journal::Result<()> {
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
    fn spawn_verification(&self, id: i64, incident_id: i64, action: Action, health: Option<String>) {
        let journal = self.journal.clone();
        let metrics = Arc::clone(&self.metrics);
        let timeout = self.config.verify_timeout.0;
        let (http, prometheus) = (self.http.clone(), self.config.prometheus_url.clone());
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + timeout;
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
                                break "success";
                            }
                            last_health = Some(healthy);
                        }
                        _ => break "success",
                    }
                }
                if tokio::time::Instant::now() >= deadline {
                    break match (resolved, &last_health) {
                        (false, _) | (true, Some(Ok(false))) => "failure",
                        (true, _) => "timeout",
                    };
                }
                tokio::time::sleep(VERIFY_POLL).await;
            };
            if let Some(Err(why)) = &last_health {
                tracing::warn!(incident = incident_id, %why, "The health query could not be run.");
            }
            tracing::info!(incident = incident_id, %action, outcome, "Verified.");
            metrics.count_outcome(action.as_str(), outcome);
            if let Err(err) = journal.record_outcome(id, outcome).await {
                tracing::error!(decision = id, error = %err, "Cannot record the outcome.");
            }
        });
    }
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
