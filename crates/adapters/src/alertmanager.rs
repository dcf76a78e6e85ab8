//! Alertmanager's API v2, as the pipeline asks it before acting and the
//! reconciler asks it which incidents are still alive.

use std::collections::HashSet;

use homeostat_core::incident::Incident;

use crate::http::get_json;

/// What Alertmanager says of an incident's alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AlertState {
    /// Active, or not yet processed.
    Active,
    /// Held back by a silence.
    Silenced,
    /// Held back by an inhibit rule: another alert that fires explains this
    /// one (a failing dependency explains its caller's latency), so acting
    /// on this one would act on the wrong target. `by` names the inhibiting
    /// alerts: `alertname (fingerprint)`, or the fingerprint alone when
    /// Alertmanager no longer reports that alert.
    Inhibited { by: Vec<String> },
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
    let Some(alert) = found else {
        return Ok(AlertState::Gone);
    };
    let listed = |key: &str| -> Vec<String> {
        let list = alert["status"][key].as_array().into_iter().flatten();
        list.filter_map(|f| f.as_str().map(str::to_owned)).collect()
    };
    if !listed("silencedBy").is_empty() {
        return Ok(AlertState::Silenced);
    }
    let inhibitors = listed("inhibitedBy");
    if inhibitors.is_empty() {
        return Ok(AlertState::Active);
    }
    // The inhibiting alerts by name, from every alert Alertmanager holds;
    // by fingerprint alone when that cannot be read.
    let all = get_json(http, url, "/api/v2/alerts", &EVERY_STATE, "Alertmanager")
        .await
        .unwrap_or_default();
    let name_of = |fingerprint: &str| {
        all.as_array()
            .into_iter()
            .flatten()
            .find(|a| a["fingerprint"] == fingerprint)
            .and_then(|a| a["labels"]["alertname"].as_str())
            .map(str::to_owned)
    };
    let mut by: Vec<String> = inhibitors
        .iter()
        .map(|fingerprint| match name_of(fingerprint) {
            Some(name) => format!("{name} ({fingerprint})"),
            None => fingerprint.clone(),
        })
        .collect();
    by.sort();
    Ok(AlertState::Inhibited { by })
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
