//! A journal written by the release before the workspace split (main at
//! 625c4c0, `tests/fixtures/journal-625c4c0.db`) opens unchanged: every
//! incident and decision reads back exactly as that release served it
//! (`journal-625c4c0.json`, taken from its API), its learned policy exports
//! as it did (`journal-625c4c0.policy.json`), and new deliveries are
//! journalled on top of it. The fixture holds every verdict, result and
//! outcome that release wrote but `no_rule` (its playbook has a catch-all
//! rule): allow, defer, refuse, escalate, notify, no_target, unplannable;
//! done, dry_run, error, interrupted; success, failure, timeout.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::{notification, test_config, InProcess};
use homeostat_core::config::Credentials;
use homeostat_server::pipeline::LogTransitions;
use serde_json::Value;

const FIXTURE: &str = "tests/fixtures/journal-625c4c0";

fn fixture(extension: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("{FIXTURE}.{extension}"))
}

/// A copy of the fixture to open: the committed file is never written.
fn copy(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("journal.db");
    std::fs::copy(fixture("db"), &path).unwrap();
    path
}

#[tokio::test]
async fn a_journal_of_the_previous_release_reads_back_as_it_served_it() {
    let expected: Value = serde_json::from_slice(&std::fs::read(fixture("json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.journal.path = copy(dir.path());
    let server = InProcess::start(config, Credentials::default(), LogTransitions).await;

    let mut incidents = server.get_json("/api/v1/incidents?limit=100").await;
    // The schedule came after that release: its firing incidents are due
    // for one look at the first start, and nothing else is.
    for incident in incidents["incidents"].as_array_mut().unwrap() {
        let due = incident.as_object_mut().unwrap().remove("next_check");
        assert_eq!(due.is_some(), incident["status"] == "firing", "{incident}");
    }
    assert_eq!(incidents, expected["incidents"]);
    let mut words = BTreeSet::new();
    for incident in incidents["incidents"].as_array().unwrap() {
        let id = incident["id"].as_i64().unwrap();
        let decisions = server.get_json(&format!("/api/v1/incidents/{id}/decisions")).await;
        assert_eq!(decisions, expected["decisions"][id.to_string()], "incident {id}");
        for d in decisions["decisions"].as_array().unwrap() {
            for key in ["verdict", "result", "outcome"] {
                if let Some(word) = d[key].as_str() {
                    words.insert(format!("{key}={word}"));
                }
            }
        }
    }
    // The fixture is only worth its size if it holds every state.
    let every: BTreeSet<String> = [
        "verdict=allow",
        "verdict=defer",
        "verdict=refuse",
        "verdict=escalate",
        "verdict=notify",
        "verdict=no_target",
        "verdict=unplannable",
        "result=done",
        "result=dry_run",
        "result=error",
        "result=interrupted",
        "outcome=success",
        "outcome=failure",
        "outcome=timeout",
    ]
    .map(String::from)
    .into();
    assert_eq!(words, every);

    // The journal goes on: a new delivery opens the next incident.
    let next = server.post_alert(&notification("firing", &["fixture-next"])).await;
    assert_eq!(next, 16);
    server.stop().await;
}

#[test]
fn its_learned_policy_exports_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let journal = copy(dir.path());
    let config = dir.path().join("homeostat.yaml");
    std::fs::write(&config, format!("journal:\n  path: {}\n", journal.display())).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_homeostat"))
        .args(["policy", "export", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let exported: Value = serde_json::from_slice(&output.stdout).unwrap();
    let expected: Value = serde_json::from_slice(&std::fs::read(fixture("policy.json")).unwrap()).unwrap();
    assert_eq!(exported, expected);
}
