//! End to end on Docker: an alert posted to homeostat restarts the right
//! container through the playbook, the guard and the Docker executor; the
//! outcome is verified and recorded; cooldowns, resolved alerts and dry-run
//! behave.

mod common;

use std::path::Path;
use std::time::Duration;

use common::docker::{docker, image, serves, until_serving, Service};
use common::{eventually, free_port, notification, test_config, Alertmanager, InProcess, Prometheus};
use homeostat_adapters::executor::docker::{DockerConfig, DockerExecutor};
use homeostat_adapters::executor::DryRun;
use homeostat_core::action::Backend;
use homeostat_core::config::{ActionsConfig, Credentials, PolicyMode};
use homeostat_core::playbook::Playbook;
use homeostat_journal::policy::JournalReader;
use homeostat_server::pipeline::Responder;
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

fn actions(dir: &Path, playbook: &str, dry_run: bool, verify: &str) -> ActionsConfig {
    let path = dir.join("playbook.yml");
    std::fs::write(&path, playbook).unwrap();
    ActionsConfig {
        backend: Backend::Docker,
        dry_run,
        playbook: path,
        target_labels: Default::default(),
        verify_timeout: verify.parse().unwrap(),
        execute_timeout: "1m".parse().unwrap(),
        approval_timeout: "15m".parse().unwrap(),
        drain_on_cordon: false,
        prometheus_url: None,
        alertmanager_url: None,
        escalation_webhook: None,
        notifications: Default::default(),
        guard: Default::default(),
        // One look at a time, so that `barrier` orders what it waits for.
        reconcile: homeostat_core::config::ReconcileConfig {
            concurrency: 1,
            ..Default::default()
        },
        policy: Default::default(),
        docker: DockerConfig {
            stop_timeout_seconds: 1,
            ..DockerConfig::default()
        },
        kubernetes: Default::default(),
    }
}

const RESTART: &str = "rules:\n  - name: down\n    matchers: ['alertname=\"ServiceDown\"']\n    actions: [restart]\n";
const RESTART_TWICE: &str =
    "rules:\n  - name: down\n    matchers: ['alertname=\"ServiceDown\"']\n    actions: [restart, restart]\n";

async fn start(dir: &Path, actions: ActionsConfig) -> InProcess {
    let mut config = test_config(dir);
    config.actions = Some(actions.clone());
    let executor = DockerExecutor::connect(actions.docker.clone()).await.unwrap();
    let playbook = Playbook::load(&actions.playbook).unwrap();
    if actions.dry_run {
        InProcess::start_with(config, Credentials::default(), move |parts| {
            Responder::new(DryRun(executor), parts, playbook, actions)
        })
        .await
    } else {
        InProcess::start_with(config, Credentials::default(), move |parts| {
            Responder::new(executor, parts, playbook, actions)
        })
        .await
    }
}

/// A webhook notification about `container` being down.
fn down(status: &str, fingerprint: &str, container: &str) -> Value {
    let mut body = notification(status, &[fingerprint]);
    body["alerts"][0]["labels"] = json!({"alertname": "ServiceDown", "container": container});
    body
}

/// Waits for the incident's first decision with this outcome.
async fn until_outcome(server: &InProcess, incident: i64, outcome: &str) -> Value {
    eventually(&format!("an outcome {outcome:?}"), Duration::from_secs(30), || async {
        server
            .decisions(incident)
            .await
            .into_iter()
            .find(|d| d["outcome"] == outcome)
    })
    .await
}

/// Waits until the pipeline has processed everything posted so far: it
/// posts an alert about a container that does not exist, whose decision
/// (`premise_gone`, escalated: the target is gone) can only come after the
/// earlier deliveries' decisions.
async fn barrier(server: &InProcess, tag: &str) {
    let incident = server
        .post_alert(&down(
            "firing",
            &format!("barrier-{tag}"),
            "homeostat-no-such-container",
        ))
        .await;
    eventually("the pipeline to catch up", Duration::from_secs(30), || async {
        server.decisions(incident).await.into_iter().next().map(|_| ())
    })
    .await;
}

#[tokio::test]
async fn an_alert_restarts_the_right_container_and_the_outcome_is_verified() {
    image().await;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::new("e2eok");
    let victim = service.run(1, &[]);
    let bystander = service.run(2, &[]);
    until_serving(&victim).await;
    until_serving(&bystander).await;
    let bystander_started = docker(&["inspect", "--format", "{{.State.StartedAt}}", &bystander]);
    let server = start(dir.path(), actions(dir.path(), RESTART, false, "30s")).await;

    docker(&["kill", &victim]);
    let incident = server.post_alert(&down("firing", "e2e-ok", &victim)).await;
    let decision = eventually("the restart to be executed", Duration::from_secs(30), || async {
        server
            .decisions(incident)
            .await
            .into_iter()
            .find(|d| d["result"] == "done")
    })
    .await;
    assert_eq!(decision["action"], "restart");
    assert_eq!(decision["rule"], "down");
    assert_eq!(decision["verdict"], "allow");
    assert_eq!(decision["target_key"], format!("docker/container/{victim}"));
    assert_eq!(decision["detail"], format!("restarted container {victim}"));
    assert_eq!(decision["record"]["operation"]["operation"], "restart_container");
    until_serving(&victim).await;
    // Only the container the alert named was touched.
    assert_eq!(
        docker(&["inspect", "--format", "{{.State.StartedAt}}", &bystander]),
        bystander_started
    );

    // Prometheus sees it up again; Alertmanager sends the resolution.
    server.post_alert(&down("resolved", "e2e-ok", &victim)).await;
    let verified = eventually("the outcome to be recorded", Duration::from_secs(30), || async {
        server
            .decisions(incident)
            .await
            .into_iter()
            .find(|d| !d["outcome"].is_null())
    })
    .await;
    assert_eq!(verified["outcome"], "success");
    let listed = server.get_json(&format!("/api/v1/incidents/{incident}")).await;
    assert_eq!(listed["last_decision"]["action"], "restart");
    assert_eq!(listed["last_decision"]["outcome"], "success");
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("homeostat_action_outcomes_total{action=\"restart\",outcome=\"success\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("homeostat_decisions_total{action=\"restart\",verdict=\"allow\"} 1"),
        "{metrics}"
    );
    // The dashboards' annotation of the action on its target.
    let annotation =
        format!("homeostat_target_actions_total{{target=\"docker/container/{victim}\",action=\"restart\"}} 1");
    assert!(metrics.contains(&annotation), "{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn a_second_alert_on_a_target_in_its_cooldown_is_deferred_once() {
    image().await;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::new("e2ecool");
    let name = service.run(1, &[]);
    until_serving(&name).await;
    let server = start(dir.path(), actions(dir.path(), RESTART_TWICE, false, "1s")).await;
    docker(&["kill", &name]);
    let first = server.post_alert(&down("firing", "e2e-cool-first", &name)).await;
    until_outcome(&server, first, "failure").await;
    // Another alert on the same container, inside the cooldown the first
    // restart started (which holds back other incidents, not the first's
    // own next step), delivered four times.
    let incident = server.post_alert(&down("firing", "e2e-cool", &name)).await;
    for _ in 0..3 {
        server.post_alert(&down("firing", "e2e-cool", &name)).await;
    }
    barrier(&server, "cool").await;
    let all = server.decisions(incident).await;
    let executed = all.iter().filter(|d| d["result"] == "done").count();
    assert_eq!(executed, 0, "{all:?}");
    let deferred = &all[0];
    assert_eq!(deferred["verdict"], "defer");
    assert_eq!(deferred["record"]["guard"]["verdict"]["limit"], "cooldown");
    assert!(
        deferred["reason"].as_str().unwrap().contains("cooldown 5m"),
        "{deferred}"
    );
    // Three re-deliveries, one record: a deferral is not written again and again.
    assert_eq!(all.len(), 1, "{all:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_resolved_alert_never_leads_to_an_action() {
    image().await;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::new("e2eres");
    let name = service.run(1, &[]);
    until_serving(&name).await;
    let server = start(dir.path(), actions(dir.path(), RESTART, false, "30s")).await;
    let before = docker(&["inspect", "--format", "{{.State.StartedAt}}", &name]);
    let incident = server.post_alert(&down("resolved", "e2e-res", &name)).await;
    // A firing delivery after it, for another incident, shows the pipeline has moved past the first.
    docker(&["kill", &name]);
    let other = server.post_alert(&down("firing", "e2e-res-2", &name)).await;
    eventually("the later incident to be acted on", Duration::from_secs(30), || async {
        server
            .decisions(other)
            .await
            .into_iter()
            .find(|d| d["result"] == "done")
    })
    .await;
    assert!(
        server.decisions(incident).await.is_empty(),
        "a resolved alert was acted on"
    );
    assert_ne!(before, docker(&["inspect", "--format", "{{.State.StartedAt}}", &name]));
    server.stop().await;
}

#[tokio::test]
async fn dry_run_records_exactly_what_it_would_do_and_does_nothing() {
    image().await;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::new("e2edry");
    let name = service.run(1, &[]);
    until_serving(&name).await;
    let server = start(dir.path(), actions(dir.path(), RESTART, true, "30s")).await;
    docker(&["kill", &name]);
    let incident = server.post_alert(&down("firing", "e2e-dry", &name)).await;
    let decision = eventually("the dry-run decision", Duration::from_secs(30), || async {
        server
            .decisions(incident)
            .await
            .into_iter()
            .find(|d| !d["result"].is_null())
    })
    .await;
    assert_eq!(decision["result"], "dry_run");
    assert_eq!(decision["dry_run"], true);
    let detail = decision["detail"].as_str().unwrap();
    assert!(detail.starts_with("dry run: would perform "), "{detail}");
    assert!(
        detail.contains("\"restart_container\"") && detail.contains(&name),
        "{detail}"
    );
    assert!(!serves(&name).await, "dry run restarted the container");
    assert_eq!(docker(&["inspect", "--format", "{{.State.Running}}", &name]), "false");
    server.stop().await;
}

/// The first verdict of each of `alerts` (container index, fingerprint),
/// posted in order to a homeostat acting (or in dry run) on `names` with a
/// budget of 2 actions.
async fn first_verdicts(dir: &Path, names: &[String], alerts: &[(usize, &str)], dry_run: bool) -> Vec<String> {
    let mut config = actions(dir, RESTART, dry_run, "30s");
    config.guard.budget.max_actions = 2;
    config.guard.max_concurrent = 10;
    let server = start(dir, config).await;
    let mut verdicts = Vec::new();
    for (index, fingerprint) in alerts {
        let incident = server.post_alert(&down("firing", fingerprint, &names[*index])).await;
        let first = eventually("a decision", Duration::from_secs(30), || async {
            server.decisions(incident).await.into_iter().next()
        })
        .await;
        verdicts.push(format!(
            "{} {}",
            first["verdict"].as_str().unwrap(),
            first["reason"].as_str().unwrap()
        ));
    }
    server.stop().await;
    verdicts
}

/// Dry run counts its would-be actions as acting would count the real
/// ones (budget, cooldown, in flight): the same alerts get the same
/// verdicts, for the same reasons, dry or acting.
#[tokio::test]
async fn dry_run_and_acting_give_the_same_verdicts() {
    image().await;
    let service = Service::new("e2esame");
    let names: Vec<String> = (1..=3).map(|n| service.run(n, &[])).collect();
    for name in &names {
        until_serving(name).await;
        docker(&["kill", name]);
    }
    // Three containers, then a second alert on the first: two allowed (the
    // budget), the third deferred by the budget, the fourth by the cooldown.
    let alerts = [(0, "same-a"), (1, "same-b"), (2, "same-c"), (0, "same-a2")];
    let dry = tempfile::tempdir().unwrap();
    let dry_verdicts = first_verdicts(dry.path(), &names, &alerts, true).await;
    let real = tempfile::tempdir().unwrap();
    let real_verdicts = first_verdicts(real.path(), &names, &alerts, false).await;
    let kinds: Vec<&str> = real_verdicts.iter().map(|v| v.split(' ').next().unwrap()).collect();
    assert_eq!(kinds, ["allow", "allow", "defer", "defer"], "{real_verdicts:#?}");
    // The reasons name times (the budget's window, the cooldown's end): compare their words.
    let words = |verdicts: &[String]| -> Vec<String> {
        verdicts
            .iter()
            .map(|v| {
                v.split(' ')
                    .filter(|w| !w.starts_with("20"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    };
    assert_eq!(words(&dry_verdicts), words(&real_verdicts));
}

#[tokio::test]
async fn an_alert_silenced_in_alertmanager_is_not_acted_on() {
    image().await;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::new("e2esil");
    let name = service.run(1, &[]);
    until_serving(&name).await;
    // Alertmanager's own deliveries go nowhere here; the test delivers to homeostat itself.
    let am = Alertmanager::start("http://127.0.0.1:9/", "").await;
    let labels = json!({"alertname": "ServiceDown", "container": name});
    am.post_alerts(&json!([{ "labels": labels }])).await;
    am.silence("alertname", "ServiceDown").await;
    let fingerprint = eventually("Alertmanager to silence the alert", Duration::from_secs(20), || async {
        let alert = am.alerts().await?.first()?.clone();
        let silenced = alert["status"]["silencedBy"].as_array().is_some_and(|s| !s.is_empty());
        silenced.then(|| alert["fingerprint"].as_str().unwrap().to_owned())
    })
    .await;

    let mut config = actions(dir.path(), RESTART, false, "30s");
    config.alertmanager_url = Some(am.url().to_owned());
    let server = start(dir.path(), config).await;
    docker(&["kill", &name]);
    let incident = server.post_alert(&down("firing", &fingerprint, &name)).await;
    let decision = eventually("the refusal", Duration::from_secs(30), || async {
        server.decisions(incident).await.into_iter().next()
    })
    .await;
    assert_eq!(decision["verdict"], "refuse");
    assert_eq!(decision["reason"], "the alert is silenced in Alertmanager");
    assert_eq!(docker(&["inspect", "--format", "{{.State.Running}}", &name]), "false");
    server.stop().await;
}

/// A local receiver for escalation notices: its URL, and the notices it got.
/// The next escalation notice about `incident`; notices about other
/// incidents (the barriers', whose containers do not exist) are skipped.
async fn notice_about(received: &mut UnboundedReceiver<Value>, incident: i64) -> Value {
    let next = async {
        loop {
            let notice = received.recv().await.unwrap();
            if notice["incident"] == incident {
                return notice;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), next).await.unwrap()
}

/// Whether another notice about `incident` has arrived.
fn another_notice_about(received: &mut UnboundedReceiver<Value>, incident: i64) -> bool {
    std::iter::from_fn(|| received.try_recv().ok()).any(|notice| notice["incident"] == incident)
}

async fn escalation_receiver() -> (String, UnboundedReceiver<Value>) {
    let (notices, received) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let app = axum::Router::new().route(
        "/escalate",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let notices = notices.clone();
            async move {
                let _ = notices.send(body);
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/escalate", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (hook, received)
}

/// What an incident escalated after a failed restart left.
struct Escalated {
    server: InProcess,
    incident: i64,
    /// The first escalation notice.
    notice: Value,
    /// Where any further notice would arrive.
    received: UnboundedReceiver<Value>,
    _service: Service,
}

/// A killed container (so a restart takes no capacity away), `playbook`
/// starting with a restart that then fails verification (the alert stays
/// firing), three more deliveries of the alert, and the first escalation.
async fn escalated_after_a_failed_restart(dir: &Path, tag: &str, playbook: &str) -> Escalated {
    image().await;
    let service = Service::new(&format!("e2e{tag}"));
    let name = service.run(1, &[]);
    until_serving(&name).await;
    let (hook, mut received) = escalation_receiver().await;
    let mut config = actions(dir, playbook, false, "1s");
    config.escalation_webhook = Some(hook);
    let server = start(dir, config).await;
    docker(&["kill", &name]);
    let fingerprint = format!("e2e-{tag}");
    let incident = server.post_alert(&down("firing", &fingerprint, &name)).await;
    until_outcome(&server, incident, "failure").await;
    for _ in 0..3 {
        server.post_alert(&down("firing", &fingerprint, &name)).await;
    }
    barrier(&server, tag).await;
    let notice = notice_about(&mut received, incident).await;
    Escalated {
        server,
        incident,
        notice,
        received,
        _service: service,
    }
}

/// An alert about a container that no longer exists: nothing is left to act
/// on, so `premise_gone` (the target is gone), escalated at once rather than
/// refused and escalated only after `reconcile.escalate_after`.
#[tokio::test]
async fn an_alert_on_a_target_gone_is_escalated_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, mut received) = escalation_receiver().await;
    let mut config = actions(dir.path(), RESTART, false, "30s");
    config.escalation_webhook = Some(hook);
    let server = start(dir.path(), config).await;
    let incident = server
        .post_alert(&down("firing", "e2e-gone", "homeostat-gone-container"))
        .await;
    let decision = first_decision(&server, incident).await;
    assert_eq!(
        (decision["action"].as_str(), decision["verdict"].as_str()),
        (Some("restart"), Some("premise_gone")),
        "{decision}"
    );
    assert!(
        decision["reason"].as_str().unwrap().starts_with("target gone"),
        "{decision}"
    );
    let notice = notice_about(&mut received, incident).await;
    assert_eq!(notice["reason"], decision["reason"], "{notice}");
    server.stop().await;
}

#[tokio::test]
async fn an_exhausted_playbook_escalates_to_the_webhook_once() {
    let dir = tempfile::tempdir().unwrap();
    let Escalated {
        server,
        incident,
        notice,
        mut received,
        ..
    } = escalated_after_a_failed_restart(dir.path(), "esc", RESTART).await;
    assert_eq!(notice["incident"], incident);
    assert_eq!(
        notice["reason"],
        "all 1 actions of rule \"down\" failed; escalating to a human"
    );
    let all = eventually("the escalation to be recorded", Duration::from_secs(10), || async {
        let all = server.decisions(incident).await;
        all.iter().any(|d| d["verdict"] == "escalate").then_some(all)
    })
    .await;
    assert_eq!(all.iter().filter(|d| d["verdict"] == "escalate").count(), 1, "{all:?}");
    assert!(
        !another_notice_about(&mut received, incident),
        "escalated more than once"
    );
    server.stop().await;
}

/// A step that cannot be carried out is no silent dead end: restart fails,
/// the next step (rollback) cannot be planned on a container outside
/// Compose, and the incident is escalated once, with what was tried.
#[tokio::test]
async fn an_unplannable_step_escalates_once_with_what_was_tried() {
    let dir = tempfile::tempdir().unwrap();
    let playbook =
        "rules:\n  - name: down\n    matchers: ['alertname=\"ServiceDown\"']\n    actions: [restart, rollback]\n";
    let Escalated {
        server,
        incident,
        notice,
        mut received,
        ..
    } = escalated_after_a_failed_restart(dir.path(), "unplannable", playbook).await;
    assert_eq!(notice["incident"], incident);
    assert!(notice["reason"].as_str().unwrap().contains("rollback"), "{notice}");
    assert_eq!(notice["tried"].as_array().map(Vec::len), Some(1), "{notice}");
    assert_eq!(notice["tried"][0]["action"], "restart", "{notice}");
    assert_eq!(notice["tried"][0]["result"], "done", "{notice}");
    assert_eq!(notice["tried"][0]["outcome"], "failure", "{notice}");
    let all = server.decisions(incident).await;
    let unplannable: Vec<&Value> = all.iter().filter(|d| d["verdict"] == "unplannable").collect();
    assert_eq!(unplannable.len(), 1, "recorded once: {all:?}");
    assert_eq!(unplannable[0]["action"], "rollback");
    // Repeated deliveries neither act nor escalate again.
    assert_eq!(all.iter().filter(|d| d["verdict"] == "allow").count(), 1, "{all:?}");
    assert!(
        !another_notice_about(&mut received, incident),
        "escalated more than once"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_resolved_alert_whose_health_query_never_holds_is_a_failure() {
    image().await;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::new("e2ehealth");
    // One container per case, so the cooldown on one does not defer the other.
    let names = [service.run(1, &[]), service.run(2, &[])];
    for name in &names {
        until_serving(name).await;
    }
    // Prometheus scrapes an address where nothing listens: up == 0 there.
    let nowhere: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let prometheus = Prometheus::start(&[nowhere], &[]).await;
    eventually("Prometheus to have scraped", Duration::from_secs(30), || async {
        (!prometheus.query("up").await.is_empty()).then_some(())
    })
    .await;
    let playbook = r#"rules:
  - name: healthy
    matchers: ['alertname="ServiceDown"', 'check="down"']
    actions: [restart]
    health_query: 'up{instance="{{ $labels.instance }}"} == 0'
  - name: unhealthy
    matchers: ['alertname="ServiceDown"', 'check="up"']
    actions: [restart]
    health_query: 'up{instance="{{ $labels.instance }}"} == 1'
"#;
    let mut config = actions(dir.path(), playbook, false, "3s");
    config.prometheus_url = Some(prometheus.url().to_owned());
    let server = start(dir.path(), config).await;

    let mut outcomes = Vec::new();
    for (check, name) in ["down", "up"].into_iter().zip(&names) {
        docker(&["kill", name]);
        let mut body = down("firing", &format!("e2e-health-{check}"), name);
        body["alerts"][0]["labels"]["check"] = check.into();
        body["alerts"][0]["labels"]["instance"] = nowhere.to_string().into();
        let incident = server.post_alert(&body).await;
        eventually("the restart", Duration::from_secs(30), || async {
            server
                .decisions(incident)
                .await
                .into_iter()
                .find(|d| d["result"] == "done")
        })
        .await;
        body["status"] = "resolved".into();
        body["alerts"][0]["status"] = "resolved".into();
        body["alerts"][0]["endsAt"] = "2026-11-28T06:10:00Z".into();
        server.post_alert(&body).await;
        let verified = eventually("the outcome", Duration::from_secs(30), || async {
            server
                .decisions(incident)
                .await
                .into_iter()
                .find(|d| !d["outcome"].is_null())
        })
        .await;
        outcomes.push(verified["outcome"].as_str().unwrap().to_owned());
        until_serving(name).await;
    }
    assert_eq!(outcomes, ["success", "failure"]);
    server.stop().await;
}

#[tokio::test]
async fn an_action_interrupted_by_a_crash_is_escalated_not_repeated() {
    use homeostat_journal::decisions::NewDecision;
    use homeostat_journal::JournalMetrics;
    image().await;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::new("e2ecrash");
    let name = service.run(1, &[]);
    until_serving(&name).await;
    let config = actions(dir.path(), RESTART, false, "30s");
    // Before the crash: the delivery was journalled, the restart decided and
    // recorded, and homeostat died before the executor answered.
    let journal_config = test_config(dir.path()).journal;
    let incident = {
        let (journal, writer) = homeostat_journal::open(&journal_config, JournalMetrics::default()).unwrap();
        let (queue, pipeline) = tokio::sync::mpsc::channel(1);
        let slot = queue.reserve_owned().await.unwrap();
        drop(pipeline);
        let message = serde_json::from_value(down("firing", "e2e-crash", &name)).unwrap();
        let delivery = journal.ingest(message, chrono::Utc::now(), slot).await.unwrap();
        let incident = delivery.events[0].incident_id;
        journal.mark_processed(delivery.id).await.unwrap();
        journal
            .record_decision(NewDecision {
                incident_id: incident,
                decided_at: chrono::Utc::now(),
                target_key: format!("docker/container/{name}"),
                action: "restart".into(),
                rule: Some("down".into()),
                attempt: 0,
                verdict: homeostat_core::decision::Verdict::Allow,
                reason: "within every limit".into(),
                record: json!({}),
                dry_run: false,
            })
            .await
            .unwrap();
        drop(journal);
        writer.join();
        incident
    };
    let server = start(dir.path(), config).await;
    docker(&["kill", &name]);
    let again = server.post_alert(&down("firing", "e2e-crash", &name)).await;
    assert_eq!(again, incident);
    barrier(&server, "crash").await;
    let all = server.decisions(incident).await;
    assert_eq!(all[0]["result"], "interrupted", "{all:?}");
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[1]["verdict"], "escalate");
    assert!(all[1]["reason"].as_str().unwrap().contains("interrupted"), "{all:?}");
    assert_eq!(
        docker(&["inspect", "--format", "{{.State.Running}}", &name]),
        "false",
        "restarted blindly"
    );
    server.stop().await;
}

/// Kills `name`, alerts on it, and waits until homeostat's restart of it has returned.
async fn restarted(server: &InProcess, name: &str, fingerprint: &str) -> i64 {
    docker(&["kill", name]);
    let incident = server.post_alert(&down("firing", fingerprint, name)).await;
    eventually("the restart to be executed", Duration::from_secs(30), || async {
        server
            .decisions(incident)
            .await
            .into_iter()
            .find(|d| d["result"] == "done")
    })
    .await;
    incident
}

/// Resolves the alert on `name` and waits for the restart's verified decision.
async fn resolved(server: &InProcess, incident: i64, name: &str, fingerprint: &str) -> Value {
    until_serving(name).await;
    server.post_alert(&down("resolved", fingerprint, name)).await;
    eventually("the outcome to be recorded", Duration::from_secs(30), || async {
        server
            .decisions(incident)
            .await
            .into_iter()
            .find(|d| !d["outcome"].is_null())
    })
    .await
}

/// Credit only for what the action caused: in learn mode, a restart
/// followed by the alert resolving is a success and a lesson; the same
/// with the container's memory limit changed by hand between the restart
/// and the resolution is confounded — recorded with the change, counted,
/// and not learned from.
#[tokio::test]
async fn a_recovery_that_came_with_an_outside_change_is_confounded_and_not_learned() {
    image().await;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::new("e2econf");
    let plain = service.run(1, &[]);
    let changed = service.run(2, &[]);
    until_serving(&plain).await;
    until_serving(&changed).await;
    let mut config = actions(dir.path(), RESTART, false, "30s");
    config.policy.mode = PolicyMode::Learn;
    config.policy.learning.explore = false;
    let server = start(dir.path(), config).await;
    let journal = dir.path().join("journal.db");
    let rewards = || JournalReader::open(&journal).unwrap().rewards().unwrap();

    let incident = restarted(&server, &plain, "e2e-conf-plain").await;
    let success = resolved(&server, incident, &plain, "e2e-conf-plain").await;
    assert_eq!(success["outcome"], "success", "{success:#}");
    assert!(success["record"]["outside_changes"].is_null(), "{success:#}");
    eventually("the success to be learned", Duration::from_secs(30), || async {
        rewards().into_iter().find(|r| r.decision_id == success["id"])
    })
    .await;
    let revision = JournalReader::open(&journal)
        .unwrap()
        .policy()
        .unwrap()
        .unwrap()
        .revision;

    let incident = restarted(&server, &changed, "e2e-conf-changed").await;
    docker(&["update", "--memory", "200m", "--memory-swap", "200m", &changed]);
    let confounded = resolved(&server, incident, &changed, "e2e-conf-changed").await;
    assert_eq!(confounded["outcome"], "confounded", "{confounded:#}");
    assert_eq!(confounded["action"], "restart");
    assert_eq!(confounded["record"]["policy"]["acted"], true, "{confounded:#}");
    let outside = confounded["record"]["outside_changes"].as_array().unwrap();
    assert_eq!(outside.len(), 1, "{confounded:#}");
    let change = outside[0].as_str().unwrap();
    assert!(
        change.starts_with(&format!(
            "container {changed}: limits or restart policy changed (docker update) at "
        )),
        "{change}"
    );
    // The incident's story names the change beside the outcome.
    let args = [
        "incident".to_owned(),
        incident.to_string(),
        "--url".into(),
        server.url(""),
    ];
    let timeline = tokio::task::spawn_blocking(move || common::homeostat_ok(&args))
        .await
        .unwrap();
    assert!(
        timeline.contains(&format!("verified: confounded (changed from outside: {change})")),
        "{timeline}"
    );
    let metrics = server.metrics().await;
    for outcome in ["success", "confounded"] {
        let counted = format!("homeostat_action_outcomes_total{{action=\"restart\",outcome=\"{outcome}\"}} 1");
        assert!(metrics.contains(&counted), "{counted} not in {metrics}");
    }
    // A clean stop waits for verifications, and so for any lesson they learn.
    server.stop().await;
    let learned: Vec<i64> = rewards().iter().map(|r| r.decision_id).collect();
    assert_eq!(
        learned,
        [success["id"].as_i64().unwrap()],
        "the confounded outcome was learned"
    );
    let stored = JournalReader::open(&journal).unwrap().policy().unwrap().unwrap();
    assert_eq!(stored.revision, revision, "the learned state moved");
}

const SCALE_OUT: &str =
    "rules:\n  - name: latency\n    matchers: ['alertname=\"HighLatencyP99\"']\n    actions: [scale_out, restart]\n";

/// A webhook notification of one alert with `labels`.
fn alert_with(status: &str, fingerprint: &str, labels: Value) -> Value {
    let mut body = notification(status, &[fingerprint]);
    body["alerts"][0]["labels"] = labels;
    body
}

/// A webhook notification of HighLatencyP99 on `service`'s Compose service `web`.
fn slow(status: &str, fingerprint: &str, service: &Service) -> Value {
    let labels = json!({"alertname": "HighLatencyP99", "compose_project": service.project, "compose_service": "web"});
    alert_with(status, fingerprint, labels)
}

/// A scale-out whose clone would serve nothing (the service publishes a
/// fixed host port) is unplannable, decided before anything is created,
/// and escalated once; the playbook's next step (a restart of a serving
/// replica) is not taken, as it would be after a failed action.
#[tokio::test]
async fn a_scale_out_no_clone_could_serve_is_unplannable_and_escalated_once() {
    image().await;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::new("e2eunfit");
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:9095");
    let name = service.run(1, &["-p", &publish]);
    until_serving(&name).await;
    let started = docker(&["inspect", "--format", "{{.State.StartedAt}}", &name]);
    let (hook, mut received) = escalation_receiver().await;
    let mut config = actions(dir.path(), SCALE_OUT, false, "30s");
    config.escalation_webhook = Some(hook);
    let server = start(dir.path(), config).await;

    let incident = server.post_alert(&slow("firing", "e2e-unfit", &service)).await;
    let decision = first_decision(&server, incident).await;
    assert_eq!(decision["action"], "scale_out", "{decision}");
    assert_eq!(decision["verdict"], "unplannable", "{decision}");
    let reason = decision["reason"].as_str().unwrap();
    let expected = format!(
        "a clone of {}/web would not serve: it publishes 127.0.0.1:{port}\u{2192}9095, a fixed host port a clone \
         cannot share",
        service.project
    );
    assert!(reason.starts_with(&expected), "{reason}");
    assert!(decision["result"].is_null(), "{decision}");
    let notice = notice_about(&mut received, incident).await;
    assert_eq!(notice["reason"], reason);

    // Delivered again: nothing more is decided, done or told.
    for _ in 0..2 {
        server.post_alert(&slow("firing", "e2e-unfit", &service)).await;
    }
    barrier(&server, "unfit").await;
    let all = server.decisions(incident).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(service.containers(), vec![name.clone()]);
    assert_eq!(docker(&["inspect", "--format", "{{.State.StartedAt}}", &name]), started);
    assert!(
        !another_notice_about(&mut received, incident),
        "escalated more than once"
    );
    server.stop().await;
}

/// The scale-out of `service` (reached by a network alias) for one
/// incident and, once it resolved, the scale-in homeostat decides on its
/// own: returns that decision.
async fn scaled_out_and_back(dir: &Path, service: &Service, fingerprint: &str, dry_run: bool) -> Value {
    let server = start(dir, actions(dir, SCALE_OUT, dry_run, "30s")).await;
    let incident = server.post_alert(&slow("firing", fingerprint, service)).await;
    let acted = eventually("the scale-out", Duration::from_secs(30), || async {
        server
            .decisions(incident)
            .await
            .into_iter()
            .find(|d| !d["result"].is_null())
    })
    .await;
    assert_eq!(acted["action"], "scale_out", "{acted}");
    assert_eq!(acted["result"], if dry_run { "dry_run" } else { "done" }, "{acted}");
    let clones = service.containers().len();
    assert_eq!(clones, if dry_run { 1 } else { 2 }, "{:?}", service.containers());

    server.post_alert(&slow("resolved", fingerprint, service)).await;
    let retired = eventually("the scale-in after resolution", Duration::from_secs(30), || async {
        server
            .decisions(incident)
            .await
            .into_iter()
            .find(|d| d["action"] == "scale_in" && !d["result"].is_null())
    })
    .await;
    assert_eq!(retired["verdict"], "allow", "{retired}");
    assert_eq!(
        retired["reason"],
        format!("incident {incident} resolved: removing the replica homeostat added for it")
    );
    assert_eq!(retired["record"]["retires"], acted["id"], "{retired}");
    assert_eq!(retired["record"]["operation"]["operation"], "remove_added_replica");
    // Delivered again (a late duplicate): removed once.
    server.post_alert(&slow("resolved", fingerprint, service)).await;
    barrier(&server, fingerprint).await;
    let scale_ins = server
        .decisions(incident)
        .await
        .into_iter()
        .filter(|d| d["action"] == "scale_in")
        .count();
    assert_eq!(scale_ins, 1);
    server.stop().await;
    retired
}

/// A clone homeostat added for an incident serves while it fires and is
/// removed once it resolved, by a `scale_in` decision of its own.
#[tokio::test]
async fn the_replica_added_for_an_incident_is_removed_when_it_resolves() {
    image().await;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::new("e2escale");
    let aliased = service.aliased();
    let first = service.run(1, &aliased.iter().map(String::as_str).collect::<Vec<_>>());
    until_serving(&first).await;
    let retired = scaled_out_and_back(dir.path(), &service, "e2e-scale", false).await;
    assert_eq!(retired["result"], "done", "{retired}");
    assert_eq!(retired["outcome"], "success", "{retired}");
    let detail = retired["detail"].as_str().unwrap();
    assert!(detail.contains("which homeostat added"), "{detail}");
    assert_eq!(service.containers(), vec![first]);
}

/// In dry run the scale-in is recorded as it would be done; nothing is.
#[tokio::test]
async fn dry_run_records_the_scale_in_it_would_do_after_resolution() {
    image().await;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::new("e2escaledry");
    let aliased = service.aliased();
    let first = service.run(1, &aliased.iter().map(String::as_str).collect::<Vec<_>>());
    until_serving(&first).await;
    let retired = scaled_out_and_back(dir.path(), &service, "e2e-scale-dry", true).await;
    assert_eq!(retired["result"], "dry_run", "{retired}");
    assert_eq!(retired["dry_run"], true, "{retired}");
    let detail = retired["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("dry run: would perform ") && detail.contains("remove_added_replica"),
        "{detail}"
    );
    assert_eq!(service.containers(), vec![first]);
}

/// A caller's latency alert that Alertmanager inhibits (the demo's rule:
/// its dependency fails) is deferred, not acted on; once the inhibition
/// lifts and it still fires, it is.
#[tokio::test]
async fn an_alert_alertmanager_inhibits_is_deferred_until_the_inhibition_lifts() {
    image().await;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::new("e2einh");
    let name = service.run(1, &[]);
    until_serving(&name).await;
    // Down, so that the guard would allow a restart: what holds it back is the inhibition.
    docker(&["kill", &name]);
    // The demo's Alertmanager configuration, its own deliveries going nowhere:
    // the test delivers to homeostat itself.
    let am = Alertmanager::with_config(&homeostat_demo::stack::alertmanager_config(9)).await;
    let latency = json!({"alertname": "HighLatencyP99", "service": "caller", "container": name});
    let upstream = json!({"alertname": "UpstreamErrors", "service": "caller"});
    am.post_alerts(&json!([{ "labels": upstream }, { "labels": latency }]))
        .await;
    let inhibited = |alerts: Vec<Value>| {
        alerts
            .into_iter()
            .find(|a| a["labels"]["alertname"] == "HighLatencyP99")
            .filter(|a| a["status"]["inhibitedBy"].as_array().is_some_and(|i| !i.is_empty()))
    };
    let alert = eventually("Alertmanager to inhibit the alert", Duration::from_secs(20), || async {
        inhibited(am.alerts().await?)
    })
    .await;
    let fingerprint = alert["fingerprint"].as_str().unwrap().to_owned();

    let playbook =
        "rules:\n  - name: latency\n    matchers: ['alertname=\"HighLatencyP99\"']\n    actions: [restart]\n";
    let mut config = actions(dir.path(), playbook, false, "30s");
    config.alertmanager_url = Some(am.url().to_owned());
    let server = start(dir.path(), config).await;
    let incident = server
        .post_alert(&alert_with("firing", &fingerprint, latency.clone()))
        .await;
    let decision = eventually("the deferral", Duration::from_secs(30), || async {
        server.decisions(incident).await.into_iter().next()
    })
    .await;
    assert_eq!(decision["verdict"], "defer", "{decision}");
    let reason = decision["reason"].as_str().unwrap();
    assert!(
        reason.contains("inhibited in Alertmanager by UpstreamErrors ("),
        "{reason}"
    );
    assert!(decision["result"].is_null(), "{decision}");
    assert_eq!(docker(&["inspect", "--format", "{{.State.Running}}", &name]), "false");

    // The dependency recovers; the caller's alert still fires and is delivered again.
    let now = chrono::Utc::now().to_rfc3339();
    am.post_alerts(&json!([{ "labels": upstream, "endsAt": now }])).await;
    eventually("the inhibition to lift", Duration::from_secs(20), || async {
        let alerts = am.alerts().await?;
        let still = alerts.iter().any(|a| a["labels"]["alertname"] == "HighLatencyP99");
        (still && inhibited(alerts).is_none()).then_some(())
    })
    .await;
    server.post_alert(&alert_with("firing", &fingerprint, latency)).await;
    let acted = eventually("the restart", Duration::from_secs(30), || async {
        server
            .decisions(incident)
            .await
            .into_iter()
            .find(|d| d["result"] == "done")
    })
    .await;
    assert_eq!(acted["action"], "restart", "{acted}");
    until_serving(&name).await;
    server.stop().await;
}

const REPAIR: &str =
    "rules:\n  - name: down\n    matchers: ['alertname=\"ServiceDown\"']\n    actions: [repair, restart]\n";

/// The first decision on `incident`.
async fn first_decision(server: &InProcess, incident: i64) -> Value {
    eventually("the decision", Duration::from_secs(30), || async {
        server.decisions(incident).await.into_iter().next()
    })
    .await
}

/// A container detached from its network after it ran healthy is repaired
/// from the spec it ran healthy with, not restarted into the same drift:
/// the decision names the drift, and the container is on its network with
/// its alias again. Without drift, the rule's repair is passed over.
#[tokio::test]
async fn drift_is_repaired_from_the_known_good_spec_and_named() {
    image().await;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::new("e2erepair");
    let aliased = service.aliased();
    let name = service.run(1, &aliased.iter().map(String::as_str).collect::<Vec<_>>());
    until_serving(&name).await;
    let mut config = actions(dir.path(), REPAIR, false, "30s");
    config.docker.known_good_after = "2s".parse().unwrap();
    let server = start(dir.path(), config).await;
    let journal = test_config(dir.path()).journal.path;
    let instance = format!("docker/container/{name}");
    eventually(
        "the known good spec to be recorded",
        Duration::from_secs(30),
        || async {
            let reader = JournalReader::open(&journal).ok()?;
            reader.known_good(&instance).unwrap()
        },
    )
    .await;

    docker(&["network", "disconnect", &service.network(), &name]);
    let incident = server.post_alert(&down("firing", "e2e-drift", &name)).await;
    let decision = first_decision(&server, incident).await;
    assert_eq!(
        (&decision["action"], &decision["verdict"]),
        (&json!("repair"), &json!("allow")),
        "{decision}"
    );
    let recorded = JournalReader::open(&journal).unwrap().decisions(incident).unwrap();
    let drift = &recorded[0].new.record["condition"]["drift"];
    let expected = format!("networks: none, was {} (aliases ", service.network());
    assert!(drift[0].as_str().is_some_and(|d| d.starts_with(&expected)), "{drift}");
    assert_eq!(recorded[0].new.record["operation"]["operation"], "repair_container");
    until_serving(&name).await;
    assert!(!service.address(&name).is_empty(), "not on its network again");
    server.post_alert(&down("resolved", "e2e-drift", &name)).await;
    until_outcome(&server, incident, "success").await;

    // No drift: the rule's repair does not apply; its restart does.
    docker(&["kill", &name]);
    let incident = server.post_alert(&down("firing", "e2e-nodrift", &name)).await;
    let decision = first_decision(&server, incident).await;
    assert_eq!(decision["action"], "restart", "{decision}");
    server.stop().await;
}

/// A container stopped through the Docker API (exit 0) is left alone,
/// recorded as stopped deliberately; one the runtime's restart policy has
/// restarted since its fault began is not restarted a second time.
#[tokio::test]
async fn a_deliberate_stop_is_left_alone_and_the_runtimes_restart_not_repeated() {
    image().await;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::new("e2eintent");
    let stopped = service.run(1, &[]);
    let restarting = service.run(2, &["--restart", "unless-stopped"]);
    until_serving(&stopped).await;
    until_serving(&restarting).await;
    let mut config = actions(dir.path(), RESTART, false, "30s");
    // One replica, serving again once the runtime restarted it: the guard
    // would refuse taking it away before the premise is read.
    config.guard.min_ready_replicas = 0;
    let server = start(dir.path(), config).await;

    docker(&["stop", "-t", "10", &stopped]);
    let incident = server.post_alert(&down("firing", "e2e-stopped", &stopped)).await;
    let decision = first_decision(&server, incident).await;
    assert_eq!(decision["verdict"], "notify", "{decision}");
    let reason = decision["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("stopped deliberately: container") && reason.contains("left alone"),
        "{reason}"
    );
    assert_eq!(
        docker(&["inspect", "--format", "{{.State.Running}}", &stopped]),
        "false"
    );

    // Killed from the host: the runtime restarts it.
    let pid = docker(&["inspect", "--format", "{{.State.Pid}}", &restarting]);
    assert!(std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap()
        .success());
    eventually("the restart policy to restart it", Duration::from_secs(30), || async {
        let count = docker(&["inspect", "--format", "{{.RestartCount}}", &restarting]);
        (count != "0").then_some(())
    })
    .await;
    let started = docker(&["inspect", "--format", "{{.State.StartedAt}}", &restarting]);
    let incident = server.post_alert(&down("firing", "e2e-runtime", &restarting)).await;
    let decision = first_decision(&server, incident).await;
    assert_eq!(
        (&decision["action"], &decision["verdict"]),
        (&json!("restart"), &json!("refuse")),
        "{decision}"
    );
    let reason = decision["reason"].as_str().unwrap();
    assert!(
        reason.contains("the runtime restarted it") && reason.contains("unless-stopped"),
        "{reason}"
    );
    assert_eq!(
        docker(&["inspect", "--format", "{{.State.StartedAt}}", &restarting]),
        started,
        "homeostat restarted it too"
    );
    server.stop().await;
}
