//! Test harness: homeostat in-process or as a process, real Alertmanager,
//! and polling with a deadline instead of sleeping.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod dashboards;
pub mod docker;
pub mod k8s;

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use homeostat_core::config::{Config, Credentials};
use homeostat_demo::stack;
use homeostat_server::pipeline::Processor;
use serde_json::{json, Value};
use tokio::sync::oneshot;

pub const BIN: &str = env!("CARGO_BIN_EXE_homeostat");

/// What `homeostat ARGS` prints on stdout; it must exit 0 (else the test
/// fails with both outputs).
pub fn homeostat_ok<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let output = Command::new(BIN).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "homeostat {:?}: {stdout}{}",
        args.iter().map(|a| a.as_ref().to_string_lossy()).collect::<Vec<_>>(),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Whether the homeostat at `base` (its URL) says it leads its journal
/// (`homeostat_leader`); `None` while it does not answer.
pub async fn leads(client: &reqwest::Client, base: &str) -> Option<bool> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(text.lines().any(|l| l == "homeostat_leader 1"))
}

/// Waits (10 s at most) until the homeostat at `base` leads, or follows.
pub async fn until_leads(client: &reqwest::Client, base: &str, wanted: bool) {
    let what = if wanted { "to lead" } else { "to follow" };
    eventually(&format!("{base} {what}"), Duration::from_secs(10), || async {
        (leads(client, base).await? == wanted).then_some(())
    })
    .await;
}

/// Polls `check` until it returns `Some`, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Fails with the install command when a program the tests need is missing.
pub fn require_program(program: &str, package: &str) -> PathBuf {
    homeostat_demo::stack::find_program(&[program], package).unwrap_or_else(|e| panic!("{e} (tests/run.sh does)"))
}

/// `promtool check metrics` accepts `exposition` (Prometheus' text format).
pub fn check_metrics(exposition: &str) {
    use std::io::Write;
    let mut check = Command::new(require_program("promtool", "prometheus"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let output = check.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A firing webhook notification with one alert per fingerprint.
pub fn notification(status: &str, fingerprints: &[&str]) -> Value {
    let alerts: Vec<Value> = fingerprints
        .iter()
        .map(|fp| {
            json!({
                "status": status,
                "labels": {"alertname": "ServiceDown", "service": format!("svc-{fp}")},
                "annotations": {"summary": "down"},
                "startsAt": "2026-11-28T06:00:00Z",
                "endsAt": if status == "firing" { "0001-01-01T00:00:00Z" } else { "2026-11-28T06:10:00Z" },
                "generatorURL": "http://prometheus.invalid/graph",
                "fingerprint": fp,
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"ServiceDown\"}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "homeostat",
        "groupLabels": {"alertname": "ServiceDown"},
        "commonLabels": {"alertname": "ServiceDown"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.invalid",
        "alerts": alerts,
    })
}

/// A config for tests: loopback, journal in `dir`.
pub fn test_config(dir: &Path) -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.journal.path = dir.join("journal.db");
    config
}

/// homeostat running inside the test process.
pub struct InProcess {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<homeostat_server::app::Result<()>>,
}

impl InProcess {
    pub async fn start<P: Processor>(config: Config, credentials: Credentials, processor: P) -> InProcess {
        InProcess::start_with(config, credentials, move |_| processor).await
    }

    /// Starts with a processor built from the journal, metrics and controls homeostat makes.
    pub async fn start_with<P: Processor>(
        config: Config,
        credentials: Credentials,
        make: impl FnOnce(homeostat_server::pipeline::Parts) -> P + Send + 'static,
    ) -> InProcess {
        let listener = tokio::net::TcpListener::bind(config.server.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(homeostat_server::app::serve(
            config,
            credentials,
            listener,
            async move {
                let _ = stopped.await;
            },
            make,
        ));
        InProcess {
            addr,
            client: reqwest::Client::new(),
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client.post(self.url(path)).json(body).send().await.unwrap()
    }

    /// Posts a webhook notification, expects 200, and returns the first
    /// incident it touched.
    pub async fn post_alert(&self, body: &Value) -> i64 {
        let response = self.post_json("/api/v1/alerts", body).await;
        assert_eq!(response.status(), 200);
        let ack: Value = response.json().await.unwrap();
        ack["incidents"][0].as_i64().unwrap()
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// An incident's decisions, oldest first.
    pub async fn decisions(&self, incident: i64) -> Vec<Value> {
        let page = self.get_json(&format!("/api/v1/incidents/{incident}/decisions")).await;
        page["decisions"].as_array().unwrap().clone()
    }

    /// The `/metrics` exposition.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Triggers graceful shutdown and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap().unwrap();
    }
}

/// homeostat as a child process of the real binary.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    /// Every line it logged so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `homeostat serve --config FILE` and waits for its "Listening." log line.
    pub fn start(config: &Path) -> Process {
        Process::start_logging(config, "info")
    }

    /// [`Process::start`] with `--log-level level`.
    /// The binary is `HOMEOSTAT_BIN` when set (a release build, for the
    /// benchmarks), else the test build's.
    pub fn start_logging(config: &Path, level: &str) -> Process {
        let bin = std::env::var_os("HOMEOSTAT_BIN").unwrap_or_else(|| BIN.into());
        let mut child = Command::new(bin)
            .args(["--log-format", "json", "--log-level", level, "serve", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std_mpsc::channel();
        let log: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let lines = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[homeostat] {line}");
                lines.lock().unwrap().push(line.clone());
                if let Ok(log) = serde_json::from_str::<Value>(&line) {
                    if log["message"] == "Listening." {
                        let _ = tx.send(log["address"].as_str().unwrap_or_default().to_owned());
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("homeostat did not log its listening address within 30s");
        Process {
            child,
            addr: addr.parse().unwrap(),
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Prometheus-family server (Prometheus, Alertmanager) run as a child
/// process on a loopback port (the demo's, [`stack::Daemon`]); ready once
/// `/-/ready` answers; killed on drop.
pub struct Daemon {
    inner: stack::Daemon,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts `program` (from Debian's `package`) with `config` written to
    /// `config_name` in a fresh directory; `args` gets that directory and the port.
    async fn start(
        program: &'static str,
        package: &str,
        config_name: &str,
        config: &str,
        args: fn(&Path, u16) -> Vec<String>,
    ) -> Daemon {
        Daemon::start_prepared(program, package, config_name, config, args, |_| {}).await
    }

    /// [`Daemon::start`], calling `prepare` with the directory before the program starts.
    async fn start_prepared(
        program: &'static str,
        package: &str,
        config_name: &str,
        config: &str,
        args: fn(&Path, u16) -> Vec<String>,
        prepare: impl FnOnce(&Path),
    ) -> Daemon {
        let path = require_program(program, package);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(config_name), config).unwrap();
        prepare(dir.path());
        let port = free_port();
        let log = dir.path().join(format!("{program}.log"));
        let ready = Duration::from_secs(30);
        let inner = stack::Daemon::start(program, &path, &args(dir.path(), port), port, "/-/ready", ready, log)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        Daemon { inner, _dir: dir }
    }

    pub fn url(&self) -> &str {
        &self.inner.url
    }
}

/// A real Alertmanager on a loopback port, its webhook receiver pointing at homeostat.
pub struct Alertmanager {
    daemon: Daemon,
    /// What this Alertmanager puts in `externalURL` of its notifications.
    pub external_url: String,
}

impl Alertmanager {
    /// `http_config` is YAML inserted under the webhook receiver (e.g. authorization).
    pub async fn start(webhook_url: &str, http_config: &str) -> Alertmanager {
        let config = format!(
            "route:\n  receiver: homeostat\n  group_by: ['alertname']\n  group_wait: 100ms\n  group_interval: 1s\n  \
             repeat_interval: 1s\nreceivers:\n  - name: homeostat\n    webhook_configs:\n      - url: {webhook_url}\n        \
             send_resolved: true\n{http_config}"
        );
        Alertmanager::with_config(&config).await
    }

    /// Starts with `config` as its whole `alertmanager.yml`.
    pub async fn with_config(config: &str) -> Alertmanager {
        let daemon = Daemon::start(
            "prometheus-alertmanager",
            "prometheus-alertmanager",
            "alertmanager.yml",
            config,
            stack::alertmanager_args,
        )
        .await;
        Alertmanager {
            external_url: daemon.url().to_owned(),
            daemon,
        }
    }

    /// Two Alertmanagers with `config`, clustered with each other (gossip on
    /// loopback), as an HA pair runs: what one has notified, the other does
    /// not notify again.
    pub async fn clustered_pair(config: &str) -> [Alertmanager; 2] {
        let path = require_program("prometheus-alertmanager", "prometheus-alertmanager");
        let gossip = [free_port(), free_port()];
        let start = |i: usize| {
            let path = path.clone();
            async move {
                let dir = tempfile::tempdir().unwrap();
                std::fs::write(dir.path().join("alertmanager.yml"), config).unwrap();
                let port = free_port();
                let mut args = stack::alertmanager_args(dir.path(), port);
                args.retain(|a| !a.starts_with("--cluster.listen-address"));
                args.extend([
                    format!("--cluster.listen-address=127.0.0.1:{}", gossip[i]),
                    format!("--cluster.advertise-address=127.0.0.1:{}", gossip[i]),
                    format!("--cluster.peer=127.0.0.1:{}", gossip[1 - i]),
                    // The second in line waits this long for the first's notification.
                    "--cluster.peer-timeout=1s".into(),
                    "--cluster.pushpull-interval=5s".into(),
                ]);
                let log = dir.path().join("alertmanager.log");
                let inner = stack::Daemon::start(
                    "prometheus-alertmanager",
                    &path,
                    &args,
                    port,
                    "/-/ready",
                    Duration::from_secs(60),
                    log,
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"));
                Alertmanager {
                    external_url: inner.url.clone(),
                    daemon: Daemon { inner, _dir: dir },
                }
            }
        };
        let (first, second) = tokio::join!(start(0), start(1));
        [first, second]
    }

    pub fn url(&self) -> &str {
        self.daemon.url()
    }

    /// The alerts Alertmanager holds (`GET /api/v2/alerts`); `None` while it
    /// cannot answer.
    pub async fn alerts(&self) -> Option<Vec<Value>> {
        let alerts: Value = reqwest::get(format!("{}/api/v2/alerts", self.daemon.url()))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        alerts.as_array().cloned()
    }

    /// Silences alerts whose label `name` is `value`, for an hour.
    pub async fn silence(&self, name: &str, value: &str) {
        let now = chrono::Utc::now();
        let silence = serde_json::json!({
            "matchers": [{"name": name, "value": value, "isRegex": false, "isEqual": true}],
            "startsAt": now.to_rfc3339(), "endsAt": (now + chrono::Duration::hours(1)).to_rfc3339(),
            "createdBy": "test", "comment": "planned maintenance",
        });
        let created = reqwest::Client::new()
            .post(format!("{}/api/v2/silences", self.daemon.url()))
            .json(&silence)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 200, "{}", created.text().await.unwrap_or_default());
    }

    /// Posts alerts to Alertmanager's `/api/v2/alerts`.
    pub async fn post_alerts(&self, alerts: &Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/api/v2/alerts", self.daemon.url()))
            .json(alerts)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
    }
}

/// A real Prometheus on a loopback port, scraping `targets` every second.
pub struct Prometheus {
    daemon: Daemon,
}

impl Prometheus {
    /// `rule_files` are loaded as they are; `targets` are `host:port` scraped as job `homeostat`.
    pub async fn start(targets: &[SocketAddr], rule_files: &[PathBuf]) -> Prometheus {
        Prometheus::start_with_history(targets, rule_files, None).await
    }

    /// [`Prometheus::start`] with `history` (OpenMetrics text, ending in
    /// `# EOF`) backfilled into its data directory with
    /// `promtool tsdb create-blocks-from openmetrics` before it starts.
    pub async fn start_with_history(
        targets: &[SocketAddr],
        rule_files: &[PathBuf],
        history: Option<&str>,
    ) -> Prometheus {
        Prometheus::start_alerting(targets, rule_files, history, None).await
    }

    /// [`Prometheus::start_with_history`], its alerts sent to the
    /// Alertmanager at `alertmanager` (`http://host:port`). A query looks
    /// back 2 s for a series' latest sample, not 5 minutes: the seconds
    /// between the backfilled history's end and the first scrape hold no
    /// points, instead of the history's last value repeated.
    pub async fn start_alerting(
        targets: &[SocketAddr],
        rule_files: &[PathBuf],
        history: Option<&str>,
        alertmanager: Option<&str>,
    ) -> Prometheus {
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let rules: Vec<String> = rule_files.iter().map(|p| format!("  - '{}'\n", p.display())).collect();
        let alerting = alertmanager.map_or(String::new(), |url| {
            format!(
                "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{}']\n",
                url.trim_start_matches("http://")
            )
        });
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{alerting}rule_files:\n{}scrape_configs:\n  - job_name: homeostat\n    \
             static_configs:\n      - targets: [{}]\n",
            rules.concat(),
            targets.join(", ")
        );
        let backfill = |dir: &Path| {
            let Some(history) = history else { return };
            let file = dir.join("history.om");
            std::fs::write(&file, history).unwrap();
            let output = Command::new(require_program("promtool", "prometheus"))
                .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
                .arg(&file)
                .arg(dir.join("prometheus-data"))
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "promtool backfill failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let daemon = Daemon::start_prepared(
            "prometheus",
            "prometheus",
            "prometheus.yml",
            &config,
            if alertmanager.is_some() {
                |dir: &Path, port: u16| {
                    let mut args = stack::prometheus_args(dir, port);
                    args.push("--query.lookback-delta=2s".into());
                    args
                }
            } else {
                stack::prometheus_args
            },
            backfill,
        )
        .await;
        Prometheus { daemon }
    }

    pub fn url(&self) -> &str {
        self.daemon.url()
    }

    /// The result vector of an instant query; panics on a query error.
    pub async fn query(&self, expr: &str) -> Vec<Value> {
        let response = instant_query(self.url(), expr).await;
        assert_eq!(response["status"], "success", "query {expr} failed: {response}");
        response["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

/// Prometheus' whole answer to an instant query at `url` (status, data or error).
pub async fn instant_query(url: &str, expr: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{url}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
