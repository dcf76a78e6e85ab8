//! Outbound notifications: telling a human.

use serde::Serialize;

use homeostat_core::alert::LabelSet;
use homeostat_core::decision::{ActionResult, Verification};

/// What the escalation webhook receives: the incident, why a human is
/// needed, and what homeostat tried before.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Escalation<'a> {
    pub incident: i64,
    pub alertname: &'a str,
    pub labels: &'a LabelSet,
    pub reason: &'a str,
    /// The actions taken on the incident, oldest first.
    pub tried: Vec<Tried<'a>>,
}

/// An action taken on the incident and what became of it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Tried<'a> {
    pub action: &'a str,
    pub result: Option<ActionResult>,
    pub detail: Option<&'a str>,
    pub outcome: Option<Verification>,
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
