//! The demo's moving parts: Prometheus, Alertmanager and homeostat as child
//! processes, the services as containers on a network of their own. Each
//! part is removed when it is dropped or torn down, whatever ended the demo.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointSettings, HostConfig, NetworkConnectRequest,
    NetworkCreateRequest, NetworkDisconnectRequest, NetworkingConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, RestartContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use serde_json::json;
use tokio::process::{Child, Command};

use super::DemoError;
use homeostat_adapters::executor::docker::{NUMBER_LABEL, PROJECT_LABEL, SERVICE_LABEL};

/// How long the demo's child processes may take to answer their readiness URL.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Finds the first of `names` on `PATH`; absent, the error says which
/// Debian package installs it.
pub fn find_program(names: &[&str], package: &str) -> Result<PathBuf, DemoError> {
    names
        .iter()
        .find_map(|name| which::which(name).ok())
        .ok_or_else(|| DemoError::MissingProgram {
            program: names[0].to_owned(),
            package: package.to_owned(),
        })
}

/// A child process answering HTTP on a loopback port; killed when dropped.
pub struct Daemon {
    name: &'static str,
    child: Child,
    pub url: String,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `program` with `args`, its output in `log`, and waits until
    /// `ready_path` answers 2xx, for at most `ready_timeout`.
    pub async fn start(
        name: &'static str,
        program: &Path,
        args: &[String],
        port: u16,
        ready_path: &str,
        ready_timeout: Duration,
        log: PathBuf,
    ) -> Result<Daemon, DemoError> {
        let io = |e: std::io::Error| DemoError::Io {
            what: format!("start {name} ({})", program.display()),
            source: e,
        };
        let output = std::fs::File::create(&log).map_err(io)?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(output.try_clone().map_err(io)?)
            .stderr(output)
            .kill_on_drop(true)
            .spawn()
            .map_err(io)?;
        let mut daemon = Daemon {
            name,
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        daemon.until_ready(ready_path, ready_timeout).await?;
        Ok(daemon)
    }

    async fn until_ready(&mut self, path: &str, timeout: Duration) -> Result<(), DemoError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .map_err(|e| self.failed(e.to_string()))?;
        let url = format!("{}{path}", self.url);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.failed(format!("exited with {status}")));
            }
            if client.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(self.failed(format!("{url} did not answer within {timeout:?}")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn failed(&self, why: String) -> DemoError {
        DemoError::Component {
            name: self.name.to_owned(),
            why,
            log: self.log.clone(),
        }
    }

    /// Asks the process to stop (SIGTERM through `kill`), then kills it.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill").arg(pid.to_string()).status().await;
            if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
                .await
                .is_ok()
            {
                return;
            }
        }
        let _ = self.child.kill().await;
    }
}

/// A demo service's container and where its ports are published.
#[derive(Clone, Debug)]
pub struct Service {
    /// `service_a` or `service_b`: the binary, the Compose service, the DNS alias.
    pub name: &'static str,
    /// The Compose project the container is labelled with.
    pub project: String,
    pub container: String,
    pub port: u16,
    pub admin_port: u16,
    /// Its environment (the memory limit is added to it).
    pub env: Vec<String>,
}

impl Service {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }
}

/// The memory limit of each service container: the memory-leak fault
/// reaches it within a minute at its default rate.
pub const MEMORY_LIMIT_BYTES: i64 = 256 << 20;

/// The services' containers, in a Compose project and network of their own.
#[derive(Clone)]
pub struct Containers {
    docker: Docker,
    /// Also the network's name.
    project: String,
    /// The services' restart policy: `unless-stopped`, unless the bench's
    /// `none` contender turns it off.
    restart_policy: bool,
}

impl Containers {
    pub async fn create_network(docker: Docker, project: String) -> Result<Containers, DemoError> {
        let request = NetworkCreateRequest {
            name: project.clone(),
            labels: Some(HashMap::from([(PROJECT_LABEL.to_owned(), project.clone())])),
            ..NetworkCreateRequest::default()
        };
        docker
            .create_network(request)
            .await
            .map_err(|e| DemoError::Docker(format!("create network {project}: {e}")))?;
        Ok(Containers {
            docker,
            project,
            restart_policy: true,
        })
    }

    /// Without a restart policy: nothing restarts a container that exits.
    pub fn without_restart_policy(self) -> Containers {
        Containers {
            restart_policy: false,
            ..self
        }
    }

    /// Starts `service` from `image` with its ports published on loopback
    /// at fixed ports, so a restarted or recreated container keeps them.
    pub async fn run(&self, service: &Service, image: &str) -> Result<(), DemoError> {
        let binding = |port: u16| {
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(port.to_string()),
            }])
        };
        let labels = HashMap::from([
            (PROJECT_LABEL.to_owned(), service.project.clone()),
            (SERVICE_LABEL.to_owned(), service.name.to_owned()),
            (NUMBER_LABEL.to_owned(), "1".to_owned()),
        ]);
        let mut env = service.env.clone();
        env.push(format!("MEMORY_LIMIT_BYTES={MEMORY_LIMIT_BYTES}"));
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            env: Some(env),
            labels: Some(labels),
            exposed_ports: Some(vec!["8080/tcp".into(), "8081/tcp".into()]),
            host_config: Some(HostConfig {
                port_bindings: Some(HashMap::from([
                    ("8080/tcp".to_owned(), binding(service.port)),
                    ("8081/tcp".to_owned(), binding(service.admin_port)),
                ])),
                memory: Some(MEMORY_LIMIT_BYTES),
                network_mode: Some(self.project.clone()),
                // The runtime restarts a process that crashes, in about a
                // second; homeostat heals what it cannot (hangs, freezes,
                // bad deploys, drift, leaks) and never restarts a container
                // the runtime is restarting.
                restart_policy: Some(RestartPolicy {
                    name: Some(if self.restart_policy {
                        RestartPolicyNameEnum::UNLESS_STOPPED
                    } else {
                        RestartPolicyNameEnum::NO
                    }),
                    maximum_retry_count: None,
                }),
                ..HostConfig::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    self.project.clone(),
                    EndpointSettings {
                        aliases: Some(vec![service.name.to_owned()]),
                        ..EndpointSettings::default()
                    },
                )])),
            }),
            ..ContainerCreateBody::default()
        };
        let docker_error =
            |what: &str, e: bollard::errors::Error| DemoError::Docker(format!("{what} {}: {e}", service.container));
        let options = CreateContainerOptionsBuilder::default()
            .name(&service.container)
            .build();
        self.docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| docker_error("create", e))?;
        self.docker
            .start_container(&service.container, None)
            .await
            .map_err(|e| docker_error("start", e))?;
        Ok(())
    }

    /// The container's state, image and labels; `None` when it is gone.
    pub async fn inspect(&self, container: &str) -> Result<Option<ContainerInspectResponse>, DemoError> {
        match self.docker.inspect_container(container, None).await {
            Ok(inspected) => Ok(Some(inspected)),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(DemoError::Docker(format!("inspect {container}: {e}"))),
        }
    }

    /// Removes `container` (running or not), if it exists.
    pub async fn remove_one(&self, container: &str) -> Result<(), DemoError> {
        let force = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(container, Some(force)).await {
            Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(e) => Err(DemoError::Docker(format!("remove {container}: {e}"))),
        }
    }

    /// Sends SIGKILL to `container`, from outside the service.
    pub async fn kill(&self, container: &str) -> Result<(), DemoError> {
        let options = KillContainerOptionsBuilder::default().signal("SIGKILL").build();
        self.docker
            .kill_container(container, Some(options))
            .await
            .map_err(|e| DemoError::Docker(format!("kill {container}: {e}")))
    }

    /// Detaches `container` from the project's network through the Docker
    /// API: configuration drift that a restart keeps.
    pub async fn disconnect(&self, container: &str) -> Result<(), DemoError> {
        let request = NetworkDisconnectRequest {
            container: container.to_owned(),
            force: Some(true),
        };
        self.docker
            .disconnect_network(&self.project, request)
            .await
            .map_err(|e| DemoError::Docker(format!("disconnect {container} from {}: {e}", self.project)))
    }

    /// Attaches `service`'s container to the project's network again, under its alias.
    pub async fn connect(&self, service: &Service) -> Result<(), DemoError> {
        let request = NetworkConnectRequest {
            container: service.container.clone(),
            endpoint_config: Some(EndpointSettings {
                aliases: Some(vec![service.name.to_owned()]),
                ..EndpointSettings::default()
            }),
        };
        self.docker
            .connect_network(&self.project, request)
            .await
            .map_err(|e| DemoError::Docker(format!("connect {} to {}: {e}", service.container, self.project)))
    }

    /// Whether `container` is attached to the project's network.
    pub fn on_network(&self, container: &ContainerInspectResponse) -> bool {
        container
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .is_some_and(|n| n.contains_key(&self.project))
    }

    /// Freezes every process of `container` (the cgroup freezer).
    pub async fn pause(&self, container: &str) -> Result<(), DemoError> {
        self.docker
            .pause_container(container)
            .await
            .map_err(|e| DemoError::Docker(format!("pause {container}: {e}")))
    }

    pub async fn unpause(&self, container: &str) -> Result<(), DemoError> {
        self.docker
            .unpause_container(container)
            .await
            .map_err(|e| DemoError::Docker(format!("unpause {container}: {e}")))
    }

    /// Stops `container` cleanly through the API (SIGTERM, then SIGKILL
    /// after 3 s), as `docker stop` does.
    pub async fn stop(&self, container: &str) -> Result<(), DemoError> {
        let options = StopContainerOptionsBuilder::default().t(3).build();
        self.docker
            .stop_container(container, Some(options))
            .await
            .map_err(|e| DemoError::Docker(format!("stop {container}: {e}")))
    }

    /// Restarts `container` through the API (stop within 3 s, then start).
    pub async fn restart(&self, container: &str) -> Result<(), DemoError> {
        let options = RestartContainerOptionsBuilder::default().t(3).build();
        self.docker
            .restart_container(container, Some(options))
            .await
            .map_err(|e| DemoError::Docker(format!("restart {container}: {e}")))
    }

    pub async fn start(&self, container: &str) -> Result<(), DemoError> {
        self.docker
            .start_container(container, None)
            .await
            .map_err(|e| DemoError::Docker(format!("start {container}: {e}")))
    }

    /// Removes every container of the project, then its network.
    pub async fn remove(&self) {
        Containers::remove_project(&self.docker, &self.project).await;
    }

    /// Removes every container labelled with `project`, then the network of that name.
    pub async fn remove_project(docker: &Docker, project: &str) {
        let filters = HashMap::from([("label", vec![format!("{PROJECT_LABEL}={project}")])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = docker.list_containers(Some(options)).await.unwrap_or_default();
        for id in containers.into_iter().filter_map(|c| c.id) {
            let force = RemoveContainerOptionsBuilder::default().force(true).build();
            if let Err(e) = docker.remove_container(&id, Some(force)).await {
                tracing::warn!("Could not remove demo container {id}: {e}");
            }
        }
        // Absent when the demo stopped before creating it.
        let _ = docker.remove_network(project).await;
    }
}

/// Alertmanager's command line: `dir/alertmanager.yml`, its data under
/// `dir`, listening on loopback `port`, no clustering.
pub fn alertmanager_args(dir: &Path, port: u16) -> Vec<String> {
    vec![
        format!("--config.file={}", dir.join("alertmanager.yml").display()),
        format!("--storage.path={}", dir.join("alertmanager-data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        format!("--web.external-url=http://127.0.0.1:{port}"),
        "--cluster.listen-address=".into(),
        "--log.level=warn".into(),
    ]
}

/// Prometheus' command line: `dir/prometheus.yml`, its data under `dir`,
/// listening on loopback `port`, lifecycle API on. A firing alert is resent
/// to Alertmanager every second instead of every minute: a first send that
/// is lost (a reload re-creates the notifier's Alertmanager set) then costs
/// a second, not a minute (docs/BENCHMARKS.md, the demo's alert path).
pub fn prometheus_args(dir: &Path, port: u16) -> Vec<String> {
    vec![
        format!("--config.file={}", dir.join("prometheus.yml").display()),
        format!("--storage.tsdb.path={}", dir.join("prometheus-data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--web.enable-lifecycle".into(),
        "--rules.alert.resend-delay=1s".into(),
        "--log.level=warn".into(),
    ]
}

/// The directory (under the demo's) homeostat writes adaptive-threshold rules into.
pub const GENERATED_RULES: &str = "generated";
/// The demo's adaptive threshold spec, and its alert.
pub const LATENCY_SPEC: &str = "request_latency";
pub const LATENCY_ALERT: &str = "LatencyAboveBand";

/// Prometheus' configuration: 1 s scrapes of both ports of every service
/// (jobs `services` and `services-admin`) and of homeostat, 1 s rule
/// evaluation of `rule_files` and of homeostat's generated rules, alerts to
/// Alertmanager.
pub fn prometheus_config(
    services: &[Service],
    homeostat_port: u16,
    alertmanager_port: u16,
    rule_files: &[&str],
) -> String {
    let targets = |admin: bool| -> Vec<serde_json::Value> {
        services
            .iter()
            .map(|s| {
                let port = if admin { s.admin_port } else { s.port };
                json!({
                    "targets": [format!("127.0.0.1:{port}")],
                    "labels": {
                        "service": s.name,
                        "container": s.container,
                        "compose_project": s.project,
                        "compose_service": s.name,
                    }
                })
            })
            .collect()
    };
    let config = json!({
        "global": {"scrape_interval": "1s", "scrape_timeout": "800ms", "evaluation_interval": "1s"},
        // Relative paths are read from the configuration file's directory.
        "rule_files": rule_files.iter().map(|f| f.to_string()).chain([format!("{GENERATED_RULES}/*.rules.yml")]).collect::<Vec<_>>(),
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [format!("127.0.0.1:{alertmanager_port}")]}]}]},
        "scrape_configs": [
            {"job_name": "services", "static_configs": targets(false)},
            {"job_name": "services-admin", "static_configs": targets(true)},
            {"job_name": "homeostat", "static_configs": [{"targets": [format!("127.0.0.1:{homeostat_port}")]}]},
        ]
    });
    serde_yaml::to_string(&config).expect("a JSON value always serializes")
}

/// Alertmanager's configuration: every alert to homeostat's webhook after
/// 1 s, repeated every 30 s while firing (the next playbook step's chance),
/// but homeostat's own (`Homeostat*`), which are for people and go nowhere here.
pub fn alertmanager_config(homeostat_port: u16) -> String {
    let config = json!({
        "route": {
            "receiver": "homeostat",
            "group_by": ["alertname", "service"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "30s",
            "routes": [{"receiver": "people", "matchers": ["alertname=~\"Homeostat.*\""]}],
        },
        // A caller's latency and errors while its dependency fails are the
        // dependency's: Alertmanager reports them inhibited, and homeostat
        // defers acting on them (scaling out or restarting the caller
        // cannot help) until the inhibition lifts.
        "inhibit_rules": [{
            "source_matchers": ["alertname=\"UpstreamErrors\""],
            "target_matchers": ["alertname=~\"HighLatencyP99|HighErrorRatio\""],
            "equal": ["service", "compose_project", "namespace"],
        }],
        "receivers": [
            {
                "name": "homeostat",
                "webhook_configs": [{
                    "url": format!("http://127.0.0.1:{homeostat_port}/api/v1/alerts"),
                    "send_resolved": true,
                }]
            },
            {"name": "people"},
        ]
    });
    serde_yaml::to_string(&config).expect("a JSON value always serializes")
}

/// homeostat's configuration for the demo: the Docker executor acting for
/// real (unless `options.dry_run`), with limits loosened for one replica per service and faults a
/// minute apart (see the README's demo section).
pub fn homeostat_config(
    dir: &Path,
    port: u16,
    prometheus_port: u16,
    alertmanager_port: u16,
    options: &crate::Options,
) -> String {
    let config = json!({
        "server": {"listen": format!("127.0.0.1:{port}")},
        "journal": {"path": dir.join("homeostat.db"), "synchronous": "normal"},
        "actions": {
            "backend": "docker",
            "dry_run": options.dry_run,
            "playbook": dir.join("playbook.yml"),
            "verify_timeout": "90s",
            "prometheus_url": format!("http://127.0.0.1:{prometheus_port}"),
            "alertmanager_url": format!("http://127.0.0.1:{alertmanager_port}"),
            "guard": {
                "cooldown": "10s",
                "budget": {"max_actions": options.max_actions, "window": "1h"},
                "max_concurrent": 2,
                // One replica per service: a restart has to take it away.
                "min_ready_replicas": 0,
                "circuit_breaker_failures": 3,
            },
            // 1.0.0 runs for minutes before the bad deploy: known good after 20 s.
            "docker": {"min_replicas": 1, "max_replicas": 3, "stop_timeout_seconds": 3, "known_good_after": "20s"},
            // The learning policy acts (unless the bench asks for the
            // playbook alone); with nothing learned yet it chooses what the
            // playbook would.
            "policy": {"mode": options.policy_mode},
        },
        // An adaptive threshold on each service's p99 latency, refitted every
        // 30 s on the last 10 minutes (too short for a daily cycle: AutoETS
        // alone), for the dashboards' "threshold vs actual" panels. A band is
        // published once a series has 90 s of history (the default, 60
        // steps, is 5 minutes here: longer than a short demo). Its alert
        // waits 10 minutes, longer than any fault of the demo lasts, so it
        // shows the band without competing with the playbook's alerts.
        "thresholds": {
            "prometheus_url": format!("http://127.0.0.1:{prometheus_port}"),
            "rules_dir": dir.join(GENERATED_RULES),
            "specs": [{
                "name": LATENCY_SPEC,
                "expr": "service:http_request_duration_seconds:p99_1m",
                "coverage": 0.99,
                "step": "5s",
                "history": "10m",
                "min_history": "90s",
                "refit_interval": "30s",
                "for": "10m",
                "alert": LATENCY_ALERT,
                "labels": {"severity": "info"},
                "annotations": {"summary": "p99 latency of {{ $labels.service }} is above its adaptive band"},
            }],
        },
    });
    serde_yaml::to_string(&config).expect("a JSON value always serializes")
}
