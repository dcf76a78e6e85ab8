//! Alertmanager's webhook payload, version 4, and its decoding.
//!
//! Every field Alertmanager sends is kept; fields it may add later are
//! tolerated. Decoding errors name the JSON path and the line/column, so an
//! operator can find the offending byte in the request Alertmanager logged.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Deserializer, Serialize};

/// The only webhook payload version this receiver understands.
pub const SUPPORTED_VERSION: &str = "4";

/// A label set or an annotation set, ordered so that it serializes stably.
pub type LabelSet = BTreeMap<String, String>;

/// Whether an alert (or a whole notification) is firing or resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

impl fmt::Display for AlertStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One notification as Alertmanager's webhook receiver POSTs it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookMessage {
    pub version: String,
    pub group_key: String,
    /// How many alerts Alertmanager left out because of the receiver's `max_alerts`.
    #[serde(default)]
    pub truncated_alerts: u64,
    pub status: AlertStatus,
    pub receiver: String,
    #[serde(default)]
    pub group_labels: LabelSet,
    #[serde(default)]
    pub common_labels: LabelSet,
    #[serde(default)]
    pub common_annotations: LabelSet,
    #[serde(rename = "externalURL", default)]
    pub external_url: String,
    pub alerts: Vec<Alert>,
}

/// One alert inside a notification.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: AlertStatus,
    pub labels: LabelSet,
    #[serde(default)]
    pub annotations: LabelSet,
    pub starts_at: DateTime<Utc>,
    /// `None` while firing: Alertmanager sends the zero time `0001-01-01T00:00:00Z`.
    #[serde(default, deserialize_with = "zero_time_is_none")]
    pub ends_at: Option<DateTime<Utc>>,
    #[serde(rename = "generatorURL", default)]
    pub generator_url: String,
    pub fingerprint: String,
}

impl Alert {
    /// The `alertname` label, or the empty string when the alert has none.
    pub fn alertname(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }
}

/// Go's zero `time.Time` (year 1) and `null` both mean "not set".
fn zero_time_is_none<'de, D>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error>
where
    D: Deserializer<'de>,
{
    let time = Option::<DateTime<Utc>>::deserialize(deserializer)?;
    Ok(time.filter(|t| t.year() > 1))
}

/// Why a webhook body was rejected.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed webhook payload at `{path}` (line {line}, column {column}): {message}")]
    Malformed {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "unsupported webhook payload version {found:?}: homeostat understands version \"4\" (Alertmanager 0.x webhook)"
    )]
    UnsupportedVersion { found: String },
    #[error("webhook payload has an alert with an empty fingerprint at `alerts[{index}].fingerprint`")]
    EmptyFingerprint { index: usize },
    #[error("webhook payload has a time outside years 1 to 9999 at `alerts[{index}].{field}`: {time}")]
    TimeOutOfRange {
        index: usize,
        field: &'static str,
        time: String,
    },
}

impl DecodeError {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            DecodeError::Malformed { .. }
            | DecodeError::EmptyFingerprint { .. }
            | DecodeError::TimeOutOfRange { .. } => "bad_request",
            DecodeError::UnsupportedVersion { .. } => "unsupported_version",
        }
    }
}

/// Decodes a webhook body. The version is checked before the shape, so a
/// future version with a different shape is reported as a version problem.
pub fn decode(body: &[u8]) -> Result<WebhookMessage, DecodeError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let message = match serde_path_to_error::deserialize::<_, WebhookMessage>(&mut de) {
        Ok(message) => message,
        Err(err) => {
            if let Some(found) = foreign_version(body) {
                return Err(DecodeError::UnsupportedVersion { found });
            }
            let path = err.path().to_string();
            return Err(malformed(path, err.into_inner()));
        }
    };
    de.end().map_err(|err| malformed(".".to_owned(), err))?;
    if message.version != SUPPORTED_VERSION {
        return Err(DecodeError::UnsupportedVersion { found: message.version });
    }
    for (index, alert) in message.alerts.iter().enumerate() {
        if alert.fingerprint.is_empty() {
            return Err(DecodeError::EmptyFingerprint { index });
        }
        // The journal stores times as fixed-width text, whose order is time order.
        let times = [("startsAt", Some(alert.starts_at)), ("endsAt", alert.ends_at)];
        if let Some((field, time)) = times
            .into_iter()
            .find_map(|(field, t)| t.filter(|t| !(1..=9999).contains(&t.year())).map(|t| (field, t)))
        {
            return Err(DecodeError::TimeOutOfRange {
                index,
                field,
                time: time.to_rfc3339(),
            });
        }
    }
    Ok(message)
}

fn malformed(path: String, err: serde_json::Error) -> DecodeError {
    // serde_json appends the position, which the error already carries.
    let text = err.to_string();
    let message = text.rsplit_once(" at line ").map_or(text.as_str(), |(m, _)| m);
    DecodeError::Malformed {
        path,
        line: err.line(),
        column: err.column(),
        message: message.to_owned(),
    }
}

/// The `version` of a body that failed to decode, when it is present and not ours.
fn foreign_version(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Probe {
        version: serde_json::Value,
    }
    let probe: Probe = serde_json::from_slice(body).ok()?;
    let found = match probe.version {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    };
    (found != SUPPORTED_VERSION).then_some(found)
}

/// Whether `name` is a valid Prometheus label name.
pub fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A notification exactly as Alertmanager 0.25 sends it.
    const FIRING: &str = r#"{
      "receiver": "homeostat",
      "status": "firing",
      "alerts": [{
        "status": "firing",
        "labels": {"alertname": "ServiceDown", "service": "service_b", "severity": "page"},
        "annotations": {"summary": "service_b is down"},
        "startsAt": "2026-11-28T06:00:00.123Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up+%3D%3D+0",
        "fingerprint": "c6b8a2d1e0f3a4b5"
      }],
      "groupLabels": {"alertname": "ServiceDown"},
      "commonLabels": {"alertname": "ServiceDown", "service": "service_b", "severity": "page"},
      "commonAnnotations": {"summary": "service_b is down"},
      "externalURL": "http://alertmanager:9093",
      "version": "4",
      "groupKey": "{}:{alertname=\"ServiceDown\"}",
      "truncatedAlerts": 0
    }"#;

    #[test]
    fn decodes_every_field_and_the_zero_ends_at() {
        let m = decode(FIRING.as_bytes()).unwrap();
        assert_eq!(m.version, "4");
        assert_eq!(m.receiver, "homeostat");
        assert_eq!(m.status, AlertStatus::Firing);
        assert_eq!(m.group_key, "{}:{alertname=\"ServiceDown\"}");
        assert_eq!(m.external_url, "http://alertmanager:9093");
        assert_eq!(m.group_labels["alertname"], "ServiceDown");
        assert_eq!(m.common_labels.len(), 3);
        assert_eq!(m.common_annotations["summary"], "service_b is down");
        let a = &m.alerts[0];
        assert_eq!(a.alertname(), "ServiceDown");
        assert_eq!(a.fingerprint, "c6b8a2d1e0f3a4b5");
        assert_eq!(a.ends_at, None);
        assert_eq!(a.starts_at.timestamp_millis() % 1000, 123);
        assert!(a.generator_url.starts_with("http://prometheus"));
    }

    #[test]
    fn keeps_a_real_ends_at_and_tolerates_unknown_fields() {
        let body = FIRING.replace("0001-01-01T00:00:00Z", "2026-11-28T06:05:00Z").replace(
            "\"truncatedAlerts\": 0",
            "\"truncatedAlerts\": 2, \"someFutureField\": [1]",
        );
        let m = decode(body.as_bytes()).unwrap();
        assert_eq!(m.truncated_alerts, 2);
        assert_eq!(m.alerts[0].ends_at.unwrap().to_rfc3339(), "2026-11-28T06:05:00+00:00");
    }

    #[test]
    fn wrong_type_names_the_path_and_position() {
        let body = FIRING.replace("\"startsAt\": \"2026-11-28T06:00:00.123Z\"", "\"startsAt\": 17");
        let err = decode(body.as_bytes()).unwrap_err();
        let DecodeError::Malformed { path, line, column, .. } = &err else {
            panic!("expected Malformed, got {err:?}");
        };
        assert_eq!(path, "alerts[0].startsAt");
        assert_eq!(*line, 8);
        assert!(*column > 10, "column {column}");
        assert!(err.to_string().contains("alerts[0].startsAt"), "{err}");
    }

    #[test]
    fn missing_field_and_broken_json_are_malformed() {
        let body = FIRING.replace("\"fingerprint\": \"c6b8a2d1e0f3a4b5\"", "\"x\": 1");
        let err = decode(body.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("missing field `fingerprint`"), "{err}");

        let err = decode(&FIRING.as_bytes()[..100]).unwrap_err();
        assert!(matches!(err, DecodeError::Malformed { .. }), "{err:?}");
        let err = decode(b"{} trailing").unwrap_err();
        assert!(matches!(err, DecodeError::Malformed { .. }), "{err:?}");
    }

    #[test]
    fn other_versions_are_refused_by_name() {
        let body = FIRING.replace("\"version\": \"4\"", "\"version\": \"5\"");
        let err = decode(body.as_bytes()).unwrap_err();
        assert!(matches!(&err, DecodeError::UnsupportedVersion { found } if found == "5"));
        // A future version whose shape no longer matches is still reported as a version problem.
        let err = decode(br#"{"version": "5", "alerts": "elsewhere"}"#).unwrap_err();
        assert!(matches!(&err, DecodeError::UnsupportedVersion { found } if found == "5"));
        // The right version with the wrong type is a type error, not a version problem.
        let err = decode(br#"{"version": 4, "alerts": []}"#).unwrap_err();
        assert!(
            matches!(&err, DecodeError::Malformed { path, .. } if path == "version"),
            "{err:?}"
        );
    }

    #[test]
    fn times_beyond_year_9999_are_refused() {
        let body = FIRING.replace("2026-11-28T06:00:00.123Z", "+10000-01-01T00:00:00Z");
        let err = decode(body.as_bytes()).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::TimeOutOfRange {
                    index: 0,
                    field: "startsAt",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("alerts[0].startsAt"), "{err}");
        let body = FIRING.replace("0001-01-01T00:00:00Z", "+12000-01-01T00:00:00Z");
        let err = decode(body.as_bytes()).unwrap_err();
        assert!(
            matches!(err, DecodeError::TimeOutOfRange { field: "endsAt", .. }),
            "{err:?}"
        );
    }

    #[test]
    fn empty_fingerprint_is_refused() {
        let body = FIRING.replace("c6b8a2d1e0f3a4b5", "");
        let err = decode(body.as_bytes()).unwrap_err();
        assert!(matches!(err, DecodeError::EmptyFingerprint { index: 0 }));
    }
}
