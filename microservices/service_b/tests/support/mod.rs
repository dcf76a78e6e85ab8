//! Runs a service binary as a child process on free loopback ports (shared by the service_a and
//! service_b integration tests).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

pub const DEADLINE: Duration = Duration::from_secs(10);

/// Environment variables that would override the flags the tests pass.
const CONFIG_ENV: [&str; 9] = [
    "LISTEN",
    "ADMIN_LISTEN",
    "SERVICE_VERSION",
    "BAD_VERSION",
    "MEMORY_LIMIT_BYTES",
    "SERVICE_B_URL",
    "UPSTREAM_TIMEOUT_MS",
    "RUST_LOG",
    "NO_COLOR",
];

pub struct Proc {
    pub child: Child,
    pub main: SocketAddr,
    pub admin: SocketAddr,
    pub client: reqwest::Client,
    stderr: Arc<Mutex<Vec<String>>>,
}

pub fn command(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(bin);
    for var in CONFIG_ENV {
        cmd.env_remove(var);
    }
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs a command to its end (within the deadline); returns its status and stderr.
pub async fn run_to_end(mut cmd: Command) -> (ExitStatus, String) {
    let out = tokio::time::timeout(DEADLINE, cmd.output())
        .await
        .expect("the process exits")
        .unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Starts the binary on 127.0.0.1:0 ports and waits for its "started" log line to learn them.
pub async fn spawn(bin: &str, extra_args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut args = vec!["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];
    args.extend_from_slice(extra_args);
    let mut child = command(bin, &args, env).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (addr_tx, mut addr_rx) = watch::channel(None);
    {
        let lines = lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if line.contains("started") {
                    let field = |name: &str| -> Option<SocketAddr> {
                        line.split_whitespace()
                            .find_map(|w| w.strip_prefix(name))
                            .and_then(|v| v.parse().ok())
                    };
                    if let (Some(main), Some(admin)) = (field("main="), field("admin=")) {
                        addr_tx.send_replace(Some((main, admin)));
                    }
                }
                lines.lock().unwrap().push(line);
            }
        });
    }
    let addrs = tokio::time::timeout(DEADLINE, addr_rx.wait_for(Option::is_some))
        .await
        .unwrap_or_else(|_| panic!("no 'started' line; stderr: {:?}", lines.lock().unwrap()))
        .unwrap()
        .unwrap();
    Proc {
        child,
        main: addrs.0,
        admin: addrs.1,
        client: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        stderr: lines,
    }
}

impl Proc {
    pub fn main_url(&self, path: &str) -> String {
        format!("http://{}{}", self.main, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    pub async fn get(&self, url: String) -> u16 {
        self.client.get(url).send().await.unwrap().status().as_u16()
    }

    pub async fn post(&self, url: String, body: &str) -> u16 {
        self.client
            .post(url)
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Sends a signal with the `kill` command.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("still running").to_string();
        let status = std::process::Command::new("kill")
            .args([format!("-{name}"), pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its status and how long that took.
    pub async fn wait_exit(&mut self) -> (ExitStatus, Duration) {
        let start = Instant::now();
        let status = match tokio::time::timeout(DEADLINE, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!("the process did not exit; stderr: {:?}", self.stderr()),
        };
        (status, start.elapsed())
    }
}
