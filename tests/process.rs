//! The real binary: crash safety, graceful shutdown, exit codes.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{eventually, notification, Process, BIN};
use homeostat_journal::JournalMetrics;
use serde_json::Value;

fn write_config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("homeostat.yaml");
    let text = format!(
        "server:\n  listen: 127.0.0.1:0\njournal:\n  path: {}\n{extra}",
        dir.join("journal.db").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The list under `key` that `path` answers with.
async fn list(client: &reqwest::Client, process: &Process, path: &str, key: &str) -> Vec<Value> {
    let page: Value = client
        .get(process.url(path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page[key].as_array().unwrap().clone()
}

async fn incidents(client: &reqwest::Client, process: &Process) -> Vec<Value> {
    list(client, process, "/api/v1/incidents", "incidents").await
}

async fn decisions(client: &reqwest::Client, process: &Process, incident: i64) -> Vec<Value> {
    list(
        client,
        process,
        &format!("/api/v1/incidents/{incident}/decisions"),
        "decisions",
    )
    .await
}

#[tokio::test]
async fn kill_9_right_after_the_ack_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let client = reqwest::Client::new();

    let mut first = Process::start(&config);
    let fingerprints: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    for fp in &fingerprints {
        let response = client
            .post(first.url("/api/v1/alerts"))
            .json(&notification("firing", &[fp]))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    first.child.kill().unwrap(); // SIGKILL, straight after the last 2xx
    first.child.wait().unwrap();

    // Whatever the kill left unprocessed, plus one delivery journalled and
    // never processed (a crash between the two, made certain here), must be
    // processed by the next start.
    let journal_config = homeostat_core::config::JournalConfig {
        path: dir.path().join("journal.db"),
        synchronous: homeostat_core::config::Synchronous::Full,
        ..Default::default()
    };
    let (journal, writer) = homeostat_journal::open(&journal_config, JournalMetrics::default()).unwrap();
    let (queue, pipeline) = tokio::sync::mpsc::channel(1);
    let slot = queue.reserve_owned().await.unwrap();
    drop(pipeline);
    let orphan: homeostat_core::alert::WebhookMessage =
        serde_json::from_value(notification("firing", &["orphan"])).unwrap();
    journal.ingest(orphan, chrono::Utc::now(), slot).await.unwrap();
    let pending = journal.unprocessed().await.unwrap().len() as u64;
    assert!(pending >= 1);
    drop(journal);
    writer.join();

    let second = Process::start(&config);
    let stored = incidents(&client, &second).await;
    let mut seen: Vec<String> = stored
        .iter()
        .map(|i| i["fingerprint"].as_str().unwrap().to_owned())
        .collect();
    seen.sort();
    let mut expected = fingerprints.clone();
    expected.push("orphan".into());
    expected.sort();
    assert_eq!(seen, expected);

    // A repeat after the restart joins the same incident rather than opening another.
    let k0 = stored.iter().find(|i| i["fingerprint"] == "k0").unwrap()["id"].clone();
    let response = client
        .post(second.url("/api/v1/alerts"))
        .json(&notification("firing", &["k0"]))
        .send()
        .await
        .unwrap();
    let ack: Value = response.json().await.unwrap();
    assert_eq!(ack["incidents"][0], k0);
    // Whatever the first process had not processed is processed after the restart.
    let metrics_url = second.url("/metrics");
    eventually(
        "every recovered delivery to be processed",
        Duration::from_secs(10),
        || async {
            let text = client.get(&metrics_url).send().await.ok()?.text().await.ok()?;
            let value = |name: &str| -> u64 {
                text.lines()
                    .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
                    .unwrap_or(0)
            };
            let recovered = value("homeostat_notifications_recovered_total ");
            let processed = value("homeostat_notifications_processed_total ");
            (processed == recovered + 1).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn sigterm_stops_cleanly_with_exit_code_0() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let mut process = Process::start(&config);
    let status = Command::new("kill")
        .args(["-TERM", &process.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = eventually("homeostat to exit after SIGTERM", Duration::from_secs(15), || {
        let exited = process.child.try_wait().unwrap();
        async move { exited }
    })
    .await;
    assert_eq!(exit.code(), Some(0));
    // The WAL was checkpointed into the database file on the way out.
    let wal = dir.path().join("journal.db-wal");
    assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0);
}

/// A second homeostat pointed at a running one's journal exits with a start-up
/// failure naming the journal and the first process, and the first goes on.
#[tokio::test]
async fn a_second_homeostat_on_the_same_journal_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let first = Process::start(&config);
    let (code, text) = run(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(code, Some(4), "{text}");
    assert!(
        text.contains("journal.db is in use by another homeostat process")
            && text.contains(&format!("pid {}", first.child.id())),
        "{text}"
    );
    let client = reqwest::Client::new();
    let response = client
        .post(first.url("/api/v1/alerts"))
        .json(&notification("firing", &["after-the-second"]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(incidents(&client, &first).await.len(), 1);
}

/// On a PostgreSQL journal (`journal.url`, password from a file): a second
/// homeostat on the same database follows and journals deliveries too;
/// what was acknowledged survives a `kill -9` of the leader, the follower
/// takes over, a resolution after that closes its incident, and the
/// commands that read SQLite files say they cannot read it.
#[tokio::test]
async fn a_postgresql_journal_keeps_what_it_acknowledged_and_survives_its_leader() {
    let dir = tempfile::tempdir().unwrap();
    let url = homeostat_journal::pg_server::database().await;
    let config = dir.path().join("homeostat.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  listen: 127.0.0.1:0\njournal:\n  url: {url}\n  password: {{file: pg-password}}\n  lease: 1s\n"
        ),
    )
    .unwrap();
    // The server checks the password: a wrong one is a start-up failure that does not show it.
    let password = dir.path().join("pg-password");
    std::fs::write(&password, "a-wrong-password\n").unwrap();
    let (code, text) = run(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(code, Some(4), "{text}");
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(!text.contains("a-wrong-password"), "the password was printed: {text}");
    std::fs::write(&password, format!("{}\n", homeostat_journal::pg_server::PASSWORD)).unwrap();
    let client = reqwest::Client::new();
    let post = |process: &Process, status: &'static str, fingerprints: Vec<String>| {
        let request = client.post(process.url("/api/v1/alerts"));
        async move {
            let fingerprints: Vec<&str> = fingerprints.iter().map(String::as_str).collect();
            let response = request.json(&notification(status, &fingerprints)).send().await.unwrap();
            assert_eq!(response.status(), 200);
        }
    };
    let fingerprints: Vec<String> = (0..5).map(|i| format!("pg{i}")).collect();
    let mut first = Process::start(&config);
    // Alone, it leads; the second follows.
    common::until_leads(&client, &first.url(""), true).await;
    let second = Process::start(&config);
    common::until_leads(&client, &second.url(""), false).await;
    for (i, fp) in fingerprints.iter().enumerate() {
        let to = if i % 2 == 0 { &first } else { &second };
        post(to, "firing", vec![fp.clone()]).await;
    }
    assert_eq!(
        incidents(&client, &first).await.len(),
        5,
        "both journal into one database"
    );
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    // The follower takes over.
    common::until_leads(&client, &second.url(""), true).await;
    let listed = incidents(&client, &second).await;
    assert_eq!(listed.len(), 5, "{listed:?}");
    assert!(listed.iter().all(|i| i["status"] == "firing"));
    post(&second, "resolved", vec!["pg3".to_owned()]).await;
    let listed = incidents(&client, &second).await;
    let resolved: Vec<&Value> = listed.iter().filter(|i| i["status"] == "resolved").collect();
    assert_eq!(resolved.len(), 1, "{listed:?}");
    assert_eq!(resolved[0]["fingerprint"], "pg3");

    for args in [["policy", "show", "--config"], ["thresholds", "show", "--config"]] {
        let (code, text) = run(&[&args[..], &[config.to_str().unwrap()]].concat());
        assert_eq!(code, Some(3), "{args:?}: {text}");
        assert!(text.contains("this config's journal is PostgreSQL"), "{args:?}: {text}");
    }
}

fn run(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(BIN).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.code(), text)
}

#[test]
fn exit_codes_say_what_went_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(dir.path(), "");
    let (code, text) = run(&["check-config", good.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("OK"), "{text}");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "server:\n  listen: 127.0.0.1:0\n  max_body_bytes: big\n").unwrap();
    let (code, text) = run(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains("bad.yaml") && text.contains("server.max_body_bytes") && text.contains("line 3"),
        "{text}"
    );

    // A value its own type rejects (a duration) is named at its own line.
    std::fs::write(&bad, "server:\n  listen: 127.0.0.1:0\n  drain_timeout: 30x\n").unwrap();
    let (code, text) = run(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains("server.drain_timeout") && text.contains("line 3"),
        "{text}"
    );

    // Every URL it is given is tried; one not reachable is said, not fatal.
    let playbook = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/playbook.yml");
    let nowhere = format!("http://127.0.0.1:{}", common::free_port());
    let urls = write_config(
        dir.path(),
        &format!("actions:\n  backend: docker\n  playbook: {playbook}\n  alertmanager_url: {nowhere}\n"),
    );
    let (code, text) = run(&["check-config", urls.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("actions.alertmanager_url: {nowhere}: NOT REACHABLE")),
        "{text}"
    );

    let (code, text) = run(&["check-config", "/nonexistent/homeostat.yaml"]);
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains("cannot read config file /nonexistent/homeostat.yaml"),
        "{text}"
    );

    // A non-loopback address without auth is refused unless explicitly allowed.
    let (code, text) = run(&["serve", "--config", good.to_str().unwrap(), "--listen", "0.0.0.0:0"]);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("allow_unauthenticated"), "{text}");

    // A journal that cannot be opened is a start-up failure.
    let unopenable = dir.path().join("unopenable.yaml");
    std::fs::write(
        &unopenable,
        "server:\n  listen: 127.0.0.1:0\njournal:\n  path: /nonexistent/j.db\n",
    )
    .unwrap();
    let (code, text) = run(&["serve", "--config", unopenable.to_str().unwrap()]);
    assert_eq!(code, Some(4), "{text}");
    assert!(text.contains("/nonexistent/j.db"), "{text}");

    let (code, _) = run(&["serve"]);
    assert_eq!(code, Some(2));
    // Flag values that cannot mean anything are usage errors, saying which flag.
    let forecast = ["eval", "forecast", "--data", "d", "--labels", "l"];
    let fit = [
        "thresholds",
        "fit",
        "--prometheus",
        "http://127.0.0.1:1",
        "--query",
        "up",
    ];
    for (args, flag) in [
        ([&forecast[..], &["--horizon", "0s"]].concat(), "--horizon"),
        ([&forecast[..], &["--coverage", "2"]].concat(), "--coverage"),
        ([&fit[..], &["--coverage", "1"]].concat(), "--coverage"),
        ([&fit[..], &["--step", "0s"]].concat(), "--step"),
        (vec!["simulate", "--episodes", "0"], "--episodes"),
    ] {
        let (code, text) = run(&args);
        assert_eq!(code, Some(2), "{args:?}: {text}");
        assert!(text.contains(flag), "{args:?}: {text}");
    }
    let (code, text) = run(&["--help"]);
    assert_eq!(code, Some(0));
    assert!(text.contains("serve") && text.contains("check-config"), "{text}");
}

#[tokio::test]
async fn load_records_every_request_and_summarizes_them() {
    let dir = tempfile::tempdir().unwrap();
    let process = Process::start(&write_config(dir.path(), ""));
    let csv = dir.path().join("outcomes.csv");
    let output = Command::new(BIN)
        .args([
            "load",
            &process.url("/healthz"),
            "--rate",
            "40",
            "--duration",
            "1s",
            "--json",
            "--out",
        ])
        .arg(&csv)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (summary["requests"].as_u64(), summary["succeeded"].as_u64()),
        (Some(40), Some(40))
    );
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("due_ms,latency_ms,status"));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 40);
    assert!(rows.iter().all(|r| r.ends_with(",200")), "{text}");
    // Due times are 25 ms apart, in order.
    assert!(rows[1].starts_with("25.000,"), "{text}");

    // Nothing listens on port 9 here: every request fails in transport, and says so.
    let output = Command::new(BIN)
        .args([
            "load",
            "http://127.0.0.1:9/",
            "--rate",
            "10",
            "--duration",
            "500ms",
            "--out",
        ])
        .arg(&csv)
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("0 succeeded (2xx), 5 failed"));
    assert!(std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .skip(1)
        .all(|r| r.ends_with(",error")));

    let output = Command::new(BIN)
        .args(["load", "http://127.0.0.1:9/", "--rate", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--rate must be a positive number"));
}

/// Every PromQL query of a config is tried on its Prometheus: one it rejects
/// fails `check-config` and `serve`, naming where it is set; one that could
/// not be tried (Prometheus down) is reported, not fatal.
#[tokio::test]
async fn promql_that_prometheus_rejects_is_a_config_error() {
    let prometheus = common::Prometheus::start(&[], &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let playbook = dir.path().join("playbook.yml");
    // `extra` goes under `actions.policy`, or at the top level when it starts a line.
    let write = |url: &str, error_ratio: &str, health: &str, extra: &str| {
        std::fs::write(
            &playbook,
            format!("rules:\n  - name: down\n    actions: [restart]\n    health_query: '{health}'\n"),
        )
        .unwrap();
        write_config(
            dir.path(),
            &format!(
                "actions:\n  backend: docker\n  playbook: {}\n  prometheus_url: {url}\n  policy:\n    context:\n      \
                 error_ratio: '{error_ratio}'\n{extra}",
                playbook.display()
            ),
        )
    };
    let check = |config: &std::path::Path| run(&["check-config", config.to_str().unwrap()]);
    let url = prometheus.url();
    // Labels are filled with a placeholder, so a selector of labels only is valid.
    let good = r#"sum(rate({job="{{ $labels.service }}"}[5m])) or vector(0)"#;
    let (code, text) = check(&write(url, good, "up == 1", ""));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("PromQL: 2 of 2 queries accepted by Prometheus"), "{text}");

    // A missing parenthesis in a context feature.
    let config = write(url, "rate(up[5m]", "up == 1", "");
    for args in [
        vec!["check-config", config.to_str().unwrap()],
        vec!["serve", "--config", config.to_str().unwrap()],
    ] {
        let (code, text) = run(&args);
        assert_eq!(code, Some(3), "{args:?}: {text}");
        assert!(
            text.contains("actions.policy.context.error_ratio") && text.contains("rejects \"rate(up[5m]\""),
            "{args:?}: {text}"
        );
        assert!(!text.contains("health_query"), "{args:?}: {text}");
    }
    // In playbook mode the context is never gathered, so never checked.
    let (code, text) = check(&write(url, "rate(up[5m]", "up == 1", "    mode: playbook\n"));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("PromQL: 1 of 1 queries accepted"), "{text}");

    // An unknown function in the playbook's health query: named by file and rule.
    let (code, text) = check(&write(url, good, "no_such_function(up)", ""));
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains(&format!("{}: rule \"down\", health_query", playbook.display()))
            && text.contains("no_such_function"),
        "{text}"
    );
    // Valid PromQL, but a range vector where a value is needed.
    let (code, text) = check(&write(url, "up[5m]", "up == 1", ""));
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("error_ratio") && text.contains("range vector"), "{text}");

    // A threshold's expression runs as a range query: a range vector is rejected.
    let thresholds = format!(
        "thresholds:\n  prometheus_url: {url}\n  rules_dir: {}\n  specs:\n    - name: latency\n      alert: LatencyAboveBand\n      expr: 'up[1m]'\n",
        dir.path().join("rules").display()
    );
    let (code, text) = check(&write(url, good, "up == 1", &thresholds));
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains("thresholds.specs[0].expr") && text.contains("rejects \"up[1m]\""),
        "{text}"
    );

    // Prometheus unreachable: nothing could be judged, and the config stands.
    let down = format!("http://127.0.0.1:{}", common::free_port());
    let (code, text) = check(&write(&down, "rate(up[5m]", "up == 1", ""));
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("PromQL: 0 of 2 queries accepted by Prometheus")
            && text.contains("not checked: actions.policy.context.error_ratio"),
        "{text}"
    );
}

/// A reader that goes away before the output is written (`| head`) is no
/// reason to panic: the command exits with its own code.
#[test]
fn a_closed_stdout_is_no_panic() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = Command::new(BIN)
        .args(["simulate", "--episodes", "50"])
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("cannot write"),
        "{stderr}"
    );
}

/// `kill -9` while a retry is pending: an action deferred by a maintenance
/// window is taken after the restart, when the window ends, with no new
/// delivery — once.
#[tokio::test]
async fn a_retry_pending_at_kill_9_happens_after_the_restart_once() {
    use common::docker::{docker, image, until_serving, Service};
    image().await;
    let service = Service::new("prkill");
    let name = service.run(1, &[]);
    until_serving(&name).await;
    docker(&["kill", &name]);
    let dir = tempfile::tempdir().unwrap();
    let playbook = dir.path().join("playbook.yml");
    std::fs::write(&playbook, "rules:\n  - name: any\n    actions: [restart]\n").unwrap();
    let now = chrono::Utc::now();
    let end = now + chrono::Duration::seconds(15);
    let extra = format!(
        "actions:\n  backend: docker\n  dry_run: false\n  playbook: {}\n  verify_timeout: 3s\n  \
         policy:\n    mode: playbook\n  docker:\n    stop_timeout_seconds: 1\n  guard:\n    min_ready_replicas: 0\n    \
         maintenance_windows:\n      - start: {}\n        end: {}\n        reason: test window\n",
        playbook.display(),
        (now - chrono::Duration::minutes(1)).to_rfc3339(),
        end.to_rfc3339(),
    );
    let config = write_config(dir.path(), &extra);
    let client = reqwest::Client::new();

    let mut first = Process::start(&config);
    let mut body = notification("firing", &["kill9-retry"]);
    body["alerts"][0]["labels"] = serde_json::json!({"alertname": "ServiceDown", "container": name});
    let ack: Value = client
        .post(first.url("/api/v1/alerts"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let incident = ack["incidents"][0].as_i64().unwrap();
    let deferred = eventually("the deferral", Duration::from_secs(20), || async {
        decisions(&client, &first, incident).await.into_iter().next()
    })
    .await;
    assert_eq!(deferred["verdict"], "defer", "{deferred}");
    assert!(
        deferred["reason"].as_str().unwrap().contains("maintenance"),
        "{deferred}"
    );
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    let second = Process::start(&config);
    let all = eventually("the retry, then its end", Duration::from_secs(60), || async {
        let all = decisions(&client, &second, incident).await;
        all.iter().any(|d| d["verdict"] == "escalate").then_some(all)
    })
    .await;
    let allowed: Vec<&Value> = all.iter().filter(|d| d["verdict"] == "allow").collect();
    assert_eq!(allowed.len(), 1, "{all:#?}");
    assert_eq!(allowed[0]["result"], "done", "{all:#?}");
    let decided: chrono::DateTime<chrono::Utc> = allowed[0]["decided_at"].as_str().unwrap().parse().unwrap();
    assert!(decided >= end, "acted at {decided}, inside the window ending {end}");
    assert_eq!(docker(&["inspect", "--format", "{{.State.Running}}", &name]), "true");
}

/// Each named token can do exactly what its role allows, over every
/// endpoint; no or wrong credentials get 401, a role short of the request
/// 403. Who paused and why is in the audit trail. No token appears in any
/// log line, at DEBUG, even one a client put in a URL.
#[tokio::test]
async fn each_role_does_exactly_what_it_allows_and_no_token_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = [
        ("am", "alertmanager", "am-s3cret-token"),
        ("grafana", "viewer", "viewer-s3cret-token"),
        ("alice", "operator", "operator-s3cret-token"),
    ];
    let mut auth = String::from("auth:\n  bearer_token: {file: ADMIN}\n  tokens:\n");
    std::fs::write(dir.path().join("admin"), "admin-s3cret-token\n").unwrap();
    auth = auth.replace("ADMIN", &dir.path().join("admin").display().to_string());
    for (name, role, token) in tokens {
        let file = dir.path().join(name);
        std::fs::write(&file, format!("{token}\n")).unwrap();
        auth.push_str(&format!(
            "    - {{name: {name}, role: {role}, token: {{file: {}}}}}\n",
            file.display()
        ));
    }
    let config = write_config(dir.path(), &auth);
    let process = Process::start_logging(&config, "debug");
    let client = reqwest::Client::new();
    let alert = notification("firing", &["roles"]);
    let send = |method: &str, path: &str, token: Option<&str>| {
        let mut request = if method == "GET" {
            client.get(process.url(path))
        } else {
            let body = if path == "/api/v1/alerts" {
                alert.clone()
            } else if path.ends_with("/feedback") {
                serde_json::json!({"verdict": "false_alarm"})
            } else {
                serde_json::json!({"reason": "role table"})
            };
            client.post(process.url(path)).json(&body)
        };
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // The incident the reads name.
    assert_eq!(send("POST", "/api/v1/alerts", Some("am-s3cret-token")).await, 200);
    // (method, path, roles that may)
    let table: [(&str, &str, &[&str]); 13] = [
        ("POST", "/api/v1/alerts", &["alertmanager", "admin"]),
        ("GET", "/api/v1/incidents", &["viewer", "operator", "admin"]),
        ("GET", "/api/v1/incidents/1", &["viewer", "operator", "admin"]),
        ("GET", "/api/v1/incidents/1/decisions", &["viewer", "operator", "admin"]),
        (
            "GET",
            "/api/v1/incidents/1/notifications",
            &["viewer", "operator", "admin"],
        ),
        ("GET", "/api/v1/controls", &["viewer", "operator", "admin"]),
        ("GET", "/api/v1/audit", &["viewer", "operator", "admin"]),
        ("GET", "/api/v1/anomaly", &["viewer", "operator", "admin"]),
        ("POST", "/api/v1/pause", &["operator", "admin"]),
        ("POST", "/api/v1/resume", &["operator", "admin"]),
        ("POST", "/api/v1/incidents/1/feedback", &["operator", "admin"]),
        ("POST", "/-/reload", &["operator", "admin"]),
        (
            "GET",
            "/api/v1/incidents?token=operator-s3cret-token",
            &["viewer", "operator", "admin"],
        ),
    ];
    let holders = [
        ("alertmanager", "am-s3cret-token"),
        ("viewer", "viewer-s3cret-token"),
        ("operator", "operator-s3cret-token"),
        ("admin", "admin-s3cret-token"),
    ];
    let mut wrong = Vec::new();
    for (method, path, allowed) in table {
        for (role, token) in holders {
            let status = send(method, path, Some(token)).await;
            let expected_refused = !allowed.contains(&role);
            if expected_refused != (status == 403) || status == 401 {
                wrong.push(format!("{method} {path} as {role}: {status}"));
            }
        }
        for token in [None, Some("not-a-token")] {
            let status = send(method, path, token).await;
            if status != 401 {
                wrong.push(format!("{method} {path} with {token:?}: {status}, not 401"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");

    let viewer = reqwest::Client::builder()
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                "Bearer viewer-s3cret-token".parse().unwrap(),
            )]
            .into_iter()
            .collect(),
        )
        .build()
        .unwrap();
    let entries = list(&viewer, &process, "/api/v1/audit", "audit").await;
    let by_alice: Vec<&Value> = entries.iter().filter(|e| e["who"] == "alice").collect();
    assert_eq!(
        by_alice
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["resume", "pause"],
        "{entries:?}"
    );
    assert_eq!(by_alice[1]["role"], "operator");
    assert_eq!(by_alice[1]["reason"], "role table");
    assert!(entries
        .iter()
        .any(|e| e["who"] == "bearer_token" && e["role"] == "admin"));

    let log = process.log.lock().unwrap().clone();
    assert!(
        log.iter().any(|l| l.contains("/api/v1/incidents")),
        "no request was logged at DEBUG"
    );
    for (_, token) in holders {
        let leaked: Vec<&String> = log
            .iter()
            .filter(|l| l.contains(token) || l.contains("s3cret"))
            .collect();
        assert!(leaked.is_empty(), "a token in the log: {leaked:?}");
    }
}

/// The operator CLI against a running homeostat: incidents (table and
/// JSON), one incident's timeline, pause and resume with a reason (then in
/// the audit trail), a role that may not pause, and a server not there.
#[tokio::test]
async fn the_operator_cli_lists_explains_pauses_and_says_why_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let playbook = dir.path().join("playbook.yml");
    std::fs::write(&playbook, "rules:\n  - name: tell\n    actions: [notify]\n").unwrap();
    std::fs::write(dir.path().join("op"), "op-token\n").unwrap();
    std::fs::write(dir.path().join("view"), "view-token\n").unwrap();
    std::fs::write(dir.path().join("am"), "am-token\n").unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "auth:\n  tokens:\n    - {{name: ops, role: operator, token: {{file: {d}/op}}}}\n    \
             - {{name: dash, role: viewer, token: {{file: {d}/view}}}}\n    \
             - {{name: am, role: alertmanager, token: {{file: {d}/am}}}}\n\
             actions:\n  backend: docker\n  playbook: {}\n",
            playbook.display(),
            d = dir.path().display()
        ),
    );
    let process = Process::start(&config);
    let url = process.url("");
    let cli = |args: &[&str], token: Option<&str>| {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env("HOMEOSTAT_URL", &url)
            .env_remove("HOMEOSTAT_TOKEN");
        if let Some(token) = token {
            command.env("HOMEOSTAT_TOKEN", token);
        }
        let output = command.output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let client = reqwest::Client::new();
    let response = client
        .post(process.url("/api/v1/alerts"))
        .bearer_auth("op-token")
        .json(&notification("firing", &["cli-1"]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403, "an operator may not post alerts");
    let response = client
        .post(process.url("/api/v1/alerts"))
        .bearer_auth("am-token")
        .json(&notification("firing", &["cli-1"]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let incident = eventually("the notify decision", Duration::from_secs(20), || async {
        let (code, out, _) = cli(&["incidents", "--json"], Some("view-token"));
        assert_eq!(code, Some(0));
        let page: Value = serde_json::from_str(&out).unwrap();
        let id = page["incidents"][0]["id"].as_i64()?;
        let (_, timeline, _) = cli(&["incident", &id.to_string()], Some("view-token"));
        timeline.contains("decided notify").then_some((id, timeline))
    })
    .await;
    let (id, timeline) = incident;
    assert!(
        timeline.starts_with(&format!("incident {id} — ServiceDown — firing")),
        "{timeline}"
    );
    assert!(timeline.contains("first delivered to homeostat"), "{timeline}");
    assert!(timeline.contains("decided notify — notify"), "{timeline}");
    let (code, table, _) = cli(&["incidents", "--status", "firing"], Some("view-token"));
    assert_eq!(code, Some(0));
    assert!(table.lines().nth(1).unwrap().contains("ServiceDown"), "{table}");
    let (code, out, _) = cli(&["incident", &id.to_string(), "--json"], Some("view-token"));
    assert_eq!(code, Some(0));
    let all: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(all["decisions"][0]["verdict"], "notify", "{all}");

    let (code, _, err) = cli(&["pause", "--reason", "dashboards only"], Some("view-token"));
    assert_eq!(code, Some(1));
    assert!(err.contains("403") && err.contains("role"), "{err}");
    let (code, _, err) = cli(&["incidents"], None);
    assert_eq!(code, Some(1));
    assert!(err.contains("401") && err.contains("HOMEOSTAT_TOKEN"), "{err}");

    let (code, out, err) = cli(&["pause", "--reason", "deploy freeze"], Some("op-token"));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("paused"), "{out}");
    let (code, out, err) = cli(&["resume"], Some("op-token"));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("resumed"), "{out}");
    let (code, out, err) = cli(&["audit", "--json"], Some("view-token"));
    assert_eq!(code, Some(0), "{err}");
    let audit: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(audit["audit"][1]["who"], "ops");
    assert_eq!(audit["audit"][1]["action"], "pause");
    assert_eq!(audit["audit"][1]["reason"], "deploy freeze");
    assert_eq!(audit["audit"][0]["action"], "resume");
    let (code, out, _) = cli(&["audit"], Some("view-token"));
    assert_eq!(code, Some(0));
    assert!(out.lines().nth(2).unwrap().contains("deploy freeze"), "{out}");

    drop(process);
    let (code, _, err) = cli(&["incidents"], Some("view-token"));
    assert_eq!(code, Some(1));
    assert!(
        err.contains("cannot reach homeostat") && err.contains("HOMEOSTAT_URL"),
        "{err}"
    );
}

/// A reload (POST /-/reload, or SIGHUP) puts an edited playbook in effect;
/// a playbook that does not validate is refused, saying why, and the
/// running one stays.
#[tokio::test]
async fn a_reload_changes_the_playbook_and_a_bad_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let playbook = dir.path().join("playbook.yml");
    let rule = |name: &str| format!("rules:\n  - name: {name}\n    actions: [notify]\n");
    std::fs::write(&playbook, rule("first")).unwrap();
    let config = write_config(dir.path(), "actions:\n  backend: docker\n  playbook: playbook.yml\n");
    let process = Process::start(&config);
    let client = reqwest::Client::new();
    let rule_of = |fingerprint: &'static str| {
        let client = client.clone();
        let url = process.url("/api/v1/alerts");
        let base = process.url("");
        async move {
            let response = client
                .post(url)
                .json(&notification("firing", &[fingerprint]))
                .send()
                .await
                .unwrap();
            let ack: Value = response.json().await.unwrap();
            let incident = ack["incidents"][0].as_i64().unwrap();
            eventually("a decision", Duration::from_secs(20), || async {
                let page: Value = client
                    .get(format!("{base}/api/v1/incidents/{incident}/decisions"))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                page["decisions"][0]["rule"].as_str().map(str::to_owned)
            })
            .await
        }
    };
    assert_eq!(rule_of("reload-1").await, "first");
    let reload = || async {
        let response = client
            .post(process.url("/-/reload"))
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json::<Value>().await.unwrap())
    };
    std::fs::write(&playbook, rule("second")).unwrap();
    let (status, done) = reload().await;
    assert_eq!(status, 200);
    assert_eq!(done["playbook_rules"], 1);
    assert_eq!(done["restart_needed"], serde_json::json!([]));
    assert_eq!(rule_of("reload-2").await, "second");

    std::fs::write(&playbook, "rules:\n  - name: broken\n    actions: [reboot]\n").unwrap();
    let (status, why) = reload().await;
    assert_eq!(status, 400);
    assert!(why["error"].as_str().unwrap().contains("rules[0].actions[0]"), "{why}");
    assert_eq!(rule_of("reload-3").await, "second", "the refused playbook took effect");

    // SIGHUP, with the server section changed too: that waits for a restart.
    std::fs::write(&playbook, rule("third")).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("listen: 127.0.0.1:0", "listen: 127.0.0.1:0\n  max_connections: 10"),
    )
    .unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &process.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    eventually("the SIGHUP reload", Duration::from_secs(20), || async {
        let log = process.log.lock().unwrap().clone();
        log.iter()
            .find(|l| l.contains("Reloaded the playbook; the other changes take effect at the next restart."))
            .cloned()
    })
    .await;
    assert_eq!(rule_of("reload-4").await, "third");
}

/// Text logs written to a file or a pipe carry no ANSI colour codes.
#[test]
fn text_logs_to_a_pipe_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let mut child = Command::new(BIN)
        .args(["--log-format", "text", "serve", "--config"])
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let listening = lines
        .by_ref()
        .map_while(Result::ok)
        .take(50)
        .find(|l| l.contains("Listening"));
    let _ = child.kill();
    let _ = child.wait();
    let line = listening.expect("no Listening line");
    assert!(line.contains("INFO"), "{line}");
    assert!(!line.contains('\u{1b}'), "colour codes in {line:?}");
}
