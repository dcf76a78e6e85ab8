//! `homeostat demo`: the local self-healing demonstration, and the stack
//! every later measurement runs on.
//!
//! ```text
//! load ──▶ service_a ──▶ service_b          (containers, Docker network)
//!              │              │
//!          /metrics       /metrics          (main and admin ports)
//!              ▼              ▼
//!          Prometheus (1 s scrapes, rules/) ──▶ Alertmanager ──webhook──▶ homeostat serve
//!                                                                            │
//!                        Docker Engine ◀── restart / rollback / … ───────────┘
//! ```
//!
//! [`Demo::start`] builds the images ([`images`]), starts the containers and
//! processes ([`stack`]) and steady load; [`Demo::run_fault`] injects one
//! fault and watches detection, decisions, actions and recovery through
//! homeostat's API and the services' admin ports; [`report`] writes what
//! happened. [`run`] is the whole command, Ctrl-C included. [`load`] is the
//! load generator (`homeostat load`).
#![forbid(unsafe_code)]

pub mod images;
pub mod load;
pub mod report;
pub mod stack;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::load::{MakeRequest, Sample};
use homeostat_adapters::executor::docker::{DockerConfig, DockerExecutor};
use homeostat_core::incident::Incident;
use homeostat_journal::decisions::Decision;
use stack::{Containers, Daemon, Service};

/// The rule files and playbook the demo runs with: the ones in `rules/`.
const RULE_FILES: [(&str, &str); 2] = [
    ("services.rules.yml", include_str!("../../../rules/services.rules.yml")),
    (
        "homeostat.rules.yml",
        include_str!("../../../rules/homeostat.rules.yml"),
    ),
];
const PLAYBOOK: &str = include_str!("../../../rules/playbook.yml");

/// Alerts that do not hold the demo back: the SLO burn-rate alerts are
/// symptoms for humans (the playbook only notifies), and their 5m–6h
/// windows stay firing long after a fault is healed; the adaptive latency
/// alert is pending whenever latency is above its band and fires only
/// after 10 minutes.
const IGNORED_WHEN_QUIET: [&str; 2] = ["ErrorBudgetBurn", stack::LATENCY_ALERT];

/// How often the demo looks at homeostat, the services and Prometheus.
const POLL: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{program} is not installed (or not on PATH); install it with: sudo apt-get install -y {package}")]
    MissingProgram { program: String, package: String },
    #[error(
        "Docker Engine is not reachable: {0}. Install and start it (Debian: sudo apt-get install -y docker.io && \
         sudo systemctl start docker), or point DOCKER_HOST at it"
    )]
    DockerUnreachable(String),
    #[error("Docker: {0}")]
    Docker(String),
    #[error("{path}: {source}; build the demo's binaries first: cargo build --release --workspace")]
    MissingBinary {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("building image {tag}: {message}")]
    Image { tag: String, message: String },
    #[error("cannot {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} failed to start: {why} (its log: {log})")]
    Component { name: String, why: String, log: PathBuf },
    #[error("{0}")]
    Stack(String),
    #[error("interrupted")]
    Interrupted,
}

type Result<T, E = DemoError> = std::result::Result<T, E>;

/// The faults the demo injects, by default in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// service_b exits non-zero.
    Crash,
    /// service_a stops answering while its process lives.
    Hang,
    /// service_a's memory grows towards its container limit.
    MemoryLeak,
    /// Half of service_a's requests answer 500.
    ErrorBurst,
    /// service_b is redeployed with a build that answers 5xx while healthy.
    BadDeploy,
    /// service_a's calls to service_b fail for a while; the right action on
    /// service_a is none.
    DependencyFailure,
    /// Nothing: no alert and no action may follow.
    None,
}

impl Fault {
    pub const ALL: [Fault; 7] = [
        Fault::Crash,
        Fault::Hang,
        Fault::MemoryLeak,
        Fault::ErrorBurst,
        Fault::BadDeploy,
        Fault::DependencyFailure,
        Fault::None,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Crash => "crash",
            Fault::Hang => "hang",
            Fault::MemoryLeak => "memory-leak",
            Fault::ErrorBurst => "error-burst",
            Fault::BadDeploy => "bad-deploy",
            Fault::DependencyFailure => "dependency-failure",
            Fault::None => "none",
        }
    }

    /// The service the fault is injected into. Faults are spread so that no
    /// service is restarted more than three times in five minutes, which
    /// `ServiceCrashLooping` would rightly call a crash loop.
    pub fn target(self) -> &'static str {
        match self {
            Fault::Crash | Fault::BadDeploy => "service_b",
            _ => "service_a",
        }
    }

    /// How long the fault may take to heal before the demo clears it itself.
    fn deadline(self, options: &Options) -> Duration {
        match self {
            Fault::None => options.control,
            _ => options.fault_timeout,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Fault, String> {
        Fault::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| {
            let known: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
            format!("unknown fault {s:?}; known: {}", known.join(", "))
        })
    }
}

/// What to run and where the pieces are.
#[derive(Clone, Debug)]
pub struct Options {
    pub faults: Vec<Fault>,
    /// Where `report.json`, `report.md` and `timeline.svg` go.
    pub report_dir: Option<PathBuf>,
    /// The homeostat binary run as `homeostat serve`; the services'
    /// binaries are looked for next to it.
    pub homeostat: PathBuf,
    /// Requests per second sent to service_a throughout.
    pub rate: f64,
    /// How long a fault may take to heal before it counts as not recovered.
    pub fault_timeout: Duration,
    /// How long the no-fault control runs.
    pub control: Duration,
    /// How long to wait for alerts to resolve between faults.
    pub quiet_timeout: Duration,
    /// homeostat decides and records, but does not act: the no-healing baseline.
    pub dry_run: bool,
}

impl Options {
    pub fn new(homeostat: PathBuf) -> Options {
        Options {
            faults: Fault::ALL.to_vec(),
            report_dir: None,
            homeostat,
            rate: 20.0,
            fault_timeout: Duration::from_secs(120),
            control: Duration::from_secs(30),
            quiet_timeout: Duration::from_secs(180),
            dry_run: false,
        }
    }

    fn bin_dir(&self) -> PathBuf {
        self.homeostat.parent().map(Path::to_path_buf).unwrap_or_default()
    }
}

/// One fault's story, as `report.json` has it.
#[derive(Clone, Debug, Serialize)]
pub struct FaultResult {
    pub fault: Fault,
    pub target: &'static str,
    /// Seconds from the demo's start to the injection.
    pub injected_at_s: f64,
    /// Seconds from injection until homeostat received an alert on the target.
    pub detect_s: Option<f64>,
    /// Seconds from injection until the fault was gone and service_a answered.
    pub recover_s: Option<f64>,
    /// The actions homeostat took (guard verdict `allow`), in order; in a
    /// dry run, marked `(dry run)`.
    pub actions: Vec<String>,
    /// Requests sent to service_a from injection to recovery (or the deadline).
    pub requests_total: usize,
    pub requests_failed: usize,
    /// The alerts homeostat received in the episode.
    pub alerts: Vec<String>,
    /// Every decision: action, target, verdict and reason, result, outcome.
    pub decisions: Vec<Value>,
    /// Whether the stack was quiet (no alert, every target up) before injection.
    pub quiet_before: bool,
    pub note: Option<String>,
}

/// Something worth a mark on the timeline.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// Seconds from the demo's start.
    pub at_s: f64,
    pub kind: EventKind,
    pub text: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Injected,
    Alert,
    Action,
    Recovered,
}

/// Everything the demo measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub started_at: DateTime<Utc>,
    pub faults: Vec<FaultResult>,
    pub events: Vec<Event>,
    /// Per second from the start: requests sent and how many failed.
    pub load: Vec<(u64, u64)>,
}

/// Where live progress goes (stdout for the command, the test log in tests).
pub type Say = Arc<dyn Fn(&str) + Send + Sync>;

/// The running stack.
pub struct Demo {
    options: Options,
    say: Say,
    // Dropped last: the processes' files live here.
    dir: tempfile::TempDir,
    executor: DockerExecutor,
    containers: Containers,
    services: Vec<Service>,
    prometheus: Daemon,
    alertmanager: Daemon,
    homeostat: Daemon,
    client: reqwest::Client,
    start: Instant,
    started_at: DateTime<Utc>,
    load: JoinHandle<()>,
    samples: Arc<Mutex<Vec<(f64, Sample)>>>,
    events: Vec<Event>,
}

/// The Compose project (and network) name of this process's demo.
pub fn project() -> String {
    format!("homeostat-demo-{}", std::process::id())
}

/// Connects to Docker Engine, with the error a newcomer needs.
pub async fn connect_docker() -> Result<DockerExecutor> {
    let config = DockerConfig {
        stop_timeout_seconds: 3,
        ..DockerConfig::default()
    };
    DockerExecutor::connect(config)
        .await
        .map_err(|e| DemoError::DockerUnreachable(e.to_string()))
}

/// Builds the images from the binaries in `bin_dir` (homeostat's too
/// when `with_homeostat`), saying which.
pub async fn build_images(executor: &DockerExecutor, bin_dir: &Path, with_homeostat: bool, say: &Say) -> Result<()> {
    for image in images::all()
        .into_iter()
        .filter(|i| with_homeostat || i.binary != "homeostat")
    {
        images::build(executor.client(), bin_dir, &image).await?;
        say(&format!("built image {}", image.tag));
    }
    Ok(())
}

/// The whole `homeostat demo` command: start, every fault, report, and
/// cleanup of every container, process and file whatever ends it (Ctrl-C too).
pub async fn run(options: Options, say: Say) -> Result<Report> {
    let project = project();
    let outcome = tokio::select! {
        outcome = run_faults(options.clone(), say.clone(), project.clone()) => outcome,
        _ = tokio::signal::ctrl_c() => Err(DemoError::Interrupted),
    };
    // The future above is gone: its processes are killed and its files
    // removed; containers need the engine.
    if let Ok(executor) = connect_docker().await {
        Containers::remove_project(executor.client(), &project).await;
    }
    let report = outcome?;
    if let Some(dir) = &options.report_dir {
        report::write(&report, dir).map_err(|source| DemoError::Io {
            what: format!("write the report to {}", dir.display()),
            source,
        })?;
        say(&format!("Report written to {}", dir.display()));
    }
    Ok(report)
}

async fn run_faults(options: Options, say: Say, project: String) -> Result<Report> {
    let faults = options.faults.clone();
    let mut demo = Demo::start(options, say.clone(), project).await?;
    let mut results = Vec::new();
    for fault in faults {
        match demo.run_fault(fault).await {
            Ok(result) => results.push(result),
            Err(e) => {
                demo.stop().await;
                return Err(e);
            }
        }
    }
    let report = demo.report(results);
    say(&report::table(&report.faults));
    demo.stop().await;
    Ok(report)
}

impl Demo {
    /// Checks what is needed, builds the images, starts the services,
    /// Prometheus, Alertmanager, homeostat and the load, and waits until
    /// every scrape target is up.
    pub async fn start(options: Options, say: Say, project: String) -> Result<Demo> {
        let prometheus = stack::find_program(&["prometheus"], "prometheus")?;
        let alertmanager =
            stack::find_program(&["prometheus-alertmanager", "alertmanager"], "prometheus-alertmanager")?;
        let executor = connect_docker().await?;
        // homeostat itself runs as a process here.
        build_images(&executor, &options.bin_dir(), false, &say).await?;
        let containers = Containers::create_network(executor.client().clone(), project.clone()).await?;
        let services: Vec<Service> = ["service_a", "service_b"]
            .into_iter()
            .map(|name| Service {
                name,
                project: project.clone(),
                container: format!("{project}-{name}-1"),
                port: free_port(),
                admin_port: free_port(),
            })
            .collect();
        match Demo::start_in(options, say, executor, containers, services, prometheus, alertmanager).await {
            Ok(demo) => Ok(demo),
            Err((e, containers)) => {
                containers.remove().await;
                Err(e)
            }
        }
    }

    async fn start_in(
        options: Options,
        say: Say,
        executor: DockerExecutor,
        containers: Containers,
        services: Vec<Service>,
        prometheus: PathBuf,
        alertmanager: PathBuf,
    ) -> Result<Demo, (DemoError, Containers)> {
        macro_rules! attempt {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(e) => return Err((e, containers)),
                }
            };
        }
        let dir = attempt!(tempfile::Builder::new()
            .prefix("homeostat-demo-")
            .tempdir()
            .map_err(|source| DemoError::Io {
                what: "create a temporary directory".into(),
                source
            }));
        let b_url = format!("SERVICE_B_URL=http://{}:8080", services[1].name);
        attempt!(
            containers
                .run(
                    &services[1],
                    &images::service_tag("service_b", images::GOOD_VERSION),
                    vec![]
                )
                .await
        );
        attempt!(
            containers
                .run(
                    &services[0],
                    &images::service_tag("service_a", images::GOOD_VERSION),
                    vec![b_url]
                )
                .await
        );
        say(&format!(
            "started containers {} (:{}) and {} (:{}), admin ports :{} and :{}",
            services[0].container,
            services[0].port,
            services[1].container,
            services[1].port,
            services[0].admin_port,
            services[1].admin_port
        ));

        let (homeostat_port, prometheus_port, alertmanager_port) = (free_port(), free_port(), free_port());
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text).map_err(|source| DemoError::Io {
                what: format!("write {}", dir.path().join(name).display()),
                source,
            })
        };
        for (name, text) in RULE_FILES {
            attempt!(write(name, text));
        }
        attempt!(write("playbook.yml", PLAYBOOK));
        let rule_names: Vec<&str> = RULE_FILES.iter().map(|(name, _)| *name).collect();
        attempt!(write(
            "prometheus.yml",
            &stack::prometheus_config(&services, homeostat_port, alertmanager_port, &rule_names)
        ));
        attempt!(write("alertmanager.yml", &stack::alertmanager_config(homeostat_port)));
        attempt!(write(
            "homeostat.yaml",
            &stack::homeostat_config(
                dir.path(),
                homeostat_port,
                prometheus_port,
                alertmanager_port,
                options.dry_run
            )
        ));

        let start = |name, program, args, port, ready, log: &str| {
            let log = dir.path().join(log);
            Daemon::start(name, program, args, port, ready, stack::READY_TIMEOUT, log)
        };
        let config = dir.path().join("homeostat.yaml").display().to_string();
        let serve = ["serve".into(), "--config".into(), config];
        let homeostat = attempt!(
            start(
                "homeostat",
                &options.homeostat,
                &serve,
                homeostat_port,
                "/readyz",
                "homeostat.log"
            )
            .await
        );
        let args = stack::alertmanager_args(dir.path(), alertmanager_port);
        let alertmanager = attempt!(
            start(
                "Alertmanager",
                &alertmanager,
                &args,
                alertmanager_port,
                "/-/ready",
                "alertmanager.log"
            )
            .await
        );
        let args = stack::prometheus_args(dir.path(), prometheus_port);
        let prometheus = attempt!(
            start(
                "Prometheus",
                &prometheus,
                &args,
                prometheus_port,
                "/-/ready",
                "prometheus.log"
            )
            .await
        );
        say(&format!(
            "started homeostat {}, Alertmanager {}, Prometheus {}",
            homeostat.url, alertmanager.url, prometheus.url
        ));
        say(&format!("their files and logs are in {}", dir.path().display()));

        let client = attempt!(reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| DemoError::Stack(format!("cannot build an HTTP client: {e}"))));
        let start = Instant::now();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let load = spawn_load(
            client.clone(),
            options.rate,
            services[0].url("/api/work"),
            Arc::clone(&samples),
        );
        let demo = Demo {
            options,
            say,
            dir,
            executor,
            containers,
            services,
            prometheus,
            alertmanager,
            homeostat,
            client,
            start,
            started_at: Utc::now(),
            load,
            samples,
            events: Vec::new(),
        };
        if let Err(e) = demo.until_targets_up().await {
            let containers = demo.stop_processes().await;
            return Err((e, containers));
        }
        Ok(demo)
    }

    pub fn prometheus_url(&self) -> &str {
        &self.prometheus.url
    }

    /// Seconds since the load started.
    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn at(&self, time: DateTime<Utc>) -> f64 {
        (time - self.started_at).num_milliseconds() as f64 / 1000.0
    }

    fn service(&self, name: &str) -> &Service {
        self.services
            .iter()
            .find(|s| s.name == name)
            .expect("the demo has both services")
    }

    fn event(&mut self, at_s: f64, kind: EventKind, text: String) {
        (self.say)(&format!("{at_s:>7.1}s  {text}"));
        self.events.push(Event { at_s, kind, text });
    }

    async fn until_targets_up(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let up = self.query("up").await.unwrap_or_default();
            let all_up = up.len() == 2 * self.services.len() + 1 && up.iter().all(|s| s["value"][1] == "1");
            if all_up {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(DemoError::Stack(format!(
                    "Prometheus' targets were not all up within 60 s: {}",
                    Value::Array(up)
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// An instant query's result vector.
    async fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let body: Value = self
            .get_json(&format!("{}/api/v1/query", self.prometheus.url), &[("query", expr)])
            .await?;
        Ok(body["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    async fn get_json(&self, url: &str, query: &[(&str, &str)]) -> Result<Value> {
        let failed = |e: reqwest::Error| DemoError::Stack(format!("GET {url}: {e}"));
        self.client
            .get(url)
            .query(query)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(failed)?
            .json()
            .await
            .map_err(failed)
    }

    /// No alert pending or firing (but [`IGNORED_WHEN_QUIET`]), no firing
    /// incident in homeostat, every target up.
    async fn quiet(&self) -> Result<bool> {
        let alerts = self
            .query(&format!("ALERTS{{alertname!~\"{}\"}}", IGNORED_WHEN_QUIET.join("|")))
            .await?;
        let down = self.query("up == 0").await?;
        let firing = self.incidents().await?.into_iter().any(|i| {
            i.status == homeostat_core::alert::AlertStatus::Firing
                && !IGNORED_WHEN_QUIET.contains(&i.alertname.as_str())
        });
        Ok(alerts.is_empty() && down.is_empty() && !firing)
    }

    /// The latest incidents, newest first.
    async fn incidents(&self) -> Result<Vec<Incident>> {
        let url = format!("{}/api/v1/incidents", self.homeostat.url);
        let page = self.get_json(&url, &[("limit", "1000")]).await?;
        serde_json::from_value(page["incidents"].clone())
            .map_err(|e| DemoError::Stack(format!("unexpected answer from {url}: {e}")))
    }

    async fn decisions(&self, incident: i64) -> Result<Vec<Decision>> {
        let url = format!("{}/api/v1/incidents/{incident}/decisions", self.homeostat.url);
        let body = self.get_json(&url, &[]).await?;
        serde_json::from_value(body["decisions"].clone())
            .map_err(|e| DemoError::Stack(format!("unexpected answer from {url}: {e}")))
    }

    async fn admin(
        &self,
        service: &Service,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let url = service.admin_url(path);
        let mut request = self.client.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let failed = |e: reqwest::Error| DemoError::Stack(format!("{method} {url}: {e}"));
        request
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(failed)?
            .json()
            .await
            .map_err(failed)
    }

    async fn inject(&self, fault: Fault) -> Result<()> {
        let target = self.service(fault.target());
        let (kind, body) = match fault {
            Fault::None => return Ok(()),
            Fault::BadDeploy => {
                let image = images::service_tag(target.name, images::BAD_VERSION);
                return self
                    .executor
                    .deploy(&target.container, &image)
                    .await
                    .map(drop)
                    .map_err(|e| DemoError::Docker(format!("deploy {image}: {e}")));
            }
            Fault::Crash => ("crash", json!({})),
            Fault::Hang => ("hang", json!({})),
            Fault::MemoryLeak => ("leak", json!({"rate_mib_per_second": 4.0})),
            Fault::ErrorBurst => ("errors", json!({"ratio": 0.5})),
            Fault::DependencyFailure => ("dependency", json!({"duration_seconds": 20.0})),
        };
        let path = format!("/faults/{kind}");
        self.admin(target, reqwest::Method::POST, &path, Some(body))
            .await
            .map(drop)
    }

    /// The fault is gone from its target and service_a answers.
    async fn recovered(&self, fault: Fault) -> bool {
        let target = self.service(fault.target());
        let Ok(state) = self.admin(target, reqwest::Method::GET, "/faults", None).await else {
            return false;
        };
        let clean = state["active"].as_array().is_some_and(Vec::is_empty) && state["bad_version"] == false;
        let front = self.services[0].url("/api/work");
        clean
            && self
                .client
                .get(&front)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
    }

    /// Puts the target back as it was, for a fault homeostat did not heal.
    async fn clean_up(&self, fault: Fault) -> Result<()> {
        let target = self.service(fault.target());
        self.containers.ensure_running(&target.container).await?;
        if fault == Fault::BadDeploy {
            let image = images::service_tag(target.name, images::GOOD_VERSION);
            let _ = self.executor.deploy(&target.container, &image).await;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .admin(target, reqwest::Method::DELETE, "/faults", None)
            .await
            .is_err()
            && Instant::now() < deadline
        {
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    /// Injects `fault` and follows it until it is healed and the stack is
    /// quiet again, or its deadline passes.
    pub async fn run_fault(&mut self, fault: Fault) -> Result<FaultResult> {
        (self.say)(&format!("── {fault}: waiting for quiet (no alert, every target up)"));
        let quiet_deadline = Instant::now() + self.options.quiet_timeout;
        let mut quiet_before = self.quiet().await?;
        while !quiet_before && Instant::now() < quiet_deadline {
            tokio::time::sleep(POLL).await;
            quiet_before = self.quiet().await?;
        }
        let injected_wall = Utc::now();
        let t0 = self.now();
        self.inject(fault).await?;
        let text = match fault {
            Fault::None => "none: no fault, watching for unneeded actions".to_owned(),
            _ => format!("{fault}: injected into {}", fault.target()),
        };
        self.event(t0, EventKind::Injected, text);

        let deadline = fault.deadline(&self.options);
        let mut result = FaultResult {
            fault,
            target: fault.target(),
            injected_at_s: t0,
            detect_s: None,
            recover_s: None,
            actions: Vec::new(),
            requests_total: 0,
            requests_failed: 0,
            alerts: Vec::new(),
            decisions: Vec::new(),
            quiet_before,
            note: (!quiet_before).then(|| "the stack was not quiet before injection".to_owned()),
        };
        let mut seen: HashSet<i64> = HashSet::new();
        let mut said: BTreeMap<i64, (bool, bool)> = BTreeMap::new();
        let mut decisions: BTreeMap<i64, Decision> = BTreeMap::new();
        let mut ended: Option<f64> = None;
        // A crash takes a moment to happen; until then "no fault active" is no recovery.
        let mut took_effect = fault != Fault::Crash;
        loop {
            let now = self.now();
            let incidents: Vec<Incident> = self
                .incidents()
                .await?
                .into_iter()
                .filter(|i| i.first_seen >= injected_wall)
                .collect();
            for incident in incidents.iter().rev() {
                if seen.insert(incident.id) {
                    let service = incident.labels.get("service").map_or("-", String::as_str).to_owned();
                    result.alerts.push(format!("{} ({service})", incident.alertname));
                    let at = self.at(incident.first_seen);
                    self.event(
                        at,
                        EventKind::Alert,
                        format!("alert {} fired for {service}", incident.alertname),
                    );
                    if result.detect_s.is_none() && service == fault.target() && fault != Fault::None {
                        result.detect_s = Some(round(at - t0));
                    }
                }
                for decision in self.decisions(incident.id).await? {
                    self.follow(&decision, &mut said);
                    decisions.insert(decision.id, decision);
                }
            }
            if !took_effect {
                let target = self.service(fault.target());
                took_effect = self.admin(target, reqwest::Method::GET, "/faults", None).await.is_err();
            }
            if fault != Fault::None && took_effect && result.recover_s.is_none() && self.recovered(fault).await {
                let at = self.now();
                result.recover_s = Some(round(at - t0));
                self.event(
                    at,
                    EventKind::Recovered,
                    format!("{fault}: recovered after {:.1} s", at - t0),
                );
                ended = Some(at);
            }
            let elapsed = Duration::from_secs_f64(now - t0);
            if fault == Fault::None && elapsed >= deadline {
                ended = Some(now);
                break;
            }
            if result.recover_s.is_none() && elapsed >= deadline {
                ended = Some(now);
                result.note = Some(format!("not recovered within {deadline:?}; the demo cleared the fault"));
                self.event(
                    now,
                    EventKind::Recovered,
                    format!("{fault}: NOT recovered within {deadline:?}"),
                );
                self.clean_up(fault).await?;
                break;
            }
            // After recovery, stay until the alerts resolve, to see every action.
            if result.recover_s.is_some() && (self.quiet().await? || elapsed >= deadline + self.options.quiet_timeout) {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        let ended = ended.unwrap_or_else(|| self.now());
        for decision in decisions.values() {
            if decision.new.verdict == homeostat_core::decision::Verdict::Allow {
                let dry_run = if decision.new.dry_run { " (dry run)" } else { "" };
                result.actions.push(format!("{}{dry_run}", decision.new.action));
            }
            result.decisions.push(json!({
                "action": decision.new.action,
                "target": decision.new.target_key,
                "verdict": decision.new.verdict,
                "reason": decision.new.reason,
                "result": decision.result,
                "detail": decision.detail,
                "outcome": decision.outcome,
                // What the learning policy saw (PromQL context) and why it chose.
                "policy": decision.new.record.get("policy").map(|p| json!({
                    "acted": p["acted"],
                    "features": p["view"]["choice"]["features"],
                    "missing": p["view"]["missing"],
                    "why": p["view"]["choice"]["why"],
                })),
            }));
        }
        let samples = self.samples.lock().expect("the load lock is never poisoned");
        let window: Vec<&Sample> = samples
            .iter()
            .filter(|(at, _)| *at >= t0 && *at <= ended)
            .map(|(_, s)| s)
            .collect();
        result.requests_total = window.len();
        result.requests_failed = window.iter().filter(|s| !succeeded(s)).count();
        Ok(result)
    }

    /// Says what became of a decision, once per step.
    fn follow(&mut self, decision: &Decision, said: &mut BTreeMap<i64, (bool, bool)>) {
        let (decided, done) = said.entry(decision.id).or_default();
        if !*decided {
            *decided = true;
            let at = self.at(decision.new.decided_at);
            let text = format!(
                "decision: {} on {} — {} ({})",
                decision.new.action, decision.new.target_key, decision.new.verdict, decision.new.reason
            );
            self.event(at, EventKind::Action, text);
        }
        if !*done {
            if let (Some(result), Some(executed)) = (&decision.result, decision.executed_at) {
                *done = true;
                let at = self.at(executed);
                let detail = decision.detail.clone().unwrap_or_default();
                self.event(
                    at,
                    EventKind::Action,
                    format!("{}: {result} {detail}", decision.new.action),
                );
            }
        }
    }

    fn report(&self, faults: Vec<FaultResult>) -> Report {
        let samples = self.samples.lock().expect("the load lock is never poisoned");
        let mut load: Vec<(u64, u64)> = Vec::new();
        for (at, sample) in samples.iter() {
            let second = *at as usize;
            if load.len() <= second {
                load.resize(second + 1, (0, 0));
            }
            load[second].0 += 1;
            load[second].1 += u64::from(!succeeded(sample));
        }
        Report {
            started_at: self.started_at,
            faults,
            events: self.events.clone(),
            load,
        }
    }

    async fn stop_processes(self) -> Containers {
        self.load.abort();
        self.homeostat.stop().await;
        self.prometheus.stop().await;
        self.alertmanager.stop().await;
        drop(self.dir);
        self.containers
    }

    /// Stops the load and the processes and removes the containers and files.
    pub async fn stop(self) {
        self.stop_processes().await.remove().await;
    }
}

fn succeeded(sample: &Sample) -> bool {
    sample.status.is_some_and(|c| (200..300).contains(&c))
}

fn round(seconds: f64) -> f64 {
    (seconds * 10.0).round() / 10.0
}

/// A free loopback port, by asking the kernel for one.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Steady open-loop load on `url`; every outcome lands in `samples` with
/// its due time in seconds from now.
fn spawn_load(
    client: reqwest::Client,
    rate: f64,
    url: String,
    samples: Arc<Mutex<Vec<(f64, Sample)>>>,
) -> JoinHandle<()> {
    let (sink, mut outcomes) = mpsc::unbounded_channel::<Sample>();
    let make: MakeRequest = Arc::new(move |client: &reqwest::Client, _| client.get(&url));
    tokio::spawn(async move {
        let collect = async {
            while let Some(sample) = outcomes.recv().await {
                let at = sample.due.as_secs_f64();
                samples
                    .lock()
                    .expect("the load lock is never poisoned")
                    .push((at, sample));
            }
        };
        tokio::join!(load::send(client, rate, None, make, sink), collect);
    })
}
