//! The notification outbox (the SQLite journal's `notifications.rs`, on PostgreSQL).

use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;

use super::PgJournal;
use crate::notifications::{notification, Attempt, Notification, NotificationStatus, COLUMNS};
use crate::{parse_time, timestamp, Result};

/// Queues one notification per sink, due at `at`.
pub(super) async fn queue_notifications(
    j: &PgJournal,
    incident_id: i64,
    sinks: Vec<String>,
    event: &str,
    body: &serde_json::Value,
    at: DateTime<Utc>,
) -> Result<()> {
    if sinks.is_empty() {
        return Ok(());
    }
    let body = body.to_string();
    let at = timestamp(at);
    let mut client = j.client().await?;
    let tx = client.transaction().await?;
    // Only the leader tells: a deposed one's notice would repeat the new one's.
    j.fence(&tx, "the notification was not queued").await?;
    let stmt = tx
        .prepare_cached(
            "INSERT INTO notifications (incident_id, sink, event, body, created_at, status, next_attempt)
             VALUES ($1, $2, $3, $4, $5, 'pending', $5)",
        )
        .await?;
    for sink in &sinks {
        tx.execute(&stmt, &[&incident_id, sink, &event, &body, &at]).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Records what an attempt did.
pub(super) async fn record_attempt(j: &PgJournal, attempt: Attempt) -> Result<()> {
    let client = j.client().await?;
    let stmt = client
        .prepare_cached(
            "UPDATE notifications SET status = $2, attempts = $3, next_attempt = $4, last_error = $5,
                 sent_at = CASE WHEN $6 AND sent_at IS NULL THEN $8 ELSE sent_at END,
                 resolved_at = CASE WHEN $7 THEN $8 ELSE resolved_at END
             WHERE id = $1",
        )
        .await?;
    client
        .execute(
            &stmt,
            &[
                &attempt.id,
                &attempt.status.as_str(),
                &i64::from(attempt.attempts),
                &attempt.next_attempt.map(timestamp),
                &attempt.error,
                &attempt.delivered,
                &(attempt.status == NotificationStatus::Resolved),
                &timestamp(attempt.at),
            ],
        )
        .await?;
    Ok(())
}

/// Notifications due at or before `now`, soonest first.
pub(super) async fn due_notifications(j: &PgJournal, now: DateTime<Utc>, limit: usize) -> Result<Vec<Notification>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    select(
        j,
        "n.next_attempt IS NOT NULL AND n.next_attempt <= $1 ORDER BY n.next_attempt, n.id LIMIT $2",
        &[&timestamp(now), &limit],
    )
    .await
}

/// When the next notification is due.
pub(super) async fn next_notification(j: &PgJournal) -> Result<Option<DateTime<Utc>>> {
    let client = j.client().await?;
    let stmt = client
        .prepare_cached("SELECT min(next_attempt) FROM notifications WHERE next_attempt IS NOT NULL")
        .await?;
    let next: Option<String> = client.query_one(&stmt, &[]).await?.try_get(0)?;
    next.as_deref().map(parse_time).transpose()
}

/// An incident's notifications, oldest first.
pub(super) async fn notifications(j: &PgJournal, incident_id: i64) -> Result<Vec<Notification>> {
    select(j, "n.incident_id = $1 ORDER BY n.id", &[&incident_id]).await
}

/// The notifications (with their incident's state) `condition` picks.
async fn select(j: &PgJournal, condition: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Notification>> {
    let client = j.client().await?;
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM notifications n JOIN incidents i ON i.id = n.incident_id WHERE {condition}"
        ))
        .await?;
    client.query(&stmt, params).await?.iter().map(notification).collect()
}
