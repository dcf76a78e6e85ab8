//! Alertmanager's API v2, as the pipeline asks it before acting.

use homeostat_core::incident::Incident;

use crate::http::get_json;

/// Whether Alertmanager at `url` reports the incident's alert (by
/// fingerprint) as silenced. An error says which server failed and how.
pub async fn silenced(http: &reqwest::Client, url: &str, incident: &Incident) -> Result<bool, String> {
    let filter = format!("alertname=\"{}\"", incident.alertname.replace('"', "\\\""));
    let query = [
        ("filter", filter.as_str()),
        ("silenced", "true"),
        ("inhibited", "true"),
        ("active", "true"),
    ];
    let alerts = get_json(http, url, "/api/v2/alerts", &query, "Alertmanager").await?;
    let silenced = alerts.as_array().into_iter().flatten().any(|alert| {
        alert["fingerprint"] == incident.fingerprint.as_str()
            && alert["status"]["silencedBy"].as_array().is_some_and(|s| !s.is_empty())
    });
    Ok(silenced)
}
