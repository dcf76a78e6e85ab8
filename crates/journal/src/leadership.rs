//! Which homeostat process acts on a journal.
//!
//! Every process that opens a journal journals deliveries and answers
//! reads; only the leader reconciles, decides, acts and verifies. On SQLite
//! one process holds the journal (its lock file), so it always leads. On
//! PostgreSQL several replicas share one database, and a lease row elects
//! the leader (`postgres/lease.rs`): each takeover increases the lease's
//! *term*, its fencing token, and every decision, result and outcome is
//! written only while the writer's term is the lease's current, unexpired
//! one, checked in the same statement. A deposed leader can therefore not
//! record anything; [`Leadership::may_act`] keeps it from executing what it
//! recorded just before, by a deadline on this process' own monotonic clock
//! that ends before the lease can expire in the database.

use std::sync::{Arc, Mutex};

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// What other replicas on the journal say through it.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    /// Something for the leader to look at was committed (a delivery, an answer).
    pub due: Arc<Notify>,
    /// Actions were paused or resumed.
    pub paused: Arc<Notify>,
}

/// Whether this process leads, and in which term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Term {
    /// Another process leads, or none does yet.
    Following,
    /// This process leads; the lease's term (its fencing token).
    Leading(i64),
}

/// This process' view of its leadership, shared by whatever acts.
#[derive(Clone, Debug)]
pub struct Leadership {
    term: watch::Receiver<Term>,
    /// Until when the lease is surely this process' (`None`: for good).
    until: Arc<Mutex<Option<Instant>>>,
}

/// The side that changes a [`Leadership`] (the lease task).
#[derive(Debug)]
pub(crate) struct Elected {
    term: watch::Sender<Term>,
    until: Arc<Mutex<Option<Instant>>>,
}

impl Leadership {
    /// The only process on its journal: it leads for good.
    pub fn sole() -> Leadership {
        let (_, term) = watch::channel(Term::Leading(0));
        Leadership {
            term,
            until: Arc::new(Mutex::new(None)),
        }
    }

    /// A leadership that changes as the returned [`Elected`] says: following until then.
    pub(crate) fn elected() -> (Elected, Leadership) {
        let (sender, term) = watch::channel(Term::Following);
        let until = Arc::new(Mutex::new(Some(Instant::now())));
        (
            Elected {
                term: sender,
                until: Arc::clone(&until),
            },
            Leadership { term, until },
        )
    }

    /// The term now.
    pub fn term(&self) -> Term {
        *self.term.borrow()
    }

    /// Whether this process may start an action now: it leads, and its
    /// lease cannot have expired yet.
    pub fn may_act(&self) -> bool {
        matches!(self.term(), Term::Leading(_))
            && self
                .until
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_none_or(|until| Instant::now() < until)
    }

    /// Waits until this process leads; its term. Never returns once the
    /// journal is gone without this process having led.
    pub async fn leading(&mut self) -> i64 {
        let term = self.term.wait_for(|t| matches!(t, Term::Leading(_))).await.map(|t| *t);
        match term {
            Ok(Term::Leading(token)) => token,
            _ => std::future::pending().await,
        }
    }

    /// Waits until term `token` ends (at once if it has). The lease task
    /// ends a term before it stops; a sole leader's never ends.
    pub async fn ended(&mut self, token: i64) {
        if self.term.wait_for(|t| *t != Term::Leading(token)).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Elected {
    /// This process leads in `token`'s term, surely until `until`.
    pub(crate) fn lead(&self, token: i64, until: Instant) {
        *self.until.lock().unwrap_or_else(|p| p.into_inner()) = Some(until);
        self.term.send_if_modified(|term| {
            let changed = *term != Term::Leading(token);
            *term = Term::Leading(token);
            changed
        });
    }

    /// This process no longer leads.
    pub(crate) fn follow(&self) {
        *self.until.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        self.term.send_if_modified(|term| {
            let changed = *term != Term::Following;
            *term = Term::Following;
            changed
        });
    }

    /// The term now.
    pub(crate) fn term(&self) -> Term {
        *self.term.borrow()
    }

    /// Until when the lease is surely this process'.
    pub(crate) fn until(&self) -> Option<Instant> {
        *self.until.lock().unwrap_or_else(|p| p.into_inner())
    }
}
