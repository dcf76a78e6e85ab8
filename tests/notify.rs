//! Notifications: escalations reach a real Alertmanager (and through its
//! routes a receiver) and end with the incident; Slack-format and generic
//! webhook sinks get readable bodies and their headers, are retried after a
//! failure, and every delivery is journalled.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, free_port, test_config, Alertmanager, InProcess};
use homeostat_adapters::executor::docker::DockerExecutor;
use homeostat_core::config::{ActionsConfig, Credentials};
use homeostat_core::playbook::Playbook;
use homeostat_server::pipeline::Responder;
use serde_json::{json, Value};

/// Every rule's only step is a rollback, which cannot be planned on a
/// container outside Compose: each incident is escalated at once.
fn actions(dir: &Path, notifications: &str) -> ActionsConfig {
    let playbook = dir.join("playbook.yml");
    std::fs::write(&playbook, "rules:\n  - name: any\n    actions: [rollback]\n").unwrap();
    serde_yaml::from_str(&format!(
        "backend: docker\ndry_run: false\nplaybook: {}\nnotifications:\n{notifications}",
        playbook.display()
    ))
    .unwrap()
}

/// homeostat on `port`, acting with `notifications` (YAML under the key).
async fn start(dir: &Path, port: u16, notifications: &str) -> InProcess {
    let actions = actions(dir, notifications);
    let mut config = test_config(dir);
    config.server.listen = format!("127.0.0.1:{port}").parse().unwrap();
    config.actions = Some(actions.clone());
    config
        .validate(
            Path::new("test.yaml"),
            &std::collections::HashMap::<String, String>::new(),
        )
        .unwrap();
    let executor = DockerExecutor::connect(actions.docker.clone()).await.unwrap();
    let playbook = Playbook::load(&actions.playbook).unwrap();
    InProcess::start_with(config, Credentials::default(), move |parts| {
        Responder::new(executor, parts, playbook, actions)
    })
    .await
}

fn down(status: &str, fingerprint: &str) -> Value {
    let mut body = common::notification(status, &[fingerprint]);
    body["alerts"][0]["labels"] = json!({"alertname": "ServiceDown", "container": "web-1", "service": "web"});
    body
}

/// A request a receiver got.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    authorization: Option<String>,
    body: Value,
}

/// A local HTTP receiver: records every POST; the first `fail_first` to
/// each path answer 500.
#[derive(Clone)]
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let record = Arc::clone(&got);
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let record = Arc::clone(&record);
                async move {
                    let mut got = record.lock().unwrap();
                    let path = uri.path().to_owned();
                    let before = got.iter().filter(|r| r.path == path).count();
                    got.push(Received {
                        path,
                        authorization: headers.get("authorization").map(|v| v.to_str().unwrap().to_owned()),
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    });
                    if before < fail_first {
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        axum::http::StatusCode::OK
                    }
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, got }
    }

    fn at(&self, path: &str) -> Vec<Received> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    async fn until(&self, path: &str, what: &str, check: impl Fn(&Received) -> bool) -> Received {
        eventually(what, Duration::from_secs(30), || async {
            self.at(path).into_iter().find(|r| check(r))
        })
        .await
    }
}

async fn notifications(server: &InProcess, incident: i64) -> Vec<Value> {
    let page = server
        .get_json(&format!("/api/v1/incidents/{incident}/notifications"))
        .await;
    page["notifications"].as_array().unwrap().clone()
}

/// The user's Alertmanager routes homeostat's escalation alert to their
/// team's receiver, with the incident's labels; the alert resolves with
/// the incident.
#[tokio::test]
async fn an_escalation_reaches_alertmanagers_routes_and_ends_with_the_incident() {
    let dir = tempfile::tempdir().unwrap();
    let team = Receiver::start(0).await;
    let alertmanager = Alertmanager::with_config(&format!(
        "route:\n  receiver: nobody\n  routes:\n    - matchers: ['alertname=\"HomeostatEscalation\"']\n      \
         receiver: team\n      group_by: ['homeostat_incident']\n      group_wait: 0s\n      group_interval: 1s\n\
         receivers:\n  - name: nobody\n  - name: team\n    webhook_configs:\n      - url: {}/team\n        \
         send_resolved: true\n",
        team.url
    ))
    .await;
    let port = free_port();
    let sinks = format!(
        "  refresh: 1s\n  external_url: http://127.0.0.1:{port}\n  sinks:\n    - name: team-alertmanager\n      \
         type: alertmanager\n      url: {}\n",
        alertmanager.url()
    );
    let server = start(dir.path(), port, &sinks).await;

    let incident = server.post_alert(&down("firing", "am-esc")).await;
    let firing = team
        .until("/team", "the escalation alert at the team's receiver", |r| {
            r.body["status"] == "firing"
        })
        .await;
    let alert = &firing.body["alerts"][0];
    assert_eq!(alert["labels"]["alertname"], "HomeostatEscalation", "{alert}");
    assert_eq!(alert["labels"]["homeostat_alertname"], "ServiceDown");
    assert_eq!(alert["labels"]["container"], "web-1");
    assert_eq!(alert["labels"]["homeostat_incident"], incident.to_string());
    assert!(
        alert["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("rollback"),
        "{alert}"
    );
    assert_eq!(
        alert["generatorURL"],
        format!("http://127.0.0.1:{port}/api/v1/incidents/{incident}")
    );

    server.post_alert(&down("resolved", "am-esc")).await;
    let resolved = team
        .until("/team", "the escalation alert to resolve", |r| {
            r.body["status"] == "resolved"
        })
        .await;
    assert_eq!(
        resolved.body["alerts"][0]["labels"]["homeostat_incident"],
        incident.to_string()
    );
    let journalled = notifications(&server, incident).await;
    assert_eq!(journalled.len(), 1, "{journalled:?}");
    assert_eq!(journalled[0]["sink"], "team-alertmanager");
    assert_eq!(journalled[0]["status"], "resolved", "{journalled:?}");
    assert!(journalled[0]["sent_at"].is_string());
    server.stop().await;
}

/// A Slack-format sink (its URL a secret in a file) and a webhook with an
/// Authorization header read from a file: each fails once with 500, is
/// retried, and gets a readable message; a sink that is never reachable is
/// given up after `max_attempts`. All of it is journalled, and the
/// incident's end reaches the sinks that got its escalation.
#[tokio::test]
async fn chat_and_webhook_sinks_are_retried_after_a_500_and_journalled() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(1).await;
    let slack_url = dir.path().join("slack-url");
    std::fs::write(&slack_url, format!("{}/slack/T0/B0/secret\n", receiver.url)).unwrap();
    let auth = dir.path().join("auth");
    std::fs::write(&auth, "Bearer s3cret\n").unwrap();
    let nowhere = format!("http://127.0.0.1:{}/", free_port());
    let sinks = format!(
        "  refresh: 1s\n  max_attempts: 2\n  sinks:\n    - name: chat\n      type: slack\n      url_secret: {{file: {}}}\n\
         \x20   - name: pager\n      type: webhook\n      url: {}/hook\n      headers:\n        Authorization: {{file: {}}}\n\
         \x20   - name: gone\n      type: webhook\n      url: {nowhere}\n",
        slack_url.display(),
        receiver.url,
        auth.display()
    );
    let server = start(dir.path(), free_port(), &sinks).await;

    let incident = server.post_alert(&down("firing", "chat-esc")).await;
    let chat = receiver
        .until("/slack/T0/B0/secret", "the chat message, retried", |_| {
            receiver.at("/slack/T0/B0/secret").len() >= 2
        })
        .await;
    let text = chat.body["text"].as_str().unwrap();
    assert!(
        text.contains(&format!(
            "homeostat cannot fix ServiceDown on web (incident {incident})"
        )),
        "{text}"
    );
    assert!(text.contains("*Why:*") && text.contains("rollback"), "{text}");
    let hooks = eventually("the webhook, retried", Duration::from_secs(30), || async {
        let hooks = receiver.at("/hook");
        (hooks.len() >= 2).then_some(hooks)
    })
    .await;
    assert_eq!(hooks[1].authorization.as_deref(), Some("Bearer s3cret"));
    assert_eq!(hooks[1].body["event"], "escalation");
    assert_eq!(hooks[1].body["status"], "firing");
    assert_eq!(hooks[1].body["incident"], incident);
    assert_eq!(hooks[1].body["labels"]["container"], "web-1");

    let journalled = eventually("every sink settled", Duration::from_secs(30), || async {
        let all = notifications(&server, incident).await;
        all.iter().all(|n| n["status"] != "pending").then_some(all)
    })
    .await;
    let by_sink = |name: &str| journalled.iter().find(|n| n["sink"] == name).unwrap().clone();
    for sink in ["chat", "pager"] {
        let n = by_sink(sink);
        assert_eq!(n["status"], "sent", "{n}");
        // Delivered: no failure in a row now, the last one on record.
        assert_eq!(n["attempts"], 0, "{n}");
        assert!(n["last_error"].as_str().unwrap().contains("500"), "{n}");
    }
    let metrics = server.metrics().await;
    for sink in ["chat", "pager"] {
        let retried = format!("homeostat_notification_sends_total{{sink=\"{sink}\",outcome=\"retried\"}} 1");
        assert!(metrics.contains(&retried), "{metrics}");
    }
    let gone = by_sink("gone");
    assert_eq!(gone["status"], "failed", "{gone}");
    assert_eq!(gone["attempts"], 2, "{gone}");
    assert!(
        gone["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot reach sink \"gone\""),
        "{gone}"
    );
    assert!(
        metrics.contains("homeostat_notification_sends_total{sink=\"gone\",outcome=\"failed\"} 1"),
        "{metrics}"
    );

    server.post_alert(&down("resolved", "chat-esc")).await;
    let ended = receiver
        .until("/slack/T0/B0/secret", "the chat message that it ended", |r| {
            r.body["text"].as_str().unwrap_or("").starts_with(":white_check_mark:")
        })
        .await;
    assert!(ended.body["text"].as_str().unwrap().contains("Resolved"));
    receiver
        .until("/hook", "the webhook that it ended", |r| r.body["status"] == "resolved")
        .await;
    server.stop().await;
}
