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
}

/// What the journal already knows about an alert's fingerprint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Known {
    /// The firing incident for the fingerprint, if any (there is at most one).
    pub open: Option<i64>,
    /// A resolved incident for the fingerprint with the same `startsAt`: the
    /// same firing episode, already over.
    pub resolved_episode: Option<i64>,
}

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

    pub fn parse(text: &str) -> Option<EventKind> {
        [
            EventKind::Opened,
            EventKind::Repeated,
            EventKind::Resolved,
            EventKind::Stale,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
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

/// Decides what an alert delivered with `status` does, given what is
/// `known` about its fingerprint.
///
/// A firing delivery joins the open incident even when its `startsAt`
/// differs: Alertmanager peers fed by Prometheus replicas can disagree on it
/// briefly, and splitting one outage into two incidents would double every
/// action taken on it.
pub fn transition(status: AlertStatus, known: Known) -> Transition {
    match (status, known.open, known.resolved_episode) {
        (AlertStatus::Firing, Some(open), _) => Transition::Repeat(open),
        (AlertStatus::Firing, None, Some(done)) => Transition::Stale(done),
        (AlertStatus::Firing, None, None) => Transition::Open,
        (AlertStatus::Resolved, Some(open), _) => Transition::Resolve(open),
        (AlertStatus::Resolved, None, Some(done)) => Transition::Stale(done),
        (AlertStatus::Resolved, None, None) => Transition::OpenResolved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTHING: Known = Known {
        open: None,
        resolved_episode: None,
    };

    #[test]
    fn firing_opens_then_repeats() {
        let firing = AlertStatus::Firing;
        assert_eq!(transition(firing, NOTHING), Transition::Open);
        let open = Known {
            open: Some(7),
            ..NOTHING
        };
        assert_eq!(transition(firing, open), Transition::Repeat(7));
    }

    #[test]
    fn resolution_closes_the_open_incident() {
        let resolved = AlertStatus::Resolved;
        let open = Known {
            open: Some(7),
            resolved_episode: Some(3),
        };
        assert_eq!(transition(resolved, open), Transition::Resolve(7));
    }

    #[test]
    fn late_deliveries_for_a_finished_episode_are_stale() {
        let done = Known {
            open: None,
            resolved_episode: Some(3),
        };
        assert_eq!(transition(AlertStatus::Firing, done), Transition::Stale(3));
        assert_eq!(transition(AlertStatus::Resolved, done), Transition::Stale(3));
    }

    #[test]
    fn a_resolution_never_seen_firing_is_recorded_closed() {
        let t = transition(AlertStatus::Resolved, NOTHING);
        assert_eq!(t, Transition::OpenResolved);
        assert_eq!(t.event_kind(), EventKind::Resolved);
    }

    #[test]
    fn event_kinds_round_trip() {
        for kind in [
            EventKind::Opened,
            EventKind::Repeated,
            EventKind::Resolved,
            EventKind::Stale,
        ] {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventKind::parse("other"), None);
    }
}
