//! The Docker executor: operations on a local Docker Engine through bollard.
//!
//! A Compose service is the containers labelled
//! `com.docker.compose.project` and `com.docker.compose.service`, numbered
//! by `com.docker.compose.container-number`. Scaling clones or removes the
//! highest-numbered replica. A clone serves only where the service is
//! reached as Compose's own scaling reaches it: by a network alias on a
//! user-defined network, which the clone shares, and through no fixed host
//! port, which it cannot share ([`clone_unfit`]); elsewhere scale-out is
//! refused before anything is created. Clones carry `homeostat.added-at`,
//! so that homeostat removes only what it added ([`Operation::RemoveAddedReplica`]).
//! Rollback recreates containers from the image
//! recorded in the `homeostat.previous-image` label, which whoever deploys
//! a new image sets to the one it replaces.

use std::collections::HashMap;

use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerConfig, ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, EndpointSettings,
    EventMessage, EventMessageTypeEnum, HealthStatusEnum, ImageConfig, NetworkingConfig, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    RenameContainerOptionsBuilder, RestartContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use homeostat_core::condition::{Condition, Observed, RuntimeRestarts};
pub use homeostat_core::config::DockerConfig;

use super::{time_of_day, Deployed, Done, ExecError, Executor};
use homeostat_core::action::{Action, Backend, Operation, Target};
use homeostat_core::guard::Readiness;

pub const PROJECT_LABEL: &str = "com.docker.compose.project";
pub const SERVICE_LABEL: &str = "com.docker.compose.service";
pub const NUMBER_LABEL: &str = "com.docker.compose.container-number";
pub const PREVIOUS_IMAGE_LABEL: &str = "homeostat.previous-image";
/// When homeostat deployed the container's image (RFC 3339); kept across a
/// recreate with the same image.
pub const DEPLOYED_AT_LABEL: &str = "homeostat.deployed-at";
/// The images the container ran before, newest first, each with when it
/// was deployed and replaced (JSON): where a rollback finds the last known
/// good image.
pub const HISTORY_LABEL: &str = "homeostat.image-history";
/// When homeostat added the container as a clone by scaling out (RFC 3339):
/// the replicas it removes again once the incident that needed them resolved.
pub const ADDED_AT_LABEL: &str = "homeostat.added-at";
/// Images kept in [`HISTORY_LABEL`].
const HISTORY_LENGTH: usize = 8;
/// How close to a container's end a `stop` event must be to be its cause.
const STOP_EVENT_WINDOW_SECONDS: i64 = 15;

/// An image a container ran, and when.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ran {
    pub image: String,
    pub from: chrono::DateTime<chrono::Utc>,
    pub until: chrono::DateTime<chrono::Utc>,
}

impl Ran {
    /// Ran `known_good_after` or longer before it was replaced.
    fn known_good(&self, known_good_after: chrono::Duration) -> bool {
        self.until - self.from >= known_good_after
    }
}

/// The container's image history, newest first (empty when unreadable).
fn history(container: &ContainerInspectResponse) -> Vec<Ran> {
    labels_of(container)
        .get(HISTORY_LABEL)
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default()
}

/// The newest image of `history` that ran `known_good_after` or longer and
/// is not `current`: what a rollback goes back to.
pub fn last_known_good<'a>(history: &'a [Ran], current: &str, known_good_after: chrono::Duration) -> Option<&'a Ran> {
    history
        .iter()
        .find(|ran| ran.image != current && ran.known_good(known_good_after))
}

pub struct DockerExecutor {
    docker: Docker,
    config: DockerConfig,
}

fn unreachable(err: DockerError) -> ExecError {
    ExecError::Unreachable {
        backend: Backend::Docker,
        message: err.to_string(),
    }
}

/// Maps an API error to what it means for the operation.
fn api_error(err: DockerError, what: &str) -> ExecError {
    match err {
        DockerError::DockerResponseServerError {
            status_code: 404,
            message,
        } => ExecError::NotFound(format!("{what}: {message}")),
        DockerError::DockerResponseServerError { status_code, message } => ExecError::Refused {
            backend: Backend::Docker,
            message: format!("{what}: HTTP {status_code}: {message}"),
        },
        other => unreachable(other),
    }
}

fn refused(message: String) -> ExecError {
    ExecError::Refused {
        backend: Backend::Docker,
        message,
    }
}

impl DockerExecutor {
    /// Connects to `host` (else `DOCKER_HOST`, else the local socket) and
    /// agrees on an API version with the engine.
    pub async fn connect(config: DockerConfig) -> Result<DockerExecutor, ExecError> {
        const TIMEOUT_SECONDS: u64 = 120;
        let docker = match config.host.as_deref() {
            None => Docker::connect_with_defaults(),
            Some(host) => match host.strip_prefix("unix://") {
                Some(path) => Docker::connect_with_socket(path, TIMEOUT_SECONDS, bollard::API_DEFAULT_VERSION),
                None => Docker::connect_with_http(host, TIMEOUT_SECONDS, bollard::API_DEFAULT_VERSION),
            },
        };
        // Say where: bollard's errors often do not (a refused TCP connection
        // reads "client error (Connect)").
        let at = |err: DockerError| {
            let (address, key) = match config.host.as_deref() {
                Some(host) => (host.to_owned(), "actions.docker.host"),
                None => (
                    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into()),
                    "DOCKER_HOST, or actions.docker.host",
                ),
            };
            ExecError::Unreachable {
                backend: Backend::Docker,
                message: format!("{address} ({key}): {err}"),
            }
        };
        let docker = docker.map_err(at)?;
        let docker = docker.negotiate_version().await.map_err(at)?;
        docker.ping().await.map_err(at)?;
        Ok(DockerExecutor { docker, config })
    }

    /// The Docker API client, for callers that manage containers themselves.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// The containers of a Compose service, by container number.
    async fn service_containers(
        &self,
        project: &str,
        service: &str,
    ) -> Result<Vec<ContainerInspectResponse>, ExecError> {
        let filters = HashMap::from([(
            "label",
            vec![
                format!("{PROJECT_LABEL}={project}"),
                format!("{SERVICE_LABEL}={service}"),
            ],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| api_error(e, "list containers"))?;
        let mut containers = Vec::with_capacity(summaries.len());
        for id in summaries.into_iter().filter_map(|s| s.id) {
            containers.push(self.inspect(&id).await?);
        }
        containers.sort_by_key(number);
        Ok(containers)
    }

    async fn inspect(&self, container: &str) -> Result<ContainerInspectResponse, ExecError> {
        self.docker
            .inspect_container(container, None)
            .await
            .map_err(|e| api_error(e, &format!("container {container}")))
    }

    /// The container an operation names, or the one of its service most in
    /// need: not running or unhealthy first, else the lowest-numbered.
    async fn pick(
        &self,
        container: &Option<String>,
        project: &Option<String>,
        service: &Option<String>,
    ) -> Result<ContainerInspectResponse, ExecError> {
        if let Some(container) = container {
            return self.inspect(container).await;
        }
        let (Some(project), Some(service)) = (project, service) else {
            return Err(ExecError::Unsupported("no container or Compose service named".into()));
        };
        let containers = self.service_containers(project, service).await?;
        let worst = containers.iter().position(|c| !is_ready(c)).unwrap_or(0);
        containers
            .into_iter()
            .nth(worst)
            .ok_or_else(|| ExecError::NotFound(format!("Compose service {project}/{service} has no containers")))
    }

    async fn restart(&self, container: &ContainerInspectResponse) -> Result<Done, ExecError> {
        let id = container.id.clone().unwrap_or_default();
        let name = display_name(container);
        // A frozen (paused) container cannot be restarted as it is.
        let was_paused = container.state.as_ref().and_then(|s| s.paused).unwrap_or(false);
        if was_paused {
            self.docker
                .unpause_container(&id)
                .await
                .map_err(|e| api_error(e, &format!("unpause {name}")))?;
        }
        let options = RestartContainerOptionsBuilder::default()
            .t(self.config.stop_timeout_seconds)
            .build();
        self.docker
            .restart_container(&id, Some(options))
            .await
            .map_err(|e| api_error(e, &format!("restart {name}")))?;
        Ok(if was_paused {
            format!("unpaused and restarted container {name}")
        } else {
            format!("restarted container {name}")
        })
    }

    /// Starts another replica like `from` (its own configuration, networks
    /// and aliases, labels), with `labels` changed, named `name`. Only a
    /// service [`clone_unfit`] finds fit is cloned: one without fixed host
    /// ports, so what `from` publishes the engine publishes again on ports
    /// of its choosing. A replica that does not start is removed again.
    async fn add_replica(
        &self,
        from: &ContainerInspectResponse,
        name: &str,
        labels: HashMap<String, String>,
    ) -> Result<String, ExecError> {
        let mut body = clone_body(from, None, labels);
        // The clone shares the aliases the service is reached by; the
        // original's own name and id stay its own.
        let (own_name, id) = (display_name(from), from.id.clone().unwrap_or_default());
        let endpoints = body
            .networking_config
            .iter_mut()
            .flat_map(|n| n.endpoints_config.iter_mut());
        for endpoint in endpoints.flat_map(|e| e.values_mut()) {
            if let Some(aliases) = endpoint.aliases.as_mut() {
                aliases.retain(|alias| is_shared_alias(alias, &own_name, &id));
            }
        }
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| api_error(e, &format!("create {name}")))?;
        if let Err(e) = self.docker.start_container(&created.id, None).await {
            let _ = self.remove(&created.id).await;
            return Err(api_error(e, &format!("start {name}")));
        }
        Ok(created.id)
    }

    /// Replaces a container by a new one from its own configuration (and
    /// `image`, when given). The new container is created before the old one
    /// is removed, so a configuration Docker refuses leaves the old running.
    async fn recreate(&self, old: &ContainerInspectResponse, image: Option<String>) -> Result<Done, ExecError> {
        let name = display_name(old);
        let mut from = old.clone();
        if image.is_some() {
            // The container's config holds its image's defaults (ENV, CMD,
            // labels) merged in; carried over, they would override the new
            // image's own (a rollback would keep the bad build's settings).
            let old_image = old.image.clone().unwrap_or_default();
            match self.docker.inspect_image(&old_image).await {
                Ok(inspected) => {
                    if let (Some(config), Some(defaults)) = (from.config.as_mut(), inspected.config) {
                        strip_image_defaults(config, &defaults);
                    }
                }
                Err(e) => tracing::warn!(
                    container = %name,
                    error = %e,
                    "Cannot inspect the container's current image; its defaults are carried over to the new one."
                ),
            }
        }
        let mut labels = labels_of(&from);
        // A new image remembers the ones it replaces and how long each ran,
        // so a rollback can go back to the last known good.
        if image.is_some() {
            let now = chrono::Utc::now();
            if let Some(current) = configured_image(old) {
                let mut ran = history(old);
                ran.insert(
                    0,
                    Ran {
                        image: current.clone(),
                        from: deployed_at(old).unwrap_or(now),
                        until: now,
                    },
                );
                ran.truncate(HISTORY_LENGTH);
                labels.insert(HISTORY_LABEL.into(), serde_json::to_string(&ran).unwrap_or_default());
                labels.insert(PREVIOUS_IMAGE_LABEL.into(), current);
            }
            let now = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            labels.insert(DEPLOYED_AT_LABEL.into(), now);
        } else if let Some(created) = old.created.clone().filter(|_| !labels.contains_key(DEPLOYED_AT_LABEL)) {
            // Same image: it was deployed when the old container was made.
            labels.insert(DEPLOYED_AT_LABEL.into(), created);
        }
        let body = clone_body(&from, image.clone(), labels);
        self.replace(old, body).await?;
        let image = image.map_or(String::new(), |i| format!(" from image {i}"));
        Ok(format!("recreated container {name}{image}"))
    }

    /// Replaces container `old` by one created from `body`, under the same
    /// name. The new container is created before the old one is removed,
    /// so a configuration Docker refuses leaves the old one running.
    async fn replace(&self, old: &ContainerInspectResponse, body: ContainerCreateBody) -> Result<(), ExecError> {
        let name = display_name(old);
        let old_id = old.id.clone().unwrap_or_default();
        let staging = format!("{name}-homeostat-new");
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&staging).build()),
                body,
            )
            .await
            .map_err(|e| api_error(e, &format!("create a replacement for {name}")))?;
        let stop = StopContainerOptionsBuilder::default()
            .t(self.config.stop_timeout_seconds)
            .build();
        if let Err(e) = self.docker.stop_container(&old_id, Some(stop)).await {
            // A container that is not running needs no stopping; anything else is a refusal.
            if !matches!(e, DockerError::DockerResponseServerError { status_code: 304, .. }) {
                let _ = self.remove(&created.id).await;
                return Err(api_error(e, &format!("stop {name}")));
            }
        }
        self.remove(&old_id).await?;
        self.docker
            .rename_container(
                &created.id,
                RenameContainerOptionsBuilder::default().name(&name).build(),
            )
            .await
            .map_err(|e| api_error(e, &format!("rename the replacement of {name}")))?;
        self.docker
            .start_container(&created.id, None)
            .await
            .map_err(|e| api_error(e, &format!("start the replacement of {name}")))?;
        Ok(())
    }

    /// Recreates `container` from `spec`, its last known good spec (as
    /// [`ContainerSpec`]), whatever it drifted to since.
    async fn repair(&self, container: &str, spec: &serde_json::Value) -> Result<Done, ExecError> {
        let spec: ContainerSpec = serde_json::from_value(spec.clone()).map_err(|e| {
            ExecError::Unsupported(format!(
                "the known good spec of {container} is not a container spec: {e}"
            ))
        })?;
        let old = self.inspect(container).await?;
        self.replace(&old, spec.body).await?;
        Ok(format!(
            "repaired container {container}: recreated from its last known good spec"
        ))
    }

    /// Whether `container` was stopped through the API (a `stop` event
    /// within seconds before it finished), which Docker's events tell.
    async fn stopped_through_api(&self, id: &str, finished: chrono::DateTime<chrono::Utc>) -> Result<bool, ExecError> {
        use futures_util::StreamExt;
        let filters = HashMap::from([
            ("container".to_owned(), vec![id.to_owned()]),
            ("event".to_owned(), vec!["stop".to_owned()]),
        ]);
        // Never an `until` in the future: the engine would wait for it.
        let window = chrono::Duration::seconds(STOP_EVENT_WINDOW_SECONDS);
        let until = (finished + window).min(chrono::Utc::now());
        let options = EventsOptionsBuilder::default()
            .since(&engine_time(finished - window))
            .until(&engine_time(until))
            .filters(&filters)
            .build();
        let mut events = self.docker.events(Some(options));
        match events.next().await {
            Some(Ok(_)) => Ok(true),
            None => Ok(false),
            Some(Err(e)) => Err(api_error(e, &format!("the events of container {id}"))),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), ExecError> {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        self.docker
            .remove_container(id, Some(options))
            .await
            .map_err(|e| api_error(e, &format!("remove {id}")))
    }

    async fn scale(&self, project: &str, service: &str, delta: i32) -> Result<Done, ExecError> {
        let containers = self.service_containers(project, service).await?;
        let count = containers.len() as u32;
        let Some(last) = containers.last() else {
            return Err(ExecError::NotFound(format!(
                "Compose service {project}/{service} has no containers to scale from"
            )));
        };
        if delta > 0 {
            // Checked by the pipeline before it decides (`unfit`), and here
            // again: whoever calls, nothing is created that would not serve.
            if let Some(why) = clone_unfit(last, project, service) {
                return Err(refused(why));
            }
            if count >= self.config.max_replicas {
                return Err(refused(format!(
                    "{project}/{service} already has {count} replicas (executor.docker.max_replicas: {})",
                    self.config.max_replicas
                )));
            }
            let next = number(last) + 1;
            let name = format!("{project}-{service}-{next}");
            let mut labels = labels_of(last);
            labels.insert(NUMBER_LABEL.into(), next.to_string());
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            labels.insert(ADDED_AT_LABEL.into(), now);
            self.add_replica(last, &name, labels).await?;
            Ok(format!(
                "scaled {project}/{service} from {count} to {} replicas: started {name}",
                count + 1
            ))
        } else {
            if count <= self.config.min_replicas {
                return Err(refused(format!(
                    "{project}/{service} has {count} replicas (executor.docker.min_replicas: {})",
                    self.config.min_replicas
                )));
            }
            let name = display_name(last);
            self.remove(last.id.as_deref().unwrap_or_default()).await?;
            Ok(format!(
                "scaled {project}/{service} from {count} to {} replicas: removed {name}",
                count - 1
            ))
        }
    }

    /// Removes the highest-numbered replica of the service that homeostat
    /// added ([`ADDED_AT_LABEL`]), within `min_replicas`, and never the
    /// last ready one.
    async fn remove_added(&self, project: &str, service: &str) -> Result<Done, ExecError> {
        let containers = self.service_containers(project, service).await?;
        let count = containers.len() as u32;
        let Some(added) = containers
            .iter()
            .rev()
            .find(|c| labels_of(c).contains_key(ADDED_AT_LABEL))
        else {
            return Err(ExecError::NotFound(format!(
                "Compose service {project}/{service} has no replica homeostat added (label {ADDED_AT_LABEL}); \
                 someone removed it already, or it was never started"
            )));
        };
        if count <= self.config.min_replicas {
            return Err(refused(format!(
                "{project}/{service} has {count} replicas (executor.docker.min_replicas: {})",
                self.config.min_replicas
            )));
        }
        let ready = containers.iter().filter(|c| is_ready(c)).count();
        if is_ready(added) && ready <= 1 {
            return Err(refused(format!(
                "{} is the only ready replica of {project}/{service}; removing it would leave none serving",
                display_name(added)
            )));
        }
        let name = display_name(added);
        self.remove(added.id.as_deref().unwrap_or_default()).await?;
        Ok(format!(
            "scaled {project}/{service} from {count} to {} replicas: removed {name}, which homeostat added",
            count - 1
        ))
    }

    async fn rollback(&self, project: &str, service: &str) -> Result<Done, ExecError> {
        let containers = self.service_containers(project, service).await?;
        if containers.is_empty() {
            return Err(ExecError::NotFound(format!(
                "Compose service {project}/{service} has no containers"
            )));
        }
        let mut done = Vec::new();
        let known_good_after = self.config.known_good_after.as_delta();
        for container in &containers {
            let name = display_name(container);
            let current = configured_image(container).unwrap_or_default();
            let ran = history(container);
            if ran.is_empty() {
                return Err(refused(format!(
                    "container {name} records no earlier image (label {HISTORY_LABEL}): homeostat did not deploy it"
                )));
            }
            let Some(good) = last_known_good(&ran, &current, known_good_after) else {
                let tried: Vec<String> = ran
                    .iter()
                    .map(|r| format!("{} ran {}s", r.image, (r.until - r.from).num_seconds()))
                    .collect();
                return Err(refused(format!(
                    "container {name} ran no image other than {current} for {} or longer (known_good_after) \
                     before it was replaced: {}; nothing known good to roll back to",
                    self.config.known_good_after,
                    tried.join(", ")
                )));
            };
            let previous = good.image.clone();
            done.push(self.recreate(container, Some(previous)).await?);
        }
        Ok(done.join("; "))
    }

    /// Deploys `image` to `container` the way a rollback can undo: the
    /// container is recreated from its own configuration with the new image,
    /// and the image it ran is recorded in `homeostat.previous-image`.
    pub async fn deploy(&self, container: &str, image: &str) -> Result<Done, ExecError> {
        let old = self.inspect(container).await?;
        self.recreate(&old, Some(image.to_owned())).await
    }
}

impl Executor for DockerExecutor {
    fn backend(&self) -> Backend {
        Backend::Docker
    }

    /// From the engine's events in the window: the target's containers
    /// updated (`docker update`: limits, restart policy), created, removed
    /// or renamed, and networks connected to or disconnected from them.
    /// Their starts, stops and deaths are not changes (the restart policy
    /// and crashes make those), nor is the network detach and attach that
    /// comes with each stop and start. The engine's clock places the
    /// events: the same as homeostat's on a local engine.
    async fn changes(
        &self,
        target: &Target,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<String>, ExecError> {
        // The engine refuses a window that ends before it starts.
        if until < since {
            return Ok(Vec::new());
        }
        let current = match (&target.compose_project, &target.compose_service, &target.container) {
            (Some(project), Some(service), _) => self.service_containers(project, service).await?,
            (_, _, Some(container)) => match self.inspect(container).await {
                Ok(found) => vec![found],
                // Gone now: its removal may be in the window all the same.
                Err(ExecError::NotFound(_)) => Vec::new(),
                Err(err) => return Err(err),
            },
            _ => return Ok(Vec::new()),
        };
        let known: HashMap<String, Known> = current
            .iter()
            .filter_map(|c| {
                let known = Known {
                    name: display_name(c),
                    running: c.state.as_ref().and_then(|s| s.running).unwrap_or(false),
                };
                Some((c.id.clone()?, known))
            })
            .collect();
        let filters = HashMap::from([
            ("type", vec!["container", "network"]),
            (
                "event",
                CONTAINER_CHANGES
                    .iter()
                    .chain(&NETWORK_CHANGES)
                    .chain(&LIFECYCLE)
                    .copied()
                    .collect(),
            ),
        ]);
        let options = EventsOptionsBuilder::default()
            .since(&engine_time(since))
            .until(&engine_time(until))
            .filters(&filters)
            .build();
        let events: Vec<EventMessage> = self
            .docker
            .events(Some(options))
            .try_collect()
            .await
            .map_err(|e| api_error(e, "read the engine's events"))?;
        Ok(outside_changes(&events, target, &known, since, until))
    }

    /// The service's images, deployed when the newest of its containers
    /// got its image (homeostat's label, else the container's creation).
    async fn deployed(&self, target: &Target) -> Result<Option<Deployed>, ExecError> {
        let containers = match (&target.compose_project, &target.compose_service, &target.container) {
            (Some(project), Some(service), _) => self.service_containers(project, service).await?,
            (_, _, Some(container)) => vec![self.inspect(container).await?],
            _ => return Ok(None),
        };
        let images: std::collections::BTreeSet<String> = containers.iter().filter_map(configured_image).collect();
        if images.is_empty() {
            return Ok(None);
        }
        let since = containers.iter().filter_map(deployed_at).max();
        // Every container runs an image its own history knows as good.
        let known_good_after = self.config.known_good_after.as_delta();
        let known_good = containers.iter().all(|c| {
            let current = configured_image(c).unwrap_or_default();
            history(c)
                .iter()
                .any(|ran| ran.image == current && ran.known_good(known_good_after))
        });
        Ok(Some(Deployed {
            what: images.into_iter().collect::<Vec<_>>().join(","),
            since,
            known_good,
        }))
    }

    /// The container the target names (else its service's most in need):
    /// its spec, whether it was stopped on purpose (through the API, exit
    /// 0, not OOM-killed), and its restart policy if that restarts.
    async fn condition(&self, target: &Target) -> Result<Option<Condition>, ExecError> {
        if target.container.is_none() && (target.compose_project.is_none() || target.compose_service.is_none()) {
            return Ok(None);
        }
        let container = self
            .pick(&target.container, &target.compose_project, &target.compose_service)
            .await?;
        let name = display_name(&container);
        let state = container.state.clone().unwrap_or_default();
        let time = |t: &Option<String>| {
            t.as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.to_utc())
        };
        let exited_cleanly = state.status == Some(ContainerStateStatusEnum::EXITED)
            && state.exit_code == Some(0)
            && state.oom_killed != Some(true);
        let stopped_deliberately = match (exited_cleanly, time(&state.finished_at)) {
            (true, Some(finished)) => {
                let id = container.id.as_deref().unwrap_or_default();
                self.stopped_through_api(id, finished)
                    .await?
                    .then(|| format!("container {name} was stopped through the Docker API and exited 0 at {finished}"))
            }
            _ => None,
        };
        let policy = container
            .host_config
            .as_ref()
            .and_then(|h| h.restart_policy.as_ref())
            .and_then(|p| p.name)
            .filter(|p| !matches!(p, RestartPolicyNameEnum::NO | RestartPolicyNameEnum::EMPTY));
        let runtime = policy.map(|policy| RuntimeRestarts {
            policy: policy.to_string(),
            restarting: state.restarting == Some(true),
            restarts: container.restart_count.unwrap_or(0),
            started_at: time(&state.started_at),
        });
        Ok(Some(Condition {
            instance: instance(&name),
            spec: serde_json::to_value(spec_of(&container)).ok(),
            stopped_deliberately,
            runtime,
        }))
    }

    /// Every running container of a Compose project.
    async fn observe(&self) -> Result<Vec<Observed>, ExecError> {
        let filters = HashMap::from([("label", vec![PROJECT_LABEL.to_owned()])]);
        let options = ListContainersOptionsBuilder::default().filters(&filters).build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| api_error(e, "list containers"))?;
        let mut observed = Vec::with_capacity(summaries.len());
        for id in summaries.into_iter().filter_map(|s| s.id) {
            let container = match self.inspect(&id).await {
                Ok(container) => container,
                // Removed since it was listed.
                Err(ExecError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let name = display_name(&container);
            let labels = labels_of(&container);
            let Ok(spec) = serde_json::to_value(spec_of(&container)) else {
                continue;
            };
            observed.push(Observed {
                instance: instance(&name),
                target: Target {
                    container: Some(name),
                    compose_project: labels.get(PROJECT_LABEL).cloned(),
                    compose_service: labels.get(SERVICE_LABEL).cloned(),
                    ..Target::default()
                },
                spec,
                ready: is_ready(&container),
            });
        }
        Ok(observed)
    }

    fn drift(&self, known_good: &serde_json::Value, now: &serde_json::Value) -> Vec<String> {
        match (
            serde_json::from_value::<ContainerSpec>(known_good.clone()),
            serde_json::from_value::<ContainerSpec>(now.clone()),
        ) {
            (Ok(good), Ok(now)) => drift(&good, &now),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "A container spec is unreadable; no drift can be told.");
                Vec::new()
            }
        }
    }

    /// A scale-out whose clone would not serve ([`clone_unfit`], judged on
    /// the replica it would clone).
    async fn unfit(&self, target: &Target, action: Action) -> Result<Option<String>, ExecError> {
        let (Action::ScaleOut, Some(project), Some(service)) =
            (action, &target.compose_project, &target.compose_service)
        else {
            return Ok(None);
        };
        let containers = self.service_containers(project, service).await?;
        Ok(containers.last().and_then(|last| clone_unfit(last, project, service)))
    }

    async fn readiness(&self, target: &Target) -> Result<Option<Readiness>, ExecError> {
        let instance_ready = match &target.container {
            Some(container) => Some(is_ready(&self.inspect(container).await?)),
            None => None,
        };
        if let (Some(project), Some(service)) = (&target.compose_project, &target.compose_service) {
            let containers = self.service_containers(project, service).await?;
            return Ok(Some(Readiness {
                ready: containers.iter().filter(|c| is_ready(c)).count() as u32,
                total: containers.len() as u32,
                instance_ready,
            }));
        }
        Ok(instance_ready.map(Readiness::single))
    }

    async fn execute(&self, operation: &Operation) -> Result<Done, ExecError> {
        match operation {
            Operation::Notify => Ok("notified".into()),
            Operation::RestartContainer {
                container,
                project,
                service,
            } => {
                let picked = self.pick(container, project, service).await?;
                self.restart(&picked).await
            }
            Operation::RecreateContainer {
                container,
                project,
                service,
            } => {
                let picked = self.pick(container, project, service).await?;
                self.recreate(&picked, None).await
            }
            Operation::ScaleComposeService {
                project,
                service,
                delta,
            } => self.scale(project, service, *delta).await,
            Operation::RollbackComposeService { project, service } => self.rollback(project, service).await,
            Operation::RepairContainer { container, spec } => self.repair(container, spec).await,
            Operation::RemoveAddedReplica { project, service } => self.remove_added(project, service).await,
            other => Err(ExecError::Unsupported(format!(
                "the Docker executor cannot perform {}",
                serde_json::to_string(other).unwrap_or_default()
            ))),
        }
    }
}

/// Container events that change a container's configuration.
const CONTAINER_CHANGES: [&str; 4] = ["update", "create", "destroy", "rename"];
/// Network events that change a container's configuration, unless a stop
/// or start of the container made them.
const NETWORK_CHANGES: [&str; 2] = ["connect", "disconnect"];
/// Container events read only to tell the network changes a stop or start
/// makes from those made by hand.
const LIFECYCLE: [&str; 2] = ["die", "start"];

/// A container of the target as it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Known {
    name: String,
    running: bool,
}

/// A time as the engine's events API reads it: seconds and nanoseconds.
fn engine_time(at: DateTime<Utc>) -> String {
    format!("{}.{:09}", at.timestamp(), at.timestamp_subsec_nanos())
}

/// The outside changes among `events` (any order) to the containers of
/// `target` (`known`: those it has now, by id), within `since..=until`,
/// oldest first. A network detached after a container died, or attached
/// before it started, went with the stop or start: not a change. Whether a
/// container was up before its first event in the window is read from that
/// event (a start: it was down), else from its state now.
fn outside_changes(
    events: &[EventMessage],
    target: &Target,
    known: &HashMap<String, Known>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<String> {
    let at = |e: &EventMessage| {
        e.time_nano
            .map(DateTime::<Utc>::from_timestamp_nanos)
            .or_else(|| e.time.and_then(|t| DateTime::<Utc>::from_timestamp(t, 0)))
    };
    let mut events: Vec<(DateTime<Utc>, &EventMessage)> = events
        .iter()
        .filter_map(|e| Some((at(e)?, e)))
        .filter(|(t, _)| (since..=until).contains(t))
        .collect();
    events.sort_by_key(|(t, _)| *t);
    let attributes = |e: &EventMessage| e.actor.as_ref().and_then(|a| a.attributes.clone()).unwrap_or_default();
    let actor = |e: &EventMessage| e.actor.as_ref().and_then(|a| a.id.clone()).unwrap_or_default();
    // The target's containers: those it has now, and those its events name
    // (one removed since, a replacement created).
    let mut names: HashMap<String, String> = known.iter().map(|(id, k)| (id.clone(), k.name.clone())).collect();
    for (_, e) in events
        .iter()
        .filter(|(_, e)| e.typ == Some(EventMessageTypeEnum::CONTAINER))
    {
        let attributes = attributes(e);
        if is_targets(&attributes, target) {
            let name = attributes.get("name").cloned().unwrap_or_else(|| actor(e));
            names.entry(actor(e)).or_insert(name);
        }
    }
    let mut up: HashMap<&str, bool> = HashMap::new();
    for (_, e) in &events {
        let id = e.actor.as_ref().and_then(|a| a.id.as_deref()).unwrap_or_default();
        if e.typ == Some(EventMessageTypeEnum::CONTAINER) && names.contains_key(id) && !up.contains_key(id) {
            match e.action.as_deref() {
                Some("start") => {
                    up.insert(id, false);
                }
                Some("die") => {
                    up.insert(id, true);
                }
                _ => {}
            }
        }
    }
    let mut up: HashMap<String, bool> = names
        .keys()
        .map(|id| {
            let was = up.get(id.as_str()).copied();
            (
                id.clone(),
                was.unwrap_or_else(|| known.get(id).is_none_or(|k| k.running)),
            )
        })
        .collect();
    let mut changes = Vec::new();
    for (t, e) in events {
        let attributes = attributes(e);
        let when = time_of_day(t);
        let action = e.action.as_deref().unwrap_or_default();
        match e.typ {
            Some(EventMessageTypeEnum::CONTAINER) => {
                let id = actor(e);
                let Some(name) = names.get(&id) else { continue };
                let name = attributes.get("name").unwrap_or(name);
                match action {
                    "start" => {
                        up.insert(id, true);
                    }
                    "die" => {
                        up.insert(id, false);
                    }
                    "update" => changes.push(format!(
                        "container {name}: limits or restart policy changed (docker update) at {when}"
                    )),
                    "create" => changes.push(format!("container {name} created at {when}")),
                    "destroy" => changes.push(format!("container {name} removed at {when}")),
                    "rename" => {
                        let old = attributes.get("oldName").map_or("?", |n| n.trim_start_matches('/'));
                        changes.push(format!("container {old} renamed to {name} at {when}"));
                    }
                    _ => {}
                }
            }
            Some(EventMessageTypeEnum::NETWORK) => {
                let Some(id) = attributes.get("container") else {
                    continue;
                };
                let Some(name) = names.get(id) else { continue };
                let network = attributes.get("name").map_or("?", String::as_str);
                // While the container is down, its networks come and go with
                // its stop and start.
                if !up.get(id).copied().unwrap_or(true) {
                    continue;
                }
                match action {
                    "connect" => changes.push(format!("network {network}: container {name} connected at {when}")),
                    "disconnect" => changes.push(format!("network {network}: container {name} disconnected at {when}")),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    // One change can be told twice (a disconnect from the endpoint and the sandbox).
    changes.dedup();
    changes
}

/// Whether a container event's attributes (its name and labels) are of a
/// container of `target`.
fn is_targets(attributes: &HashMap<String, String>, target: &Target) -> bool {
    let named = target.container.as_ref().is_some_and(|c| {
        attributes.get("name") == Some(c)
            || attributes.get("oldName").map(|n| n.trim_start_matches('/')) == Some(c.as_str())
    });
    let of_service = match (&target.compose_project, &target.compose_service) {
        (Some(project), Some(service)) => {
            attributes.get(PROJECT_LABEL) == Some(project) && attributes.get(SERVICE_LABEL) == Some(service)
        }
        _ => false,
    };
    named || of_service
}

/// The image a container was created from, as it was named (a tag, not an id).
fn configured_image(container: &ContainerInspectResponse) -> Option<String> {
    container.config.as_ref().and_then(|c| c.image.clone())
}

/// When the container got its image: homeostat's label, else its creation.
fn deployed_at(container: &ContainerInspectResponse) -> Option<chrono::DateTime<chrono::Utc>> {
    let label = labels_of(container).remove(DEPLOYED_AT_LABEL);
    label
        .as_deref()
        .or(container.created.as_deref())
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.to_utc())
}

/// Running, not paused, and not reported unhealthy by its health check.
fn is_ready(container: &ContainerInspectResponse) -> bool {
    let Some(state) = &container.state else {
        return false;
    };
    let running = state.status == Some(ContainerStateStatusEnum::RUNNING) && state.paused != Some(true);
    let unhealthy = state
        .health
        .as_ref()
        .and_then(|h| h.status)
        .is_some_and(|s| s == HealthStatusEnum::UNHEALTHY);
    running && !unhealthy
}

fn number(container: &ContainerInspectResponse) -> u32 {
    labels_of(container)
        .get(NUMBER_LABEL)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn labels_of(container: &ContainerInspectResponse) -> HashMap<String, String> {
    container
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default()
}

fn display_name(container: &ContainerInspectResponse) -> String {
    container
        .name
        .as_deref()
        .map(|n| n.trim_start_matches('/').to_owned())
        .or_else(|| container.id.clone())
        .unwrap_or_default()
}

/// The networks Docker makes itself: traffic on them finds a container by
/// its IP or a link, never by an alias a clone could share.
const BUILT_IN_NETWORKS: [&str; 3] = ["bridge", "host", "none"];

/// Why a clone of `container` (a replica of `project`/`service`) would not
/// serve, if it would not. A clone serves when traffic reaches the service
/// the way Compose's own scaling relies on: by a network alias on a
/// user-defined network, which the clone joins with the same alias (DNS
/// answers with every container holding it). A fixed host port cannot be
/// bound twice: whatever reaches the service through it, traffic or
/// Prometheus' scrape, would never reach a clone.
pub fn clone_unfit(container: &ContainerInspectResponse, project: &str, service: &str) -> Option<String> {
    let unfit = |why: String| Some(format!("a clone of {project}/{service} would not serve: {why}"));
    let fixed: Vec<String> = container
        .host_config
        .as_ref()
        .and_then(|h| h.port_bindings.as_ref())
        .into_iter()
        .flatten()
        .flat_map(|(port, bindings)| {
            let port = port.strip_suffix("/tcp").unwrap_or(port).to_owned();
            bindings.iter().flatten().filter_map(move |binding| {
                let host_port = binding.host_port.as_deref().filter(|p| !p.is_empty() && *p != "0")?;
                let address = match binding.host_ip.as_deref().filter(|ip| !ip.is_empty()) {
                    Some(ip) => format!("{ip}:{host_port}"),
                    None => host_port.to_owned(),
                };
                Some(format!("{address}\u{2192}{port}"))
            })
        })
        .collect();
    if !fixed.is_empty() {
        let mut fixed = fixed;
        fixed.sort();
        let (ports, them) = if fixed.len() == 1 {
            ("a fixed host port", "it")
        } else {
            ("fixed host ports", "them")
        };
        return unfit(format!(
            "it publishes {}, {ports} a clone cannot share (traffic and scrapes through {them} would never reach \
             the clone); scale out services reached by a network alias",
            fixed.join(", ")
        ));
    }
    let name = display_name(container);
    let id = container.id.as_deref().unwrap_or_default();
    let networks = container
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.clone())
        .unwrap_or_default();
    let aliased = networks.iter().any(|(network, endpoint)| {
        !BUILT_IN_NETWORKS.contains(&network.as_str())
            && endpoint
                .aliases
                .iter()
                .flatten()
                .any(|alias| is_shared_alias(alias, &name, id))
    });
    if aliased {
        return None;
    }
    let mut names: Vec<&str> = networks.keys().map(String::as_str).collect();
    names.sort();
    let on = if names.is_empty() {
        "no network".to_owned()
    } else {
        format!("network(s) {}", names.join(", "))
    };
    unfit(format!(
        "it is on {on} with no network alias on a user-defined network, so nothing would send traffic to a clone; \
         scale out services reached by a network alias (as Compose's service name is)"
    ))
}

/// Whether `alias` is one a clone shares: not the container's own name, nor
/// its short id (which Docker before API 1.44 adds to every endpoint's aliases).
fn is_shared_alias(alias: &str, name: &str, id: &str) -> bool {
    !alias.is_empty() && alias != name && !(alias.len() >= 12 && id.starts_with(alias))
}

/// Removes from a container's config what it took from its image: ENV
/// entries, labels, and CMD or ENTRYPOINT equal to the image's.
fn strip_image_defaults(config: &mut ContainerConfig, image: &ImageConfig) {
    let image_env = image.env.clone().unwrap_or_default();
    if let Some(env) = config.env.as_mut() {
        env.retain(|entry| !image_env.contains(entry));
    }
    let image_labels = image.labels.clone().unwrap_or_default();
    if let Some(labels) = config.labels.as_mut() {
        labels.retain(|key, value| image_labels.get(key) != Some(value));
    }
    if config.cmd.is_some() && config.cmd == image.cmd {
        config.cmd = None;
    }
    if config.entrypoint.is_some() && config.entrypoint == image.entrypoint {
        config.entrypoint = None;
    }
}

/// A create request reproducing `from`, with `image` and `labels` replaced.
fn clone_body(
    from: &ContainerInspectResponse,
    image: Option<String>,
    labels: HashMap<String, String>,
) -> ContainerCreateBody {
    let config = from.config.clone().unwrap_or_default();
    let id = from.id.as_deref().unwrap_or_default();
    // Docker sets the hostname to the container id unless one was chosen.
    let own_hostname = config.hostname.clone().filter(|h| !id.starts_with(h.as_str()));
    let endpoints: HashMap<String, EndpointSettings> = from
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|(network, endpoint)| {
            let settings = EndpointSettings {
                // Not the short id the engine aliased the old container by.
                aliases: endpoint
                    .aliases
                    .map(|aliases| aliases.into_iter().filter(|a| !id.starts_with(a.as_str())).collect()),
                links: endpoint.links,
                ..EndpointSettings::default()
            };
            (network, settings)
        })
        .collect();
    ContainerCreateBody {
        hostname: own_hostname,
        domainname: config.domainname,
        user: config.user,
        exposed_ports: config.exposed_ports,
        tty: config.tty,
        open_stdin: config.open_stdin,
        env: config.env,
        cmd: config.cmd,
        healthcheck: config.healthcheck,
        image: image.or(config.image),
        volumes: config.volumes,
        working_dir: config.working_dir,
        entrypoint: config.entrypoint,
        labels: Some(labels),
        stop_signal: config.stop_signal,
        stop_timeout: config.stop_timeout,
        host_config: from.host_config.clone(),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(endpoints),
        }),
        ..ContainerCreateBody::default()
    }
}

/// How known good specs key a container.
pub fn instance(container: &str) -> String {
    format!("docker/container/{container}")
}

/// A container's spec: what drift is told by, in the terms a human reads
/// them, and the create request that reproduces the container, which is
/// what a repair sends. homeostat's own labels (its deploy history) are
/// not part of what is compared.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ContainerSpec {
    pub image: Option<String>,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub env: std::collections::BTreeSet<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Bytes; `None` or 0: no limit.
    pub memory: Option<i64>,
    pub memory_swap: Option<i64>,
    /// Billionths of a CPU.
    pub nano_cpus: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub pids_limit: Option<i64>,
    /// Networks, each with the aliases the container has there.
    pub networks: std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    /// Container port → host addresses it is published on.
    pub ports: std::collections::BTreeMap<String, Vec<String>>,
    pub restart_policy: Option<String>,
    pub body: ContainerCreateBody,
}

/// The spec of `container` as it is now.
pub fn spec_of(container: &ContainerInspectResponse) -> ContainerSpec {
    let config = container.config.clone().unwrap_or_default();
    let host = container.host_config.clone().unwrap_or_default();
    let id = container.id.clone().unwrap_or_default();
    let networks = container
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|(network, endpoint)| {
            // Older engines alias every container by its short id: not configuration.
            let aliases = endpoint.aliases.unwrap_or_default();
            (
                network,
                aliases.into_iter().filter(|a| !id.starts_with(a.as_str())).collect(),
            )
        })
        .collect();
    let ports = host
        .port_bindings
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(port, bindings)| {
            let hosts = bindings
                .unwrap_or_default()
                .into_iter()
                .map(|b| format!("{}:{}", b.host_ip.unwrap_or_default(), b.host_port.unwrap_or_default()))
                .collect();
            (port, hosts)
        })
        .collect();
    let labels = labels_of(container);
    ContainerSpec {
        image: config.image.clone(),
        command: config.cmd.clone(),
        entrypoint: config.entrypoint.clone(),
        env: config.env.clone().unwrap_or_default().into_iter().collect(),
        labels: labels
            .iter()
            .filter(|(key, _)| !key.starts_with("homeostat."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        memory: host.memory,
        memory_swap: host.memory_swap,
        nano_cpus: host.nano_cpus,
        cpu_quota: host.cpu_quota,
        pids_limit: host.pids_limit,
        networks,
        ports,
        restart_policy: host.restart_policy.as_ref().and_then(|p| p.name).map(|p| p.to_string()),
        body: clone_body(container, None, labels),
    }
}

/// How `now` differs from `good`, each difference in words. Environment
/// variables and labels are named, not shown: their values may be secret.
pub fn drift(good: &ContainerSpec, now: &ContainerSpec) -> Vec<String> {
    fn shown<T: std::fmt::Debug>(value: &Option<T>) -> String {
        value.as_ref().map_or("none".to_owned(), |v| format!("{v:?}"))
    }
    fn bytes(value: Option<i64>) -> String {
        match value.filter(|b| *b > 0) {
            None => "none".to_owned(),
            Some(b) if b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
            Some(b) => format!("{b} bytes"),
        }
    }
    fn networks(n: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>) -> String {
        if n.is_empty() {
            return "none".to_owned();
        }
        let each: Vec<String> = n
            .iter()
            .map(|(network, aliases)| match aliases.is_empty() {
                true => network.clone(),
                false => format!(
                    "{network} (aliases {})",
                    aliases.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            })
            .collect();
        each.join("; ")
    }
    let mut found = Vec::new();
    let mut differs = |what: &str, now: String, was: String| {
        if now != was {
            found.push(format!("{what} {now}, was {was}"));
        }
    };
    differs("image", shown(&now.image), shown(&good.image));
    differs("command", shown(&now.command), shown(&good.command));
    differs("entrypoint", shown(&now.entrypoint), shown(&good.entrypoint));
    differs("memory limit", bytes(now.memory), bytes(good.memory));
    differs("memory and swap limit", bytes(now.memory_swap), bytes(good.memory_swap));
    let cpus = |n: Option<i64>| {
        n.filter(|n| *n > 0)
            .map_or("none".to_owned(), |n| format!("{} CPUs", n as f64 / 1e9))
    };
    differs("CPU limit", cpus(now.nano_cpus), cpus(good.nano_cpus));
    differs("CPU quota", shown(&now.cpu_quota), shown(&good.cpu_quota));
    differs("process limit", shown(&now.pids_limit), shown(&good.pids_limit));
    differs("networks:", networks(&now.networks), networks(&good.networks));
    differs("ports", format!("{:?}", now.ports), format!("{:?}", good.ports));
    differs(
        "restart policy",
        shown(&now.restart_policy),
        shown(&good.restart_policy),
    );
    let name = |entry: &String| entry.split_once('=').map_or(entry.clone(), |(k, _)| k.to_owned());
    let env_names =
        |env: &std::collections::BTreeSet<String>| env.iter().map(name).collect::<std::collections::BTreeSet<_>>();
    let (now_names, good_names) = (env_names(&now.env), env_names(&good.env));
    for key in now_names.union(&good_names) {
        let value = |env: &std::collections::BTreeSet<String>| env.iter().find(|e| name(e) == *key).cloned();
        match (value(&now.env), value(&good.env)) {
            (Some(_), None) => found.push(format!("environment variable {key} added")),
            (None, Some(_)) => found.push(format!("environment variable {key} removed")),
            (Some(a), Some(b)) if a != b => found.push(format!("environment variable {key} changed")),
            _ => {}
        }
    }
    for key in now
        .labels
        .keys()
        .chain(good.labels.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        match (now.labels.get(key), good.labels.get(key)) {
            (Some(_), None) => found.push(format!("label {key} added")),
            (None, Some(_)) => found.push(format!("label {key} removed")),
            (Some(a), Some(b)) if a != b => found.push(format!("label {key} changed")),
            _ => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;

    /// An event `seconds` after 20:30:00 UTC on 2026-12-07.
    fn event(
        seconds: i64,
        typ: EventMessageTypeEnum,
        action: &str,
        id: &str,
        attributes: &[(&str, &str)],
    ) -> EventMessage {
        EventMessage {
            typ: Some(typ),
            action: Some(action.into()),
            actor: Some(EventActor {
                id: Some(id.into()),
                attributes: Some(attributes.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            }),
            time_nano: Some((1_796_675_400 + seconds) * 1_000_000_000),
            ..EventMessage::default()
        }
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_796_675_400 + seconds, 0).unwrap()
    }

    /// A Compose service redeployed by someone else: the old container
    /// removed and a new one created (known by its labels, though it was
    /// not there when the window opened), and the new one attached to its
    /// network as it starts — which is no change of its own. A container
    /// down when the window opens (its first event a start) attaches its
    /// network as it starts too.
    #[test]
    fn a_redeploy_is_named_and_the_network_attach_of_a_start_is_not() {
        use EventMessageTypeEnum::{CONTAINER, NETWORK};
        let labels = [(PROJECT_LABEL, "demo"), (SERVICE_LABEL, "web")];
        fn with<'a>(labels: &[(&'a str, &'a str)], name: &'a str) -> Vec<(&'a str, &'a str)> {
            let mut attributes = labels.to_vec();
            attributes.push(("name", name));
            attributes
        }
        let target = Target {
            compose_project: Some("demo".into()),
            compose_service: Some("web".into()),
            ..Target::default()
        };
        let known = HashMap::from([(
            "new".to_owned(),
            Known {
                name: "demo-web-1".into(),
                running: true,
            },
        )]);
        let events = [
            // Before the window: not looked at.
            event(-5, CONTAINER, "update", "old", &with(&labels, "demo-web-1")),
            event(1, CONTAINER, "destroy", "old", &with(&labels, "demo-web-1")),
            event(2, CONTAINER, "create", "new", &with(&labels, "demo-web-1")),
            event(3, NETWORK, "connect", "net", &[("name", "demo"), ("container", "new")]),
            event(4, CONTAINER, "start", "new", &with(&labels, "demo-web-1")),
            // Another service's container on the same network.
            event(
                5,
                NETWORK,
                "disconnect",
                "net",
                &[("name", "demo"), ("container", "other")],
            ),
        ];
        assert_eq!(
            outside_changes(&events, &target, &known, at(0), at(60)),
            [
                "container demo-web-1 removed at 20:30:01 UTC",
                "container demo-web-1 created at 20:30:02 UTC",
            ]
        );
        // Connected by hand while it runs: named.
        let by_hand = [event(
            10,
            NETWORK,
            "connect",
            "net",
            &[("name", "demo"), ("container", "new")],
        )];
        assert_eq!(
            outside_changes(&by_hand, &target, &known, at(0), at(60)),
            ["network demo: container demo-web-1 connected at 20:30:10 UTC"]
        );
        // The same while it is stopped (it starts later): its start's doing.
        let stopped = HashMap::from([(
            "new".to_owned(),
            Known {
                name: "demo-web-1".into(),
                running: false,
            },
        )]);
        assert_eq!(
            outside_changes(&by_hand, &target, &stopped, at(0), at(60)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn drift_is_told_in_words_and_hides_values() {
        let body = ContainerCreateBody::default();
        let good = ContainerSpec {
            image: Some("demo-b:1".into()),
            command: None,
            entrypoint: None,
            env: ["TOKEN=secret".to_owned(), "MODE=a".to_owned()].into_iter().collect(),
            labels: Default::default(),
            memory: Some(256 << 20),
            memory_swap: None,
            nano_cpus: None,
            cpu_quota: None,
            pids_limit: None,
            networks: [("demo".to_owned(), ["service_b".to_owned()].into_iter().collect())]
                .into_iter()
                .collect(),
            ports: Default::default(),
            restart_policy: Some("unless-stopped".into()),
            body,
        };
        assert!(drift(&good, &good).is_empty());
        let now = ContainerSpec {
            memory: Some(8 << 20),
            networks: Default::default(),
            env: ["TOKEN=other".to_owned(), "MODE=a".to_owned()].into_iter().collect(),
            ..good.clone()
        };
        let found = drift(&good, &now);
        assert_eq!(
            found,
            vec![
                "memory limit 8 MiB, was 256 MiB".to_owned(),
                "networks: none, was demo (aliases service_b)".to_owned(),
                "environment variable TOKEN changed".to_owned(),
            ]
        );
        assert!(!found.iter().any(|f| f.contains("secret") || f.contains("other")));
    }

    #[test]
    fn the_last_known_good_image_ran_long_enough_and_is_not_the_running_one() {
        let at = |m: i64| chrono::DateTime::<chrono::Utc>::UNIX_EPOCH + chrono::Duration::minutes(m);
        let ran = |image: &str, from: i64, until: i64| Ran {
            image: image.into(),
            from: at(from),
            until: at(until),
        };
        // Newest first: v3 ran a minute, v2 an hour, v1 a day.
        let history = [ran("v3", 120, 121), ran("v2", 60, 120), ran("v1", 0, 60)];
        let ten_minutes = chrono::Duration::minutes(10);
        assert_eq!(
            last_known_good(&history, "v4", ten_minutes).map(|r| r.image.as_str()),
            Some("v2")
        );
        // Never the image that runs.
        assert_eq!(
            last_known_good(&history, "v2", ten_minutes).map(|r| r.image.as_str()),
            Some("v1")
        );
        assert_eq!(last_known_good(&history, "v4", chrono::Duration::hours(2)), None);
        assert_eq!(last_known_good(&[], "v4", ten_minutes), None);
    }

    /// A container named `web-1` on `networks` (name, aliases), publishing `ports`.
    fn replica(networks: &[(&str, &[&str])], ports: &[(&str, &str, &str)]) -> ContainerInspectResponse {
        use bollard::models::{HostConfig, NetworkSettings, PortBinding};
        let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for (ip, host, port) in ports {
            bindings
                .entry(port.to_string())
                .or_default()
                .get_or_insert_default()
                .push(PortBinding {
                    host_ip: Some(ip.to_string()),
                    host_port: Some(host.to_string()),
                });
        }
        let networks = networks
            .iter()
            .map(|(name, aliases)| {
                let aliases = aliases.iter().map(|a| a.to_string()).collect();
                let endpoint = EndpointSettings {
                    aliases: Some(aliases),
                    ..EndpointSettings::default()
                };
                (name.to_string(), endpoint)
            })
            .collect();
        ContainerInspectResponse {
            id: Some("0123456789abcdef0123".into()),
            name: Some("/web-1".into()),
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                ..HostConfig::default()
            }),
            network_settings: Some(NetworkSettings {
                networks: Some(networks),
                ..NetworkSettings::default()
            }),
            ..ContainerInspectResponse::default()
        }
    }

    #[test]
    fn a_clone_serves_only_behind_a_network_alias_and_no_fixed_host_port() {
        let fit = replica(
            &[("demo", &["web", "web-1", "0123456789ab"])],
            &[("127.0.0.1", "", "9095/tcp")],
        );
        assert_eq!(clone_unfit(&fit, "demo", "web"), None);

        let fixed = replica(&[("demo", &["web"])], &[("127.0.0.1", "41234", "8080/tcp")]);
        assert_eq!(
            clone_unfit(&fixed, "demo", "web").as_deref(),
            Some(
                "a clone of demo/web would not serve: it publishes 127.0.0.1:41234\u{2192}8080, a fixed host port a \
                 clone cannot share (traffic and scrapes through it would never reach the clone); scale out \
                 services reached by a network alias"
            )
        );
        // Only its own name and id: nothing a clone would share.
        let unaliased = replica(&[("demo", &["web-1", "0123456789ab"])], &[]);
        let why = clone_unfit(&unaliased, "demo", "web").unwrap();
        assert!(why.contains("network(s) demo with no network alias"), "{why}");
        // The default bridge has no aliases that route.
        let bridge = replica(&[("bridge", &["web"])], &[]);
        let why = clone_unfit(&bridge, "demo", "web").unwrap();
        assert!(why.contains("network(s) bridge"), "{why}");
    }

    #[test]
    fn what_came_from_the_old_image_is_left_to_the_new_one() {
        let strings = |items: &[&str]| Some(items.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let mut config = ContainerConfig {
            env: strings(&[
                "BAD_VERSION=true",
                "SERVICE_VERSION=2.0.0",
                "SERVICE_B_URL=http://b:8080",
            ]),
            cmd: strings(&["serve"]),
            entrypoint: strings(&["/custom"]),
            labels: Some(HashMap::from([
                ("org.opencontainers.image.version".to_owned(), "2.0.0".to_owned()),
                (PROJECT_LABEL.to_owned(), "demo".to_owned()),
            ])),
            ..ContainerConfig::default()
        };
        let image = ImageConfig {
            env: strings(&["BAD_VERSION=true", "SERVICE_VERSION=2.0.0"]),
            cmd: strings(&["serve"]),
            entrypoint: strings(&["/service_b"]),
            labels: Some(HashMap::from([(
                "org.opencontainers.image.version".to_owned(),
                "2.0.0".to_owned(),
            )])),
            ..ImageConfig::default()
        };
        strip_image_defaults(&mut config, &image);
        // What the user set stays: their env, their entrypoint, the Compose labels.
        assert_eq!(config.env, strings(&["SERVICE_B_URL=http://b:8080"]));
        assert_eq!(config.cmd, None);
        assert_eq!(config.entrypoint, strings(&["/custom"]));
        assert_eq!(
            config.labels,
            Some(HashMap::from([(PROJECT_LABEL.to_owned(), "demo".to_owned())]))
        );
    }
}
