//! The reconciler against real Alertmanager and Docker: the next playbook
//! step with the README's route and Alertmanager's default timings (one
//! delivery), an alert that is gone before homeostat acts, an incident
//! Alertmanager forgets, and a rollback whose premise no longer holds.

mod common;

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::docker::{docker, image, until_serving, Service, StallingProxy, IMAGE, PREVIOUS};
use common::{eventually, free_port, test_config, Alertmanager, InProcess};
use homeostat_adapters::executor::docker::DockerExecutor;
use homeostat_adapters::executor::{Bounded, ExecError, Executor};
use homeostat_core::action::Operation;
use homeostat_core::config::{ActionsConfig, Credentials};
use homeostat_core::playbook::Playbook;
use homeostat_server::pipeline::Responder;
use serde_json::{json, Value};

/// Acting on Docker with `steps` for every alert; verified within 3 s; a
/// restart may take the last ready replica (the tests' containers are one).
fn actions(dir: &Path, steps: &str, alertmanager: Option<&str>) -> ActionsConfig {
    let playbook = dir.join("playbook.yml");
    std::fs::write(&playbook, format!("rules:\n  - name: any\n    actions: {steps}\n")).unwrap();
    let mut actions: ActionsConfig = serde_yaml::from_str(&format!(
        "backend: docker\ndry_run: false\nplaybook: {}\nverify_timeout: 3s\n\
         guard:\n  min_ready_replicas: 0\nreconcile:\n  period: 1s\n  vanish_after: 2s\n\
         docker:\n  stop_timeout_seconds: 1\n",
        playbook.display()
    ))
    .unwrap();
    actions.alertmanager_url = alertmanager.map(str::to_owned);
    actions
}

async fn start(dir: &Path, listen: Option<u16>, actions: ActionsConfig) -> InProcess {
    let mut config = test_config(dir);
    if let Some(port) = listen {
        config.server.listen = format!("127.0.0.1:{port}").parse().unwrap();
    }
    config.actions = Some(actions.clone());
    // Bounded in time, as `serve` does.
    let executor = Bounded::new(DockerExecutor::connect(actions.docker.clone()).await.unwrap(), &actions);
    let playbook = Playbook::load(&actions.playbook).unwrap();
    InProcess::start_with(config, Credentials::default(), move |parts| {
        Responder::new(executor, parts, playbook, actions)
    })
    .await
}

fn time(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap().parse().unwrap()
}

/// The README's receiver snippet, verbatim, pointed at `homeostat` (its
/// `your-default-receiver` gets a receiver that sends nowhere).
fn readme_alertmanager_config(homeostat: &str) -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = &readme[readme.find("## Alertmanager receiver").unwrap()..];
    let snippet = section.split("```yaml\n").nth(1).unwrap().split("```").next().unwrap();
    assert!(snippet.contains("continue: true"), "{snippet}");
    snippet.replace("http://127.0.0.1:9095", homeostat) + "  - name: your-default-receiver\n"
}

/// With the README's route and Alertmanager's default timings, homeostat
/// hears of the alert once (after `group_wait`, 30 s); the restart fails
/// verification (Alertmanager still has the alert), and the second step
/// follows within `verify_timeout` + 5 s with no other delivery.
#[tokio::test]
async fn the_next_step_follows_without_a_redelivery_under_default_timings() {
    image().await;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::new("rcdefault");
    let name = service.run(1, &[]);
    until_serving(&name).await;
    let port = free_port();
    let am = Alertmanager::with_config(&readme_alertmanager_config(&format!("http://127.0.0.1:{port}"))).await;
    let server = start(
        dir.path(),
        Some(port),
        actions(dir.path(), "[restart, restart]", Some(am.url())),
    )
    .await;
    docker(&["kill", &name]);
    let now = Utc::now();
    am.post_alerts(&json!([{
        "labels": {"alertname": "ServiceDown", "container": name},
        "startsAt": now.to_rfc3339(),
        "endsAt": (now + chrono::Duration::minutes(10)).to_rfc3339(),
        "generatorURL": "http://prometheus.invalid/graph",
    }]))
    .await;
    let incidents = eventually("the delivery after group_wait", Duration::from_secs(60), || async {
        let page = server.get_json("/api/v1/incidents").await;
        page["incidents"].as_array().filter(|i| !i.is_empty()).cloned()
    })
    .await;
    let incident = incidents[0]["id"].as_i64().unwrap();
    let all = eventually("the second step", Duration::from_secs(30), || async {
        let all = server.decisions(incident).await;
        (all.len() >= 2 && all[1]["executed_at"].is_string()).then_some(all)
    })
    .await;
    assert_eq!(
        (all[0]["action"].as_str(), all[0]["outcome"].as_str()),
        (Some("restart"), Some("failure")),
        "{all:?}"
    );
    assert_eq!(
        (all[1]["action"].as_str(), all[1]["verdict"].as_str()),
        (Some("restart"), Some("allow")),
        "{all:?}"
    );
    let after_action = time(&all[1]["decided_at"]) - time(&all[0]["executed_at"]);
    assert!(
        after_action <= chrono::Duration::seconds(3 + 5),
        "second step {after_action} after the first"
    );
    let incident_now = server.get_json(&format!("/api/v1/incidents/{incident}")).await;
    assert_eq!(incident_now["deliveries"], 1, "no re-delivery came: {incident_now}");
    server.stop().await;
}

/// An alert delivered after it stopped being active (here: Alertmanager
/// never had it) is not acted on: recorded `premise_gone`, escalated once;
/// Alertmanager does not report it, so its incident closes as vanished, and
/// a later firing opens a new one.
#[tokio::test]
async fn a_stale_alert_is_not_acted_on_and_its_incident_vanishes() {
    image().await;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::new("rcstale");
    let name = service.run(1, &[]);
    until_serving(&name).await;
    let started = docker(&["inspect", "--format", "{{.State.StartedAt}}", &name]);
    let am = Alertmanager::with_config("route:\n  receiver: nowhere\nreceivers:\n  - name: nowhere\n").await;
    let server = start(dir.path(), None, actions(dir.path(), "[restart]", Some(am.url()))).await;
    let alert = |starts_at: &str| {
        let mut body = common::notification("firing", &["rc-stale"]);
        body["alerts"][0]["labels"] = json!({"alertname": "ServiceDown", "container": name});
        body["alerts"][0]["startsAt"] = json!(starts_at);
        body
    };
    let incident = server.post_alert(&alert("2026-11-28T06:00:00Z")).await;
    let decision = eventually("a decision", Duration::from_secs(20), || async {
        server.decisions(incident).await.into_iter().next()
    })
    .await;
    assert_eq!(decision["verdict"], "premise_gone", "{decision}");
    assert!(
        decision["reason"].as_str().unwrap().contains("no longer active"),
        "{decision}"
    );
    let closed = eventually("the incident to vanish", Duration::from_secs(20), || async {
        let incident = server.get_json(&format!("/api/v1/incidents/{incident}")).await;
        (incident["status"] == "resolved").then_some(incident)
    })
    .await;
    assert_eq!(closed["vanished"], true, "{closed}");
    assert_eq!(
        docker(&["inspect", "--format", "{{.State.StartedAt}}", &name]),
        started,
        "restarted"
    );
    let all = server.decisions(incident).await;
    assert_eq!(all.len(), 1, "{all:?}");
    let metrics = server.metrics().await;
    assert!(metrics.contains("homeostat_escalations_total 1"), "{metrics}");
    assert!(metrics.contains("homeostat_incidents_vanished_total 1"), "{metrics}");
    let again = server.post_alert(&alert("2026-11-28T07:00:00Z")).await;
    assert_ne!(again, incident, "a new firing is a new incident");
    server.stop().await;
}

/// A bad deploy fixed before its alert arrives: the image running now was
/// deployed after the alert started, so a rollback would undo the fix — it
/// is not done (`premise_gone`). And a rollback never targets the image it
/// rolls back from.
#[tokio::test]
async fn a_rollback_undoes_only_what_the_alert_is_about() {
    image().await;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::new("rcrollback");
    let name = service.run(1, &[]);
    until_serving(&name).await;
    let docker_executor = DockerExecutor::connect(Default::default()).await.unwrap();
    docker_executor.deploy(&name, PREVIOUS).await.unwrap();
    let alert_started = Utc::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    docker_executor.deploy(&name, IMAGE).await.unwrap();

    let server = start(dir.path(), None, actions(dir.path(), "[rollback]", None)).await;
    let mut body = common::notification("firing", &["rc-rollback"]);
    body["alerts"][0]["labels"] = json!({
        "alertname": "BadDeploy",
        "compose_project": service.project,
        "compose_service": "web",
    });
    body["alerts"][0]["startsAt"] = json!(alert_started.to_rfc3339());
    let incident = server.post_alert(&body).await;
    let decision = eventually("a decision", Duration::from_secs(20), || async {
        server.decisions(incident).await.into_iter().next()
    })
    .await;
    assert_eq!(decision["verdict"], "premise_gone", "{decision}");
    assert!(
        decision["reason"].as_str().unwrap().contains("after the alert started"),
        "{decision}"
    );
    let running = docker(&["inspect", "--format", "{{.Config.Image}}", &service.containers()[0]]);
    assert_eq!(running, IMAGE);
    server.stop().await;

    // Deployed again over itself, the previous image is the running one.
    docker_executor.deploy(&service.containers()[0], IMAGE).await.unwrap();
    let rollback = Operation::RollbackComposeService {
        project: service.project.clone(),
        service: "web".into(),
    };
    let err = docker_executor.execute(&rollback).await.unwrap_err();
    assert!(matches!(err, ExecError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("nothing known good"), "{err}");
}

/// A Docker API that takes one container's restart and never answers: the
/// call is abandoned at `execute_timeout` and recorded as timed out, while
/// an incident on another container is acted on at once meanwhile.
#[tokio::test]
async fn a_stalled_docker_call_holds_up_no_other_target() {
    image().await;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::new("rcstall");
    let stalled = service.run(1, &[]);
    let other = service.run(2, &[]);
    until_serving(&stalled).await;
    until_serving(&other).await;
    let id = docker(&["inspect", "--format", "{{.Id}}", &stalled]);
    let proxy = StallingProxy::start(format!("/containers/{id}/restart")).await;
    let mut actions = actions(dir.path(), "[restart]", None);
    actions.docker.host = Some(proxy.host.clone());
    actions.execute_timeout = "11s".parse().unwrap();
    let server = start(dir.path(), None, actions).await;

    let alert = |fingerprint: &str, container: &str| {
        let mut body = common::notification("firing", &[fingerprint]);
        body["alerts"][0]["labels"] = json!({"alertname": "ServiceDown", "container": container});
        body
    };
    let stuck = server.post_alert(&alert("rc-stall", &stalled)).await;
    eventually("the stalled restart to start", Duration::from_secs(20), || async {
        server
            .decisions(stuck)
            .await
            .into_iter()
            .find(|d| d["verdict"] == "allow")
    })
    .await;
    let posted = Utc::now();
    let moving = server.post_alert(&alert("rc-other", &other)).await;
    let done = eventually("the other restart", Duration::from_secs(8), || async {
        server
            .decisions(moving)
            .await
            .into_iter()
            .find(|d| !d["result"].is_null())
    })
    .await;
    assert_eq!(done["result"], "done", "{done}");
    assert_eq!(done["detail"], format!("restarted container {other}"));
    assert!(
        time(&done["executed_at"]) - posted < chrono::Duration::seconds(5),
        "{done}"
    );
    let first = server.decisions(stuck).await;
    assert!(first[0]["result"].is_null(), "the stalled call ended: {first:?}");

    let abandoned = eventually("the stalled call to be abandoned", Duration::from_secs(20), || async {
        server
            .decisions(stuck)
            .await
            .into_iter()
            .find(|d| !d["result"].is_null())
    })
    .await;
    assert_eq!(abandoned["result"], "timed_out", "{abandoned}");
    assert!(
        abandoned["detail"]
            .as_str()
            .unwrap()
            .contains("did not answer within 11s"),
        "{abandoned}"
    );
    let after = time(&abandoned["executed_at"]) - time(&abandoned["decided_at"]);
    assert!(
        after >= chrono::Duration::seconds(11) && after < chrono::Duration::seconds(14),
        "{after}"
    );
    server.stop().await;
}

/// A rule whose restart needs approval: homeostat proposes, does nothing,
/// and acts once on approval; reject and no answer escalate, act on
/// nothing, and propose nothing again; an approval after the alert was
/// silenced meanwhile does not act (the premise is checked again).
#[tokio::test]
async fn a_proposed_action_waits_for_its_approval() {
    image().await;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::new("rcapprove");
    let names: Vec<String> = (1..=4).map(|n| service.run(n, &[])).collect();
    for name in &names {
        until_serving(name).await;
        docker(&["kill", name]);
    }
    let am = Alertmanager::with_config("route:\n  receiver: nowhere\nreceivers:\n  - name: nowhere\n").await;
    // Each alert active in Alertmanager, so that the premise holds; homeostat
    // hears of it with Alertmanager's own fingerprint.
    let mut fingerprints = Vec::new();
    for name in &names {
        am.post_alerts(&json!([{ "labels": {"alertname": "ServiceDown", "container": name} }]))
            .await;
    }
    for name in &names {
        let fingerprint = eventually("the alert in Alertmanager", Duration::from_secs(20), || async {
            am.alerts().await?.into_iter().find_map(|a| {
                (a["labels"]["container"] == name.as_str()).then(|| a["fingerprint"].as_str().unwrap().to_owned())
            })
        })
        .await;
        fingerprints.push(fingerprint);
    }
    let mut actions = actions(dir.path(), "[restart]\n    needs_approval: [restart]", Some(am.url()));
    actions.approval_timeout = "4s".parse().unwrap();
    let server = start(dir.path(), None, actions).await;
    let mut incidents = Vec::new();
    for (name, fingerprint) in names.iter().zip(&fingerprints) {
        let mut body = common::notification("firing", &[fingerprint]);
        body["alerts"][0]["labels"] = json!({"alertname": "ServiceDown", "container": name});
        incidents.push(server.post_alert(&body).await);
    }
    for &incident in &incidents {
        let proposed = eventually("a proposal", Duration::from_secs(20), || async {
            server
                .decisions(incident)
                .await
                .into_iter()
                .find(|d| d["verdict"] == "proposed")
        })
        .await;
        assert_eq!(proposed["action"], "restart", "{proposed}");
        assert_eq!(proposed["record"]["operation"]["operation"], "restart_container");
        assert!(proposed["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("homeostat approve {incident}")));
    }
    let answer = |incident: i64, verb: &'static str| {
        let request = server
            .client
            .post(server.url(&format!("/api/v1/incidents/{incident}/{verb}")))
            .json(&json!({"reason": format!("test {verb}")}));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // 0: approved, restarted once. 1: rejected. 2: never answered.
    // 3: silenced, then approved.
    am.silence("container", &names[3]).await;
    assert_eq!(answer(incidents[0], "approve").await, 200);
    assert_eq!(answer(incidents[0], "approve").await, 409, "answered twice");
    assert_eq!(answer(incidents[1], "reject").await, 200);
    assert_eq!(answer(incidents[3], "approve").await, 200);

    let done = eventually("the approved restart", Duration::from_secs(20), || async {
        server
            .decisions(incidents[0])
            .await
            .into_iter()
            .find(|d| d["result"] == "done")
    })
    .await;
    assert_eq!(done["reason"], "within every limit; approved");
    until_serving(&names[0]).await;
    let verdicts = |all: Vec<Value>| {
        all.iter()
            .map(|d| d["verdict"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let rejected = eventually("the rejection's escalation", Duration::from_secs(20), || async {
        let all = server.decisions(incidents[1]).await;
        all.iter().any(|d| d["verdict"] == "escalate").then_some(all)
    })
    .await;
    assert_eq!(verdicts(rejected.clone()), ["proposed", "escalate"]);
    assert!(
        rejected[1]["reason"]
            .as_str()
            .unwrap()
            .contains("rejected restart: test reject"),
        "{rejected:?}"
    );
    let expired = eventually("the expired proposal's escalation", Duration::from_secs(20), || async {
        let all = server.decisions(incidents[2]).await;
        all.iter().any(|d| d["verdict"] == "escalate").then_some(all)
    })
    .await;
    assert_eq!(verdicts(expired.clone()), ["proposed", "escalate"]);
    assert!(expired[1]["reason"]
        .as_str()
        .unwrap()
        .contains("no one approved restart within 4s"));
    assert_eq!(
        answer(incidents[2], "approve").await,
        409,
        "an expired proposal was approved"
    );
    let silenced = eventually("the silenced one's refusal", Duration::from_secs(20), || async {
        let all = server.decisions(incidents[3]).await;
        (all.len() >= 2).then_some(all)
    })
    .await;
    assert_eq!(verdicts(silenced.clone()), ["proposed", "refuse"], "{silenced:?}");

    // Delivered again: neither acted on nor proposed again.
    for (name, fingerprint) in names.iter().zip(&fingerprints).skip(1).take(2) {
        let mut body = common::notification("firing", &[fingerprint]);
        body["alerts"][0]["labels"] = json!({"alertname": "ServiceDown", "container": name});
        server.post_alert(&body).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(server.decisions(incidents[1]).await.len(), 2);
    assert_eq!(server.decisions(incidents[2]).await.len(), 2);
    for name in &names[1..] {
        assert_eq!(
            docker(&["inspect", "--format", "{{.State.Running}}", name]),
            "false",
            "{name} acted on"
        );
    }
    let audit = server.get_json("/api/v1/audit").await;
    let actions: Vec<&str> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["approve", "reject", "approve"], "{audit}");
    server.stop().await;
}
