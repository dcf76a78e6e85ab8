//! The audit trail (the SQLite journal's `audit.rs`, on PostgreSQL).

use deadpool_postgres::GenericClient;

use super::PgJournal;
use crate::audit::AuditEntry;
use crate::{parse_time, timestamp, Result};

/// Writes `entry` on `client`, a connection or a transaction.
pub(super) async fn insert(client: &impl GenericClient, entry: &AuditEntry) -> Result<()> {
    let insert = client
        .prepare_cached("INSERT INTO audit (at, who, role, action, subject, reason) VALUES ($1, $2, $3, $4, $5, $6)")
        .await?;
    client
        .execute(
            &insert,
            &[
                &timestamp(entry.at),
                &entry.who,
                &entry.role,
                &entry.action,
                &entry.subject,
                &entry.reason,
            ],
        )
        .await?;
    Ok(())
}

pub(super) async fn record_audit(j: &PgJournal, entry: AuditEntry) -> Result<()> {
    insert(&j.client().await?, &entry).await
}

pub(super) async fn audit(j: &PgJournal, limit: usize) -> Result<Vec<AuditEntry>> {
    let client = j.client().await?;
    let select = client
        .prepare_cached("SELECT at, who, role, action, subject, reason FROM audit ORDER BY id DESC LIMIT $1")
        .await?;
    client
        .query(&select, &[&i64::try_from(limit).unwrap_or(i64::MAX)])
        .await?
        .iter()
        .map(|row| {
            Ok(AuditEntry {
                at: parse_time(row.try_get(0)?)?,
                who: row.try_get(1)?,
                role: row.try_get(2)?,
                action: row.try_get(3)?,
                subject: row.try_get(4)?,
                reason: row.try_get(5)?,
            })
        })
        .collect()
}
