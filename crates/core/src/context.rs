//! Context for a decision: the PromQL instant queries about the incident's
//! service (templated with the alert's labels, `{{ $labels.service }}`) and
//! what they found. Running them is the Prometheus adapter's job
//! (`homeostat_adapters::prometheus::gather`).
//!
//! Each query yields one number or nothing: a query with no sample (the
//! service exports no such metric) or one Prometheus could not answer is
//! absent, with the reason kept beside the values, and the decision goes
//! on without it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
            // Not a query: the anomaly task's own scores (set by `serve`).
            anomaly_score: None,
        }
    }
}
