//! Outbound notifications: telling a human, through the sinks a user
//! configured (`actions.notifications.sinks`).
//!
//! A [`Notice`] is built once, journalled, and rendered per sink when it is
//! sent: an alert for Alertmanager (so the user's own routes reach their
//! pager, chat or email), a readable message for Slack-compatible chat, the
//! notice itself as JSON for any other webhook.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use homeostat_core::alert::LabelSet;
use homeostat_core::config::{Env, NoticeEvent, SinkConfig, SinkKind};
use homeostat_core::decision::{ActionResult, Verification};

/// What a human is told about an incident.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub event: NoticeEvent,
    pub incident: i64,
    pub alertname: String,
    pub labels: LabelSet,
    /// Why a human is told.
    pub reason: String,
    /// The actions taken on the incident, oldest first.
    pub tried: Vec<Tried>,
    /// When the incident's alert started firing.
    pub starts_at: DateTime<Utc>,
    /// The incident in homeostat's API, when `external_url` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// An action taken on the incident and what became of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tried {
    pub action: String,
    pub result: Option<ActionResult>,
    pub detail: Option<String>,
    pub outcome: Option<Verification>,
}

/// Whether the sink hears of the incident firing, or of its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Firing; for Alertmanager, the alert lasts until `until` unless sent again.
    Firing {
        until: DateTime<Utc>,
    },
    Resolved {
        at: DateTime<Utc>,
    },
}

/// The alert name a notice takes in Alertmanager.
pub fn alertname(event: NoticeEvent) -> &'static str {
    match event {
        NoticeEvent::Escalation => "HomeostatEscalation",
        NoticeEvent::Notice => "HomeostatNotice",
        NoticeEvent::Approval => "HomeostatApprovalNeeded",
    }
}

/// Sends `notice` to `sink`; a sink that answers with an error status, or
/// cannot be reached, is an error saying which and why.
pub async fn send(
    http: &reqwest::Client,
    sink: &SinkConfig,
    env: &(dyn Env + Sync),
    notice: &Notice,
    phase: Phase,
) -> Result<(), String> {
    let url = sink.url(env).map_err(|(key, m)| format!("{key}: {m}"))?;
    let (url, body) = match sink.kind {
        SinkKind::Alertmanager => (
            format!("{}/api/v2/alerts", url.trim_end_matches('/')),
            alertmanager_alerts(notice, phase),
        ),
        SinkKind::Slack => (url, json!({ "text": chat_text(notice, phase) })),
        SinkKind::Webhook => (url, webhook_body(notice, phase)),
    };
    let mut request = http.post(&url).json(&body);
    for (name, value) in sink.header_values(env).map_err(|(key, m)| format!("{key}: {m}"))? {
        request = request.header(name, value.expose());
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("cannot reach sink {:?}: {}", sink.name, without_url(&e)))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    Err(format!(
        "sink {:?} answered {status}: {}",
        sink.name,
        text.chars().take(300).collect::<String>()
    ))
}

/// reqwest's error without the URL, which may itself be a secret (Slack's).
fn without_url(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    if let Some(url) = err.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// One alert for Alertmanager's `/api/v2/alerts`: the incident's labels
/// (its own alert name kept as `homeostat_alertname`) with
/// `alertname=HomeostatEscalation|HomeostatNotice` and the incident's id.
fn alertmanager_alerts(notice: &Notice, phase: Phase) -> Value {
    let mut labels: BTreeMap<String, String> = notice.labels.clone().into_iter().collect();
    labels.insert("homeostat_alertname".into(), notice.alertname.clone());
    labels.insert("alertname".into(), alertname(notice.event).into());
    labels.insert("homeostat_incident".into(), notice.incident.to_string());
    let ends_at = match phase {
        Phase::Firing { until } => until,
        Phase::Resolved { at } => at,
    };
    let mut alert = json!({
        "labels": labels,
        "annotations": {
            "summary": summary(notice),
            "description": notice.reason,
            "tried": tried_text(&notice.tried),
        },
        "startsAt": notice.starts_at,
        "endsAt": ends_at,
    });
    if let Some(link) = &notice.link {
        alert["generatorURL"] = json!(link);
        alert["annotations"]["incident_url"] = json!(link);
    }
    json!([alert])
}

fn summary(notice: &Notice) -> String {
    let what = match notice.event {
        NoticeEvent::Escalation => "homeostat cannot fix",
        NoticeEvent::Notice => "homeostat notice for",
        NoticeEvent::Approval => "homeostat asks approval for",
    };
    let target = ["service", "container", "deployment", "pod", "instance"]
        .iter()
        .find_map(|l| notice.labels.get(*l).map(|v| format!(" on {v}")))
        .unwrap_or_default();
    format!("{what} {}{target} (incident {})", notice.alertname, notice.incident)
}

fn tried_text(tried: &[Tried]) -> String {
    if tried.is_empty() {
        return "nothing".into();
    }
    tried
        .iter()
        .map(|t| {
            let how = match (t.outcome, t.result) {
                (Some(outcome), _) => outcome.as_str().to_owned(),
                (None, Some(result)) => result.as_str().to_owned(),
                (None, None) => "under way".to_owned(),
            };
            format!("{} ({how})", t.action)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A message people read in a chat channel.
fn chat_text(notice: &Notice, phase: Phase) -> String {
    let mut text = match phase {
        Phase::Firing { .. } => format!(
            "{} *{}*\n*Why:* {}\n*Tried:* {}",
            match notice.event {
                NoticeEvent::Escalation => ":rotating_light:",
                NoticeEvent::Notice => ":information_source:",
                NoticeEvent::Approval => ":raised_hand:",
            },
            summary(notice),
            notice.reason,
            tried_text(&notice.tried)
        ),
        Phase::Resolved { at } => format!(
            ":white_check_mark: *Resolved:* {} at {}",
            summary(notice),
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
    };
    if let Some(link) = &notice.link {
        text.push_str(&format!("\n<{link}|incident {}>", notice.incident));
    }
    text
}

/// The notice as JSON, with `status` `firing` or `resolved` (and when).
fn webhook_body(notice: &Notice, phase: Phase) -> Value {
    let mut body = serde_json::to_value(notice).unwrap_or_default();
    match phase {
        Phase::Firing { .. } => body["status"] = json!("firing"),
        Phase::Resolved { at } => {
            body["status"] = json!("resolved");
            body["resolved_at"] = json!(at);
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice() -> Notice {
        Notice {
            event: NoticeEvent::Escalation,
            incident: 7,
            alertname: "ServiceDown".into(),
            labels: [("alertname", "ServiceDown"), ("service", "checkout")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            reason: "all 1 actions failed".into(),
            tried: vec![Tried {
                action: "restart".into(),
                result: Some(ActionResult::Done),
                detail: None,
                outcome: Some(Verification::Failure),
            }],
            starts_at: "2026-12-07T10:00:00Z".parse().unwrap(),
            link: Some("http://homeostat:9095/api/v1/incidents/7".into()),
        }
    }

    #[test]
    fn alertmanager_alert_keeps_the_labels_and_renames_the_alert() {
        let until: DateTime<Utc> = "2026-12-07T10:05:00Z".parse().unwrap();
        let alerts = alertmanager_alerts(&notice(), Phase::Firing { until });
        let alert = &alerts[0];
        assert_eq!(alert["labels"]["alertname"], "HomeostatEscalation");
        assert_eq!(alert["labels"]["homeostat_alertname"], "ServiceDown");
        assert_eq!(alert["labels"]["service"], "checkout");
        assert_eq!(alert["labels"]["homeostat_incident"], "7");
        assert_eq!(alert["annotations"]["tried"], "restart (failure)");
        assert_eq!(alert["endsAt"], "2026-12-07T10:05:00Z");
        assert_eq!(alert["generatorURL"], "http://homeostat:9095/api/v1/incidents/7");
    }

    #[test]
    fn chat_text_says_what_why_and_what_was_tried() {
        let until = Utc::now();
        let text = chat_text(&notice(), Phase::Firing { until });
        assert!(
            text.contains("homeostat cannot fix ServiceDown on checkout (incident 7)"),
            "{text}"
        );
        assert!(text.contains("*Why:* all 1 actions failed"), "{text}");
        assert!(text.contains("*Tried:* restart (failure)"), "{text}");
        let at = "2026-12-07T10:09:00Z".parse().unwrap();
        let text = chat_text(&notice(), Phase::Resolved { at });
        assert!(text.starts_with(":white_check_mark: *Resolved:*"), "{text}");
    }
}
