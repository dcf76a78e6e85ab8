//! The service_a binary as a process, against an in-process service_b.

#[path = "../../service_b/tests/support/mod.rs"]
mod support;

use demo_common::{Role, Settings};
use support::{command, run_to_end, spawn};

const BIN: &str = env!("CARGO_BIN_EXE_service_a");

/// Starts an in-process service_b; returns its main address.
async fn service_b() -> std::net::SocketAddr {
    let main = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = main.local_addr().unwrap();
    let settings = Settings::new(Role::ServiceB, "1.0.0");
    tokio::spawn(demo_common::run(settings, main, admin, std::future::pending()));
    addr
}

#[tokio::test]
async fn calls_service_b_then_crash_exits_with_code_1() {
    let b = service_b().await;
    let url = format!("http://{b}");
    let mut p = spawn(BIN, &["--service-b-url", &url, "--upstream-timeout-ms", "500"], &[]).await;
    let resp = p.client.get(p.main_url("/api/work")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["upstream"]["service"], "service_b");

    assert_eq!(p.post(p.admin_url("/faults/dependency"), "").await, 200);
    assert_eq!(p.get(p.main_url("/api/work")).await, 502);

    assert_eq!(p.post(p.admin_url("/faults/crash"), "").await, 200);
    let (status, _) = p.wait_exit().await;
    assert_eq!(status.code(), Some(1), "{status:?}; stderr: {:?}", p.stderr());
}

#[tokio::test]
async fn service_b_url_from_env() {
    let b = service_b().await;
    let url = format!("http://{b}/");
    let p = spawn(
        BIN,
        &[],
        &[("SERVICE_B_URL", url.as_str()), ("UPSTREAM_TIMEOUT_MS", "300")],
    )
    .await;
    assert_eq!(p.get(p.main_url("/api/work")).await, 200);
}

#[tokio::test]
async fn bad_flags_exit_2() {
    for args in [
        &["--service-b-url", "ftp://service_b"][..],
        &["--service-b-url", "service_b:8080"],
        &["--upstream-timeout-ms", "0"],
        &["--upstream-timeout-ms", "soon"],
        &["--bogus"],
    ] {
        let (status, stderr) = run_to_end(command(BIN, args, &[])).await;
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
    }
}
