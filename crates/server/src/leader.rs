//! What only the leader runs. Every replica journals the deliveries it
//! receives and answers the API; the reconciler (and with it the notifier),
//! retention and threshold refits run only in the terms this process leads
//! (see `homeostat_journal::leadership`), and stop when a term ends. On
//! SQLite the one process leads for good.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use homeostat_journal::leadership::{Changes, Leadership};
use homeostat_journal::Journal;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use crate::pipeline::Controls;

/// Runs `task` anew in each term this process leads, until `stop`; the
/// task gets its term's stop signal.
pub fn in_each_term<F, Fut>(leadership: Leadership, stop: watch::Receiver<bool>, mut task: F) -> JoinHandle<()>
where
    F: FnMut(watch::Receiver<bool>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut terms = Terms::new(leadership, stop);
    tokio::spawn(async move {
        while let Some(stop) = terms.next().await {
            task(stop).await;
        }
    })
}

/// The terms this process leads, one after another.
struct Terms {
    leadership: Leadership,
    stop: watch::Receiver<bool>,
    /// The term handed out last.
    last: Option<i64>,
}

impl Terms {
    /// The terms of `leadership`, until `stop` turns true.
    fn new(leadership: Leadership, stop: watch::Receiver<bool>) -> Terms {
        Terms {
            leadership,
            stop,
            last: None,
        }
    }

    /// Waits for the next term this process leads (never the same one
    /// twice) and returns the stop signal of what runs in it: true once
    /// the term ends or the process stops. `None` once the process stops.
    async fn next(&mut self) -> Option<watch::Receiver<bool>> {
        let stopped = |s: &bool| *s;
        if let Some(last) = self.last {
            tokio::select! {
                _ = self.leadership.ended(last) => {}
                _ = self.stop.wait_for(stopped) => return None,
            }
        }
        let term = tokio::select! {
            term = self.leadership.leading() => term,
            _ = self.stop.wait_for(stopped) => return None,
        };
        if *self.stop.borrow() {
            return None;
        }
        self.last = Some(term);
        let (end, ended) = watch::channel(false);
        let (mut leadership, mut stop) = (self.leadership.clone(), self.stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = leadership.ended(term) => {}
                _ = stop.wait_for(stopped) => {}
                // What ran in the term is over.
                _ = end.closed() => return,
            }
            let _ = end.send(true);
        });
        Some(ended)
    }
}

/// Keeps `homeostat_leader` at 1 while this process leads, 0 while it follows.
pub async fn report(mut leadership: Leadership, metrics: Arc<Metrics>) {
    loop {
        let term = leadership.leading().await;
        metrics.leader.set(1);
        leadership.ended(term).await;
        metrics.leader.set(0);
    }
}

/// Brings what other replicas commit to this one: the leader's reconciler
/// is woken, and every replica takes the pause switch from the journal (so
/// each reports it, and the leader acts on it).
pub async fn relay(changes: Changes, journal: Journal, controls: Arc<Controls>, metrics: Arc<Metrics>) {
    // Only a change read from the journal is taken: a read that raced this
    // replica's own pause cannot undo it.
    let mut seen = controls.paused.load(Ordering::Acquire);
    loop {
        tokio::select! {
            () = changes.due.notified() => controls.wake.notify_one(),
            () = changes.paused.notified() => match journal.paused().await {
                Ok(paused) if paused != seen => {
                    seen = paused;
                    controls.paused.store(paused, Ordering::Release);
                    metrics.paused.set(i64::from(paused));
                    tracing::warn!(paused, "Actions were paused or resumed, through one of the replicas.");
                    controls.wake.notify_one();
                }
                Ok(_) => {}
                Err(err) => tracing::error!(error = %err, "Cannot read whether actions are paused."),
            },
        }
    }
}
