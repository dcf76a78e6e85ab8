//! Answers to proposed actions (the SQLite journal's `approvals.rs`, on PostgreSQL).

use chrono::{DateTime, Utc};

use super::PgJournal;
use crate::approvals::Answer;
use crate::audit::AuditEntry;
use crate::{parse_time, timestamp, Result};

/// Answers the incident's open proposal, as `crate::approvals::apply` does:
/// the answer, `audit` and the incident's next look (now) in one transaction.
/// The incident's row is locked first, so answers to one incident are taken
/// one at a time and each sees those committed before it.
pub(super) async fn answer(
    j: &PgJournal,
    incident_id: i64,
    approved: bool,
    audit: AuditEntry,
    proposed_after: DateTime<Utc>,
) -> Result<Option<i64>> {
    let mut client = j.client().await?;
    let tx = client.transaction().await?;
    let lock = tx
        .prepare_cached("SELECT id FROM incidents WHERE id = $1 FOR UPDATE")
        .await?;
    tx.execute(&lock, &[&incident_id]).await?;
    let open = tx
        .prepare_cached(
            "SELECT d.id FROM decisions d JOIN incidents i ON i.id = d.incident_id
             WHERE d.incident_id = $1 AND i.status = 'firing'
               AND d.id = (SELECT max(id) FROM decisions WHERE incident_id = $1)
               AND d.verdict = 'proposed' AND d.decided_at > $2
               AND NOT EXISTS (SELECT 1 FROM approvals a WHERE a.proposal_id = d.id)",
        )
        .await?;
    let Some(row) = tx.query_opt(&open, &[&incident_id, &timestamp(proposed_after)]).await? else {
        tx.rollback().await?;
        return Ok(None);
    };
    let proposal: i64 = row.try_get(0)?;
    let AuditEntry { at, who, reason, .. } = &audit;
    let at = timestamp(*at);
    let insert = tx
        .prepare_cached(
            "INSERT INTO approvals (proposal_id, incident_id, approved, who, at, reason)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await?;
    tx.execute(&insert, &[&proposal, &incident_id, &approved, who, &at, reason])
        .await?;
    super::audit::insert(&tx, &audit).await?;
    let due = tx
        .prepare_cached("UPDATE incidents SET next_check = $2 WHERE id = $1")
        .await?;
    tx.execute(&due, &[&incident_id, &at]).await?;
    tx.execute("SELECT pg_notify($1, '')", &[&super::lease::CHANNEL])
        .await?;
    tx.commit().await?;
    Ok(Some(proposal))
}

pub(super) async fn approval(j: &PgJournal, proposal_id: i64) -> Result<Option<Answer>> {
    let client = j.client().await?;
    let select = client
        .prepare_cached("SELECT approved, who, at, reason FROM approvals WHERE proposal_id = $1")
        .await?;
    client
        .query_opt(&select, &[&proposal_id])
        .await?
        .map(|row| {
            Ok(Answer {
                approved: row.try_get(0)?,
                who: row.try_get(1)?,
                at: parse_time(row.try_get(2)?)?,
                reason: row.try_get(3)?,
            })
        })
        .transpose()
}
