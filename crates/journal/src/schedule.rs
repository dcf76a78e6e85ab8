//! The reconciler's schedule: when each open incident is next looked at,
//! which image or revision it implicates, and incidents that end because
//! Alertmanager forgot them.
//!
//! Every firing incident may carry a `next_check` time. A delivery sets it
//! to its receipt time (in the same transaction that journals it), the
//! reconciler sets it after each look to when the incident needs one next
//! (a deferral's end, a refusal's backoff, a verification's deadline), and
//! clears it when nothing more is due. It is stored, so it survives a
//! restart, `kill -9` included.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, Transaction};

use super::{parse_time, timestamp, JournalError, Op, OpenIncidents, Result, SqliteJournal, Written};

/// Schema version 4: the schedule, and indexes for the guard's budget and
/// in-flight queries.
pub(super) const SCHEMA: &str = "
    ALTER TABLE incidents ADD COLUMN next_check TEXT;
    ALTER TABLE incidents ADD COLUMN vanished INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE incidents ADD COLUMN implicated TEXT;
    CREATE INDEX incidents_due ON incidents (next_check) WHERE next_check IS NOT NULL;
    CREATE INDEX decisions_acted ON decisions (decided_at) WHERE verdict = 'allow' AND action <> 'notify';
    CREATE INDEX decisions_unverified ON decisions (id) WHERE verdict = 'allow' AND outcome IS NULL;
    -- Incidents open before the schedule existed get one look at the next start.
    UPDATE incidents SET next_check = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE status = 'firing';
";

/// An incident due for a look, and the `next_check` it was picked with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Due {
    pub incident_id: i64,
    pub next_check: DateTime<Utc>,
}

/// A firing incident as the vanish check reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Firing {
    pub incident_id: i64,
    pub fingerprint: String,
    pub last_seen: DateTime<Utc>,
}

/// Writes on the schedule, applied by the journal's writer thread.
pub(super) enum ScheduleWrite {
    /// Sets `next_check` to `next`, only if it still is `seen`: a delivery
    /// that came meanwhile (and set it to its receipt) wins.
    Schedule {
        id: i64,
        seen: Option<DateTime<Utc>>,
        next: Option<DateTime<Utc>>,
    },
    /// Closes firing incidents not seen since `unseen_since` as vanished.
    Vanish {
        ids: Vec<i64>,
        unseen_since: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    /// Records the image or revision an incident implicates, once.
    Implicate { id: i64, what: String },
}

pub(super) fn apply(tx: &Transaction<'_>, open: &mut OpenIncidents, write: &ScheduleWrite) -> Result<i64> {
    match write {
        ScheduleWrite::Schedule { id, seen, next } => {
            let changed = tx
                .prepare_cached(
                    "UPDATE incidents SET next_check = ?3
                     WHERE id = ?1 AND status = 'firing' AND next_check IS ?2",
                )?
                .execute(params![id, seen.map(timestamp), next.map(timestamp)])?;
            Ok(changed as i64)
        }
        ScheduleWrite::Vanish { ids, unseen_since, at } => {
            let mut closed = 0;
            let mut stmt = tx.prepare_cached(
                "UPDATE incidents SET status = 'resolved', vanished = 1, resolved_at = ?3, next_check = NULL
                 WHERE id = ?1 AND status = 'firing' AND last_seen < ?2
                 RETURNING fingerprint",
            )?;
            for id in ids {
                let fingerprint: Option<String> = stmt
                    .query_row(params![id, timestamp(*unseen_since), timestamp(*at)], |r| r.get(0))
                    .optional()?;
                if let Some(fingerprint) = fingerprint {
                    open.0.remove(&fingerprint);
                    closed += 1;
                }
            }
            Ok(closed)
        }
        ScheduleWrite::Implicate { id, what } => {
            let changed = tx
                .prepare_cached("UPDATE incidents SET implicated = ?2 WHERE id = ?1 AND implicated IS NULL")?
                .execute(params![id, what])?;
            Ok(changed as i64)
        }
    }
}

impl SqliteJournal {
    async fn schedule_write(&self, write: ScheduleWrite) -> Result<i64> {
        match self.write(Op::Schedule(write)).await? {
            Written::Row(n) => Ok(n),
            _ => Err(JournalError::Internal(
                "the writer answered a schedule write with something else".into(),
            )),
        }
    }

    /// Sets an incident's next check to `next` if it is still `seen`;
    /// whether it was set.
    pub async fn schedule(&self, id: i64, seen: Option<DateTime<Utc>>, next: Option<DateTime<Utc>>) -> Result<bool> {
        let write = ScheduleWrite::Schedule { id, seen, next };
        Ok(self.schedule_write(write).await? > 0)
    }

    /// Closes, as vanished at `at`, those of `ids` still firing and not
    /// delivered since `unseen_since`; how many it closed.
    pub async fn vanish(&self, ids: Vec<i64>, unseen_since: DateTime<Utc>, at: DateTime<Utc>) -> Result<usize> {
        let write = ScheduleWrite::Vanish { ids, unseen_since, at };
        Ok(self.schedule_write(write).await? as usize)
    }

    /// Records what an incident implicates (an image, a revision), unless it
    /// already holds something.
    pub async fn implicate(&self, id: i64, what: String) -> Result<()> {
        self.schedule_write(ScheduleWrite::Implicate { id, what })
            .await
            .map(drop)
    }

    /// Firing incidents whose next check is at or before `now`, soonest first.
    pub async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Due>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, next_check FROM incidents
                 WHERE next_check IS NOT NULL AND next_check <= ?1 AND status = 'firing'
                 ORDER BY next_check LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![timestamp(now), limit as i64], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?;
            rows.map(|row| {
                let (incident_id, next_check) = row?;
                Ok(Due {
                    incident_id,
                    next_check: parse_time(&next_check)?,
                })
            })
            .collect()
        })
        .await
    }

    /// The earliest next check of any firing incident.
    pub async fn next_due(&self) -> Result<Option<DateTime<Utc>>> {
        self.read(|conn| {
            let next: Option<String> = conn
                .prepare_cached(
                    "SELECT min(next_check) FROM incidents WHERE next_check IS NOT NULL AND status = 'firing'",
                )?
                .query_row([], |r| r.get(0))?;
            next.as_deref().map(parse_time).transpose()
        })
        .await
    }

    /// Every firing incident, for the vanish check.
    pub async fn firing(&self) -> Result<Vec<Firing>> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT id, fingerprint, last_seen FROM incidents WHERE status = 'firing'")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
            })?;
            rows.map(|row| {
                let (incident_id, fingerprint, last_seen) = row?;
                Ok(Firing {
                    incident_id,
                    fingerprint,
                    last_seen: parse_time(&last_seen)?,
                })
            })
            .collect()
        })
        .await
    }
}
