//! In-process services on 127.0.0.1:0 for the integration tests.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use demo_common::{ExitHook, Role, Settings};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub struct Service {
    pub main: SocketAddr,
    pub admin: SocketAddr,
    pub client: reqwest::Client,
    /// Exit codes the crash fault asked for.
    pub exits: mpsc::UnboundedReceiver<i32>,
    shutdown: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<Result<(), demo_common::Error>>,
}

pub fn settings_b() -> Settings {
    Settings::new(Role::ServiceB, "1.0.0")
}

pub fn settings_a(b: SocketAddr, timeout: Duration) -> Settings {
    Settings::new(
        Role::ServiceA {
            service_b_url: format!("http://{b}"),
            upstream_timeout: timeout,
        },
        "1.0.0",
    )
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

pub async fn start(mut settings: Settings) -> Service {
    let main = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (main_addr, admin_addr) = (main.local_addr().unwrap(), admin.local_addr().unwrap());
    let (exit_tx, exits) = mpsc::unbounded_channel();
    settings.exit = ExitHook::new(move |code| {
        let _ = exit_tx.send(code);
    });
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(demo_common::run(settings, main, admin, async move {
        let _ = shutdown_rx.await;
    }));
    Service {
        main: main_addr,
        admin: admin_addr,
        client: client(),
        exits,
        shutdown: Some(shutdown_tx),
        task,
    }
}

impl Service {
    pub fn main_url(&self, path: &str) -> String {
        format!("http://{}{}", self.main, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let resp = self.client.get(self.main_url(path)).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let (status, body) = self.get(path).await;
        (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
    }

    /// POST /faults/{kind} with a raw body; returns status and JSON.
    pub async fn inject(&self, kind: &str, body: &str) -> (u16, Value) {
        let resp = self
            .client
            .post(self.admin_url(&format!("/faults/{kind}")))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    pub async fn clear(&self, kind: &str) -> (u16, Value) {
        let resp = self
            .client
            .delete(self.admin_url(&format!("/faults/{kind}")))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    pub async fn faults(&self) -> Value {
        self.client
            .get(self.admin_url("/faults"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The admin port's /metrics.
    pub async fn metrics(&self) -> String {
        let resp = self.client.get(self.admin_url("/metrics")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap()
    }

    /// A sample's value from the admin port's /metrics, by its full series text (name and labels).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        sample(&self.metrics().await, series)
    }

    /// Stops the service; returns how long run() took to return.
    pub async fn stop(mut self) -> Duration {
        let start = Instant::now();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("run() returns after shutdown")
            .unwrap()
            .unwrap();
        start.elapsed()
    }
}

/// The value of the sample whose name and labels are `series` in exposition text.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

/// Polls `check` until it returns Some, failing after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
