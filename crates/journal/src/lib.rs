//! The journal: every accepted delivery, the incidents they belong to, the
//! decisions taken on them and what became of those, the learned policy and
//! the adaptive thresholds' state.
//!
//! - [`Store`] (`store.rs`): every read and write the service makes, as a trait; the service
//!   holds a [`Journal`] (`Arc<dyn Store>`) made by [`connect`].
//! - [`SqliteJournal`] (this file): the embedded implementation, SQLite in WAL mode. It
//!   writes only a file it created (its `application_id`), checks its integrity at
//!   start, and one process at a time holds it (`<journal>.lock`).
//! - [`PgJournal`] (`postgres/`): the same tables on PostgreSQL (`journal.url`).
//! - [`decisions`], [`policy`], [`thresholds`]: each table family's records and SQL.
//! - [`learned`]: what the policy learned and why it decided, read from a journal file
//!   (`homeostat policy …`).
//!
//! It plays the part of Alertmanager's notification log: a delivery is
//! committed before the webhook answers 2xx, so a crash or `kill -9` right
//! after the answer loses nothing. The writer hands each committed delivery
//! to the pipeline queue itself, so the pipeline sees deliveries in journal
//! order and one watermark ("processed through delivery N") says what is
//! done; whatever lies beyond it is processed again at start-up.
//!
//! All writes go through one thread that owns the write connection and
//! commits whatever has queued up in one transaction (group commit): during
//! an alert storm many deliveries share one `fsync` instead of each paying
//! for its own. Reads use a second, read-only connection.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};
use prometheus_client::metrics::histogram::Histogram;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};
use serde::Serialize;
use tokio::sync::mpsc::OwnedPermit;
use tokio::sync::{mpsc, oneshot};

use homeostat_core::alert::{is_label_name, Alert, AlertStatus, WebhookMessage};
use homeostat_core::config::{JournalConfig, Synchronous};
use homeostat_core::incident::{transition, EventKind, Incident, Known, Transition};

pub type Result<T, E = JournalError> = std::result::Result<T, E>;

/// The schema this build writes; a newer journal is refused rather than misread.
const SCHEMA_VERSION: i64 = 7;
/// SQLite's `application_id` of a homeostat journal ("hmst"), written when
/// the journal is created: the marker that tells it from anyone else's file.
const APPLICATION_ID: i64 = 0x686d_7374;
/// Most writes grouped into one transaction.
const MAX_GROUP: usize = 256;
/// Writes waiting for the writer thread before callers wait for room.
const WRITE_QUEUE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot open journal {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "journal {} has schema version {found}, newer than this homeostat understands ({SCHEMA_VERSION}); \
         upgrade homeostat or point journal.path at another file",
        path.display()
    )]
    SchemaTooNew { path: PathBuf, found: i64 },
    #[error("journal {} does not exist (journal.path; homeostat serve creates it)", .0.display())]
    Missing(PathBuf),
    #[error(
        "{} is not a homeostat journal: {what}; point journal.path at the journal, or at a new file",
        path.display()
    )]
    Foreign { path: PathBuf, what: String },
    #[error(
        "journal {p} is damaged: {detail}. Stop homeostat, move the file aside (keep it: \
         `sqlite3 {p} .recover` salvages what is readable, for reading) and start homeostat again: \
         it starts a new, empty journal",
        p = path.display()
    )]
    Damaged { path: PathBuf, detail: String },
    #[error(
        "journal {} is in use by another homeostat process{holder}; only one process may write a journal: \
         stop the other one, or give this one its own journal.path",
        path.display()
    )]
    InUse { path: PathBuf, holder: String },
    #[error("cannot lock journal {}: {source}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("journal database {database}: {what}")]
    Database { database: String, what: String },
    #[error("journal database error: {}", postgres_message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("journal holds a value it cannot read back: {0}")]
    Corrupt(String),
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    #[error("journal internal failure: {0}")]
    Internal(String),
    #[error("the journal writer has stopped")]
    Closed,
    /// Only the leader decides and acts, and this process does not lead
    /// (or no longer does): nothing was written.
    #[error("journal database {database}: {what}: this homeostat {why}; another replica acts")]
    NotLeading {
        database: String,
        what: String,
        why: String,
    },
}

/// What PostgreSQL said, where tokio-postgres' own message is only "db error".
fn postgres_message(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => db.to_string(),
        None => error.to_string(),
    }
}

/// One incident transition caused by a delivery, as the pipeline receives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IncidentEvent {
    pub incident_id: i64,
    pub kind: EventKind,
    pub fingerprint: String,
    pub alertname: String,
}

/// A journalled delivery and the transitions it caused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub id: i64,
    pub events: Vec<IncidentEvent>,
}

/// Filters and paging for [`Store::incidents`]. Newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IncidentQuery {
    pub status: Option<AlertStatus>,
    pub alertname: Option<String>,
    /// Label equality matchers; names must be valid Prometheus label names.
    pub labels: Vec<(String, String)>,
    /// Only incidents with an id below this (the previous page's `next_cursor`).
    pub before: Option<i64>,
    pub limit: usize,
}

/// One page of incidents.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IncidentPage {
    pub incidents: Vec<Incident>,
    /// Pass as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<i64>,
}

/// A write for the writer thread, and where to send its result.
struct Request {
    op: Op,
    reply: oneshot::Sender<Result<Written>>,
}

enum Op {
    /// A delivery, and the pipeline queue slot it goes to once committed.
    Ingest(Box<IngestWrite>, OwnedPermit<Delivery>),
    MarkProcessed(i64),
    Decision(decisions::DecisionWrite),
    Threshold(thresholds::ThresholdWrite),
    Policy(policy::PolicyWrite),
    Schedule(schedule::ScheduleWrite),
    Prune(retention::PruneWrite),
    Notification(notifications::NotificationWrite),
    Audit(audit::AuditEntry),
    Answer(approvals::AnswerWrite),
    Anomaly(anomaly::AnomalyWrite),
    KnownGood(known_good::KnownGoodWrite),
}

/// A delivery with every value already encoded as SQLite stores it. The
/// encoding happens on the caller's thread, so the single writer thread
/// spends its time on SQL alone.
struct IngestWrite {
    received_at: String,
    received_at_time: DateTime<Utc>,
    group_labels: String,
    common_labels: String,
    common_annotations: String,
    receiver: String,
    group_key: String,
    status: AlertStatus,
    truncated_alerts: i64,
    external_url: String,
    alerts: Vec<AlertWrite>,
}

struct AlertWrite {
    status: AlertStatus,
    fingerprint: String,
    alertname: String,
    labels: String,
    annotations: String,
    starts_at: String,
    starts_at_time: DateTime<Utc>,
    ends_at: Option<String>,
    generator_url: String,
}

impl IngestWrite {
    fn new(message: WebhookMessage, received_at: DateTime<Utc>) -> IngestWrite {
        let alerts = message
            .alerts
            .into_iter()
            .map(|alert: Alert| AlertWrite {
                status: alert.status,
                alertname: alert.alertname().to_owned(),
                labels: json(&alert.labels),
                annotations: json(&alert.annotations),
                starts_at: timestamp(alert.starts_at),
                starts_at_time: alert.starts_at,
                ends_at: alert.ends_at.map(timestamp),
                fingerprint: alert.fingerprint,
                generator_url: alert.generator_url,
            })
            .collect();
        IngestWrite {
            received_at: timestamp(received_at),
            received_at_time: received_at,
            group_labels: json(&message.group_labels),
            common_labels: json(&message.common_labels),
            common_annotations: json(&message.common_annotations),
            receiver: message.receiver,
            group_key: message.group_key,
            status: message.status,
            truncated_alerts: i64::try_from(message.truncated_alerts).unwrap_or(i64::MAX),
            external_url: message.external_url,
            alerts,
        }
    }
}

enum Written {
    Delivery(Delivery),
    Marked,
    Row(i64),
    Pruned(retention::Pruned),
}

/// A handle to the journal; cheap to clone. The writer thread stops once
/// every handle is dropped, after checkpointing the WAL.
#[derive(Clone)]
pub struct SqliteJournal {
    writes: mpsc::Sender<Request>,
    reader: Arc<Mutex<Connection>>,
}

/// The SQLite journal's writer thread (none on PostgreSQL);
/// [`JournalWriter::join`] waits for it to close the database.
pub struct JournalWriter(Option<JoinHandle<()>>);

impl JournalWriter {
    pub fn join(self) {
        if self.0.is_some_and(|thread| thread.join().is_err()) {
            tracing::error!("The journal writer thread panicked.");
        }
    }
}

/// Histograms the writer records into.
#[derive(Clone, Default)]
pub struct JournalMetrics {
    pub commit_seconds: Option<Histogram>,
    pub batch_size: Option<Histogram>,
}

impl SqliteJournal {
    /// Opens (creating if needed) the journal and starts its writer thread.
    pub fn open(config: &JournalConfig, metrics: JournalMetrics) -> Result<(SqliteJournal, JournalWriter)> {
        let path = &config.path;
        let open_err = |source| JournalError::Open {
            path: path.clone(),
            source,
        };
        let writer = Connection::open(path).map_err(open_err)?;
        writer
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        // Someone else's database is refused before a single write, WAL
        // mode and the lock file included: it is left as it was.
        identify(&writer, path)?;
        let lock = lock(path)?;
        upgrade(&writer, path)?;
        configure(&writer, config.synchronous).map_err(open_err)?;
        let interrupted = decisions::reconcile(&writer)?;
        if interrupted > 0 {
            tracing::warn!(
                decisions = interrupted,
                "Actions were under way when homeostat last stopped: unconfirmed ones marked interrupted (not repeated), unverified ones timed out."
            );
        }
        let reader =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(open_err)?;
        reader
            .busy_timeout(std::time::Duration::from_secs(5))
            .and_then(|()| temp_in_memory(&reader))
            .map_err(open_err)?;

        let (writes, rx) = mpsc::channel(WRITE_QUEUE);
        let thread = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || {
                run_writer(writer, rx, metrics);
                // Released only once the database is closed.
                drop(lock);
            })
            .map_err(|e| JournalError::Internal(format!("cannot start the journal writer thread: {e}")))?;
        let journal = SqliteJournal {
            writes,
            reader: Arc::new(Mutex::new(reader)),
        };
        Ok((journal, JournalWriter(Some(thread))))
    }

    /// Journals a delivery and applies it to the incidents. Returns once it
    /// is committed to disk; by then it is in the pipeline queue, through
    /// `queue_slot` (reserved beforehand, so a full queue refuses the
    /// delivery instead of journalling what cannot be queued).
    pub async fn ingest(
        &self,
        message: WebhookMessage,
        received_at: DateTime<Utc>,
        queue_slot: OwnedPermit<Delivery>,
    ) -> Result<Delivery> {
        let op = Op::Ingest(Box::new(IngestWrite::new(message, received_at)), queue_slot);
        match self.write(op).await? {
            Written::Delivery(delivery) => Ok(delivery),
            _ => Err(JournalError::Internal(
                "the writer answered an ingest with a mark".into(),
            )),
        }
    }

    /// Records that the pipeline has processed every delivery up to and including `through`.
    pub async fn mark_processed(&self, through: i64) -> Result<()> {
        self.write(Op::MarkProcessed(through)).await.map(drop)
    }

    async fn write(&self, op: Op) -> Result<Written> {
        let (reply, rx) = oneshot::channel();
        let request = Request { op, reply };
        self.writes.send(request).await.map_err(|_| JournalError::Closed)?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// Deliveries journalled beyond the processed watermark (a crash came
    /// between the two), oldest first.
    pub async fn unprocessed(&self) -> Result<Vec<Delivery>> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT id, events FROM deliveries WHERE id > (SELECT processed_through FROM pipeline) ORDER BY id",
            )?;
            let mut incident = conn.prepare("SELECT fingerprint, alertname FROM incidents WHERE id = ?1")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
            let mut deliveries = Vec::new();
            for row in rows {
                let (id, events) = row?;
                let events = decode_events(id, &events)?
                    .into_iter()
                    .map(|(incident_id, kind)| {
                        let (fingerprint, alertname) =
                            incident.query_row([incident_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
                        Ok(IncidentEvent {
                            incident_id,
                            kind,
                            fingerprint,
                            alertname,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                deliveries.push(Delivery { id, events });
            }
            Ok(deliveries)
        })
        .await
    }

    /// One page of incidents matching `query`, newest first.
    pub async fn incidents(&self, query: IncidentQuery) -> Result<IncidentPage> {
        self.read(move |conn| {
            let mut sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE 1 = 1");
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            if let Some(status) = query.status {
                sql.push_str(" AND status = ?");
                args.push(status.as_str().to_owned().into());
            }
            if let Some(alertname) = query.alertname {
                sql.push_str(" AND alertname = ?");
                args.push(alertname.into());
            }
            for (name, value) in query.labels {
                if !is_label_name(&name) {
                    return Err(JournalError::InvalidQuery(format!("invalid label name {name:?}")));
                }
                sql.push_str(" AND json_extract(labels, ?) = ?");
                args.push(format!("$.\"{name}\"").into());
                args.push(value.into());
            }
            if let Some(before) = query.before {
                sql.push_str(" AND id < ?");
                args.push(before.into());
            }
            sql.push_str(" ORDER BY id DESC LIMIT ?");
            let limit = query.limit.max(1);
            args.push(i64::try_from(limit + 1).unwrap_or(i64::MAX).into());
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut incidents = stmt
                .query_map(rusqlite::params_from_iter(args), |row| Ok(read_incident(row)))?
                .collect::<rusqlite::Result<Vec<_>>>()?
                .into_iter()
                .collect::<Result<Vec<_>>>()?;
            let next_cursor = if incidents.len() > limit {
                incidents.truncate(limit);
                incidents.last().map(|i| i.id)
            } else {
                None
            };
            Ok(IncidentPage { incidents, next_cursor })
        })
        .await
    }

    /// One incident by id.
    pub async fn incident(&self, id: i64) -> Result<Option<Incident>> {
        self.read(move |conn| {
            let sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = ?");
            conn.prepare_cached(&sql)?
                .query_row([id], |row| Ok(read_incident(row)))
                .optional()?
                .transpose()
        })
        .await
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let reader = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&conn)
        })
        .await
        .map_err(|e| JournalError::Internal(format!("journal reader task failed: {e}")))?
    }
}

fn configure(conn: &Connection, synchronous: Synchronous) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(mode, "SQLite refused WAL mode; the journal runs in {mode} mode.");
    }
    let synchronous = match synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    temp_in_memory(conn)
}

/// Sorts and statement journals in memory: the container image has no
/// writable temporary directory (a read-only root file system).
fn temp_in_memory(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "temp_store", "MEMORY")
}

/// Opens (creating if needed) the SQLite journal the configuration names
/// and starts its writer; the handle is shared by everything that records.
pub fn open(config: &JournalConfig, metrics: JournalMetrics) -> Result<(Journal, JournalWriter)> {
    let (journal, writer) = SqliteJournal::open(config, metrics)?;
    Ok((Arc::new(journal), writer))
}

/// Opens the journal the configuration names: the PostgreSQL database of
/// `journal.url` (with `password`, read from `journal.password`), else the
/// SQLite file of `journal.path`.
pub async fn connect(
    config: &JournalConfig,
    password: Option<&str>,
    metrics: JournalMetrics,
) -> Result<(Journal, JournalWriter)> {
    match config.url {
        Some(_) => Ok((Arc::new(PgJournal::open(config, password).await?), JournalWriter(None))),
        None => open(config, metrics),
    }
}

/// The journal at `path` opened read-only, for commands that read it beside
/// a running homeostat, and its schema version; an error when it is missing,
/// not homeostat's, or newer than this homeostat understands.
pub(crate) fn open_read_only(path: &Path) -> Result<(Connection, i64)> {
    let open_err = |source| JournalError::Open {
        path: path.to_owned(),
        source,
    };
    if !path.try_exists().unwrap_or(true) {
        return Err(JournalError::Missing(path.to_owned()));
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(open_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(open_err)?;
    let version = identify(&conn, path)?;
    if version == 0 {
        // `serve` sets a version when it creates the journal.
        return Err(JournalError::Foreign {
            path: path.to_owned(),
            what: "it has no homeostat schema (version 0)".into(),
        });
    }
    Ok((conn, version))
}

/// An SQLite error while reading what the file at `path` is: a file SQLite
/// cannot read as a database is not a journal; a malformed one is damaged.
fn unreadable(path: &Path, error: rusqlite::Error) -> JournalError {
    match error.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => JournalError::Foreign {
            path: path.to_owned(),
            what: "it is not an SQLite database".into(),
        },
        Some(rusqlite::ErrorCode::DatabaseCorrupt) => JournalError::Damaged {
            path: path.to_owned(),
            detail: error.to_string(),
        },
        _ => JournalError::Open {
            path: path.to_owned(),
            source: error,
        },
    }
}

/// What the database at `path` is, read without writing to it: new and
/// empty (version 0), or a homeostat journal at a schema version this build
/// understands. Anything else is refused, so homeostat never adds its tables
/// to another application's database.
fn identify(conn: &Connection, path: &Path) -> Result<i64> {
    let read = |sql: &str| {
        conn.query_row(sql, [], |r| r.get::<_, i64>(0))
            .map_err(|e| unreadable(path, e))
    };
    let application_id = read("PRAGMA application_id")?;
    let version = read("PRAGMA user_version")?;
    let foreign = |what: String| JournalError::Foreign {
        path: path.to_owned(),
        what,
    };
    if application_id == APPLICATION_ID {
        if version > SCHEMA_VERSION {
            return Err(JournalError::SchemaTooNew {
                path: path.to_owned(),
                found: version,
            });
        }
        return Ok(version);
    }
    if application_id != 0 {
        return Err(foreign(format!(
            "it belongs to another application (SQLite application_id {application_id:#x})"
        )));
    }
    let tables = table_names(conn).map_err(|e| unreadable(path, e))?;
    if version == 0 && tables.is_empty() {
        return Ok(0);
    }
    // A journal from before the marker: homeostat's tables at its version, and nothing else.
    if (1..=SCHEMA_VERSION).contains(&version) && tables == tables_at(version)? {
        return Ok(version);
    }
    let shown = tables.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    let more = if tables.len() > 5 { ", …" } else { "" };
    Err(foreign(if version == 0 {
        format!("it already holds other tables ({shown}{more})")
    } else {
        format!("it has user_version {version} but not homeostat's tables (it holds {shown}{more})")
    }))
}

/// The database's own tables, by name.
fn table_names(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
    )?
    .query_map([], |r| r.get(0))?
    .collect()
}

/// The tables of a homeostat journal at schema `version`, from the migrations themselves.
fn tables_at(version: i64) -> Result<Vec<String>> {
    let conn = Connection::open_in_memory()?;
    migrate(&conn, 0, version)?;
    Ok(table_names(&conn)?)
}

/// Refuses a journal whose pages SQLite cannot read back (a truncated copy,
/// a failing disk), before anything is accepted into it.
fn check_integrity(conn: &Connection, path: &Path) -> Result<()> {
    let problems = conn
        .prepare("PRAGMA quick_check(5)")
        .and_then(|mut stmt| {
            stmt.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(|e| unreadable(path, e))?;
    if problems == ["ok"] {
        return Ok(());
    }
    Err(JournalError::Damaged {
        path: path.to_owned(),
        detail: format!("the integrity check found: {}", problems.join("; ")),
    })
}

/// The exclusive right to write the journal at `path`, held for as long as
/// the returned file is open: an `flock` on `<journal>.lock`, which the
/// kernel also releases when the process dies, so a crash never leaves the
/// journal locked.
fn lock(path: &Path) -> Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let failed = |source| JournalError::Lock {
        path: lock_path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(failed)?;
    match file.try_lock() {
        Ok(()) => {
            // Who holds it, for the error the next one gets.
            file.set_len(0).map_err(failed)?;
            file.rewind().map_err(failed)?;
            write!(file, "{}", std::process::id()).map_err(failed)?;
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let holder = match pid.trim() {
                "" => String::new(),
                pid => format!(" (pid {pid}, which holds {})", lock_path.display()),
            };
            Err(JournalError::InUse {
                path: path.to_owned(),
                holder,
            })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(failed(e)),
    }
}

/// The SQL of each schema version, oldest first: version N is the first N applied in turn.
fn migrations() -> [String; SCHEMA_VERSION as usize] {
    [
        format!(
            "
             CREATE TABLE deliveries (
                 id INTEGER PRIMARY KEY,
                 received_at TEXT NOT NULL,
                 receiver TEXT NOT NULL,
                 group_key TEXT NOT NULL,
                 status TEXT NOT NULL,
                 alerts INTEGER NOT NULL,
                 truncated_alerts INTEGER NOT NULL,
                 external_url TEXT NOT NULL,
                 group_labels TEXT NOT NULL,
                 common_labels TEXT NOT NULL,
                 common_annotations TEXT NOT NULL,
                 -- The incident transitions it caused: JSON [[incident_id, kind], …].
                 events TEXT NOT NULL
             );
             -- Deliveries up to this id have been processed by the pipeline.
             CREATE TABLE pipeline (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 processed_through INTEGER NOT NULL
             );
             INSERT INTO pipeline (id, processed_through) VALUES (1, 0);
             CREATE TABLE incidents (
                 id INTEGER PRIMARY KEY,
                 fingerprint TEXT NOT NULL,
                 alertname TEXT NOT NULL,
                 status TEXT NOT NULL CHECK (status IN ('firing', 'resolved')),
                 labels TEXT NOT NULL,
                 annotations TEXT NOT NULL,
                 starts_at TEXT NOT NULL,
                 ends_at TEXT,
                 generator_url TEXT NOT NULL,
                 first_seen TEXT NOT NULL,
                 last_seen TEXT NOT NULL,
                 resolved_at TEXT,
                 deliveries INTEGER NOT NULL
             );
             CREATE UNIQUE INDEX incidents_one_open ON incidents (fingerprint) WHERE status = 'firing';
             CREATE INDEX incidents_episode ON incidents (fingerprint, starts_at);
             CREATE INDEX incidents_status ON incidents (status, id);
             CREATE INDEX incidents_alertname ON incidents (alertname, id);
             {decisions}",
            decisions = decisions::SCHEMA
        ),
        thresholds::SCHEMA.to_owned(),
        policy::SCHEMA.to_owned(),
        schedule::SCHEMA.to_owned(),
        [notifications::SCHEMA, audit::SCHEMA, approvals::SCHEMA].join("\n"),
        anomaly::SCHEMA.to_owned(),
        known_good::SCHEMA.to_owned(),
    ]
}

/// Brings the journal at `path` to this build's schema once it has made
/// sure the file is homeostat's (read again here: whoever wrote it last may
/// have moved it on) and intact, and marks it as homeostat's.
pub(crate) fn upgrade(conn: &Connection, path: &Path) -> Result<()> {
    let version = identify(conn, path)?;
    check_integrity(conn, path)?;
    migrate(conn, version, SCHEMA_VERSION)?;
    conn.pragma_update(None, "application_id", APPLICATION_ID)?;
    Ok(())
}

/// Brings the schema from version `from` to `to`, one committed step per version.
fn migrate(conn: &Connection, from: i64, to: i64) -> rusqlite::Result<()> {
    for (version, sql) in (1..=to).zip(migrations()).skip(usize::try_from(from).unwrap_or(0)) {
        conn.execute_batch(&format!("BEGIN; {sql} PRAGMA user_version = {version}; COMMIT;"))?;
    }
    Ok(())
}

/// A delivery's transitions as `deliveries.events` stores them, compactly:
/// `[[incident_id, kind], …]`; the rest is in `incidents`.
fn encode_events(events: &[IncidentEvent]) -> Result<String> {
    let compact: Vec<(i64, EventKind)> = events.iter().map(|e| (e.incident_id, e.kind)).collect();
    serde_json::to_string(&compact).map_err(|e| JournalError::Internal(format!("cannot encode events: {e}")))
}

/// Delivery `id`'s stored transitions, as [`encode_events`] wrote them.
fn decode_events(id: i64, text: &str) -> Result<Vec<(i64, EventKind)>> {
    serde_json::from_str(text).map_err(|e| JournalError::Corrupt(format!("delivery {id} has unreadable events: {e}")))
}

/// The writer's memory of which incident is open for a fingerprint, so a
/// repeated delivery (most deliveries, during a storm) needs no lookup. It
/// is filled from the database on a miss and emptied whenever a transaction
/// rolls back, so it never holds what the database does not.
#[derive(Default)]
struct OpenIncidents(std::collections::HashMap<String, (i64, DateTime<Utc>)>);

fn run_writer(mut conn: Connection, mut rx: mpsc::Receiver<Request>, metrics: JournalMetrics) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    let mut open = OpenIncidents::default();
    while rx.blocking_recv_many(&mut group, MAX_GROUP) > 0 {
        let started = Instant::now();
        let size = group.len();
        commit_group(&mut conn, &mut open, &mut group);
        if let Some(h) = &metrics.commit_seconds {
            h.observe(started.elapsed().as_secs_f64());
        }
        if let Some(h) = &metrics.batch_size {
            h.observe(size as f64);
        }
    }
    // Every handle is gone: fold the WAL back into the database file.
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
        tracing::warn!(error = %e, "Journal checkpoint at shutdown failed; the WAL is replayed on next open.");
    }
}

/// Commits a group of writes in one transaction. Should any of them fail,
/// the group is rolled back and each write is retried in a transaction of
/// its own, so that one failing write fails alone.
fn commit_group(conn: &mut Connection, open: &mut OpenIncidents, group: &mut Vec<Request>) {
    let together = (|| -> Result<Vec<Written>> {
        let tx = conn.transaction()?;
        let written = group
            .iter()
            .map(|r| apply_op(&tx, open, &r.op))
            .collect::<Result<Vec<_>>>()?;
        tx.commit()?;
        Ok(written)
    })();
    match together {
        Ok(written) => {
            for (request, result) in group.drain(..).zip(written) {
                request.committed(Ok(result));
            }
        }
        Err(err) => {
            open.0.clear();
            if group.len() == 1 {
                return group.remove(0).committed(Err(err));
            }
            for request in group.drain(..) {
                let alone = (|| -> Result<Written> {
                    let tx = conn.transaction()?;
                    let written = apply_op(&tx, open, &request.op)?;
                    tx.commit()?;
                    Ok(written)
                })();
                if alone.is_err() {
                    open.0.clear();
                }
                request.committed(alone);
            }
        }
    }
}

impl Request {
    /// After the commit: queue a delivery for the pipeline, then answer the caller.
    fn committed(self, result: Result<Written>) {
        if let (Op::Ingest(_, slot), Ok(Written::Delivery(delivery))) = (self.op, &result) {
            slot.send(delivery.clone());
        }
        // A caller that gave up waiting is not an error here.
        let _ = self.reply.send(result);
    }
}

fn apply_op(tx: &Transaction<'_>, open: &mut OpenIncidents, op: &Op) -> Result<Written> {
    match op {
        Op::Ingest(write, _) => ingest(tx, open, write).map(Written::Delivery),
        Op::MarkProcessed(through) => {
            tx.prepare_cached("UPDATE pipeline SET processed_through = max(processed_through, ?1)")?
                .execute([through])?;
            Ok(Written::Marked)
        }
        Op::Decision(write) => decisions::apply(tx, write).map(Written::Row),
        Op::Threshold(write) => thresholds::apply(tx, write).map(Written::Row),
        Op::Policy(write) => policy::apply(tx, write).map(Written::Row),
        Op::Schedule(write) => schedule::apply(tx, open, write).map(Written::Row),
        Op::Prune(write) => retention::apply(tx, write).map(Written::Pruned),
        Op::Notification(write) => notifications::apply(tx, write).map(Written::Row),
        Op::Audit(entry) => audit::apply(tx, entry).map(Written::Row),
        Op::Anomaly(write) => anomaly::apply(tx, write).map(Written::Row),
        Op::KnownGood(write) => known_good::apply(tx, write).map(Written::Row),
        Op::Answer(write) => approvals::apply(tx, write).map(|proposal| Written::Row(proposal.unwrap_or(0))),
    }
}

fn ingest(tx: &Transaction<'_>, open: &mut OpenIncidents, delivery: &IngestWrite) -> Result<Delivery> {
    let mut events = Vec::with_capacity(delivery.alerts.len());
    for alert in &delivery.alerts {
        let step = transition(
            alert.status,
            alert.starts_at_time,
            delivery.received_at_time,
            known(tx, open, alert)?,
        );
        let incident_id = apply(tx, alert, step, &delivery.received_at)?;
        match step {
            Transition::Open => {
                open.0
                    .insert(alert.fingerprint.clone(), (incident_id, alert.starts_at_time));
            }
            Transition::Resolve(_) => {
                open.0.remove(&alert.fingerprint);
            }
            Transition::Repeat(_) | Transition::OpenResolved | Transition::Stale(_) => {}
        }
        events.push(IncidentEvent {
            incident_id,
            kind: step.event_kind(),
            fingerprint: alert.fingerprint.clone(),
            alertname: alert.alertname.clone(),
        });
    }
    let compact = encode_events(&events)?;
    tx.prepare_cached(
        "INSERT INTO deliveries (received_at, receiver, group_key, status, alerts, truncated_alerts, external_url,
                                 group_labels, common_labels, common_annotations, events)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        delivery.received_at,
        delivery.receiver,
        delivery.group_key,
        delivery.status.as_str(),
        delivery.alerts.len() as i64,
        delivery.truncated_alerts,
        delivery.external_url,
        delivery.group_labels,
        delivery.common_labels,
        delivery.common_annotations,
        compact,
    ])?;
    Ok(Delivery {
        id: tx.last_insert_rowid(),
        events,
    })
}

// The statements on the ingest path avoid `ORDER BY` and aggregates: with a
// bound parameter in their WHERE clause, SQLite (built with STAT4) prepares
// those again on every execution, which once cost most of the writer's time.
fn known(tx: &Transaction<'_>, open: &mut OpenIncidents, alert: &AlertWrite) -> Result<Known> {
    let mut known = Known::default();
    if let Some(&found) = open.0.get(&alert.fingerprint) {
        known.open = Some(found);
    } else {
        let found: Option<(i64, String)> = tx
            .prepare_cached("SELECT id, starts_at FROM incidents WHERE fingerprint = ?1 AND status = 'firing'")?
            .query_row([&alert.fingerprint], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((id, starts_at)) = found {
            let entry = (id, parse_time(&starts_at)?);
            open.0.insert(alert.fingerprint.clone(), entry);
            known.open = Some(entry);
        }
    }
    // The episode matters when nothing is open, or for a resolution of an
    // episode older than the open one; not on the hot path of repeats.
    let older = |(_, open_starts_at): (i64, DateTime<Utc>)| alert.starts_at_time < open_starts_at;
    if known
        .open
        .is_none_or(|o| alert.status == AlertStatus::Resolved && older(o))
    {
        let mut episode = tx.prepare_cached(
            "SELECT id, resolved_at FROM incidents WHERE fingerprint = ?1 AND starts_at = ?2 AND status = 'resolved'",
        )?;
        let rows = episode.query_map(params![alert.fingerprint, alert.starts_at], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?))
        })?;
        for row in rows {
            let (id, resolved_at) = row?;
            if known.resolved_episode.is_none_or(|(best, _)| id > best) {
                let resolved_at = resolved_at.as_deref().map(parse_time).transpose()?.unwrap_or_default();
                known.resolved_episode = Some((id, resolved_at));
            }
        }
    }
    Ok(known)
}

/// Writes one transition; returns the incident's id.
fn apply(tx: &Transaction<'_>, alert: &AlertWrite, step: Transition, now: &str) -> Result<i64> {
    match step {
        Transition::Open | Transition::OpenResolved => {
            let resolved = step == Transition::OpenResolved;
            tx.prepare_cached(
                "INSERT INTO incidents (fingerprint, alertname, status, labels, annotations, starts_at, ends_at,
                                        generator_url, first_seen, last_seen, resolved_at, deliveries, next_check)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, 1, ?11)",
            )?
            .execute(params![
                alert.fingerprint,
                alert.alertname,
                if resolved { "resolved" } else { "firing" },
                alert.labels,
                alert.annotations,
                alert.starts_at,
                alert.ends_at,
                alert.generator_url,
                now,
                resolved.then_some(now),
                (!resolved).then_some(now),
            ])?;
            Ok(tx.last_insert_rowid())
        }
        // The labels cannot have changed: the fingerprint is their hash. A
        // repeat wakes the reconciler for the incident, as the first did.
        Transition::Repeat(id) => {
            tx.prepare_cached(
                "UPDATE incidents SET annotations = ?2, generator_url = ?3, last_seen = ?4, deliveries = deliveries + 1,
                                      next_check = ?4
                 WHERE id = ?1",
            )?
            .execute(params![id, alert.annotations, alert.generator_url, now])?;
            Ok(id)
        }
        Transition::Resolve(id) => {
            tx.prepare_cached(
                "UPDATE incidents SET status = 'resolved', ends_at = ?2, resolved_at = ?3, last_seen = ?3,
                                      deliveries = deliveries + 1, next_check = NULL
                 WHERE id = ?1",
            )?
            .execute(params![id, alert.ends_at, now])?;
            Ok(id)
        }
        Transition::Stale(id) => {
            tx.prepare_cached("UPDATE incidents SET last_seen = ?2, deliveries = deliveries + 1 WHERE id = ?1")?
                .execute(params![id, now])?;
            Ok(id)
        }
    }
}

const INCIDENT_COLUMNS: &str = "id, fingerprint, alertname, status, labels, annotations, starts_at, ends_at, \
                                generator_url, first_seen, last_seen, resolved_at, deliveries, \
                                next_check, vanished, implicated, \
                                (SELECT json_object('id', d.id, 'action', d.action, 'verdict', d.verdict, \
                                                    'result', d.result, 'outcome', d.outcome) \
                                 FROM decisions d WHERE d.incident_id = incidents.id ORDER BY d.id DESC LIMIT 1)";

/// A result row of either database, read by column index, so that each
/// record is decoded by one function whichever database holds it.
pub(crate) trait Columns {
    fn column<T: Column>(&self, index: usize) -> Result<T>;

    /// A column holding a timestamp, or NULL.
    fn time(&self, index: usize) -> Result<Option<DateTime<Utc>>> {
        self.column::<Option<String>>(index)?
            .as_deref()
            .map(parse_time)
            .transpose()
    }
}

/// A value both databases can hand back.
pub(crate) trait Column: rusqlite::types::FromSql + for<'a> tokio_postgres::types::FromSql<'a> {}

impl<T: rusqlite::types::FromSql + for<'a> tokio_postgres::types::FromSql<'a>> Column for T {}

impl Columns for rusqlite::Row<'_> {
    fn column<T: Column>(&self, index: usize) -> Result<T> {
        Ok(self.get(index)?)
    }
}

impl Columns for tokio_postgres::Row {
    fn column<T: Column>(&self, index: usize) -> Result<T> {
        Ok(self.try_get(index)?)
    }
}

/// Reads a row of [`INCIDENT_COLUMNS`] (either database's).
fn read_incident(row: &impl Columns) -> Result<Incident> {
    let status = match row.column::<String>(3)?.as_str() {
        "firing" => AlertStatus::Firing,
        "resolved" => AlertStatus::Resolved,
        other => return Err(JournalError::Corrupt(format!("unknown incident status {other:?}"))),
    };
    let required = |index: usize| parse_time(&row.column::<String>(index)?);
    let last_decision: Option<String> = row.column(16)?;
    Ok(Incident {
        id: row.column(0)?,
        fingerprint: row.column(1)?,
        alertname: row.column(2)?,
        status,
        labels: parse_json(&row.column::<String>(4)?)?,
        annotations: parse_json(&row.column::<String>(5)?)?,
        starts_at: required(6)?,
        ends_at: row.time(7)?,
        generator_url: row.column(8)?,
        first_seen: required(9)?,
        last_seen: required(10)?,
        resolved_at: row.time(11)?,
        deliveries: row.column(12)?,
        next_check: row.time(13)?,
        vanished: row.column(14)?,
        implicated: row.column(15)?,
        last_decision: last_decision
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| JournalError::Corrupt(format!("last decision: {e}")))?,
    })
}

/// Timestamps are stored as fixed-width RFC 3339 UTC text, so text order is time order.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_time(text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| JournalError::Corrupt(format!("bad timestamp {text:?}: {e}")))
}

fn json(labels: &homeostat_core::alert::LabelSet) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".to_owned())
}

fn parse_json(text: &str) -> Result<homeostat_core::alert::LabelSet> {
    serde_json::from_str(text).map_err(|e| JournalError::Corrupt(format!("bad label set {text:?}: {e}")))
}

pub mod leadership;
mod store;

pub mod anomaly;
pub mod approvals;
pub mod audit;
pub mod known_good;

pub use store::{Journal, Store};

pub mod decisions;
pub mod learned;
pub mod notifications;
pub mod policy;
pub mod retention;
pub mod schedule;
pub mod thresholds;

mod postgres;
pub use postgres::PgJournal;

#[cfg(any(test, feature = "test-postgres"))]
pub mod pg_server;
#[cfg(test)]
mod tests;
