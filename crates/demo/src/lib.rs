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
//! homeostat's API and the services' admin ports, and clears a fault
//! homeostat did not handle back to the known good state;
//! [`Demo::finish`] places every decision under its fault and [`judge`]
//! says whether each was handled right (the command fails if not);
//! [`report`] writes what happened. [`run`] is the whole command, Ctrl-C included. [`load`] is the
//! load generator (`homeostat load`). [`bench`] runs the faults again and
//! again on one stack per contender (nothing, Docker's restart policy, a
//! health-check restarter, homeostat) and compares them (`homeostat bench`).
#![forbid(unsafe_code)]

pub mod bench;
pub mod images;
pub mod judge;
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
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::load::{MakeRequest, Sample};
use bollard::models::ContainerInspectResponse;
use homeostat_adapters::executor::docker::{DockerConfig, DockerExecutor, PREVIOUS_IMAGE_LABEL};
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

/// `ServiceCrashLooping` needs a start within every this many seconds for
/// 90 s on end (and more than 3 starts in 5 minutes).
const CRASH_LOOP_AGE_SECONDS: u32 = 60;

/// How long the stale alert's bad deploy may take to make `BadDeploy` pending.
const STALE_ALERT_WAIT: Duration = Duration::from_secs(60);

/// How long the stale alert's bad build keeps failing after `BadDeploy`
/// turned pending: pending means the 1m error ratio just passed 5%, and
/// fixed at once it may dip back under before the 5 s of `for:` are over
/// (the alert then never fires). Two more seconds of errors hold it above
/// for the rest of the minute, and still leave three before it can fire.
const STALE_ALERT_FIX_AFTER: Duration = Duration::from_secs(2);

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// service_b exits non-zero.
    Crash,
    /// service_a stops answering while its process lives.
    Hang,
    /// service_b is redeployed with the bad build, which the demo replaces
    /// by the good one again while `BadDeploy` is pending: the alert still
    /// fires and arrives after its fault was fixed, and the right action
    /// is none.
    StaleAlert,
    /// service_a's memory grows towards its container limit.
    MemoryLeak,
    /// Half of service_a's requests answer 500.
    ErrorBurst,
    /// service_a's calls to service_b fail for a while; the right action on
    /// service_a is none.
    DependencyFailure,
    /// service_b is redeployed with a build that answers 5xx while healthy.
    BadDeploy,
    /// service_a's whole container is paused through the Docker API.
    Freeze,
    /// service_b's container is detached from its network through the
    /// Docker API: configuration drift, which a restart or a recreate
    /// would keep and a repair from its last known good spec undoes.
    Drift,
    /// service_b's container is sent SIGKILL through the Docker API.
    Kill,
    /// service_b's container is stopped cleanly through the Docker API
    /// (`docker stop`), as an operator would: an intent, which homeostat
    /// and the restart policy leave alone. Not in the demo's default list.
    Stop,
    /// Nothing: no alert and no action may follow.
    None,
}

impl Fault {
    /// Every fault, in the default order. Before a fault that starts new
    /// processes (restarts, deploys, rollbacks), the demo waits until the
    /// target's process is a minute old, so that faults in a row are never
    /// a crash loop to `ServiceCrashLooping` ([`Fault::new_processes`]).
    pub const ALL: [Fault; 11] = [
        Fault::Crash,
        Fault::Hang,
        Fault::StaleAlert,
        Fault::MemoryLeak,
        Fault::ErrorBurst,
        Fault::DependencyFailure,
        Fault::BadDeploy,
        Fault::Freeze,
        Fault::Drift,
        Fault::Kill,
        Fault::None,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Crash => "crash",
            Fault::Hang => "hang",
            Fault::StaleAlert => "stale-alert",
            Fault::MemoryLeak => "memory-leak",
            Fault::ErrorBurst => "error-burst",
            Fault::DependencyFailure => "dependency-failure",
            Fault::BadDeploy => "bad-deploy",
            Fault::Freeze => "freeze",
            Fault::Drift => "drift",
            Fault::Kill => "kill",
            Fault::Stop => "stop",
            Fault::None => "none",
        }
    }

    /// The service the fault is injected into.
    pub fn target(self) -> &'static str {
        match self {
            Fault::Crash | Fault::BadDeploy | Fault::StaleAlert | Fault::Kill | Fault::Drift | Fault::Stop => {
                "service_b"
            }
            _ => "service_a",
        }
    }

    /// How many new processes of the target the fault and its healing
    /// start: a restart one, a deploy and its rollback two.
    pub fn new_processes(self) -> u32 {
        match self {
            Fault::BadDeploy | Fault::StaleAlert => 2,
            Fault::DependencyFailure | Fault::None => 0,
            _ => 1,
        }
    }

    /// Whether the fault takes a moment to show: until the target stops
    /// answering its admin port, "no fault active" is no recovery.
    fn shows_late(self) -> bool {
        matches!(
            self,
            Fault::Crash | Fault::Kill | Fault::Freeze | Fault::Drift | Fault::Stop
        )
    }

    /// How long the fault may take to heal before the demo clears it
    /// itself. A clean stop is an intent nobody should undo: it is
    /// watched as long as the control, for anyone starting it again.
    pub fn deadline(self, options: &Options) -> Duration {
        match self {
            Fault::None | Fault::Stop => options.control,
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
        // The clean stop is not in the demo's default list, but may be asked for.
        let known = || Fault::ALL.into_iter().chain([Fault::Stop]);
        known().find(|f| f.name() == s).ok_or_else(|| {
            let known: Vec<&str> = known().map(Fault::name).collect();
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
    /// homeostat's `actions.policy.mode`: `learn` (the demo's) or `playbook`.
    pub policy_mode: &'static str,
    /// homeostat's action budget per hour (`actions.guard.budget.max_actions`).
    pub max_actions: u32,
    /// The services run with `restart: unless-stopped`.
    pub restart_policy: bool,
    /// Between faults, wait for every alert to resolve and for a target
    /// about to get new processes to be a minute old (homeostat acts on
    /// alerts: a stale one would be the next fault's). Without it, only
    /// for every target up and in its known good state: for the bench's
    /// baselines, which no alert moves.
    pub settle: bool,
    /// Build the images before starting (the bench builds them once for all its stacks).
    pub build_images: bool,
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
            policy_mode: "learn",
            max_actions: 50,
            restart_policy: true,
            settle: true,
            build_images: true,
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
    /// Seconds from the demo's start until the demo moved on: the fault
    /// healed and the stack quiet again, or the fault cleared.
    pub ended_at_s: f64,
    /// Seconds from injection until homeostat received an alert on the target.
    pub detect_s: Option<f64>,
    /// Seconds from injection until the fault was gone and service_a answered.
    pub recover_s: Option<f64>,
    /// The actions homeostat took (guard verdict `allow`), in order; in a
    /// dry run, marked `(dry run)`; made after the fault's window, `(late)`.
    pub actions: Vec<String>,
    /// Requests sent to service_a from injection to recovery (or the deadline).
    pub requests_total: usize,
    pub requests_failed: usize,
    /// The alerts homeostat received in the episode.
    pub alerts: Vec<String>,
    /// Every decision made during the fault (or on an incident it opened,
    /// or after it and before the next, then `late`): action, target,
    /// verdict and reason, result, outcome.
    pub decisions: Vec<Value>,
    /// Whether the stack was quiet (no alert, every target up) before injection.
    pub quiet_before: bool,
    /// What the demo did to bring back the known good state after a fault
    /// homeostat did not heal; empty when it healed.
    pub cleared: Vec<String>,
    /// Restarts of the target by the runtime's restart policy during the fault.
    pub runtime_restarts: i64,
    /// Seconds from injection until the runtime's last restart of the
    /// target (its container's start), when it restarted it.
    pub runtime_restarted_s: Option<f64>,
    /// Who healed the fault: `homeostat`, `runtime` (its restart policy),
    /// or `none` (it ended by itself, or was not healed).
    pub healed_by: &'static str,
    /// Whether homeostat did the right thing (healed, or rightly left alone).
    pub judgement: judge::Judgement,
    pub note: Option<String>,
    /// The fault's window in wall-clock time, for placing decisions.
    #[serde(skip)]
    pub window: judge::Window,
}

impl FaultResult {
    pub fn new(fault: Fault, injected_at_s: f64, quiet_before: bool) -> FaultResult {
        FaultResult {
            fault,
            target: fault.target(),
            injected_at_s,
            ended_at_s: injected_at_s,
            detect_s: None,
            recover_s: None,
            actions: Vec::new(),
            requests_total: 0,
            requests_failed: 0,
            alerts: Vec::new(),
            decisions: Vec::new(),
            quiet_before,
            cleared: Vec::new(),
            runtime_restarts: 0,
            runtime_restarted_s: None,
            healed_by: "none",
            judgement: judge::Judgement {
                passed: false,
                why: "not judged yet".into(),
            },
            note: (!quiet_before).then(|| "the stack was not quiet before injection".to_owned()),
            window: judge::Window::default(),
        }
    }
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
    /// The demo itself fixed or cleared a fault.
    Cleared,
}

/// Everything the demo measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub started_at: DateTime<Utc>,
    pub faults: Vec<FaultResult>,
    pub events: Vec<Event>,
    /// Per second from the start: requests sent and how many failed.
    pub load: Vec<(u64, u64)>,
    /// homeostat only decided and recorded (the no-healing baseline).
    pub dry_run: bool,
}

impl Report {
    /// Why the demo failed, in one line: a fault not healed (or acted on
    /// when it should have been left alone), a control that saw an action
    /// or lost more than 1% of its requests. `None` when every fault went right.
    pub fn failure(&self) -> Option<String> {
        judge::failure(&self.faults, self.dry_run)
    }
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
        write_report(dir, &say, |dir| report::write(&report, dir))?;
    }
    Ok(report)
}

/// Writes a report into `dir` with `write`, and says where.
fn write_report(dir: &Path, say: &Say, write: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<()> {
    write(dir).map_err(|source| DemoError::Io {
        what: format!("write the report to {}", dir.display()),
        source,
    })?;
    say(&format!("Report written to {}", dir.display()));
    Ok(())
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
    let report = match demo.finish(results.clone()).await {
        Ok(report) => report,
        Err(e) => {
            say(&format!(
                "cannot place homeostat's late decisions ({e}); reporting those seen live"
            ));
            demo.report(results)
        }
    };
    say(&report::table(&report.faults));
    if let Some(failure) = report.failure() {
        say(&format!("FAILED: {failure}"));
    }
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
        if options.build_images {
            build_images(&executor, &options.bin_dir(), false, &say).await?;
        }
        let mut containers = Containers::create_network(executor.client().clone(), project.clone()).await?;
        if !options.restart_policy {
            containers = containers.without_restart_policy();
        }
        let services: Vec<Service> = ["service_a", "service_b"]
            .into_iter()
            .map(|name| Service {
                name,
                project: project.clone(),
                container: format!("{project}-{name}-1"),
                port: free_port(),
                admin_port: free_port(),
                // service_a calls service_b by its alias on the project's network.
                env: match name {
                    "service_a" => vec!["SERVICE_B_URL=http://service_b:8080".to_owned()],
                    _ => Vec::new(),
                },
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
        for service in services.iter().rev() {
            attempt!(
                containers
                    .run(service, &images::service_tag(service.name, images::GOOD_VERSION))
                    .await
            );
        }
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
            &stack::homeostat_config(dir.path(), homeostat_port, prometheus_port, alertmanager_port, &options)
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

    /// No alert pending or firing (but [`IGNORED_WHEN_QUIET`] and homeostat's own), no firing
    /// incident in homeostat, every target up.
    async fn quiet(&self) -> Result<bool> {
        // homeostat's own alerts (an escalation in the last 10 minutes, say)
        // are about homeostat, not the services.
        let alerts = self
            .query(&format!(
                "ALERTS{{alertname!~\"{}|Homeostat.*\"}}",
                IGNORED_WHEN_QUIET.join("|")
            ))
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

    /// Deploys `version` of `service` the way a release would: through the
    /// executor, which records the image it replaces and when.
    async fn deploy(&self, service: &Service, version: &str) -> Result<()> {
        let image = images::service_tag(service.name, version);
        self.executor
            .deploy(&service.container, &image)
            .await
            .map(drop)
            .map_err(|e| DemoError::Docker(format!("deploy {image}: {e}")))
    }

    async fn inject(&self, fault: Fault) -> Result<()> {
        let target = self.service(fault.target());
        let (kind, body) = match fault {
            Fault::None => return Ok(()),
            Fault::BadDeploy | Fault::StaleAlert => return self.deploy(target, images::BAD_VERSION).await,
            Fault::Kill => return self.containers.kill(&target.container).await,
            Fault::Stop => return self.containers.stop(&target.container).await,
            Fault::Freeze => return self.containers.pause(&target.container).await,
            Fault::Drift => return self.containers.disconnect(&target.container).await,
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

    /// The stale alert's second half: once `BadDeploy` is pending on the
    /// target (its error ratio is past the threshold and it waits out its
    /// `for:`), the demo deploys the good build again, as an operator
    /// would. The alert still fires — the errors stay in its 1m window —
    /// and reaches homeostat after its fault is gone. Waiting for
    /// *firing* instead would race homeostat. Returns a note when the
    /// fix could not come first.
    async fn fix_before_alert(&mut self, target: &Service) -> Result<Option<String>> {
        let expr = format!("ALERTS{{alertname=\"BadDeploy\", service=\"{}\"}}", target.name);
        let deadline = Instant::now() + STALE_ALERT_WAIT;
        let mut pending = false;
        while !pending && Instant::now() < deadline {
            pending = !self.query(&expr).await?.is_empty();
            if !pending {
                tokio::time::sleep(POLL).await;
            }
        }
        if pending {
            tokio::time::sleep(STALE_ALERT_FIX_AFTER).await;
        }
        let state = match self.query(&expr).await?.first() {
            Some(alert) => alert["metric"]["alertstate"].as_str().map(str::to_owned),
            None if pending => Some("gone".to_owned()),
            None => None,
        };
        self.deploy(target, images::GOOD_VERSION).await?;
        let good = images::service_tag(target.name, images::GOOD_VERSION);
        let (text, note) = match state.as_deref() {
            Some("pending") => (
                format!(
                    "stale-alert: BadDeploy pending on {}; the demo redeployed {good}",
                    target.name
                ),
                None,
            ),
            Some(other) => (
                format!(
                    "stale-alert: BadDeploy already {other} on {}; the demo redeployed {good}",
                    target.name
                ),
                Some(format!(
                    "BadDeploy was already {other} when the demo fixed the fault: homeostat may have acted first"
                )),
            ),
            None => (
                format!("stale-alert: BadDeploy did not show within {STALE_ALERT_WAIT:?}; the demo redeployed {good}"),
                Some(format!("BadDeploy did not show within {STALE_ALERT_WAIT:?}")),
            ),
        };
        let at = self.now();
        self.event(at, EventKind::Cleared, text);
        Ok(note)
    }

    /// How often the runtime's restart policy restarted `service`'s
    /// container (`None` when it is gone): Docker counts it per container,
    /// from its last start by hand.
    async fn runtime_restarts(&self, service: &str) -> Result<Option<(String, i64, Option<DateTime<Utc>>)>> {
        let container = self.containers.inspect(&self.service(service).container).await?;
        Ok(container.map(|c| {
            let started = c
                .state
                .and_then(|s| s.started_at)
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.to_utc());
            (c.id.unwrap_or_default(), c.restart_count.unwrap_or(0), started)
        }))
    }

    /// The target's container runs and is not paused.
    async fn container_up(&self, service: &Service) -> bool {
        matches!(self.containers.inspect(&service.container).await, Ok(Some(c)) if is_up(&c))
    }

    /// The fault is gone from its target (container running, not paused,
    /// no fault active, the good version) and service_a answers.
    async fn recovered(&self, fault: Fault) -> bool {
        self.clean(self.service(fault.target())).await && self.front_answers().await
    }

    /// `service`'s container runs, is not paused, and has no fault active
    /// nor the bad version.
    async fn clean(&self, service: &Service) -> bool {
        if !self.container_up(service).await {
            return false;
        }
        let Ok(state) = self.admin(service, reqwest::Method::GET, "/faults", None).await else {
            return false;
        };
        state["active"].as_array().is_some_and(Vec::is_empty) && state["bad_version"] == false
    }

    async fn front_answers(&self) -> bool {
        let front = self.services[0].url("/api/work");
        self.client
            .get(&front)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// Brings every service back to the known good state after a fault
    /// homeostat did not handle: the good image, on a fresh container when
    /// it runs another one or remembers one a rollback would go back to
    /// (which also drops homeostat's deploy labels), unpaused, running, no
    /// fault active. Says what it did, service by service.
    async fn clear(&self, fault: Fault) -> Result<Vec<String>> {
        let mut done = Vec::new();
        let target = fault.target();
        // The target first: the other is usually only a bystander.
        let mut services = self.services.clone();
        services.sort_by_key(|s| s.name != target);
        for service in &services {
            let good = images::service_tag(service.name, images::GOOD_VERSION);
            match self.containers.inspect(&service.container).await? {
                None => {
                    self.containers.run(service, &good).await?;
                    done.push(format!(
                        "{}: its container was gone, started afresh from {good}",
                        service.name
                    ));
                }
                Some(container) => {
                    let config = container.config.clone().unwrap_or_default();
                    let image = config.image.unwrap_or_default();
                    let labels = config.labels.unwrap_or_default();
                    let previous = labels.get(PREVIOUS_IMAGE_LABEL).filter(|p| **p != good);
                    if image != good || previous.is_some() {
                        self.containers.remove_one(&service.container).await?;
                        self.containers.run(service, &good).await?;
                        let why = match previous {
                            Some(p) if image == good => format!("it remembered {p} as its previous image"),
                            _ => format!("it ran {image}"),
                        };
                        done.push(format!(
                            "{}: recreated from {good} with its original labels ({why})",
                            service.name
                        ));
                    } else {
                        if !self.containers.on_network(&container) {
                            self.containers.connect(service).await?;
                            done.push(format!("{}: attached to its network again", service.name));
                        }
                        let state = container.state.unwrap_or_default();
                        if state.paused == Some(true) {
                            self.containers.unpause(&service.container).await?;
                            done.push(format!("{}: unpaused", service.name));
                        }
                        if state.running != Some(true) {
                            self.containers.start(&service.container).await?;
                            done.push(format!("{}: started (it was not running)", service.name));
                        }
                    }
                }
            }
            // A container just started takes a moment to answer.
            let deadline = Instant::now() + Duration::from_secs(10);
            let state = loop {
                match self.admin(service, reqwest::Method::GET, "/faults", None).await {
                    Ok(state) => break Some(state),
                    Err(_) if Instant::now() < deadline => tokio::time::sleep(POLL).await,
                    Err(_) => break None,
                }
            };
            // A service that cannot say or stop its faults (out of memory,
            // say) is started afresh.
            let recreate = || async {
                self.containers.remove_one(&service.container).await?;
                self.containers.run(service, &good).await
            };
            match state {
                None => {
                    recreate().await?;
                    done.push(format!(
                        "{}: its admin port did not answer within 10 s; recreated from {good}",
                        service.name
                    ));
                }
                Some(state) => {
                    let active: Vec<String> = state["active"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|f| {
                            f.get("fault")
                                .unwrap_or(f)
                                .as_str()
                                .map_or_else(|| f.to_string(), str::to_owned)
                        })
                        .collect();
                    if !active.is_empty() {
                        let active = active.join(", ");
                        match self.admin(service, reqwest::Method::DELETE, "/faults", None).await {
                            Ok(_) => done.push(format!("{}: stopped fault {active}", service.name)),
                            Err(e) => {
                                recreate().await?;
                                done.push(format!(
                                    "{}: could not stop fault {active} ({e}); recreated from {good}",
                                    service.name
                                ));
                            }
                        }
                    }
                }
            }
        }
        if done.is_empty() {
            done.push("nothing was left to undo".to_owned());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.recovered(fault).await {
            if Instant::now() >= deadline {
                done.push(format!("{target} still not recovered 30 s later"));
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(done)
    }

    /// Ready for `fault`: the stack is quiet and, if the fault starts new
    /// processes, the target's has lived [`CRASH_LOOP_AGE_SECONDS`]: then
    /// one fault's starts and its healing end `ServiceCrashLooping`'s
    /// condition before its `for`, and faults in a row are not a loop.
    /// Without [`Options::settle`]: every service clean and service_a answering.
    async fn ready_for(&self, fault: Fault) -> Result<bool> {
        if !self.options.settle {
            for service in &self.services {
                if !self.clean(service).await {
                    return Ok(false);
                }
            }
            return Ok(self.front_answers().await);
        }
        if !self.quiet().await? {
            return Ok(false);
        }
        if fault.new_processes() == 0 {
            return Ok(true);
        }
        let expr = format!(
            "min(time() - process_start_time_seconds{{job=\"services-admin\", service=\"{}\"}})",
            fault.target()
        );
        let age = self
            .query(&expr)
            .await?
            .iter()
            .filter_map(|s| s["value"][1].as_str()?.parse::<f64>().ok())
            .next();
        // Prometheus sees a new process only at its next scrape: the
        // engine tells at once (a restart by the runtime's policy, say).
        let container = self.containers.inspect(&self.service(fault.target()).container).await?;
        let started = container
            .and_then(|c| c.state?.started_at)
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok());
        let running_for = started.map(|t| (Utc::now() - t.to_utc()).num_seconds());
        Ok(age.is_some_and(|age| age >= f64::from(CRASH_LOOP_AGE_SECONDS))
            && running_for.is_some_and(|s| s >= i64::from(CRASH_LOOP_AGE_SECONDS)))
    }

    /// Injects `fault` and follows it until it is healed and the stack is
    /// quiet again, or its deadline passes (then clears it).
    pub async fn run_fault(&mut self, fault: Fault) -> Result<FaultResult> {
        let room = match fault.new_processes() {
            0 => String::new(),
            n => format!(", {} a minute old before {n} new process(es)", fault.target()),
        };
        (self.say)(&format!(
            "── {fault}: waiting for quiet (no alert, every target up{room})"
        ));
        let quiet_deadline = Instant::now() + self.options.quiet_timeout;
        let mut quiet_before = self.ready_for(fault).await?;
        while !quiet_before && Instant::now() < quiet_deadline {
            tokio::time::sleep(POLL).await;
            quiet_before = self.ready_for(fault).await?;
        }
        let restarts_before = self.runtime_restarts(fault.target()).await?;
        let injected_wall = Utc::now();
        let t0 = self.now();
        self.inject(fault).await?;
        let text = match fault {
            Fault::None => "none: no fault, watching for unneeded actions".to_owned(),
            _ => format!("{fault}: injected into {}", fault.target()),
        };
        self.event(t0, EventKind::Injected, text);
        let mut result = FaultResult::new(fault, t0, quiet_before);
        if fault == Fault::StaleAlert {
            let target = self.service(fault.target()).clone();
            if let Some(note) = self.fix_before_alert(&target).await? {
                result.note = Some(note);
            }
        }

        let deadline = fault.deadline(&self.options);
        let mut seen: HashSet<i64> = HashSet::new();
        let mut said: BTreeMap<i64, (bool, bool)> = BTreeMap::new();
        let mut decisions: BTreeMap<i64, (Decision, DateTime<Utc>)> = BTreeMap::new();
        let mut ended: Option<f64> = None;
        let mut took_effect = !fault.shows_late();
        loop {
            let now = self.now();
            // Incidents opened since the injection, and those still open
            // from before: a decision on one now is this fault's too.
            let incidents: Vec<Incident> = self
                .incidents()
                .await?
                .into_iter()
                .filter(|i| i.first_seen >= injected_wall || i.status == homeostat_core::alert::AlertStatus::Firing)
                .collect();
            for incident in incidents.iter().rev() {
                let opened_here = incident.first_seen >= injected_wall;
                if opened_here && seen.insert(incident.id) {
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
                    if opened_here || decision.new.decided_at >= injected_wall {
                        self.follow(&decision, &mut said);
                        decisions.insert(decision.id, (decision, incident.first_seen));
                    }
                }
            }
            if !took_effect {
                let target = self.service(fault.target());
                // A crash the runtime restarts is down for about a second,
                // which a poll on a busy machine can miss: the engine's
                // record of the process's end cannot be missed.
                let container = self.containers.inspect(&target.container).await?;
                took_effect = !container.as_ref().is_some_and(is_up)
                    || container.as_ref().is_some_and(|c| ended_since(c, injected_wall))
                    || self.admin(target, reqwest::Method::GET, "/faults", None).await.is_err();
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
                result.note = Some(format!("not recovered within {deadline:?}"));
                self.event(
                    now,
                    EventKind::Recovered,
                    format!("{fault}: NOT recovered within {deadline:?}"),
                );
                break;
            }
            // After recovery, stay until the alerts resolve, to see every
            // action; no longer than the deadline once homeostat acted on a
            // fault it should have left alone (it may have broken the
            // target again: then the stack will not be quiet soon).
            let acted_wrongly = judge::Expected::of(fault) == judge::Expected::LeaveAlone
                && decisions.values().any(|(d, _)| {
                    d.new.verdict == homeostat_core::decision::Verdict::Allow && d.new.action != "notify"
                });
            let patience = if acted_wrongly {
                deadline
            } else {
                deadline + self.options.quiet_timeout
            };
            let settled = !self.options.settle || self.quiet().await?;
            if result.recover_s.is_some() && (elapsed >= patience || settled) {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        let ended = ended.unwrap_or_else(|| self.now());
        // Counted on the same container only: a recreate starts a new count.
        if let (Some((id, before, _)), Some((same, after, started))) =
            (restarts_before, self.runtime_restarts(fault.target()).await?)
        {
            if id == same {
                result.runtime_restarts = (after - before).max(0);
                if result.runtime_restarts > 0 {
                    result.runtime_restarted_s = started.map(|t| round(self.at(t) - t0));
                }
            }
        }
        let window = judge::Window {
            start: injected_wall,
            end: Utc::now(),
        };
        let live: Vec<(Decision, bool)> = decisions.into_values().map(|(d, _)| (d, false)).collect();
        self.describe(&mut result, &live);
        {
            let samples = self.samples.lock().expect("the load lock is never poisoned");
            let requests: Vec<&Sample> = samples
                .iter()
                .filter(|(at, _)| *at >= t0 && *at <= ended)
                .map(|(_, s)| s)
                .collect();
            result.requests_total = requests.len();
            result.requests_failed = requests.iter().filter(|s| !succeeded(s)).count();
        }
        result.healed_by = judge::healed_by(&result);
        result.judgement = judge::judge(&result);
        // A fault rightly left alone may leave its target down (a clean stop).
        if fault != Fault::None && (!result.judgement.passed || !self.recovered(fault).await) {
            let cleared = self.clear(fault).await?;
            let what = if result.judgement.passed {
                "left as it was"
            } else {
                "not healed"
            };
            let text = format!(
                "fault {fault} was {what} ({}); cleared to known good: {}",
                result.judgement.why,
                cleared.join("; ")
            );
            let at = self.now();
            self.event(at, EventKind::Cleared, text);
            result.cleared = cleared;
        }
        result.window = judge::Window {
            end: Utc::now().max(window.end),
            ..window
        };
        result.ended_at_s = round(self.now());
        Ok(result)
    }

    /// Fills the result's actions and decisions from `decisions` (each
    /// with whether it came after the fault's window), in the order made.
    fn describe(&self, result: &mut FaultResult, decisions: &[(Decision, bool)]) {
        let mut decisions: Vec<&(Decision, bool)> = decisions.iter().collect();
        decisions.sort_by_key(|(d, _)| (d.new.decided_at, d.id));
        result.actions.clear();
        result.decisions.clear();
        for (decision, late) in decisions {
            let late = *late;
            if decision.new.verdict == homeostat_core::decision::Verdict::Allow {
                let dry_run = if decision.new.dry_run { " (dry run)" } else { "" };
                let late = if late { " (late)" } else { "" };
                result.actions.push(format!("{}{dry_run}{late}", decision.new.action));
            }
            result.decisions.push(json!({
                "action": decision.new.action,
                "target": decision.new.target_key,
                "decided_at_s": round(self.at(decision.new.decided_at)),
                "late": late,
                "verdict": decision.new.verdict,
                "reason": decision.new.reason,
                "result": decision.result,
                "detail": decision.detail,
                "outcome": decision.outcome,
                // What the target's own state said: drift, a deliberate stop, the runtime.
                "condition": decision.new.record.get("condition"),
                // What the learning policy saw (PromQL context) and why it chose.
                "policy": decision.new.record.get("policy").map(|p| json!({
                    "acted": p["acted"],
                    "features": p["view"]["choice"]["features"],
                    "missing": p["view"]["missing"],
                    "why": p["view"]["choice"]["why"],
                })),
            }));
        }
    }

    /// Places every decision homeostat made under the fault it belongs to
    /// ([`judge::place`]: the fault during which it was made, else the one
    /// whose incident it is or that came last before it, marked late),
    /// judges each fault again, and makes the report. A decision made
    /// after a fault's window (a late retry) only shows here.
    pub async fn finish(&self, mut results: Vec<FaultResult>) -> Result<Report> {
        let windows: Vec<judge::Window> = results.iter().map(|r| r.window).collect();
        let mut placed: Vec<Vec<(Decision, bool)>> = vec![Vec::new(); results.len()];
        for incident in self.incidents().await? {
            for decision in self.decisions(incident.id).await? {
                if let Some(p) = judge::place(&windows, incident.first_seen, decision.new.decided_at) {
                    placed[p.fault].push((decision, p.late));
                }
            }
        }
        for (result, decisions) in results.iter_mut().zip(placed) {
            self.describe(result, &decisions);
            result.healed_by = judge::healed_by(result);
            let judgement = judge::judge(result);
            if result.judgement.passed && !judgement.passed {
                (self.say)(&format!(
                    "{}: judged again with every decision placed: {}",
                    result.fault, judgement.why
                ));
            }
            result.judgement = judgement;
        }
        Ok(self.report(results))
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
            dry_run: self.options.dry_run,
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

/// Running and not paused.
fn is_up(container: &ContainerInspectResponse) -> bool {
    container
        .state
        .as_ref()
        .is_some_and(|s| s.running == Some(true) && s.paused != Some(true))
}

/// The container's process ended (exited or was killed) at `since` or
/// later, whether or not it runs again now.
fn ended_since(container: &ContainerInspectResponse, since: DateTime<Utc>) -> bool {
    container
        .state
        .as_ref()
        .and_then(|s| s.finished_at.as_deref())
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|t| t.to_utc() >= since)
}

fn succeeded(sample: &Sample) -> bool {
    sample.status.is_some_and(|c| (200..300).contains(&c))
}

fn round(seconds: f64) -> f64 {
    (seconds * 10.0).round() / 10.0
}

/// A free loopback port, by asking the kernel for one, and never one this
/// process handed out before: the port is free only until Docker or a
/// process binds it, and two demos in one process (the tests run several)
/// could otherwise be given the same port and collide.
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(0);
        if port == 0 || given.insert(port) {
            return port;
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::ContainerState;

    fn ended_at(finished_at: &str) -> ContainerInspectResponse {
        ContainerInspectResponse {
            state: Some(ContainerState {
                running: Some(true),
                finished_at: Some(finished_at.to_owned()),
                ..ContainerState::default()
            }),
            ..ContainerInspectResponse::default()
        }
    }

    #[test]
    fn a_process_that_ended_and_runs_again_is_seen_to_have_ended() {
        let injected = DateTime::parse_from_rfc3339("2026-12-08T00:21:00Z").unwrap().to_utc();
        // Restarted by the runtime a second after the crash: running again, ended all the same.
        assert!(ended_since(&ended_at("2026-12-08T00:21:00.123456789Z"), injected));
        assert!(!ended_since(&ended_at("2026-12-08T00:20:59Z"), injected));
        // Docker's "never ended", and nonsense, are not an end.
        assert!(!ended_since(&ended_at("0001-01-01T00:00:00Z"), injected));
        assert!(!ended_since(&ended_at("yesterday"), injected));
        assert!(!ended_since(&ContainerInspectResponse::default(), injected));
    }
}
