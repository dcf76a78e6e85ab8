//! The reconciler, in the manner of a Kubernetes controller: every firing
//! incident carries a next-check time in the journal, and one loop looks at
//! those that are due — a new or repeated delivery at once, a deferral at
//! its end, the next playbook step as soon as verification finds the last
//! one failed, a refusal after a backoff. Deliveries only update the
//! journal and wake it, so Alertmanager's timings decide how soon homeostat
//! hears of an alert, never how soon it acts again. The schedule is in the
//! journal: a restart, `kill -9` included, picks it up where it was.
//!
//! Looks run concurrently up to `actions.reconcile.concurrency`; the
//! responder keeps actions on one target one at a time. Every
//! `actions.reconcile.period` the firing incidents are compared with
//! Alertmanager: one it has not reported, and homeostat has not heard of,
//! for `actions.reconcile.vanish_after` is closed as vanished (its
//! resolution was lost).

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use homeostat_adapters::alertmanager;
use homeostat_adapters::executor::Executor;
use homeostat_journal::schedule::{Due, Firing};

use super::respond::Responder;

/// Most due incidents read at once.
const BATCH: usize = 256;

/// Runs until `stop` turns true, then waits for the looks under way.
pub(super) async fn run<E: Executor>(responder: Arc<Responder<E>>, mut stop: watch::Receiver<bool>) {
    let settings = responder.config.reconcile.clone();
    let period = settings.period.as_delta();
    let permits = Arc::new(Semaphore::new(settings.concurrency));
    let mut looks: JoinSet<i64> = JoinSet::new();
    let mut busy: HashSet<i64> = HashSet::new();
    let mut next_vanish_check = responder.clock.now();
    // Firing incidents Alertmanager does not report, and since when (this
    // process' first look that found them missing).
    let mut missing: HashMap<i64, DateTime<Utc>> = HashMap::new();
    tracing::info!(period = %settings.period, concurrency = settings.concurrency, "Reconciling open incidents.");
    while !*stop.borrow() {
        let now = responder.clock.now();
        if now >= next_vanish_check {
            vanish(&responder, now, &mut missing).await;
            next_vanish_check = now + period;
        }
        let due = match responder.journal.due(now, BATCH).await {
            Ok(due) => due,
            Err(err) => {
                tracing::error!(error = %err, "Cannot read the incidents due; trying again in a period.");
                Vec::new()
            }
        };
        let full = due.len() == BATCH;
        for due in due {
            if !busy.insert(due.incident_id) {
                continue;
            }
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                break;
            };
            let responder = Arc::clone(&responder);
            looks.spawn(async move {
                look(&responder, due).await;
                drop(permit);
                due.incident_id
            });
        }
        // Sleep until the next incident is due (those being looked at are
        // due until their look ends), a period at most, or a wake-up.
        let soonest = match responder.journal.next_due().await {
            Ok(Some(at)) if at > now => at,
            _ => now + period,
        };
        let until = soonest.min(now + period).min(next_vanish_check);
        let wait = if full {
            std::time::Duration::ZERO
        } else {
            (until - now).to_std().unwrap_or_default()
        };
        tokio::select! {
            _ = responder.controls.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            Some(done) = looks.join_next(), if !looks.is_empty() => {
                if let Ok(id) = done {
                    busy.remove(&id);
                }
            }
            _ = stop.wait_for(|stopped| *stopped) => break,
        }
        while let Some(done) = looks.try_join_next() {
            if let Ok(id) = done {
                busy.remove(&id);
            }
        }
    }
    while looks.join_next().await.is_some() {}
}

/// Of the firing incidents Alertmanager does not report (`absent`), those
/// found missing, and last delivered, before `unseen_since`. `missing`
/// keeps since when each absent one was found missing (from `now` for one
/// found now) and forgets those no longer absent.
fn overdue(
    absent: &[Firing],
    missing: &mut HashMap<i64, DateTime<Utc>>,
    now: DateTime<Utc>,
    unseen_since: DateTime<Utc>,
) -> Vec<i64> {
    missing.retain(|id, _| absent.iter().any(|f| f.incident_id == *id));
    absent
        .iter()
        .filter(|f| *missing.entry(f.incident_id).or_insert(now) <= unseen_since && f.last_seen < unseen_since)
        .map(|f| f.incident_id)
        .collect()
}

/// Looks at one due incident and stores when it needs the next look,
/// unless a delivery changed that meanwhile.
async fn look<E: Executor>(responder: &Responder<E>, due: Due) {
    let id = due.incident_id;
    let retry = |responder: &Responder<E>| Some(responder.clock.now() + responder.config.reconcile.period.as_delta());
    let next = match AssertUnwindSafe(responder.look(id)).catch_unwind().await {
        Ok(Ok(next)) => next,
        Ok(Err(err)) => {
            tracing::error!(incident = id, error = %err, "Could not decide on the incident; looking again in a period.");
            retry(responder)
        }
        Err(_) => {
            tracing::error!(
                incident = id,
                "Looking at the incident panicked; looking again in a period."
            );
            retry(responder)
        }
    };
    if let Err(err) = responder.journal.schedule(id, Some(due.next_check), next).await {
        tracing::error!(incident = id, error = %err, "Cannot record the incident's next look.");
    }
}

/// Closes the firing incidents that Alertmanager has not reported, and
/// that have not been delivered, for `vanish_after`: their resolution was
/// lost. `missing` keeps since when each was found missing.
async fn vanish<E: Executor>(responder: &Responder<E>, now: DateTime<Utc>, missing: &mut HashMap<i64, DateTime<Utc>>) {
    let Some(url) = &responder.config.alertmanager_url else {
        return;
    };
    if !responder.journal.leadership().may_act() {
        return;
    }
    let firing = match responder.journal.firing().await {
        Ok(firing) if !firing.is_empty() => firing,
        Ok(_) => return,
        Err(err) => {
            tracing::error!(error = %err, "Cannot read the firing incidents.");
            return;
        }
    };
    let active = match alertmanager::fingerprints(&responder.http, url).await {
        Ok(active) => active,
        Err(why) => {
            tracing::warn!(%why, "Cannot ask Alertmanager which alerts are active; no incident closed as vanished.");
            return;
        }
    };
    let unseen_since = now - responder.config.reconcile.vanish_after.as_delta();
    let absent: Vec<Firing> = firing
        .into_iter()
        .filter(|f| !active.contains(&f.fingerprint))
        .collect();
    let gone = overdue(&absent, missing, now, unseen_since);
    if gone.is_empty() {
        return;
    }
    match responder.journal.vanish(gone.clone(), unseen_since, now).await {
        Ok(closed) => {
            responder.metrics.incidents_vanished.inc_by(closed as u64);
            tracing::warn!(incidents = ?gone, closed, "Alertmanager no longer reports these alerts and their resolution never came: closed as vanished.");
        }
        Err(err) => {
            tracing::error!(error = %err, "Cannot close the vanished incidents.");
            return;
        }
    }
    // Resolved as much as by a delivery: what homeostat added for them goes.
    for id in gone {
        if let Err(err) = responder.retire(id).await {
            tracing::error!(incident = id, error = %err, "Cannot remove the replicas homeostat added for the incident.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An incident is overdue only once it has been missing from
    /// Alertmanager, and undelivered, for the whole `vanish_after`: an
    /// ordinary resolution, delivered at Alertmanager's next group_interval,
    /// comes first. Back in Alertmanager, it is forgotten.
    #[test]
    fn an_incident_vanishes_only_after_missing_for_vanish_after() {
        let t0 = DateTime::parse_from_rfc3339("2026-12-08T03:00:00Z").unwrap().to_utc();
        let minutes = chrono::Duration::minutes;
        let after = minutes(6);
        // Last delivered an hour ago: a firing alert is not delivered again
        // until Alertmanager's repeat_interval.
        let firing = |id: i64| Firing {
            incident_id: id,
            fingerprint: format!("f{id}"),
            last_seen: t0 - minutes(60),
        };
        let mut missing = HashMap::new();
        let mut at = |absent: &[Firing], now: DateTime<Utc>| overdue(absent, &mut missing, now, now - after);
        assert!(at(&[firing(1)], t0).is_empty());
        assert!(at(&[firing(1)], t0 + minutes(5)).is_empty());
        assert_eq!(at(&[firing(1)], t0 + after), [1]);
        // Reported again, then missing again: the wait starts over.
        assert!(at(&[], t0 + minutes(7)).is_empty());
        assert!(at(&[firing(1)], t0 + minutes(8)).is_empty());
        assert!(at(&[firing(1)], t0 + minutes(13)).is_empty());
        assert_eq!(at(&[firing(1)], t0 + minutes(14)), [1]);
        // Delivered after it went missing (a repeat): not overdue until
        // that delivery is old too.
        let mut recent = firing(2);
        recent.last_seen = t0 + minutes(3);
        assert!(at(std::slice::from_ref(&recent), t0).is_empty());
        assert!(at(std::slice::from_ref(&recent), t0 + minutes(8)).is_empty());
        assert_eq!(at(std::slice::from_ref(&recent), t0 + minutes(10)), [2]);
    }
}
