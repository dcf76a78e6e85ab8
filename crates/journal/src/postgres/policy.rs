//! The learned policy's state and rewards (the SQLite journal's `policy.rs`, on PostgreSQL).

use chrono::Utc;

use super::PgJournal;
use crate::policy::{stored_policy, Learned, StoredPolicy};
use crate::{timestamp, Result};

pub(super) async fn policy(j: &PgJournal) -> Result<Option<StoredPolicy>> {
    let client = j.client().await?;
    let stmt = client
        .prepare_cached("SELECT revision, state, updated_at, source FROM policy WHERE id = 1")
        .await?;
    client
        .query_opt(&stmt, &[])
        .await?
        .map(|r| stored_policy(r.get(0), r.get(1), r.get(2), r.get(3)))
        .transpose()
}

pub(super) async fn policy_revision(j: &PgJournal) -> Result<i64> {
    let client = j.client().await?;
    let stmt = client
        .prepare_cached("SELECT revision FROM policy WHERE id = 1")
        .await?;
    Ok(client.query_opt(&stmt, &[]).await?.map_or(0, |r| r.get(0)))
}

/// Saves the state on top of `learned.base_revision` and its reward, in one
/// transaction; `None`, with nothing written, when the stored state moved on.
pub(super) async fn record_learned(j: &PgJournal, learned: Learned) -> Result<Option<i64>> {
    let mut client = j.client().await?;
    let tx = client.transaction().await?;
    // The row lock holds the revision until commit; a row inserted meanwhile
    // by another process fails the upsert's condition instead.
    let current: i64 = tx
        .query_opt("SELECT revision FROM policy WHERE id = 1 FOR UPDATE", &[])
        .await?
        .map_or(0, |r| r.get(0));
    if learned.base_revision != current {
        return Ok(None);
    }
    let next = current + 1;
    let saved = tx
        .execute(
            "INSERT INTO policy (id, revision, state, updated_at, source) VALUES (1, $1, $2, $3, 'learned')
             ON CONFLICT (id) DO UPDATE SET revision = excluded.revision, state = excluded.state,
                 updated_at = excluded.updated_at, source = excluded.source
             WHERE policy.revision = $4",
            &[&next, &learned.state, &timestamp(Utc::now()), &current],
        )
        .await?;
    if saved == 0 {
        return Ok(None);
    }
    let r = &learned.reward;
    tx.execute(
        "INSERT INTO policy_rewards (decision_id, at, policy_key, action, reward, outcome)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (decision_id) DO UPDATE SET at = excluded.at, policy_key = excluded.policy_key,
             action = excluded.action, reward = excluded.reward, outcome = excluded.outcome",
        &[
            &r.decision_id,
            &timestamp(r.at),
            &r.policy_key,
            &r.action,
            &r.reward,
            &r.outcome.to_string(),
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(Some(next))
}
