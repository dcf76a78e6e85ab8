use super::*;
use homeostat_core::alert::LabelSet;
use homeostat_core::decision::{ActionResult, Verdict, Verification};

fn config(dir: &tempfile::TempDir) -> JournalConfig {
    JournalConfig {
        path: dir.path().join("journal.db"),
        synchronous: Synchronous::Normal,
        ..JournalConfig::default()
    }
}

fn alert(fingerprint: &str, status: AlertStatus, starts_at: &str, labels: &[(&str, &str)]) -> Alert {
    Alert {
        status,
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        annotations: LabelSet::new(),
        starts_at: starts_at.parse().unwrap(),
        ends_at: (status == AlertStatus::Resolved).then(|| "2026-11-28T07:00:00Z".parse().unwrap()),
        generator_url: String::new(),
        fingerprint: fingerprint.into(),
    }
}

fn message(alerts: Vec<Alert>) -> WebhookMessage {
    WebhookMessage {
        version: "4".into(),
        group_key: "{}:{}".into(),
        truncated_alerts: 0,
        status: alerts[0].status,
        receiver: "homeostat".into(),
        group_labels: LabelSet::new(),
        common_labels: LabelSet::new(),
        common_annotations: LabelSet::new(),
        external_url: String::new(),
        alerts,
    }
}

/// A queue slot whose queue nobody reads: the delivery stays unprocessed.
async fn slot() -> OwnedPermit<Delivery> {
    let (queue, pipeline) = mpsc::channel(1);
    let slot = queue.reserve_owned().await.unwrap();
    drop(pipeline);
    slot
}

const T0: &str = "2026-11-28T06:00:00Z";
const T1: &str = "2026-11-28T08:00:00Z";

async fn deliver(journal: &Journal, alert: Alert) -> IncidentEvent {
    let delivery = journal
        .ingest(message(vec![alert]), Utc::now(), slot().await)
        .await
        .unwrap();
    delivery.events.into_iter().next().unwrap()
}

fn query(limit: usize) -> IncidentQuery {
    IncidentQuery {
        limit,
        ..IncidentQuery::default()
    }
}

#[tokio::test]
async fn one_incident_per_episode_through_its_whole_life() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _writer) = crate::open(&config(&dir), JournalMetrics::default()).unwrap();
    let labels = [("alertname", "ServiceDown"), ("service", "b")];

    let opened = deliver(&journal, alert("fp1", AlertStatus::Firing, T0, &labels)).await;
    assert_eq!(opened.kind, EventKind::Opened);
    assert_eq!(opened.alertname, "ServiceDown");
    for _ in 0..3 {
        let again = deliver(&journal, alert("fp1", AlertStatus::Firing, T0, &labels)).await;
        assert_eq!(
            (again.kind, again.incident_id),
            (EventKind::Repeated, opened.incident_id)
        );
    }
    let resolved = deliver(&journal, alert("fp1", AlertStatus::Resolved, T0, &labels)).await;
    assert_eq!(
        (resolved.kind, resolved.incident_id),
        (EventKind::Resolved, opened.incident_id)
    );
    // A lagging HA peer still reporting the same episode as firing does not reopen it.
    let late = deliver(&journal, alert("fp1", AlertStatus::Firing, T0, &labels)).await;
    assert_eq!((late.kind, late.incident_id), (EventKind::Stale, opened.incident_id));

    let incident = journal.incident(opened.incident_id).await.unwrap().unwrap();
    assert_eq!(incident.status, AlertStatus::Resolved);
    assert_eq!(incident.deliveries, 6);
    assert_eq!(incident.labels["service"], "b");
    assert_eq!(incident.ends_at.unwrap().to_rfc3339(), "2026-11-28T07:00:00+00:00");
    assert!(incident.resolved_at.is_some());

    // The next episode (a new startsAt) is a new incident.
    let next = deliver(&journal, alert("fp1", AlertStatus::Firing, T1, &labels)).await;
    assert_eq!(next.kind, EventKind::Opened);
    assert_ne!(next.incident_id, opened.incident_id);
}

#[tokio::test]
async fn a_resolution_seen_first_is_recorded_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _writer) = crate::open(&config(&dir), JournalMetrics::default()).unwrap();
    let event = deliver(&journal, alert("fp9", AlertStatus::Resolved, T0, &[])).await;
    assert_eq!(event.kind, EventKind::Resolved);
    let incident = journal.incident(event.incident_id).await.unwrap().unwrap();
    assert_eq!(incident.status, AlertStatus::Resolved);
    assert_eq!(incident.alertname, "");
}

#[tokio::test]
async fn unprocessed_deliveries_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, writer) = crate::open(&config(&dir), JournalMetrics::default()).unwrap();
    let first = journal
        .ingest(
            message(vec![alert("a", AlertStatus::Firing, T0, &[])]),
            Utc::now(),
            slot().await,
        )
        .await
        .unwrap();
    let second = journal
        .ingest(
            message(vec![
                alert("b", AlertStatus::Firing, T0, &[]),
                alert("c", AlertStatus::Firing, T0, &[]),
            ]),
            Utc::now(),
            slot().await,
        )
        .await
        .unwrap();
    journal.mark_processed(first.id).await.unwrap();
    drop(journal);
    writer.join();

    let (journal, _writer) = crate::open(&config(&dir), JournalMetrics::default()).unwrap();
    let pending = journal.unprocessed().await.unwrap();
    assert_eq!(pending, vec![second.clone()]);
    assert_eq!(pending[0].events.len(), 2);
    journal.mark_processed(second.id).await.unwrap();
    assert!(journal.unprocessed().await.unwrap().is_empty());
}

#[tokio::test]
async fn filters_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _writer) = crate::open(&config(&dir), JournalMetrics::default()).unwrap();
    for i in 0..5 {
        let service = if i % 2 == 0 { "a" } else { "b" };
        let name = if i < 3 { "High" } else { "Low" };
        deliver(
            &journal,
            alert(
                &format!("fp{i}"),
                AlertStatus::Firing,
                T0,
                &[("alertname", name), ("service", service)],
            ),
        )
        .await;
    }
    deliver(&journal, alert("fp0", AlertStatus::Resolved, T0, &[])).await;

    let all = journal.incidents(query(100)).await.unwrap();
    let ids: Vec<i64> = all.incidents.iter().map(|i| i.id).collect();
    assert_eq!(ids, vec![5, 4, 3, 2, 1]);
    assert_eq!(all.next_cursor, None);

    let page1 = journal.incidents(query(2)).await.unwrap();
    assert_eq!(page1.incidents.iter().map(|i| i.id).collect::<Vec<_>>(), vec![5, 4]);
    assert_eq!(page1.next_cursor, Some(4));
    let page2 = journal
        .incidents(IncidentQuery {
            before: page1.next_cursor,
            ..query(2)
        })
        .await
        .unwrap();
    assert_eq!(page2.incidents.iter().map(|i| i.id).collect::<Vec<_>>(), vec![3, 2]);

    let firing = journal
        .incidents(IncidentQuery {
            status: Some(AlertStatus::Firing),
            ..query(100)
        })
        .await
        .unwrap();
    assert_eq!(firing.incidents.len(), 4);
    let high_a = journal
        .incidents(IncidentQuery {
            alertname: Some("High".into()),
            labels: vec![("service".into(), "a".into())],
            ..query(100)
        })
        .await
        .unwrap();
    assert_eq!(high_a.incidents.iter().map(|i| i.id).collect::<Vec<_>>(), vec![3, 1]);
}

#[tokio::test]
async fn concurrent_deliveries_all_land_and_reach_the_queue_in_journal_order() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _writer) = crate::open(&config(&dir), JournalMetrics::default()).unwrap();
    let (queue, mut pipeline) = mpsc::channel(1000);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let (journal, queue) = (journal.clone(), queue.clone());
            tokio::spawn(async move {
                let slot = queue.reserve_owned().await.unwrap();
                let alert = alert(&format!("fp{i}"), AlertStatus::Firing, T0, &[]);
                journal.ingest(message(vec![alert]), Utc::now(), slot).await.unwrap()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().events[0].kind, EventKind::Opened);
    }
    drop(queue);
    let mut queued = Vec::new();
    while let Some(delivery) = pipeline.recv().await {
        queued.push(delivery.id);
    }
    assert_eq!(queued, (1..=200).collect::<Vec<i64>>());
    assert_eq!(journal.incidents(query(1000)).await.unwrap().incidents.len(), 200);

    assert_eq!(journal.unprocessed().await.unwrap().len(), 200);
    journal.mark_processed(150).await.unwrap();
    let rest: Vec<i64> = journal.unprocessed().await.unwrap().iter().map(|d| d.id).collect();
    assert_eq!(rest, (151..=200).collect::<Vec<i64>>());
    // The watermark never moves back.
    journal.mark_processed(10).await.unwrap();
    assert_eq!(journal.unprocessed().await.unwrap().len(), 50);
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir);
    Connection::open(&config.path)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    let err = crate::open(&config, JournalMetrics::default()).err().unwrap();
    assert!(err.to_string().contains("schema version 99"), "{err}");
}

#[test]
fn an_unopenable_path_says_which() {
    let config = JournalConfig {
        path: PathBuf::from("/nonexistent-dir/journal.db"),
        synchronous: Synchronous::Full,
        ..JournalConfig::default()
    };
    let err = crate::open(&config, JournalMetrics::default()).err().unwrap();
    assert!(err.to_string().contains("/nonexistent-dir/journal.db"), "{err}");
}

#[test]
fn label_names_follow_prometheus() {
    assert!(is_label_name("service") && is_label_name("_x1"));
    assert!(!is_label_name("") && !is_label_name("1x") && !is_label_name("a\"b") && !is_label_name("a-b"));
}

#[tokio::test]
async fn a_late_resolution_of_an_earlier_episode_does_not_close_the_current_one() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _writer) = crate::open(&config(&dir), JournalMetrics::default()).unwrap();
    let first = deliver(&journal, alert("fp", AlertStatus::Firing, T0, &[])).await;
    deliver(&journal, alert("fp", AlertStatus::Resolved, T0, &[])).await;
    let second = deliver(&journal, alert("fp", AlertStatus::Firing, T1, &[])).await;
    assert_eq!(second.kind, EventKind::Opened);
    // A lagging peer's resolution of the first episode arrives now.
    let late = deliver(&journal, alert("fp", AlertStatus::Resolved, T0, &[])).await;
    assert_eq!((late.kind, late.incident_id), (EventKind::Stale, first.incident_id));
    let current = journal.incident(second.incident_id).await.unwrap().unwrap();
    assert_eq!(current.status, AlertStatus::Firing);
    let again = deliver(&journal, alert("fp", AlertStatus::Firing, T1, &[])).await;
    assert_eq!(
        (again.kind, again.incident_id),
        (EventKind::Repeated, second.incident_id)
    );
}

#[tokio::test]
async fn one_failing_write_fails_alone_and_the_rest_of_its_group_lands() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir);
    let (journal, _writer) = crate::open(&config, JournalMetrics::default()).unwrap();
    Connection::open(&config.path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER poison BEFORE INSERT ON incidents WHEN NEW.fingerprint = 'poison'
             BEGIN SELECT RAISE(ABORT, 'poisoned'); END;",
        )
        .unwrap();
    let (queue, mut pipeline) = mpsc::channel(100);
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let (journal, queue) = (journal.clone(), queue.clone());
            tokio::spawn(async move {
                let fingerprint = if i == 20 {
                    "poison".to_owned()
                } else {
                    format!("good{i}")
                };
                let slot = queue.reserve_owned().await.unwrap();
                let alert = alert(&fingerprint, AlertStatus::Firing, T0, &[]);
                (
                    fingerprint,
                    journal.ingest(message(vec![alert]), Utc::now(), slot).await,
                )
            })
        })
        .collect();
    let mut opened = std::collections::HashMap::new();
    for task in tasks {
        let (fingerprint, result) = task.await.unwrap();
        match result {
            Ok(delivery) => {
                opened.insert(fingerprint, delivery.events[0].incident_id);
            }
            Err(err) => {
                assert_eq!(fingerprint, "poison");
                assert!(err.to_string().contains("poisoned"), "{err}");
            }
        }
    }
    assert_eq!(opened.len(), 39);
    assert!(!opened.contains_key("poison"));
    drop(queue);
    let mut queued = 0;
    while pipeline.recv().await.is_some() {
        queued += 1;
    }
    assert_eq!(queued, 39, "only committed deliveries reach the pipeline");
    // After the rollbacks, repeats still find the incidents their deliveries opened.
    for (fingerprint, id) in [("good0", opened["good0"]), ("good39", opened["good39"])] {
        let repeat = deliver(&journal, alert(fingerprint, AlertStatus::Firing, T0, &[])).await;
        assert_eq!((repeat.kind, repeat.incident_id), (EventKind::Repeated, id));
    }
    assert_eq!(journal.incidents(query(100)).await.unwrap().incidents.len(), 39);
}

#[tokio::test]
async fn a_stop_mid_action_is_settled_at_start_and_never_repeated() {
    use super::decisions::NewDecision;
    let dir = tempfile::tempdir().unwrap();
    let (journal, writer) = crate::open(&config(&dir), JournalMetrics::default()).unwrap();
    let incident = deliver(&journal, alert("fp", AlertStatus::Firing, T0, &[]))
        .await
        .incident_id;
    let decision = |verdict: &str| NewDecision {
        incident_id: incident,
        decided_at: Utc::now(),
        target_key: "docker/container/web".into(),
        action: "restart".into(),
        rule: Some("down".into()),
        attempt: 0,
        verdict: verdict.parse().unwrap(),
        reason: "within every limit".into(),
        record: serde_json::json!({}),
        dry_run: false,
    };
    // Recorded, then the process died before the executor answered.
    let unconfirmed = journal.record_decision(decision("allow")).await.unwrap();
    // Executed, then the process died while verifying.
    let unverified = journal.record_decision(decision("allow")).await.unwrap();
    journal
        .record_result(unverified, ActionResult::Done, "restarted", Utc::now())
        .await
        .unwrap();
    let deferred = journal.record_decision(decision("defer")).await.unwrap();
    drop(journal);
    writer.join();

    let (journal, _writer) = crate::open(&config(&dir), JournalMetrics::default()).unwrap();
    let all = journal.decisions(incident).await.unwrap();
    let by_id = |id| all.iter().find(|d| d.id == id).unwrap();
    assert_eq!(by_id(unconfirmed).result, Some(ActionResult::Interrupted));
    assert!(by_id(unconfirmed).detail.as_deref().unwrap().contains("not repeated"));
    assert_eq!(by_id(unverified).outcome, Some(Verification::Timeout));
    assert_eq!(by_id(deferred).result, None, "only allowed decisions are settled");
    let history = journal
        .history(
            "docker/container/web".into(),
            Utc::now() - chrono::Duration::hours(1),
            None,
        )
        .await
        .unwrap();
    assert_eq!(history.in_flight, 0, "nothing is left in flight after a restart");
    assert_eq!(history.consecutive_failures, 1);
}

/// Feedback on adaptive thresholds: found from incidents, one bounded step
/// per incident and reason, and the coverage it leaves survives a restart;
/// a failed rule update keeps the time of the last good one.
#[tokio::test]
async fn threshold_feedback_is_stepped_once_per_incident_and_survives_reopening() {
    use homeostat_core::threshold::{feedback_events, series_key, FeedbackConfig, SeriesFit, ThresholdSpec};
    use thresholds::SpecRound;

    let dir = tempfile::tempdir().unwrap();
    let spec: ThresholdSpec = serde_yaml::from_str(
        "{name: latency, expr: x, alert: LatencyAboveBand, coverage: 0.99, slo_alerts: [LatencySLO], for: 1m}",
    )
    .unwrap();
    let a: LabelSet = [("service".to_owned(), "a".to_owned())].into();
    let adaptive = |fingerprint: &str, status, starts_at: &str| {
        let mut alert = alert(
            fingerprint,
            status,
            starts_at,
            &[
                ("alertname", "LatencyAboveBand"),
                ("homeostat_threshold", "latency"),
                ("service", "a"),
            ],
        );
        alert.annotations.insert("homeostat_series".into(), series_key(&a));
        alert
    };
    let (journal, writer) = crate::open(&config(&dir), JournalMetrics::default()).unwrap();
    // A false alarm: resolved, nothing done. An alarm acted on. An SLO alert
    // two hours later, with the adaptive alert silent: a miss.
    deliver(&journal, adaptive("f1", AlertStatus::Firing, T0)).await;
    deliver(&journal, adaptive("f1", AlertStatus::Resolved, T0)).await;
    let acted = deliver(&journal, adaptive("f2", AlertStatus::Firing, "2026-11-28T06:30:00Z")).await;
    let decision = journal
        .record_decision(decisions::NewDecision {
            incident_id: acted.incident_id,
            decided_at: Utc::now(),
            target_key: "svc/a".into(),
            action: "restart".into(),
            rule: None,
            attempt: 0,
            verdict: Verdict::Allow,
            reason: "test".into(),
            record: serde_json::json!({}),
            dry_run: false,
        })
        .await
        .unwrap();
    journal
        .record_result(decision, ActionResult::Done, "restarted", Utc::now())
        .await
        .unwrap();
    deliver(&journal, adaptive("f2", AlertStatus::Resolved, "2026-11-28T06:30:00Z")).await;
    let slo = |status| alert("s1", status, T1, &[("alertname", "LatencySLO"), ("service", "a")]);
    deliver(&journal, slo(AlertStatus::Firing)).await;
    deliver(&journal, slo(AlertStatus::Resolved)).await;

    let since = "2026-11-28T00:00:00Z".parse().unwrap();
    let names = vec!["LatencyAboveBand".to_owned(), "LatencySLO".to_owned()];
    let incidents = journal.incident_summaries(names.clone(), since).await.unwrap();
    assert_eq!(incidents.len(), 3);
    assert_eq!(
        incidents.iter().map(|i| i.acted).collect::<Vec<_>>(),
        [false, true, false]
    );
    let events = feedback_events(&spec, std::slice::from_ref(&a), &incidents);
    assert_eq!(events.len(), 2, "{events:?}");
    let record = |event| journal.record_feedback(event, spec.coverage, FeedbackConfig::default());
    let mut coverages = Vec::new();
    for event in events.clone() {
        let step = record(event).await.unwrap().unwrap();
        coverages.push((step.adjust.clone(), step.coverage_before, step.coverage_after));
    }
    assert_eq!(coverages[0].0, "widen");
    assert!((coverages[0].2 - 0.995).abs() < 1e-12, "{coverages:?}");
    assert_eq!(coverages[1].0, "tighten");
    assert!(
        (coverages[1].1 - 0.995).abs() < 1e-12 && (coverages[1].2 - 0.99).abs() < 1e-12,
        "{coverages:?}"
    );
    // Found again at the next round: not stepped twice.
    for event in events.clone() {
        assert_eq!(record(event).await.unwrap(), None);
    }
    // Another spec's step, on a series of the same key: kept apart.
    let mut other = events[0].clone();
    other.spec = "errors".into();
    other.incident_id = 4343;
    record(other).await.unwrap().unwrap();
    // The same false alarm marked false by a user: still one step. An alarm a
    // user confirmed that then resolved by itself: no widening.
    let mut marked = events[0].clone();
    marked.reason = homeostat_core::threshold::FeedbackReason::MarkedFalse;
    assert_eq!(record(marked).await.unwrap(), None);
    let mut confirmed = events[0].clone();
    confirmed.incident_id = 4242;
    confirmed.reason = homeostat_core::threshold::FeedbackReason::MarkedTrue;
    let kept = record(confirmed.clone()).await.unwrap().unwrap();
    assert_eq!(
        (kept.adjust.as_str(), kept.coverage_before),
        ("keep", kept.coverage_after)
    );
    confirmed.reason = homeostat_core::threshold::FeedbackReason::ResolvedWithoutAction;
    assert_eq!(record(confirmed).await.unwrap(), None);
    let fit = SeriesFit {
        labels: a.clone(),
        key: series_key(&a),
        coverage: 0.99,
        model: "ets".into(),
        points: 10,
        lower: 1.0,
        upper: 2.0,
        point: 1.5,
    };
    let round = |outcome| SpecRound {
        spec: "latency".into(),
        at: Utc::now(),
        fitted: vec![fit.clone()],
        skipped: vec![],
        outcome,
    };
    journal
        .record_round(vec![round(Ok("rules updated".into()))])
        .await
        .unwrap();
    journal
        .record_round(vec![round(Err("promtool said no".into()))])
        .await
        .unwrap();
    drop(journal);
    writer.join();

    let state = thresholds::read_state_at(&config(&dir).path).unwrap();
    assert_eq!(state.feedback.len(), 4, "{:#?}", state.feedback);
    assert_eq!(state.feedback[0].reason, "marked_true", "newest first");
    let update = &state.updates[0];
    assert!(!update.ok && update.detail == "promtool said no", "{update:?}");
    assert!(update.last_good_at.is_some_and(|t| t <= update.at), "{update:?}");
    assert_eq!(state.fits[0].fit["upper"], 2.0);
    // `thresholds render` reads the same coverages without opening for writing.
    let read_only = thresholds::read_coverages_at(&config(&dir).path).unwrap();
    assert_eq!(read_only.len(), 2, "{read_only:?}");
    assert!(
        (read_only["latency"][&series_key(&a)] - 0.99).abs() < 1e-12,
        "{read_only:?}"
    );
    assert!(
        (read_only["errors"][&series_key(&a)] - 0.995).abs() < 1e-12,
        "{read_only:?}"
    );
    let (journal, writer) = crate::open(&config(&dir), JournalMetrics::default()).unwrap();
    let now = journal.coverages("latency".into()).await.unwrap();
    assert_eq!(now.len(), 1);
    assert!((now[&series_key(&a)] - 0.99).abs() < 1e-12, "{now:?}");
    drop(journal);
    writer.join();
}

/// The circuit breaker counts failures across incidents on a target, and
/// closes when an incident escalated to a human resolves.
#[tokio::test]
async fn a_resolved_escalation_closes_the_circuit_breaker() {
    use super::decisions::NewDecision;
    let dir = tempfile::tempdir().unwrap();
    let (journal, _writer) = crate::open(&config(&dir), JournalMetrics::default()).unwrap();
    let target = "docker/container/web";
    let failures = || async {
        let since = Utc::now() - chrono::Duration::hours(1);
        journal
            .history(target.into(), since, None)
            .await
            .unwrap()
            .consecutive_failures
    };
    let decide = |incident: i64, verdict: &str| NewDecision {
        incident_id: incident,
        decided_at: Utc::now(),
        target_key: target.into(),
        action: "restart".into(),
        rule: Some("down".into()),
        attempt: 0,
        verdict: verdict.parse().unwrap(),
        reason: String::new(),
        record: serde_json::json!({}),
        dry_run: false,
    };
    let fail = |incident: i64| {
        let journal = journal.clone();
        let decision = decide(incident, "allow");
        async move {
            let id = journal.record_decision(decision).await.unwrap();
            journal
                .record_result(id, ActionResult::Done, "restarted", Utc::now())
                .await
                .unwrap();
            journal
                .record_outcome(id, Verification::Failure, Utc::now())
                .await
                .unwrap();
        }
    };
    let first = deliver(&journal, alert("one", AlertStatus::Firing, T0, &[]))
        .await
        .incident_id;
    fail(first).await;
    let second = deliver(&journal, alert("two", AlertStatus::Firing, T0, &[]))
        .await
        .incident_id;
    fail(second).await;
    fail(second).await;
    assert_eq!(failures().await, 3, "failures count across incidents");
    journal.record_decision(decide(second, "escalate")).await.unwrap();
    assert_eq!(failures().await, 3, "an escalation still firing keeps the breaker open");
    deliver(&journal, alert("two", AlertStatus::Resolved, T0, &[])).await;
    assert_eq!(failures().await, 0, "the escalated alert resolved: the breaker closes");
    let third = deliver(&journal, alert("three", AlertStatus::Firing, T0, &[]))
        .await
        .incident_id;
    fail(third).await;
    assert_eq!(failures().await, 1);
}

/// `journal.path` pointing at something else's file: refused, and the file
/// left as it was; the read-only commands refuse it too.
#[test]
fn a_file_homeostat_did_not_create_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE foo (x); INSERT INTO foo VALUES (1);")
        .unwrap();
    let before = std::fs::read(&other).unwrap();
    let mut config = config(&dir);
    config.path = other.clone();
    let err = crate::open(&config, JournalMetrics::default()).err().unwrap();
    assert!(
        matches!(&err, JournalError::Foreign { what, .. } if what.contains("other tables (foo)")),
        "{err}"
    );
    assert_eq!(std::fs::read(&other).unwrap(), before, "the foreign file was changed");
    let err = thresholds::read_state_at(&other).unwrap_err();
    assert!(err.to_string().contains("not a homeostat journal"), "{err}");

    let text = dir.path().join("notes.txt");
    std::fs::write(
        &text,
        "not a database, but long enough to look like a header to SQLite ........",
    )
    .unwrap();
    config.path = text.clone();
    let err = crate::open(&config, JournalMetrics::default()).err().unwrap();
    assert!(err.to_string().contains("is not an SQLite database"), "{err}");
    let err = policy::JournalReader::open(&text).err().unwrap();
    assert!(err.to_string().contains("is not an SQLite database"), "{err}");
}

/// Retention prunes what is older than the cutoff — processed deliveries,
/// resolved incidents with their decisions — and keeps firing incidents,
/// deliveries not yet processed, and every action the guard's budget counts.
#[tokio::test]
async fn retention_prunes_the_old_and_keeps_what_the_guard_counts() {
    use super::decisions::NewDecision;
    let dir = tempfile::tempdir().unwrap();
    let (journal, _writer) = crate::open(&config(&dir), JournalMetrics::default()).unwrap();
    let now = Utc::now();
    let days = chrono::Duration::days;
    let minutes = chrono::Duration::minutes;
    let target = "docker/container/web";
    let at = |t: DateTime<Utc>| t.to_rfc3339();
    let ingest = |fp: &'static str, status: AlertStatus, starts: DateTime<Utc>, received: DateTime<Utc>| {
        let journal = journal.clone();
        async move {
            let alert = alert(fp, status, &at(starts), &[("alertname", "ServiceDown")]);
            let delivery = journal
                .ingest(message(vec![alert]), received, slot().await)
                .await
                .unwrap();
            (delivery.id, delivery.events[0].incident_id)
        }
    };
    let act = |incident: i64, decided_at: DateTime<Utc>| {
        let journal = journal.clone();
        async move {
            journal
                .record_decision(NewDecision {
                    incident_id: incident,
                    decided_at,
                    target_key: target.into(),
                    action: "restart".into(),
                    rule: None,
                    attempt: 0,
                    verdict: Verdict::Allow,
                    reason: String::new(),
                    record: serde_json::json!({}),
                    dry_run: false,
                })
                .await
                .unwrap()
        }
    };
    // 40 days ago: an episode acted on and resolved, and one still firing.
    let (_, old) = ingest("fp-old", AlertStatus::Firing, now - days(40), now - days(40)).await;
    act(old, now - days(40)).await;
    ingest(
        "fp-old",
        AlertStatus::Resolved,
        now - days(40),
        now - days(40) + minutes(1),
    )
    .await;
    let (_, open) = ingest("fp-open", AlertStatus::Firing, now - days(40), now - days(40)).await;
    // 30 minutes ago: acted on 20 minutes ago, resolved 10 minutes ago.
    let (_, recent) = ingest("fp-new", AlertStatus::Firing, now - minutes(30), now - minutes(30)).await;
    act(recent, now - minutes(20)).await;
    let (processed, _) = ingest("fp-new", AlertStatus::Resolved, now - minutes(30), now - minutes(10)).await;
    journal.mark_processed(processed).await.unwrap();
    // Journalled with an old receipt time, not yet processed.
    ingest("fp-late", AlertStatus::Firing, now - days(40), now - days(40)).await;

    let pruned = journal.prune(now - days(30)).await.unwrap();
    assert_eq!(
        pruned,
        retention::Pruned {
            deliveries: 3,
            incidents: 1,
            decisions: 1,
            fits: 0,
            feedback: 0
        }
    );
    assert_eq!(journal.incident(old).await.unwrap(), None);
    assert!(journal.decisions(old).await.unwrap().is_empty());
    assert!(
        journal.incident(open).await.unwrap().is_some(),
        "a firing incident stays"
    );
    assert_eq!(journal.decisions(recent).await.unwrap().len(), 1);
    assert_eq!(
        journal.unprocessed().await.unwrap().len(),
        1,
        "unprocessed deliveries stay"
    );
    let history = journal
        .history(target.into(), now - chrono::Duration::hours(1), None)
        .await
        .unwrap();
    assert_eq!(
        history.recent_actions.len(),
        1,
        "the budget still counts the recent action"
    );
    assert_eq!(
        journal.prune(now - days(30)).await.unwrap().total(),
        0,
        "nothing left to prune"
    );
}
