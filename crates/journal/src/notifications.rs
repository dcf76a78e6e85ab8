//! The notification outbox: every notice for a human (an escalation, a
//! `notify` decision) is journalled once per sink before it is sent, so a
//! crash or a sink that is down loses none; the notifier sends what is due,
//! retries with backoff, and records each attempt's outcome.
//!
//! A row moves `pending` → `sent` → `resolved` (its incident ended and the
//! sink was told), or to `failed` after too many attempts. While `sent`,
//! `next_attempt` is when the notifier looks again: to refresh an
//! Alertmanager alert, or to tell the sink that the incident ended.

use chrono::{DateTime, Utc};
use homeostat_core::alert::AlertStatus;
use rusqlite::{params, Transaction};
use serde::Serialize;

use super::{parse_time, timestamp, Columns, JournalError, Op, Result, SqliteJournal, Written};

/// Schema version 5: the outbox.
pub(super) const SCHEMA: &str = "
    CREATE TABLE notifications (
        id INTEGER PRIMARY KEY,
        incident_id INTEGER NOT NULL,
        sink TEXT NOT NULL,
        event TEXT NOT NULL,
        -- The notice as built when it was queued (JSON), the same for every sink.
        body TEXT NOT NULL,
        created_at TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'resolved', 'failed')),
        -- Failed attempts in a row (0 again after a success).
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt TEXT,
        last_error TEXT,
        sent_at TEXT,
        resolved_at TEXT
    );
    CREATE INDEX notifications_due ON notifications (next_attempt) WHERE next_attempt IS NOT NULL;
    CREATE INDEX notifications_incident ON notifications (incident_id);
";

/// Where a notification stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationStatus {
    Pending,
    Sent,
    Resolved,
    Failed,
}

impl NotificationStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NotificationStatus::Pending => "pending",
            NotificationStatus::Sent => "sent",
            NotificationStatus::Resolved => "resolved",
            NotificationStatus::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Result<NotificationStatus> {
        Ok(match text {
            "pending" => NotificationStatus::Pending,
            "sent" => NotificationStatus::Sent,
            "resolved" => NotificationStatus::Resolved,
            "failed" => NotificationStatus::Failed,
            other => return Err(JournalError::Corrupt(format!("notification status {other:?}"))),
        })
    }
}

/// A journalled notification, with its incident's state when read.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Notification {
    pub id: i64,
    pub incident_id: i64,
    pub sink: String,
    pub event: String,
    pub body: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub status: NotificationStatus,
    pub attempts: u32,
    pub next_attempt: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// The incident's status, and when it resolved.
    #[serde(skip)]
    pub incident: (AlertStatus, Option<DateTime<Utc>>),
}

/// What became of one attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    pub id: i64,
    pub status: NotificationStatus,
    pub attempts: u32,
    pub next_attempt: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub at: DateTime<Utc>,
    /// The sink took it (sets `sent_at` the first time).
    pub delivered: bool,
}

pub(super) enum NotificationWrite {
    Queue {
        incident_id: i64,
        sinks: Vec<String>,
        event: String,
        body: String,
        at: DateTime<Utc>,
    },
    Attempted(Attempt),
}

pub(super) fn apply(tx: &Transaction<'_>, write: &NotificationWrite) -> Result<i64> {
    match write {
        NotificationWrite::Queue {
            incident_id,
            sinks,
            event,
            body,
            at,
        } => {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO notifications (incident_id, sink, event, body, created_at, status, next_attempt)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?5)",
            )?;
            for sink in sinks {
                stmt.execute(params![incident_id, sink, event, body, timestamp(*at)])?;
            }
            Ok(sinks.len() as i64)
        }
        NotificationWrite::Attempted(a) => {
            let sent = a.delivered;
            let resolved = a.status == NotificationStatus::Resolved;
            let changed = tx
                .prepare_cached(
                    "UPDATE notifications SET status = ?2, attempts = ?3, next_attempt = ?4, last_error = ?5,
                         sent_at = CASE WHEN ?6 AND sent_at IS NULL THEN ?8 ELSE sent_at END,
                         resolved_at = CASE WHEN ?7 THEN ?8 ELSE resolved_at END
                     WHERE id = ?1",
                )?
                .execute(params![
                    a.id,
                    a.status.as_str(),
                    a.attempts,
                    a.next_attempt.map(timestamp),
                    a.error,
                    sent,
                    resolved,
                    timestamp(a.at),
                ])?;
            Ok(changed as i64)
        }
    }
}

pub(crate) const COLUMNS: &str = "n.id, n.incident_id, n.sink, n.event, n.body, n.created_at, n.status, n.attempts,
     n.next_attempt, n.last_error, n.sent_at, n.resolved_at, i.status, i.resolved_at";

/// The notifications (with their incident's state) `condition` picks.
fn select(conn: &rusqlite::Connection, condition: &str, params: impl rusqlite::Params) -> Result<Vec<Notification>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM notifications n JOIN incidents i ON i.id = n.incident_id WHERE {condition}"
    ))?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(notification(row)?);
    }
    Ok(out)
}

/// Reads a row of [`COLUMNS`] (either database's).
pub(crate) fn notification(row: &impl Columns) -> Result<Notification> {
    let body: String = row.column(4)?;
    let attempts: i64 = row.column(7)?;
    let incident_status: String = row.column(12)?;
    Ok(Notification {
        id: row.column(0)?,
        incident_id: row.column(1)?,
        sink: row.column(2)?,
        event: row.column(3)?,
        body: serde_json::from_str(&body).map_err(|e| JournalError::Corrupt(format!("notification body: {e}")))?,
        created_at: parse_time(&row.column::<String>(5)?)?,
        status: NotificationStatus::parse(&row.column::<String>(6)?)?,
        attempts: u32::try_from(attempts)
            .map_err(|_| JournalError::Corrupt(format!("notification attempts {attempts}")))?,
        next_attempt: row.time(8)?,
        last_error: row.column(9)?,
        sent_at: row.time(10)?,
        resolved_at: row.time(11)?,
        incident: (
            if incident_status == "firing" {
                AlertStatus::Firing
            } else {
                AlertStatus::Resolved
            },
            row.time(13)?,
        ),
    })
}

impl SqliteJournal {
    async fn notification_write(&self, write: NotificationWrite) -> Result<i64> {
        match self.write(Op::Notification(write)).await? {
            Written::Row(n) => Ok(n),
            _ => Err(JournalError::Internal(
                "the writer answered a notification write with something else".into(),
            )),
        }
    }

    /// Queues one notification per sink, due at `at`.
    pub async fn queue_notifications(
        &self,
        incident_id: i64,
        sinks: Vec<String>,
        event: &str,
        body: &serde_json::Value,
        at: DateTime<Utc>,
    ) -> Result<()> {
        if sinks.is_empty() {
            return Ok(());
        }
        let write = NotificationWrite::Queue {
            incident_id,
            sinks,
            event: event.to_owned(),
            body: body.to_string(),
            at,
        };
        self.notification_write(write).await.map(drop)
    }

    /// Records what an attempt did.
    pub async fn record_attempt(&self, attempt: Attempt) -> Result<()> {
        self.notification_write(NotificationWrite::Attempted(attempt))
            .await
            .map(drop)
    }

    /// Notifications due at or before `now`, soonest first.
    pub async fn due_notifications(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Notification>> {
        self.read(move |conn| {
            select(
                conn,
                "n.next_attempt IS NOT NULL AND n.next_attempt <= ?1 ORDER BY n.next_attempt LIMIT ?2",
                params![timestamp(now), limit as i64],
            )
        })
        .await
    }

    /// When the next notification is due.
    pub async fn next_notification(&self) -> Result<Option<DateTime<Utc>>> {
        self.read(|conn| {
            let next: Option<String> = conn
                .prepare_cached("SELECT min(next_attempt) FROM notifications WHERE next_attempt IS NOT NULL")?
                .query_row([], |r| r.get(0))?;
            next.as_deref().map(parse_time).transpose()
        })
        .await
    }

    /// An incident's notifications, oldest first.
    pub async fn notifications(&self, incident_id: i64) -> Result<Vec<Notification>> {
        self.read(move |conn| select(conn, "n.incident_id = ?1 ORDER BY n.id", params![incident_id]))
            .await
    }
}
