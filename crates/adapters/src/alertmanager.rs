//! Alertmanager's API v2, as the pipeline asks it before acting and the
//! reconciler asks it which incidents are still alive.

use std::collections::HashSet;

use homeostat_core::incident::Incident;

use crate::http::get_json;

/// What Alertmanager says of an incident's alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertState {
    /// Active, or not yet processed.
    Active,
    /// Held back by a silence (an inhibited alert is not: the inhibiting
    /// alert is about the same outage and homeostat may act on either).
    Silenced,
    /// Not reported: resolved, expired, or never received.
    Gone,
}

/// Every alert Alertmanager holds that is not resolved, whatever its state.
const EVERY_STATE: [(&str, &str); 4] = [
    ("active", "true"),
    ("silenced", "true"),
    ("inhibited", "true"),
    ("unprocessed", "true"),
];

/// The state of the incident's alert (by fingerprint) in Alertmanager at
/// `url`. An error says which server failed and how.
pub async fn state(http: &reqwest::Client, url: &str, incident: &Incident) -> Result<AlertState, String> {
    let filter = format!(
        "alertname=\"{}\"",
        incident.alertname.replace('\\', "\\\\").replace('"', "\\\"")
    );
    let mut query = vec![("filter", filter.as_str())];
    query.extend(EVERY_STATE);
    let alerts = get_json(http, url, "/api/v2/alerts", &query, "Alertmanager").await?;
    let found = alerts
        .as_array()
        .into_iter()
        .flatten()
        .find(|alert| alert["fingerprint"] == incident.fingerprint.as_str());
    Ok(match found {
        None => AlertState::Gone,
        Some(alert) if alert["status"]["silencedBy"].as_array().is_some_and(|s| !s.is_empty()) => AlertState::Silenced,
        Some(_) => AlertState::Active,
    })
}

/// The fingerprints of every alert Alertmanager at `url` holds unresolved.
pub async fn fingerprints(http: &reqwest::Client, url: &str) -> Result<HashSet<String>, String> {
    let alerts = get_json(http, url, "/api/v2/alerts", &EVERY_STATE, "Alertmanager").await?;
    let Some(alerts) = alerts.as_array() else {
        return Err(format!(
            "Alertmanager at {url} answered /api/v2/alerts with something not a list"
        ));
    };
    Ok(alerts
        .iter()
        .filter_map(|alert| alert["fingerprint"].as_str().map(str::to_owned))
        .collect())
}
