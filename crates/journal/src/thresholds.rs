//! Adaptive thresholds in the journal: every feedback step with its reason
//! (the coverage of a series is its latest step's), the latest fit of every
//! series, and how the latest rule update of every spec went. Together they
//! are what `homeostat thresholds show` prints, and what a restart resumes from.

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;

use super::{parse_json, parse_time, timestamp, JournalError, Op, Result, SqliteJournal, Written};
use homeostat_core::threshold::{
    step_coverage, Adjust, FeedbackConfig, FeedbackEvent, FeedbackReason, IncidentSummary, SeriesFit,
    SeriesInsufficient, SeriesSkipped,
};
pub use homeostat_core::threshold::{FeedbackStep, RecordedFit, SpecUpdate, ThresholdState};

pub(super) const SCHEMA: &str = "
    CREATE TABLE threshold_feedback (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        spec TEXT NOT NULL,
        series TEXT NOT NULL,
        reason TEXT NOT NULL,
        adjust TEXT NOT NULL,
        incident_id INTEGER NOT NULL,
        coverage_before REAL NOT NULL,
        coverage_after REAL NOT NULL,
        detail TEXT NOT NULL,
        -- One step of each kind per incident: feedback found again, or given
        -- both by a user and by the alert's outcome, is not counted twice.
        UNIQUE (spec, series, incident_id, adjust)
    );
    CREATE INDEX threshold_feedback_series ON threshold_feedback (spec, series, id);
    CREATE TABLE threshold_fits (
        spec TEXT NOT NULL,
        series TEXT NOT NULL,
        fitted_at TEXT NOT NULL,
        -- JSON: the fit (labels, coverage, model, points, lower, upper, point) or why it was skipped.
        fit TEXT NOT NULL,
        PRIMARY KEY (spec, series)
    );
    CREATE TABLE threshold_updates (
        spec TEXT PRIMARY KEY,
        at TEXT NOT NULL,
        ok INTEGER NOT NULL,
        detail TEXT NOT NULL,
        -- When the rules of this spec last went live.
        last_good_at TEXT
    );
";

/// A refit round's results for one spec.
#[derive(Clone, Debug)]
pub struct SpecRound {
    pub spec: String,
    pub at: DateTime<Utc>,
    pub fitted: Vec<SeriesFit>,
    pub skipped: Vec<SeriesSkipped>,
    /// Series in `insufficient_history` (no band published; the fallback, if any).
    pub insufficient: Vec<SeriesInsufficient>,
    /// `Ok(detail)` if the rules went live, `Err(why not)` otherwise.
    pub outcome: std::result::Result<String, String>,
}

pub(super) enum ThresholdWrite {
    Feedback {
        event: FeedbackEvent,
        default_coverage: f64,
        bounds: FeedbackConfig,
        at: DateTime<Utc>,
    },
    Round(Vec<SpecRound>),
}

pub(super) fn apply(tx: &Transaction<'_>, write: &ThresholdWrite) -> Result<i64> {
    match write {
        ThresholdWrite::Feedback {
            event,
            default_coverage,
            bounds,
            at,
        } => {
            let before: Option<f64> = tx
                .prepare_cached(
                    "SELECT coverage_after FROM threshold_feedback WHERE spec = ?1 AND series = ?2 ORDER BY id DESC LIMIT 1",
                )?
                .query_row(params![event.spec, event.series], |r| r.get(0))
                .optional()?;
            // A user's confirmation outweighs the outcome: a confirmed alert
            // that then resolved by itself does not widen its band.
            if event.reason == FeedbackReason::ResolvedWithoutAction {
                let confirmed = tx
                    .prepare_cached(
                        "SELECT 1 FROM threshold_feedback WHERE spec = ?1 AND series = ?2 AND incident_id = ?3 AND reason = ?4",
                    )?
                    .query_row(
                        params![
                            event.spec,
                            event.series,
                            event.incident_id,
                            FeedbackReason::MarkedTrue.as_str()
                        ],
                        |_| Ok(()),
                    )
                    .optional()?;
                if confirmed.is_some() {
                    return Ok(0);
                }
            }
            let (before, adjust, after) = next_step(before, *default_coverage, event.reason, bounds);
            let inserted = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO threshold_feedback
                         (at, spec, series, reason, adjust, incident_id, coverage_before, coverage_after, detail)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?
                .execute(params![
                    timestamp(*at),
                    event.spec,
                    event.series,
                    event.reason.as_str(),
                    adjust.as_str(),
                    event.incident_id,
                    before,
                    after,
                    event.detail,
                ])?;
            Ok(if inserted == 0 { 0 } else { tx.last_insert_rowid() })
        }
        ThresholdWrite::Round(rounds) => {
            for round in rounds {
                let at = timestamp(round.at);
                let mut upsert = tx.prepare_cached(
                    "INSERT INTO threshold_fits (spec, series, fitted_at, fit) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (spec, series) DO UPDATE SET fitted_at = ?3, fit = ?4",
                )?;
                for fit in &round.fitted {
                    upsert.execute(params![round.spec, fit.key, at, encode(fit)?])?;
                }
                for skipped in &round.skipped {
                    upsert.execute(params![round.spec, skipped.key, at, encode(skipped)?])?;
                }
                for insufficient in &round.insufficient {
                    upsert.execute(params![round.spec, insufficient.key, at, encode(insufficient)?])?;
                }
                let (ok, detail) = match &round.outcome {
                    Ok(detail) => (true, detail),
                    Err(why) => (false, why),
                };
                tx.prepare_cached(
                    "INSERT INTO threshold_updates (spec, at, ok, detail, last_good_at) VALUES (?1, ?2, ?3, ?4, CASE WHEN ?3 THEN ?2 END)
                     ON CONFLICT (spec) DO UPDATE SET at = ?2, ok = ?3, detail = ?4,
                         last_good_at = CASE WHEN ?3 THEN ?2 ELSE last_good_at END",
                )?
                .execute(params![round.spec, at, ok, detail])?;
            }
            Ok(0)
        }
    }
}

/// The step a feedback `reason` takes from the series' latest coverage
/// (`default_coverage` when it has none): coverage before, adjustment, coverage after.
pub(crate) fn next_step(
    latest: Option<f64>,
    default_coverage: f64,
    reason: FeedbackReason,
    bounds: &FeedbackConfig,
) -> (f64, Adjust, f64) {
    let before = latest.unwrap_or(default_coverage);
    let adjust = reason.adjust();
    (before, adjust, step_coverage(before, adjust, bounds))
}

/// A fit or a skipped series as stored.
pub(crate) fn encode(value: &impl Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| JournalError::Internal(format!("cannot encode a fit: {e}")))
}

impl SqliteJournal {
    /// Applies one feedback step; `None` if this incident already moved the
    /// series this way (the step is not taken twice), or if it resolved
    /// without action after a user confirmed it.
    pub async fn record_feedback(
        &self,
        event: FeedbackEvent,
        default_coverage: f64,
        bounds: FeedbackConfig,
    ) -> Result<Option<FeedbackStep>> {
        let write = ThresholdWrite::Feedback {
            event,
            default_coverage,
            bounds,
            at: Utc::now(),
        };
        let id = match self.write(Op::Threshold(write)).await? {
            Written::Row(id) => id,
            _ => {
                return Err(JournalError::Internal(
                    "the writer answered feedback with something else".into(),
                ))
            }
        };
        if id == 0 {
            return Ok(None);
        }
        self.read(move |conn| {
            let sql = format!("SELECT {FEEDBACK_COLUMNS} FROM threshold_feedback WHERE id = ?1");
            conn.query_row(&sql, [id], read_step)?.map(Some)
        })
        .await
    }

    /// Records a refit round: the fits, and whether each spec's rules went live.
    pub async fn record_round(&self, rounds: Vec<SpecRound>) -> Result<()> {
        self.write(Op::Threshold(ThresholdWrite::Round(rounds))).await.map(drop)
    }

    /// The coverage feedback has moved each series of `spec` to (series key → coverage).
    pub async fn coverages(&self, spec: String) -> Result<HashMap<String, f64>> {
        self.read(move |conn| Ok(latest_coverages(conn, Some(&spec))?.remove(&spec).unwrap_or_default()))
            .await
    }

    /// Incidents of the given alert names that started since `since`, with
    /// when they ended (Alertmanager's `endsAt`, else when the resolution
    /// arrived) and whether an action (other than `notify`, not in dry run)
    /// was executed on them.
    pub async fn incident_summaries(
        &self,
        alertnames: Vec<String>,
        since: DateTime<Utc>,
    ) -> Result<Vec<IncidentSummary>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT i.id, i.alertname, i.labels, i.annotations, i.starts_at,
                        CASE WHEN i.status = 'resolved' THEN coalesce(i.ends_at, i.resolved_at) END,
                        EXISTS (SELECT 1 FROM decisions d WHERE d.incident_id = i.id AND d.result = 'done'
                                AND d.dry_run = 0 AND d.action <> 'notify')
                 FROM incidents i WHERE i.alertname = ?1 AND i.starts_at >= ?2 ORDER BY i.id",
            )?;
            let mut out = Vec::new();
            for alertname in &alertnames {
                let rows = stmt.query_map(params![alertname, timestamp(since)], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, bool>(6)?,
                    ))
                })?;
                for row in rows {
                    let (id, alertname, labels, annotations, starts_at, resolved_at, acted) = row?;
                    out.push(incident_summary(
                        id,
                        alertname,
                        &labels,
                        &annotations,
                        &starts_at,
                        resolved_at.as_deref(),
                        acted,
                    )?);
                }
            }
            Ok(out)
        })
        .await
    }

    /// What `thresholds show` prints, from the open journal.
    pub async fn threshold_state(&self) -> Result<ThresholdState> {
        self.read(read_state).await
    }
}

/// An incident summary from its stored columns.
pub(crate) fn incident_summary(
    id: i64,
    alertname: String,
    labels: &str,
    annotations: &str,
    starts_at: &str,
    ended_at: Option<&str>,
    acted: bool,
) -> Result<IncidentSummary> {
    Ok(IncidentSummary {
        id,
        alertname,
        labels: parse_json(labels)?,
        annotations: parse_json(annotations)?,
        starts_at: parse_time(starts_at)?,
        ended_at: ended_at.map(parse_time).transpose()?,
        acted,
    })
}

/// What `thresholds show` prints, read from the journal file at `path`
/// without opening it for writing (a running `serve` may hold it).
pub fn read_state_at(path: &Path) -> Result<ThresholdState> {
    match open_read_only(path)? {
        Some(conn) => read_state(&conn),
        None => Ok(ThresholdState::default()),
    }
}

/// The journal at `path`, opened read-only; `None` when it was written by a
/// homeostat without thresholds (nothing fitted yet).
fn open_read_only(path: &Path) -> Result<Option<Connection>> {
    let (conn, version) = super::open_read_only(path)?;
    Ok((version >= 2).then_some(conn))
}

/// The coverage feedback has moved each series to, per spec (spec → series
/// key → coverage), read from the journal file at `path` without opening it
/// for writing; empty for a journal from before thresholds.
pub fn read_coverages_at(path: &Path) -> Result<HashMap<String, HashMap<String, f64>>> {
    match open_read_only(path)? {
        Some(conn) => latest_coverages(&conn, None),
        None => Ok(HashMap::new()),
    }
}

/// The latest step's coverage per series, of one spec or of all.
fn latest_coverages(conn: &Connection, spec: Option<&str>) -> Result<HashMap<String, HashMap<String, f64>>> {
    // Two statements, not `?1 IS NULL OR spec = ?1`: SQLite uses the
    // (spec, series, id) index only for a plain `spec = ?1`.
    const LATEST: &str = "SELECT spec, series, coverage_after FROM threshold_feedback f
         WHERE id = (SELECT max(id) FROM threshold_feedback g WHERE g.spec = f.spec AND g.series = f.series)";
    let row = |r: &rusqlite::Row<'_>| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, f64>(2)?));
    let rows = match spec {
        Some(spec) => conn
            .prepare_cached(&format!("{LATEST} AND spec = ?1"))?
            .query_map([spec], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?,
        None => conn
            .prepare_cached(LATEST)?
            .query_map([], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?,
    };
    let mut coverages: HashMap<String, HashMap<String, f64>> = HashMap::new();
    for row in rows {
        let (spec, series, coverage) = row;
        coverages.entry(spec).or_default().insert(series, coverage);
    }
    Ok(coverages)
}

/// How many feedback steps `thresholds show` lists.
pub(crate) const SHOWN_STEPS: i64 = 50;

/// A spec's latest rule update from its stored columns.
pub(crate) fn spec_update(
    spec: String,
    at: &str,
    ok: bool,
    detail: String,
    last_good_at: Option<&str>,
) -> Result<SpecUpdate> {
    Ok(SpecUpdate {
        spec,
        at: parse_time(at)?,
        ok,
        detail,
        last_good_at: last_good_at.map(parse_time).transpose()?,
    })
}

/// A series' latest fit from its stored columns.
pub(crate) fn recorded_fit(spec: String, series: String, fitted_at: &str, fit: &str) -> Result<RecordedFit> {
    Ok(RecordedFit {
        spec,
        series,
        fitted_at: parse_time(fitted_at)?,
        fit: serde_json::from_str(fit).map_err(|e| JournalError::Corrupt(format!("threshold fit: {e}")))?,
    })
}

fn read_state(conn: &Connection) -> Result<ThresholdState> {
    let updates = conn
        .prepare("SELECT spec, at, ok, detail, last_good_at FROM threshold_updates ORDER BY spec")?
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })?
        .map(|row| {
            let (spec, at, ok, detail, last_good_at) = row?;
            spec_update(spec, &at, ok, detail, last_good_at.as_deref())
        })
        .collect::<Result<Vec<_>>>()?;
    let fits = conn
        .prepare("SELECT spec, series, fitted_at, fit FROM threshold_fits ORDER BY spec, series")?
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?
        .map(|row| {
            let (spec, series, fitted_at, fit) = row?;
            recorded_fit(spec, series, &fitted_at, &fit)
        })
        .collect::<Result<Vec<_>>>()?;
    let sql = format!("SELECT {FEEDBACK_COLUMNS} FROM threshold_feedback ORDER BY id DESC LIMIT ?1");
    let feedback = conn
        .prepare(&sql)?
        .query_map([SHOWN_STEPS], read_step)?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    Ok(ThresholdState {
        updates,
        fits,
        feedback,
    })
}

pub(crate) const FEEDBACK_COLUMNS: &str =
    "id, at, spec, series, reason, adjust, incident_id, coverage_before, coverage_after, detail";

fn read_step(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<FeedbackStep>> {
    let at: String = row.get(1)?;
    Ok(parse_time(&at).and_then(|at| {
        Ok(FeedbackStep {
            id: row.get(0)?,
            at,
            spec: row.get(2)?,
            series: row.get(3)?,
            reason: row.get(4)?,
            adjust: row.get(5)?,
            incident_id: row.get(6)?,
            coverage_before: row.get(7)?,
            coverage_after: row.get(8)?,
            detail: row.get(9)?,
        })
    }))
}
