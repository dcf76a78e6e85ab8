//! Retention: what is older than `journal.retention` leaves the journal.
//!
//! Pruned, oldest first and a bounded number of rows per transaction (so
//! the writer never stalls deliveries for long):
//! - deliveries received before the cutoff and already processed;
//! - incidents resolved before the cutoff, with their decisions, their
//!   notifications and the policy's rewards for those decisions (the
//!   learned state itself is kept);
//! - threshold fits of series not refitted since the cutoff, and feedback
//!   steps older than it except each series' latest (its coverage);
//! - known good specs not recorded since the cutoff (their container is
//!   long gone: the spec of one still running is recorded again daily).
//!
//! A firing incident keeps its whole history however old. Configuration
//! checks keep the retention longer than the guard's budget window and
//! cooldown, so nothing those count is ever pruned; the circuit breaker
//! forgets failures older than the retention. SQLite reuses the freed
//! pages; the file does not shrink.

use chrono::{DateTime, Utc};
use rusqlite::{params, Transaction};
use serde::Serialize;

use super::{timestamp, JournalError, Op, Result, SqliteJournal, Written};

/// Rows of each kind removed by one prune.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    pub deliveries: usize,
    pub incidents: usize,
    pub decisions: usize,
    pub fits: usize,
    pub feedback: usize,
    pub known_good: usize,
}

impl Pruned {
    pub fn total(&self) -> usize {
        self.deliveries + self.incidents + self.decisions + self.fits + self.feedback + self.known_good
    }

    pub(crate) fn add(&mut self, other: Pruned) {
        self.deliveries += other.deliveries;
        self.incidents += other.incidents;
        self.decisions += other.decisions;
        self.fits += other.fits;
        self.feedback += other.feedback;
        self.known_good += other.known_good;
    }
}

/// One bounded step of pruning, applied by the writer thread.
pub(super) struct PruneWrite {
    pub cutoff: DateTime<Utc>,
    pub limit: usize,
}

pub(super) fn apply(tx: &Transaction<'_>, write: &PruneWrite) -> Result<Pruned> {
    let cutoff = timestamp(write.cutoff);
    let limit = write.limit as i64;
    // The oldest deliveries only: ids grow with receipt, so a first page
    // with nothing to prune means there is nothing further on.
    let deliveries = tx
        .prepare_cached(
            "DELETE FROM deliveries
             WHERE id IN (SELECT id FROM deliveries ORDER BY id LIMIT ?2)
               AND received_at < ?1
               AND id <= (SELECT processed_through FROM pipeline)",
        )?
        .execute(params![cutoff, limit])?;
    let incidents: Vec<i64> = tx
        .prepare_cached("SELECT id FROM incidents WHERE status = 'resolved' AND resolved_at < ?1 ORDER BY id LIMIT ?2")?
        .query_map(params![cutoff, limit], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut decisions = 0;
    for id in &incidents {
        tx.prepare_cached(
            "DELETE FROM policy_rewards WHERE decision_id IN (SELECT id FROM decisions WHERE incident_id = ?1)",
        )?
        .execute([id])?;
        decisions += tx
            .prepare_cached("DELETE FROM decisions WHERE incident_id = ?1")?
            .execute([id])?;
        tx.prepare_cached("DELETE FROM notifications WHERE incident_id = ?1")?
            .execute([id])?;
        tx.prepare_cached("DELETE FROM approvals WHERE incident_id = ?1")?
            .execute([id])?;
        tx.prepare_cached("DELETE FROM incidents WHERE id = ?1")?
            .execute([id])?;
    }
    let fits = tx
        .prepare_cached("DELETE FROM threshold_fits WHERE fitted_at < ?1")?
        .execute([&cutoff])?;
    let feedback = tx
        .prepare_cached(
            "DELETE FROM threshold_feedback
             WHERE at < ?1
               AND id NOT IN (SELECT max(id) FROM threshold_feedback GROUP BY spec, series)",
        )?
        .execute([&cutoff])?;
    let known_good = tx
        .prepare_cached("DELETE FROM known_good WHERE recorded_at < ?1")?
        .execute([&cutoff])?;
    Ok(Pruned {
        deliveries,
        incidents: incidents.len(),
        decisions,
        fits,
        feedback,
        known_good,
    })
}

/// Rows removed per transaction.
pub(crate) const PRUNE_STEP: usize = 2000;

impl SqliteJournal {
    /// Prunes what is older than `cutoff`, a bounded step per transaction,
    /// until nothing is left to prune.
    pub async fn prune(&self, cutoff: DateTime<Utc>) -> Result<Pruned> {
        let mut pruned = Pruned::default();
        loop {
            let write = PruneWrite {
                cutoff,
                limit: PRUNE_STEP,
            };
            let step = match self.write(Op::Prune(write)).await? {
                Written::Pruned(step) => step,
                _ => {
                    return Err(JournalError::Internal(
                        "the writer answered a prune with something else".into(),
                    ))
                }
            };
            pruned.add(step);
            if step.deliveries < PRUNE_STEP && step.incidents < PRUNE_STEP {
                return Ok(pruned);
            }
        }
    }
}
