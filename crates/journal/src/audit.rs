//! The audit trail: every operator action (pause, resume, feedback), who
//! did it under which role, on what, and why they said they did.

use chrono::{DateTime, Utc};
use rusqlite::{params, Transaction};
use serde::Serialize;

use super::{parse_time, timestamp, JournalError, Op, Result, SqliteJournal, Written};

/// Schema version 5 (with the notification outbox): the audit trail.
pub(super) const SCHEMA: &str = "
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        who TEXT NOT NULL,
        role TEXT NOT NULL,
        action TEXT NOT NULL,
        -- What it was done to (an incident id), if anything.
        subject TEXT,
        reason TEXT
    );
";

/// One operator action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub who: String,
    pub role: String,
    pub action: String,
    pub subject: Option<String>,
    pub reason: Option<String>,
}

pub(super) fn apply(tx: &Transaction<'_>, entry: &AuditEntry) -> Result<i64> {
    tx.prepare_cached("INSERT INTO audit (at, who, role, action, subject, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
        .execute(params![
            timestamp(entry.at),
            entry.who,
            entry.role,
            entry.action,
            entry.subject,
            entry.reason
        ])?;
    Ok(tx.last_insert_rowid())
}

impl SqliteJournal {
    /// Journals an operator action.
    pub async fn record_audit(&self, entry: AuditEntry) -> Result<()> {
        match self.write(Op::Audit(entry)).await? {
            Written::Row(_) => Ok(()),
            _ => Err(JournalError::Internal(
                "the writer answered an audit write with something else".into(),
            )),
        }
    }

    /// The latest `limit` operator actions, newest first.
    pub async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT at, who, role, action, subject, reason FROM audit ORDER BY id DESC LIMIT ?1")?;
            let mut rows = stmt.query([limit as i64])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(AuditEntry {
                    at: parse_time(&row.get::<_, String>(0)?)?,
                    who: row.get(1)?,
                    role: row.get(2)?,
                    action: row.get(3)?,
                    subject: row.get(4)?,
                    reason: row.get(5)?,
                });
            }
            Ok(out)
        })
        .await
    }
}
