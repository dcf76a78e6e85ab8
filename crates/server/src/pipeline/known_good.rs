//! Known good specs: while it leads, homeostat watches every instance the
//! executor can act on and records, in the journal, the newest spec each
//! ran healthy with for `known_good_after` (`actions.docker`): ready all
//! along, and no firing alert about it. A repair restores that spec, and
//! drift is told against it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use homeostat_adapters::executor::Executor;
use homeostat_core::action::{Backend, Target, TargetLabels};
use homeostat_core::alert::AlertStatus;
use homeostat_core::clock::Clock;
use homeostat_core::condition::Observed;
use homeostat_journal::known_good::KnownGood;
use homeostat_journal::{IncidentQuery, Journal};
use tokio::sync::watch;

use crate::metrics::Metrics;

/// How often what runs is looked at, at most: a quarter of
/// `known_good_after` when that is shorter (but not under a second).
pub const OBSERVE_EVERY: Duration = Duration::from_secs(10);
/// Firing incidents read per round (the oldest beyond are not seen).
const FIRING_LIMIT: usize = 1_000;
/// How often a spec that stays good is recorded again, so that retention,
/// which prunes specs not recorded for `journal.retention`, keeps it.
const RECORD_AGAIN_AFTER: chrono::Duration = chrono::Duration::days(1);

/// A spec seen healthy, since when, and when it was journalled, if it was.
struct Healthy {
    spec: serde_json::Value,
    since: DateTime<Utc>,
    recorded: Option<DateTime<Utc>>,
}

/// What the watch holds between rounds.
pub struct Watch<E> {
    executor: Arc<E>,
    journal: Journal,
    clock: Arc<dyn Clock>,
    target_labels: TargetLabels,
    known_good_after: chrono::Duration,
    metrics: Arc<Metrics>,
    /// The spec each instance is running healthy with, by instance.
    healthy: HashMap<String, Healthy>,
}

impl<E: Executor> Watch<E> {
    pub fn new(
        executor: Arc<E>,
        journal: Journal,
        clock: Arc<dyn Clock>,
        target_labels: TargetLabels,
        known_good_after: chrono::Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Watch {
            executor,
            journal,
            clock,
            target_labels,
            known_good_after,
            metrics,
            healthy: HashMap::new(),
        }
    }

    /// Rounds every [`OBSERVE_EVERY`] until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let quarter = self.known_good_after.to_std().unwrap_or_default() / 4;
        let every = quarter.clamp(Duration::from_secs(1), OBSERVE_EVERY);
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            if let Err(why) = self.round().await {
                tracing::warn!(%why, "Cannot record known good specs this round.");
            }
        }
    }

    /// Looks once at what runs and journals the specs that became known good.
    async fn round(&mut self) -> Result<(), String> {
        let observed = self.executor.observe().await.map_err(|e| e.to_string())?;
        if observed.is_empty() {
            return Ok(());
        }
        let firing = self.firing_targets().await?;
        let now = self.clock.now();
        let backend = self.executor.backend();
        let mut seen = HashMap::with_capacity(observed.len());
        for Observed {
            instance,
            target,
            spec,
            ready,
        } in observed
        {
            let alerted = firing.iter().any(|t| concerns(t, &target, backend));
            let previous = self.healthy.remove(&instance);
            if !ready || alerted {
                continue;
            }
            let mut healthy = match previous {
                Some(h) if self.executor.drift(&h.spec, &spec).is_empty() => h,
                _ => Healthy {
                    spec,
                    since: now,
                    recorded: None,
                },
            };
            let due = healthy.recorded.is_none_or(|at| now - at >= RECORD_AGAIN_AFTER);
            if due && now - healthy.since >= self.known_good_after {
                let known = KnownGood {
                    instance: instance.clone(),
                    spec: healthy.spec.clone(),
                    healthy_since: healthy.since,
                    recorded_at: now,
                };
                self.journal
                    .record_known_good(known)
                    .await
                    .map_err(|e| format!("cannot journal the known good spec of {instance}: {e}"))?;
                tracing::info!(%instance, since = %healthy.since, "Recorded a known good spec.");
                self.metrics.known_good_recorded.inc();
                healthy.recorded = Some(now);
            }
            seen.insert(instance, healthy);
        }
        self.healthy = seen;
        Ok(())
    }

    /// The targets of the firing incidents.
    async fn firing_targets(&self) -> Result<Vec<Target>, String> {
        let query = IncidentQuery {
            status: Some(AlertStatus::Firing),
            alertname: None,
            labels: Vec::new(),
            before: None,
            limit: FIRING_LIMIT,
        };
        let page = self
            .journal
            .incidents(query)
            .await
            .map_err(|e| format!("cannot read the firing incidents: {e}"))?;
        Ok(page
            .incidents
            .iter()
            .map(|i| Target::from_labels(&i.labels, &self.target_labels))
            .filter(|t| !t.is_empty())
            .collect())
    }
}

/// Whether an alert about `alerted` is about `instance`: it names the
/// instance's container, or its workload as a whole.
fn concerns(alerted: &Target, instance: &Target, backend: Backend) -> bool {
    match &alerted.container {
        Some(container) => instance.container.as_ref() == Some(container),
        None => alerted.key(backend) == instance.key(backend),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_concerns_its_container_or_its_whole_service() {
        let instance = Target {
            container: Some("demo-web-1".into()),
            compose_project: Some("demo".into()),
            compose_service: Some("web".into()),
            ..Target::default()
        };
        let other = Target {
            container: Some("demo-web-2".into()),
            ..instance.clone()
        };
        assert!(concerns(&instance, &instance, Backend::Docker));
        assert!(!concerns(&other, &instance, Backend::Docker));
        let service = Target {
            container: None,
            ..instance.clone()
        };
        assert!(concerns(&service, &instance, Backend::Docker));
        let elsewhere = Target {
            compose_service: Some("db".into()),
            ..service
        };
        assert!(!concerns(&elsewhere, &instance, Backend::Docker));
    }
}
