use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::playbook::Playbook;

fn labels(pairs: &[(&str, &str)]) -> LabelSet {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn shipped_playbook() -> Playbook {
    Playbook::load(&Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("rules/playbook.yml")).unwrap()
}

/// Decides with nothing masked but `repair` (no drift).
fn decide_open(
    policy: &Policy,
    key: &PolicyKey,
    features: &Features,
    rule: Option<RulePrior<'_>>,
    failed: &[Action],
    rng: &mut StdRng,
) -> Choice {
    // Nothing masked but `repair`, as the pipeline masks it where the
    // target did not drift (no test here has drift).
    let mut mask = Mask::none();
    mask.refuse(Action::Repair, "nothing drifted from a known good spec");
    let input = Decide {
        key,
        features,
        rule,
        mask: &mask,
        failed,
    };
    policy.decide(&input, rng)
}

/// A rule named `r` with these actions.
fn rule_of(actions: &[Action]) -> Option<RulePrior<'_>> {
    Some(RulePrior { name: "r", actions })
}

fn success(seconds: f64) -> Outcome {
    Outcome {
        verification: Verification::Success,
        seconds_to_resolve: Some(seconds),
        harm: false,
    }
}

fn failure() -> Outcome {
    Outcome {
        verification: Verification::Failure,
        seconds_to_resolve: None,
        harm: false,
    }
}

#[test]
fn day_one_is_the_playbook() {
    let playbook = shipped_playbook();
    let policy = Policy::new(PolicyConfig::default());
    let mut rng = StdRng::seed_from_u64(7);
    let alerts = [
        "ServiceDown",
        "ServiceCrashLooping",
        "ServiceHung",
        "UpstreamErrors",
        "BadDeploy",
        "HighErrorRatio",
        "HighLatencyP99",
        "MemoryLeak",
        "CPUSaturation",
        "ErrorBudgetBurn",
        "Unknown",
    ];
    for alertname in alerts {
        let l = labels(&[("alertname", alertname), ("service", "service_a")]);
        let key = PolicyKey::from_labels(&l);
        let rule = playbook.rule_for(&l).unwrap();
        // Every attempt the playbook would make, after the earlier ones
        // failed, where nothing drifted (as here): its repair passed over.
        let steps: Vec<Action> = rule.actions.iter().copied().filter(|a| *a != Action::Repair).collect();
        for failed in 0..steps.len() {
            let crate::playbook::Step::Try { action, .. } = rule.step_where(failed, |a| a != Action::Repair) else {
                panic!("{alertname}: no step {failed}");
            };
            for seed in 0..20 {
                let features = Features {
                    error_ratio: Some(f64::from(seed) / 20.0),
                    recent_deploy: Some(seed % 2 == 0),
                    ..Features::default()
                };
                let choice = decide_open(&policy, &key, &features, Some(rule.into()), &steps[..failed], &mut rng);
                assert_eq!(
                    choice.action,
                    Some(action),
                    "{alertname} attempt {failed}: {}",
                    choice.why
                );
                assert_eq!((choice.propensity, choice.explored), (1.0, false));
                assert_eq!(choice.mode, Mode::GreedyNoDisappointment);
            }
        }
    }
}

#[test]
fn keys_come_from_labels() {
    let key = PolicyKey::from_labels(&labels(&[("alertname", "ServiceDown"), ("compose_service", "b")]));
    assert_eq!(key.to_string(), "ServiceDown/b");
    let key = PolicyKey::from_labels(&labels(&[("service", "a"), ("deployment", "d")]));
    assert_eq!(key, PolicyKey::new("-", "a"));
}

#[test]
fn contexts_bucket_features_and_round_trip_as_text() {
    assert_eq!(
        Features::default().context().to_string(),
        "deploy?+restarting?+erroring?+slow?+degraded?"
    );
    let calm = Features {
        error_ratio: Some(0.01),
        latency_ratio: Some(0.5),
        recent_restarts: Some(0),
        memory_exhaustion_seconds: None,
        recent_deploy: Some(false),
        ready_ratio: Some(1.0),
        anomaly_score: Some(0.1),
    };
    assert_eq!(calm.context().to_string(), "steady");
    assert_eq!("steady".parse::<Context>().unwrap(), calm.context());
    let f = Features {
        error_ratio: Some(0.5),
        latency_ratio: Some(0.9),
        recent_restarts: Some(4),
        memory_exhaustion_seconds: Some(120.0),
        recent_deploy: Some(true),
        ready_ratio: Some(0.5),
        anomaly_score: Some(0.8),
    };
    let c = f.context();
    assert_eq!(
        c.to_string(),
        "deploy+restarting+erroring+exhausting+degraded+anomalous"
    );
    assert_eq!(c.to_string().parse::<Context>().unwrap(), c);
    let unknown = Features {
        memory_exhaustion_seconds: Some(120.0),
        anomaly_score: Some(0.9),
        ..Features::default()
    }
    .context();
    assert_eq!(unknown.to_string().parse::<Context>().unwrap(), unknown);
    // Unknown facts match either answer; known ones must agree.
    assert!(unknown.matches(&c) && c.matches(&unknown));
    assert!(!calm.context().matches(&c));
    let no_deploy_known = Features {
        recent_deploy: None,
        ..f.clone()
    };
    assert!(no_deploy_known.context().matches(&c));
    // No anomaly score (no spec scores the service) is not anomalous, as
    // before anomaly scores existed; a score at the threshold is.
    let quiet = Features {
        anomaly_score: None,
        ..f.clone()
    };
    assert_eq!(quiet.context().anomalous, Some(false));
    assert!(!quiet.context().matches(&c));
    let at = Features {
        anomaly_score: Some(thresholds::ANOMALY_SCORE),
        ..f.clone()
    };
    assert!(at.context().matches(&c));
    assert!("deploy+bogus".parse::<Context>().unwrap_err().contains("bogus"));
}

#[test]
fn rewards_follow_the_documented_formula() {
    let c = RewardConfig::default();
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    assert!(close(reward(&c, Action::Restart, &success(0.0)), 0.95));
    assert!(close(reward(&c, Action::Restart, &success(150.0)), 0.70));
    assert!(close(reward(&c, Action::Restart, &success(3000.0)), 0.45));
    assert!(close(reward(&c, Action::Restart, &failure()), -0.55));
    let harmful_timeout = Outcome {
        verification: Verification::Timeout,
        seconds_to_resolve: None,
        harm: true,
    };
    assert!(close(reward(&c, Action::Rollback, &harmful_timeout), -0.7 - 0.5 - 0.15));
    assert_eq!(reward(&c, Action::Notify, &failure()), 0.0);
    // Fast beats slow, anything working beats paging, paging beats failing.
    assert!(reward(&c, Action::Cordon, &success(299.0)) > 0.0);
    assert!(reward(&c, Action::Restart, &failure()) < reward(&c, Action::Notify, &failure()));
}

/// A mask that refuses a random subset of actions.
fn random_mask(rng: &mut StdRng) -> Mask {
    let mut mask = Mask::none();
    for action in Action::ALL {
        if rng.gen_bool(0.4) {
            mask.refuse(action, "guard: refuse: test");
        }
    }
    mask
}

#[test]
fn masked_and_failed_actions_are_never_chosen() {
    let playbook = shipped_playbook();
    let mut policy = Policy::new(PolicyConfig {
        propensity_draws: 100,
        ..PolicyConfig::default()
    });
    let mut rng = StdRng::seed_from_u64(42);
    let keys: Vec<(PolicyKey, LabelSet)> = ["ServiceDown", "HighLatencyP99", "ErrorBudgetBurn"]
        .iter()
        .map(|a| {
            let l = labels(&[("alertname", a), ("service", "s")]);
            (PolicyKey::from_labels(&l), l)
        })
        .collect();
    for round in 0..2000 {
        let (key, l) = &keys[round % keys.len()];
        let rule = playbook.rule_for(l).unwrap();
        let mask = random_mask(&mut rng);
        let failed: Vec<Action> = Action::ALL.into_iter().filter(|_| rng.gen_bool(0.2)).collect();
        let features = Features {
            recent_deploy: Some(rng.gen_bool(0.5)),
            ..Features::default()
        };
        let choice = policy.decide(
            &Decide {
                key,
                features: &features,
                rule: Some(rule.into()),
                mask: &mask,
                failed: &failed,
            },
            &mut rng,
        );
        let open: Vec<Action> = Action::ALL
            .into_iter()
            .filter(|a| mask.allows(*a) && !failed.contains(a))
            .collect();
        match choice.action {
            Some(a) => {
                assert!(open.contains(&a), "round {round}: chose {a}, open {open:?}");
                assert!(choice.propensity > 0.0 && choice.propensity <= 1.0);
            }
            None => assert!(open.is_empty(), "round {round}: nothing chosen from {open:?}"),
        }
        for c in &choice.candidates {
            assert_eq!(c.masked.is_some(), !open.contains(&c.action), "{:?}", c);
            if c.masked.is_some() {
                assert_eq!(c.propensity, 0.0);
            }
        }
        // Random rewards, many disappointing, so exploration is on.
        if let Some(a) = choice.action {
            policy.learn(key, &features, a, rng.gen_range(-1.0..1.0));
        }
    }
    assert!(keys
        .iter()
        .all(|(k, _)| policy.key_state(k).unwrap().disappointments > 0));
}

#[test]
fn the_guard_mask_carries_its_reason() {
    let config = crate::guard::GuardConfig::default();
    let situation = crate::guard::Situation {
        paused: true,
        ..Default::default()
    };
    let mask = Mask::from_guard(|a| crate::guard::check(&config, a, &situation));
    assert!(mask.allows(Action::Notify));
    assert!(mask.reason(Action::Restart).unwrap().contains("paused"));
}

#[test]
fn it_learns_from_failure_and_explores_only_after_disappointment() {
    let playbook = shipped_playbook();
    let l = labels(&[("alertname", "ServiceCrashLooping"), ("service", "b")]);
    let key = PolicyKey::from_labels(&l);
    let rule = playbook.rule_for(&l).unwrap();
    let features = Features {
        recent_deploy: Some(true),
        recent_restarts: Some(5),
        ..Features::default()
    };
    let mut policy = Policy::new(PolicyConfig::default());
    let costs = RewardConfig::default();
    let mut rng = StdRng::seed_from_u64(1);
    let mut firsts = Vec::new();
    for _ in 0..20 {
        let mut failed = Vec::new();
        loop {
            let choice = decide_open(&policy, &key, &features, Some(rule.into()), &failed, &mut rng);
            let action = choice.action.unwrap();
            if failed.is_empty() {
                firsts.push(action);
            }
            // Only a rollback fixes a crash loop after a bad deploy.
            let outcome = if action == Action::Rollback {
                success(30.0)
            } else {
                failure()
            };
            policy.learn(&key, &features, action, reward(&costs, action, &outcome));
            if action == Action::Rollback || action == Action::Notify {
                break;
            }
            failed.push(action);
        }
    }
    assert_eq!(firsts[0], Action::Restart, "day one follows the playbook");
    let late_rollbacks = firsts[10..].iter().filter(|a| **a == Action::Rollback).count();
    assert!(late_rollbacks >= 9, "{firsts:?}");
    assert!(policy.key_state(&key).unwrap().disappointments >= 1);
    // Rollback reliably works now, and every less disruptive action was
    // probed and failed: no more exploring.
    let choice = decide_open(&policy, &key, &features, Some(rule.into()), &[], &mut rng);
    assert_eq!(
        (choice.action, choice.mode, choice.propensity),
        (Some(Action::Rollback), Mode::GreedySatisfied, 1.0),
        "{}",
        choice.why
    );
}

#[test]
fn exploration_off_is_greedy_with_propensity_one() {
    let mut config = PolicyConfig::default();
    config.services.insert("b".into(), ServicePolicy { explore: false });
    let key = PolicyKey::new("ServiceDown", "b");
    let features = Features::default();
    let actions = [Action::Restart, Action::Recreate];
    let mut policy = Policy::new(config);
    // Equal, uncertain evidence: sampling would pick either.
    policy.learn(&key, &features, Action::Restart, -0.2);
    policy.learn(&key, &features, Action::Recreate, -0.2);
    let mut rng = StdRng::seed_from_u64(3);
    for _ in 0..200 {
        let input = Decide {
            key: &key,
            features: &features,
            rule: rule_of(&actions),
            mask: &Mask::none(),
            failed: &[],
        };
        let choice = policy.decide(&input, &mut rng);
        assert_eq!(choice.mode, Mode::GreedyExploreOff);
        assert_eq!(choice.action, policy.greedy(&input));
        assert_eq!((choice.propensity, choice.explored), (1.0, false));
        assert!(choice.why.contains("off for this service"), "{}", choice.why);
    }
    // The same key on another service explores.
    let other = PolicyKey::new("ServiceDown", "a");
    policy.learn(&other, &features, Action::Restart, -0.2);
    let choice = decide_open(&policy, &other, &features, rule_of(&actions), &[], &mut rng);
    assert_eq!(choice.mode, Mode::Sampled);
    let total: f64 = choice.candidates.iter().map(|c| c.propensity).sum();
    assert!((total - 1.0).abs() < 1e-9, "{total}");
}

#[test]
fn state_round_trips_and_a_restored_policy_decides_identically() {
    let mut policy = Policy::new(PolicyConfig::default());
    let mut rng = StdRng::seed_from_u64(9);
    let keys = [
        PolicyKey::new("ServiceDown", "a"),
        PolicyKey::new("HighLatencyP99", "b"),
    ];
    for i in 0..200 {
        let f = Features {
            recent_deploy: Some(i % 3 == 0),
            error_ratio: Some(rng.gen()),
            ..Features::default()
        };
        let a = Action::ALL[rng.gen_range(0..Action::ALL.len())];
        policy.learn(&keys[i % 2], &f, a, rng.gen_range(-1.0..1.0));
    }
    let json = policy.state().to_json();
    let state = PolicyState::from_json(&json).unwrap();
    assert_eq!(state, policy.state());
    let restored = Policy::restore(PolicyConfig::default(), state).unwrap();
    let rule = [Action::Restart, Action::Rollback];
    for (i, key) in keys.iter().cycle().take(50).enumerate() {
        let f = Features {
            recent_deploy: Some(i % 2 == 0),
            ..Features::default()
        };
        let input = Decide {
            key,
            features: &f,
            rule: rule_of(&rule),
            mask: &Mask::none(),
            failed: &[],
        };
        let a = policy.decide(&input, &mut StdRng::seed_from_u64(i as u64));
        let b = restored.decide(&input, &mut StdRng::seed_from_u64(i as u64));
        assert_eq!(a, b);
    }
}

#[test]
fn unknown_state_versions_are_rejected() {
    let err = PolicyState::from_json(r#"{"version": 2, "keys": []}"#).unwrap_err();
    assert!(
        err.to_string().contains("version 2 is not supported") && err.to_string().contains("reads version 1"),
        "{err}"
    );
    let err = PolicyState::from_json(r#"{"keys": []}"#).unwrap_err();
    assert!(err.to_string().contains("no `version`"), "{err}");
    let err = PolicyState::from_json("{").unwrap_err();
    assert_eq!(err.metric_label(), "json");
    let err = PolicyState::from_json(r#"{"version": 1, "keys": [{"key": {"alertname": "A", "service": "s"}, "disappointments": 0, "actions": {"reboot": {"n": 1, "sum_micros": 500000}}, "contexts": {}}]}"#).unwrap_err();
    assert!(err.to_string().contains("keys[0].actions"), "{err}");
    let state = PolicyState {
        version: 7,
        keys: Vec::new(),
    };
    assert!(Policy::restore(PolicyConfig::default(), state).is_err());
}

/// Imported state no outcome could have produced is refused, and counts at
/// their largest stay there instead of overflowing.
#[test]
fn impossible_state_is_refused_and_counts_saturate() {
    let state = |arm: &str, disappointments: u32| {
        PolicyState::from_json(&format!(
            r#"{{"version": 1, "keys": [{{"key": {{"alertname": "A", "service": "s"}}, "disappointments": {disappointments}, "actions": {{"restart": {arm}}}, "contexts": {{}}}}]}}"#
        ))
        .unwrap()
    };
    for arm in [
        r#"{"n": 1, "sum_micros": -9223372036854775808}"#,
        r#"{"n": 0, "sum_micros": 5}"#,
        r#"{"n": 2, "sum_micros": 9000000000000}"#,
    ] {
        let err = Policy::restore(PolicyConfig::default(), state(arm, 0)).unwrap_err();
        assert!(err.to_string().contains("keys[0].actions.restart"), "{arm}: {err}");
    }
    let mut policy = Policy::restore(
        PolicyConfig::default(),
        state(r#"{"n": 4294967295, "sum_micros": 1000000}"#, u32::MAX),
    )
    .unwrap();
    let key = PolicyKey::new("A", "s");
    policy.learn(&key, &Features::default(), Action::Restart, -1.0);
    let learned = &policy.state().keys[0];
    assert_eq!(
        (learned.disappointments, learned.actions[&Action::Restart].n),
        (u32::MAX, u32::MAX)
    );
}

#[test]
fn choices_serialize_for_the_journal() {
    let policy = Policy::new(PolicyConfig::default());
    let key = PolicyKey::new("BadDeploy", "b");
    let mut mask = Mask::none();
    mask.refuse(Action::Restart, "guard: refuse: test");
    let choice = policy.decide(
        &Decide {
            key: &key,
            features: &Features::default(),
            rule: Some(RulePrior {
                name: "bad-deploy",
                actions: &[Action::Rollback],
            }),
            mask: &mask,
            failed: &[],
        },
        &mut StdRng::seed_from_u64(0),
    );
    let json = serde_json::to_value(&choice).unwrap();
    assert_eq!(json["action"], "rollback");
    assert_eq!(json["context"], "deploy?+restarting?+erroring?+slow?+degraded?");
    assert_eq!(json["candidates"].as_array().unwrap().len(), Action::ALL.len());
    assert_eq!(json["candidates"][1]["masked"], "guard: refuse: test");
    assert!(
        choice.why.starts_with("rollback: highest estimated value 0.50"),
        "{}",
        choice.why
    );
    let back: Choice = serde_json::from_value(json).unwrap();
    assert_eq!(back, choice);
    // What the journal keeps is enough for off-policy evaluation.
    let logged = Logged::from_choice(&choice, 0.7).unwrap();
    assert_eq!(
        (logged.rule_actions, logged.action, logged.propensity),
        (vec![Action::Rollback], Action::Rollback, 1.0)
    );
    assert!(!logged.allowed.contains(&Action::Restart) && logged.allowed.contains(&Action::Notify));
}

#[test]
fn config_validation_names_the_key() {
    let config = PolicyConfig {
        noise_sd: 0.0,
        ..PolicyConfig::default()
    };
    assert!(config.validate().unwrap_err().contains("policy.noise_sd"));
    assert!(PolicyConfig::default().validate().is_ok());
}

#[test]
fn off_policy_evaluation_recovers_a_known_policy_value() {
    // Logging policy: uniform over three actions. Rewards: restart 0.8,
    // rollback 0.2, notify 0 (plus noise). The candidate always restarts:
    // its true value is 0.8.
    let mut rng = StdRng::seed_from_u64(5);
    let actions = [Action::Restart, Action::Rollback, Action::Notify];
    let log: Vec<Logged> = (0..3000)
        .map(|_| {
            let action = actions[rng.gen_range(0..3)];
            let mean = match action {
                Action::Restart => 0.8,
                Action::Rollback => 0.2,
                _ => 0.0,
            };
            Logged {
                key: PolicyKey::new("A", "s"),
                features: Features::default(),
                rule_actions: actions.to_vec(),
                allowed: actions.to_vec(),
                action,
                propensity: 1.0 / 3.0,
                reward: mean + rng.gen_range(-0.2..0.2),
            }
        })
        .collect();
    let estimate = evaluate(&log, |e| if e.action == Action::Restart { 1.0 } else { 0.0 });
    assert_eq!(estimate.decisions, 3000);
    assert!((900..1100).contains(&estimate.matched), "{estimate:?}");
    assert!((estimate.ips - 0.8).abs() < 0.05, "{estimate:?}");
    assert!((estimate.snips.unwrap() - 0.8).abs() < 0.02, "{estimate:?}");
    assert!((estimate.effective_sample_size - estimate.matched as f64).abs() < 1e-6);
    // The untrained policy's greedy choice is the rule's first: restart.
    let policy = Policy::new(PolicyConfig::default());
    let greedy = evaluate(&log, |e| policy.greedy_target(e));
    assert_eq!(greedy.matched, estimate.matched);
}

#[test]
fn a_working_fix_is_kept_but_a_less_disruptive_one_is_probed() {
    let key = PolicyKey::new("ServiceHung", "a");
    let features = Features::default();
    let rule = [Action::Recreate];
    let none = Mask::none();
    let input = |failed: &'static [Action]| Decide {
        key: &key,
        features: &features,
        rule: Some(RulePrior {
            name: "hung",
            actions: &rule,
        }),
        mask: &none,
        failed,
    };
    let mut policy = Policy::new(PolicyConfig::default());
    let mut rng = StdRng::seed_from_u64(2);
    let works = reward(&RewardConfig::default(), Action::Recreate, &success(60.0));
    policy.learn(&key, &features, Action::Recreate, -0.6);
    for _ in 0..5 {
        policy.learn(&key, &features, Action::Recreate, works);
    }
    // Recreate works, but restart costs less and was never tried.
    let choice = policy.decide(&input(&[]), &mut rng);
    assert_eq!(
        (choice.action, choice.greedy, choice.mode, choice.explored),
        (Some(Action::Restart), Some(Action::Recreate), Mode::ProbeCheaper, true),
        "{}",
        choice.why
    );
    assert_eq!(choice.propensity, 1.0);
    // Restart fails: it is not probed again; recreate is kept.
    policy.learn(&key, &features, Action::Restart, -0.55);
    let choice = policy.decide(&input(&[]), &mut rng);
    assert_ne!(choice.action, Some(Action::Restart), "{}", choice.why);
    // Nothing cheaper is left to doubt once each was tried and failed.
    for action in [Action::ScaleOut, Action::Restart] {
        policy.learn(&key, &features, action, -0.6);
    }
    let choice = policy.decide(&input(&[]), &mut rng);
    assert_eq!(
        (choice.action, choice.mode),
        (Some(Action::Recreate), Mode::GreedySatisfied),
        "{}",
        choice.why
    );
    // Below good enough and in doubt, it samples; with one candidate it is certain.
    let choice = policy.decide(&input(&[Action::Recreate]), &mut rng);
    assert_eq!(choice.mode, Mode::Sampled, "{}", choice.why);
    let only: Vec<Action> = Action::ALL.into_iter().filter(|a| *a != Action::Notify).collect();
    let choice = policy.decide(
        &Decide {
            failed: &only,
            ..input(&[])
        },
        &mut rng,
    );
    assert_eq!(
        (choice.action, choice.mode),
        (Some(Action::Notify), Mode::GreedyConfident)
    );
}
