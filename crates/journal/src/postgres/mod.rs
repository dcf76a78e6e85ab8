//! The journal on PostgreSQL (`journal.url`), for homeostat beside a
//! database it does not embed: the same tables, values and guarantees as
//! [`crate::SqliteJournal`] (see [`crate::Store`]), through a pool of
//! connections (deadpool-postgres over tokio-postgres).
//!
//! - Several homeostat replicas may share a database: each journals the
//!   deliveries it receives and answers reads, and a lease elects the one
//!   that acts (`lease.rs`, [`crate::leadership`]). Decisions, results and
//!   outcomes are written only in the leader's current term (the fencing
//!   token), checked in the statement that writes them.
//! - Each operation is one transaction of its own; PostgreSQL, not a writer
//!   thread, orders concurrent writes.
//! - Deliveries are journalled by one task, which commits whatever has
//!   queued up in one transaction (group commit, as the SQLite writer
//!   does) and then queues them for the pipeline: delivery ids are in
//!   commit order and reach the queue in journal order, and a webhook that
//!   gives up cannot leave a committed delivery out of the queue.
//! - The schema is created by versioned migrations; a database holding
//!   anything but homeostat's journal, or a schema newer than this build,
//!   is refused before a single write.
//! - Migrations and ingests take advisory locks of their own, so that
//!   replicas migrate once and journal deliveries one group at a time.
//!
//! The modules beside this file hold each table family's SQL, as the SQLite
//! modules of the same names do for SQLite.

/// The lease row while `$1` is its current, unexpired term, locked for the
/// transaction (see [`crate::leadership`]): what a fenced write checks.
macro_rules! lease_held {
    () => {
        "SELECT term FROM leader WHERE id = 1 AND term = $1 AND expires_at > clock_timestamp() FOR SHARE"
    };
}

mod anomaly;
mod approvals;
mod audit;
mod decisions;
mod incidents;
mod known_good;
mod lease;
mod notifications;
mod policy;
mod retention;
mod schedule;
mod thresholds;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use homeostat_core::alert::WebhookMessage;
use homeostat_core::config::JournalConfig;
use homeostat_core::decision::{ActionResult, Verification};
use homeostat_core::incident::Incident;
use homeostat_core::threshold::{FeedbackConfig, FeedbackEvent, FeedbackStep, IncidentSummary, ThresholdState};
use tokio::sync::mpsc::{self, OwnedPermit};
use tokio_postgres::NoTls;

use crate::anomaly::AnomalyState;
use crate::approvals::Answer;
use crate::audit::AuditEntry;
use crate::decisions::{Decision, History, NewDecision};
use crate::known_good::KnownGood;
use crate::leadership::{Changes, Leadership, Term};
use crate::notifications::{Attempt, Notification};
use crate::policy::{Learned, StoredPolicy};
use crate::retention::Pruned;
use crate::schedule::{Due, Firing};
use crate::thresholds::SpecRound;
use crate::{timestamp, Delivery, IncidentPage, IncidentQuery, JournalError, Result, Store};

/// The schema this build writes; a newer one is refused rather than misread.
const SCHEMA_VERSION: i32 = 4;
/// The SQL of each schema version, oldest first.
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [
    include_str!("schema.sql"),
    include_str!("lease.sql"),
    include_str!("anomaly.sql"),
    include_str!("known_good.sql"),
];
/// Advisory lock keys (PostgreSQL's one namespace of 64-bit keys), "hmst" and a purpose.
const MIGRATION_LOCK: i64 = 0x686d_7374_0001;
const INGEST_LOCK: i64 = 0x686d_7374_0002;
/// Connections in the pool.
const POOL_SIZE: usize = 16;

/// A handle to the journal in a PostgreSQL database.
pub struct PgJournal {
    db: Db,
    /// The task that journals deliveries, several to a transaction.
    ingest: mpsc::Sender<incidents::Pending>,
    /// Whether this process leads, kept by the lease task.
    lease: lease::Lease,
}

/// The pool, shared with the ingest task.
#[derive(Clone)]
struct Db {
    pool: Pool,
    /// The database as errors name it (the URL without its password).
    database: Arc<str>,
}

impl Db {
    /// A connection from the pool.
    async fn client(&self) -> Result<Object> {
        self.pool.get().await.map_err(|e| JournalError::Database {
            database: self.database.to_string(),
            what: match e {
                deadpool_postgres::PoolError::Backend(e) => format!("cannot connect: {}", crate::postgres_message(&e)),
                e => format!("cannot connect: {e}"),
            },
        })
    }
}

impl PgJournal {
    /// Connects to the database `config.url` names (with `password`, when
    /// the URL has none), creates or migrates homeostat's schema, and joins
    /// the election of the replica that acts: alone on the database (or
    /// after a clean stop) it leads at once, settling what the last leader
    /// left under way.
    pub async fn open(config: &JournalConfig, password: Option<&str>) -> Result<PgJournal> {
        let url = config.url.as_deref().unwrap_or_default();
        let mut pg: tokio_postgres::Config = url.parse().map_err(|e| JournalError::Database {
            database: config.describe(),
            what: format!("journal.url is not a PostgreSQL URL: {e}"),
        })?;
        if let Some(password) = password {
            pg.password(password);
        }
        pg.application_name("homeostat");
        pg.connect_timeout(std::time::Duration::from_secs(10));
        // A cut connection is noticed in about a minute, not TCP's hours.
        pg.keepalives_idle(std::time::Duration::from_secs(30));
        pg.keepalives_interval(std::time::Duration::from_secs(10));
        pg.keepalives_retries(3);
        // Nor does a request sent into a cut wait for TCP's retransmissions (about 15 minutes).
        pg.tcp_user_timeout(std::time::Duration::from_secs(30));
        // A stuck lock or statement fails its request instead of stalling the
        // journal; and a replica that stops mid-transaction (paused, cut off)
        // has its locks freed soon, or every replica's ingest would wait on it.
        let idle = config.lease.0.min(std::time::Duration::from_secs(5)).as_millis();
        pg.options(format!(
            "-c lock_timeout=30s -c statement_timeout=120s -c idle_in_transaction_session_timeout={idle}ms"
        ));
        let database: Arc<str> = config.describe().into();
        let manager = Manager::from_config(
            pg.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(std::time::Duration::from_secs(30)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| JournalError::Internal(format!("cannot build the journal's connection pool: {e}")))?;
        let db = Db {
            pool,
            database: Arc::clone(&database),
        };
        migrate(&db).await?;
        Ok(PgJournal {
            ingest: incidents::spawn_ingester(db.clone()),
            lease: lease::Lease::start(pg, database, config.lease.0).await?,
            db,
        })
    }

    /// This process' term, while it leads; else an error.
    fn term(&self) -> Result<i64> {
        match self.lease.leadership.term() {
            Term::Leading(term) => Ok(term),
            Term::Following => Err(JournalError::NotLeading {
                database: self.db.database.to_string(),
                what: "nothing was written".into(),
                why: "does not lead".into(),
            }),
        }
    }

    /// Fences the rest of `tx`: an error unless this process leads in the
    /// lease's current, unexpired term, which then stays so until `tx` ends.
    async fn fence(&self, tx: &tokio_postgres::Transaction<'_>, what: &str) -> Result<()> {
        let term = self.term()?;
        match tx.query_opt(lease_held!(), &[&term]).await? {
            Some(_) => Ok(()),
            None => Err(self.deposed(term, what)),
        }
    }

    /// The error for a fenced write refused in `term`: another replica
    /// took the lease, or it lapsed.
    fn deposed(&self, term: i64, what: &str) -> JournalError {
        JournalError::NotLeading {
            database: self.db.database.to_string(),
            what: what.into(),
            why: format!("no longer leads: its lease (term {term}) expired or another replica took it"),
        }
    }

    /// A connection from the pool.
    pub(crate) async fn client(&self) -> Result<Object> {
        self.db.client().await
    }
}

/// Creates or migrates the schema, under an advisory lock so that two
/// processes starting together migrate once.
async fn migrate(db: &Db) -> Result<()> {
    let mut client = db.client().await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let migrated = migrate_locked(db, &mut client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    migrated?;
    unlocked?;
    Ok(())
}

async fn migrate_locked(db: &Db, client: &mut Object) -> Result<()> {
    let refuse = |what: String| JournalError::Database {
        database: db.database.to_string(),
        what,
    };
    // In the schema homeostat creates its tables in, whatever this role may see of it.
    let ours: bool = client
        .query_one(
            "SELECT to_regclass(quote_ident(current_schema()) || '.homeostat_journal') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    let version: i32 = if ours {
        client
            .query_one("SELECT schema_version FROM homeostat_journal", &[])
            .await?
            .get(0)
    } else {
        let tables: Vec<String> = client
            .query(
                "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
                     ORDER BY c.relname LIMIT 6",
                &[],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !tables.is_empty() {
            let more = if tables.len() > 5 { ", …" } else { "" };
            let shown = tables.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
            return Err(refuse(format!(
                "it is not a homeostat journal: its schema already holds other tables ({shown}{more}); \
                     give homeostat a database (or a user whose search_path is a schema) of its own"
            )));
        }
        0
    };
    if version > SCHEMA_VERSION {
        return Err(refuse(format!(
            "its journal has schema version {version}, newer than this homeostat understands \
                 ({SCHEMA_VERSION}); upgrade homeostat"
        )));
    }
    for (to, sql) in (1..).zip(MIGRATIONS).skip(usize::try_from(version).unwrap_or(0)) {
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO homeostat_journal (id, schema_version, created_at) VALUES (1, $1, $2)
                 ON CONFLICT (id) DO UPDATE SET schema_version = excluded.schema_version",
            &[&to, &timestamp(Utc::now())],
        )
        .await?;
        tx.commit().await?;
    }
    Ok(())
}

#[async_trait]
impl Store for PgJournal {
    async fn ingest(
        &self,
        message: WebhookMessage,
        received_at: DateTime<Utc>,
        queue_slot: OwnedPermit<Delivery>,
    ) -> Result<Delivery> {
        incidents::ingest(self, message, received_at, queue_slot).await
    }
    async fn mark_processed(&self, through: i64) -> Result<()> {
        incidents::mark_processed(self, through).await
    }
    async fn unprocessed(&self) -> Result<Vec<Delivery>> {
        incidents::unprocessed(self).await
    }
    async fn incidents(&self, query: IncidentQuery) -> Result<IncidentPage> {
        incidents::incidents(self, query).await
    }
    async fn incident(&self, id: i64) -> Result<Option<Incident>> {
        incidents::incident(self, id).await
    }
    async fn record_decision(&self, decision: NewDecision) -> Result<i64> {
        decisions::record_decision(self, decision).await
    }
    async fn record_result(&self, id: i64, result: ActionResult, detail: &str, at: DateTime<Utc>) -> Result<()> {
        decisions::record_result(self, id, result, detail, at).await
    }
    async fn record_outcome(&self, id: i64, outcome: Verification, at: DateTime<Utc>) -> Result<()> {
        decisions::record_outcome(self, id, outcome, at).await
    }
    async fn record_confounded(&self, id: i64, outside_changes: &[String], at: DateTime<Utc>) -> Result<()> {
        decisions::record_confounded(self, id, outside_changes, at).await
    }
    async fn decisions(&self, incident_id: i64) -> Result<Vec<Decision>> {
        decisions::decisions(self, incident_id).await
    }
    async fn history(
        &self,
        target_key: String,
        since: DateTime<Utc>,
        dry_run: Option<DateTime<Utc>>,
    ) -> Result<History> {
        decisions::history(self, target_key, since, dry_run).await
    }
    async fn schedule(&self, id: i64, seen: Option<DateTime<Utc>>, next: Option<DateTime<Utc>>) -> Result<bool> {
        schedule::schedule(self, id, seen, next).await
    }
    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Due>> {
        schedule::due(self, now, limit).await
    }
    async fn next_due(&self) -> Result<Option<DateTime<Utc>>> {
        schedule::next_due(self).await
    }
    async fn firing(&self) -> Result<Vec<Firing>> {
        schedule::firing(self).await
    }
    async fn vanish(&self, ids: Vec<i64>, unseen_since: DateTime<Utc>, at: DateTime<Utc>) -> Result<usize> {
        schedule::vanish(self, ids, unseen_since, at).await
    }
    async fn queue_notifications(
        &self,
        incident_id: i64,
        sinks: Vec<String>,
        event: &str,
        body: &serde_json::Value,
        at: DateTime<Utc>,
    ) -> Result<()> {
        notifications::queue_notifications(self, incident_id, sinks, event, body, at).await
    }
    async fn record_attempt(&self, attempt: Attempt) -> Result<()> {
        notifications::record_attempt(self, attempt).await
    }
    async fn due_notifications(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Notification>> {
        notifications::due_notifications(self, now, limit).await
    }
    async fn next_notification(&self) -> Result<Option<DateTime<Utc>>> {
        notifications::next_notification(self).await
    }
    async fn notifications(&self, incident_id: i64) -> Result<Vec<Notification>> {
        notifications::notifications(self, incident_id).await
    }
    async fn record_audit(&self, entry: AuditEntry) -> Result<()> {
        audit::record_audit(self, entry).await
    }
    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        audit::audit(self, limit).await
    }
    async fn answer(
        &self,
        incident_id: i64,
        approved: bool,
        audit: AuditEntry,
        proposed_after: DateTime<Utc>,
    ) -> Result<Option<i64>> {
        approvals::answer(self, incident_id, approved, audit, proposed_after).await
    }
    async fn approval(&self, proposal_id: i64) -> Result<Option<Answer>> {
        approvals::approval(self, proposal_id).await
    }
    async fn implicate(&self, id: i64, what: String) -> Result<()> {
        schedule::implicate(self, id, what).await
    }
    async fn set_paused(&self, paused: bool) -> Result<()> {
        decisions::set_paused(self, paused).await
    }
    async fn prune(&self, cutoff: DateTime<Utc>) -> Result<Pruned> {
        retention::prune(self, cutoff).await
    }
    async fn paused(&self) -> Result<bool> {
        decisions::paused(self).await
    }
    async fn policy(&self) -> Result<Option<StoredPolicy>> {
        policy::policy(self).await
    }
    async fn policy_revision(&self) -> Result<i64> {
        policy::policy_revision(self).await
    }
    async fn record_learned(&self, learned: Learned) -> Result<Option<i64>> {
        policy::record_learned(self, learned).await
    }
    async fn record_feedback(
        &self,
        event: FeedbackEvent,
        default_coverage: f64,
        bounds: FeedbackConfig,
    ) -> Result<Option<FeedbackStep>> {
        thresholds::record_feedback(self, event, default_coverage, bounds).await
    }
    async fn record_round(&self, rounds: Vec<SpecRound>) -> Result<()> {
        thresholds::record_round(self, rounds).await
    }
    async fn coverages(&self, spec: String) -> Result<HashMap<String, f64>> {
        thresholds::coverages(self, spec).await
    }
    async fn incident_summaries(&self, alertnames: Vec<String>, since: DateTime<Utc>) -> Result<Vec<IncidentSummary>> {
        thresholds::incident_summaries(self, alertnames, since).await
    }
    async fn threshold_state(&self) -> Result<ThresholdState> {
        thresholds::threshold_state(self).await
    }
    async fn save_anomaly(&self, states: Vec<AnomalyState>) -> Result<()> {
        anomaly::save_anomaly(self, states).await
    }
    async fn anomaly_states(&self) -> Result<Vec<AnomalyState>> {
        anomaly::anomaly_states(self).await
    }
    async fn record_known_good(&self, known: KnownGood) -> Result<()> {
        known_good::record_known_good(self, known).await
    }
    async fn known_good(&self, instance: String) -> Result<Option<KnownGood>> {
        known_good::known_good(self, instance).await
    }
    fn leadership(&self) -> Leadership {
        self.lease.leadership.clone()
    }
    fn changes(&self) -> Option<Changes> {
        Some(self.lease.changes.clone())
    }
    async fn step_down(&self) {
        self.lease.release().await;
    }
}
