//! Prometheus' HTTP API: instant queries for a decision's context and for
//! verification's health queries.
//!
//! Context queries run concurrently, each within a short timeout, so an
//! unreachable Prometheus delays a decision by one timeout at most.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_http_query::response::Data;
use prometheus_http_query::Error as PromError;

use homeostat_core::alert::LabelSet;
use homeostat_core::context::Context;
use homeostat_core::playbook::fill_labels;

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
