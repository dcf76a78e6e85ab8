//! Outbound notifications: telling a human.

use serde::Serialize;

use homeostat_core::alert::LabelSet;

/// What the escalation webhook receives: the incident and why a human is needed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Escalation<'a> {
    pub incident: i64,
    pub alertname: &'a str,
    pub labels: &'a LabelSet,
    pub reason: &'a str,
}

/// POSTs the escalation as JSON to `url`; an error status is an error.
pub async fn send_escalation(http: &reqwest::Client, url: &str, notice: &Escalation<'_>) -> Result<(), reqwest::Error> {
    http.post(url)
        .json(notice)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map(drop)
}
