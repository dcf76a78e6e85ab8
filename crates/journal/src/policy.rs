//! The learning policy's memory in the journal: its learned state (one row,
//! with a revision that every save increments) and every reward it learned
//! from, keyed by the decision it rewards.
//!
//! A save names the revision it was computed from and is refused when the
//! row has moved on (an import from the command line while homeostat runs):
//! the server then reloads and learns again on top, so neither the import
//! nor the outcome is lost.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde::Serialize;

use super::decisions::{self, Decision};
use super::{
    identify, lock, parse_time, timestamp, upgrade, JournalError, Op, Result, SqliteJournal, Written, SCHEMA_VERSION,
};

pub(super) const SCHEMA: &str = "
    CREATE TABLE policy (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        revision INTEGER NOT NULL,
        state TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        -- `learned`, or where an imported state came from.
        source TEXT NOT NULL
    );
    CREATE TABLE policy_rewards (
        decision_id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        policy_key TEXT NOT NULL,
        action TEXT NOT NULL,
        reward REAL NOT NULL,
        -- The verified outcome it was computed from (JSON).
        outcome TEXT NOT NULL
    );
";

/// The learned state as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StoredPolicy {
    pub revision: i64,
    /// `PolicyState` as JSON.
    pub state: String,
    pub updated_at: DateTime<Utc>,
    pub source: String,
}

/// One reward the policy learned from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Reward {
    pub decision_id: i64,
    pub at: DateTime<Utc>,
    pub policy_key: String,
    pub action: String,
    pub reward: f64,
    pub outcome: serde_json::Value,
}

/// A learned outcome: the reward row and the state with it folded in.
pub struct Learned {
    pub reward: Reward,
    /// The revision `state` was computed from (0: none stored yet).
    pub base_revision: i64,
    pub state: String,
}

pub(super) enum PolicyWrite {
    Learned(Box<Learned>),
}

/// Stores `state` if the stored revision is still `base`; returns the new
/// revision, or `None` when the row has moved on.
fn save(tx: &Transaction<'_>, base: Option<i64>, state: &str, source: &str) -> Result<Option<i64>> {
    let current: i64 = tx
        .prepare_cached("SELECT revision FROM policy WHERE id = 1")?
        .query_row([], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    if base.is_some_and(|base| base != current) {
        return Ok(None);
    }
    let next = current + 1;
    tx.prepare_cached(
        "INSERT INTO policy (id, revision, state, updated_at, source) VALUES (1, ?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET revision = ?1, state = ?2, updated_at = ?3, source = ?4",
    )?
    .execute(params![next, state, timestamp(Utc::now()), source])?;
    Ok(Some(next))
}

/// Applies a write; the row is the new revision, or -1 for a stale base.
pub(super) fn apply(tx: &Transaction<'_>, write: &PolicyWrite) -> Result<i64> {
    match write {
        PolicyWrite::Learned(learned) => {
            let Some(revision) = save(tx, Some(learned.base_revision), &learned.state, "learned")? else {
                return Ok(-1);
            };
            let r = &learned.reward;
            tx.prepare_cached(
                "INSERT OR REPLACE INTO policy_rewards (decision_id, at, policy_key, action, reward, outcome)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                r.decision_id,
                timestamp(r.at),
                r.policy_key,
                r.action,
                r.reward,
                r.outcome.to_string()
            ])?;
            Ok(revision)
        }
    }
}

fn stored(conn: &Connection) -> Result<Option<StoredPolicy>> {
    let row = conn
        .prepare_cached("SELECT revision, state, updated_at, source FROM policy WHERE id = 1")?
        .query_row([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .optional()?;
    row.map(|(revision, state, updated_at, source)| stored_policy(revision, state, &updated_at, source))
        .transpose()
}

/// The learned state from its stored columns.
pub(crate) fn stored_policy(revision: i64, state: String, updated_at: &str, source: String) -> Result<StoredPolicy> {
    Ok(StoredPolicy {
        revision,
        state,
        updated_at: parse_time(updated_at)?,
        source,
    })
}

fn revision(conn: &Connection) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT revision FROM policy WHERE id = 1")?
        .query_row([], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

fn rewards(conn: &Connection) -> Result<Vec<Reward>> {
    let rows = conn
        .prepare_cached(
            "SELECT decision_id, at, policy_key, action, reward, outcome FROM policy_rewards ORDER BY decision_id",
        )?
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, f64>(4)?,
                r.get::<_, String>(5)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(decision_id, at, policy_key, action, reward, outcome)| {
            Ok(Reward {
                decision_id,
                at: parse_time(&at)?,
                policy_key,
                action,
                reward,
                outcome: serde_json::from_str(&outcome)
                    .map_err(|e| JournalError::Corrupt(format!("reward outcome {outcome:?}: {e}")))?,
            })
        })
        .collect()
}

impl SqliteJournal {
    /// The stored learned state, if any.
    pub async fn policy(&self) -> Result<Option<StoredPolicy>> {
        self.read(stored).await
    }

    /// The stored state's revision (0 when none is stored).
    pub async fn policy_revision(&self) -> Result<i64> {
        self.read(revision).await
    }

    /// Stores a learned outcome and the state it led to; `None` when the
    /// stored state moved on since `learned.base_revision` (reload, retry).
    pub async fn record_learned(&self, learned: Learned) -> Result<Option<i64>> {
        match self.write(Op::Policy(PolicyWrite::Learned(Box::new(learned)))).await? {
            Written::Row(-1) => Ok(None),
            Written::Row(revision) => Ok(Some(revision)),
            _ => Err(JournalError::Internal(
                "the writer answered a policy write with something else".into(),
            )),
        }
    }
}

/// The journal read from the command line, read-only: safe beside a
/// running homeostat, which it neither blocks nor changes.
pub struct JournalReader {
    conn: Connection,
    /// Whether the journal has the policy's tables (schema 3 and later; an
    /// older one, from before the learning policy, has learned nothing).
    has_policy: bool,
    /// Whether it has known good specs (schema 7 and later).
    has_known_good: bool,
}

impl JournalReader {
    pub fn open(path: &std::path::Path) -> Result<JournalReader> {
        let (conn, version) = super::open_read_only(path)?;
        Ok(JournalReader {
            conn,
            has_policy: version >= 3,
            has_known_good: version >= 7,
        })
    }

    /// An instance's last known good spec, if one was recorded.
    pub fn known_good(&self, instance: &str) -> Result<Option<crate::known_good::KnownGood>> {
        if !self.has_known_good {
            return Ok(None);
        }
        crate::known_good::read(&self.conn, instance)
    }

    pub fn policy(&self) -> Result<Option<StoredPolicy>> {
        if !self.has_policy {
            return Ok(None);
        }
        stored(&self.conn)
    }

    pub fn rewards(&self) -> Result<Vec<Reward>> {
        if !self.has_policy {
            return Ok(Vec::new());
        }
        rewards(&self.conn)
    }

    /// An incident's decisions, oldest first.
    pub fn decisions(&self, incident_id: i64) -> Result<Vec<Decision>> {
        decisions::of_incident(&self.conn, incident_id)
    }

    /// Every decision that recorded the learning policy's view, oldest first.
    pub fn policy_decisions(&self) -> Result<Vec<Decision>> {
        decisions::with_policy(&self.conn)
    }
}

/// Replaces the learned state with `state` (already validated by the
/// caller), creating the journal if needed; returns the new revision. A
/// running homeostat picks it up at its next decision.
pub fn import(path: &std::path::Path, state: &str, source: &str) -> Result<i64> {
    let open_err = |source| JournalError::Open {
        path: path.to_owned(),
        source,
    };
    let mut conn = Connection::open(path).map_err(open_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(open_err)?;
    // Beside a running homeostat (which holds the journal's lock) the row is
    // only added, to a journal that homeostat has already brought to this
    // build's schema; otherwise the import creates or upgrades it itself.
    let version = identify(&conn, path)?;
    let _lock = match lock(path) {
        Ok(lock) => {
            upgrade(&conn, path)?;
            Some(lock)
        }
        Err(JournalError::InUse { .. }) if version == SCHEMA_VERSION => None,
        Err(JournalError::InUse { .. }) => {
            return Err(JournalError::Internal(format!(
                "{} is in use by a homeostat whose journal has schema version {version}, not this build's \
                 {SCHEMA_VERSION}: import with the homeostat that serves it, or stop it first",
                path.display()
            )))
        }
        Err(e) => return Err(e),
    };
    // Immediate: a running homeostat's commit between this read and write
    // would otherwise fail the import instead of waiting for the lock.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let revision = save(&tx, None, state, source)?.ok_or_else(|| JournalError::Internal("import refused".into()))?;
    tx.commit()?;
    Ok(revision)
}
