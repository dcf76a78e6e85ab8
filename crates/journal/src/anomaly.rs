//! The anomaly detectors' state: per spec and series, the detector's
//! snapshot and the time of the last point it scored, so a restart (or a
//! new leader) resumes scoring where the last one journalled it instead of
//! learning again from scratch.

use chrono::{DateTime, Utc};
use rusqlite::{params, Transaction};

use super::{parse_json, parse_time, timestamp, JournalError, Op, Result, SqliteJournal, Written};
use homeostat_core::alert::LabelSet;
use homeostat_core::detect::Snapshot;

/// Schema version 6: the detectors' state.
pub(super) const SCHEMA: &str = "
    CREATE TABLE anomaly_state (
        spec TEXT NOT NULL,
        -- The series' labels (JSON, as kept by the spec): its key.
        series TEXT NOT NULL,
        -- Unix seconds of the last point scored.
        last_point INTEGER NOT NULL,
        saved_at TEXT NOT NULL,
        -- JSON: the detector's snapshot.
        snapshot TEXT NOT NULL,
        PRIMARY KEY (spec, series)
    );
";

/// One series' detector, as journalled.
#[derive(Clone, Debug, PartialEq)]
pub struct AnomalyState {
    pub spec: String,
    pub labels: LabelSet,
    /// Unix seconds of the last point scored.
    pub last_point: i64,
    pub saved_at: DateTime<Utc>,
    pub snapshot: Snapshot,
}

/// A save: these states replace every journalled one (series gone for
/// good, or of specs no longer configured, are dropped so).
pub(super) struct AnomalyWrite {
    rows: Vec<(String, String, i64, String, String)>,
}

/// The series key and snapshot as stored.
pub(crate) fn encode(state: &AnomalyState) -> Result<(String, String)> {
    let series = serde_json::to_string(&state.labels)
        .map_err(|e| JournalError::Internal(format!("cannot encode a series' labels: {e}")))?;
    let snapshot = serde_json::to_string(&state.snapshot)
        .map_err(|e| JournalError::Internal(format!("cannot encode a detector's snapshot: {e}")))?;
    Ok((series, snapshot))
}

/// A state from its stored columns.
pub(crate) fn decode(
    spec: String,
    series: &str,
    last_point: i64,
    saved_at: &str,
    snapshot: &str,
) -> Result<AnomalyState> {
    Ok(AnomalyState {
        labels: parse_json(series)?,
        last_point,
        saved_at: parse_time(saved_at)?,
        snapshot: serde_json::from_str(snapshot)
            .map_err(|e| JournalError::Corrupt(format!("the detector state of {spec} {series} is unreadable: {e}")))?,
        spec,
    })
}

pub(super) fn apply(tx: &Transaction<'_>, write: &AnomalyWrite) -> Result<i64> {
    tx.execute("DELETE FROM anomaly_state", [])?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO anomaly_state (spec, series, last_point, saved_at, snapshot) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (spec, series, last_point, saved_at, snapshot) in &write.rows {
        insert.execute(params![spec, series, last_point, saved_at, snapshot])?;
    }
    Ok(i64::try_from(write.rows.len()).unwrap_or(i64::MAX))
}

impl SqliteJournal {
    /// Journals the detectors' states in one transaction, in place of every
    /// state journalled before.
    pub async fn save_anomaly(&self, states: Vec<AnomalyState>) -> Result<()> {
        let mut rows = Vec::with_capacity(states.len());
        for state in &states {
            let (series, snapshot) = encode(state)?;
            rows.push((
                state.spec.clone(),
                series,
                state.last_point,
                timestamp(state.saved_at),
                snapshot,
            ));
        }
        match self.write(Op::Anomaly(AnomalyWrite { rows })).await? {
            Written::Row(_) => Ok(()),
            _ => Err(JournalError::Internal(
                "the writer answered an anomaly write with something else".into(),
            )),
        }
    }

    /// Every journalled detector state.
    pub async fn anomaly_states(&self) -> Result<Vec<AnomalyState>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT spec, series, last_point, saved_at, snapshot FROM anomaly_state ORDER BY spec, series",
            )?;
            let mut rows = stmt.query([])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(decode(
                    row.get(0)?,
                    &row.get::<_, String>(1)?,
                    row.get(2)?,
                    &row.get::<_, String>(3)?,
                    &row.get::<_, String>(4)?,
                )?);
            }
            Ok(out)
        })
        .await
    }
}
