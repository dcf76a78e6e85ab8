//! When incidents are looked at again, and vanished ones (the SQLite
//! journal's `schedule.rs`, on PostgreSQL).

use chrono::{DateTime, Utc};

use super::PgJournal;
use crate::schedule::{Due, Firing};
use crate::{parse_time, timestamp, Result};

/// Sets an incident's next check to `next` if it is still `seen`; whether it was set.
pub(super) async fn schedule(
    j: &PgJournal,
    id: i64,
    seen: Option<DateTime<Utc>>,
    next: Option<DateTime<Utc>>,
) -> Result<bool> {
    let client = j.client().await?;
    let stmt = client
        .prepare_cached(
            "UPDATE incidents SET next_check = $3
             WHERE id = $1 AND status = 'firing' AND next_check IS NOT DISTINCT FROM $2",
        )
        .await?;
    let changed = client
        .execute(&stmt, &[&id, &seen.map(timestamp), &next.map(timestamp)])
        .await?;
    Ok(changed > 0)
}

/// Firing incidents whose next check is at or before `now`, soonest first.
pub(super) async fn due(j: &PgJournal, now: DateTime<Utc>, limit: usize) -> Result<Vec<Due>> {
    let client = j.client().await?;
    let stmt = client
        .prepare_cached(
            "SELECT id, next_check FROM incidents
             WHERE next_check IS NOT NULL AND next_check <= $1 AND status = 'firing'
             ORDER BY next_check, id LIMIT $2",
        )
        .await?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    client
        .query(&stmt, &[&timestamp(now), &limit])
        .await?
        .iter()
        .map(|row| {
            Ok(Due {
                incident_id: row.try_get(0)?,
                next_check: parse_time(row.try_get(1)?)?,
            })
        })
        .collect()
}

/// The earliest next check of any firing incident.
pub(super) async fn next_due(j: &PgJournal) -> Result<Option<DateTime<Utc>>> {
    let client = j.client().await?;
    let stmt = client
        .prepare_cached("SELECT min(next_check) FROM incidents WHERE next_check IS NOT NULL AND status = 'firing'")
        .await?;
    let next: Option<String> = client.query_one(&stmt, &[]).await?.try_get(0)?;
    next.as_deref().map(parse_time).transpose()
}

/// Every firing incident, for the vanish check.
pub(super) async fn firing(j: &PgJournal) -> Result<Vec<Firing>> {
    let client = j.client().await?;
    let stmt = client
        .prepare_cached("SELECT id, fingerprint, last_seen FROM incidents WHERE status = 'firing' ORDER BY id")
        .await?;
    client
        .query(&stmt, &[])
        .await?
        .iter()
        .map(|row| {
            Ok(Firing {
                incident_id: row.try_get(0)?,
                fingerprint: row.try_get(1)?,
                last_seen: parse_time(row.try_get(2)?)?,
            })
        })
        .collect()
}

/// Closes, as vanished at `at`, those of `ids` still firing and not
/// delivered since `unseen_since`; how many it closed.
pub(super) async fn vanish(
    j: &PgJournal,
    ids: Vec<i64>,
    unseen_since: DateTime<Utc>,
    at: DateTime<Utc>,
) -> Result<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    let client = j.client().await?;
    let stmt = client
        .prepare_cached(
            // Locked in id order, as ingest locks them, so the two cannot deadlock.
            "WITH locked AS (SELECT id FROM incidents WHERE id = ANY($1) AND status = 'firing' ORDER BY id FOR UPDATE)
             UPDATE incidents i SET status = 'resolved', vanished = TRUE, resolved_at = $3, next_check = NULL
             FROM locked WHERE i.id = locked.id AND i.status = 'firing' AND i.last_seen < $2",
        )
        .await?;
    let closed = client
        .execute(&stmt, &[&ids, &timestamp(unseen_since), &timestamp(at)])
        .await?;
    Ok(closed as usize)
}

/// Records what an incident implicates (an image, a revision), unless it
/// already holds something.
pub(super) async fn implicate(j: &PgJournal, id: i64, what: String) -> Result<()> {
    let client = j.client().await?;
    let stmt = client
        .prepare_cached("UPDATE incidents SET implicated = $2 WHERE id = $1 AND implicated IS NULL")
        .await?;
    client.execute(&stmt, &[&id, &what]).await?;
    Ok(())
}
