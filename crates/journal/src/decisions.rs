//! Decisions in the journal: what homeostat decided for an incident and
//! why, written before the executor is called; what the executor did,
//! written after; and whether it worked, written when verified.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use homeostat_core::decision::{ActionResult, Verdict, Verification};

use super::{parse_time, timestamp, Columns, JournalError, Op, Result, SqliteJournal, Written};

/// A decision as it is first recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewDecision {
    pub incident_id: i64,
    pub decided_at: DateTime<Utc>,
    /// The workload acted on (see `Target::key`), or `-` when there is none.
    pub target_key: String,
    /// The action chosen (`notify` when none could be).
    pub action: String,
    /// The playbook rule that chose it, if any.
    pub rule: Option<String>,
    /// How many attempts on this incident failed before this one.
    pub attempt: i64,
    /// Acted, held back by the guard, or why nothing could be done.
    pub verdict: Verdict,
    pub reason: String,
    /// Everything the decision was made from and with: target, operation,
    /// the guard's inputs. Free-form JSON for people and for learning.
    pub record: serde_json::Value,
    pub dry_run: bool,
}

/// A decision with what became of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub id: i64,
    #[serde(flatten)]
    pub new: NewDecision,
    pub executed_at: Option<DateTime<Utc>>,
    /// `None` until executed.
    pub result: Option<ActionResult>,
    pub detail: Option<String>,
    /// `None` until verified.
    pub outcome: Option<Verification>,
    pub verified_at: Option<DateTime<Utc>>,
}

/// What the guard needs from the journal about a target.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    pub last_action_on_target: Option<DateTime<Utc>>,
    /// Failed outcomes on the target since its last success, or since the
    /// alert of an incident on it that was escalated has resolved.
    pub consecutive_failures: u32,
    /// Executions (any target) since the given time.
    pub recent_actions: Vec<DateTime<Utc>>,
    /// Executed, not yet verified.
    pub in_flight: u32,
}

/// Writes on decisions and controls, applied by the journal's writer thread.
pub(super) enum DecisionWrite {
    Control {
        name: &'static str,
        value: String,
    },
    New(Box<NewDecision>),
    Result {
        id: i64,
        at: DateTime<Utc>,
        result: ActionResult,
        detail: String,
    },
    Outcome {
        id: i64,
        at: DateTime<Utc>,
        outcome: Verification,
        /// Outside changes to the target that came with the recovery, kept
        /// in the decision's record (`outside_changes`) when there are any.
        outside_changes: Vec<String>,
    },
}

pub(super) const SCHEMA: &str = "
    CREATE TABLE decisions (
        id INTEGER PRIMARY KEY,
        incident_id INTEGER NOT NULL,
        decided_at TEXT NOT NULL,
        target_key TEXT NOT NULL,
        action TEXT NOT NULL,
        rule TEXT,
        attempt INTEGER NOT NULL,
        verdict TEXT NOT NULL,
        reason TEXT NOT NULL,
        record TEXT NOT NULL,
        dry_run INTEGER NOT NULL,
        executed_at TEXT,
        result TEXT,
        detail TEXT,
        outcome TEXT,
        verified_at TEXT
    );
    CREATE INDEX decisions_incident ON decisions (incident_id);
    CREATE INDEX decisions_target ON decisions (target_key);
    CREATE INDEX decisions_executed ON decisions (executed_at);
    -- Operator switches that must survive a restart (pause).
    CREATE TABLE controls (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
";

pub(super) fn apply(tx: &Transaction<'_>, write: &DecisionWrite) -> Result<i64> {
    match write {
        DecisionWrite::Control { name, value } => {
            tx.prepare_cached(
                "INSERT INTO controls (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = ?2",
            )?
            .execute(params![name, value])?;
            Ok(0)
        }
        DecisionWrite::New(d) => {
            tx.prepare_cached(
                "INSERT INTO decisions (incident_id, decided_at, target_key, action, rule, attempt, verdict, reason,
                                        record, dry_run)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                d.incident_id,
                timestamp(d.decided_at),
                d.target_key,
                d.action,
                d.rule,
                d.attempt,
                d.verdict.as_str(),
                d.reason,
                d.record.to_string(),
                d.dry_run,
            ])?;
            Ok(tx.last_insert_rowid())
        }
        DecisionWrite::Result { id, at, result, detail } => {
            tx.prepare_cached("UPDATE decisions SET executed_at = ?2, result = ?3, detail = ?4 WHERE id = ?1")?
                .execute(params![id, timestamp(*at), result.as_str(), detail])?;
            Ok(*id)
        }
        DecisionWrite::Outcome {
            id,
            at,
            outcome,
            outside_changes,
        } => {
            tx.prepare_cached("UPDATE decisions SET verified_at = ?2, outcome = ?3 WHERE id = ?1")?
                .execute(params![id, timestamp(*at), outcome.as_str()])?;
            if !outside_changes.is_empty() {
                let changes = serde_json::to_string(outside_changes)
                    .map_err(|e| JournalError::Internal(format!("outside changes as JSON: {e}")))?;
                tx.prepare_cached(
                    "UPDATE decisions SET record = json_set(record, '$.outside_changes', json(?2)) WHERE id = ?1",
                )?
                .execute(params![id, changes])?;
            }
            Ok(*id)
        }
    }
}

/// Settles what a stop left open. A decision allowed but without a result
/// (the process stopped between recording and executing, or during
/// execution) is marked `interrupted` and never executed again: whether the
/// action happened is unknown, and repeating it blindly could make things
/// worse. An action executed but not yet verified gets the outcome
/// `timeout`: whether it worked can no longer be told.
pub(super) fn reconcile(conn: &Connection) -> Result<usize> {
    let now = timestamp(Utc::now());
    let interrupted = conn.execute(
        "UPDATE decisions SET result = 'interrupted', executed_at = ?1,
                detail = 'homeostat stopped before this action was confirmed; it was not repeated'
         WHERE verdict = 'allow' AND result IS NULL",
        [&now],
    )?;
    let unverified = conn.execute(
        "UPDATE decisions SET outcome = 'timeout', verified_at = ?1
         WHERE result IN ('done', 'timed_out') AND outcome IS NULL",
        [&now],
    )?;
    // Their incidents are due for a look at once: the next step, or an escalation.
    conn.execute(
        "UPDATE incidents SET next_check = ?1
         WHERE status = 'firing'
           AND id IN (SELECT incident_id FROM decisions WHERE executed_at = ?1 OR verified_at = ?1)",
        [&now],
    )?;
    Ok(interrupted + unverified)
}

pub(crate) const COLUMNS: &str = "id, incident_id, decided_at, target_key, action, rule, attempt, verdict, reason, \
                                  record, dry_run, executed_at, result, detail, outcome, verified_at";

/// Reads a row of [`COLUMNS`] (either database's).
pub(crate) fn read(row: &impl Columns) -> Result<Decision> {
    let record: String = row.column(9)?;
    let word = |index: usize| row.column::<Option<String>>(index);
    Ok(Decision {
        id: row.column(0)?,
        new: NewDecision {
            incident_id: row.column(1)?,
            decided_at: parse_time(&row.column::<String>(2)?)?,
            target_key: row.column(3)?,
            action: row.column(4)?,
            rule: row.column(5)?,
            attempt: row.column(6)?,
            verdict: stored(&row.column::<String>(7)?)?,
            reason: row.column(8)?,
            record: serde_json::from_str(&record)
                .map_err(|e| JournalError::Corrupt(format!("decision record {record:?}: {e}")))?,
            dry_run: row.column(10)?,
        },
        executed_at: row.time(11)?,
        result: word(12)?.as_deref().map(stored).transpose()?,
        detail: row.column(13)?,
        outcome: word(14)?.as_deref().map(stored).transpose()?,
        verified_at: row.time(15)?,
    })
}

/// Failed outcomes, newest first (`past`: outcome, and whether the row is
/// an escalation whose alert has resolved), until one that closes the
/// circuit breaker: a recovery (success or confounded) or such an escalation.
pub(crate) fn consecutive_failures(past: &[(Option<String>, bool)]) -> Result<u32> {
    let mut failures = 0;
    for (outcome, handled) in past {
        let outcome: Option<Verification> = outcome.as_deref().map(stored).transpose()?;
        if *handled || outcome.is_some_and(Verification::recovered) {
            break;
        }
        failures += u32::from(outcome.is_some_and(Verification::failed));
    }
    Ok(failures)
}

/// A state as the journal stores it: a word of [`homeostat_core::decision`].
fn stored<T: std::str::FromStr<Err = homeostat_core::decision::UnknownState>>(word: &str) -> Result<T> {
    word.parse()
        .map_err(|e: homeostat_core::decision::UnknownState| JournalError::Corrupt(format!("decision: {e}")))
}

/// An incident's decisions, oldest first.
pub(super) fn of_incident(conn: &Connection, incident_id: i64) -> Result<Vec<Decision>> {
    let sql = format!("SELECT {COLUMNS} FROM decisions WHERE incident_id = ?1 ORDER BY id");
    conn.prepare_cached(&sql)?
        .query_map([incident_id], |row| Ok(read(row)))?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        .collect()
}

/// Every decision whose record holds the learning policy's view, oldest first.
pub(super) fn with_policy(conn: &Connection) -> Result<Vec<Decision>> {
    let sql = format!("SELECT {COLUMNS} FROM decisions WHERE json_extract(record, '$.policy') IS NOT NULL ORDER BY id");
    conn.prepare_cached(&sql)?
        .query_map([], |row| Ok(read(row)))?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        .collect()
}

impl SqliteJournal {
    /// Records a decision before anything is done about it; returns its id.
    pub async fn record_decision(&self, decision: NewDecision) -> Result<i64> {
        self.decision_write(DecisionWrite::New(Box::new(decision))).await
    }

    /// Records what the executor did (or why it could not).
    pub async fn record_result(&self, id: i64, result: ActionResult, detail: &str, at: DateTime<Utc>) -> Result<()> {
        let write = DecisionWrite::Result {
            id,
            at,
            result,
            detail: detail.to_owned(),
        };
        self.decision_write(write).await.map(drop)
    }

    /// Records whether the action fixed the incident.
    pub async fn record_outcome(&self, id: i64, outcome: Verification, at: DateTime<Utc>) -> Result<()> {
        let write = DecisionWrite::Outcome {
            id,
            at,
            outcome,
            outside_changes: Vec::new(),
        };
        self.decision_write(write).await.map(drop)
    }

    /// Records that the incident recovered with outside changes to its
    /// target (`confounded`), and what they were, in the decision's record.
    pub async fn record_confounded(&self, id: i64, outside_changes: &[String], at: DateTime<Utc>) -> Result<()> {
        let write = DecisionWrite::Outcome {
            id,
            at,
            outcome: Verification::Confounded,
            outside_changes: outside_changes.to_vec(),
        };
        self.decision_write(write).await.map(drop)
    }

    async fn decision_write(&self, write: DecisionWrite) -> Result<i64> {
        match self.write(Op::Decision(write)).await? {
            Written::Row(id) => Ok(id),
            _ => Err(JournalError::Internal(
                "the writer answered a decision write with something else".into(),
            )),
        }
    }

    /// Records whether actions are paused, so a restart keeps it.
    pub async fn set_paused(&self, paused: bool) -> Result<()> {
        let write = DecisionWrite::Control {
            name: "paused",
            value: paused.to_string(),
        };
        self.decision_write(write).await.map(drop)
    }

    /// Whether actions were paused when homeostat last recorded it.
    pub async fn paused(&self) -> Result<bool> {
        self.read(|conn| {
            let value: Option<String> = conn
                .query_row("SELECT value FROM controls WHERE name = 'paused'", [], |r| r.get(0))
                .optional()?;
            Ok(value.as_deref() == Some("true"))
        })
        .await
    }

    /// An incident's decisions, oldest first.
    pub async fn decisions(&self, incident_id: i64) -> Result<Vec<Decision>> {
        self.read(move |conn| of_incident(conn, incident_id)).await
    }

    /// The guard's view of the past: of `target_key`, and of every target since `since`.
    ///
    /// Every allowed action counts from the moment it was decided, whatever
    /// became of it: one that failed, or whose result was lost to a crash,
    /// may have changed the target as much as one that succeeded.
    /// Notifications touch nothing and do not count.
    ///
    /// In dry run (`dry_run` is `Some(t)`) the would-be actions count as if
    /// they had run, so a dry run defers and refuses as acting would; as
    /// they are never verified, those decided since `t` count as in flight.
    pub async fn history(
        &self,
        target_key: String,
        since: DateTime<Utc>,
        dry_run: Option<DateTime<Utc>>,
    ) -> Result<History> {
        self.read(move |conn| {
            let mut history = History::default();
            let counts_dry = dry_run.is_some();
            let last: Option<String> = conn
                .prepare_cached(
                    "SELECT max(decided_at) FROM decisions
                     WHERE target_key = ?1 AND verdict = 'allow' AND action <> 'notify' AND (dry_run = 0 OR ?2)",
                )?
                .query_row(params![&target_key, counts_dry], |r| r.get(0))?;
            history.last_action_on_target = last.as_deref().map(parse_time).transpose()?;
            // Newest first: failed outcomes count until a success, a
            // recovery that came with an outside change (confounded: fixed
            // by someone else), or an escalation whose incident's alert has
            // since resolved (fixed by whoever it went to, or gone): each
            // closes the breaker.
            let past = conn
                .prepare_cached(
                    "SELECT d.outcome, d.verdict = 'escalate' AND i.status = 'resolved'
                     FROM decisions d JOIN incidents i ON i.id = d.incident_id
                     WHERE d.target_key = ?1 AND (d.outcome IS NOT NULL OR d.verdict = 'escalate')
                     ORDER BY d.id DESC",
                )?
                .query_map([&target_key], |r| {
                    Ok((r.get::<_, Option<String>>(0)?, r.get::<_, bool>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            history.consecutive_failures = consecutive_failures(&past)?;
            let recent = conn
                .prepare_cached(
                    "SELECT decided_at FROM decisions
                     WHERE decided_at >= ?1 AND verdict = 'allow' AND action <> 'notify' AND (dry_run = 0 OR ?2)",
                )?
                .query_map(params![timestamp(since), counts_dry], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            history.recent_actions = recent.iter().map(|t| parse_time(t)).collect::<Result<_>>()?;
            history.in_flight = conn
                .prepare_cached(
                    "SELECT count(*) FROM decisions
                     WHERE verdict = 'allow' AND action <> 'notify' AND outcome IS NULL
                       AND ((dry_run = 0 AND (result IS NULL OR result IN ('done', 'timed_out')))
                            OR (dry_run = 1 AND decided_at >= ?1))",
                )?
                .query_row([dry_run.map(timestamp)], |r| r.get(0))?;
            Ok(history)
        })
        .await
    }
}
