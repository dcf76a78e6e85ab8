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

    // The operator's view of it.
    let table = common::homeostat_ok(&["anomaly", "show", "--url", homeostat.url("").as_str()]);
    assert!(
        table.contains("latency") && table.contains("scoring") && table.contains("service=web"),
        "{table}"
    );
    assert!(table.contains("alarm at"), "{table}");
    let state = homeostat.get_json("/api/v1/anomaly").await;
    assert_eq!(state["series"][0]["alarm_at"].as_f64(), Some(0.5), "{state}");

    // A restart: the detector resumes from the journal (its points go on
    // from where they were), and the spike it already scored is not scored again.
    let before = homeostat.get_json("/api/v1/anomaly").await["series"][0]["points"]
        .as_u64()
        .unwrap();
    homeostat.stop().await;
    let homeostat = start(&config).await;
    let resumed = scoring(&homeostat).await;
    assert!(
        resumed["points"].as_u64().unwrap() >= before,
        "{resumed} after {before}"
    );
    // Its next round scores on from there (the first may not have run yet).
    eventually(
        "points scored on from the journalled ones",
        Duration::from_secs(60),
        || async {
            let state = homeostat.get_json("/api/v1/anomaly").await;
            let points = state["series"][0]["points"].as_u64()?;
            (points > before).then_some(())
        },
    )
    .await;
    let after = live_points(&homeostat, 10).await;
    assert_eq!(
        counter(&after, "homeostat_anomaly_alarms_total{anomaly_spec=\"latency\"}"),
        0.0,
        "alarms after the restart:\n{after}"
    );
    assert!(counter(&after, "homeostat_anomaly_points_total{anomaly_spec=\"latency\"}") >= 1.0);
    homeostat.stop().await;

    // The CLI scores the same history and finds the spike.
    let score = |extra: &[&str]| {
        let mut args = vec![
            "anomaly",
            "score",
            "--prometheus",
            prometheus.url(),
            "--query",
            "test_latency_seconds",
            "--step",
            "1s",
            "--range",
            "15m",
            "--learning",
            "120",
        ];
        args.extend_from_slice(extra);
        common::homeostat_ok(&args)
    };
    let stdout = score(&[]);
    assert!(stdout.contains("service=web") && stdout.contains("1.00"), "{stdout}");
    // Calibrated, the spike is still an alarm, at the calibrated scale's
    // threshold (0.2) and at most at the rules' own score.
    let stdout = score(&["--calibrate", "--json"]);
    let scored: Value = serde_json::from_str(&stdout).unwrap();
    let alarms = scored[0]["alarms"].as_array().unwrap();
    assert!(!alarms.is_empty(), "{scored}");
    let max = scored[0]["max_score"].as_f64().unwrap();
    assert!((0.2..=1.0).contains(&max), "{scored}");
}

/// CPU seconds (user and system) process `pid` has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name (which may hold spaces) close at ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

/// Peak resident memory of process `pid`, MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(f64::NAN)
        / 1024.0
}

/// What scoring live series costs (`cargo test --release --test anomaly --
/// --ignored --nocapture`; docs/BENCHMARKS.md): `HOMEOSTAT_BENCH_SERIES`
/// series (default 1,000) of a real Prometheus at a 15 s step, with 1,000
/// points of history each, scored by `homeostat serve` with the spec's
/// defaults (learning 750 points, history 2,880, state journalled every
/// 5 minutes) for `HOMEOSTAT_BENCH_ROUNDS` rounds (default 24: six
/// minutes), beside the same homeostat without the spec as the baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn benchmark_a_thousand_live_series() {
    let var = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let series = var("HOMEOSTAT_BENCH_SERIES", 1000);
    let rounds = var("HOMEOSTAT_BENCH_ROUNDS", 24);
    const STEP: i64 = 15;
    const POINTS: i64 = 1000;
    let value = |s: usize, t: i64| {
        let cycle = (2.0 * std::f64::consts::PI * (t as f64 / 3600.0 + s as f64 / 7.0)).sin();
        1.0 + 0.3 * cycle + 0.02 * noise(t + s as i64 * 7919)
    };
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || async move {
            let now = chrono::Utc::now().timestamp();
            (0..series)
                .map(|s| format!("bench_value{{series=\"{s}\"}} {}\n", value(s, now)))
                .collect::<String>()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let end = chrono::Utc::now().timestamp() + 30;
    let mut history = String::from("# TYPE bench_value gauge\n");
    for s in 0..series {
        for t in (0..POINTS).map(|i| end - (POINTS - 1 - i) * STEP) {
            history.push_str(&format!(
                "bench_value{{instance=\"{target}\",job=\"homeostat\",series=\"{s}\"}} {} {t}\n",
                value(s, t)
            ));
        }
    }
    history.push_str("# EOF\n");
    let backfilled = std::time::Instant::now();
    let prometheus = Prometheus::start_with_history(&[target], &[], Some(&history)).await;
    eprintln!(
        "backfill and start of Prometheus: {:.1} s",
        backfilled.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, anomaly: &str| {
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &file,
            format!(
                "server:\n  listen: 127.0.0.1:0\njournal:\n  path: {}\n{anomaly}",
                dir.path().join(format!("{name}.db")).display()
            ),
        )
        .unwrap();
        file
    };
    let scored = write(
        "scored",
        &format!(
            "anomaly:\n  prometheus_url: {}\n  rules_dir: {}\n  specs:\n    - name: bench\n      expr: bench_value\n      step: 15s\n",
            prometheus.url(),
            dir.path().join("rules").display()
        ),
    );
    let idle = write("idle", "");
    let started = std::time::Instant::now();
    let homeostat = common::Process::start(&scored);
    let baseline = common::Process::start(&idle);
    let client = reqwest::Client::new();
    let points = |exposition: &str| counter(exposition, "homeostat_anomaly_points_total{anomaly_spec=\"bench\"}");
    let metrics = || async {
        client
            .get(homeostat.url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()
    };
    // The first round learns every series from its history.
    let first = eventually("the first round", Duration::from_secs(600), || async {
        let exposition = metrics().await?;
        let scoring = counter(
            &exposition,
            "homeostat_anomaly_series{anomaly_spec=\"bench\",state=\"scoring\"}",
        );
        (scoring as usize == series).then_some(exposition)
    })
    .await;
    let learned = points(&first);
    let (first_cpu, first_wall) = (cpu_seconds(homeostat.child.id()), started.elapsed().as_secs_f64());
    let (cpu0, base0, t0) = (
        cpu_seconds(homeostat.child.id()),
        cpu_seconds(baseline.child.id()),
        std::time::Instant::now(),
    );
    let wanted = learned + (rounds * series) as f64;
    let last = eventually(
        "the rounds",
        Duration::from_secs(STEP as u64 * (rounds as u64 + 4)),
        || async {
            let exposition = metrics().await?;
            (points(&exposition) >= wanted).then_some(exposition)
        },
    )
    .await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(homeostat.child.id()) - cpu0;
    let base = cpu_seconds(baseline.child.id()) - base0;
    let round = counter(&last, "homeostat_anomaly_round_seconds{anomaly_spec=\"bench\"}");
    eprintln!(
        "{series} series, step 15s: first round (learning from {learned} points of history): {first_cpu:.2} CPU s, \
         {first_wall:.1} s from start; then {rounds} rounds ({:.0} points) in {wall:.1} s: {cpu:.2} CPU s = {:.4} cores \
         (baseline without the spec: {base:.2} CPU s = {:.4} cores); last round {:.1} ms; peak RSS {:.1} MiB (baseline {:.1} MiB)",
        points(&last) - learned,
        cpu / wall,
        base / wall,
        round * 1000.0,
        peak_rss_mib(homeostat.child.id()),
        peak_rss_mib(baseline.child.id()),
    );
    assert!(points(&last) >= wanted);
}
