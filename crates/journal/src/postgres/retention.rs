//! Pruning what is older than the retention (the SQLite journal's `retention.rs`, on PostgreSQL).

use chrono::{DateTime, Utc};
use tokio_postgres::Transaction;

use super::PgJournal;
use crate::retention::{Pruned, PRUNE_STEP};
use crate::{timestamp, Result};

/// Prunes what is older than `cutoff`, a bounded step per transaction,
/// until nothing is left to prune.
pub(super) async fn prune(j: &PgJournal, cutoff: DateTime<Utc>) -> Result<Pruned> {
    let cutoff = timestamp(cutoff);
    let mut client = j.client().await?;
    let mut pruned = Pruned::default();
    loop {
        let tx = client.transaction().await?;
        let step = prune_step(&tx, &cutoff, PRUNE_STEP).await?;
        tx.commit().await?;
        pruned.add(step);
        if step.deliveries < PRUNE_STEP && step.incidents < PRUNE_STEP {
            return Ok(pruned);
        }
    }
}

/// One bounded step of pruning, in `tx`.
async fn prune_step(tx: &Transaction<'_>, cutoff: &str, limit: usize) -> Result<Pruned> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // The oldest deliveries only: ids grow with receipt, so a first page
    // with nothing to prune means there is nothing further on.
    let deliveries = tx
        .execute(
            "DELETE FROM deliveries
             WHERE id IN (SELECT id FROM deliveries ORDER BY id LIMIT $2)
               AND received_at < $1
               AND id <= (SELECT processed_through FROM pipeline)",
            &[&cutoff, &limit],
        )
        .await?;
    // Locked, so that no other process writes to them while they go.
    let incidents: Vec<i64> = tx
        .query(
            "SELECT id FROM incidents WHERE status = 'resolved' AND resolved_at < $1 ORDER BY id LIMIT $2
             FOR UPDATE",
            &[&cutoff, &limit],
        )
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<std::result::Result<_, _>>()?;
    let mut decisions = 0;
    if !incidents.is_empty() {
        tx.execute(
            "DELETE FROM policy_rewards WHERE decision_id IN (SELECT id FROM decisions WHERE incident_id = ANY($1))",
            &[&incidents],
        )
        .await?;
        decisions = tx
            .execute("DELETE FROM decisions WHERE incident_id = ANY($1)", &[&incidents])
            .await?;
        tx.execute("DELETE FROM notifications WHERE incident_id = ANY($1)", &[&incidents])
            .await?;
        tx.execute("DELETE FROM approvals WHERE incident_id = ANY($1)", &[&incidents])
            .await?;
        tx.execute("DELETE FROM incidents WHERE id = ANY($1)", &[&incidents])
            .await?;
    }
    let fits = tx
        .execute("DELETE FROM threshold_fits WHERE fitted_at < $1", &[&cutoff])
        .await?;
    let feedback = tx
        .execute(
            "DELETE FROM threshold_feedback
             WHERE at < $1
               AND id NOT IN (SELECT max(id) FROM threshold_feedback GROUP BY spec, series)",
            &[&cutoff],
        )
        .await?;
    let known_good = tx
        .execute("DELETE FROM known_good WHERE recorded_at < $1", &[&cutoff])
        .await?;
    Ok(Pruned {
        deliveries: deliveries as usize,
        incidents: incidents.len(),
        decisions: decisions as usize,
        fits: fits as usize,
        feedback: feedback as usize,
        known_good: known_good as usize,
    })
}
