//! In-process tests of the demo services: routes, faults, admin API and metrics.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{eventually, sample, settings_a, settings_b, start};

const DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn service_b_answers_and_counts() {
    let b = start(settings_b()).await;
    let (status, body) = b.get_json("/api/data").await;
    assert_eq!(status, 200);
    assert_eq!(body["service"], "service_b");
    assert_eq!(body["value"], 1);
    let (status, body) = b.get("/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    let (status, _) = b.get("/nope").await;
    assert_eq!(status, 404);
    let resp = b.client.get(b.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    let m = b.metrics().await;
    assert_eq!(
        sample(&m, r#"http_requests_total{route="/api/data",code="200"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, r#"http_requests_total{route="/healthz",code="200"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, r#"http_requests_total{route="other",code="404"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, r#"http_request_duration_seconds_count{route="/api/data"}"#),
        Some(1.0)
    );
    // service_b has no upstream and no dependency fault.
    assert!(!m.contains("upstream_requests"), "{m}");
    assert!(!m.contains(r#"fault="dependency""#), "{m}");
    b.stop().await;
}

#[tokio::test]
async fn metric_names_are_the_contract() {
    let mut settings = settings_a("127.0.0.1:9".parse().unwrap(), Duration::from_millis(100));
    settings.memory_limit_bytes = Some(123_456_789);
    let a = start(settings).await;
    a.get("/healthz").await;
    // The main port serves the same registry as the admin port.
    let resp = a.client.get(a.main_url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let main_text = resp.text().await.unwrap();
    let m = a.metrics().await;
    for text in [&main_text, &m] {
        for line in [
            "# TYPE http_requests counter",
            "# TYPE http_request_duration_seconds histogram",
            "# TYPE http_requests_in_flight gauge",
            "# TYPE upstream_requests counter",
            "# TYPE process_resident_memory_bytes gauge",
            "# TYPE process_cpu_seconds counter",
            "# TYPE process_start_time_seconds gauge",
            "# TYPE process_memory_limit_bytes gauge",
            "# TYPE service_build_info gauge",
            "# TYPE service_fault_active gauge",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
    for series in [
        r#"http_requests_total{route="/healthz",code="200"}"#,
        r#"http_request_duration_seconds_bucket{le="0.005",route="/healthz"}"#,
        r#"http_request_duration_seconds_bucket{le="10.0",route="/healthz"}"#,
        r#"http_request_duration_seconds_bucket{le="+Inf",route="/healthz"}"#,
        r#"http_request_duration_seconds_count{route="/healthz"}"#,
        r#"http_request_duration_seconds_sum{route="/healthz"}"#,
        "http_requests_in_flight",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_start_time_seconds",
        "process_memory_limit_bytes",
        r#"service_build_info{version="1.0.0",bad="false"}"#,
    ] {
        assert!(sample(&m, series).is_some(), "missing {series} in\n{m}");
    }
    let buckets = m
        .lines()
        .filter(|l| l.starts_with(r#"http_request_duration_seconds_bucket{"#) && l.contains(r#"route="/healthz""#))
        .count();
    assert_eq!(buckets, 12, "11 buckets and +Inf");
    assert_eq!(
        sample(&m, r#"upstream_requests_total{upstream="service_b",outcome="success"}"#),
        Some(0.0)
    );
    assert_eq!(
        sample(&m, r#"upstream_requests_total{upstream="service_b",outcome="failure"}"#),
        Some(0.0)
    );
    for kind in ["crash", "hang", "leak", "cpu", "latency", "errors", "dependency"] {
        assert_eq!(
            sample(&m, &format!(r#"service_fault_active{{fault="{kind}"}}"#)),
            Some(0.0),
            "{kind}"
        );
    }
    assert_eq!(
        sample(&m, r#"service_build_info{version="1.0.0",bad="false"}"#),
        Some(1.0)
    );
    assert!(sample(&m, "process_resident_memory_bytes").unwrap() > 1_000_000.0);
    let limit = sample(&m, "process_memory_limit_bytes").unwrap();
    match demo_common::memory_limit(std::path::Path::new("/sys/fs/cgroup")) {
        Some(cgroup) => assert_eq!(limit, cgroup as f64),
        None => assert_eq!(limit, 123_456_789.0),
    }
    let start = sample(&m, "process_start_time_seconds").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(start > now - 3600.0 && start <= now + 1.0, "start {start}, now {now}");
    // /metrics on the main port is not counted.
    assert!(!m.contains(r#"route="/metrics""#), "{m}");
    a.stop().await;
}

#[tokio::test]
async fn memory_limit_absent_without_cgroup_limit_or_flag() {
    if demo_common::memory_limit(std::path::Path::new("/sys/fs/cgroup")).is_some() {
        return; // This machine runs under a memory limit: the gauge is always there.
    }
    let b = start(settings_b()).await;
    assert!(!b.metrics().await.contains("process_memory_limit_bytes"));
    b.stop().await;
}

#[tokio::test]
async fn errors_fault_ratio_one_and_validation() {
    let b = start(settings_b()).await;
    let (status, state) = b.inject("errors", r#"{"ratio": 1.0}"#).await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["service"], "service_b");
    assert_eq!(state["active"][0]["fault"], "errors");
    assert_eq!(state["active"][0]["ratio"], 1.0);
    assert_eq!(state["active"][0]["expires_in_seconds"], Value::Null);
    for _ in 0..5 {
        assert_eq!(b.get("/api/data").await.0, 500);
    }
    // Only /api/* is affected.
    assert_eq!(b.get("/healthz").await.0, 200);
    assert_eq!(b.metric(r#"service_fault_active{fault="errors"}"#).await, Some(1.0));
    assert_eq!(
        b.metric(r#"http_requests_total{route="/api/data",code="500"}"#).await,
        Some(5.0)
    );

    // Half: exactly every other request fails.
    let (status, _) = b.inject("errors", r#"{"ratio": 0.5}"#).await;
    assert_eq!(status, 200);
    let mut codes = Vec::new();
    for _ in 0..10 {
        codes.push(b.get("/api/data").await.0);
    }
    assert_eq!(codes.iter().filter(|c| **c == 500).count(), 5, "{codes:?}");

    for body in [
        r#"{"ratio": 1.01}"#,
        r#"{"ratio": -0.5}"#,
        r#"{"ratio": "all"}"#,
        r#"{"ratio": NaN}"#,
    ] {
        let (status, err) = b.inject("errors", body).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert!(err["error"].as_str().unwrap().contains("ratio") || err["error"].as_str().unwrap().contains("column"));
    }
    // A rejected request leaves the active fault alone.
    assert_eq!(b.faults().await["active"][0]["ratio"], 0.5);

    let (status, state) = b.clear("errors").await;
    assert_eq!(status, 200);
    assert_eq!(state["active"], serde_json::json!([]));
    assert_eq!(b.get("/api/data").await.0, 200);
    assert_eq!(b.metric(r#"service_fault_active{fault="errors"}"#).await, Some(0.0));
    b.stop().await;
}

#[tokio::test]
async fn bad_requests_are_400_with_a_message() {
    let b = start(settings_b()).await;
    let cases: &[(&str, &str, &str)] = &[
        ("explode", "", "unknown fault kind"),
        ("dependency", "", "service_b has no dependency"),
        ("hang", "{", "line 1 column"),
        ("hang", "not json", "line 1 column"),
        ("hang", r#"{"duration_seconds": -1}"#, "duration_seconds"),
        ("hang", r#"{"duration_seconds": 0}"#, "duration_seconds"),
        ("hang", r#"{"ratio": 1}"#, "`ratio` does not apply to fault `hang`"),
        ("latency", r#"{"latency_ms": -10}"#, "line 1 column"),
        (
            "latency",
            r#"{"latency_ms": 10, "extra": true}"#,
            "unknown field `extra`",
        ),
        ("leak", r#"{"rate_mib_per_second": 0}"#, "rate_mib_per_second"),
        ("cpu", r#"{"threads": 0}"#, "threads"),
        ("crash", r#"{"exit_code": -1}"#, "exit_code"),
        ("crash", r#"{"duration_seconds": 1}"#, "does not apply to fault `crash`"),
    ];
    for (kind, body, needle) in cases {
        let (status, err) = b.inject(kind, body).await;
        assert_eq!(status, 400, "{kind} {body}: {err}");
        let message = err["error"].as_str().unwrap();
        assert!(message.contains(needle), "{kind} {body}: {message:?} lacks {needle:?}");
    }
    let (status, err) = b.clear("explode").await;
    assert_eq!(status, 400, "{err}");
    assert!(b.faults().await["active"].as_array().unwrap().is_empty());
    assert!(b.exits.is_empty(), "no crash happened");
    // The service still works.
    assert_eq!(b.get("/api/data").await.0, 200);
    b.stop().await;
}

#[tokio::test]
async fn hang_holds_main_port_but_not_admin() {
    let b = start(settings_b()).await;
    let (status, _) = b.inject("hang", "").await;
    assert_eq!(status, 200);

    let client = b.client.clone();
    let url = b.main_url("/healthz");
    let mut pending = tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) });
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut pending)
            .await
            .is_err(),
        "a hung main port must not answer"
    );
    // The admin port answers, and shows the request in flight.
    assert_eq!(b.faults().await["active"][0]["fault"], "hang");
    assert_eq!(b.metric(r#"service_fault_active{fault="hang"}"#).await, Some(1.0));
    assert_eq!(b.metric("http_requests_in_flight").await, Some(1.0));
    // The main port's /metrics hangs too.
    let client = b.client.clone();
    let url = b.main_url("/metrics");
    let mut pending_metrics = tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) });
    assert!(tokio::time::timeout(Duration::from_millis(100), &mut pending_metrics)
        .await
        .is_err());

    let (status, state) = b.clear("hang").await;
    assert_eq!(status, 200);
    assert!(state["active"].as_array().unwrap().is_empty());
    let code = tokio::time::timeout(DEADLINE, pending)
        .await
        .expect("released")
        .unwrap()
        .unwrap();
    assert_eq!(code, 200);
    let code = tokio::time::timeout(DEADLINE, pending_metrics)
        .await
        .expect("released")
        .unwrap()
        .unwrap();
    assert_eq!(code, 200);
    assert_eq!(b.metric("http_requests_in_flight").await, Some(0.0));
    b.stop().await;
}

#[tokio::test]
async fn duration_expires_over_http() {
    let b = start(settings_b()).await;
    let (status, state) = b.inject("errors", r#"{"duration_seconds": 1.0}"#).await;
    assert_eq!(status, 200);
    let expires = state["active"][0]["expires_in_seconds"].as_f64().unwrap();
    assert!(expires > 0.0 && expires <= 1.0, "{expires}");
    assert_eq!(b.get("/api/data").await.0, 500);
    eventually("the errors fault to expire", DEADLINE, || async {
        (b.get("/api/data").await.0 == 200).then_some(())
    })
    .await;
    assert!(b.faults().await["active"].as_array().unwrap().is_empty());
    assert_eq!(b.metric(r#"service_fault_active{fault="errors"}"#).await, Some(0.0));

    // A hang with a duration releases the waiting request when it expires.
    let (status, _) = b.inject("hang", r#"{"duration_seconds": 1.0}"#).await;
    assert_eq!(status, 200);
    let start = Instant::now();
    let (status, _) = b.get("/healthz").await;
    assert_eq!(status, 200);
    assert!(start.elapsed() >= Duration::from_millis(500), "{:?}", start.elapsed());
    b.stop().await;
}

#[tokio::test]
async fn latency_fault_delays_api_only() {
    let b = start(settings_b()).await;
    let (status, state) = b.inject("latency", r#"{"latency_ms": 400}"#).await;
    assert_eq!(status, 200);
    assert_eq!(state["active"][0]["latency_ms"], 400);
    let start = Instant::now();
    assert_eq!(b.get("/api/data").await.0, 200);
    assert!(start.elapsed() >= Duration::from_millis(400), "{:?}", start.elapsed());
    let m = b.metrics().await;
    assert_eq!(
        sample(
            &m,
            r#"http_request_duration_seconds_bucket{le="0.25",route="/api/data"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &m,
            r#"http_request_duration_seconds_bucket{le="0.5",route="/api/data"}"#
        ),
        Some(1.0)
    );
    let start = Instant::now();
    assert_eq!(b.get("/healthz").await.0, 200);
    assert!(start.elapsed() < Duration::from_millis(400), "/healthz is not delayed");

    // Re-injecting replaces the latency.
    b.inject("latency", r#"{"latency_ms": 1}"#).await;
    let start = Instant::now();
    assert_eq!(b.get("/api/data").await.0, 200);
    assert!(start.elapsed() < Duration::from_millis(400));
    assert_eq!(b.faults().await["active"].as_array().unwrap().len(), 1);
    b.stop().await;
}

#[tokio::test]
async fn bad_version_fails_api_but_looks_healthy() {
    let mut settings = settings_b();
    settings.bad_version = true;
    settings.version = "2.0.0".into();
    let b = start(settings).await;
    assert_eq!(b.get("/api/data").await.0, 500);
    assert_eq!(b.get("/api/other").await.0, 500);
    assert_eq!(b.get("/healthz").await.0, 200);
    let state = b.faults().await;
    assert_eq!(state["bad_version"], true);
    assert_eq!(state["version"], "2.0.0");
    let m = b.metrics().await;
    assert_eq!(
        sample(&m, r#"service_build_info{version="2.0.0",bad="true"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, r#"http_requests_total{route="/api/data",code="500"}"#),
        Some(1.0)
    );
    b.stop().await;
}

#[tokio::test]
async fn crash_answers_then_calls_the_exit_hook() {
    let mut b = start(settings_b()).await;
    let (status, _) = b.inject("crash", "").await;
    assert_eq!(status, 200);
    let code = tokio::time::timeout(DEADLINE, b.exits.recv()).await.unwrap().unwrap();
    assert_eq!(code, 1);
    let (status, _) = b.inject("crash", r#"{"exit_code": 42}"#).await;
    assert_eq!(status, 200);
    let code = tokio::time::timeout(DEADLINE, b.exits.recv()).await.unwrap().unwrap();
    assert_eq!(code, 42);
    b.stop().await;
}

#[tokio::test]
async fn clear_all_and_replace() {
    let b = start(settings_b()).await;
    b.inject("latency", r#"{"latency_ms": 1}"#).await;
    b.inject("errors", r#"{"ratio": 0.1, "duration_seconds": 60}"#).await;
    let (_, state) = b.inject("errors", r#"{"ratio": 0.2}"#).await;
    let active = state["active"].as_array().unwrap();
    assert_eq!(active.len(), 2, "{state}");
    let errors = active.iter().find(|f| f["fault"] == "errors").unwrap();
    assert_eq!(errors["ratio"], 0.2);
    assert_eq!(errors["expires_in_seconds"], Value::Null);
    let resp = b.client.delete(b.admin_url("/faults")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let state: Value = resp.json().await.unwrap();
    assert!(state["active"].as_array().unwrap().is_empty(), "{state}");
    b.stop().await;
}

#[tokio::test]
async fn service_a_calls_service_b() {
    let b = start(settings_b()).await;
    let a = start(settings_a(b.main, Duration::from_millis(500))).await;

    let (status, body) = a.get_json("/api/work").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["service"], "service_a");
    assert_eq!(body["upstream"]["service"], "service_b");
    assert_eq!(
        a.metric(r#"upstream_requests_total{upstream="service_b",outcome="success"}"#)
            .await,
        Some(1.0)
    );

    // b answers 500: a answers 502.
    b.inject("errors", "").await;
    let (status, body) = a.get_json("/api/work").await;
    assert_eq!(status, 502, "{body}");
    assert!(body["error"].as_str().unwrap().contains("500"));
    assert_eq!(
        a.metric(r#"upstream_requests_total{upstream="service_b",outcome="failure"}"#)
            .await,
        Some(1.0)
    );
    b.clear("errors").await;

    // b hangs: a answers 504 after its upstream timeout.
    b.inject("hang", "").await;
    let start = Instant::now();
    let (status, body) = a.get_json("/api/work").await;
    let took = start.elapsed();
    assert_eq!(status, 504, "{body}");
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(
        a.metric(r#"upstream_requests_total{upstream="service_b",outcome="failure"}"#)
            .await,
        Some(2.0)
    );
    b.clear("hang").await;
    assert_eq!(a.get("/api/work").await.0, 200);

    // b gone: a answers 502.
    b.stop().await;
    let (status, body) = a.get_json("/api/work").await;
    assert_eq!(status, 502, "{body}");
    let m = a.metrics().await;
    assert_eq!(
        sample(&m, r#"http_requests_total{route="/api/work",code="504"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, r#"http_requests_total{route="/api/work",code="502"}"#),
        Some(2.0)
    );
    a.stop().await;
}

#[tokio::test]
async fn dependency_fault_fails_without_calling_b() {
    let b = start(settings_b()).await;
    let a = start(settings_a(b.main, Duration::from_millis(500))).await;
    let (status, state) = a.inject("dependency", r#"{"duration_seconds": 30}"#).await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["service"], "service_a");
    for _ in 0..3 {
        let (status, _) = a.get("/api/work").await;
        assert_eq!(status, 502);
    }
    assert_eq!(
        a.metric(r#"upstream_requests_total{upstream="service_b",outcome="failure"}"#)
            .await,
        Some(3.0)
    );
    assert_eq!(a.metric(r#"service_fault_active{fault="dependency"}"#).await, Some(1.0));
    assert_eq!(
        b.metric(r#"http_requests_total{route="/api/data",code="200"}"#).await,
        None,
        "b was never called"
    );
    a.clear("dependency").await;
    assert_eq!(a.get("/api/work").await.0, 200);
    assert_eq!(
        b.metric(r#"http_requests_total{route="/api/data",code="200"}"#).await,
        Some(1.0)
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn shutdown_is_bounded_during_a_hang() {
    let b = start(settings_b()).await;
    b.inject("hang", "").await;
    let client = b.client.clone();
    let url = b.main_url("/api/data");
    let pending = tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) });
    eventually("the request to be in flight", DEADLINE, || async {
        (b.metric("http_requests_in_flight").await == Some(1.0)).then_some(())
    })
    .await;
    let took = b.stop().await;
    assert!(took < Duration::from_millis(2500), "shutdown took {took:?}");
    // The hung request was released (shutdown clears the faults) or dropped, not left hanging.
    let result = tokio::time::timeout(DEADLINE, pending).await.unwrap().unwrap();
    assert!(matches!(result, Ok(200) | Ok(503) | Err(_)), "{result:?}");
}
