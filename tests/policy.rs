//! The learning policy inside `serve`: shadow mode records the policy's
//! choice and acts on the playbook's; learn mode acts on the policy's,
//! never on an action the guard masks; verified outcomes are learned and
//! survive a restart; `homeostat policy …` reads and moves what was learned.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, notification, test_config, InProcess};
use homeostat_adapters::executor::{Done, ExecError, Executor};
use homeostat_core::action::{Action, Backend, Operation, Target};
use homeostat_core::config::{ActionsConfig, Credentials, PolicyMode};
use homeostat_core::guard::Readiness;
use homeostat_core::playbook::Playbook;
use homeostat_core::policy::{Features, Policy, PolicyConfig, PolicyKey, PolicyState};
use homeostat_journal::policy::JournalReader;
use homeostat_server::pipeline::Responder;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_homeostat");

/// Records every operation and never touches anything.
#[derive(Clone)]
struct Recording {
    operations: Arc<Mutex<Vec<Operation>>>,
    readiness: Readiness,
}

impl Recording {
    fn new(readiness: Readiness) -> Recording {
        Recording {
            operations: Arc::default(),
            readiness,
        }
    }

    fn operations(&self) -> Vec<Operation> {
        self.operations.lock().unwrap().clone()
    }
}

impl Executor for Recording {
    fn backend(&self) -> Backend {
        Backend::Docker
    }

    async fn readiness(&self, _target: &Target) -> Result<Option<Readiness>, ExecError> {
        Ok(Some(self.readiness))
    }

    async fn execute(&self, operation: &Operation) -> Result<Done, ExecError> {
        self.operations.lock().unwrap().push(operation.clone());
        Ok("recorded".into())
    }
}

const TWO_READY: Readiness = Readiness {
    ready: 2,
    total: 2,
    instance_ready: None,
};

const PLAYBOOK: &str =
    "rules:\n  - name: down\n    matchers: ['alertname=\"ServiceDown\"']\n    actions: [restart, recreate]\n";

fn actions(dir: &Path, mode: PolicyMode) -> ActionsConfig {
    let path = dir.join("playbook.yml");
    std::fs::write(&path, PLAYBOOK).unwrap();
    let mut actions: ActionsConfig = serde_yaml::from_str("backend: docker").unwrap();
    actions.dry_run = false;
    actions.playbook = path;
    actions.verify_timeout = "2s".parse().unwrap();
    actions.policy.mode = mode;
    // Greedy, so that each test's choice is certain (Thompson sampling would
    // try the untried actions now and then; the simulator tests that).
    actions.policy.learning.explore = false;
    // No Prometheus here: context features are missing, which the policy
    // reads as "no evidence" (and records why).
    actions
}

/// A policy that has seen restarts fail and recreates work for `key`.
fn trained(key: &PolicyKey) -> PolicyState {
    let mut policy = Policy::new(PolicyConfig::default());
    for _ in 0..6 {
        policy.learn(key, &Features::default(), Action::Restart, -0.55);
        policy.learn(key, &Features::default(), Action::Recreate, 0.85);
    }
    policy.state()
}

async fn start(dir: &Path, actions: ActionsConfig, executor: Recording) -> InProcess {
    let mut config = test_config(dir);
    config.actions = Some(actions.clone());
    let playbook = Playbook::load(&actions.playbook).unwrap();
    InProcess::start_with(config, Credentials::default(), move |parts| {
        Responder::new(executor, parts, playbook, actions)
    })
    .await
}

/// A ServiceDown alert on container `web-1`.
fn down(status: &str, fingerprint: &str) -> Value {
    let mut body = notification(status, &[fingerprint]);
    body["alerts"][0]["labels"] = json!({"alertname": "ServiceDown", "service": "web", "container": "web-1"});
    body
}

async fn first_decision(server: &InProcess, incident: i64) -> Value {
    eventually("a decision", Duration::from_secs(20), || async {
        server.decisions(incident).await.into_iter().next()
    })
    .await
}

fn key() -> PolicyKey {
    PolicyKey::new("ServiceDown", "web")
}

fn import(journal: &Path, state: &PolicyState) {
    let file = journal.with_extension("policy.json");
    std::fs::write(&file, state.to_json()).unwrap();
    homeostat_journal::learned::import(journal, &file, &PolicyConfig::default()).unwrap();
}

fn operation_names(ops: &[Operation]) -> Vec<String> {
    ops.iter()
        .map(|op| {
            serde_json::to_value(op).unwrap()["operation"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn shadow_mode_acts_on_the_playbook_and_records_the_policys_choice() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.db");
    import(&journal, &trained(&key()));
    let executor = Recording::new(TWO_READY);
    let server = start(dir.path(), actions(dir.path(), PolicyMode::Shadow), executor.clone()).await;

    let incident = server.post_alert(&down("firing", "shadow-1")).await;
    let decision = first_decision(&server, incident).await;
    assert_eq!(decision["action"], "restart", "{decision:#}");
    assert_eq!(decision["verdict"], "allow");
    let policy = &decision["record"]["policy"];
    assert_eq!(policy["mode"], "shadow");
    assert_eq!(policy["acted"], false);
    assert_eq!(policy["playbook_action"], "restart");
    assert_eq!(policy["view"]["choice"]["action"], "recreate", "{policy:#}");
    assert!(policy["view"]["missing"]["error_ratio"]
        .as_str()
        .unwrap()
        .contains("no Prometheus"));

    // The alert never resolves: the restart fails verification, and the
    // policy learns from the playbook's action all the same.
    eventually("the outcome to be learned", Duration::from_secs(20), || async {
        let reader = JournalReader::open(&journal).unwrap();
        reader
            .rewards()
            .unwrap()
            .into_iter()
            .find(|r| r.decision_id == decision["id"])
    })
    .await;
    // The playbook's next step (recreate) follows the failed restart at
    // once; the policy is consulted, in shadow, on each.
    let operations = eventually("the next step", Duration::from_secs(20), || async {
        let operations = operation_names(&executor.operations());
        (operations.len() == 2).then_some(operations)
    })
    .await;
    assert_eq!(operations, ["restart_container", "recreate_container"]);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(
            r#"homeostat_policy_choices_total{mode="shadow",explored="false",agrees_with_playbook="false"} 1"#
        ),
        "{metrics}"
    );
    server.stop().await;

    let reader = JournalReader::open(&journal).unwrap();
    let stored = reader.policy().unwrap().unwrap();
    assert!(stored.revision >= 2, "imported, then outcomes learned");
    let state = PolicyState::from_json(&stored.state).unwrap();
    let restarts = state.keys[0].actions[&Action::Restart];
    assert_eq!(restarts.n, 7, "the restart's outcome learned once");
}

#[tokio::test]
async fn learn_mode_acts_on_the_policy_and_keeps_what_it_learned_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.db");
    import(&journal, &trained(&key()));
    let executor = Recording::new(TWO_READY);
    let server = start(dir.path(), actions(dir.path(), PolicyMode::Learn), executor.clone()).await;

    let incident = server.post_alert(&down("firing", "learn-1")).await;
    let decision = first_decision(&server, incident).await;
    assert_eq!(decision["action"], "recreate", "{decision:#}");
    assert_eq!(decision["record"]["policy"]["acted"], true);
    assert_eq!(operation_names(&executor.operations()), ["recreate_container"]);
    // Resolved within the verification deadline: a success, learned.
    server.post_alert(&down("resolved", "learn-1")).await;
    eventually("the success to be learned", Duration::from_secs(20), || async {
        let reader = JournalReader::open(&journal).unwrap();
        reader
            .rewards()
            .unwrap()
            .into_iter()
            .find(|r| r.decision_id == decision["id"] && r.reward > 0.5)
    })
    .await;
    server.stop().await;

    // A new process reads what the last one learned.
    let executor = Recording::new(TWO_READY);
    let mut learn = actions(dir.path(), PolicyMode::Learn);
    learn.guard.cooldown = "0s".parse().unwrap();
    let server = start(dir.path(), learn, executor.clone()).await;
    let incident = server.post_alert(&down("firing", "learn-2")).await;
    let decision = first_decision(&server, incident).await;
    let candidates = decision["record"]["policy"]["view"]["choice"]["candidates"]
        .as_array()
        .unwrap()
        .clone();
    let recreate = candidates.iter().find(|c| c["action"] == "recreate").unwrap();
    assert_eq!(recreate["outcomes_key"], 7, "6 imported + 1 learned: {recreate:#}");
    assert_eq!(decision["action"], "recreate");
    // Never resolved: a failure, learned before the state is read below.
    eventually("the failure to be learned", Duration::from_secs(20), || async {
        let reader = JournalReader::open(&journal).unwrap();
        reader
            .rewards()
            .unwrap()
            .into_iter()
            .find(|r| r.decision_id == decision["id"] && r.reward < 0.0)
    })
    .await;
    server.stop().await;

    // The command line explains the decision and moves the state.
    let config = dir.path().join("homeostat.yml");
    std::fs::write(&config, format!("journal:\n  path: {}\n", journal.display())).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, explained, stderr) = run(&["policy", "explain", &incident.to_string()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(explained.contains("Policy (learn): chose recreate"), "{explained}");
    assert!(explained.contains("| restart |"), "{explained}");
    let (code, shown, _) = run(&["policy", "show"]);
    assert_eq!(code, Some(0));
    assert!(shown.contains("## ServiceDown/web"), "{shown}");
    let (code, exported, _) = run(&["policy", "export"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        PolicyState::from_json(&exported).unwrap().keys[0].actions[&Action::Recreate].n,
        8
    );
    let (code, evaluated, stderr) = run(&["policy", "evaluate", "--json"]);
    assert_eq!(code, Some(0), "{stderr}");
    let evaluated: Value = serde_json::from_str(&evaluated).unwrap();
    assert_eq!(
        evaluated["logged"], 2,
        "two decisions with a verified reward: {evaluated:#}"
    );
    assert_eq!(evaluated["candidates"][0]["policy"], "learned (greedy)");
    assert_eq!(
        evaluated["candidates"][0]["matched"], 2,
        "it chose recreate both times: {evaluated:#}"
    );

    // A state from another version is refused, naming the file; nothing changes.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"version": 99, "keys": []}"#).unwrap();
    let (code, _, stderr) = run(&["policy", "import", bad.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("bad.json") && stderr.contains("99"), "{stderr}");
    let reader = JournalReader::open(&journal).unwrap();
    assert_eq!(reader.policy().unwrap().unwrap().source, "learned");
}

#[tokio::test]
async fn learn_mode_never_picks_an_action_the_guard_masks() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.db");
    // The policy would restart (the playbook's first choice, never disappointed)...
    let mut policy = Policy::new(PolicyConfig::default());
    for _ in 0..6 {
        policy.learn(&key(), &Features::default(), Action::Restart, 0.9);
    }
    import(&journal, &policy.state());
    // ...but the only ready instance is the one the restart would take away.
    let executor = Recording::new(Readiness::single(true));
    let server = start(dir.path(), actions(dir.path(), PolicyMode::Learn), executor.clone()).await;

    let incident = server.post_alert(&down("firing", "masked-1")).await;
    let decision = first_decision(&server, incident).await;
    let choice = &decision["record"]["policy"]["view"]["choice"];
    let restart = choice["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["action"] == "restart")
        .unwrap();
    assert!(
        restart["masked"].as_str().unwrap().contains("min_ready_replicas"),
        "{restart:#}"
    );
    assert_ne!(choice["action"], "restart");
    assert_ne!(decision["action"], "restart");
    // Scale-in and cordon are not in the rule: never candidates.
    for action in ["scale_in", "cordon"] {
        let c = choice["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["action"] == action)
            .unwrap();
        assert!(c["masked"].is_string(), "{c:#}");
    }
    assert!(operation_names(&executor.operations())
        .iter()
        .all(|op| op != "restart_container"));
    server.stop().await;
}

#[tokio::test]
async fn learn_mode_escalates_where_it_has_learned_that_no_action_works() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.db");
    // Both of the rule's actions have kept failing here.
    let mut policy = Policy::new(PolicyConfig::default());
    for _ in 0..6 {
        policy.learn(&key(), &Features::default(), Action::Restart, -0.55);
        policy.learn(&key(), &Features::default(), Action::Recreate, -0.6);
    }
    import(&journal, &policy.state());
    let executor = Recording::new(TWO_READY);
    let server = start(dir.path(), actions(dir.path(), PolicyMode::Learn), executor.clone()).await;

    let incident = server.post_alert(&down("firing", "hopeless-1")).await;
    let decision = first_decision(&server, incident).await;
    // Doing nothing scores best, but the rule says to act: a human decides.
    assert_eq!(
        decision["record"]["policy"]["view"]["choice"]["action"], "notify",
        "{decision:#}"
    );
    assert_eq!(decision["verdict"], "escalate", "{decision:#}");
    assert!(decision["reason"].as_str().unwrap().contains("no action worth taking"));
    assert!(executor.operations().is_empty());
    let metrics = server.metrics().await;
    assert!(metrics.contains("homeostat_escalations_total 1"), "{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn context_comes_from_prometheus_and_says_why_a_feature_is_missing() {
    let prometheus = common::Prometheus::start(&[], &[]).await;
    let queries: std::collections::BTreeMap<String, String> = [
        ("error_ratio", "vector(0.25)"),
        // The alert's label is filled in and escaped; no such series: no sample.
        ("ready_ratio", r#"up{job="nope", service="{{ $labels.service }}"}"#),
        ("latency_ratio", "rate(((("),
        ("recent_deploy", "vector(1)"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let labels = [("service".to_owned(), r#"we"b"#.to_owned())].into_iter().collect();
    let http = reqwest::Client::new();
    let timeout = Duration::from_secs(5);
    let context =
        homeostat_adapters::prometheus::gather(&http, Some(prometheus.url()), &queries, &labels, timeout).await;
    assert_eq!(context.get("error_ratio"), Some(0.25));
    assert_eq!(context.missing["ready_ratio"], "no sample");
    assert!(context.missing["latency_ratio"].contains("rate(((("), "{context:?}");
    let features = context.features();
    assert_eq!(features.recent_deploy, Some(true));
    assert_eq!(features.error_ratio, Some(0.25));
    assert_eq!(features.ready_ratio, None);

    // Nothing listens there: every feature is missing, saying where it asked.
    let port = common::free_port();
    let down = format!("http://127.0.0.1:{port}");
    let context = homeostat_adapters::prometheus::gather(&http, Some(&down), &queries, &labels, timeout).await;
    assert!(context.values.is_empty());
    assert!(context.missing["error_ratio"].contains(&down), "{context:?}");
}
