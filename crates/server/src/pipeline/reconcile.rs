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
//! Alertmanager: one it no longer reports, and that homeostat has not heard
//! of for a period, is closed as vanished (its resolution was lost).

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use homeostat_adapters::alertmanager;
use homeostat_adapters::executor::Executor;
use homeostat_journal::schedule::Due;

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
    tracing::info!(period = %settings.period, concurrency = settings.concurrency, "Reconciling open incidents.");
    while !*stop.borrow() {
        let now = responder.clock.now();
        if now >= next_vanish_check {
            vanish(&responder, now).await;
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

/// Closes the firing incidents Alertmanager no longer reports and that
/// have not been delivered for a period: their resolution was lost.
async fn vanish<E: Executor>(responder: &Responder<E>, now: DateTime<Utc>) {
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
    let unseen_since = now - responder.config.reconcile.period.as_delta();
    let gone: Vec<i64> = firing
        .into_iter()
        .filter(|f| !active.contains(&f.fingerprint) && f.last_seen < unseen_since)
        .map(|f| f.incident_id)
        .collect();
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
