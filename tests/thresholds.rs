//! Adaptive thresholds against a real Prometheus holding a week of
//! seasonal history (backfilled with `promtool tsdb create-blocks-from
//! openmetrics` before it starts) and scraping a live exporter the test
//! controls: the band holds the held-back hour and not the anomalies in it;
//! `homeostat serve` renders rules that pass `promtool check rules`, reloads
//! Prometheus and its `/api/v1/rules` shows them; an anomaly makes the
//! generated alert fire; feedback on it moves the band and `thresholds show`
//! says so; a broken render leaves the previous rules active; a refit whose
//! thresholds did not move rewrites nothing and does not reload Prometheus.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use homeostat_adapters::rules::{self, Published, RuleWriter, UpdateError};
use homeostat_core::config::Credentials;
use homeostat_core::threshold::{self, ThresholdsConfig};
use homeostat_server::pipeline::LogTransitions;
use serde_json::{json, Value};

const STEP: i64 = 60;
const DAY: usize = 1440;
const WEEK: usize = 7 * DAY;
/// The last hour of the week is held back from the fit.
const HOLDOUT: usize = 60;
/// Held-back points of service `a` made anomalous.
const ANOMALIES: [usize; 3] = [20, 35, 50];
const SERVICES: [&str; 2] = ["a", "b"];
const EXPR: &str = "max by (service) (demo_latency_seconds)";

/// Uniform noise in [-0.5, 0.5) from a fixed-seed hash.
fn noise(i: usize, salt: u64) -> f64 {
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt;
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5
}

/// Point `i` of a service's latency: a daily cycle of ±30% with ±2% noise.
fn normal(service: usize, i: usize) -> f64 {
    let base = [0.2, 0.5][service];
    let daily = (2.0 * std::f64::consts::PI * i as f64 / DAY as f64).sin();
    base * (1.0 + 0.3 * daily + 0.04 * noise(i, service as u64))
}

fn is_anomaly(service: usize, i: usize) -> bool {
    service == 0 && i >= WEEK - HOLDOUT && ANOMALIES.contains(&(i - (WEEK - HOLDOUT)))
}

fn value(service: usize, i: usize) -> f64 {
    let v = normal(service, i);
    if is_anomaly(service, i) {
        v + 0.5 * [0.2, 0.5][service]
    } else {
        v
    }
}

/// The week as OpenMetrics, its last point at `end` (unix seconds).
fn openmetrics(end: i64) -> String {
    let first = end - (WEEK as i64 - 1) * STEP;
    let mut text = String::from("# HELP demo_latency_seconds p99 latency.\n# TYPE demo_latency_seconds gauge\n");
    for (s, service) in SERVICES.iter().enumerate() {
        for i in 0..WEEK {
            text.push_str(&format!(
                "demo_latency_seconds{{service=\"{service}\"}} {} {}\n",
                value(s, i),
                first + i as i64 * STEP
            ));
        }
    }
    text.push_str("# EOF\n");
    text
}

/// A scrape target serving `demo_latency_seconds` per service, values set by the test.
async fn exporter(values: Arc<Mutex<[f64; 2]>>) -> std::net::SocketAddr {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let values = *values.lock().unwrap();
            async move {
                SERVICES
                    .iter()
                    .zip(values)
                    .map(|(s, v)| format!("demo_latency_seconds{{service=\"{s}\"}} {v}\n"))
                    .collect::<String>()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn get(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// The adaptive group's rules on Prometheus: (service, expr) per rule.
async fn active_rules(prometheus: &str) -> Vec<(String, String)> {
    let rules = get(&format!("{prometheus}/api/v1/rules")).await;
    let mut found = Vec::new();
    for group in rules["data"]["groups"].as_array().into_iter().flatten() {
        if group["name"] != "homeostat_threshold_latency" {
            continue;
        }
        for rule in group["rules"].as_array().into_iter().flatten() {
            let series = rule["annotations"][threshold::SERIES_ANNOTATION]
                .as_str()
                .unwrap_or_default();
            found.push((series.to_owned(), rule["query"].as_str().unwrap_or_default().to_owned()));
        }
    }
    found.sort();
    found
}

/// The number after `> ` in a generated rule's expression.
fn threshold_of(expr: &str) -> f64 {
    let rest = expr
        .split(") > ")
        .nth(1)
        .unwrap_or_else(|| panic!("no threshold in {expr}"));
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

/// A gauge's value in homeostat's exposition.
fn gauge(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// `promtool check rules FILE` passes.
fn check_rules(promtool: &Path, file: &Path) {
    let check = Command::new(promtool)
        .args(["check", "rules"])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}: {}{}",
        file.display(),
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

fn spec_config(prometheus: &str, rules_dir: &Path) -> ThresholdsConfig {
    serde_yaml::from_str(&format!(
        "prometheus_url: {prometheus}\nrules_dir: {}\nspecs:\n  - name: latency\n    expr: '{EXPR}'\n    \
         alert: LatencyAboveBand\n    coverage: 0.99\n    step: 1m\n    history: 7d\n    refit_interval: 10m\n    \
         for: 1s\n    labels: {{severity: page}}\n    annotations:\n      summary: 'p99 latency {{{{ printf \"%.3f\" $value }}}}s is above its band'\n    \
         slo_alerts: [LatencySLO]\n    exhaustion: {{limit: 100, window: 10m}}\n  - name: quick\n    expr: '{EXPR}'\n    \
         alert: LatencyBelowBand\n    direction: below\n    step: 1s\n    history: 5m\n    refit_interval: 2s\n    for: 1h\n",
        rules_dir.display()
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_follow_history_and_rewrite_prometheus_rules() {
    let promtool = common::require_program("promtool", "prometheus");
    let dir = tempfile::tempdir().unwrap();
    let rules_dir = dir.path().join("rules");
    let now = chrono::Utc::now().timestamp();
    let end = now / STEP * STEP - STEP;
    let live = Arc::new(Mutex::new([normal(0, WEEK), normal(1, WEEK)]));
    let target = exporter(Arc::clone(&live)).await;
    let prometheus =
        common::Prometheus::start_with_history(&[target], &[rules_dir.join("*.rules.yml")], Some(&openmetrics(end)))
            .await;
    let client = rules::Prometheus::new(prometheus.url(), Duration::from_secs(30)).unwrap();

    // The band fitted on the week before the held-back hour.
    let fit_end = end - HOLDOUT as i64 * STEP;
    let history = client
        .range(EXPR, fit_end, Duration::from_secs(STEP as u64), WEEK - HOLDOUT)
        .await
        .unwrap();
    assert_eq!(
        history.len(),
        2,
        "{:?}",
        history.iter().map(|s| &s.labels).collect::<Vec<_>>()
    );
    for (s, series) in history.iter().enumerate() {
        assert_eq!(series.labels["service"], SERVICES[s]);
        let known = series.values.iter().filter(|v| v.is_finite()).count();
        assert!(known > WEEK - HOLDOUT - 10, "{known} points of history");
        let (band, _) = threshold::fit_series(&series.values, Duration::from_secs(STEP as u64), HOLDOUT, 0.99).unwrap();
        assert!(band.model.starts_with("mstl[1440]"), "{}", band.model);
        let (mut normal_points, mut inside) = (0, 0);
        for k in 0..HOLDOUT {
            let i = WEEK - HOLDOUT + k;
            let (v, within) = (
                value(s, i),
                band.lower[k] <= value(s, i) && value(s, i) <= band.upper[k],
            );
            if is_anomaly(s, i) {
                assert!(
                    v > band.upper[k],
                    "anomaly {v} at {k} inside [{}, {}]",
                    band.lower[k],
                    band.upper[k]
                );
            } else {
                normal_points += 1;
                inside += usize::from(within);
            }
        }
        assert!(
            inside as f64 >= 0.9 * normal_points as f64,
            "service {}: {inside}/{normal_points} held-back points in the band",
            SERVICES[s]
        );
    }

    // homeostat serve: the first refit runs at start-up and reloads Prometheus.
    let thresholds = spec_config(prometheus.url(), &rules_dir);
    let mut config = common::test_config(dir.path());
    config.thresholds = Some(thresholds.clone());
    let config_file = dir.path().join("homeostat.yaml");
    std::fs::write(&config_file, serde_yaml::to_string(&config).unwrap()).unwrap();
    // The same config with no journal (for `render` below).
    let without_journal = dir.path().join("no-journal.yaml");
    let mut plain_config = config.clone();
    plain_config.journal.path = dir.path().join("none.db");
    std::fs::write(&without_journal, serde_yaml::to_string(&plain_config).unwrap()).unwrap();
    let homeostat = common::InProcess::start(config, Credentials::default(), LogTransitions).await;
    let rules = common::eventually("the generated rules on Prometheus", Duration::from_secs(60), || async {
        let rules = active_rules(prometheus.url()).await;
        (rules.len() == 2).then_some(rules)
    })
    .await;
    assert_eq!(rules[0].0, r#"{service="a"}"#);
    let file = rules_dir.join("latency.rules.yml");
    check_rules(&promtool, &file);
    let exposition = homeostat.metrics().await;
    for (service, expr) in [("a", &rules[0].1), ("b", &rules[1].1)] {
        let upper = gauge(
            &exposition,
            &format!("homeostat_threshold_upper{{threshold_spec=\"latency\",service=\"{service}\"}}"),
        )
        .unwrap_or_else(|| panic!("no upper threshold for {service} in\n{exposition}"));
        assert!(
            (threshold_of(expr) - upper).abs() <= 1e-9 * upper.abs(),
            "{expr} vs {upper}"
        );
        assert!(exposition.contains(&format!(
            "homeostat_threshold_forecast{{threshold_spec=\"latency\",service=\"{service}\"}}"
        )));
    }
    common::check_metrics(&exposition);
    // Each spec on its own interval: `quick` is refitted every 2 s, `latency` (10m) is not.
    // A refit writes rules (an update) or finds its thresholds unmoved (a skipped write).
    let latency_file = std::fs::read(&file).unwrap();
    common::eventually(
        "three more refits of the quick spec",
        Duration::from_secs(30),
        || async {
            let exposition = homeostat.metrics().await;
            let ok = gauge(&exposition, "homeostat_threshold_updates_total{result=\"ok\"}");
            let skipped = gauge(
                &exposition,
                "homeostat_threshold_writes_skipped_total{threshold_spec=\"quick\"}",
            );
            let refits = ok.unwrap_or(0.0) + skipped.unwrap_or(0.0);
            (refits >= 5.0).then_some(refits)
        },
    )
    .await;
    assert_eq!(
        std::fs::read(&file).unwrap(),
        latency_file,
        "latency was refitted early"
    );

    // An anomaly on service a makes its generated alert fire; b stays quiet.
    live.lock().unwrap()[0] = 10.0 * threshold_of(&rules[0].1);
    let alert = common::eventually(
        "LatencyAboveBand firing for service a",
        Duration::from_secs(60),
        || async {
            let alerts = get(&format!("{}/api/v1/alerts", prometheus.url())).await;
            alerts["data"]["alerts"].as_array().and_then(|all| {
                all.iter()
                    .find(|a| a["labels"]["service"] == "a" && a["state"] == "firing")
                    .cloned()
            })
        },
    )
    .await;
    assert_eq!(alert["labels"]["alertname"], "LatencyAboveBand");
    assert_eq!(alert["labels"]["severity"], "page");
    assert_eq!(alert["labels"][threshold::SPEC_LABEL], "latency");
    // predict_linear's time to the limit, computed by Prometheus, rides on the alert.
    let exhaustion = alert["annotations"]["time_to_exhaustion"].as_str().unwrap_or_default();
    assert!(
        !exhaustion.is_empty() && !exhaustion.contains("error") && exhaustion != "unknown",
        "{exhaustion:?}"
    );
    let alerts = get(&format!("{}/api/v1/alerts", prometheus.url())).await;
    let quiet = alerts["data"]["alerts"].as_array().unwrap();
    assert!(
        quiet
            .iter()
            .all(|a| a["labels"]["alertname"] != "LatencyAboveBand" || a["labels"]["service"] != "b"),
        "{quiet:?}"
    );

    // The alert reaches homeostat (as Alertmanager would send it); a user marks it false.
    let mut notification = common::notification("firing", &["fp-latency-a"]);
    notification["alerts"][0]["labels"] = alert["labels"].clone();
    notification["alerts"][0]["annotations"] = alert["annotations"].clone();
    let ack: Value = homeostat
        .post_json("/api/v1/alerts", &notification)
        .await
        .json()
        .await
        .unwrap();
    let incident = ack["incidents"][0].as_i64().unwrap();
    let feedback = format!("/api/v1/incidents/{incident}/feedback");
    let response = homeostat
        .post_json(&feedback, &json!({"verdict": "false_alarm", "comment": "deploy day"}))
        .await;
    assert_eq!(response.status(), 200);
    let step: Value = response.json().await.unwrap();
    assert_eq!(step["recorded"], true);
    assert_eq!(step["series"], r#"{service="a"}"#);
    assert_eq!(step["step"]["coverage_before"], 0.99);
    let after = step["step"]["coverage_after"].as_f64().unwrap();
    assert!((after - 0.995).abs() < 1e-9, "{step}");
    let again: Value = homeostat
        .post_json(&feedback, &json!({"verdict": "false_alarm"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["recorded"], false, "one step per incident");
    for (path, body, status) in [
        (feedback.as_str(), json!({"verdict": "maybe"}), 400),
        (feedback.as_str(), json!({"verdict": "false_alarm", "extra": 1}), 400),
        (
            "/api/v1/incidents/999999/feedback",
            json!({"verdict": "false_alarm"}),
            404,
        ),
    ] {
        assert_eq!(homeostat.post_json(path, &body).await.status(), status, "{path} {body}");
    }
    let other: Value = homeostat
        .post_json("/api/v1/alerts", &common::notification("firing", &["fp-other"]))
        .await
        .json()
        .await
        .unwrap();
    let other = format!("/api/v1/incidents/{}/feedback", other["incidents"][0]);
    let refused = homeostat.post_json(&other, &json!({"verdict": "false_alarm"})).await;
    assert_eq!(refused.status(), 422);

    // `thresholds show` reads the journal: the bands, the rule update, the step and its reason.
    let shown = common::homeostat_ok(&["thresholds", "show", "--config", config_file.to_str().unwrap()]);
    for expected in [
        "spec latency",
        "rules: updated",
        "2 rules in",
        r#"{service="a"} ["#,
        r#"{service="b"} ["#,
        "widen: 0.99 → 0.995 (marked_false",
        "deploy day",
    ] {
        assert!(shown.contains(expected), "{expected:?} missing from\n{shown}");
    }
    homeostat.stop().await;

    // `thresholds fit --json`: per series its labels and arrays of timestamps, point, lower, upper.
    let fit = Command::new(common::BIN)
        .args(["thresholds", "fit", "--prometheus", prometheus.url(), "--query", EXPR])
        .args([
            "--step",
            "1m",
            "--history",
            "3d",
            "--horizon",
            "30m",
            "--coverage",
            "0.95",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(fit.status.success(), "{}", String::from_utf8_lossy(&fit.stderr));
    let bands: Value = serde_json::from_slice(&fit.stdout).unwrap();
    let bands = bands.as_array().unwrap();
    assert_eq!(bands.len(), 2, "{bands:?}");
    for band in bands {
        let len = |k: &str| band[k].as_array().map(Vec::len);
        assert_eq!(
            [len("timestamps"), len("point"), len("lower"), len("upper")],
            [Some(30); 4],
            "{band}"
        );
        let t = band["timestamps"].as_array().unwrap();
        assert_eq!(t[1].as_i64().unwrap() - t[0].as_i64().unwrap(), STEP);
        assert!(band["labels"]["service"].is_string());
        for k in 0..30 {
            let (l, p, u) = (
                band["lower"][k].as_f64(),
                band["point"][k].as_f64(),
                band["upper"][k].as_f64(),
            );
            assert!(l <= p && p <= u, "{band}");
        }
    }

    // `thresholds render --out DIR`: the rule files, without touching the live ones.
    let render = |config: &std::path::Path, out: &std::path::Path| {
        let render = Command::new(common::BIN)
            .args(["thresholds", "render", "--config"])
            .arg(config)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap();
        assert!(render.status.success(), "{}", String::from_utf8_lossy(&render.stderr));
        render
    };
    let out = dir.path().join("rendered");
    let render_out = render(&config_file, &out);
    let rendered = out.join("latency.rules.yml");
    check_rules(&promtool, &rendered);
    // It fits at the coverage feedback moved service a to (0.995), as `serve`
    // does (the coverage is the fit's own); without the journal, at the
    // configured one.
    let said = String::from_utf8_lossy(&render_out.stdout);
    assert!(
        said.contains("latency: 2 series")
            && said.contains(r#"{service="a"} at coverage 0.995 (moved by feedback)"#)
            && !said.contains(r#"{service="b"} at coverage"#),
        "{said}"
    );
    let plain = render(&without_journal, &dir.path().join("rendered-plain"));
    let said = String::from_utf8_lossy(&plain.stdout);
    assert!(
        said.contains("latency: 2 series") && !said.contains("moved by feedback"),
        "{said}"
    );

    // A broken render (an annotation template that does not parse) leaves the
    // previous rules active: promtool refuses it, or, without promtool,
    // Prometheus' reload does and the previous file is put back.
    let before = std::fs::read(&file).unwrap();
    let mut broken = thresholds.specs[0].clone();
    broken.annotations.insert("summary".into(), "{{ $value ".into());
    for checker in [Some(promtool.clone()), None] {
        let checked = checker.is_some();
        let writer = RuleWriter {
            dir: rules_dir.clone(),
            promtool: checker,
        };
        let outcomes = rules::refit(
            std::slice::from_ref(&broken),
            &client,
            &HashMap::new(),
            &writer,
            Some(&client),
            chrono::Utc::now(),
            2,
            None,
        )
        .await;
        match (&outcomes[0].result, checked) {
            (Err(UpdateError::Check(why)), true) => assert!(why.contains("template"), "{why}"),
            (Err(UpdateError::Reload(why)), false) => assert!(why.contains("reload"), "{why}"),
            (other, _) => panic!("expected the broken render to be refused, got {other:?}"),
        }
        assert_eq!(
            std::fs::read(&file).unwrap(),
            before,
            "the previous rule file is in place"
        );
        assert_eq!(
            active_rules(prometheus.url()).await,
            rules,
            "the previous rules are active"
        );
        let metrics = reqwest::get(format!("{}/metrics", prometheus.url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(rules::last_reload_successful(&metrics), Some(true));
    }
    let leftovers: Vec<_> = std::fs::read_dir(&rules_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut leftovers: Vec<String> = leftovers.into_iter().map(|n| n.into_string().unwrap()).collect();
    leftovers.sort();
    assert_eq!(
        leftovers,
        ["latency.rules.yml", "quick.rules.yml"],
        "no temporary file is left"
    );
}

/// Prometheus' `prometheus_config_last_reload_success_timestamp_seconds`.
async fn last_reload(prometheus: &str) -> f64 {
    let metrics = reqwest::get(format!("{prometheus}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    gauge(&metrics, "prometheus_config_last_reload_success_timestamp_seconds").expect("a reload timestamp")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_thresholds_rewrite_nothing_and_do_not_reload_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let rules_dir = dir.path().join("rules");
    let end = chrono::Utc::now().timestamp() / STEP * STEP - STEP;
    let target = exporter(Arc::new(Mutex::new([normal(0, WEEK), normal(1, WEEK)]))).await;
    let prometheus =
        common::Prometheus::start_with_history(&[target], &[rules_dir.join("*.rules.yml")], Some(&openmetrics(end)))
            .await;
    let client = rules::Prometheus::new(prometheus.url(), Duration::from_secs(30)).unwrap();
    let config = spec_config(prometheus.url(), &rules_dir);
    let latency = std::slice::from_ref(&config.specs[0]);
    let writer = RuleWriter {
        dir: rules_dir.clone(),
        promtool: None,
    };
    // The rounds fit the same history: `now` is the same.
    let now = chrono::Utc::now();
    let no_feedback = HashMap::new();
    let round = |published| {
        rules::refit(
            latency,
            &client,
            &no_feedback,
            &writer,
            Some(&client),
            now,
            2,
            published,
        )
    };

    // The first round writes the rules and reloads.
    let first = round(None).await.remove(0);
    assert!(first.result.is_ok() && first.written, "{:?}", first.result);
    let file = rules_dir.join("latency.rules.yml");
    let (written, modified) = (
        std::fs::read(&file).unwrap(),
        std::fs::metadata(&file).unwrap().modified().unwrap(),
    );
    let reloaded = last_reload(prometheus.url()).await;
    // Reload timestamps count whole seconds: let one pass, so a reload would show.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // The same fit again: nothing written, no reload.
    let fits = HashMap::from([("latency".to_owned(), first.fit.clone())]);
    let mut higher = fits.clone();
    for series in &mut higher.get_mut("latency").unwrap().series {
        series.upper *= 2.0;
    }
    let published = Published {
        fits: &fits,
        min_change: config.min_change,
    };
    let again = round(Some(published)).await.remove(0);
    assert!(again.result.is_ok() && !again.written, "{:?}", again.result);
    assert_eq!(again.fit, first.fit);
    assert_eq!(std::fs::read(&file).unwrap(), written);
    assert_eq!(std::fs::metadata(&file).unwrap().modified().unwrap(), modified);
    assert_eq!(last_reload(prometheus.url()).await, reloaded, "Prometheus was reloaded");

    // Rules published from a band twice as high are far enough off: rewritten and reloaded.
    let published = Published {
        fits: &higher,
        min_change: config.min_change,
    };
    let moved = round(Some(published)).await.remove(0);
    assert!(moved.result.is_ok() && moved.written, "{:?}", moved.result);
    assert!(
        last_reload(prometheus.url()).await > reloaded,
        "no reload after a change"
    );
}

/// The case seen in issue #23: a series with 35 minutes of history in a
/// spec fitting a week (`up` on 35 points got a band of ±8.75e29 and the
/// rule `(up) < -4.295`). Through the real path: no band is published; the
/// series is `insufficient_history` in homeostat's metrics, in `thresholds
/// show` and in `thresholds fit`; Prometheus loads the spec's static
/// fallback rule for it, and a spec without a fallback gets no rule (and
/// its file says so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_history_waits_in_insufficient_history_under_its_fallback() {
    let promtool = common::require_program("promtool", "prometheus");
    let dir = tempfile::tempdir().unwrap();
    let rules_dir = dir.path().join("rules");
    let end = chrono::Utc::now().timestamp() / STEP * STEP - STEP;
    let mut history = String::from("# HELP demo_latency_seconds p99 latency.\n# TYPE demo_latency_seconds gauge\n");
    for k in 0..35 {
        history.push_str(&format!(
            "demo_latency_seconds{{service=\"a\"}} {} {}\n",
            normal(0, k as usize),
            end - (34 - k) * STEP
        ));
    }
    history.push_str("# EOF\n");
    let prometheus =
        common::Prometheus::start_with_history(&[], &[rules_dir.join("*.rules.yml")], Some(&history)).await;
    let thresholds: ThresholdsConfig = serde_yaml::from_str(&format!(
        "prometheus_url: {}\nrules_dir: {}\nspecs:\n  - name: latency\n    expr: '{EXPR}'\n    alert: LatencyAboveBand\n    \
         step: 1m\n    history: 7d\n    refit_interval: 10m\n    fallback: {{upper: 0.9}}\n  - name: bare\n    \
         expr: '{EXPR}'\n    alert: LatencyAboveBandBare\n    step: 1m\n    history: 7d\n    refit_interval: 10m\n",
        prometheus.url(),
        rules_dir.display()
    ))
    .unwrap();
    let mut config = common::test_config(dir.path());
    config.thresholds = Some(thresholds);
    let config_file = dir.path().join("homeostat.yaml");
    std::fs::write(&config_file, serde_yaml::to_string(&config).unwrap()).unwrap();
    let homeostat = common::InProcess::start(config, Credentials::default(), LogTransitions).await;

    // Prometheus runs the fallback rule for service a.
    let rules = common::eventually("the fallback rule on Prometheus", Duration::from_secs(60), || async {
        let rules = active_rules(prometheus.url()).await;
        (!rules.is_empty()).then_some(rules)
    })
    .await;
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].0, r#"{service="a"}"#);
    assert_eq!(threshold_of(&rules[0].1), 0.9, "{}", rules[0].1);
    check_rules(&promtool, &rules_dir.join("latency.rules.yml"));
    let bare = std::fs::read_to_string(rules_dir.join("bare.rules.yml")).unwrap();
    check_rules(&promtool, &rules_dir.join("bare.rules.yml"));
    assert!(
        bare.contains(r#"# {service="a"} above: insufficient_history ("#)
            && bare.contains("no fallback.upper configured: no rule.")
            && !bare.contains("alert: LatencyAboveBandBare"),
        "{bare}"
    );

    // The state, not a band, in homeostat's metrics.
    let exposition = homeostat.metrics().await;
    for spec in ["latency", "bare"] {
        let labels = format!("{{threshold_spec=\"{spec}\",service=\"a\"}}");
        assert_eq!(
            gauge(
                &exposition,
                &format!("homeostat_threshold_insufficient_history{labels}")
            ),
            Some(1.0),
            "{exposition}"
        );
        assert_eq!(gauge(&exposition, &format!("homeostat_threshold_upper{labels}")), None);
    }
    common::check_metrics(&exposition);
    homeostat.stop().await;

    let shown = common::homeostat_ok(&["thresholds", "show", "--config", config_file.to_str().unwrap()]);
    for expected in [
        r#"{service="a"} insufficient_history at "#,
        "2880 needed",
        "rules use the fallback (upper 0.9)",
        "no fallback configured: no rule",
    ] {
        assert!(shown.contains(expected), "{expected:?} missing from\n{shown}");
    }

    // `thresholds render` says what each series' rule is.
    let render = Command::new(common::BIN)
        .args(["thresholds", "render", "--config"])
        .arg(&config_file)
        .arg("--out")
        .arg(dir.path().join("rendered"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&render.stdout);
    assert!(render.status.success(), "{}", String::from_utf8_lossy(&render.stderr));
    assert!(
        said.contains(r#"{service="a"} insufficient_history: "#)
            && said.contains("static fallback rule upper 0.9")
            && said.contains("no fallback configured: no rule"),
        "{said}"
    );

    let fit = Command::new(common::BIN)
        .args(["thresholds", "fit", "--prometheus", prometheus.url(), "--query", EXPR])
        .args(["--step", "1m", "--history", "7d"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&fit.stdout);
    assert!(fit.status.success(), "{}", String::from_utf8_lossy(&fit.stderr));
    assert!(
        said.contains(r#"{service="a"}: insufficient_history: no band published: "#) && said.contains("2880 needed"),
        "{said}"
    );
    // With the minimum lowered, a band, and a sane one.
    let fit = Command::new(common::BIN)
        .args(["thresholds", "fit", "--prometheus", prometheus.url(), "--query", EXPR])
        .args(["--step", "1m", "--history", "7d", "--min-history", "20m", "--json"])
        .output()
        .unwrap();
    assert!(fit.status.success(), "{}", String::from_utf8_lossy(&fit.stderr));
    let bands: Value = serde_json::from_slice(&fit.stdout).unwrap();
    let band = &bands[0];
    assert!(band["error"].is_null(), "{band}");
    let lower: Vec<f64> = band["lower"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let upper: Vec<f64> = band["upper"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(!upper.is_empty());
    for (l, u) in lower.iter().zip(&upper) {
        // The history is 0.14–0.26 s: the band stays near it, above 0, not zero-width.
        assert!(*l >= 0.0 && u > l && *u < 1.0, "{band}");
    }
}
