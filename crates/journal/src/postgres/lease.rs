//! The leader's lease on PostgreSQL (see [`crate::leadership`]).
//!
//! One row, `leader`, names the holder, its term (the fencing token) and
//! when the lease expires, by the database's clock. Each homeostat runs one
//! task on a session of its own:
//! - a follower tries to take the lease every fifth of `journal.lease`, and
//!   at once when the leader says it released it; it can only once the
//!   lease has expired (or was released). Taking it starts a new term and,
//!   in the same transaction, settles what the last leader left under way:
//!   actions without a result are marked interrupted (never repeated; the
//!   reconciler escalates them), executed ones without an outcome timed out;
//! - the leader renews it every third of `journal.lease`. Should a renewal
//!   find another term, it follows at once; should renewals fail or hang
//!   (the database unreachable), it stops acting when the lease may have
//!   run out, by its own monotonic clock, counted from before the last
//!   renewal it saw succeed: earlier than the database lets anyone take over;
//! - on a clean stop the leader releases the lease and says so.
//!
//! The session also listens on channel `homeostat`, where every replica
//! says what it committed: something the leader should look at (a
//! delivery, an answer), a pause or resume, a released lease. The leader's
//! reconciler is woken at once, not at its next period, and every replica
//! takes the pause switch from the journal.
//!
//! It holds, too, a shared advisory lock on the key with which homeostat
//! before leader election kept a journal to one writer (exclusively): a
//! replica takes the lease only once no such homeostat runs on the database.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;
use tokio_postgres::{AsyncMessage, Client, NoTls, Statement};

use crate::leadership::{Changes, Elected, Leadership, Term};
use crate::{JournalError, Result};

/// The channel of `NOTIFY`.
pub(super) const CHANNEL: &str = "homeostat";
/// The payload of a pause or resume (anything else: something to look at).
pub(super) const PAUSED: &str = "paused";
/// The payload of a released lease.
const RELEASED: &str = "released";
/// The advisory lock key of homeostat's single writer before leader election.
const SINGLE_WRITER_LOCK: i64 = 0x686d_7374_0003;

/// Takes the lease when it has expired; the new term, if taken.
const TAKE: &str = "INSERT INTO leader (id, holder, term, acquired_at, expires_at)
     VALUES (1, $1, 1, clock_timestamp(), clock_timestamp() + $2::float8 * interval '1 second')
     ON CONFLICT (id) DO UPDATE
        SET holder = excluded.holder, term = leader.term + 1,
            acquired_at = excluded.acquired_at, expires_at = excluded.expires_at
        WHERE leader.expires_at <= clock_timestamp()
     RETURNING term";
/// Extends the lease while the term is this process'.
const RENEW: &str = "UPDATE leader SET expires_at = clock_timestamp() + $2::float8 * interval '1 second'
     WHERE id = 1 AND term = $1 RETURNING term";
/// Lets another take over at once.
const RELEASE: &str = "UPDATE leader SET expires_at = clock_timestamp() WHERE id = 1 AND term = $1";
/// Who holds the lease, for messages.
const HOLDER: &str = "SELECT holder, term, expires_at > clock_timestamp() FROM leader WHERE id = 1";
/// Whether another holds the lease now: a follower's look before it tries
/// to take it (one round trip, not a transaction's three).
const HELD: &str = "SELECT expires_at > clock_timestamp() FROM leader WHERE id = 1";

/// The lease's session and its statements, prepared once.
struct Session {
    client: Client,
    held: Statement,
    take: Statement,
    renew: Statement,
    /// Whether it holds [`SINGLE_WRITER_LOCK`] (shared).
    no_single_writer: bool,
}

/// The process' side of the lease: its leadership, the stop of its task,
/// and what other replicas say.
pub(super) struct Lease {
    pub(super) leadership: Leadership,
    pub(super) changes: Changes,
    /// Asks the task to release the lease and stop; it answers when done.
    release: std::sync::Mutex<Option<oneshot::Sender<oneshot::Sender<()>>>>,
}

/// What the lease task needs.
struct Task {
    pg: tokio_postgres::Config,
    database: Arc<str>,
    holder: String,
    ttl: Duration,
    elected: Elected,
    changes: Changes,
    /// A leader released the lease: try to take it now.
    released: Arc<Notify>,
}

impl Lease {
    /// Connects the lease's session, tries once to take the lease (so a
    /// homeostat alone on its database leads as soon as it is open), and
    /// starts the task that keeps trying or renewing.
    pub(super) async fn start(pg: tokio_postgres::Config, database: Arc<str>, ttl: Duration) -> Result<Lease> {
        let (elected, leadership) = Leadership::elected();
        let changes = Changes::default();
        let task = Task {
            pg,
            database,
            holder: holder(),
            ttl,
            elected,
            changes: changes.clone(),
            released: Arc::new(Notify::new()),
        };
        // An unreachable database fails the start; a first try that fails is tried again.
        let mut session = task.connect().await?;
        task.try_step(&mut session).await;
        if task.elected.term() == Term::Following {
            task.say_who_leads(&session.client).await;
        }
        let (release, released) = oneshot::channel();
        tokio::spawn(task.run(Some(session), released));
        Ok(Lease {
            leadership,
            changes,
            release: std::sync::Mutex::new(Some(release)),
        })
    }

    /// Releases the lease, if this process holds it, so that another
    /// replica takes over at once; the task stops. For a clean stop, once
    /// nothing acts any more.
    pub(super) async fn release(&self) {
        let Some(release) = self.release.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let (done, released) = oneshot::channel();
        if release.send(done).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), released).await;
        }
    }
}

/// Who this process is, as the lease row names it.
fn holder() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into());
    format!("{host} pid {}", std::process::id())
}

impl Task {
    /// Every fifth of the lease a follower tries to take it; every third a leader renews it.
    fn period(&self) -> Duration {
        match self.elected.term() {
            Term::Leading(_) => self.ttl / 3,
            Term::Following => self.ttl / 5,
        }
    }

    async fn run(self, mut session: Option<Session>, mut released: oneshot::Receiver<oneshot::Sender<()>>) {
        loop {
            // A leader whose renewals hang stops acting when its lease may run out, whatever they do.
            let until = self.elected.until().filter(|_| self.elected.term() != Term::Following);
            tokio::select! {
                release = &mut released => {
                    if let (Ok(done), Term::Leading(term)) = (release, self.elected.term()) {
                        self.elected.follow();
                        if let Some(session) = &session {
                            let released = session.client.execute(RELEASE, &[&term]).await;
                            let said = session.client.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &RELEASED]).await;
                            match released.and(said) {
                                Ok(_) => tracing::info!(term, "Released the lease: another replica may lead at once."),
                                Err(e) => tracing::warn!(term, error = %e, "Could not release the lease; it expires by itself."),
                            }
                        }
                        let _ = done.send(());
                    }
                    // Dropped without a release (the journal is gone): the lease expires by itself.
                    self.elected.follow();
                    return;
                }
                () = tokio::time::sleep(self.period()) => {}
                () = self.released.notified(), if self.elected.term() == Term::Following => {}
                () = tokio::time::sleep_until(until.unwrap_or_else(Instant::now)), if until.is_some() => {
                    self.lapsed("its renewals did not answer");
                    continue;
                }
            }
            if session.as_ref().is_none_or(|s| s.client.is_closed()) {
                session = match tokio::time::timeout(self.ttl / 3, self.connect()).await {
                    Ok(Ok(session)) => Some(session),
                    Ok(Err(e)) => {
                        self.failed(&e);
                        continue;
                    }
                    Err(_) => {
                        self.failed(&self.no_answer());
                        continue;
                    }
                };
            }
            if let Some(open) = session.as_mut() {
                if !self.try_step(open).await {
                    // A session that hung may never answer again: a new one next time.
                    session = None;
                }
            }
        }
    }

    /// One [`Task::step`], bounded by a third of the lease; whether the session may be kept.
    async fn try_step(&self, session: &mut Session) -> bool {
        match tokio::time::timeout(self.ttl / 3, self.step(session)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                self.failed(&e);
                true
            }
            Err(_) => {
                self.failed(&self.no_answer());
                false
            }
        }
    }

    /// The database did not answer the lease's session within a third of the lease.
    fn no_answer(&self) -> JournalError {
        JournalError::Database {
            database: self.database.to_string(),
            what: format!("no answer to the lease's session within {:?}", self.ttl / 3),
        }
    }

    /// A session of its own, listening on [`CHANNEL`].
    async fn connect(&self) -> Result<Session> {
        let (client, mut connection) = self.pg.connect(NoTls).await.map_err(|e| JournalError::Database {
            database: self.database.to_string(),
            what: format!("cannot connect: {}", crate::postgres_message(&e)),
        })?;
        let (changes, released) = (self.changes.clone(), Arc::clone(&self.released));
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => match n.payload() {
                        PAUSED => changes.paused.notify_one(),
                        RELEASED => released.notify_one(),
                        _ => changes.due.notify_one(),
                    },
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "The lease's database session ended; reconnecting.");
                        break;
                    }
                }
            }
        });
        // The lease's statements give up within the step's time, on the server too.
        let limit = (self.ttl / 3).as_millis();
        client
            .batch_execute(&format!(
                "SET lock_timeout = {limit}; SET statement_timeout = {limit}; LISTEN {CHANNEL}"
            ))
            .await?;
        Ok(Session {
            held: client.prepare(HELD).await?,
            take: client.prepare(TAKE).await?,
            renew: client.prepare(RENEW).await?,
            client,
            no_single_writer: false,
        })
    }

    /// Renews the lease if this process leads, else tries to take it.
    async fn step(&self, session: &mut Session) -> Result<()> {
        let seconds = self.ttl.as_secs_f64();
        // The lease runs from some moment after this one, by the database's clock.
        let surely_until = Instant::now() + self.ttl.mul_f64(0.9);
        match self.elected.term() {
            Term::Leading(term) => match session.client.query_opt(&session.renew, &[&term, &seconds]).await? {
                Some(_) => self.elected.lead(term, surely_until),
                None => {
                    self.elected.follow();
                    tracing::error!(
                        term,
                        "Another replica took the lease: this homeostat no longer leads and stops acting."
                    );
                    self.say_who_leads(&session.client).await;
                }
            },
            Term::Following => {
                if !session.no_single_writer {
                    let free: bool = session
                        .client
                        .query_one("SELECT pg_try_advisory_lock_shared($1)", &[&SINGLE_WRITER_LOCK])
                        .await?
                        .get(0);
                    if !free {
                        tracing::warn!(
                            "A homeostat from before leader election writes this journal alone: \
                             this replica takes the lease once it has stopped."
                        );
                        return Ok(());
                    }
                    session.no_single_writer = true;
                }
                let held = session.client.query_opt(&session.held, &[]).await?;
                if held.is_some_and(|row| row.get::<_, bool>(0)) {
                    return Ok(());
                }
                let tx = session.client.transaction().await?;
                let Some(row) = tx.query_opt(&session.take, &[&self.holder, &seconds]).await? else {
                    return Ok(());
                };
                let term: i64 = row.try_get(0)?;
                let settled = super::decisions::settle(&tx).await?;
                tx.commit().await?;
                self.elected.lead(term, surely_until);
                tracing::info!(term, holder = %self.holder, "Leading: this homeostat acts until it stops renewing its lease.");
                if settled > 0 {
                    tracing::warn!(
                        decisions = settled,
                        "Actions were under way when the last leader stopped: unconfirmed ones marked interrupted (not repeated), unverified ones timed out."
                    );
                }
                self.changes.due.notify_one();
            }
        }
        Ok(())
    }

    /// A renewal or takeover failed: a leader stops acting once its lease
    /// may have run out.
    fn failed(&self, error: &JournalError) {
        let Term::Leading(term) = self.elected.term() else {
            tracing::warn!(error = %error, "Could not try to take the lease; trying again.");
            return;
        };
        if self.elected.until().is_some_and(|until| Instant::now() >= until) {
            self.lapsed(&error.to_string());
        } else {
            tracing::warn!(term, error = %error, "Could not renew the lease; trying again.");
        }
    }

    /// The lease may have run out (`why`): this process follows.
    fn lapsed(&self, why: &str) {
        if let Term::Leading(term) = self.elected.term() {
            self.elected.follow();
            tracing::error!(term, %why, "Could not renew the lease before it may have run out: this homeostat stops acting.");
        }
    }

    /// Logs who leads, for a process that does not.
    async fn say_who_leads(&self, session: &Client) {
        if let Ok(Some(row)) = session.query_opt(HOLDER, &[]).await {
            let (holder, term, live): (String, i64, bool) = (row.get(0), row.get(1), row.get(2));
            tracing::info!(%holder, term, live, "Following: another replica holds the lease and acts.");
        }
    }
}
