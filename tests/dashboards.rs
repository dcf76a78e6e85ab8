//! The Grafana dashboards: provisioned datasource by uid, a sane layout,
//! every panel's PromQL accepted by a real Prometheus, and the homeostat
//! dashboard's ingest panels returning data from a Prometheus scraping a
//! running homeostat that receives webhooks.
//!
//! Panels that need more than that (the services, homeostat's decisions and
//! actions) are checked for data by the end-to-end demo test, against the
//! demo's Prometheus, with the same queries (tests/common/dashboards.rs).

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::dashboards::{annotation_queries, dashboards, has_number, panel_queries};
use common::{eventually, notification, test_config, InProcess, Prometheus};
use homeostat_core::config::Credentials;
use homeostat_server::pipeline::LogTransitions;

/// Metrics a homeostat that only receives webhooks never exports: those of
/// acting on an incident (no `actions:` section here) and of adaptive
/// thresholds (no `thresholds:` section). The demo test checks their panels.
const NEEDS_MORE_THAN_WEBHOOKS: [&str; 6] = [
    "ALERTS{",
    "homeostat_decisions_total",
    "homeostat_action_outcomes_total",
    "homeostat_alert_to_action_seconds",
    "homeostat_threshold_",
    "homeostat:threshold_observed",
];

#[test]
fn dashboards_use_the_provisioned_datasource_not_inputs() {
    let mut uids = HashSet::new();
    for (file, dashboard) in dashboards() {
        assert!(dashboard.get("__inputs").is_none(), "{file} uses __inputs");
        let uid = dashboard["uid"].as_str().unwrap_or_else(|| panic!("{file} has no uid"));
        assert!(uids.insert(uid.to_owned()), "{file}: uid {uid} is used twice");
        for panel in dashboard["panels"].as_array().unwrap() {
            let uid = &panel["datasource"]["uid"];
            assert!(
                uid == "${datasource}" || uid == "prometheus",
                "{file}: panel {} uses {uid}",
                panel["title"]
            );
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap_or_default();
                assert!(
                    !expr.trim().is_empty(),
                    "{file}: panel {} has a target without expr",
                    panel["title"]
                );
            }
        }
    }
}

#[test]
fn panels_fit_the_grid_without_overlapping() {
    for (file, dashboard) in dashboards() {
        let mut ids = HashSet::new();
        let mut placed: Vec<(String, [u64; 4])> = Vec::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            let title = panel["title"].as_str().unwrap().to_owned();
            assert!(
                ids.insert(panel["id"].as_u64().unwrap()),
                "{file}: panel id of {title:?} is used twice"
            );
            let grid = &panel["gridPos"];
            let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| {
                grid[k]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{file}: {title:?} has no gridPos.{k}"))
            });
            assert!(
                w > 0 && h > 0 && x + w <= 24,
                "{file}: {title:?} does not fit the 24-column grid"
            );
            for (other, [ox, oy, ow, oh]) in &placed {
                let overlap = x < ox + ow && *ox < x + w && y < oy + oh && *oy < y + h;
                assert!(!overlap, "{file}: {title:?} overlaps {other:?}");
            }
            placed.push((title, [x, y, w, h]));
        }
    }
}

fn rule_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".rules.yml"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn every_panel_query_is_valid_and_the_ingest_panels_return_data() {
    let dir = tempfile::tempdir().unwrap();
    let server = InProcess::start(test_config(dir.path()), Credentials::default(), LogTransitions).await;
    let prometheus = Prometheus::start(&[server.addr], &rule_files()).await;

    // Every query of every dashboard parses and runs (a syntax error or a
    // type error fails the query), whether or not its metrics exist here.
    let queries = panel_queries();
    for (_, _, expr) in queries.iter().chain(&annotation_queries()) {
        prometheus.query(expr).await;
    }

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

    let ingest = queries.into_iter().filter(|(file, _, expr)| {
        file == "homeostat.json" && !NEEDS_MORE_THAN_WEBHOOKS.iter().any(|m| expr.contains(m))
    });
    for (file, title, expr) in ingest {
        eventually(
            &format!("{file}: panel {title:?}: {expr}"),
            Duration::from_secs(60),
            || async { has_number(&prometheus.query(&expr).await).then_some(()) },
        )
        .await;
    }
    traffic.abort();
    server.stop().await;
}
