//! Docker helpers for tests: the `FROM scratch` test image (the static
//! homeostat binary, which serves `/healthz`) and Compose-style services
//! whose containers are removed when the test ends.

use std::process::Command;
use std::time::Duration;

use homeostat_adapters::executor::docker::{NUMBER_LABEL, PROJECT_LABEL, SERVICE_LABEL};
use homeostat_core::action::Target;
use tokio::sync::OnceCell;

use super::{eventually, BIN};

pub const IMAGE: &str = "homeostat-test:current";
pub const PREVIOUS: &str = "homeostat-test:previous";

pub fn docker(args: &[&str]) -> String {
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
pub async fn image() {
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

/// A Compose-style service of this test's own; its containers (and its
/// network, if it made one) go with it.
pub struct Service {
    pub project: String,
    network: std::sync::OnceLock<String>,
}

impl Service {
    pub fn new(test: &str) -> Service {
        let project = format!("hs{}{}", test, std::process::id());
        Service {
            project,
            network: std::sync::OnceLock::new(),
        }
    }

    /// A user-defined network of the service's own, named after its
    /// project, as Compose makes one (created on first use).
    pub fn network(&self) -> String {
        self.network
            .get_or_init(|| {
                docker(&["network", "create", &self.project]);
                self.project.clone()
            })
            .clone()
    }

    /// The `docker run` arguments that put a replica on [`Service::network`]
    /// reached by the alias `web`, as Compose reaches a service by its name.
    pub fn aliased(&self) -> Vec<String> {
        vec![
            "--network".into(),
            self.network(),
            "--network-alias".into(),
            "web".into(),
        ]
    }

    /// The container's IP address on [`Service::network`].
    pub fn address(&self, container: &str) -> String {
        let format = format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            self.network()
        );
        docker(&["inspect", "--format", &format, container])
    }

    /// Starts replica `number` of service `web`, with extra `docker run` arguments.
    pub fn run(&self, number: u32, extra: &[&str]) -> String {
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

    pub fn containers(&self) -> Vec<String> {
        let filter = format!("label={PROJECT_LABEL}={}", self.project);
        let names = docker(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"]);
        let mut names: Vec<String> = names.lines().map(str::to_owned).filter(|n| !n.is_empty()).collect();
        names.sort();
        names
    }

    pub fn target(&self) -> Target {
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
        if let Some(network) = self.network.get() {
            let _ = Command::new("docker").args(["network", "rm", network]).output();
        }
    }
}

/// Whether the container answers `/healthz` on its published port within a second.
pub async fn serves(container: &str) -> bool {
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

/// Whether `/healthz` answers at `address` (a container's IP) within a second.
pub async fn answers_at(address: &str) -> bool {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let response = client.get(format!("http://{address}:9095/healthz")).send().await;
    response.is_ok_and(|r| r.status().is_success())
}

pub async fn until_serving(container: &str) {
    eventually(
        &format!("{container} to serve /healthz"),
        Duration::from_secs(30),
        || async { serves(container).await.then_some(()) },
    )
    .await;
}

/// A Docker API on a loopback TCP port that passes everything through to the
/// local engine's socket, except that a connection stops answering for good
/// once a request on it contains `stall` (say, one container's restart
/// path): the engine never sees that request, and the client waits.
pub struct StallingProxy {
    pub host: String,
    task: tokio::task::JoinHandle<()>,
}

impl StallingProxy {
    pub async fn start(stall: String) -> StallingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = format!("tcp://{}", listener.local_addr().unwrap());
        let stall = std::sync::Arc::new(stall.into_bytes());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(pass_through(client, stall.clone()));
            }
        });
        StallingProxy { host, task }
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pass_through(client: tokio::net::TcpStream, stall: std::sync::Arc<Vec<u8>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(engine) = tokio::net::UnixStream::connect("/var/run/docker.sock").await else {
        return;
    };
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_engine, mut to_engine) = engine.into_split();
    let responses = tokio::spawn(async move { tokio::io::copy(&mut from_engine, &mut to_client).await });
    // Requests are scanned across reads: the last bytes of one read are kept
    // so that `stall` split between two reads is still seen.
    let mut seen: Vec<u8> = Vec::new();
    let mut buffer = [0u8; 8192];
    while let Ok(read @ 1..) = from_client.read(&mut buffer).await {
        seen.extend_from_slice(&buffer[..read]);
        if seen.windows(stall.len()).any(|w| w == stall.as_slice()) {
            // Hold both connections open (a dropped half would tell the
            // client), passing on nothing more.
            let _held = (to_engine, responses);
            return std::future::pending::<()>().await;
        }
        if to_engine.write_all(&buffer[..read]).await.is_err() {
            return;
        }
        let keep = seen.len().saturating_sub(stall.len());
        seen.drain(..keep);
    }
}
