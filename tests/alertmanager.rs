//! End to end with a real Alertmanager delivering to homeostat's webhook.

mod common;

use std::time::Duration;

use common::{eventually, test_config, Alertmanager, InProcess};
use homeostat_core::config::{Credentials, Secret};
use homeostat_server::pipeline::LogTransitions;
use serde_json::{json, Value};

const TOKEN: &str = "am-webhook-token";

fn alert(service: &str, ends_at: Option<&str>) -> Value {
    let mut alert = json!({
        "labels": {"alertname": "ServiceDown", "service": service, "severity": "page"},
        "annotations": {"summary": format!("{service} is down")},
        "startsAt": "2026-11-28T06:00:00Z",
        "generatorURL": "http://prometheus.invalid/graph",
    });
    if let Some(ends_at) = ends_at {
        alert["endsAt"] = ends_at.into();
    }
    json!([alert])
}

/// The incidents of `service`, newest first.
async fn incidents_of(server: &InProcess, service: &str) -> Vec<Value> {
    let page = server
        .client
        .get(server.url(&format!("/api/v1/incidents?label=service={service}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    page["incidents"].as_array().unwrap().clone()
}

async fn start_homeostat(dir: &std::path::Path) -> InProcess {
    let credentials = Credentials {
        bearer_token: Some(Secret::new(TOKEN)),
        basic: None,
        tokens: Vec::new(),
    };
    InProcess::start(test_config(dir), credentials, LogTransitions).await
}

fn bearer_http_config(dir: &std::path::Path) -> String {
    let token_file = dir.join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    format!(
        "        http_config:\n          authorization:\n            type: Bearer\n            credentials_file: {}\n",
        token_file.display()
    )
}

#[tokio::test]
async fn alerts_become_one_incident_each_and_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_homeostat(dir.path()).await;
    let am = Alertmanager::start(&server.url("/api/v1/alerts"), &bearer_http_config(dir.path())).await;

    am.post_alerts(&alert("checkout", None)).await;
    let opened = eventually("the alert to become an incident", Duration::from_secs(20), || async {
        incidents_of(&server, "checkout").await.into_iter().next()
    })
    .await;
    assert_eq!(opened["status"], "firing");
    assert_eq!(opened["alertname"], "ServiceDown");
    assert_eq!(opened["annotations"]["summary"], "checkout is down");
    assert_eq!(opened["ends_at"], Value::Null);
    let fingerprint = opened["fingerprint"].as_str().unwrap().to_owned();
    assert_eq!(fingerprint.len(), 16, "Alertmanager fingerprints are 16 hex digits");

    // repeat_interval is 1s: Alertmanager keeps re-sending, and it stays one incident.
    eventually(
        "three deliveries of the same alert",
        Duration::from_secs(20),
        || async {
            let all = incidents_of(&server, "checkout").await;
            assert_eq!(all.len(), 1, "{all:?}");
            (all[0]["deliveries"].as_i64().unwrap() >= 3).then_some(())
        },
    )
    .await;

    let now = chrono::Utc::now().to_rfc3339();
    am.post_alerts(&alert("checkout", Some(&now))).await;
    let resolved = eventually("the incident to resolve", Duration::from_secs(20), || async {
        let all = incidents_of(&server, "checkout").await;
        assert_eq!(all.len(), 1, "{all:?}");
        (all[0]["status"] == "resolved").then(|| all[0].clone())
    })
    .await;
    assert_eq!(resolved["fingerprint"], fingerprint.as_str());
    assert!(resolved["ends_at"].is_string());
    server.stop().await;
}

#[tokio::test]
async fn both_peers_of_an_ha_pair_feed_one_incident() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_homeostat(dir.path()).await;
    let http_config = bearer_http_config(dir.path());
    let webhook = server.url("/api/v1/alerts");
    let peers = [
        Alertmanager::start(&webhook, &http_config).await,
        Alertmanager::start(&webhook, &http_config).await,
    ];
    for peer in &peers {
        peer.post_alerts(&alert("payments", None)).await;
    }
    eventually("deliveries from both peers", Duration::from_secs(20), || async {
        let all = incidents_of(&server, "payments").await;
        assert!(all.len() <= 1, "one alert became {} incidents: {all:?}", all.len());
        all.first()
            .filter(|i| i["deliveries"].as_i64().unwrap() >= 4)
            .map(|_| ())
    })
    .await;

    let now = chrono::Utc::now().to_rfc3339();
    for peer in &peers {
        peer.post_alerts(&alert("payments", Some(&now))).await;
    }
    eventually("the incident to resolve", Duration::from_secs(20), || async {
        let all = incidents_of(&server, "payments").await;
        assert_eq!(all.len(), 1, "{all:?}");
        (all[0]["status"] == "resolved").then_some(())
    })
    .await;
    server.stop().await;

    // Both peers delivered: each signs its deliveries with its own externalURL.
    let journal = rusqlite::Connection::open(dir.path().join("journal.db")).unwrap();
    let senders: Vec<String> = journal
        .prepare("SELECT DISTINCT external_url FROM deliveries ORDER BY 1")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut expected: Vec<String> = peers.iter().map(|p| p.external_url.clone()).collect();
    expected.sort();
    assert_eq!(senders, expected);
}
