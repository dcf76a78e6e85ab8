//! Where the time comes from. Everything that compares against "now"
//! (cooldowns, budgets, deferrals, maintenance windows, the times the
//! journal records) reads it from a [`Clock`] it is given, so tests can run
//! it on a clock they drive (the server's `TokioClock` follows tokio's
//! paused time).

use chrono::{DateTime, Utc};

/// A source of the current wall-clock time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
