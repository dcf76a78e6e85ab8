//! The Docker executor against the real Docker Engine, on containers of a
//! `FROM scratch` image holding the (static) homeostat binary, which serves
//! `/healthz`. Containers are labelled with the test run and removed after.

mod common;

use std::time::Duration;

use common::docker::{answers_at, docker, image, serves, until_serving, Service, IMAGE, PREVIOUS};
use common::eventually;
use homeostat_adapters::executor::docker::{
    DockerConfig, DockerExecutor, ADDED_AT_LABEL, HISTORY_LABEL, PREVIOUS_IMAGE_LABEL,
};
use homeostat_adapters::executor::{ExecError, Executor};
use homeostat_core::action::{Action, Operation, Target};

/// Ready and total replicas of the service, as the executor reports them.
async fn ready(executor: &DockerExecutor, service: &Service) -> (u32, u32) {
    let r = executor.readiness(&service.target()).await.unwrap().unwrap();
    (r.ready, r.total)
}

async fn executor(min_replicas: u32, max_replicas: u32) -> DockerExecutor {
    DockerExecutor::connect(DockerConfig {
        min_replicas,
        max_replicas,
        stop_timeout_seconds: 1,
        ..DockerConfig::default()
    })
    .await
    .unwrap()
}

fn restart(container: &str) -> Operation {
    Operation::RestartContainer {
        container: Some(container.into()),
        project: None,
        service: None,
    }
}

#[tokio::test]
async fn a_killed_container_serves_again_after_a_restart() {
    image().await;
    let service = Service::new("kill");
    let name = service.run(1, &[]);
    until_serving(&name).await;
    let executor = executor(1, 5).await;
    assert_eq!(ready(&executor, &service).await, (1, 1));

    docker(&["kill", &name]);
    assert_eq!(ready(&executor, &service).await, (0, 1));
    let done = executor.execute(&restart(&name)).await.unwrap();
    assert_eq!(done, format!("restarted container {name}"));
    until_serving(&name).await;
    assert_eq!(ready(&executor, &service).await, (1, 1));
}

#[tokio::test]
async fn a_frozen_container_serves_again_after_a_restart() {
    image().await;
    let service = Service::new("pause");
    let name = service.run(1, &[]);
    until_serving(&name).await;
    docker(&["pause", &name]);
    assert!(!serves(&name).await, "a paused container answered");
    let executor = executor(1, 5).await;
    assert_eq!(ready(&executor, &service).await, (0, 1));

    // Named by its service only: the executor picks the replica that is not ready.
    let operation = Operation::RestartContainer {
        container: None,
        project: Some(service.project.clone()),
        service: Some("web".into()),
    };
    let done = executor.execute(&operation).await.unwrap();
    assert_eq!(done, format!("unpaused and restarted container {name}"));
    until_serving(&name).await;
}

/// Reached by a network alias and publishing no fixed host port, a service
/// scales out: the clone joins the network under the same alias (so
/// traffic to the alias reaches it, as with Compose's own scaling), serves,
/// and is labelled as homeostat's; it goes again, within the bounds.
#[tokio::test]
async fn a_service_reached_by_a_network_alias_scales_out_and_in_within_bounds() {
    image().await;
    let service = Service::new("scale");
    let mut extra = service.aliased();
    extra.extend(["--env".into(), "GREETING=hello".into()]);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let first = service.run(1, &extra);
    until_serving(&first).await;
    let executor = executor(1, 2).await;
    let scale = |delta| Operation::ScaleComposeService {
        project: service.project.clone(),
        service: "web".into(),
        delta,
    };
    assert_eq!(executor.unfit(&service.target(), Action::ScaleOut).await.unwrap(), None);

    let done = executor.execute(&scale(1)).await.unwrap();
    let second = format!("{}-web-2", service.project);
    assert!(done.contains(&format!("started {second}")), "{done}");
    assert_eq!(service.containers(), vec![first.clone(), second.clone()]);
    let network = service.network();
    let aliases = docker(&[
        "inspect",
        "--format",
        &format!("{{{{json (index .NetworkSettings.Networks \"{network}\").Aliases}}}}"),
        &second,
    ]);
    let aliases: Vec<String> = serde_json::from_str(&aliases).unwrap();
    assert!(
        aliases.contains(&"web".to_owned()),
        "the clone lacks the alias: {aliases:?}"
    );
    assert!(
        !aliases.contains(&first),
        "the clone took the original's name: {aliases:?}"
    );
    let address = service.address(&second);
    eventually(
        "the clone to answer on its address on the network",
        Duration::from_secs(30),
        || async { answers_at(&address).await.then_some(()) },
    )
    .await;
    let added_at = docker(&[
        "inspect",
        "--format",
        &format!("{{{{index .Config.Labels \"{ADDED_AT_LABEL}\"}}}}"),
        &second,
    ]);
    assert!(chrono::DateTime::parse_from_rfc3339(&added_at).is_ok(), "{added_at:?}");
    let env = docker(&["inspect", "--format", "{{json .Config.Env}}", &second]);
    assert!(
        env.contains("GREETING=hello"),
        "the clone lost its configuration: {env}"
    );
    assert_eq!(ready(&executor, &service).await, (2, 2));

    let refused = executor.execute(&scale(1)).await.unwrap_err();
    assert!(matches!(refused, ExecError::Refused { .. }), "{refused}");
    assert!(refused.to_string().contains("max_replicas: 2"), "{refused}");

    // What homeostat added goes, and only that.
    let remove_added = Operation::RemoveAddedReplica {
        project: service.project.clone(),
        service: "web".into(),
    };
    let done = executor.execute(&remove_added).await.unwrap();
    assert!(
        done.contains(&format!("removed {second}, which homeostat added")),
        "{done}"
    );
    assert_eq!(service.containers(), vec![first.clone()]);
    let err = executor.execute(&remove_added).await.unwrap_err();
    assert!(matches!(err, ExecError::NotFound(_)), "{err}");
    assert!(err.to_string().contains("no replica homeostat added"), "{err}");
    let refused = executor.execute(&scale(-1)).await.unwrap_err();
    assert!(refused.to_string().contains("min_replicas: 1"), "{refused}");
    assert_eq!(service.containers(), vec![first]);
}

/// A clone of a service with a fixed host port (what traffic or Prometheus
/// reaches it through), or reached by no network alias, would serve
/// nothing: scale-out is refused with the reason, and nothing is created.
#[tokio::test]
async fn a_service_a_clone_could_not_serve_is_not_scaled_out() {
    image().await;
    let service = Service::new("fixed");
    let port = common::free_port().to_string();
    let publish = format!("127.0.0.1:{port}:9095");
    let mut extra = service.aliased();
    extra.extend(["-p".into(), publish]);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let first = service.run(1, &extra);
    let executor = executor(1, 3).await;
    let why = executor
        .unfit(&service.target(), Action::ScaleOut)
        .await
        .unwrap()
        .expect("a service with a fixed host port is unfit for scale-out");
    assert_eq!(
        why,
        format!(
            "a clone of {}/web would not serve: it publishes 127.0.0.1:{port}\u{2192}9095, a fixed host port a \
             clone cannot share (traffic and scrapes through it would never reach the clone); scale out services \
             reached by a network alias",
            service.project
        )
    );
    // Other actions are the executor's to judge as ever.
    assert_eq!(executor.unfit(&service.target(), Action::Restart).await.unwrap(), None);
    let scale_out = Operation::ScaleComposeService {
        project: service.project.clone(),
        service: "web".into(),
        delta: 1,
    };
    let refused = executor.execute(&scale_out).await.unwrap_err();
    assert!(matches!(refused, ExecError::Refused { .. }), "{refused}");
    assert!(refused.to_string().contains(&why), "{refused}");
    assert_eq!(service.containers(), vec![first]);

    // On the default bridge, with no alias anything routes by.
    let bridged = Service::new("bridged");
    let only = bridged.run(1, &[]);
    let why = executor
        .unfit(&bridged.target(), Action::ScaleOut)
        .await
        .unwrap()
        .expect("a service reached by no alias is unfit for scale-out");
    assert!(why.contains("network(s) bridge with no network alias"), "{why}");
    assert!(executor
        .execute(&Operation::ScaleComposeService {
            project: bridged.project.clone(),
            service: "web".into(),
            delta: 1,
        })
        .await
        .is_err());
    assert_eq!(bridged.containers(), vec![only]);
}

#[tokio::test]
async fn recreate_keeps_the_configuration_and_rollback_goes_to_the_last_known_good_image() {
    image().await;
    let service = Service::new("roll");
    // Before the running image: one that ran a second (never known good,
    // and never pulled: a rollback to it would fail), and before it one
    // that ran an hour.
    let now = chrono::Utc::now();
    let ago = |minutes: i64| (now - chrono::Duration::minutes(minutes)).to_rfc3339();
    let history = serde_json::json!([
        {"image": "homeostat-test:ran-a-second", "from": ago(30), "until": (now - chrono::Duration::minutes(30) + chrono::Duration::seconds(1)).to_rfc3339()},
        {"image": PREVIOUS, "from": ago(90), "until": ago(30)},
    ]);
    let label = format!("{HISTORY_LABEL}={history}");
    let name = service.run(1, &["--env", "GREETING=hello", "--label", &label]);
    until_serving(&name).await;
    let executor = executor(1, 5).await;
    let id_before = docker(&["inspect", "--format", "{{.Id}}", &name]);

    let recreate = Operation::RecreateContainer {
        container: Some(name.clone()),
        project: None,
        service: None,
    };
    assert_eq!(
        executor.execute(&recreate).await.unwrap(),
        format!("recreated container {name}")
    );
    let id_after = docker(&["inspect", "--format", "{{.Id}}", &name]);
    assert_ne!(id_before, id_after, "the container was not replaced");
    assert!(docker(&["inspect", "--format", "{{json .Config.Env}}", &name]).contains("GREETING=hello"));
    assert_eq!(service.containers(), vec![name.clone()]);
    until_serving(&name).await;

    let rollback = Operation::RollbackComposeService {
        project: service.project.clone(),
        service: "web".into(),
    };
    let done = executor.execute(&rollback).await.unwrap();
    assert_eq!(done, format!("recreated container {name} from image {PREVIOUS}"));
    assert_eq!(docker(&["inspect", "--format", "{{.Config.Image}}", &name]), PREVIOUS);
    let recorded = docker(&[
        "inspect",
        "--format",
        &format!("{{{{index .Config.Labels \"{PREVIOUS_IMAGE_LABEL}\"}}}}"),
        &name,
    ]);
    assert_eq!(recorded, IMAGE, "the rollback does not record what it replaced");
    let recorded = docker(&[
        "inspect",
        "--format",
        &format!("{{{{index .Config.Labels \"{HISTORY_LABEL}\"}}}}"),
        &name,
    ]);
    let ran: Vec<serde_json::Value> = serde_json::from_str(&recorded).unwrap();
    assert_eq!(ran.len(), 3, "{recorded}");
    assert_eq!(ran[0]["image"], IMAGE, "{recorded}");
    until_serving(&name).await;

    // Rolled back at once: nothing ran long enough since to be known good
    // but what it just left, and a rollback never returns to the image
    // that runs.
    let err = executor.execute(&rollback).await.unwrap_err();
    assert!(err.to_string().contains("nothing known good"), "{err}");
}

#[tokio::test]
async fn a_container_that_is_gone_and_an_engine_that_is_not_there_are_clear_errors() {
    let executor = executor(1, 5).await;
    let err = executor
        .execute(&restart("homeostat-no-such-container"))
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::NotFound(_)), "{err}");
    assert!(err.to_string().contains("homeostat-no-such-container"), "{err}");

    let nowhere = DockerConfig {
        host: Some("unix:///nonexistent/docker.sock".into()),
        ..DockerConfig::default()
    };
    let err = DockerExecutor::connect(nowhere).await.err().unwrap();
    assert!(matches!(err, ExecError::Unreachable { .. }), "{err}");
}

/// A network of the test's own, removed when the test ends (after the
/// containers on it: declare it before their [`Service`]).
struct Network(String);

impl Network {
    fn create(name: String) -> Network {
        docker(&["network", "create", &name]);
        Network(name)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["network", "rm", &self.0])
            .output();
    }
}

/// What verification asks after an action: outside changes to the target
/// in a window. A network detached and attached again by hand and a limit
/// changed with `docker update` are named, in order, whether the target is
/// the container or its Compose service; a restart (its own network detach
/// and attach included), a change before the window, and a change to
/// another container on the same network are not.
#[tokio::test]
async fn outside_changes_to_a_container_are_named_and_its_restarts_are_not() {
    image().await;
    let network = Network::create(format!("hschanges{}", std::process::id()));
    let service = Service::new("changes");
    let bystanders = Service::new("changesby");
    let name = service.run(1, &["--network", &network.0]);
    let bystander = bystanders.run(1, &["--network", &network.0]);
    until_serving(&name).await;
    let executor = executor(1, 5).await;
    let by_name = Target {
        container: Some(name.clone()),
        ..Target::default()
    };

    // Before the window: not named.
    docker(&["update", "--memory", "256m", "--memory-swap", "256m", &name]);
    let since = chrono::Utc::now();
    docker(&["restart", "-t", "1", &name]);
    docker(&["network", "disconnect", &network.0, &bystander]);
    let after_restart = executor.changes(&by_name, since, chrono::Utc::now()).await.unwrap();
    assert_eq!(after_restart, Vec::<String>::new(), "a restart is no outside change");

    docker(&["network", "disconnect", &network.0, &name]);
    docker(&["network", "connect", &network.0, &name]);
    docker(&["update", "--memory", "128m", "--memory-swap", "128m", &name]);
    let until = chrono::Utc::now();
    // Another restart after the window: not named either.
    docker(&["restart", "-t", "1", &name]);
    for target in [by_name, service.target()] {
        let changes = executor.changes(&target, since, until).await.unwrap();
        let expected = [
            format!("network {}: container {name} disconnected at ", network.0),
            format!("network {}: container {name} connected at ", network.0),
            format!("container {name}: limits or restart policy changed (docker update) at "),
        ];
        assert_eq!(changes.len(), expected.len(), "{target:?}: {changes:#?}");
        for (change, expected) in changes.iter().zip(&expected) {
            assert!(change.starts_with(expected.as_str()), "{change:?} is not {expected:?}…");
            assert!(change.ends_with(" UTC"), "{change:?} says no time");
        }
    }
}

/// The container's condition, as the pipeline reads it right before acting.
async fn condition(executor: &DockerExecutor, container: &str) -> homeostat_core::condition::Condition {
    let target = Target {
        container: Some(container.into()),
        ..Target::default()
    };
    executor
        .condition(&target)
        .await
        .unwrap()
        .expect("a container has a condition")
}

/// Drift from the spec a container ran healthy with is named in words, and
/// a repair recreates the container from that spec: its memory limit, and
/// its network with its alias, come back.
#[tokio::test]
async fn a_repair_restores_the_known_good_spec_and_the_drift_is_named() {
    image().await;
    let service = Service::new("repair");
    let mut extra = service.aliased();
    extra.extend(["--memory", "256m", "--memory-swap", "256m"].map(String::from));
    let name = service.run(1, &extra.iter().map(String::as_str).collect::<Vec<_>>());
    until_serving(&name).await;
    let executor = executor(1, 5).await;
    let good = condition(&executor, &name).await;
    assert_eq!(good.instance, format!("docker/container/{name}"));
    assert_eq!(good.stopped_deliberately, None);
    assert_eq!(good.runtime, None, "no restart policy: the runtime restarts nothing");
    let good = good.spec.unwrap();
    assert!(executor.drift(&good, &good).is_empty());

    docker(&["update", "--memory", "128m", "--memory-swap", "128m", &name]);
    docker(&["network", "disconnect", &service.network(), &name]);
    let drifted = condition(&executor, &name).await.spec.unwrap();
    let drift = executor.drift(&good, &drifted);
    assert_eq!(
        drift[..2],
        [
            "memory limit 128 MiB, was 256 MiB",
            "memory and swap limit 128 MiB, was 256 MiB"
        ]
    );
    let networks = format!("networks: none, was {} (aliases ", service.network());
    assert!(drift[2].starts_with(&networks) && drift[2].contains("web"), "{drift:?}");
    assert_eq!(drift.len(), 3, "{drift:?}");
    assert!(
        !serves(&name).await,
        "a detached container answered on its published port"
    );

    let repair = Operation::RepairContainer {
        container: name.clone(),
        spec: good.clone(),
    };
    let done = executor.execute(&repair).await.unwrap();
    assert_eq!(
        done,
        format!("repaired container {name}: recreated from its last known good spec")
    );
    until_serving(&name).await;
    let repaired = condition(&executor, &name).await.spec.unwrap();
    assert_eq!(executor.drift(&good, &repaired), Vec::<String>::new());
    assert_eq!(
        docker(&["inspect", "--format", "{{.HostConfig.Memory}}", &name]),
        "268435456"
    );
    assert!(!service.address(&name).is_empty(), "not on its network again");
}

/// A stop through the API that exits 0 is deliberate; a SIGKILL is not. A
/// process killed from the host is restarted by the runtime's restart
/// policy, which the condition tells, so homeostat does not restart it too.
#[tokio::test]
async fn a_stop_through_the_api_is_deliberate_and_a_restart_by_the_policy_is_the_runtimes() {
    image().await;
    let service = Service::new("intent");
    let name = service.run(1, &["--restart", "unless-stopped"]);
    until_serving(&name).await;
    let executor = executor(1, 5).await;
    let before = chrono::Utc::now();
    let fresh = condition(&executor, &name).await;
    let runtime = fresh.runtime.clone().unwrap();
    assert_eq!(
        (runtime.policy.as_str(), runtime.restarts, runtime.restarting),
        ("unless-stopped", 0, false)
    );
    assert_eq!(fresh.runtime_restarting(before, None), None);

    // A crash the runtime heals: the process killed from the host, not through the API.
    let pid = docker(&["inspect", "--format", "{{.State.Pid}}", &name]);
    let killed = std::process::Command::new("kill").args(["-9", &pid]).status().unwrap();
    assert!(killed.success());
    let restarted = eventually("the restart policy to restart it", Duration::from_secs(30), || async {
        let c = condition(&executor, &name).await;
        c.runtime
            .as_ref()
            .is_some_and(|r| r.restarts >= 1 && !r.restarting)
            .then_some(c)
    })
    .await;
    assert_eq!(restarted.stopped_deliberately, None);
    let why = restarted.runtime_restarting(before, None).unwrap();
    assert!(
        why.contains("the runtime restarted it") && why.contains("unless-stopped"),
        "{why}"
    );
    until_serving(&name).await;

    docker(&["stop", "-t", "10", &name]);
    assert_eq!(docker(&["inspect", "--format", "{{.State.ExitCode}}", &name]), "0");
    let stopped = condition(&executor, &name).await;
    let how = stopped.stopped_deliberately.unwrap();
    assert!(how.contains("stopped through the Docker API and exited 0"), "{how}");

    docker(&["start", &name]);
    until_serving(&name).await;
    docker(&["kill", &name]);
    assert_eq!(
        condition(&executor, &name).await.stopped_deliberately,
        None,
        "exit 137 is no deliberate stop"
    );
}
