//! The last known good spec of each instance homeostat could act on: the
//! newest spec it ran healthy with for `known_good_after`, which a repair
//! restores and against which drift is told.

use chrono::{DateTime, Utc};
use rusqlite::{params, Transaction};

use super::{parse_time, timestamp, JournalError, Op, Result, SqliteJournal, Written};

/// Schema version 7: known good specs.
pub(super) const SCHEMA: &str = "
    CREATE TABLE known_good (
        -- The instance, as the executor keys it (docker/container/<name>).
        instance TEXT PRIMARY KEY,
        -- JSON: the spec, in the executor's terms.
        spec TEXT NOT NULL,
        -- Since when it ran healthy with this spec.
        healthy_since TEXT NOT NULL,
        recorded_at TEXT NOT NULL
    );
";

/// An instance's last known good spec.
#[derive(Clone, Debug, PartialEq)]
pub struct KnownGood {
    pub instance: String,
    pub spec: serde_json::Value,
    pub healthy_since: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
}

/// A known good spec as stored.
pub(super) struct KnownGoodWrite {
    instance: String,
    spec: String,
    healthy_since: String,
    recorded_at: String,
}

impl KnownGoodWrite {
    pub(crate) fn new(known: &KnownGood) -> Result<KnownGoodWrite> {
        Ok(KnownGoodWrite {
            instance: known.instance.clone(),
            spec: serde_json::to_string(&known.spec)
                .map_err(|e| JournalError::Internal(format!("cannot encode the spec of {}: {e}", known.instance)))?,
            healthy_since: timestamp(known.healthy_since),
            recorded_at: timestamp(known.recorded_at),
        })
    }

    /// The columns in the order both journals' statements take them.
    pub(crate) fn columns(&self) -> [&String; 4] {
        [&self.instance, &self.spec, &self.healthy_since, &self.recorded_at]
    }
}

/// Replaces the instance's known good spec.
pub(crate) const UPSERT: &str = "INSERT INTO known_good (instance, spec, healthy_since, recorded_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (instance) DO UPDATE SET spec = excluded.spec, \
     healthy_since = excluded.healthy_since, recorded_at = excluded.recorded_at";
pub(crate) const SELECT: &str = "SELECT instance, spec, healthy_since, recorded_at FROM known_good WHERE instance = $1";

/// A known good spec from its stored columns.
pub(crate) fn decode(instance: String, spec: &str, healthy_since: &str, recorded_at: &str) -> Result<KnownGood> {
    Ok(KnownGood {
        spec: serde_json::from_str(spec)
            .map_err(|e| JournalError::Corrupt(format!("the known good spec of {instance} is unreadable: {e}")))?,
        healthy_since: parse_time(healthy_since)?,
        recorded_at: parse_time(recorded_at)?,
        instance,
    })
}

pub(super) fn apply(tx: &Transaction<'_>, write: &KnownGoodWrite) -> Result<i64> {
    let [instance, spec, healthy_since, recorded_at] = write.columns();
    Ok(tx
        .prepare_cached(UPSERT)?
        .execute(params![instance, spec, healthy_since, recorded_at])? as i64)
}

impl SqliteJournal {
    /// Records `known` as its instance's last known good spec, in place of
    /// the one recorded before.
    pub async fn record_known_good(&self, known: KnownGood) -> Result<()> {
        match self.write(Op::KnownGood(KnownGoodWrite::new(&known)?)).await? {
            Written::Row(_) => Ok(()),
            _ => Err(JournalError::Internal(
                "the writer answered a known good spec with something else".into(),
            )),
        }
    }

    /// The instance's last known good spec, if one was recorded.
    pub async fn known_good(&self, instance: String) -> Result<Option<KnownGood>> {
        self.read(move |conn| read(conn, &instance)).await
    }
}

/// The instance's last known good spec in the journal `conn` reads.
pub(crate) fn read(conn: &rusqlite::Connection, instance: &str) -> Result<Option<KnownGood>> {
    let mut stmt = conn.prepare_cached(SELECT)?;
    let mut rows = stmt.query([instance])?;
    match rows.next()? {
        Some(row) => Ok(Some(decode(
            row.get(0)?,
            &row.get::<_, String>(1)?,
            &row.get::<_, String>(2)?,
            &row.get::<_, String>(3)?,
        )?)),
        None => Ok(None),
    }
}
