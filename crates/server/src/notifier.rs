//! The notifier: sends what the outbox (the journal's `notifications`)
//! holds to the configured sinks, retrying with backoff.
//!
//! A notice is queued once per sink that takes its event, in the journal,
//! before anything is sent: a crash or a sink that is down loses none.
//! Then, for each notification:
//! - pending: sent; on success it is `sent` and looked at again after
//!   `refresh`; on failure retried after 1s, doubling up to `max_backoff`,
//!   and given up (`failed`, logged as an error) after `max_attempts`
//!   failures in a row;
//! - sent, incident still firing: Alertmanager sinks get the alert again
//!   (it would end after their `resolve_timeout` otherwise), others nothing;
//!   a sent notification is never given up: its refresh or its end is
//!   retried, at most `max_backoff` apart, for as long as it is due;
//! - sent, incident ended: every sink is told (Alertmanager: the alert's
//!   `endsAt`), and the notification is `resolved`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use homeostat_adapters::notify::{self, Notice, Phase};
use homeostat_core::alert::AlertStatus;
use homeostat_core::clock::Clock;
use homeostat_core::config::{ActionsConfig, NotificationsConfig, ProcessEnv, SinkConfig, SinkKind};
use homeostat_journal::notifications::{Attempt, Notification, NotificationStatus};
use homeostat_journal::Journal;

use crate::metrics::Metrics;

/// Notifications sent per look, at most.
const BATCH: usize = 64;
/// The longest the notifier sleeps without looking at the journal.
const IDLE: Duration = Duration::from_secs(60);

pub struct Notifier {
    journal: Journal,
    http: reqwest::Client,
    config: NotificationsConfig,
    sinks: Vec<SinkConfig>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    wake: Notify,
}

impl Notifier {
    pub fn new(actions: &ActionsConfig, journal: Journal, metrics: Arc<Metrics>, clock: Arc<dyn Clock>) -> Notifier {
        Notifier {
            journal,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            sinks: actions.notifications.sinks_with(actions.escalation_webhook.as_deref()),
            config: actions.notifications.clone(),
            metrics,
            clock,
            wake: Notify::new(),
        }
    }

    /// A link to the incident, when `external_url` is set.
    pub fn link(&self, incident: i64) -> Option<String> {
        let url = self.config.external_url.as_deref()?;
        Some(format!("{}/api/v1/incidents/{incident}", url.trim_end_matches('/')))
    }

    /// Journals `notice` for every sink that takes its event, and wakes the
    /// sender. A journal that cannot take it is logged: the decision that
    /// caused it is recorded all the same.
    pub async fn queue(&self, notice: &Notice) {
        let sinks: Vec<String> = self
            .sinks
            .iter()
            .filter(|s| s.events.contains(&notice.event))
            .map(|s| s.name.clone())
            .collect();
        if sinks.is_empty() {
            return;
        }
        let body = serde_json::to_value(notice).unwrap_or_default();
        let at = self.clock.now();
        match self
            .journal
            .queue_notifications(notice.incident, sinks, notice.event.as_str(), &body, at)
            .await
        {
            Ok(()) => self.wake.notify_one(),
            Err(err) => {
                tracing::error!(incident = notice.incident, error = %err, "Cannot journal a notification; it is not sent.")
            }
        }
    }

    /// Sends what is due until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        if self.sinks.is_empty() {
            return;
        }
        loop {
            let mut journalled = true;
            match self.journal.due_notifications(self.clock.now(), BATCH).await {
                Ok(due) => {
                    for notification in due {
                        // Nor once this replica's lease may have run out: the next leader sends.
                        if *stop.borrow() || !self.journal.leadership().may_act() {
                            return;
                        }
                        journalled &= self.attempt(notification).await;
                    }
                }
                Err(err) => tracing::warn!(error = %err, "Cannot read due notifications."),
            }
            let next = self.journal.next_notification().await.ok().flatten();
            let mut wait = next.map_or(IDLE, |next| {
                (next - self.clock.now()).to_std().unwrap_or(Duration::ZERO).min(IDLE)
            });
            // An attempt the journal did not take stays due: not again at once.
            if !journalled {
                wait = wait.max(Duration::from_secs(1));
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
                _ = stop.wait_for(|stopping| *stopping) => return,
            }
        }
    }

    /// Sends one notification as it stands and journals what became of it;
    /// whether the journal took that.
    async fn attempt(&self, notification: Notification) -> bool {
        let now = self.clock.now();
        let refresh = self.config.refresh.as_delta();
        // The last error stays on record after a success.
        let settled = |status, next_attempt, error: Option<String>| Attempt {
            id: notification.id,
            status,
            attempts: notification.attempts,
            next_attempt,
            error: error.or_else(|| notification.last_error.clone()),
            at: now,
            delivered: false,
        };
        let Some(sink) = self.sinks.iter().find(|s| s.name == notification.sink) else {
            let why = format!("sink {:?} is no longer configured", notification.sink);
            return self.record(settled(NotificationStatus::Failed, None, Some(why))).await;
        };
        let notice: Notice = match serde_json::from_value(notification.body.clone()) {
            Ok(notice) => notice,
            Err(err) => {
                let why = format!("the journalled notice cannot be read: {err}");
                return self.record(settled(NotificationStatus::Failed, None, Some(why))).await;
            }
        };
        let (incident, resolved_at) = notification.incident;
        // An Alertmanager alert lasts four refreshes unless sent again.
        let firing = Phase::Firing {
            until: now + refresh * 4,
        };
        // What to send, and where the notification stands once it went.
        let (phase, then, next) = match (notification.status, incident) {
            (NotificationStatus::Pending, AlertStatus::Firing) => {
                (Some(firing), NotificationStatus::Sent, Some(now + refresh))
            }
            // Ended before it was sent: told it happened, then that it ended.
            (NotificationStatus::Pending, AlertStatus::Resolved) => (Some(firing), NotificationStatus::Sent, Some(now)),
            (NotificationStatus::Sent, AlertStatus::Firing) => (
                (sink.kind == SinkKind::Alertmanager).then_some(firing),
                NotificationStatus::Sent,
                Some(now + refresh),
            ),
            (NotificationStatus::Sent, AlertStatus::Resolved) => (
                Some(Phase::Resolved {
                    at: resolved_at.unwrap_or(now),
                }),
                NotificationStatus::Resolved,
                None,
            ),
            (status @ (NotificationStatus::Resolved | NotificationStatus::Failed), _) => (None, status, None),
        };
        let Some(phase) = phase else {
            return self.record(settled(then, next, None)).await;
        };
        match notify::send(&self.http, sink, &ProcessEnv, &notice, phase).await {
            Ok(()) => {
                let outcome = if then == NotificationStatus::Resolved {
                    "resolved"
                } else {
                    "sent"
                };
                self.metrics.count_notification(&sink.name, outcome);
                tracing::info!(incident = notification.incident_id, sink = %sink.name, event = %notification.event, outcome, "Notified.");
                let mut attempt = settled(then, next, None);
                attempt.delivered = true;
                attempt.attempts = 0;
                self.record(attempt).await
            }
            Err(why) => {
                let attempts = notification.attempts + 1;
                let mut attempt = settled(notification.status, None, Some(why.clone()));
                attempt.attempts = attempts;
                // Only a notice never delivered is given up: one the sink has
                // (an Alertmanager alert to refresh, an end to tell) is retried
                // at most max_backoff apart for as long as its incident lasts.
                if notification.status == NotificationStatus::Pending && attempts >= self.config.max_attempts {
                    attempt.status = NotificationStatus::Failed;
                    self.metrics.count_notification(&sink.name, "failed");
                    tracing::error!(incident = notification.incident_id, sink = %sink.name, attempts, error = %why, "Gave up a notification.");
                } else {
                    let backoff = Duration::from_secs(1u64 << (attempts - 1).min(20)).min(self.config.max_backoff.0);
                    attempt.next_attempt = Some(now + chrono::Duration::from_std(backoff).unwrap_or_default());
                    self.metrics.count_notification(&sink.name, "retried");
                    tracing::warn!(incident = notification.incident_id, sink = %sink.name, attempts, retry_in = ?backoff, error = %why, "A notification failed; retrying.");
                }
                self.record(attempt).await
            }
        }
    }

    async fn record(&self, attempt: Attempt) -> bool {
        match self.journal.record_attempt(attempt).await {
            Ok(()) => true,
            Err(err) => {
                tracing::error!(error = %err, "Cannot journal a notification attempt.");
                false
            }
        }
    }
}
