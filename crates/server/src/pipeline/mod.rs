//! The pipeline that consumes journalled deliveries, and the reconciler.
//!
//! Ingest happens in the webhook handler: the body is decoded
//! (`homeostat_core::alert::decode`) and journalled, which dedups its alerts
//! into incidents (`homeostat_core::incident::transition`) and makes each
//! firing one due for a look. [`run`] hands each delivery, in journal
//! order, to the [`Processor`], which for the [`Responder`] only wakes the
//! reconciler (`reconcile.rs`). The reconciler looks at every due incident,
//! one module per stage:
//!
//! ```text
//! due incident ─▶ context ─▶ decide ─▶ guard ─▶ execute ─▶ verify ─▶ learn
//!                 (PromQL,   (playbook, (premise,  (journal   (alert     (policy
//!                  readiness) policy)    limits)    first)     ended?)    reward)
//! ```
//!
//! and stores when each needs its next look. The journal's watermark moves
//! past a delivery only after its [`Processor`] returns, so a crash in
//! between replays it at start-up; the schedule itself is in the journal.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use futures_util::FutureExt;

use tokio::sync::{mpsc, watch};

use homeostat_core::clock::Clock;
use homeostat_core::playbook::Playbook;

use crate::metrics::Metrics;
use homeostat_core::incident::EventKind;
use homeostat_journal::{Delivery, Journal};

pub mod context;
pub mod decide;
pub mod execute;
pub mod guard;
pub mod known_good;
pub mod learn;
mod reconcile;
mod respond;
pub mod verify;

pub use respond::Responder;

/// Switches an operator flips at run time (`POST /api/v1/pause`, `/resume`),
/// and the reconciler's wake-up (an approval, a verification that ended).
#[derive(Debug, Default)]
pub struct Controls {
    pub paused: AtomicBool,
    /// Wakes the reconciler: a delivery came, a verification ended, a
    /// proposal was answered.
    pub wake: Arc<tokio::sync::Notify>,
    /// The playbook in effect; a reload swaps it.
    pub playbook: std::sync::RwLock<Arc<Playbook>>,
    /// The anomaly detectors' scores now (`anomaly:`), for the policy.
    pub anomaly: Arc<crate::anomaly::Board>,
}

impl Controls {
    /// The playbook in effect now.
    pub fn playbook(&self) -> Arc<Playbook> {
        Arc::clone(&self.playbook.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Puts `playbook` in effect for every look from now on.
    pub fn set_playbook(&self, playbook: Playbook) {
        *self.playbook.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(playbook);
    }
}

/// What a processor may need, made by [`crate::app::serve`].
#[derive(Clone)]
pub struct Parts {
    pub journal: Journal,
    pub metrics: Arc<Metrics>,
    pub controls: Arc<Controls>,
    /// Where "now" comes from: the system's clock in service.
    pub clock: Arc<dyn Clock>,
}

/// What happens to each delivery after it is journalled.
pub trait Processor: Send + Sync + 'static {
    fn process(&self, delivery: &Delivery) -> impl Future<Output = ()> + Send;

    /// What the processor does on its own clock (the reconciler), until
    /// `stop` turns true. Nothing, by default.
    fn background(self: Arc<Self>, stop: watch::Receiver<bool>) -> impl Future<Output = ()> + Send {
        let _ = stop;
        std::future::ready(())
    }
}

/// Records each incident transition in the log. Recovery actions plug in
/// behind this trait; until then homeostat observes and never acts.
pub struct LogTransitions;

impl Processor for LogTransitions {
    async fn process(&self, delivery: &Delivery) {
        for event in &delivery.events {
            let (incident, alertname, fingerprint) = (event.incident_id, &event.alertname, &event.fingerprint);
            match event.kind {
                EventKind::Opened => tracing::info!(incident, %alertname, %fingerprint, "Incident opened."),
                EventKind::Resolved => tracing::info!(incident, %alertname, %fingerprint, "Incident resolved."),
                EventKind::Repeated | EventKind::Stale => {
                    tracing::debug!(incident, %alertname, kind = event.kind.as_str(), "Repeated delivery.")
                }
            }
        }
    }
}

/// Most deliveries taken from the queue at once; one watermark update covers them.
const MAX_BATCH: usize = 256;

/// Processes deliveries until the queue is closed and empty. The journal
/// queues them in journal order, so after each batch the watermark moves to
/// the batch's last delivery.
pub async fn run<P: Processor>(
    mut queue: mpsc::Receiver<Delivery>,
    journal: Journal,
    metrics: Arc<Metrics>,
    processor: Arc<P>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let count = batch.len();
        let mut through = 0;
        for delivery in batch.drain(..) {
            through = delivery.id;
            process_one(&processor, delivery).await;
        }
        match journal.mark_processed(through).await {
            Ok(()) => {
                metrics.notifications_processed.inc_by(count as u64);
            }
            Err(err) => tracing::error!(
                through,
                error = %err,
                "Could not record deliveries as processed; they will be processed again at the next start."
            ),
        }
    }
}

/// Runs the processor, catching a panic in it, so that a panic costs one
/// delivery, not the pipeline. (A task per delivery would do the same at a
/// cost the queue notices during an alert storm.)
async fn process_one<P: Processor>(processor: &Arc<P>, delivery: Delivery) {
    let outcome = AssertUnwindSafe(processor.process(&delivery)).catch_unwind().await;
    if outcome.is_err() {
        tracing::error!(
            delivery = delivery.id,
            "Processing a delivery panicked; continuing with the next."
        );
    }
}

/// Processes `pending` (what the journal held beyond its watermark at
/// start-up) before the pipeline takes anything new.
pub async fn replay<P: Processor>(
    pending: Vec<Delivery>,
    journal: &Journal,
    metrics: &Metrics,
    processor: &Arc<P>,
) -> homeostat_journal::Result<()> {
    let Some(last) = pending.last().map(|d| d.id) else {
        return Ok(());
    };
    let count = pending.len() as u64;
    tracing::warn!(
        deliveries = count,
        "Found deliveries journalled but not processed before the last stop; processing them first."
    );
    for delivery in pending {
        process_one(processor, delivery).await;
    }
    journal.mark_processed(last).await?;
    metrics.notifications_recovered.inc_by(count);
    metrics.notifications_processed.inc_by(count);
    Ok(())
}
