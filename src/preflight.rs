//! Every PromQL query of a config, tried once on the Prometheus it is meant
//! for, so that a query Prometheus rejects is found when the config is
//! checked or the service starts, not when an incident needs it.
//!
//! The queries: the policy's context features and the playbook's health
//! queries (on `actions.prometheus_url`), and the thresholds' expressions
//! (on `thresholds.prometheus_url`). Templates are tried with every
//! `{{ $labels.NAME }}` empty, which keeps them valid PromQL wherever a
//! label value can go. Prometheus itself judges them, so a query is held to
//! the PromQL of the version that will run it.

use std::time::Duration;

use prometheus_http_query::error::{Error, PrometheusErrorType};

use crate::alert::LabelSet;
use crate::config::Config;
use crate::playbook::{fill_labels, Playbook};

/// One query of the config: where it is set, and the Prometheus it runs on.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    /// The config key (or playbook rule) that sets it.
    pub key: String,
    pub prometheus: String,
    /// The query, templates filled with empty label values.
    pub query: String,
}

/// What Prometheus said of a query.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// It ran (with or without samples).
    Accepted,
    /// Prometheus answered that the query is bad (`bad_data`): its message.
    Rejected(String),
    /// No verdict: Prometheus could not be reached, timed out, or failed
    /// for another reason; why.
    Unchecked(String),
}

/// Every PromQL query of `config`. A playbook that cannot be loaded adds
/// none (config validation reports it).
pub fn queries(config: &Config) -> Vec<Query> {
    let empty = LabelSet::new();
    let mut queries = Vec::new();
    if let Some(actions) = &config.actions {
        if let Some(url) = &actions.prometheus_url {
            let mut add = |key: String, template: &str| {
                queries.push(Query {
                    key,
                    prometheus: url.clone(),
                    query: fill_labels(template, &empty),
                })
            };
            for (name, template) in &actions.policy.context {
                add(format!("actions.policy.context.{name}"), template);
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
            });
        }
    }
    queries
}

/// Runs every query of `config` once, all at once, each within `timeout`.
pub async fn check(config: &Config, timeout: Duration) -> Vec<(Query, Verdict)> {
    let http = match reqwest::Client::builder().timeout(timeout).build() {
        Ok(http) => http,
        Err(err) => {
            let why = format!("no HTTP client: {err}");
            return queries(config)
                .into_iter()
                .map(|q| (q, Verdict::Unchecked(why.clone())))
                .collect();
        }
    };
    let checks = queries(config).into_iter().map(|query| {
        let http = http.clone();
        async move {
            let verdict = verdict(&http, &query).await;
            (query, verdict)
        }
    });
    futures_util::future::join_all(checks).await
}

async fn verdict(http: &reqwest::Client, query: &Query) -> Verdict {
    let url = &query.prometheus;
    let client = match prometheus_http_query::Client::from(http.clone(), url) {
        Ok(client) => client,
        Err(err) => return Verdict::Unchecked(format!("invalid Prometheus URL {url:?}: {err}")),
    };
    match client.query(query.query.as_str()).get().await {
        Ok(_) => Verdict::Accepted,
        Err(Error::Prometheus(err)) if err.error_type() == PrometheusErrorType::BadData => Verdict::Rejected(format!(
            "Prometheus at {url} rejects {:?}: {}",
            query.query,
            err.message()
        )),
        Err(err) => Verdict::Unchecked(format!("Prometheus at {url} could not run {:?}: {err}", query.query)),
    }
}
