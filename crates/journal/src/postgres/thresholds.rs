//! Adaptive thresholds' feedback, fits and rule updates (the SQLite
//! journal's `thresholds.rs`, on PostgreSQL).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use homeostat_core::threshold::{
    FeedbackConfig, FeedbackEvent, FeedbackReason, FeedbackStep, IncidentSummary, ThresholdState,
};
use tokio_postgres::Row;

use super::PgJournal;
use crate::thresholds::{
    encode, incident_summary, next_step, recorded_fit, spec_update, SpecRound, FEEDBACK_COLUMNS, SHOWN_STEPS,
};
use crate::{parse_time, timestamp, Result};

/// The advisory lock class (the first of two 32-bit keys, a space apart
/// from the 64-bit ones) of one series' feedback, keyed by its hash: each
/// step starts from the step committed before it, whichever process took it.
const FEEDBACK_LOCK: i32 = 0x686d_0003;

/// Applies one feedback step in one transaction; `None` if this incident
/// already moved the series this way, or if it resolved without action
/// after a user confirmed it.
pub(super) async fn record_feedback(
    j: &PgJournal,
    event: FeedbackEvent,
    default_coverage: f64,
    bounds: FeedbackConfig,
) -> Result<Option<FeedbackStep>> {
    let at = timestamp(Utc::now());
    let mut client = j.client().await?;
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1::integer, hashtext($2::text || E'\\n' || $3::text))",
        &[&FEEDBACK_LOCK, &event.spec, &event.series],
    )
    .await?;
    let latest: Option<f64> = tx
        .query_opt(
            "SELECT coverage_after FROM threshold_feedback WHERE spec = $1 AND series = $2 ORDER BY id DESC LIMIT 1",
            &[&event.spec, &event.series],
        )
        .await?
        .map(|r| r.get(0));
    // A user's confirmation outweighs the outcome: a confirmed alert that
    // then resolved by itself does not widen its band.
    if event.reason == FeedbackReason::ResolvedWithoutAction {
        let confirmed = tx
            .query_opt(
                "SELECT 1 FROM threshold_feedback WHERE spec = $1 AND series = $2 AND incident_id = $3 AND reason = $4",
                &[
                    &event.spec,
                    &event.series,
                    &event.incident_id,
                    &FeedbackReason::MarkedTrue.as_str(),
                ],
            )
            .await?;
        if confirmed.is_some() {
            return Ok(None);
        }
    }
    let (before, adjust, after) = next_step(latest, default_coverage, event.reason, &bounds);
    let sql = format!(
        "INSERT INTO threshold_feedback
             (at, spec, series, reason, adjust, incident_id, coverage_before, coverage_after, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT DO NOTHING
         RETURNING {FEEDBACK_COLUMNS}"
    );
    let inserted = tx
        .query_opt(
            &sql,
            &[
                &at,
                &event.spec,
                &event.series,
                &event.reason.as_str(),
                &adjust.as_str(),
                &event.incident_id,
                &before,
                &after,
                &event.detail,
            ],
        )
        .await?;
    let step = inserted.as_ref().map(read_step).transpose()?;
    tx.commit().await?;
    Ok(step)
}

/// Records a refit round in one transaction: the fits, and whether each
/// spec's rules went live.
pub(super) async fn record_round(j: &PgJournal, rounds: Vec<SpecRound>) -> Result<()> {
    let mut client = j.client().await?;
    let tx = client.transaction().await?;
    let upsert = tx
        .prepare_cached(
            "INSERT INTO threshold_fits (spec, series, fitted_at, fit) VALUES ($1, $2, $3, $4)
             ON CONFLICT (spec, series) DO UPDATE SET fitted_at = excluded.fitted_at, fit = excluded.fit",
        )
        .await?;
    let update = tx
        .prepare_cached(
            "INSERT INTO threshold_updates (spec, at, ok, detail, last_good_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (spec) DO UPDATE SET at = excluded.at, ok = excluded.ok, detail = excluded.detail,
                 last_good_at = coalesce(excluded.last_good_at, threshold_updates.last_good_at)",
        )
        .await?;
    for round in &rounds {
        let at = timestamp(round.at);
        for fit in &round.fitted {
            tx.execute(&upsert, &[&round.spec, &fit.key, &at, &encode(fit)?])
                .await?;
        }
        for skipped in &round.skipped {
            tx.execute(&upsert, &[&round.spec, &skipped.key, &at, &encode(skipped)?])
                .await?;
        }
        for insufficient in &round.insufficient {
            tx.execute(&upsert, &[&round.spec, &insufficient.key, &at, &encode(insufficient)?])
                .await?;
        }
        let (ok, detail) = match &round.outcome {
            Ok(detail) => (true, detail),
            Err(why) => (false, why),
        };
        let last_good_at = ok.then_some(&at);
        tx.execute(&update, &[&round.spec, &at, &ok, detail, &last_good_at])
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The coverage feedback has moved each series of `spec` to (series key → coverage).
pub(super) async fn coverages(j: &PgJournal, spec: String) -> Result<HashMap<String, f64>> {
    let client = j.client().await?;
    let stmt = client
        .prepare_cached(
            "SELECT DISTINCT ON (series) series, coverage_after FROM threshold_feedback
             WHERE spec = $1 ORDER BY series, id DESC",
        )
        .await?;
    Ok(client
        .query(&stmt, &[&spec])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// Incidents of the given alert names that started since `since`, with
/// when they ended and whether an action (other than `notify`, not in dry
/// run) was executed on them.
pub(super) async fn incident_summaries(
    j: &PgJournal,
    alertnames: Vec<String>,
    since: DateTime<Utc>,
) -> Result<Vec<IncidentSummary>> {
    let client = j.client().await?;
    let stmt = client
        .prepare_cached(
            "SELECT i.id, i.alertname, i.labels, i.annotations, i.starts_at,
                    CASE WHEN i.status = 'resolved' THEN coalesce(i.ends_at, i.resolved_at) END,
                    EXISTS (SELECT 1 FROM decisions d WHERE d.incident_id = i.id AND d.result = 'done'
                            AND NOT d.dry_run AND d.action <> 'notify')
             FROM incidents i WHERE i.alertname = $1 AND i.starts_at >= $2 ORDER BY i.id",
        )
        .await?;
    let since = timestamp(since);
    let mut out = Vec::new();
    for alertname in &alertnames {
        for r in client.query(&stmt, &[alertname, &since]).await? {
            out.push(incident_summary(
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
            )?);
        }
    }
    Ok(out)
}

/// What `thresholds show` prints.
pub(super) async fn threshold_state(j: &PgJournal) -> Result<ThresholdState> {
    let client = j.client().await?;
    let updates = client
        .query(
            "SELECT spec, at, ok, detail, last_good_at FROM threshold_updates ORDER BY spec COLLATE \"C\"",
            &[],
        )
        .await?
        .iter()
        .map(|r| spec_update(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect::<Result<Vec<_>>>()?;
    let fits = client
        .query(
            "SELECT spec, series, fitted_at, fit FROM threshold_fits
             ORDER BY spec COLLATE \"C\", series COLLATE \"C\"",
            &[],
        )
        .await?
        .iter()
        .map(|r| recorded_fit(r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect::<Result<Vec<_>>>()?;
    let sql = format!("SELECT {FEEDBACK_COLUMNS} FROM threshold_feedback ORDER BY id DESC LIMIT $1");
    let feedback = client
        .query(&sql, &[&SHOWN_STEPS])
        .await?
        .iter()
        .map(read_step)
        .collect::<Result<Vec<_>>>()?;
    Ok(ThresholdState {
        updates,
        fits,
        feedback,
    })
}

/// A feedback step from its `FEEDBACK_COLUMNS`.
fn read_step(row: &Row) -> Result<FeedbackStep> {
    Ok(FeedbackStep {
        id: row.get(0),
        at: parse_time(row.get(1))?,
        spec: row.get(2),
        series: row.get(3),
        reason: row.get(4),
        adjust: row.get(5),
        incident_id: row.get(6),
        coverage_before: row.get(7),
        coverage_after: row.get(8),
        detail: row.get(9),
    })
}
