//! The leader's lease on PostgreSQL (see [`crate::leadership`]).
//!
//! One row, `leader`, names the holder, its term (the fencing token) and
//! when the lease expires, by the database's clock. Each homeostat runs one
//! task on a session of its own:
//! - a follower tries to take the lease every fifth of `journal.lease`; it
//!   can only once the lease has expired (or was released). Taking it
//!   starts a new term and, in the same transaction, settles what the last
//!   leader left under way: actions without a result are marked
//!   interrupted (never repeated; the reconciler escalates them), executed
//!   ones without an outcome timed out;
//! - the leader renews it every third of `journal.lease`. Should a renewal
//!   find another term, it follows at once; should renewals fail (the
//!   database unreachable), it stops acting when the lease may have run
//!   out, by its own monotonic clock, counted from before the last renewal
//!   it saw succeed: earlier than the database lets anyone take over;
//! - on a clean stop the leader releases the lease, so another takes over
//!   at once.
//!
//! The session also listens for `NOTIFY homeostat`, which every replica
//! sends when it commits something the leader should look at (a delivery,
//! an answer, a pause): the leader's reconciler is woken at once, not at
//! its next period.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;
use tokio_postgres::{AsyncMessage, Client, NoTls, Statement};

use crate::leadership::{Elected, Leadership, Term};
use crate::{JournalError, Result};

/// The channel of `NOTIFY`: something for the leader to look at.
pub(super) const CHANNEL: &str = "homeostat";

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
}

/// The process' side of the lease: its leadership, the stop of its task,
/// and the wake-ups other replicas send.
pub(super) struct Lease {
    pub(super) leadership: Leadership,
    /// Something for the leader to look at was committed, by any replica.
    pub(super) changed: Arc<Notify>,
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
    changed: Arc<Notify>,
}

impl Lease {
    /// Connects the lease's session, tries once to take the lease (so a
    /// homeostat alone on its database leads as soon as it is open), and
    /// starts the task that keeps trying or renewing.
    pub(super) async fn start(pg: tokio_postgres::Config, database: Arc<str>, ttl: Duration) -> Result<Lease> {
        let (elected, leadership) = Leadership::elected();
        let changed = Arc::new(Notify::new());
        let task = Task {
            pg,
            database,
            holder: holder(),
            ttl,
            elected,
            changed: Arc::clone(&changed),
        };
        let mut session = task.connect().await?;
        task.step(&mut session).await?;
        if task.elected.term() == Term::Following {
            task.say_who_leads(&session.client).await;
        }
        let (release, released) = oneshot::channel();
        tokio::spawn(task.run(Some(session), released));
        Ok(Lease {
            leadership,
            changed,
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
            tokio::select! {
                release = &mut released => {
                    if let (Ok(done), Term::Leading(term)) = (release, self.elected.term()) {
                        self.elected.follow();
                        if let Some(session) = &session {
                            match session.client.execute(RELEASE, &[&term]).await {
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
                _ = tokio::time::sleep(self.period()) => {}
            }
            if session.as_ref().is_none_or(|s| s.client.is_closed()) {
                session = match self.connect().await {
                    Ok(session) => Some(session),
                    Err(e) => {
                        self.failed(&e);
                        continue;
                    }
                };
            }
            if let Some(session) = session.as_mut() {
                if let Err(e) = self.step(session).await {
                    self.failed(&e);
                }
            }
        }
    }

    /// A session of its own, listening for [`CHANNEL`].
    async fn connect(&self) -> Result<Session> {
        let (client, mut connection) = self.pg.connect(NoTls).await.map_err(|e| JournalError::Database {
            database: self.database.to_string(),
            what: format!("cannot connect: {}", crate::postgres_message(&e)),
        })?;
        let changed = Arc::clone(&self.changed);
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => changed.notify_one(),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "The lease's database session ended; reconnecting.");
                        break;
                    }
                }
            }
        });
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        Ok(Session {
            held: client.prepare(HELD).await?,
            take: client.prepare(TAKE).await?,
            renew: client.prepare(RENEW).await?,
            client,
        })
    }

    /// Renews the lease if this process leads, else tries to take it.
    async fn step(&self, session: &mut Session) -> Result<()> {
        let seconds = self.ttl.as_secs_f64();
        // The lease runs from some moment after this one, by the database's clock.
        let sent = Instant::now();
        let surely_until = sent + self.ttl.mul_f64(0.9);
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
                self.changed.notify_one();
            }
        }
        Ok(())
    }

    /// A renewal or takeover failed: a leader stops acting once its lease
    /// may have run out.
    fn failed(&self, error: &JournalError) {
        let Term::Leading(term) = self.elected.term() else {
            tracing::debug!(error = %error, "Could not try to take the lease.");
            return;
        };
        if self.elected.until().is_some_and(|until| Instant::now() >= until) {
            self.elected.follow();
            tracing::error!(term, error = %error, "Could not renew the lease before it may have run out: this homeostat stops acting.");
        } else {
            tracing::warn!(term, error = %error, "Could not renew the lease; trying again.");
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
