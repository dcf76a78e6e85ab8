//! Every Prometheus rule file under rules/ (`*.rules.yml`) passes
//! `promtool check rules`, and every unit test under rules/tests/ passes
//! `promtool test rules`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    found.sort();
    found
}

fn promtool(args: &[&str], files: &[PathBuf]) {
    let promtool = common::require_program("promtool", "prometheus");
    let output = Command::new(promtool).args(args).args(files).output().unwrap();
    assert!(
        output.status.success(),
        "promtool {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn rule_files_pass_promtool_check_rules() {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let found = files(&rules, ".rules.yml");
    assert!(!found.is_empty(), "no *.rules.yml under {}", rules.display());
    promtool(&["check", "rules"], &found);
}

#[test]
fn rule_unit_tests_pass_promtool_test_rules() {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/tests");
    let found = files(&tests, ".yml");
    assert!(!found.is_empty(), "no rule tests under {}", tests.display());
    promtool(&["test", "rules"], &found);
}
