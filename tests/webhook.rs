//! The webhook and API over real HTTP, against homeostat running in-process.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{eventually, notification, test_config, InProcess};
use homeostat_core::config::{Credentials, Secret};
use homeostat_journal::{Delivery, JournalMetrics};
use homeostat_server::pipeline::{LogTransitions, Processor};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

/// Holds each delivery until the test releases a permit.
struct Gate(Arc<Semaphore>);

impl Processor for Gate {
    async fn process(&self, _delivery: &Delivery) {
        self.0.acquire().await.unwrap().forget();
    }
}

/// Panics on any delivery about fingerprint `boom`.
struct Boom;

impl Processor for Boom {
    async fn process(&self, delivery: &Delivery) {
        assert!(delivery.events.iter().all(|e| e.fingerprint != "boom"), "boom");
    }
}

#[tokio::test]
async fn a_panicking_processor_costs_one_delivery_not_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let server = InProcess::start(test_config(dir.path()), Credentials::default(), Boom).await;
    for fingerprint in ["boom", "fine", "boom", "fine2"] {
        let response = server
            .post_json("/api/v1/alerts", &notification("firing", &[fingerprint]))
            .await;
        assert_eq!(response.status(), 200, "{fingerprint}");
    }
    eventually(
        "all four deliveries to be processed",
        Duration::from_secs(10),
        || async {
            let text = server
                .client
                .get(server.url("/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            text.contains("homeostat_notifications_processed_total 4").then_some(())
        },
    )
    .await;
    let ready = server.client.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn accepts_a_notification_and_lists_its_incidents() {
    let dir = tempfile::tempdir().unwrap();
    let server = InProcess::start(test_config(dir.path()), Credentials::default(), LogTransitions).await;

    let response = server
        .post_json("/api/v1/alerts", &notification("firing", &["a1", "b2"]))
        .await;
    assert_eq!(response.status(), 200);
    let ack: Value = response.json().await.unwrap();
    assert_eq!(ack["status"], "accepted");
    assert_eq!(ack["incidents"].as_array().unwrap().len(), 2);

    let page = server
        .get_json("/api/v1/incidents?status=firing&label=service=svc-b2")
        .await;
    let incidents = page["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0]["fingerprint"], "b2");
    assert_eq!(incidents[0]["deliveries"], 1);
    let id = incidents[0]["id"].as_i64().unwrap();
    let one = server.get_json(&format!("/api/v1/incidents/{id}")).await;
    assert_eq!(one["labels"]["service"], "svc-b2");
    for path in ["/api/v1/incidents/999", "/api/v1/incidents/999/decisions"] {
        let missing = server.client.get(server.url(path)).send().await.unwrap();
        assert_eq!(missing.status(), 404, "{path}");
    }
    let decisions = server.get_json(&format!("/api/v1/incidents/{id}/decisions")).await;
    assert_eq!(decisions["incident"], id);
    let bad = server
        .client
        .get(server.url("/api/v1/incidents?status=open"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let response = server
        .post_json("/api/v1/alerts", &notification("resolved", &["a1"]))
        .await;
    assert_eq!(response.status(), 200);
    let resolved = server.get_json("/api/v1/incidents?status=resolved").await;
    assert_eq!(resolved["incidents"][0]["fingerprint"], "a1");
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_get_400_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let server = InProcess::start(test_config(dir.path()), Credentials::default(), LogTransitions).await;
    let post_raw = |body: &'static str| {
        let request = server
            .client
            .post(server.url("/api/v1/alerts"))
            .header("content-type", "application/json")
            .body(body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };

    let (status, body) = post_raw("{\"version\": \"4\", \"alerts\": [}").await;
    assert_eq!(status, 400);
    assert_eq!(body["path"], "alerts[0]");
    assert_eq!((body["line"].as_u64(), body["column"].as_u64()), (Some(1), Some(29)));

    let mut wrong_type = notification("firing", &["x"]);
    wrong_type["alerts"][0]["labels"] = Value::from(5);
    let response = server.post_json("/api/v1/alerts", &wrong_type).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["path"], "alerts[0].labels");

    let mut v5 = notification("firing", &["x"]);
    v5["version"] = "5".into();
    let response = server.post_json("/api/v1/alerts", &v5).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("unsupported webhook payload version \"5\""),
        "{body}"
    );

    // Nothing from a rejected request reaches the journal.
    let page = server.get_json("/api/v1/incidents").await;
    assert_eq!(page["incidents"].as_array().unwrap().len(), 0);
    server.stop().await;
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_with_or_without_content_length() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.server.max_body_bytes = 4096;
    let server = InProcess::start(config, Credentials::default(), LogTransitions).await;

    let fingerprints: Vec<String> = (0..100).map(|i| format!("fp{i:04}")).collect();
    let refs: Vec<&str> = fingerprints.iter().map(String::as_str).collect();
    let big = serde_json::to_vec(&notification("firing", &refs)).unwrap();
    assert!(big.len() > 4096);
    let response = server
        .client
        .post(server.url("/api/v1/alerts"))
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("4096 bytes"), "{body}");

    // Chunked, so the limit is found while reading rather than from the header.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big.chunks(1000).map(|c| Ok(c.to_vec())).collect();
    let response = server
        .client
        .post(server.url("/api/v1/alerts"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);

    // Under the limit still works.
    let small = server
        .post_json("/api/v1/alerts", &notification("firing", &["ok"]))
        .await;
    assert_eq!(small.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn credentials_are_demanded_on_the_api_but_not_on_health() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = Credentials {
        bearer_token: Some(Secret::new("t0ken")),
        basic: Some(("am".into(), Secret::new("pw"))),
        tokens: Vec::new(),
    };
    let server = InProcess::start(test_config(dir.path()), credentials, LogTransitions).await;
    let body = notification("firing", &["auth"]);
    let post = |auth: Option<(&str, &str)>| {
        let mut request = server.client.post(server.url("/api/v1/alerts")).json(&body);
        match auth {
            Some(("bearer", token)) => request = request.bearer_auth(token),
            Some((user, pass)) => request = request.basic_auth(user, Some(pass)),
            None => {}
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(post(None).await, 401);
    assert_eq!(post(Some(("bearer", "wrong"))).await, 401);
    assert_eq!(post(Some(("am", "nope"))).await, 401);
    assert_eq!(post(Some(("bearer", "t0ken"))).await, 200);
    assert_eq!(post(Some(("am", "pw"))).await, 200);

    let listing = server.client.get(server.url("/api/v1/incidents")).send().await.unwrap();
    assert_eq!(listing.status(), 401);
    assert!(listing.headers().contains_key("www-authenticate"));
    for open in ["/healthz", "/readyz", "/metrics"] {
        let response = server.client.get(server.url(open)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{open}");
    }
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("homeostat_webhook_requests_total{outcome=\"unauthorized\"} 3"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_full_queue_answers_503_and_journals_nothing_it_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.server.queue_capacity = 1;
    let gate = Arc::new(Semaphore::new(0));
    let server = InProcess::start(config.clone(), Credentials::default(), Gate(Arc::clone(&gate))).await;

    let mut accepted = Vec::new();
    let mut refused = None;
    for i in 0..5 {
        let fp = format!("q{i}");
        let response = server
            .post_json("/api/v1/alerts", &notification("firing", &[&fp]))
            .await;
        match response.status().as_u16() {
            200 => accepted.push(fp),
            503 => {
                assert_eq!(response.headers()["retry-after"], "1");
                let body: Value = response.json().await.unwrap();
                assert!(body["error"].as_str().unwrap().contains("queue is full"), "{body}");
                refused = Some(fp);
                break;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let refused = refused.expect("a queue of 1 behind a blocked processor never filled");
    // One delivery is held by the processor, one waits in the queue.
    assert!((1..=2).contains(&accepted.len()), "accepted {accepted:?}");
    let page = server.get_json("/api/v1/incidents").await;
    let journalled: Vec<&str> = page["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["fingerprint"].as_str().unwrap())
        .collect();
    assert!(!journalled.contains(&refused.as_str()), "{journalled:?}");
    assert_eq!(journalled.len(), accepted.len());

    // Released, the processor drains the queue and accepts again.
    gate.add_permits(100);
    eventually("the queue to drain", Duration::from_secs(10), || async {
        let retry = server
            .post_json("/api/v1/alerts", &notification("firing", &[&refused]))
            .await;
        (retry.status() == 200).then_some(())
    })
    .await;
    server.stop().await;

    let (journal, _writer) = homeostat_journal::open(&config.journal, JournalMetrics::default()).unwrap();
    assert!(journal.unprocessed().await.unwrap().is_empty());
}

#[tokio::test]
async fn shutdown_drains_the_queue_before_closing_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let gate = Arc::new(Semaphore::new(0));
    let server = InProcess::start(config.clone(), Credentials::default(), Gate(Arc::clone(&gate))).await;
    for i in 0..3 {
        let response = server
            .post_json("/api/v1/alerts", &notification("firing", &[&format!("s{i}")]))
            .await;
        assert_eq!(response.status(), 200);
    }
    let stopping = tokio::spawn(server.stop());
    gate.add_permits(3);
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .unwrap()
        .unwrap();

    let (journal, _writer) = homeostat_journal::open(&config.journal, JournalMetrics::default()).unwrap();
    assert!(journal.unprocessed().await.unwrap().is_empty());
}

#[tokio::test]
async fn not_ready_until_the_backlog_is_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    {
        // A delivery journalled and never processed, as a crash leaves it.
        let (journal, writer) = homeostat_journal::open(&config.journal, JournalMetrics::default()).unwrap();
        let (queue, pipeline) = tokio::sync::mpsc::channel(1);
        let slot = queue.reserve_owned().await.unwrap();
        drop(pipeline);
        let message = serde_json::from_value(notification("firing", &["backlog"])).unwrap();
        journal.ingest(message, chrono::Utc::now(), slot).await.unwrap();
        drop(journal);
        writer.join();
    }
    let gate = Arc::new(Semaphore::new(0));
    let server = InProcess::start(config.clone(), Credentials::default(), Gate(Arc::clone(&gate))).await;
    let status = |path: &'static str| {
        let request = server.client.get(server.url(path)).send();
        async move { request.await.unwrap().status().as_u16() }
    };
    assert_eq!(status("/healthz").await, 200);
    assert_eq!(
        status("/readyz").await,
        503,
        "ready while the backlog is still being processed"
    );
    gate.add_permits(1);
    eventually("readiness after the replay", Duration::from_secs(10), || async {
        (status("/readyz").await == 200).then_some(())
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn metrics_pass_promtool_check_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let server = InProcess::start(test_config(dir.path()), Credentials::default(), LogTransitions).await;
    server
        .post_json("/api/v1/alerts", &notification("firing", &["m1"]))
        .await;
    let response = server.client.get(server.url("/metrics")).send().await.unwrap();
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = response.text().await.unwrap();
    assert!(
        text.contains("homeostat_incident_events_total{kind=\"opened\"} 1"),
        "{text}"
    );

    common::check_metrics(&text);
    server.stop().await;
}

#[tokio::test]
async fn pause_survives_a_restart_until_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let server = InProcess::start(config.clone(), Credentials::default(), LogTransitions).await;
    let response = server
        .client
        .post(server.url("/api/v1/pause"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.json::<Value>().await.unwrap()["paused"], true);
    server.stop().await;

    let (journal, writer) = homeostat_journal::open(&config.journal, JournalMetrics::default()).unwrap();
    assert!(journal.paused().await.unwrap(), "the pause was not journalled");
    drop(journal);
    writer.join();

    let server = InProcess::start(config.clone(), Credentials::default(), LogTransitions).await;
    assert_eq!(
        server.get_json("/api/v1/controls").await["paused"],
        true,
        "the restart forgot the pause"
    );
    let response = server
        .client
        .post(server.url("/api/v1/resume"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.json::<Value>().await.unwrap()["paused"], false);
    assert_eq!(server.get_json("/api/v1/controls").await["paused"], false);
    server.stop().await;
    let (journal, _writer) = homeostat_journal::open(&config.journal, JournalMetrics::default()).unwrap();
    assert!(!journal.paused().await.unwrap());
}

#[tokio::test]
async fn a_stalled_upload_gets_408_and_is_not_journalled() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.server.request_timeout = "1s".parse().unwrap();
    let server = InProcess::start(config, Credentials::default(), LogTransitions).await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // Promises 500 bytes, sends one, then stalls.
    stream
        .write_all(b"POST /api/v1/alerts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{")
        .await
        .unwrap();
    let mut answer = vec![0; 1024];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("no answer to a stalled upload")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let page = server.get_json("/api/v1/incidents").await;
    assert!(page["incidents"].as_array().unwrap().is_empty());
    server.stop().await;
}

/// A client that stalls while sending its headers is disconnected after the
/// request timeout, and one stalling its upload cannot hold a stop beyond
/// the drain timeout: what was acknowledged before is kept.
#[tokio::test]
async fn stalled_clients_neither_keep_connections_nor_hold_a_stop() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.server.request_timeout = "1s".parse().unwrap();
    config.server.drain_timeout = "1s".parse().unwrap();
    let server = InProcess::start(config, Credentials::default(), LogTransitions).await;
    let acked = server
        .post_json("/api/v1/alerts", &notification("firing", &["kept"]))
        .await;
    assert_eq!(acked.status(), 200);

    // Half a request's headers, then nothing: the server hangs up.
    let mut headers = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    headers
        .write_all(b"POST /api/v1/alerts HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    // Read until the server closes (it may answer 408 first).
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = vec![0; 1024];
        while matches!(headers.read(&mut buffer).await, Ok(n) if n > 0) {}
    })
    .await;
    assert!(
        closed.is_ok(),
        "a client stalling mid-headers kept its connection for 10 s"
    );

    // An upload stalling for longer than everything else: the stop does not wait for it.
    let mut upload = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    upload
        .write_all(b"POST /api/v1/alerts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
        .await
        .unwrap();
    let dribble = tokio::spawn(async move {
        for _ in 0..120 {
            if upload.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), server.stop())
        .await
        .expect("the stop waited for a dribbling upload for over 10 s");
    assert!(started.elapsed() < Duration::from_secs(10));
    dribble.abort();

    let (journal, writer) = homeostat_journal::open(
        &test_config(dir.path()).journal,
        homeostat_journal::JournalMetrics::default(),
    )
    .unwrap();
    let page = journal
        .incidents(homeostat_journal::IncidentQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.incidents.len(), 1, "{page:?}");
    assert!(
        journal.unprocessed().await.unwrap().is_empty(),
        "acknowledged, then processed"
    );
    drop(journal);
    writer.join();
}

/// `server.max_connections` caps open connections: past it, a client waits
/// to be served until a connection closes.
#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.server.max_connections = 2;
    let server = InProcess::start(config, Credentials::default(), LogTransitions).await;
    // Two clients hold a connection each, idle.
    let first = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let _second = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut third = tokio::spawn({
        let url = server.url("/healthz");
        async move { reqwest::get(url).await.map(|r| r.status()) }
    });
    // Not served while both are held...
    let early = tokio::time::timeout(Duration::from_millis(500), &mut third).await;
    assert!(early.is_err(), "a third connection was served: {early:?}");
    // ...and served once one of them closes.
    drop(first);
    let status = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("the third client still waits after a connection closed")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    server.stop().await;
}

/// What a web page in a browser could send is refused before it acts: a
/// text/plain POST (415) and a POST from another origin (403); a POST from
/// the server's own origin is accepted.
#[tokio::test]
async fn cross_origin_and_non_json_posts_are_refused_and_act_on_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = InProcess::start(test_config(dir.path()), Credentials::default(), LogTransitions).await;
    let alert = serde_json::to_string(&notification("firing", &["csrf-1"])).unwrap();
    let plain = server
        .client
        .post(server.url("/api/v1/alerts"))
        .header("content-type", "text/plain")
        .body(alert.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 415);
    let foreign = server
        .client
        .post(server.url("/api/v1/alerts"))
        .header("content-type", "application/json")
        .header("origin", "https://evil.example")
        .body(alert.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    assert!(foreign.text().await.unwrap().contains("evil.example"));
    let pause = server
        .client
        .post(server.url("/api/v1/pause"))
        .header("origin", "https://evil.example")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(pause.status(), 403);
    let form = server
        .client
        .post(server.url("/api/v1/pause"))
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 415);
    // DNS rebinding: a page whose own name now points at 127.0.0.1 sends
    // its own name as Host and Origin; without `auth` that is refused too.
    let rebound = server
        .client
        .post(server.url("/api/v1/pause"))
        .header("host", "evil.example:9095")
        .header("origin", "http://evil.example:9095")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
    let read = server
        .client
        .get(server.url("/api/v1/incidents"))
        .header("host", "evil.example:9095")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 403);
    assert_eq!(server.get_json("/api/v1/controls").await["paused"], false);
    assert_eq!(server.get_json("/api/v1/incidents").await["incidents"], json!([]));

    let own = server.url("");
    let same = server
        .client
        .post(server.url("/api/v1/alerts"))
        .header("content-type", "application/json; charset=utf-8")
        .header("origin", own)
        .body(alert)
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), 200, "{:?}", same.text().await);
    assert_eq!(
        server.get_json("/api/v1/incidents").await["incidents"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    server.stop().await;
}
