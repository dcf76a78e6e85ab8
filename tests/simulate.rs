//! `homeostat simulate`: the JSON report, the plot, and errors that name the file.

mod common;

use std::process::Command;

use common::BIN;
use serde_json::Value;

#[test]
fn simulate_prints_one_json_report_and_draws_the_regret_curves() {
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("regret.svg");
    let output = Command::new(BIN)
        .args(["simulate", "--episodes", "300", "--seed", "7", "--json", "--plot"])
        .arg(&plot)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.trim().lines().count(), 1, "one JSON object on one line");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (report["episodes"].as_u64(), report["seed"].as_u64()),
        (Some(300), Some(7))
    );
    let scenarios = report["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 10);
    for s in scenarios {
        for contender in ["learned", "playbook", "random"] {
            let stats = &s["contenders"][contender];
            assert!(stats["oracle_share_by_window"].is_array(), "{s}");
            assert!(stats["cumulative_regret"].is_f64(), "{s}");
            assert_eq!(stats["unsafe_actions"], 0, "{s}");
        }
    }
    assert_eq!(report["totals"]["learned"]["actions_on_no_fault"], 0);
    assert!(report["episodes_per_second"].as_f64().unwrap() > 0.0);
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.contains("cumulative regret"), "{}", &svg[..200.min(svg.len())]);
}

#[test]
fn simulate_names_a_playbook_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let playbook = dir.path().join("playbook.yml");
    std::fs::write(&playbook, "rules:\n  - name: a\n    actions: [reboot]\n").unwrap();
    let output = Command::new(BIN)
        .args(["simulate", "--episodes", "10", "--playbook"])
        .arg(&playbook)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&playbook.display().to_string()) && stderr.contains("rules[0].actions[0]"),
        "{stderr}"
    );
    let missing = dir.path().join("missing.yml");
    let output = Command::new(BIN)
        .args(["simulate", "--alert-rules"])
        .arg(&missing)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("cannot read") && stderr.contains("missing.yml"),
        "{stderr}"
    );
}
