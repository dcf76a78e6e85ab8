//! Decisions, what the executor did, their verification, and the pause switch
//! (the SQLite journal's `decisions.rs`, on PostgreSQL).

use chrono::{DateTime, Utc};
use homeostat_core::decision::{ActionResult, Verification};

use tokio_postgres::Transaction;

use super::PgJournal;
use crate::decisions::{read, Decision, History, NewDecision, COLUMNS};
use crate::{parse_time, timestamp, Columns, JournalError, Result};

/// [`super::LEASE_HELD`] before a statement that selects `FROM lease`: it
/// writes nothing for a deposed leader, and no takeover can commit before it does.
const FENCE: &str = concat!("WITH lease AS (", lease_held!(), ")");

pub(super) async fn record_decision(j: &PgJournal, decision: NewDecision) -> Result<i64> {
    let term = j.term()?;
    let client = j.client().await?;
    let insert = client
        .prepare_cached(&format!(
            "{FENCE}
             INSERT INTO decisions (incident_id, decided_at, target_key, action, rule, attempt, verdict, reason,
                                    record, dry_run)
             SELECT $2::bigint, $3::text, $4::text, $5::text, $6::text, $7::bigint, $8::text, $9::text,
                    $10::text, $11::boolean
             FROM lease
             RETURNING id"
        ))
        .await?;
    let d = &decision;
    let row = client
        .query_opt(
            &insert,
            &[
                &term,
                &d.incident_id,
                &timestamp(d.decided_at),
                &d.target_key,
                &d.action,
                &d.rule,
                &d.attempt,
                &d.verdict.as_str(),
                &d.reason,
                &d.record.to_string(),
                &d.dry_run,
            ],
        )
        .await?;
    match row {
        Some(row) => Ok(row.try_get(0)?),
        None => Err(j.deposed(term, "the decision was not recorded")),
    }
}

pub(super) async fn record_result(
    j: &PgJournal,
    id: i64,
    result: ActionResult,
    detail: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    fenced_update(
        j,
        "UPDATE decisions SET executed_at = $3, result = $4, detail = $5 FROM lease WHERE id = $2 AND result IS NULL",
        id,
        &[&timestamp(at), &result.as_str(), &detail],
        "its result was not recorded",
    )
    .await
}

pub(super) async fn record_outcome(j: &PgJournal, id: i64, outcome: Verification, at: DateTime<Utc>) -> Result<()> {
    fenced_update(
        j,
        "UPDATE decisions SET verified_at = $3, outcome = $4 FROM lease WHERE id = $2 AND outcome IS NULL",
        id,
        &[&timestamp(at), &outcome.as_str()],
        "its outcome was not recorded",
    )
    .await
}

/// Records a confounded outcome and the outside changes that came with the
/// recovery, in the decision's record (`outside_changes`).
pub(super) async fn record_confounded(
    j: &PgJournal,
    id: i64,
    outside_changes: &[String],
    at: DateTime<Utc>,
) -> Result<()> {
    let changes = serde_json::to_string(outside_changes)
        .map_err(|e| JournalError::Internal(format!("outside changes as JSON: {e}")))?;
    fenced_update(
        j,
        "UPDATE decisions SET verified_at = $3, outcome = $4,
                record = jsonb_set(record::jsonb, '{outside_changes}', $5::text::jsonb)::text
         FROM lease WHERE id = $2 AND outcome IS NULL",
        id,
        &[&timestamp(at), &Verification::Confounded.as_str(), &changes],
        "its outcome was not recorded",
    )
    .await
}

/// Runs `update` of decision `id` (`$2`, with `values` from `$3`) behind
/// [`FENCE`]; an error saying `what` when this process no longer leads, or
/// when a takeover settled the decision meanwhile (even one of this
/// process, should it have lost its lease and taken it again).
async fn fenced_update(
    j: &PgJournal,
    update: &str,
    id: i64,
    values: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    what: &str,
) -> Result<()> {
    let term = j.term()?;
    let client = j.client().await?;
    let update = client.prepare_cached(&format!("{FENCE} {update}")).await?;
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&term, &id];
    params.extend_from_slice(values);
    match client.execute(&update, &params).await? {
        0 if client
            .query_opt(lease_held!(), &[&term])
            .await
            .is_ok_and(|held| held.is_some()) =>
        {
            Err(JournalError::Database {
                database: j.db.database.to_string(),
                what: format!("decision {id}: {what}: a takeover had settled it"),
            })
        }
        0 => Err(j.deposed(term, &format!("decision {id}: {what}"))),
        _ => Ok(()),
    }
}

pub(super) async fn decisions(j: &PgJournal, incident_id: i64) -> Result<Vec<Decision>> {
    let client = j.client().await?;
    let sql = format!("SELECT {COLUMNS} FROM decisions WHERE incident_id = $1 ORDER BY id");
    let select = client.prepare_cached(&sql).await?;
    client.query(&select, &[&incident_id]).await?.iter().map(read).collect()
}

/// The guard's view of the past, as [`crate::SqliteJournal::history`] tells it.
pub(super) async fn history(
    j: &PgJournal,
    target_key: String,
    since: DateTime<Utc>,
    dry_run: Option<DateTime<Utc>>,
) -> Result<History> {
    let client = j.client().await?;
    let mut history = History::default();
    let counts_dry = dry_run.is_some();
    let last = client
        .prepare_cached(
            "SELECT max(decided_at) FROM decisions
             WHERE target_key = $1 AND verdict = 'allow' AND action <> 'notify' AND (NOT dry_run OR $2)",
        )
        .await?;
    history.last_action_on_target = client.query_one(&last, &[&target_key, &counts_dry]).await?.time(0)?;
    // Newest first: failed outcomes count until a recovery (success or
    // confounded), or until an escalation whose incident's alert has since
    // resolved.
    let past = client
        .prepare_cached(
            "SELECT d.outcome, d.verdict = 'escalate' AND i.status = 'resolved'
             FROM decisions d JOIN incidents i ON i.id = d.incident_id
             WHERE d.target_key = $1 AND (d.outcome IS NOT NULL OR d.verdict = 'escalate')
             ORDER BY d.id DESC",
        )
        .await?;
    let past = client
        .query(&past, &[&target_key])
        .await?
        .iter()
        .map(|r| Ok((r.try_get::<_, Option<String>>(0)?, r.try_get::<_, bool>(1)?)))
        .collect::<Result<Vec<_>>>()?;
    history.consecutive_failures = crate::decisions::consecutive_failures(&past)?;
    let recent = client
        .prepare_cached(
            "SELECT decided_at FROM decisions
             WHERE decided_at >= $1 AND verdict = 'allow' AND action <> 'notify' AND (NOT dry_run OR $2)",
        )
        .await?;
    history.recent_actions = client
        .query(&recent, &[&timestamp(since), &counts_dry])
        .await?
        .iter()
        .map(|r| parse_time(r.try_get(0)?))
        .collect::<Result<_>>()?;
    let in_flight = client
        .prepare_cached(
            "SELECT count(*) FROM decisions
             WHERE verdict = 'allow' AND action <> 'notify' AND outcome IS NULL
               AND ((NOT dry_run AND (result IS NULL OR result IN ('done', 'timed_out')))
                    OR (dry_run AND decided_at >= $1))",
        )
        .await?;
    let in_flight: i64 = client
        .query_one(&in_flight, &[&dry_run.map(timestamp)])
        .await?
        .try_get(0)?;
    history.in_flight = u32::try_from(in_flight)
        .map_err(|_| JournalError::Internal(format!("{in_flight} actions in flight do not fit a u32")))?;
    Ok(history)
}

pub(super) async fn set_paused(j: &PgJournal, paused: bool) -> Result<()> {
    let client = j.client().await?;
    let upsert = client
        .prepare_cached(
            "WITH changed AS (SELECT pg_notify($3, $4))
             INSERT INTO controls (name, value) SELECT $1, $2 FROM changed
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .await?;
    client
        .execute(
            &upsert,
            &[
                &"paused",
                &paused.to_string(),
                &super::lease::CHANNEL,
                &super::lease::PAUSED,
            ],
        )
        .await?;
    Ok(())
}

pub(super) async fn paused(j: &PgJournal) -> Result<bool> {
    let client = j.client().await?;
    let select = client
        .prepare_cached("SELECT value FROM controls WHERE name = 'paused'")
        .await?;
    let value: Option<String> = client
        .query_opt(&select, &[])
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    Ok(value.as_deref() == Some("true"))
}

/// What a new leader settles first, in the transaction that took the lease:
/// decisions without a result marked interrupted, executed ones without an
/// outcome timed out (as `crate::decisions::reconcile` at a SQLite
/// journal's open); how many.
pub(super) async fn settle(tx: &Transaction<'_>) -> Result<u64> {
    // After the deliveries being journalled: the incidents are then updated
    // by one transaction at a time, whatever order each takes them in.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&super::INGEST_LOCK])
        .await?;
    let now = timestamp(Utc::now());
    let interrupted = tx
        .execute(
            "UPDATE decisions SET result = 'interrupted', executed_at = $1,
                    detail = 'the homeostat that decided this stopped leading before the action was confirmed; \
                              it was not repeated'
             WHERE verdict = 'allow' AND result IS NULL",
            &[&now],
        )
        .await?;
    let unverified = tx
        .execute(
            "UPDATE decisions SET outcome = 'timeout', verified_at = $1
             WHERE result IN ('done', 'timed_out') AND outcome IS NULL",
            &[&now],
        )
        .await?;
    // Their incidents are due for a look at once: the next step, or an escalation.
    tx.execute(
        "UPDATE incidents SET next_check = $1
         WHERE status = 'firing'
           AND id IN (SELECT incident_id FROM decisions WHERE executed_at = $1 OR verified_at = $1)",
        &[&now],
    )
    .await?;
    Ok(interrupted + unverified)
}
