//! Known good specs (the SQLite journal's `known_good.rs`, on PostgreSQL).

use super::PgJournal;
use crate::known_good::{decode, KnownGood, KnownGoodWrite, SELECT, UPSERT};
use crate::Result;

pub(super) async fn record_known_good(j: &PgJournal, known: KnownGood) -> Result<()> {
    let write = KnownGoodWrite::new(&known)?;
    let [instance, spec, healthy_since, recorded_at] = write.columns();
    let client = j.client().await?;
    client
        .execute(UPSERT, &[instance, spec, healthy_since, recorded_at])
        .await?;
    Ok(())
}

pub(super) async fn known_good(j: &PgJournal, instance: String) -> Result<Option<KnownGood>> {
    let client = j.client().await?;
    client
        .query_opt(SELECT, &[&instance])
        .await?
        .map(|r| decode(r.get(0), r.get(1), r.get(2), r.get(3)))
        .transpose()
}
