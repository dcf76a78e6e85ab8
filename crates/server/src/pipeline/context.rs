//! The context stage: what Prometheus says about the incident's service,
//! for the policy's features and for judging harm after an action.

use std::collections::BTreeMap;
use std::time::Duration;

use homeostat_adapters::prometheus;
use homeostat_core::alert::LabelSet;
use homeostat_core::config::ActionsConfig;
use homeostat_core::context::Context;

/// How long one context query may take: context helps a decision but must
/// not hold it up when Prometheus is slow or down.
pub const CONTEXT_TIMEOUT: Duration = Duration::from_secs(1);

/// Every configured context query (`actions.policy.context`), with the
/// alert's labels filled in.
pub async fn gather(http: &reqwest::Client, config: &ActionsConfig, labels: &LabelSet) -> Context {
    prometheus::gather(
        http,
        config.prometheus_url.as_deref(),
        &config.policy.context,
        labels,
        CONTEXT_TIMEOUT,
    )
    .await
}

/// The service's error ratio now, when a query for it is configured and answers.
pub async fn error_ratio(http: &reqwest::Client, config: &ActionsConfig, labels: &LabelSet) -> Option<f64> {
    let template = config.policy.context.get("error_ratio")?;
    let queries = BTreeMap::from([("error_ratio".to_owned(), template.clone())]);
    prometheus::gather(
        http,
        config.prometheus_url.as_deref(),
        &queries,
        labels,
        CONTEXT_TIMEOUT,
    )
    .await
    .get("error_ratio")
}
