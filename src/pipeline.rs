//! The pipeline that consumes journalled deliveries.
//!
//! Ingest (decode → dedup into incidents) happens in the webhook handler;
//! everything after it runs here, one delivery at a time, in the order the
//! journal committed them: context → decide → guard → execute → verify →
//! learn. A delivery is marked processed in the journal only after its
//! [`Processor`] returns, so a crash in between replays it at start-up.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::incident::EventKind;
use crate::journal::{Delivery, Journal};
use crate::metrics::Metrics;

/// What happens to each delivery after it is journalled.
pub trait Processor: Send + Sync + 'static {
    fn process(&self, delivery: &Delivery) -> impl Future<Output = ()> + Send;
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

/// Processes deliveries until the queue is closed and empty.
pub async fn run<P: Processor>(
    mut queue: mpsc::Receiver<Delivery>,
    journal: Journal,
    metrics: Arc<Metrics>,
    processor: P,
) {
    while let Some(delivery) = queue.recv().await {
        metrics.queue_depth.dec();
        processor.process(&delivery).await;
        match journal.mark_processed(delivery.id).await {
            Ok(()) => {
                metrics.notifications_processed.inc();
            }
            Err(err) => tracing::error!(
                delivery = delivery.id,
                error = %err,
                "Could not mark a delivery processed; it will be processed again at the next start."
            ),
        }
    }
}
