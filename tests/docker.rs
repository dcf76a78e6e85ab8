//! The Docker executor against the real Docker Engine, on containers of a
//! `FROM scratch` image holding the (static) homeostat binary, which serves
//! `/healthz`. Containers are labelled with the test run and removed after.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{eventually, BIN};
use homeostat::action::{Operation, Target};
use homeostat::executor::docker::{
    DockerConfig, DockerExecutor, NUMBER_LABEL, PREVIOUS_IMAGE_LABEL, PROJECT_LABEL, SERVICE_LABEL,
};
use homeostat::executor::{ExecError, Executor};
use tokio::sync::OnceCell;

const IMAGE: &str = "homeostat-test:current";
const PREVIOUS: &str = "homeostat-test:previous";

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI is needed for the tests");
    assert!(
        output.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Builds the test image once per test binary; nothing is pulled.
async fn image() {
    static BUILT: OnceCell<()> = OnceCell::const_new();
    BUILT
        .get_or_init(|| async {
            let context = tempfile::tempdir().unwrap();
            std::fs::copy(BIN, context.path().join("homeostat")).unwrap();
            std::fs::write(
                context.path().join("Dockerfile"),
                "FROM scratch\nCOPY homeostat /homeostat\nENTRYPOINT [\"/homeostat\", \"serve\", \"--config\", \"/dev/null\", \
                 \"--listen\", \"0.0.0.0:9095\", \"--allow-unauthenticated\"]\n",
            )
            .unwrap();
            docker(&["build", "-q", "-t", IMAGE, context.path().to_str().unwrap()]);
            docker(&["tag", IMAGE, PREVIOUS]);
        })
        .await;
}

/// A Compose-style service of this test's own; its containers go with it.
struct Service {
    project: String,
}

impl Service {
    fn new(test: &str) -> Service {
        let project = format!("hs{}{}", test, std::process::id());
        Service { project }
    }

    /// Starts replica `number` of service `web`, with extra `docker run` arguments.
    fn run(&self, number: u32, extra: &[&str]) -> String {
        let name = format!("{}-web-{number}", self.project);
        let mut args = vec![
            "run".to_owned(),
            "-d".into(),
            "--name".into(),
            name.clone(),
            "-p".into(),
            "127.0.0.1::9095".into(),
            "--label".into(),
            format!("{PROJECT_LABEL}={}", self.project),
            "--label".into(),
            format!("{SERVICE_LABEL}=web"),
            "--label".into(),
            format!("{NUMBER_LABEL}={number}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(IMAGE.into());
        docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
        name
    }

    fn containers(&self) -> Vec<String> {
        let filter = format!("label={PROJECT_LABEL}={}", self.project);
        let names = docker(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"]);
        let mut names: Vec<String> = names.lines().map(str::to_owned).filter(|n| !n.is_empty()).collect();
        names.sort();
        names
    }

    fn target(&self) -> Target {
        Target {
            compose_project: Some(self.project.clone()),
            compose_service: Some("web".into()),
            ..Target::default()
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        for name in self.containers() {
            let _ = Command::new("docker").args(["rm", "-f", &name]).output();
        }
    }
}

/// Whether the container answers `/healthz` on its published port within a second.
async fn serves(container: &str) -> bool {
    let Ok(output) = Command::new("docker").args(["port", container, "9095/tcp"]).output() else {
        return false;
    };
    let Some(address) = String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .map(str::to_owned)
    else {
        return false;
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let response = client.get(format!("http://{address}/healthz")).send().await;
    response.is_ok_and(|r| r.status().is_success())
}

async fn until_serving(container: &str) {
    eventually(
        &format!("{container} to serve /healthz"),
        Duration::from_secs(30),
        || async { serves(container).await.then_some(()) },
    )
    .await;
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
    assert_eq!(executor.ready_replicas(&service.target()).await.unwrap(), Some(1));

    docker(&["kill", &name]);
    assert_eq!(executor.ready_replicas(&service.target()).await.unwrap(), Some(0));
    let done = executor.execute(&restart(&name)).await.unwrap();
    assert_eq!(done, format!("restarted container {name}"));
    until_serving(&name).await;
    assert_eq!(executor.ready_replicas(&service.target()).await.unwrap(), Some(1));
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
    assert_eq!(executor.ready_replicas(&service.target()).await.unwrap(), Some(0));

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

#[tokio::test]
async fn a_compose_service_scales_out_and_in_within_bounds() {
    image().await;
    let service = Service::new("scale");
    let first = service.run(1, &["--env", "GREETING=hello"]);
    until_serving(&first).await;
    let executor = executor(1, 2).await;
    let scale = |delta| Operation::ScaleComposeService {
        project: service.project.clone(),
        service: "web".into(),
        delta,
    };

    let done = executor.execute(&scale(1)).await.unwrap();
    let second = format!("{}-web-2", service.project);
    assert!(done.contains(&format!("started {second}")), "{done}");
    assert_eq!(service.containers(), vec![first.clone(), second.clone()]);
    until_serving(&second).await;
    let env = docker(&["inspect", "--format", "{{json .Config.Env}}", &second]);
    assert!(
        env.contains("GREETING=hello"),
        "the clone lost its configuration: {env}"
    );
    assert_eq!(executor.ready_replicas(&service.target()).await.unwrap(), Some(2));

    let refused = executor.execute(&scale(1)).await.unwrap_err();
    assert!(matches!(refused, ExecError::Refused { .. }), "{refused}");
    assert!(refused.to_string().contains("max_replicas: 2"), "{refused}");

    let done = executor.execute(&scale(-1)).await.unwrap();
    assert!(done.contains(&format!("removed {second}")), "{done}");
    assert_eq!(service.containers(), vec![first.clone()]);
    let refused = executor.execute(&scale(-1)).await.unwrap_err();
    assert!(refused.to_string().contains("min_replicas: 1"), "{refused}");
    assert_eq!(service.containers(), vec![first]);
}

#[tokio::test]
async fn recreate_keeps_the_configuration_and_rollback_uses_the_previous_image() {
    image().await;
    let service = Service::new("roll");
    let label = format!("{PREVIOUS_IMAGE_LABEL}={PREVIOUS}");
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
    until_serving(&name).await;
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
