//! A clock for tests of the serving path on tokio's paused time.

use chrono::{DateTime, Utc};
use homeostat_core::clock::Clock;
use tokio::time::Instant;

/// Wall-clock time that moves with tokio's clock: from `start`, as much as
/// tokio's time has moved since this clock was made. Under
/// `tokio::time::pause()` it moves only when tokio's time is advanced, so
/// cooldowns, deferrals and verification deadlines can be tested without
/// waiting for them.
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    start: DateTime<Utc>,
    at: Instant,
}

impl TokioClock {
    pub fn starting_at(start: DateTime<Utc>) -> TokioClock {
        TokioClock {
            start,
            at: Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = chrono::Duration::from_std(self.at.elapsed()).unwrap_or(chrono::Duration::MAX);
        self.start + elapsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn moves_only_with_tokio_time() {
        let start = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().to_utc();
        let clock = TokioClock::starting_at(start);
        assert_eq!(clock.now(), start);
        tokio::time::advance(Duration::from_secs(300)).await;
        assert_eq!(clock.now(), start + chrono::Duration::seconds(300));
    }
}
