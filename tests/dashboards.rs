//! The Grafana dashboards: provisioned datasource by uid, and every panel's
//! PromQL returns data from a real Prometheus scraping a running homeostat.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{eventually, notification, test_config, InProcess, Prometheus};
use homeostat::config::Credentials;
use homeostat::pipeline::LogTransitions;
use serde_json::Value;

fn dashboards() -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana/dashboards");
    let mut found: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), json)
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!found.is_empty(), "no dashboards under {}", dir.display());
    found
}

/// Every (dashboard, panel title, expr) with Grafana's interval variables resolved.
fn panel_queries() -> Vec<(String, String, String)> {
    let mut queries = Vec::new();
    for (file, dashboard) in dashboards() {
        for panel in dashboard["panels"].as_array().unwrap() {
            let title = panel["title"].as_str().unwrap().to_owned();
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap().replace("$__rate_interval", "1m");
                queries.push((file.clone(), title.clone(), expr));
            }
        }
    }
    queries
}

#[test]
fn dashboards_use_the_provisioned_datasource_not_inputs() {
    for (file, dashboard) in dashboards() {
        assert!(dashboard.get("__inputs").is_none(), "{file} uses __inputs");
        assert!(dashboard["uid"].is_string(), "{file} has no uid");
        for panel in dashboard["panels"].as_array().unwrap() {
            let uid = &panel["datasource"]["uid"];
            assert!(
                uid == "${datasource}" || uid == "prometheus",
                "{file}: panel {} uses {uid}",
                panel["title"]
            );
        }
    }
}

#[tokio::test]
async fn every_panel_returns_data_from_a_live_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let server = InProcess::start(test_config(dir.path()), Credentials::default(), LogTransitions).await;
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/homeostat.rules.yml");
    let prometheus = Prometheus::start(&[server.addr], &[rules]).await;

    // Steady webhook traffic for the rates and histograms to show.
    let (client, url) = (server.client.clone(), server.url("/api/v1/alerts"));
    let traffic = tokio::spawn(async move {
        for i in 0u64.. {
            let fingerprint = format!("d{}", i % 20);
            let _ = client
                .post(&url)
                .json(&notification("firing", &[&fingerprint]))
                .send()
                .await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    for (file, title, expr) in panel_queries() {
        eventually(
            &format!("{file}: panel {title:?}: {expr}"),
            Duration::from_secs(60),
            || async {
                let result = prometheus.query(&expr).await;
                let has_number = result.iter().any(|s| {
                    s["value"][1]
                        .as_str()
                        .is_some_and(|v| v.parse::<f64>().is_ok_and(f64::is_finite))
                });
                has_number.then_some(())
            },
        )
        .await;
    }
    traffic.abort();
    server.stop().await;
}
