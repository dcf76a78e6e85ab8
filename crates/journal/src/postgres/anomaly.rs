//! The anomaly detectors' state (the SQLite journal's `anomaly.rs`, on PostgreSQL).

use super::PgJournal;
use crate::anomaly::{decode, encode, AnomalyState};
use crate::{timestamp, Result};

pub(super) async fn save_anomaly(j: &PgJournal, states: Vec<AnomalyState>) -> Result<()> {
    let mut client = j.client().await?;
    let tx = client.transaction().await?;
    tx.execute("DELETE FROM anomaly_state", &[]).await?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO anomaly_state (spec, series, last_point, saved_at, snapshot) VALUES ($1, $2, $3, $4, $5)",
        )
        .await?;
    for state in &states {
        let (series, snapshot) = encode(state)?;
        tx.execute(
            &insert,
            &[
                &state.spec,
                &series,
                &state.last_point,
                &timestamp(state.saved_at),
                &snapshot,
            ],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn anomaly_states(j: &PgJournal) -> Result<Vec<AnomalyState>> {
    let client = j.client().await?;
    client
        .query(
            "SELECT spec, series, last_point, saved_at, snapshot FROM anomaly_state ORDER BY spec, series",
            &[],
        )
        .await?
        .iter()
        .map(|r| decode(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}
