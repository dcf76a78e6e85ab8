//! The service_b binary as a process: crash exit code, signals, configuration errors.

mod support;

use std::time::Duration;

use support::{command, run_to_end, spawn};

const BIN: &str = env!("CARGO_BIN_EXE_service_b");

#[tokio::test]
async fn serves_then_crash_exits_with_code_1() {
    let mut p = spawn(BIN, &[], &[]).await;
    assert_eq!(p.get(p.main_url("/api/data")).await, 200);
    assert_eq!(p.get(p.admin_url("/healthz")).await, 200);
    assert_eq!(p.post(p.admin_url("/faults/crash"), "").await, 200);
    let (status, _) = p.wait_exit().await;
    assert_eq!(status.code(), Some(1), "{status:?}; stderr: {:?}", p.stderr());
    assert!(p.stderr().iter().any(|l| l.contains("crash")), "{:?}", p.stderr());
}

#[tokio::test]
async fn crash_with_exit_code() {
    let mut p = spawn(BIN, &[], &[]).await;
    assert_eq!(p.post(p.admin_url("/faults/crash"), r#"{"exit_code": 3}"#).await, 200);
    let (status, _) = p.wait_exit().await;
    assert_eq!(status.code(), Some(3), "{status:?}");
}

#[tokio::test]
async fn sigterm_exits_0_quickly_even_during_a_hang() {
    let mut p = spawn(BIN, &[], &[]).await;
    assert_eq!(p.post(p.admin_url("/faults/hang"), "").await, 200);
    let client = p.client.clone();
    let url = p.main_url("/api/data");
    let hung = tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) });
    // Wait until the hung request is in flight.
    let start = std::time::Instant::now();
    loop {
        let m = p
            .client
            .get(p.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if m.lines().any(|l| l == "http_requests_in_flight 1") {
            break;
        }
        assert!(start.elapsed() < support::DEADLINE, "request never in flight:\n{m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.signal("TERM");
    let (status, took) = p.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{status:?}; stderr: {:?}", p.stderr());
    assert!(took < Duration::from_secs(3), "exit took {took:?}");
    assert!(p.stderr().iter().any(|l| l.contains("SIGTERM")), "{:?}", p.stderr());
    let _ = hung.await;
}

#[tokio::test]
async fn sigint_exits_0() {
    let mut p = spawn(BIN, &[], &[]).await;
    p.signal("INT");
    let (status, took) = p.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(took < Duration::from_secs(3), "exit took {took:?}");
}

#[tokio::test]
async fn configuration_from_env() {
    let p = spawn(BIN, &[], &[("SERVICE_VERSION", "3.1.4"), ("BAD_VERSION", "true")]).await;
    assert_eq!(p.get(p.main_url("/api/data")).await, 500);
    assert_eq!(p.get(p.main_url("/healthz")).await, 200);
    let state: serde_json::Value = p
        .client
        .get(p.admin_url("/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["version"], "3.1.4");
    assert_eq!(state["bad_version"], true);
    assert_eq!(state["service"], "service_b");
}

#[tokio::test]
async fn bind_failure_exits_1_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, stderr) = run_to_end(command(BIN, &["--listen", &addr, "--admin-listen", "127.0.0.1:0"], &[])).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&addr) && stderr.contains("error"), "{stderr}");
}

#[tokio::test]
async fn bad_flags_exit_2() {
    for args in [
        &["--no-such-flag"][..],
        &["--listen", "not-an-address"],
        &["--bad-version", "perhaps"],
        &["--memory-limit-bytes", "lots"],
    ] {
        let (status, stderr) = run_to_end(command(BIN, args, &[])).await;
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
    }
    let (status, stderr) = run_to_end(command(BIN, &[], &[("BAD_VERSION", "perhaps")])).await;
    assert_eq!(status.code(), Some(2), "{stderr}");
}
