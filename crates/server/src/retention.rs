//! The retention task: prunes the journal (`journal.retention`) at start-up
//! and hourly after, until shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use homeostat_core::clock::Clock;
use homeostat_core::duration::PromDuration;
use homeostat_journal::Journal;

use crate::metrics::Metrics;

/// How often the journal is pruned.
pub const EVERY: Duration = Duration::from_secs(3600);

pub async fn run(
    journal: Journal,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    retention: PromDuration,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let cutoff = clock.now() - retention.as_delta();
        match journal.prune(cutoff).await {
            Ok(pruned) if pruned.total() > 0 => {
                metrics.journal_pruned_rows.inc_by(pruned.total() as u64);
                tracing::info!(%cutoff, ?pruned, "Pruned the journal of what is older than journal.retention.");
            }
            Ok(_) => {}
            Err(err) => tracing::error!(error = %err, "Cannot prune the journal; trying again in an hour."),
        }
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            _ = stop.wait_for(|stopped| *stopped) => break,
        }
    }
}
