//! Context for a decision: PromQL instant queries about the incident's
//! service, templated with the alert's labels (`{{ $labels.service }}`),
//! run against Prometheus when the incident is decided on.
//!
//! Each query yields one number or nothing: a query with no sample (the
//! service exports no such metric) or one Prometheus could not answer is
//! absent, with the reason kept beside the values, and the decision goes
//! on without it. Queries run concurrently, each within a short timeout, so
//! an unreachable Prometheus delays a decision by one timeout at most.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_http_query::response::Data;
use prometheus_http_query::Error as PromError;
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
        let answer = tokio::time::timeout(timeout, instant_value(http, url, &query))
            .await
            .unwrap_or_else(|_| Err(format!("Prometheus at {url} did not answer within {timeout:?}")));
        (name, answer)
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
    let values = instant_query(http, url, query).await?;
    Ok(values.into_iter().filter(|v| v.is_finite()).reduce(f64::max))
}

/// An instant query's answer, with the client's error as it is (so that a
/// caller can tell Prometheus' `bad_data` from the rest).
pub async fn instant_data(http: &reqwest::Client, url: &str, query: &str) -> Result<Data, PromError> {
    let client = prometheus_http_query::Client::from(http.clone(), url)?;
    Ok(client.query(query).get().await?.into_inner().0)
}

/// Whether an instant PromQL query returns at least one sample.
pub async fn query_holds(http: &reqwest::Client, url: &str, query: &str) -> Result<bool, String> {
    Ok(!instant_query(http, url, query).await?.is_empty())
}

/// An instant query's sample values (a scalar answer is one sample).
async fn instant_query(http: &reqwest::Client, url: &str, query: &str) -> Result<Vec<f64>, String> {
    let data = instant_data(http, url, query).await.map_err(|e| match e {
        PromError::ParseUrl(e) => format!("invalid Prometheus URL {url:?}: {e}"),
        e => format!("Prometheus at {url} could not run {query:?}: {e}"),
    })?;
    if let Some(vector) = data.as_vector() {
        Ok(vector.iter().map(|s| s.sample().value()).collect())
    } else if let Some(scalar) = data.as_scalar() {
        Ok(vec![scalar.value()])
    } else {
        Err(format!("Prometheus answered {query:?} with a range vector"))
    }
}
