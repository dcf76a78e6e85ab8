//! Incidents: one per alert fingerprint per firing episode.
//!
//! The rules are pure so they can be read and tested apart from SQLite:
//! given what the journal already holds for a fingerprint, [`transition`]
//! says what one delivered alert does. Repeated deliveries (Alertmanager's
//! `repeat_interval`, both peers of an HA pair, retries) update the incident
//! they belong to; a late or duplicated delivery for an episode that is
//! already resolved never reopens it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::alert::{AlertStatus, LabelSet};

/// An incident as the journal stores it and the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: i64,
    pub fingerprint: String,
    pub alertname: String,
    pub status: AlertStatus,
    pub labels: LabelSet,
    pub annotations: LabelSet,
    /// When the alert started firing, as Alertmanager reports it.
    pub starts_at: DateTime<Utc>,
    /// When Alertmanager says the alert ended; `None` while firing.
    pub ends_at: Option<DateTime<Utc>>,
    pub generator_url: String,
    /// When homeostat first and last received this incident's alert.
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// When homeostat received the resolution.
    pub resolved_at: Option<DateTime<Utc>>,
    /// How many deliveries of this alert homeostat has received.
    pub deliveries: i64,
    /// When the reconciler next looks at the incident; `None` when nothing is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_check: Option<DateTime<Utc>>,
    /// Closed because Alertmanager stopped reporting the alert without
    /// ever sending its resolution.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vanished: bool,
    /// The image or revision that was running when the incident was first
    /// acted on: a rollback undoes this one, and only while it still runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub implicated: Option<String>,
    /// The latest decision on the incident (`id`, `action`, `verdict`,
    /// `result`, `outcome`); all of them at `/api/v1/incidents/{id}/decisions`.
    pub last_decision: Option<serde_json::Value>,
}

/// What the journal already knows about an alert's fingerprint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Known {
    /// The firing incident for the fingerprint, if any (there is at most
    /// one), and its `startsAt`.
    pub open: Option<(i64, DateTime<Utc>)>,
    /// The latest resolved incident for the fingerprint with the delivered
    /// alert's `startsAt` (the same firing episode), and when it was resolved.
    pub resolved_episode: Option<(i64, DateTime<Utc>)>,
}

/// How long after a resolution a firing delivery for the same episode is
/// taken as late (a lagging HA peer, a retry) rather than as the alert
/// firing again, e.g. after Alertmanager's `resolve_timeout` resolved it
/// while Prometheus was briefly unreachable.
pub const LATE_DELIVERY_GRACE: chrono::Duration = chrono::Duration::minutes(5);

/// What one delivered alert does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// A new firing incident.
    Open,
    /// Another delivery of a firing incident.
    Repeat(i64),
    /// The firing incident is resolved.
    Resolve(i64),
    /// A resolution for an episode never seen firing: recorded, closed, never acted on.
    OpenResolved,
    /// A delivery for an episode already resolved (a lagging HA peer, a
    /// retry, a duplicate resolution): counted, changes nothing.
    Stale(i64),
}

/// The event a transition produces, as the pipeline receives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Opened,
    Repeated,
    Resolved,
    Stale,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Opened => "opened",
            EventKind::Repeated => "repeated",
            EventKind::Resolved => "resolved",
            EventKind::Stale => "stale",
        }
    }
}

impl Transition {
    pub fn event_kind(self) -> EventKind {
        match self {
            Transition::Open => EventKind::Opened,
            Transition::Repeat(_) => EventKind::Repeated,
            Transition::Resolve(_) | Transition::OpenResolved => EventKind::Resolved,
            Transition::Stale(_) => EventKind::Stale,
        }
    }
}

/// Decides what an alert delivered at `now` with `status` and `starts_at`
/// does, given what is `known` about its fingerprint.
///
/// A firing delivery joins the open incident even when its `startsAt`
/// differs: Alertmanager peers fed by Prometheus replicas can disagree on it
/// briefly, and splitting one outage into two incidents would double every
/// action taken on it. A resolution, though, closes the open incident only
/// if it is for that episode or a later one: a late resolution of an
/// earlier episode must not close the current outage.
pub fn transition(status: AlertStatus, starts_at: DateTime<Utc>, now: DateTime<Utc>, known: Known) -> Transition {
    match (status, known.open, known.resolved_episode) {
        (AlertStatus::Firing, Some((open, _)), _) => Transition::Repeat(open),
        (AlertStatus::Firing, None, Some((done, resolved_at))) => {
            if now - resolved_at > LATE_DELIVERY_GRACE {
                Transition::Open
            } else {
                Transition::Stale(done)
            }
        }
        (AlertStatus::Firing, None, None) => Transition::Open,
        (AlertStatus::Resolved, Some((open, open_starts_at)), episode) => {
            if starts_at >= open_starts_at {
                Transition::Resolve(open)
            } else {
                episode.map_or(Transition::OpenResolved, |(done, _)| Transition::Stale(done))
            }
        }
        (AlertStatus::Resolved, None, Some((done, _))) => Transition::Stale(done),
        (AlertStatus::Resolved, None, None) => Transition::OpenResolved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    const T0: &str = "2026-11-28T06:00:00Z";
    const T1: &str = "2026-11-28T07:00:00Z";
    const NOW: &str = "2026-11-28T08:00:00Z";

    fn step(status: AlertStatus, starts_at: &str, known: Known) -> Transition {
        transition(status, at(starts_at), at(NOW), known)
    }

    fn open(id: i64, starts_at: &str) -> Known {
        Known {
            open: Some((id, at(starts_at))),
            resolved_episode: None,
        }
    }

    fn resolved(id: i64, resolved_at: &str) -> Known {
        Known {
            open: None,
            resolved_episode: Some((id, at(resolved_at))),
        }
    }

    #[test]
    fn firing_opens_then_repeats() {
        assert_eq!(step(AlertStatus::Firing, T0, Known::default()), Transition::Open);
        assert_eq!(step(AlertStatus::Firing, T0, open(7, T0)), Transition::Repeat(7));
        // Peers may disagree on startsAt: still the same outage.
        assert_eq!(step(AlertStatus::Firing, T1, open(7, T0)), Transition::Repeat(7));
    }

    #[test]
    fn resolution_closes_the_open_incident_of_its_episode_or_a_later_one() {
        assert_eq!(step(AlertStatus::Resolved, T0, open(7, T0)), Transition::Resolve(7));
        assert_eq!(step(AlertStatus::Resolved, T1, open(7, T0)), Transition::Resolve(7));
    }

    #[test]
    fn a_late_resolution_of_an_earlier_episode_leaves_the_current_one_open() {
        let current = Known {
            open: Some((8, at(T1))),
            resolved_episode: Some((3, at("2026-11-28T06:30:00Z"))),
        };
        assert_eq!(step(AlertStatus::Resolved, T0, current), Transition::Stale(3));
        assert_eq!(step(AlertStatus::Resolved, T0, open(8, T1)), Transition::OpenResolved);
    }

    #[test]
    fn late_deliveries_for_a_finished_episode_are_stale() {
        let just_done = resolved(3, "2026-11-28T07:58:00Z");
        assert_eq!(step(AlertStatus::Firing, T0, just_done), Transition::Stale(3));
        assert_eq!(step(AlertStatus::Resolved, T0, just_done), Transition::Stale(3));
    }

    #[test]
    fn firing_long_after_the_resolution_opens_again() {
        let long_done = resolved(3, "2026-11-28T07:50:00Z");
        assert_eq!(step(AlertStatus::Firing, T0, long_done), Transition::Open);
    }

    #[test]
    fn a_resolution_never_seen_firing_is_recorded_closed() {
        let t = step(AlertStatus::Resolved, T0, Known::default());
        assert_eq!(t, Transition::OpenResolved);
        assert_eq!(t.event_kind(), EventKind::Resolved);
    }
}
