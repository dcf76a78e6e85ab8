//! Anomaly detection inside the loop, against a real Prometheus holding ten
//! minutes of a series' history (backfilled with promtool before it starts)
//! and scraping a live exporter the test controls, and a real Alertmanager
//! sending to homeostat: the series learns from its history and scores at
//! once; a spike raises its score, the generated alert fires through
//! Alertmanager with the series' own labels (its `instance` too, though
//! Prometheus scraped it as `exported_instance`), and the decision on it
//! shows the score among the policy's features; a restart resumes the
//! detector from the journal, raises no alarm, and goes on counting points;
//! `homeostat anomaly score` finds the spike in Prometheus' history.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, free_port, test_config, Alertmanager, InProcess, Prometheus};
use homeostat_adapters::executor::docker::DockerExecutor;
use homeostat_adapters::executor::DryRun;
use homeostat_core::action::Backend;
use homeostat_core::config::{ActionsConfig, Config, Credentials, PolicyMode};
use homeostat_core::playbook::Playbook;
use homeostat_server::pipeline::Responder;
use serde_json::Value;

/// Seconds of history backfilled, one point a second.
const HISTORY: i64 = 600;
const CONTAINER: &str = "homeostat-anomaly-test-web";

/// Uniform noise in [-0.5, 0.5) from a fixed-seed hash.
fn noise(t: i64) -> f64 {
    let mut x = (t as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5
}

/// The series at unix second `t`: a 30-second cycle of ±20% around 100 ms, ±2% noise.
fn normal(t: i64) -> f64 {
    let cycle = (2.0 * std::f64::consts::PI * t as f64 / 30.0).sin();
    0.1 * (1.0 + 0.2 * cycle + 0.02 * noise(t))
}

fn labels(exporter: SocketAddr) -> String {
    format!("container=\"{CONTAINER}\",instance=\"{exporter}\",job=\"homeostat\",service=\"web\"")
}

/// The history as OpenMetrics, with the labels the live scrape gives.
fn openmetrics(exporter: SocketAddr, end: i64) -> String {
    let mut text = String::from("# HELP test_latency_seconds p99 latency.\n# TYPE test_latency_seconds gauge\n");
    for t in end - HISTORY + 1..=end {
        text.push_str(&format!(
            "test_latency_seconds{{{}}} {} {t}\n",
            labels(exporter),
            normal(t)
        ));
    }
    text.push_str("# EOF\n");
    text
}

/// Serves the series at the current second, or `spike` when it is not 0.
async fn exporter(spike: Arc<AtomicU64>) -> SocketAddr {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let spike = f64::from_bits(spike.load(Ordering::Relaxed));
            async move {
                let now = chrono::Utc::now().timestamp();
                let value = if spike > 0.0 { spike } else { normal(now) };
                format!("test_latency_seconds{{container=\"{CONTAINER}\",service=\"web\"}} {value}\n")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn config(dir: &Path, listen: SocketAddr, prometheus: &str) -> Config {
    let mut config = test_config(dir);
    config.server.listen = listen;
    config.anomaly = Some(
        serde_yaml::from_str(&format!(
            "prometheus_url: {prometheus}\nrules_dir: {}\npersist_every: 1h\nspecs:\n  - name: latency\n    \
             expr: test_latency_seconds\n    step: 1s\n    learning: 120\n    history: {HISTORY}\n    hold: 20s\n",
            dir.join("rules").display()
        ))
        .unwrap(),
    );
    let playbook = dir.join("playbook.yml");
    std::fs::write(
        &playbook,
        "rules:\n  - name: anomalous\n    matchers: ['alertname=\"AnomalousSeries\"']\n    actions: [restart]\n",
    )
    .unwrap();
    let actions: ActionsConfig = serde_yaml::from_str(&format!(
        "backend: docker\ndry_run: true\nplaybook: {}\npolicy: {{mode: shadow}}\n",
        playbook.display()
    ))
    .unwrap();
    assert_eq!(actions.policy.mode, PolicyMode::Shadow);
    config.actions = Some(actions);
    config
}

async fn start(config: &Config) -> InProcess {
    let actions = config.actions.clone().unwrap();
    assert_eq!(actions.backend, Backend::Docker);
    let executor = DockerExecutor::connect(actions.docker.clone()).await.unwrap();
    let playbook = Playbook::load(&actions.playbook).unwrap();
    InProcess::start_with(config.clone(), Credentials::default(), move |parts| {
        Responder::new(DryRun(executor), parts, playbook, actions)
    })
    .await
}

/// The one series the API shows, once it shows one that scores.
async fn scoring(homeostat: &InProcess) -> Value {
    eventually("the series scoring", Duration::from_secs(60), || async {
        let state = homeostat.get_json("/api/v1/anomaly").await;
        state["series"]
            .as_array()
            .and_then(|s| s.first().cloned())
            .filter(|s| s["learning"] == false)
    })
    .await
}

/// The exposition once `more` points past the current ones were scored:
/// what a quiet stretch of the live series left.
async fn live_points(homeostat: &InProcess, more: u64) -> String {
    const POINTS: &str = "homeostat_anomaly_points_total{anomaly_spec=\"latency\"}";
    let from = counter(&homeostat.metrics().await, POINTS);
    eventually("live points scored", Duration::from_secs(60), || async {
        let exposition = homeostat.metrics().await;
        (counter(&exposition, POINTS) >= from + more as f64).then_some(exposition)
    })
    .await
}

fn counter(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spike_alerts_through_alertmanager_and_a_restart_resumes_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let spike = Arc::new(AtomicU64::new(0f64.to_bits()));
    let target = exporter(Arc::clone(&spike)).await;
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let alertmanager = Alertmanager::start(&format!("http://{listen}/api/v1/alerts"), "").await;
    // The history runs a little into the future: Prometheus refuses
    // scrapes older than its newest block, so the live series takes over
    // where the history ends, with no gap (a gap is a break in the series'
    // shape, which the detector rightly scores).
    let end = chrono::Utc::now().timestamp() + 15;
    let prometheus = Prometheus::start_alerting(
        &[target, listen],
        &[dir.path().join("rules/*.rules.yml")],
        Some(&openmetrics(target, end)),
        Some(alertmanager.url()),
    )
    .await;
    let config = config(dir.path(), listen, prometheus.url());
    let homeostat = start(&config).await;

    // It learned from the history: it scores from its first round, and
    // nothing in the quiet series alarms.
    let series = scoring(&homeostat).await;
    assert_eq!(series["labels"]["instance"], target.to_string(), "{series}");
    assert!(series["points"].as_u64().unwrap() >= 500, "{series}");
    let rules = std::fs::read_to_string(dir.path().join("rules/homeostat-anomaly.rules.yml")).unwrap();
    assert!(rules.contains("alert: AnomalousSeries"), "{rules}");
    eventually("the anomaly rule on Prometheus", Duration::from_secs(30), || async {
        let loaded: Value = reqwest::get(format!("{}/api/v1/rules", prometheus.url()))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        loaded.to_string().contains("AnomalousSeries").then_some(())
    })
    .await;
    let quiet = live_points(&homeostat, 10).await;
    assert_eq!(
        counter(&quiet, "homeostat_anomaly_alarms_total{anomaly_spec=\"latency\"}"),
        0.0,
        "a quiet series alarmed (history ends at {end}): {}",
        homeostat.get_json("/api/v1/anomaly").await
    );
    assert_eq!(alertmanager.alerts().await.unwrap_or_default().len(), 0);

    // A spike: the score rises, the alert fires through Alertmanager with
    // the series' labels, and the decision shows the score.
    spike.store(1.0f64.to_bits(), Ordering::Relaxed);
    let alert = eventually("AnomalousSeries in Alertmanager", Duration::from_secs(60), || async {
        alertmanager
            .alerts()
            .await?
            .into_iter()
            .find(|a| a["labels"]["alertname"] == "AnomalousSeries")
    })
    .await;
    spike.store(0f64.to_bits(), Ordering::Relaxed);
    let labels = &alert["labels"];
    assert_eq!(labels["service"], "web", "{alert}");
    assert_eq!(labels["container"], CONTAINER, "{alert}");
    assert_eq!(labels["anomaly_spec"], "latency", "{alert}");
    assert_eq!(labels["instance"], target.to_string(), "{alert}");
    assert!(labels.get("exported_instance").is_none(), "{alert}");
    let exposition = homeostat.metrics().await;
    assert!(counter(&exposition, "homeostat_anomaly_alarms_total{anomaly_spec=\"latency\"}") >= 1.0);
    let decision = eventually("a decision on the anomaly", Duration::from_secs(60), || async {
        let page = homeostat.get_json("/api/v1/incidents?alertname=AnomalousSeries").await;
        let id = page["incidents"].as_array()?.first()?["id"].as_i64()?;
        homeostat.decisions(id).await.into_iter().next()
    })
    .await;
    let features = &decision["record"]["policy"]["view"]["choice"]["features"];
    let score = features["anomaly_score"]
        .as_f64()
        .unwrap_or_else(|| panic!("{decision}"));
    assert!(score >= 0.5, "{decision}");
    assert!(
        decision["record"]["policy"]["view"]["choice"]["context"]
            .as_str()
            .is_some_and(|c| c.contains("anomalous")),
        "{decision}"
    );

    // A restart: the detector resumes from the journal (its points go on
    // from where they were), and the spike it already scored is not scored again.
    let before = homeostat.get_json("/api/v1/anomaly").await["series"][0]["points"]
        .as_u64()
        .unwrap();
    homeostat.stop().await;
    let homeostat = start(&config).await;
    let resumed = scoring(&homeostat).await;
    assert!(resumed["points"].as_u64().unwrap() > before, "{resumed} after {before}");
    let after = live_points(&homeostat, 10).await;
    assert_eq!(
        counter(&after, "homeostat_anomaly_alarms_total{anomaly_spec=\"latency\"}"),
        0.0,
        "alarms after the restart:\n{after}"
    );
    assert!(counter(&after, "homeostat_anomaly_points_total{anomaly_spec=\"latency\"}") >= 1.0);
    homeostat.stop().await;

    // The CLI scores the same history and finds the spike.
    let output = Command::new(common::BIN)
        .args(["anomaly", "score", "--prometheus", prometheus.url()])
        .args([
            "--query",
            "test_latency_seconds",
            "--step",
            "1s",
            "--range",
            "15m",
            "--learning",
            "120",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("service=web") && stdout.contains("1.00"), "{stdout}");
}
