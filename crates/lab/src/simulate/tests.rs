use super::*;

fn learned(report: &Report, scenario: &str) -> Stats {
    let s = report.scenarios.iter().find(|s| s.name == scenario).unwrap();
    s.contenders[&Contender::Learned].clone()
}

#[test]
fn every_scenario_fires_a_real_alert_and_its_best_action_is_the_oracle() {
    let options = Options::new(1, 0);
    let prepared = prepare(&options).unwrap();
    assert_eq!(scenario_names().len(), 10);
    assert_eq!(prepared.len(), 11, "crash-loop-after-deploy fires one of two alerts");
    for p in &prepared {
        let fresh = situation(p, DateTime::<Utc>::default(), &TargetHistory::default(), Vec::new());
        let (allowed, _, _) = mask(p, &options.guard, &fresh);
        let (best, value) = oracle(p, &allowed);
        assert_eq!(best, p.scenario.best, "{}: {:?}", p.scenario.name, p.expected);
        // The best is clearly best: learning has something to find.
        let second = p
            .expected
            .iter()
            .filter(|(a, _)| **a != best && allowed.allows(**a))
            .map(|(_, v)| *v)
            .fold(f64::NEG_INFINITY, f64::max);
        assert!(value - second >= 0.1, "{}: {value} vs {second}", p.scenario.name);
        assert!(p.labels.contains_key("severity"), "labels come from the alert rule");
    }
    // The playbook's first choice is wrong for some scenarios, as the target needs.
    let wrong: Vec<(&str, &str)> = prepared
        .iter()
        .filter(|p| p.rule_actions[0] != p.scenario.best)
        .map(|p| (p.scenario.name, p.alert))
        .collect();
    assert_eq!(
        wrong,
        [
            ("crash-loop-after-deploy", "ServiceDown"),
            ("crash-loop-after-deploy", "ServiceCrashLooping"),
            ("cpu-hog", "CPUSaturation"),
            ("slow-replica", "HighLatencyP99")
        ]
    );
    // A crash and a crash loop after a deploy share the ServiceDown key:
    // only the context separates them.
    let down: Vec<&Prepared> = prepared.iter().filter(|p| p.alert == "ServiceDown").collect();
    assert_eq!(down.len(), 2);
    assert_eq!(down[0].key, down[1].key);
}

#[test]
fn a_seeded_simulation_converges_safely() {
    let report = run(&Options::new(600, 11)).unwrap();
    for s in &report.scenarios {
        let l = &s.contenders[&Contender::Learned];
        assert!(l.episodes > 40, "{}: {} episodes", s.name, l.episodes);
        // A crash loop after a deploy that fires ServiceDown with a context
        // fact unknown looks like a plain crash, whose fix is a restart:
        // there the policy reaches about 93% (docs/BENCHMARKS.md), short
        // of the 95% it reaches everywhere else.
        let target = if s.name == "crash-loop-after-deploy" { 0.9 } else { 0.95 };
        let share = l.oracle_share_after_20.unwrap();
        assert!(
            share >= target,
            "{}: {share} by window {:?}",
            s.name,
            l.oracle_share_by_window
        );
        if target == 0.95 {
            assert!(
                l.episodes_to_reliable.unwrap() <= 20,
                "{}: {:?}",
                s.name,
                l.episodes_to_reliable
            );
        }
    }
    let t = &report.targets;
    assert!(t.zero_unsafe && t.zero_actions_on_no_fault, "{t:?}");
    assert!(t.sublinear_regret, "{:?}", report.totals[&Contender::Learned]);
    assert!(t.slo_reduction_vs_playbook >= 0.3, "{t:?}");
    // The random policy does act on no-fault: the count is real.
    assert!(report.totals[&Contender::Random].actions_on_no_fault > 0);
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let strip = |r: Report| {
        let mut v = serde_json::to_value(r).unwrap();
        v["elapsed_seconds"] = 0.into();
        v["episodes_per_second"] = 0.into();
        for c in ["learned", "playbook", "random"] {
            v["totals"][c]["seconds"] = 0.into();
        }
        v
    };
    let a = strip(run(&Options::new(150, 3)).unwrap());
    let b = strip(run(&Options::new(150, 3)).unwrap());
    assert_eq!(a, b);
    let c = strip(run(&Options::new(150, 4)).unwrap());
    assert_ne!(a, c);
}

#[test]
fn the_guard_is_never_bypassed() {
    // No action may leave fewer than 3 ready replicas.
    let mut options = Options::new(300, 5);
    options.guard.min_ready_replicas = 3;
    let report = run(&options).unwrap();
    let prepared = prepare(&options).unwrap();
    for (s, p) in report.scenarios.iter().zip(&prepared) {
        for (c, st) in &s.contenders {
            // Scaling in always leaves at most 2 ready; restarting leaves
            // one fewer unless the instance already does not serve.
            assert_eq!(st.actions_by_kind.get(&Action::ScaleIn), None, "{} {c:?}", s.name);
            if p.scenario.instance_ready {
                assert_eq!(st.actions_by_kind.get(&Action::Restart), None, "{} {c:?}", s.name);
            }
            assert_eq!(st.unsafe_actions, 0);
        }
    }
    // Restarting a crashed instance takes nothing away, and stays allowed.
    assert!(learned(&report, "crash").actions_by_kind[&Action::Restart] > 0);
    // The playbook still tries its restarts: the guard refuses them and a
    // human takes over.
    assert!(report.totals[&Contender::Playbook].escalations > 0);
    // Nothing at all in a denied namespace.
    let mut options = Options::new(100, 5);
    options.guard.deny_namespaces = vec!["demo".into()];
    let report = run(&options).unwrap();
    for s in &report.scenarios {
        for st in s.contenders.values() {
            assert_eq!(st.actions, 0, "{}", s.name);
        }
    }
    assert!(learned(&report, "crash").escalations > 0);
}

#[test]
fn off_policy_evaluation_estimates_the_playbook_from_the_random_log() {
    let report = run(&Options::new(1500, 2)).unwrap();
    let o = &report.off_policy;
    assert!(o.estimate.matched > 100, "{o:?}");
    let snips = o.estimate.snips.unwrap();
    assert!((snips - o.playbook_actual).abs() < 0.1, "{o:?}");
}

#[test]
fn missing_alerts_and_bad_files_are_named() {
    let mut options = Options::new(10, 0);
    options.alert_rules.1 =
        "groups:\n  - name: x\n    rules:\n      - alert: ServiceDown\n        expr: up == 0\n".into();
    let err = run(&options).unwrap_err().to_string();
    assert!(
        err.contains("crash-loop-after-deploy") && err.contains("ServiceCrashLooping"),
        "{err}"
    );
    options.alert_rules.1 = "groups: 3\n".into();
    let err = run(&options).unwrap_err().to_string();
    assert!(err.contains("rules/services.rules.yml"), "{err}");
    let mut options = Options::new(10, 0);
    options.playbook.1 = "rules: []\n".into();
    let err = run(&options).unwrap_err().to_string();
    assert!(err.contains("no playbook rule"), "{err}");
    assert!(matches!(run(&Options::new(0, 0)), Err(SimulateError::NoEpisodes)));
}

#[test]
fn the_plot_and_table_are_drawn() {
    let report = run(&Options::new(50, 1)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("regret.svg");
    plot(&report, &path).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.contains("<svg") && svg.contains("learned") && svg.contains("playbook"));
    let text = table(&report);
    assert!(
        text.contains(
            "| crash-loop-after-deploy | ServiceDown or ServiceCrashLooping | service-down [restart, recreate, rollback] or crash-looping [restart, rollback] | rollback |"
        ),
        "{text}"
    );
}
