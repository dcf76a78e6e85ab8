//! Answers to proposed actions: a human approves or rejects the incident's
//! open proposal (its last decision, verdict `proposed`). The answer, the
//! audit entry and the incident's next look (now) are one transaction, so
//! a proposal is answered once, and the reconciler acts on it at once.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, Transaction};
use serde::Serialize;

use super::audit::{self, AuditEntry};
use super::{parse_time, timestamp, JournalError, Op, Result, SqliteJournal, Written};

/// Schema version 5 (with the outbox and the audit trail): answers.
pub(super) const SCHEMA: &str = "
    CREATE TABLE approvals (
        proposal_id INTEGER PRIMARY KEY,
        incident_id INTEGER NOT NULL,
        approved INTEGER NOT NULL,
        who TEXT NOT NULL,
        at TEXT NOT NULL,
        reason TEXT
    );
";

/// A human's answer to a proposal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Answer {
    pub approved: bool,
    pub who: String,
    pub at: DateTime<Utc>,
    pub reason: Option<String>,
}

pub(super) struct AnswerWrite {
    pub incident_id: i64,
    pub approved: bool,
    pub audit: AuditEntry,
    /// Proposals made before this have expired (`approval_timeout` ago).
    pub proposed_after: DateTime<Utc>,
}

/// The proposal answered, or `None` when the incident has no open one.
pub(super) fn apply(tx: &Transaction<'_>, write: &AnswerWrite) -> Result<Option<i64>> {
    let open: Option<i64> = tx
        .prepare_cached(
            "SELECT d.id FROM decisions d JOIN incidents i ON i.id = d.incident_id
             WHERE d.incident_id = ?1 AND i.status = 'firing'
               AND d.id = (SELECT max(id) FROM decisions WHERE incident_id = ?1)
               AND d.verdict = 'proposed' AND d.decided_at > ?2
               AND NOT EXISTS (SELECT 1 FROM approvals a WHERE a.proposal_id = d.id)",
        )?
        .query_row(params![write.incident_id, timestamp(write.proposed_after)], |r| {
            r.get(0)
        })
        .optional()?;
    let Some(proposal) = open else {
        return Ok(None);
    };
    let AuditEntry { at, who, reason, .. } = &write.audit;
    tx.prepare_cached(
        "INSERT INTO approvals (proposal_id, incident_id, approved, who, at, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        proposal,
        write.incident_id,
        write.approved,
        who,
        timestamp(*at),
        reason
    ])?;
    audit::apply(tx, &write.audit)?;
    tx.prepare_cached("UPDATE incidents SET next_check = ?2 WHERE id = ?1")?
        .execute(params![write.incident_id, timestamp(*at)])?;
    Ok(Some(proposal))
}

impl SqliteJournal {
    /// Answers the incident's open proposal (made after `proposed_after`:
    /// older ones expired), journalling `audit` with it and making the
    /// incident due; the proposal's decision id, or `None` when there is no
    /// open proposal.
    pub async fn answer(
        &self,
        incident_id: i64,
        approved: bool,
        audit: AuditEntry,
        proposed_after: DateTime<Utc>,
    ) -> Result<Option<i64>> {
        let write = AnswerWrite {
            incident_id,
            approved,
            audit,
            proposed_after,
        };
        match self.write(Op::Answer(write)).await? {
            Written::Row(id) if id > 0 => Ok(Some(id)),
            Written::Row(_) => Ok(None),
            _ => Err(JournalError::Internal(
                "the writer answered an approval with something else".into(),
            )),
        }
    }

    /// The answer to proposal `proposal_id`, if there is one.
    pub async fn approval(&self, proposal_id: i64) -> Result<Option<Answer>> {
        self.read(move |conn| {
            let row: Option<(bool, String, String, Option<String>)> = conn
                .prepare_cached("SELECT approved, who, at, reason FROM approvals WHERE proposal_id = ?1")?
                .query_row([proposal_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .optional()?;
            row.map(|(approved, who, at, reason)| {
                Ok(Answer {
                    approved,
                    who,
                    at: parse_time(&at)?,
                    reason,
                })
            })
            .transpose()
        })
        .await
    }
}
