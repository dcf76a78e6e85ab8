//! Every PromQL query of a config, tried once on the Prometheus it is meant
//! for, so that a query Prometheus rejects is found when the config is
//! checked or the service starts, not when an incident needs it.
//!
//! The queries: the policy's context features (unless the playbook alone
//! decides) and the playbook's health queries, as instant queries on
//! `actions.prometheus_url`; the thresholds' expressions, as one-step range
//! queries (as they run) on `thresholds.prometheus_url`. Templates are tried
//! with every `{{ $labels.NAME }}` filled with [`PLACEHOLDER`], which is
//! valid PromQL inside a string and as a name. Prometheus itself judges
//! them, so a query is held to the PromQL of the version that runs it.

use std::time::Duration;

use futures_util::StreamExt;
use prometheus_http_query::response::Data;
use prometheus_http_query::Error;

use crate::prometheus::instant_data;
use homeostat_core::config::{Config, PolicyMode};
use homeostat_core::playbook::{fill_with, Playbook};

/// What every label of a template is filled with.
pub const PLACEHOLDER: &str = "homeostat_preflight";

/// Queries sent to Prometheus at once, at most.
const CONCURRENCY: usize = 8;

/// One query of the config: where it is set, and how it runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    /// The config key (or playbook rule) that sets it.
    pub key: String,
    pub prometheus: String,
    /// The query, templates filled with [`PLACEHOLDER`].
    pub query: String,
    /// Run as a range query with this step (in seconds); `None`: an instant
    /// query, whose answer must not be a range vector.
    pub range_step: Option<u64>,
}

/// What Prometheus said of a query.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// It ran (with or without samples).
    Accepted,
    /// Prometheus answered that the query is bad (`bad_data`), or an
    /// instant query answers with a range vector: why.
    Rejected(String),
    /// No verdict: Prometheus could not be reached, timed out, or failed
    /// for another reason; why.
    Unchecked(String),
}

/// Every PromQL query of `config`. A playbook that cannot be loaded adds
/// none (config validation reports it).
pub fn queries(config: &Config) -> Vec<Query> {
    let mut queries = Vec::new();
    if let Some(actions) = &config.actions {
        if let Some(url) = &actions.prometheus_url {
            let mut add = |key: String, template: &str| {
                queries.push(Query {
                    key,
                    prometheus: url.clone(),
                    query: fill_with(template, |_| PLACEHOLDER),
                    range_step: None,
                })
            };
            // In playbook mode the context is never gathered.
            if actions.policy.mode != PolicyMode::Playbook {
                for (name, template) in &actions.policy.context {
                    add(format!("actions.policy.context.{name}"), template);
                }
            }
            if let Ok(playbook) = Playbook::load(&actions.playbook) {
                for rule in &playbook.rules {
                    if let Some(template) = &rule.health_query {
                        let key = format!("{}: rule {:?}, health_query", actions.playbook.display(), rule.name);
                        add(key, template);
                    }
                }
            }
        }
    }
    if let Some(thresholds) = &config.thresholds {
        for (i, spec) in thresholds.specs.iter().enumerate() {
            queries.push(Query {
                key: format!("thresholds.specs[{i}].expr"),
                prometheus: thresholds.prometheus_url.clone(),
                query: spec.expr.clone(),
                range_step: Some(spec.step.0.as_secs().max(1)),
            });
        }
    }
    queries
}

/// Runs every query of `config` once, a few at a time, each within
/// `timeout`; in the order of [`queries`].
pub async fn check(config: &Config, timeout: Duration) -> Vec<(Query, Verdict)> {
    let queries = queries(config);
    let http = match reqwest::Client::builder().timeout(timeout).build() {
        Ok(http) => http,
        Err(err) => {
            let why = format!("no HTTP client: {err}");
            return queries
                .into_iter()
                .map(|q| (q, Verdict::Unchecked(why.clone())))
                .collect();
        }
    };
    futures_util::stream::iter(queries)
        .map(|query| {
            let http = http.clone();
            async move {
                let verdict = verdict(&http, &query).await;
                (query, verdict)
            }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await
}

async fn verdict(http: &reqwest::Client, query: &Query) -> Verdict {
    let (url, text) = (&query.prometheus, &query.query);
    let answer = match query.range_step {
        None => instant_data(http, url, text).await,
        Some(step) => range_data(http, url, text, step).await,
    };
    match answer {
        Ok(data) if query.range_step.is_none() && data.as_matrix().is_some() => Verdict::Rejected(format!(
            "Prometheus at {url} answers {text:?} with a range vector; an instant vector or a scalar is needed"
        )),
        Ok(_) => Verdict::Accepted,
        Err(Error::Prometheus(err)) if err.is_bad_data() => {
            Verdict::Rejected(format!("Prometheus at {url} rejects {text:?}: {}", err.message()))
        }
        Err(err) => Verdict::Unchecked(format!("Prometheus at {url} could not run {text:?}: {err}")),
    }
}

/// A range query over the latest `step` seconds.
async fn range_data(http: &reqwest::Client, url: &str, query: &str, step: u64) -> Result<Data, Error> {
    let client = prometheus_http_query::Client::from(http.clone(), url)?;
    let to = chrono::Utc::now().timestamp();
    let from = to - i64::try_from(step).unwrap_or(i64::MAX).min(to);
    Ok(client
        .query_range(query, from, to, step as f64)
        .get()
        .await?
        .into_inner()
        .0)
}
