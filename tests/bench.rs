//! `homeostat bench` end to end, short: one trial each of a crash and a
//! hang, under Docker's restart policy alone and under homeostat's
//! playbook, each on a demo stack of its own (real Docker, Prometheus,
//! Alertmanager and homeostat), at the same time. The restart policy must
//! heal the crash and not the hang; the playbook must heal both; the
//! report must be written with its tables and plots.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use homeostat_demo::bench::{BenchOptions, Contender, Trial};
use homeostat_demo::Fault;

fn trial(trials: &[Trial], contender: Contender, fault: Fault) -> &Trial {
    trials
        .iter()
        .find(|t| t.contender == contender && t.fault == fault)
        .unwrap_or_else(|| panic!("no {contender} trial of {fault}: {trials:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_bench_runs_each_contender_on_each_fault_and_reports_it() {
    common::require_program("prometheus", "prometheus");
    common::require_program("prometheus-alertmanager", "prometheus-alertmanager");
    let homeostat = PathBuf::from(env!("CARGO_BIN_EXE_homeostat"));
    let dir = tempfile::tempdir().unwrap();
    let mut options = BenchOptions::new(homeostat);
    options.demo.faults = vec![Fault::Crash, Fault::Hang];
    options.contenders = vec![Contender::RestartPolicy, Contender::Playbook];
    options.trials = 1;
    options.demo.fault_timeout = Duration::from_secs(45);
    options.demo.report_dir = Some(dir.path().to_path_buf());
    let say: homeostat_demo::Say = Arc::new(|line: &str| eprintln!("{line}"));
    let report = homeostat_demo::bench::run(options, say)
        .await
        .unwrap_or_else(|e| panic!("the bench did not run: {e}"));

    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let trials = &report.trials;
    assert_eq!(trials.len(), 4, "{trials:#?}");
    // Both contenders ran the faults in the same seeded order.
    for fault in [Fault::Crash, Fault::Hang] {
        assert_eq!(
            trial(trials, Contender::RestartPolicy, fault).order,
            trial(trials, Contender::Playbook, fault).order,
            "{trials:#?}"
        );
    }

    let crash = trial(trials, Contender::RestartPolicy, Fault::Crash);
    assert!(crash.recover_s.is_some(), "{crash:#?}");
    assert_eq!(crash.healed_by, "runtime", "{crash:#?}");
    assert_eq!(crash.actions, ["restart (runtime)"], "{crash:#?}");
    let hang = trial(trials, Contender::RestartPolicy, Fault::Hang);
    assert_eq!(hang.recover_s, None, "the restart policy cannot see a hang: {hang:#?}");
    assert!(hang.actions.is_empty(), "{hang:#?}");
    assert!(hang.requests_failed * 100 >= hang.requests_total * 95, "{hang:#?}");
    let unhealed = hang.requests_failed;

    let hang = trial(trials, Contender::Playbook, Fault::Hang);
    let (detected, recovered) = (hang.detect_s.expect("detected"), hang.recover_s.expect("recovered"));
    assert!(detected <= recovered, "{hang:#?}");
    assert_eq!(hang.actions, ["restart"], "{hang:#?}");
    assert_eq!(hang.healed_by, "homeostat", "{hang:#?}");
    assert!(hang.requests_failed < unhealed / 2, "{hang:#?}");
    let crash = trial(trials, Contender::Playbook, Fault::Crash);
    assert!(crash.recover_s.is_some(), "{crash:#?}");

    for file in ["report.json", "report.md", "recovery.svg", "availability.svg"] {
        assert!(dir.path().join(file).is_file(), "{file} was not written");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap()).unwrap();
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains("restart-policy") && md.contains("playbook"), "{md}");
    assert!(json.to_string().contains("\"hang\""), "{json}");
}
