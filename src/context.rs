//! Context for a decision: PromQL instant queries about the incident's
//! service, templated with the alert's labels (`{{ $labels.service }}`),
//! run against Prometheus when the incident is decided on.
//!
//! Each query yields one number or nothing: a query with no sample (the
//! service exports no such metric) or one Prometheus could not answer is
//! absent, with the reason kept beside the values, and the decision goes
//! on without it. Queries run concurrently, each within the HTTP client's
//! timeout, so an unreachable Prometheus costs one timeout, not one per query.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::alert::LabelSet;
use crate::playbook::fill_labels;
use crate::policy::Features;

/// The features a context query may feed, by name (see [`Features`]).
pub const FEATURES: [&str; 6] = [
    "error_ratio",
    "latency_ratio",
    "recent_restarts",
    "memory_exhaustion_seconds",
    "recent_deploy",
    "ready_ratio",
];

/// Feature name ([`FEATURES`]) → PromQL template. The defaults fit the metrics of the
/// demo services and `rules/services.rules.yml`.
pub fn default_queries() -> BTreeMap<String, String> {
    const SERVICE: &str = r#"service="{{ $labels.service }}""#;
    let admin = format!(r#"job="services-admin", {SERVICE}"#);
    [
        (
            "error_ratio",
            format!("max(service:http_error_ratio:rate1m{{{SERVICE}}})"),
        ),
        // p99 latency relative to HighLatencyP99's 500ms.
        (
            "latency_ratio",
            format!("max(service:http_request_duration_seconds:p99_1m{{{SERVICE}}}) / 0.5"),
        ),
        (
            "recent_restarts",
            format!("sum(changes(process_start_time_seconds{{{admin}}}[5m]))"),
        ),
        // Seconds until resident memory reaches the limit at the last 5
        // minutes' rate; no sample while memory is not growing.
        (
            "memory_exhaustion_seconds",
            format!(
                "min((process_memory_limit_bytes{{{admin}}} - process_resident_memory_bytes{{{admin}}}) \
                 / (deriv(process_resident_memory_bytes{{{admin}}}[5m]) > 0))"
            ),
        ),
        // 1 when the unit ran more than one version in the last 15 minutes.
        (
            "recent_deploy",
            format!("max(service:build_versions:count15m{{{SERVICE}}}) > bool 1"),
        ),
        ("ready_ratio", format!(r#"avg(up{{job="services", {SERVICE}}})"#)),
    ]
    .into_iter()
    .map(|(name, query)| (name.to_owned(), query))
    .collect()
}

/// What the context queries found.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Context {
    /// Feature name → value, for the queries that returned a sample.
    pub values: BTreeMap<String, f64>,
    /// Feature name → why it has no value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub missing: BTreeMap<String, String>,
}

impl Context {
    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.get(name).copied()
    }

    /// The policy's features: counts rounded, `recent_deploy` true above 0.5.
    pub fn features(&self) -> Features {
        Features {
            error_ratio: self.get("error_ratio"),
            latency_ratio: self.get("latency_ratio"),
            recent_restarts: self
                .get("recent_restarts")
                .map(|n| n.round().clamp(0.0, f64::from(u32::MAX)) as u32),
            memory_exhaustion_seconds: self.get("memory_exhaustion_seconds"),
            recent_deploy: self.get("recent_deploy").map(|v| v > 0.5),
            ready_ratio: self.get("ready_ratio"),
        }
    }
}

/// Runs every query with the alert's labels filled in, each within
/// `timeout`. Without a Prometheus URL every feature is missing, for that reason.
pub async fn gather(
    http: &reqwest::Client,
    prometheus: Option<&str>,
    queries: &BTreeMap<String, String>,
    labels: &LabelSet,
    timeout: Duration,
) -> Context {
    let mut context = Context::default();
    let Some(url) = prometheus else {
        for name in queries.keys() {
            context
                .missing
                .insert(name.clone(), "no Prometheus configured (actions.prometheus_url)".into());
        }
        return context;
    };
    let answers = futures_util::future::join_all(queries.iter().map(|(name, template)| async move {
        let query = fill_labels(template, labels);
        (name, instant_value(http, url, &query, Some(timeout)).await)
    }))
    .await;
    for (name, answer) in answers {
        match answer {
            Ok(Some(value)) => {
                context.values.insert(name.clone(), value);
            }
            Ok(None) => {
                context.missing.insert(name.clone(), "no sample".into());
            }
            Err(why) => {
                context.missing.insert(name.clone(), why);
            }
        }
    }
    context
}

/// The largest finite value an instant query returns, if any.
pub async fn instant_value(
    http: &reqwest::Client,
    url: &str,
    query: &str,
    timeout: Option<Duration>,
) -> Result<Option<f64>, String> {
    let result = instant_query(http, url, query, timeout).await?;
    let value = result
        .iter()
        .filter_map(|sample| sample["value"][1].as_str()?.parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .reduce(f64::max);
    Ok(value)
}

/// Whether an instant PromQL query returns at least one sample.
pub async fn query_holds(http: &reqwest::Client, url: &str, query: &str) -> Result<bool, String> {
    Ok(!instant_query(http, url, query, None).await?.is_empty())
}

/// An instant query's result vector (a scalar answer counts as one sample).
async fn instant_query(
    http: &reqwest::Client,
    url: &str,
    query: &str,
    timeout: Option<Duration>,
) -> Result<Vec<serde_json::Value>, String> {
    let answer = get_json(http, url, "/api/v1/query", &[("query", query)], "Prometheus", timeout).await?;
    if answer["status"] != "success" {
        return Err(format!("Prometheus refused {query:?}: {}", answer["error"]));
    }
    let data = &answer["data"];
    Ok(match data["resultType"].as_str() {
        Some("scalar") => vec![serde_json::json!({ "value": data["result"] })],
        _ => data["result"].as_array().cloned().unwrap_or_default(),
    })
}

/// GETs `path` on the server at `base` and reads the JSON answer, within
/// `timeout` if given (else the client's); errors name the server (`what`)
/// and its URL.
pub async fn get_json(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    query: &[(&str, &str)],
    what: &str,
    timeout: Option<Duration>,
) -> Result<serde_json::Value, String> {
    let mut request = http.get(format!("{}{path}", base.trim_end_matches('/'))).query(query);
    if let Some(timeout) = timeout {
        request = request.timeout(timeout);
    }
    request
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("{what} at {base}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("{what} at {base} answered unreadable JSON: {e}"))
}
