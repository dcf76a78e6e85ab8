//! Deliveries and the incidents they open, repeat and resolve (the SQLite
//! journal's ingest and incident reads in `lib.rs`, on PostgreSQL).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use futures_util::future::BoxFuture;
use homeostat_core::alert::{is_label_name, AlertStatus, WebhookMessage};
use homeostat_core::incident::{transition, Incident, Known, Transition};
use tokio::sync::mpsc::{self, OwnedPermit};
use tokio::sync::oneshot;
use tokio_postgres::types::ToSql;
use tokio_postgres::Statement;

use super::{Db, PgJournal, INGEST_LOCK};
use crate::{
    decode_events, encode_events, parse_time, read_incident, Delivery, IncidentEvent, IncidentPage, IncidentQuery,
    IngestWrite, JournalError, Result,
};

/// The SQLite journal's `INCIDENT_COLUMNS`, in PostgreSQL's words.
const INCIDENT_COLUMNS: &str = "id, fingerprint, alertname, status, labels, annotations, starts_at, ends_at, \
                                generator_url, first_seen, last_seen, resolved_at, deliveries, \
                                next_check, vanished, implicated, \
                                (SELECT json_build_object('id', d.id, 'action', d.action, 'verdict', d.verdict, \
                                                          'result', d.result, 'outcome', d.outcome)::text \
                                 FROM decisions d WHERE d.incident_id = incidents.id ORDER BY d.id DESC LIMIT 1)";

/// Most deliveries journalled in one transaction.
const MAX_GROUP: usize = 256;
/// Deliveries waiting for the ingest task before callers wait for room.
const QUEUE: usize = 4096;

/// A delivery for the ingest task: its rows, the pipeline queue slot it
/// goes to once committed, and where to answer.
pub(super) struct Pending {
    write: IngestWrite,
    slot: OwnedPermit<Delivery>,
    reply: oneshot::Sender<Result<Delivery>>,
}

/// Journals a delivery and applies it to the incidents; returns once it is
/// committed, by when the ingest task has put it in the pipeline queue.
pub(super) async fn ingest(
    j: &PgJournal,
    message: WebhookMessage,
    received_at: DateTime<Utc>,
    queue_slot: OwnedPermit<Delivery>,
) -> Result<Delivery> {
    let (reply, answer) = oneshot::channel();
    let pending = Pending {
        write: IngestWrite::new(message, received_at),
        slot: queue_slot,
        reply,
    };
    j.ingest.send(pending).await.map_err(|_| JournalError::Closed)?;
    answer.await.map_err(|_| JournalError::Closed)?
}

/// Starts the task that journals deliveries: whatever has queued up is
/// committed in one transaction (one sync for many deliveries in a storm),
/// then each goes to the pipeline queue and its caller is answered. Should
/// the server reject the group (so it was rolled back), each delivery is
/// tried alone, so one bad delivery fails alone. Should the outcome be
/// unknown (the connection lost during the commit), the webhook fails and
/// Alertmanager sends the delivery again: if it was committed, the repeat
/// only repeats its alerts. What the leader acts on is the incidents' next
/// check, written in the same transaction, not this queue.
pub(super) fn spawn_ingester(db: Db) -> mpsc::Sender<Pending> {
    let (sender, mut receiver) = mpsc::channel::<Pending>(QUEUE);
    tokio::spawn(async move {
        let mut group = Vec::with_capacity(MAX_GROUP);
        while receiver.recv_many(&mut group, MAX_GROUP).await > 0 {
            let writes: Vec<&IngestWrite> = group.iter().map(|p| &p.write).collect();
            match commit(&db, &writes).await {
                Ok(deliveries) => {
                    for (pending, delivery) in group.drain(..).zip(deliveries) {
                        pending.committed(Ok(delivery));
                    }
                }
                Err(e) if group.len() == 1 => group.remove(0).committed(Err(e)),
                Err(e) if rejected(&e) => {
                    tracing::warn!(error = %e, deliveries = group.len(), "A group of deliveries was refused; journalling each alone.");
                    for pending in group.drain(..) {
                        let alone = commit(&db, &[&pending.write]).await.map(|mut d| d.remove(0));
                        pending.committed(alone);
                    }
                }
                Err(e) => {
                    let why = e.to_string();
                    for pending in group.drain(..) {
                        pending.committed(Err(JournalError::Internal(why.clone())));
                    }
                }
            }
        }
    });
    sender
}

/// Whether the group failed for something in it, so that each delivery
/// alone may fare better: the server refused a statement (and rolled the
/// transaction back), or a value could not be encoded. Not when the
/// database cannot be reached (nor when a commit's outcome is unknown).
fn rejected(error: &JournalError) -> bool {
    match error {
        JournalError::Postgres(e) => e.as_db_error().is_some(),
        JournalError::Internal(_) | JournalError::Corrupt(_) => true,
        _ => false,
    }
}

impl Pending {
    /// After the commit: queue the delivery for the pipeline, then answer the caller.
    fn committed(self, result: Result<Delivery>) {
        if let Ok(delivery) = &result {
            self.slot.send(delivery.clone());
        }
        // A caller that gave up waiting is not an error here.
        let _ = self.reply.send(result);
    }
}

/// Journals `deliveries` in one transaction, in order.
async fn commit(db: &Db, deliveries: &[&IngestWrite]) -> Result<Vec<Delivery>> {
    let mut client = db.client().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&INGEST_LOCK]).await?;
    let statements = Statements::prepare(&tx).await?;
    // The open incidents of every alert, read once for the whole group and
    // locked in id order as `vanish` locks them, so the two cannot deadlock.
    let fingerprints: Vec<&str> = deliveries
        .iter()
        .flat_map(|d| &d.alerts)
        .map(|a| a.fingerprint.as_str())
        .collect();
    let mut open = OpenIncidents::new();
    for row in tx.query(&statements.open, &[&fingerprints]).await? {
        open.insert(row.try_get(1)?, (row.try_get(0)?, parse_time(row.try_get(2)?)?));
    }
    let mut deferred = Deferred {
        tx: &tx,
        pending: Vec::new(),
    };
    let mut committed = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        committed.push(journal(&statements, &mut deferred, &mut open, delivery).await?);
    }
    deferred.flush().await?;
    drop(deferred);
    // The leader, whichever replica it is, looks at once.
    tx.execute("SELECT pg_notify($1, '')", &[&super::lease::CHANNEL])
        .await?;
    tx.commit().await?;
    Ok(committed)
}

/// The ingest path's statements, prepared once per connection.
struct Statements {
    open: Statement,
    episode: Statement,
    insert_incident: Statement,
    repeat: Statement,
    resolve: Statement,
    stale: Statement,
    insert_delivery: Statement,
}

impl Statements {
    async fn prepare(tx: &Transaction<'_>) -> Result<Statements> {
        Ok(Statements {
            open: tx
                .prepare_cached(
                    "SELECT id, fingerprint, starts_at FROM incidents
                     WHERE fingerprint = ANY($1) AND status = 'firing' ORDER BY id FOR UPDATE",
                )
                .await?,
            episode: tx
                .prepare_cached(
                    "SELECT id, resolved_at FROM incidents
                     WHERE fingerprint = $1 AND starts_at = $2 AND status = 'resolved'
                     ORDER BY id DESC LIMIT 1",
                )
                .await?,
            insert_incident: tx
                .prepare_cached(
                    "INSERT INTO incidents (fingerprint, alertname, status, labels, annotations, starts_at, ends_at,
                                            generator_url, first_seen, last_seen, resolved_at, deliveries, next_check)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, 1, $11) RETURNING id",
                )
                .await?,
            // The labels cannot have changed: the fingerprint is their hash. A
            // repeat wakes the reconciler for the incident, as the first did.
            repeat: tx
                .prepare_cached(
                    "UPDATE incidents SET annotations = $2, generator_url = $3, last_seen = $4,
                                          deliveries = deliveries + 1, next_check = $4
                     WHERE id = $1",
                )
                .await?,
            resolve: tx
                .prepare_cached(
                    "UPDATE incidents SET status = 'resolved', ends_at = $2, resolved_at = $3, last_seen = $3,
                                          deliveries = deliveries + 1, next_check = NULL
                     WHERE id = $1",
                )
                .await?,
            stale: tx
                .prepare_cached("UPDATE incidents SET last_seen = $2, deliveries = deliveries + 1 WHERE id = $1")
                .await?,
            insert_delivery: tx
                .prepare_cached(
                    "INSERT INTO deliveries (received_at, receiver, group_key, status, alerts, truncated_alerts,
                                             external_url, group_labels, common_labels, common_annotations, events)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
                )
                .await?,
        })
    }
}

/// Parameters a deferred statement owns or borrows from the group.
type Params<'a> = Vec<Box<dyn ToSql + Sync + Send + 'a>>;

/// Updates whose results nothing waits for, sent together (pipelined on the
/// connection) when the group ends, or before a statement that must see
/// their effect: an episode looked up, which is also what comes before any
/// incident is opened (a resolution of the same fingerprint may be pending,
/// and only one incident per fingerprint may fire).
struct Deferred<'a> {
    tx: &'a Transaction<'a>,
    pending: Vec<BoxFuture<'a, std::result::Result<u64, tokio_postgres::Error>>>,
}

impl<'a> Deferred<'a> {
    /// Queues an update; it is sent at the next flush, in the order queued
    /// (tokio-postgres sends a request when its future is first polled, and
    /// `try_join_all` first polls them in order).
    fn push(&mut self, statement: &'a Statement, params: Params<'a>) {
        self.pending.push(Box::pin(self.tx.execute_raw(statement, params)));
    }

    async fn flush(&mut self) -> Result<()> {
        futures_util::future::try_join_all(self.pending.drain(..)).await?;
        Ok(())
    }
}

/// Each firing incident of the group's fingerprints: its id and start.
type OpenIncidents = HashMap<String, (i64, DateTime<Utc>)>;

/// One delivery's transitions and its row; `open` follows them.
async fn journal<'a>(
    statements: &'a Statements,
    deferred: &mut Deferred<'a>,
    open: &mut OpenIncidents,
    delivery: &'a IngestWrite,
) -> Result<Delivery> {
    let now = &delivery.received_at;
    let mut events = Vec::with_capacity(delivery.alerts.len());
    for alert in &delivery.alerts {
        let mut known = Known {
            open: open.get(&alert.fingerprint).copied(),
            ..Known::default()
        };
        // The episode matters when nothing is open, or for a resolution of
        // an episode older than the open one; not on the hot path of repeats.
        let older = |(_, open_starts_at): (i64, DateTime<Utc>)| alert.starts_at_time < open_starts_at;
        if known
            .open
            .is_none_or(|o| alert.status == AlertStatus::Resolved && older(o))
        {
            deferred.flush().await?;
            let row = deferred
                .tx
                .query_opt(&statements.episode, &[&alert.fingerprint, &alert.starts_at])
                .await?;
            if let Some(row) = row {
                let resolved_at: Option<String> = row.try_get(1)?;
                let resolved_at = resolved_at.as_deref().map(parse_time).transpose()?.unwrap_or_default();
                known.resolved_episode = Some((row.try_get(0)?, resolved_at));
            }
        }
        let step = transition(alert.status, alert.starts_at_time, delivery.received_at_time, known);
        let incident_id = match step {
            Transition::Open | Transition::OpenResolved => {
                let resolved = step == Transition::OpenResolved;
                let status = if resolved { "resolved" } else { "firing" };
                let row = deferred
                    .tx
                    .query_one(
                        &statements.insert_incident,
                        &[
                            &alert.fingerprint,
                            &alert.alertname,
                            &status,
                            &alert.labels,
                            &alert.annotations,
                            &alert.starts_at,
                            &alert.ends_at,
                            &alert.generator_url,
                            now,
                            &resolved.then_some(now),
                            &(!resolved).then_some(now),
                        ],
                    )
                    .await?;
                let id: i64 = row.try_get(0)?;
                if !resolved {
                    open.insert(alert.fingerprint.clone(), (id, alert.starts_at_time));
                }
                id
            }
            Transition::Repeat(id) => {
                let params: Params<'a> = vec![
                    Box::new(id),
                    Box::new(&alert.annotations),
                    Box::new(&alert.generator_url),
                    Box::new(now),
                ];
                deferred.push(&statements.repeat, params);
                id
            }
            Transition::Resolve(id) => {
                deferred.push(
                    &statements.resolve,
                    vec![Box::new(id), Box::new(&alert.ends_at), Box::new(now)],
                );
                open.remove(&alert.fingerprint);
                id
            }
            Transition::Stale(id) => {
                deferred.push(&statements.stale, vec![Box::new(id), Box::new(now)]);
                id
            }
        };
        events.push(IncidentEvent {
            incident_id,
            kind: step.event_kind(),
            fingerprint: alert.fingerprint.clone(),
            alertname: alert.alertname.clone(),
        });
    }
    let compact = encode_events(&events)?;
    let alerts = delivery.alerts.len() as i64;
    let id: i64 = deferred
        .tx
        .query_one(
            &statements.insert_delivery,
            &[
                &delivery.received_at,
                &delivery.receiver,
                &delivery.group_key,
                &delivery.status.as_str(),
                &alerts,
                &delivery.truncated_alerts,
                &delivery.external_url,
                &delivery.group_labels,
                &delivery.common_labels,
                &delivery.common_annotations,
                &compact,
            ],
        )
        .await?
        .get(0);
    Ok(Delivery { id, events })
}

pub(super) async fn mark_processed(j: &PgJournal, through: i64) -> Result<()> {
    j.client()
        .await?
        .execute(
            "UPDATE pipeline SET processed_through = GREATEST(processed_through, $1)",
            &[&through],
        )
        .await?;
    Ok(())
}

pub(super) async fn unprocessed(j: &PgJournal) -> Result<Vec<Delivery>> {
    let client = j.client().await?;
    let rows = client
        .query(
            "SELECT d.id, d.events FROM deliveries d, pipeline p WHERE d.id > p.processed_through ORDER BY d.id",
            &[],
        )
        .await?;
    let incident = client
        .prepare_cached("SELECT fingerprint, alertname FROM incidents WHERE id = $1")
        .await?;
    let mut deliveries = Vec::with_capacity(rows.len());
    for row in rows {
        let id: i64 = row.try_get(0)?;
        let compact = decode_events(id, row.try_get(1)?)?;
        let mut events = Vec::with_capacity(compact.len());
        for (incident_id, kind) in compact {
            let found = client.query_one(&incident, &[&incident_id]).await?;
            events.push(IncidentEvent {
                incident_id,
                kind,
                fingerprint: found.try_get(0)?,
                alertname: found.try_get(1)?,
            });
        }
        deliveries.push(Delivery { id, events });
    }
    Ok(deliveries)
}

pub(super) async fn incidents(j: &PgJournal, query: IncidentQuery) -> Result<IncidentPage> {
    let mut sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE true");
    let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let mut arg = |sql: &mut String, clause: &str, value: Box<dyn ToSql + Sync + Send>| {
        args.push(value);
        sql.push_str(&clause.replace('?', &format!("${}", args.len())));
    };
    if let Some(status) = query.status {
        arg(&mut sql, " AND status = ?", Box::new(status.as_str().to_owned()));
    }
    if let Some(alertname) = query.alertname {
        arg(&mut sql, " AND alertname = ?", Box::new(alertname));
    }
    for (name, value) in query.labels {
        if !is_label_name(&name) {
            return Err(JournalError::InvalidQuery(format!("invalid label name {name:?}")));
        }
        arg(&mut sql, " AND (labels::jsonb ->> ?", Box::new(name));
        arg(&mut sql, ") = ?", Box::new(value));
    }
    if let Some(before) = query.before {
        arg(&mut sql, " AND id < ?", Box::new(before));
    }
    let limit = query.limit.max(1);
    arg(
        &mut sql,
        " ORDER BY id DESC LIMIT ?",
        Box::new(i64::try_from(limit + 1).unwrap_or(i64::MAX)),
    );
    let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect();
    let rows = j.client().await?.query(&sql, &params).await?;
    let mut incidents = rows.iter().map(read_incident).collect::<Result<Vec<_>>>()?;
    let next_cursor = if incidents.len() > limit {
        incidents.truncate(limit);
        incidents.last().map(|i| i.id)
    } else {
        None
    };
    Ok(IncidentPage { incidents, next_cursor })
}

pub(super) async fn incident(j: &PgJournal, id: i64) -> Result<Option<Incident>> {
    let sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1");
    let row = j.client().await?.query_opt(&sql, &[&id]).await?;
    row.as_ref().map(read_incident).transpose()
}
