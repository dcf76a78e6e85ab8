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

use serde::{Deserialize, Serialize};

use crate::alert::LabelSet;
use crate::playbook::fill_labels;

/// Feature name → PromQL template. The defaults fit the metrics of the
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
            format!("sum(changes(process_start_time_seconds{{{admin}}}[15m]))"),
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
            "deployed_recently",
            format!("max(service:build_versions:count15m{{{SERVICE}}}) > bool 1"),
        ),
        ("replicas_ready", format!(r#"avg(up{{job="services", {SERVICE}}})"#)),
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
}

/// Runs every query with the alert's labels filled in. Without a
/// Prometheus URL every feature is missing, for that reason.
pub async fn gather(
    http: &reqwest::Client,
    prometheus: Option<&str>,
    queries: &BTreeMap<String, String>,
    labels: &LabelSet,
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
        (name, instant_value(http, url, &query).await)
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
pub async fn instant_value(http: &reqwest::Client, url: &str, query: &str) -> Result<Option<f64>, String> {
    let result = instant_query(http, url, query).await?;
    let value = result
        .iter()
        .filter_map(|sample| sample["value"][1].as_str()?.parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .reduce(f64::max);
    Ok(value)
}

/// Whether an instant PromQL query returns at least one sample.
pub async fn query_holds(http: &reqwest::Client, url: &str, query: &str) -> Result<bool, String> {
    Ok(!instant_query(http, url, query).await?.is_empty())
}

/// An instant query's result vector (a scalar answer counts as one sample).
async fn instant_query(http: &reqwest::Client, url: &str, query: &str) -> Result<Vec<serde_json::Value>, String> {
    let answer = get_json(http, url, "/api/v1/query", &[("query", query)], "Prometheus").await?;
    if answer["status"] != "success" {
        return Err(format!("Prometheus refused {query:?}: {}", answer["error"]));
    }
    let data = &answer["data"];
    Ok(match data["resultType"].as_str() {
        Some("scalar") => vec![serde_json::json!({ "value": data["result"] })],
        _ => data["result"].as_array().cloned().unwrap_or_default(),
    })
}

/// GETs `path` on the server at `base` and reads the JSON answer; errors
/// name the server (`what`) and its URL.
pub async fn get_json(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    query: &[(&str, &str)],
    what: &str,
) -> Result<serde_json::Value, String> {
    http.get(format!("{}{path}", base.trim_end_matches('/')))
        .query(query)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("{what} at {base}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("{what} at {base} answered unreadable JSON: {e}"))
}
