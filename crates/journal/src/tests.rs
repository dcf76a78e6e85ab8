use super::*;
use crate::decisions::NewDecision;
use crate::leadership::Term;
use homeostat_core::alert::LabelSet;
use homeostat_core::decision::{ActionResult, Verdict, Verification};

/// Which database a test of both runs on.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A journal of a test's own, in an SQLite file or a PostgreSQL database
/// (on the server [`crate::pg_server`] starts); opened again as a restart does.
struct TestDb {
    dir: tempfile::TempDir,
    url: Option<String>,
}

impl TestDb {
    async fn new(backend: Backend) -> TestDb {
        let url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(crate::pg_server::database().await),
        };
        TestDb {
            dir: tempfile::tempdir().unwrap(),
            url,
        }
    }

    fn config(&self) -> JournalConfig {
        JournalConfig {
            url: self.url.clone(),
            // A restart after a "crash" (a dropped journal) leads again soon.
            lease: homeostat_core::duration::PromDuration(std::time::Duration::from_secs(1)),
            ..config(&self.dir)
        }
    }

    /// The PostgreSQL password, when it is PostgreSQL.
    fn password(&self) -> Option<&'static str> {
        self.url.as_ref().map(|_| crate::pg_server::PASSWORD)
    }

    /// The SQLite file, when it is one.
    fn path(&self) -> Option<PathBuf> {
        self.url.is_none().then(|| self.config().path)
    }

    /// Why opening fails (a test that expects it to).
    async fn refused(&self) -> String {
        match crate::connect(&self.config(), self.password(), JournalMetrics::default()).await {
            Ok(_) => panic!("the journal opened"),
            Err(e) => e.to_string(),
        }
    }

    /// Opens the journal, as its leader (on PostgreSQL, once the lease of
    /// a journal dropped before has expired).
    async fn open(&self) -> (Journal, JournalWriter) {
        let (journal, writer) = crate::connect(&self.config(), self.password(), JournalMetrics::default())
            .await
            .unwrap();
        until_term(&journal, |t| t != Term::Following).await;
        (journal, writer)
    }
}

/// Runs each of the tests named on both databases: `sqlite::NAME` and `postgres::NAME`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Backend::Sqlite).await
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Backend::Postgres).await
            })*
        }
    };
}

on_both!(
    one_incident_per_episode_through_its_whole_life,
    a_resolution_seen_first_is_recorded_closed,
    unprocessed_deliveries_survive_reopening,
    filters_and_pages,
    concurrent_deliveries_all_land_and_reach_the_queue_in_journal_order,
    a_late_resolution_of_an_earlier_episode_does_not_close_the_current_one,
    a_stop_mid_action_is_settled_at_start_and_never_repeated,
    threshold_feedback_is_stepped_once_per_incident_and_survives_reopening,
    a_resolved_escalation_closes_the_circuit_breaker,
    a_confounded_outcome_keeps_its_outside_changes_and_closes_the_circuit_breaker,
    retention_prunes_the_old_and_keeps_what_the_guard_counts,
    the_schedule_keeps_a_newer_next_check_and_vanish_closes_only_the_unseen,
    the_outbox_hands_out_what_is_due_soonest_first_and_backs_off_failures,
    a_proposal_is_answered_once_with_its_audit_entry_and_made_due,
    the_pause_survives_reopening,
    the_learned_policy_saves_only_on_its_base_revision_and_survives_reopening,
    a_whole_episode_in_one_group_commit_lands_in_order,
    anomaly_detectors_resume_from_their_last_save,
    a_known_good_spec_replaces_the_one_before_and_survives_reopening,
);

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

/// A time of the test's own, to the millisecond (as the journal stores it).
fn at(time: &str) -> DateTime<Utc> {
    time.parse().unwrap()
}

/// `alert` delivered at `received_at`.
async fn deliver_at(journal: &Journal, alert: Alert, received_at: &str) -> IncidentEvent {
    let delivery = journal
        .ingest(message(vec![alert]), at(received_at), slot().await)
        .await
        .unwrap();
    delivery.events.into_iter().next().unwrap()
}

/// A restart of one container decided now for `incident`, with `verdict`.
fn new_decision(incident: i64, verdict: &str) -> NewDecision {
    NewDecision {
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
    }
}

fn query(limit: usize) -> IncidentQuery {
    IncidentQuery {
        limit,
        ..IncidentQuery::default()
    }
}

async fn one_incident_per_episode_through_its_whole_life(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (journal, _writer) = db.open().await;
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

async fn a_resolution_seen_first_is_recorded_closed(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (journal, _writer) = db.open().await;
    let event = deliver(&journal, alert("fp9", AlertStatus::Resolved, T0, &[])).await;
    assert_eq!(event.kind, EventKind::Resolved);
    let incident = journal.incident(event.incident_id).await.unwrap().unwrap();
    assert_eq!(incident.status, AlertStatus::Resolved);
    assert_eq!(incident.alertname, "");
}

async fn unprocessed_deliveries_survive_reopening(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (journal, writer) = db.open().await;
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

    let (journal, _writer) = db.open().await;
    let pending = journal.unprocessed().await.unwrap();
    assert_eq!(pending, vec![second.clone()]);
    assert_eq!(pending[0].events.len(), 2);
    journal.mark_processed(second.id).await.unwrap();
    assert!(journal.unprocessed().await.unwrap().is_empty());
}

async fn filters_and_pages(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (journal, _writer) = db.open().await;
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

async fn concurrent_deliveries_all_land_and_reach_the_queue_in_journal_order(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (journal, _writer) = db.open().await;
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
        .execute_batch(&format!(
            "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = 99"
        ))
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

async fn a_late_resolution_of_an_earlier_episode_does_not_close_the_current_one(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (journal, _writer) = db.open().await;
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

async fn a_stop_mid_action_is_settled_at_start_and_never_repeated(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (journal, writer) = db.open().await;
    let incident = deliver(&journal, alert("fp", AlertStatus::Firing, T0, &[]))
        .await
        .incident_id;
    let decision = |verdict: &str| new_decision(incident, verdict);
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

    let (journal, _writer) = db.open().await;
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
async fn threshold_feedback_is_stepped_once_per_incident_and_survives_reopening(backend: Backend) {
    use homeostat_core::threshold::{
        feedback_events, series_key, Fallback, FeedbackConfig, SeriesFit, SeriesInsufficient, ThresholdSpec,
        INSUFFICIENT_HISTORY,
    };
    use thresholds::SpecRound;

    let db = TestDb::new(backend).await;
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
    let (journal, writer) = db.open().await;
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
        // A series too new for a band: journalled with its state and fallback.
        insufficient: vec![SeriesInsufficient {
            labels: LabelSet::new(),
            key: "{}".into(),
            state: INSUFFICIENT_HISTORY,
            reason: "35 points of history, 2880 needed".into(),
            points: 35,
            fallback: Some(Fallback {
                upper: Some(0.5),
                lower: None,
            }),
        }],
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
    let state = journal.threshold_state().await.unwrap();
    drop(journal);
    writer.join();

    assert_eq!(state.feedback.len(), 4, "{:#?}", state.feedback);
    assert_eq!(state.feedback[0].reason, "marked_true", "newest first");
    let update = &state.updates[0];
    assert!(!update.ok && update.detail == "promtool said no", "{update:?}");
    assert!(update.last_good_at.is_some_and(|t| t <= update.at), "{update:?}");
    let fitted = state.fits.iter().find(|f| f.series == series_key(&a)).unwrap();
    assert_eq!(fitted.fit["upper"], 2.0);
    let waiting = state.fits.iter().find(|f| f.series == "{}").unwrap();
    assert_eq!(waiting.fit["state"], INSUFFICIENT_HISTORY);
    assert_eq!(waiting.fit["fallback"]["upper"], 0.5);
    assert_eq!(waiting.fit["points"], 35);
    if let Some(path) = db.path() {
        // `thresholds show` and `render` read the file without opening it for writing.
        assert_eq!(thresholds::read_state_at(&path).unwrap(), state);
        let read_only = thresholds::read_coverages_at(&path).unwrap();
        assert_eq!(read_only.len(), 2, "{read_only:?}");
        assert!(
            (read_only["latency"][&series_key(&a)] - 0.99).abs() < 1e-12,
            "{read_only:?}"
        );
        assert!(
            (read_only["errors"][&series_key(&a)] - 0.995).abs() < 1e-12,
            "{read_only:?}"
        );
    }
    let (journal, writer) = db.open().await;
    let now = journal.coverages("latency".into()).await.unwrap();
    assert_eq!(now.len(), 1);
    assert!((now[&series_key(&a)] - 0.99).abs() < 1e-12, "{now:?}");
    drop(journal);
    writer.join();
}

/// The circuit breaker counts failures across incidents on a target, and
/// closes when an incident escalated to a human resolves.
async fn a_resolved_escalation_closes_the_circuit_breaker(backend: Backend) {
    use super::decisions::NewDecision;
    let db = TestDb::new(backend).await;
    let (journal, _writer) = db.open().await;
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
/// left as it was, whatever its `user_version` (another application's
/// migrations count too); the read-only commands and `policy import` refuse
/// it too.
#[test]
fn a_file_homeostat_did_not_create_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir);
    for (name, header, what) in [
        ("v0.db", "", "other tables (foo)"),
        (
            "v1.db",
            "PRAGMA user_version = 1;",
            "user_version 1 but not homeostat's tables (it holds foo)",
        ),
        ("v2.db", "PRAGMA user_version = 2;", "user_version 2"),
        ("v5.db", "PRAGMA user_version = 5;", "user_version 5"),
        (
            "app.db",
            "PRAGMA application_id = 42;",
            "another application (SQLite application_id 0x2a)",
        ),
    ] {
        let other = dir.path().join(name);
        rusqlite::Connection::open(&other)
            .unwrap()
            .execute_batch(&format!("{header} CREATE TABLE foo (x); INSERT INTO foo VALUES (1);"))
            .unwrap();
        let before = std::fs::read(&other).unwrap();
        config.path = other.clone();
        let err = crate::open(&config, JournalMetrics::default()).err().unwrap();
        assert!(
            matches!(&err, JournalError::Foreign { what: found, .. } if found.contains(what)),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(&*other.to_string_lossy()), "{err}");
        let err = policy::import(&other, "{}", "test").unwrap_err();
        assert!(err.to_string().contains("not a homeostat journal"), "{name}: {err}");
        let err = thresholds::read_state_at(&other).unwrap_err();
        assert!(err.to_string().contains("not a homeostat journal"), "{name}: {err}");
        assert_eq!(std::fs::read(&other).unwrap(), before, "{name} was changed");
        let mut lock = other.into_os_string();
        lock.push(".lock");
        assert!(!PathBuf::from(lock).exists(), "{name}: a lock file was left beside it");
    }

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
async fn retention_prunes_the_old_and_keeps_what_the_guard_counts(backend: Backend) {
    use super::decisions::NewDecision;
    let db = TestDb::new(backend).await;
    let (journal, _writer) = db.open().await;
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
    // A spec not recorded again for a month: its container is long gone.
    let spec = |instance: &str, recorded_at| known_good::KnownGood {
        instance: instance.into(),
        spec: serde_json::json!({}),
        healthy_since: recorded_at,
        recorded_at,
    };
    for (instance, age) in [("docker/container/gone", 40), ("docker/container/running", 1)] {
        journal
            .record_known_good(spec(instance, now - days(age)))
            .await
            .unwrap();
    }

    let pruned = journal.prune(now - days(30)).await.unwrap();
    assert_eq!(
        pruned,
        retention::Pruned {
            deliveries: 3,
            incidents: 1,
            decisions: 1,
            fits: 0,
            feedback: 0,
            known_good: 1,
        }
    );
    assert_eq!(journal.known_good("docker/container/gone".into()).await.unwrap(), None);
    assert!(journal
        .known_good("docker/container/running".into())
        .await
        .unwrap()
        .is_some());
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

/// A journal an older homeostat created, before journals carried the
/// marker: its own tables at its version are recognised, migrated, and marked.
#[tokio::test]
async fn a_journal_from_before_the_marker_is_recognised_and_marked() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir);
    migrate(&Connection::open(&config.path).unwrap(), 0, 3).unwrap();
    let (journal, writer) = crate::open(&config, JournalMetrics::default()).unwrap();
    deliver(&journal, alert("old", AlertStatus::Firing, T0, &[])).await;
    drop(journal);
    writer.join();
    let conn = Connection::open(&config.path).unwrap();
    let header = |pragma: &str| {
        conn.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get::<_, i64>(0))
            .unwrap()
    };
    assert_eq!(header("application_id"), APPLICATION_ID);
    assert_eq!(header("user_version"), SCHEMA_VERSION);
}

/// A journal made for this test: `n` deliveries, closed cleanly.
async fn filled_journal(config: &JournalConfig, n: usize) {
    let (journal, writer) = crate::open(config, JournalMetrics::default()).unwrap();
    for i in 0..n {
        let labels = [("payload", "x".repeat(200))];
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        deliver(&journal, alert(&format!("f{i}"), AlertStatus::Firing, T0, &labels)).await;
    }
    drop(journal);
    writer.join();
}

/// A truncated journal and one with a page overwritten are refused at
/// start, saying what to do, instead of starting "ready" and failing reads.
#[tokio::test]
async fn a_damaged_journal_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir);
    filled_journal(&config, 300).await;
    let good = std::fs::read(&config.path).unwrap();
    assert!(
        good.len() > 40 * 4096,
        "too small a journal to damage: {} bytes",
        good.len()
    );

    let truncated = good[..good.len() / 2].to_vec();
    let mut overwritten = good.clone();
    overwritten[20 * 4096..21 * 4096].fill(0xA5);
    for (what, bytes) in [("truncated", truncated), ("overwritten", overwritten)] {
        std::fs::write(&config.path, &bytes).unwrap();
        let err = crate::open(&config, JournalMetrics::default()).err().unwrap();
        assert!(matches!(err, JournalError::Damaged { .. }), "{what}: {err}");
        let text = err.to_string();
        assert!(
            text.contains(&*config.path.to_string_lossy())
                && text.contains(".recover")
                && text.contains("move the file aside"),
            "{what}: {text}"
        );
        assert_eq!(
            std::fs::read(&config.path).unwrap(),
            bytes,
            "{what}: the damaged journal was written to"
        );
    }
    std::fs::write(&config.path, &good).unwrap();
    let (journal, _writer) = crate::open(&config, JournalMetrics::default()).unwrap();
    assert_eq!(journal.incidents(query(1000)).await.unwrap().incidents.len(), 300);
}

/// Only one homeostat writes a journal: a second is refused, names the
/// first, and changes nothing (the first's running action stays running);
/// once the first has closed the journal, it can be opened again.
#[tokio::test]
async fn a_second_writer_on_the_same_journal_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir);
    let (journal, writer) = crate::open(&config, JournalMetrics::default()).unwrap();
    let incident = deliver(&journal, alert("busy", AlertStatus::Firing, T0, &[]))
        .await
        .incident_id;
    let decision = journal.record_decision(new_decision(incident, "allow")).await.unwrap();

    let err = crate::open(&config, JournalMetrics::default()).err().unwrap();
    let text = err.to_string();
    assert!(matches!(err, JournalError::InUse { .. }), "{text}");
    assert!(
        text.contains("in use by another homeostat process")
            && text.contains(&format!("pid {}", std::process::id()))
            && text.contains(&*config.path.to_string_lossy()),
        "{text}"
    );
    let recorded = journal.decisions(incident).await.unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].id, decision);
    assert_eq!(
        recorded[0].result, None,
        "the second open marked the first one's action"
    );
    deliver(&journal, alert("still-writing", AlertStatus::Firing, T0, &[])).await;

    drop(journal);
    writer.join();
    let (journal, _writer) = crate::open(&config, JournalMetrics::default()).unwrap();
    assert_eq!(journal.incidents(query(10)).await.unwrap().incidents.len(), 2);
}

/// Opens the PostgreSQL journal of `db` with a lease of `lease`, as one replica.
async fn replica(db: &TestDb, lease: std::time::Duration) -> Journal {
    let config = JournalConfig {
        lease: homeostat_core::duration::PromDuration(lease),
        ..db.config()
    };
    crate::connect(&config, db.password(), JournalMetrics::default())
        .await
        .unwrap()
        .0
}

/// Waits (10 s at most) until `journal`'s leadership is as `wanted` says.
async fn until_term(journal: &Journal, wanted: impl Fn(Term) -> bool) -> Term {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let term = journal.leadership().term();
        if wanted(term) {
            return term;
        }
        assert!(std::time::Instant::now() < deadline, "still {term:?} after 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Several replicas share a PostgreSQL journal: each journals what it
/// receives, one leads. A follower cannot record a decision; once another
/// replica has taken the lease (as when the leader was paused past it),
/// the deposed leader can record neither a result nor an outcome, and it
/// stops acting at its next renewal.
#[tokio::test]
async fn replicas_elect_one_leader_and_a_deposed_one_writes_nothing() {
    let db = TestDb::new(Backend::Postgres).await;
    let lease = std::time::Duration::from_secs(2);
    let leader = replica(&db, lease).await;
    assert_eq!(leader.leadership().term(), Term::Leading(1), "alone, it leads at once");
    let follower = replica(&db, lease).await;
    assert_eq!(follower.leadership().term(), Term::Following);
    assert!(!follower.leadership().may_act());

    // Both journal deliveries, into the same incidents.
    let incident = deliver(&follower, alert("shared", AlertStatus::Firing, T0, &[]))
        .await
        .incident_id;
    let repeat = deliver(&leader, alert("shared", AlertStatus::Firing, T0, &[])).await;
    assert_eq!((repeat.kind, repeat.incident_id), (EventKind::Repeated, incident));

    let err = follower
        .record_decision(new_decision(incident, "allow"))
        .await
        .unwrap_err();
    assert!(matches!(err, JournalError::NotLeading { .. }), "{err}");
    let decision = leader.record_decision(new_decision(incident, "allow")).await.unwrap();

    // Another replica takes over, as if the leader had been paused past its lease.
    let admin = raw_session(db.url.as_deref().unwrap()).await;
    admin
        .execute(
            "UPDATE leader SET term = term + 1, holder = 'another replica',
                    expires_at = clock_timestamp() + interval '1 hour'",
            &[],
        )
        .await
        .unwrap();
    let err = leader
        .record_result(decision, ActionResult::Done, "restarted", Utc::now())
        .await
        .unwrap_err();
    assert!(matches!(err, JournalError::NotLeading { .. }), "{err}");
    let err = leader
        .record_outcome(decision, Verification::Success, Utc::now())
        .await
        .unwrap_err();
    assert!(matches!(err, JournalError::NotLeading { .. }), "{err}");
    let err = leader
        .queue_notifications(
            incident,
            vec!["pager".into()],
            "escalation",
            &serde_json::json!({}),
            Utc::now(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, JournalError::NotLeading { .. }), "{err}");
    assert!(leader.notifications(incident).await.unwrap().is_empty());
    assert!(leader.record_decision(new_decision(incident, "allow")).await.is_err());
    let recorded = leader.decisions(incident).await.unwrap();
    assert_eq!(recorded.len(), 1, "nothing recorded after the takeover");
    assert_eq!((recorded[0].result, recorded[0].outcome), (None, None));
    until_term(&leader, |t| t == Term::Following).await;
    assert!(!leader.leadership().may_act());
    assert_eq!(
        follower.leadership().term(),
        Term::Following,
        "the lease is taken for an hour"
    );
}

/// When the leader dies (its journal dropped without a release, as `kill
/// -9` leaves it), a follower takes over once the lease has expired, and
/// settles the action the dead leader left without a result: interrupted,
/// never repeated. A leader that stops cleanly releases the lease, and the
/// next replica leads at once.
#[tokio::test]
async fn a_follower_takes_over_a_dead_leader_and_settles_its_action() {
    let db = TestDb::new(Backend::Postgres).await;
    let lease = std::time::Duration::from_secs(1);
    let leader = replica(&db, lease).await;
    let incident = deliver(&leader, alert("busy", AlertStatus::Firing, T0, &[]))
        .await
        .incident_id;
    let decision = leader.record_decision(new_decision(incident, "allow")).await.unwrap();
    let follower = replica(&db, lease).await;
    assert_eq!(follower.leadership().term(), Term::Following);

    let died = std::time::Instant::now();
    drop(leader);
    let term = until_term(&follower, |t| t != Term::Following).await;
    assert_eq!(term, Term::Leading(2));
    let failover = died.elapsed();
    assert!(
        failover >= std::time::Duration::from_millis(500),
        "took over after {failover:?}, before the lease could have expired"
    );
    assert!(follower.leadership().may_act());
    let settled = &follower.decisions(incident).await.unwrap()[0];
    assert_eq!(
        (settled.id, settled.result),
        (decision, Some(ActionResult::Interrupted))
    );
    assert!(settled.detail.as_deref().unwrap_or_default().contains("not repeated"));

    // A clean stop: the next replica leads at once, in the next term.
    follower.step_down().await;
    assert_eq!(follower.leadership().term(), Term::Following);
    let next = replica(&db, std::time::Duration::from_secs(60)).await;
    assert_eq!(next.leadership().term(), Term::Leading(3));
}

/// `schedule` sets a next check only over the one it saw (a delivery
/// meanwhile, or another look, wins); `due` and `next_due` see firing
/// incidents only, soonest first; `implicate` keeps the first; `vanish`
/// closes only those still firing and not delivered since its cutoff.
async fn the_schedule_keeps_a_newer_next_check_and_vanish_closes_only_the_unseen(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (journal, _writer) = db.open().await;
    let firing = |fp: &str| alert(fp, AlertStatus::Firing, T0, &[]);
    let a = deliver_at(&journal, firing("a"), "2026-11-28T06:01:00Z")
        .await
        .incident_id;
    let b = deliver_at(&journal, firing("b"), "2026-11-28T06:02:00Z")
        .await
        .incident_id;
    let c = deliver_at(&journal, firing("c"), "2026-11-28T06:03:00Z")
        .await
        .incident_id;
    let next_check = |id| {
        let journal = journal.clone();
        async move { journal.incident(id).await.unwrap().unwrap().next_check }
    };
    assert_eq!(
        next_check(a).await,
        Some(at("2026-11-28T06:01:00Z")),
        "a delivery makes it due"
    );

    let seen_a = Some(at("2026-11-28T06:01:00Z"));
    assert!(journal
        .schedule(a, seen_a, Some(at("2026-11-28T09:00:00Z")))
        .await
        .unwrap());
    assert!(
        !journal
            .schedule(a, seen_a, Some(at("2026-11-28T08:00:00Z")))
            .await
            .unwrap(),
        "a second look from the same state loses"
    );
    assert_eq!(next_check(a).await, Some(at("2026-11-28T09:00:00Z")));
    // Cleared, then set again from "nothing due".
    assert!(journal
        .schedule(c, Some(at("2026-11-28T06:03:00Z")), None)
        .await
        .unwrap());
    assert_eq!(next_check(c).await, None);
    assert!(journal
        .schedule(c, None, Some(at("2026-11-28T08:00:00Z")))
        .await
        .unwrap());
    assert!(!journal
        .schedule(c, None, Some(at("2026-11-28T07:00:00Z")))
        .await
        .unwrap());
    // A delivery between the reconciler's read and its write wins.
    deliver_at(&journal, firing("b"), "2026-11-28T06:04:00Z").await;
    let seen_b = Some(at("2026-11-28T06:02:00Z"));
    assert!(!journal
        .schedule(b, seen_b, Some(at("2026-11-28T10:00:00Z")))
        .await
        .unwrap());
    assert_eq!(next_check(b).await, Some(at("2026-11-28T06:04:00Z")));

    let due = |now: &str, limit| {
        let (journal, now) = (journal.clone(), at(now));
        async move {
            let due = journal.due(now, limit).await.unwrap();
            due.iter()
                .map(|d| (d.incident_id, d.next_check.to_rfc3339()))
                .collect::<Vec<_>>()
        }
    };
    let (b_at, c_at, a_at) = (
        (b, "2026-11-28T06:04:00+00:00".to_owned()),
        (c, "2026-11-28T08:00:00+00:00".to_owned()),
        (a, "2026-11-28T09:00:00+00:00".to_owned()),
    );
    assert_eq!(due("2026-11-28T06:03:59Z", 10).await, vec![]);
    assert_eq!(
        due("2026-11-28T06:04:00Z", 10).await,
        vec![b_at.clone()],
        "at or before now"
    );
    assert_eq!(due("2026-11-28T08:30:00Z", 10).await, vec![b_at.clone(), c_at.clone()]);
    assert_eq!(
        due("2026-11-28T12:00:00Z", 10).await,
        vec![b_at.clone(), c_at.clone(), a_at.clone()]
    );
    assert_eq!(due("2026-11-28T12:00:00Z", 2).await, vec![b_at.clone(), c_at.clone()]);
    assert_eq!(journal.next_due().await.unwrap(), Some(at("2026-11-28T06:04:00Z")));
    // A resolved incident is never due, nor scheduled again.
    deliver_at(
        &journal,
        alert("b", AlertStatus::Resolved, T0, &[]),
        "2026-11-28T06:05:00Z",
    )
    .await;
    assert_eq!(due("2026-11-28T12:00:00Z", 10).await, vec![c_at.clone(), a_at.clone()]);
    assert_eq!(journal.next_due().await.unwrap(), Some(at("2026-11-28T08:00:00Z")));
    assert!(!journal
        .schedule(b, None, Some(at("2026-11-28T07:00:00Z")))
        .await
        .unwrap());
    assert_eq!(next_check(b).await, None);

    let mut open = journal.firing().await.unwrap();
    open.sort_by_key(|f| f.incident_id);
    assert_eq!(
        open,
        vec![
            schedule::Firing {
                incident_id: a,
                fingerprint: "a".into(),
                last_seen: at("2026-11-28T06:01:00Z"),
            },
            schedule::Firing {
                incident_id: c,
                fingerprint: "c".into(),
                last_seen: at("2026-11-28T06:03:00Z"),
            },
        ]
    );

    journal.implicate(a, "registry/web@sha256:1".into()).await.unwrap();
    journal.implicate(a, "registry/web@sha256:2".into()).await.unwrap();
    let implicated = journal.incident(a).await.unwrap().unwrap().implicated;
    assert_eq!(
        implicated.as_deref(),
        Some("registry/web@sha256:1"),
        "the first is kept"
    );

    // c is delivered again after the cutoff, b is resolved, 4242 does not exist.
    deliver_at(&journal, firing("c"), "2026-11-28T06:10:00Z").await;
    let cutoff = at("2026-11-28T06:06:00Z");
    let closed = journal
        .vanish(vec![a, b, c, 4242], cutoff, at("2026-11-28T06:30:00Z"))
        .await
        .unwrap();
    assert_eq!(closed, 1);
    let gone = journal.incident(a).await.unwrap().unwrap();
    assert_eq!(
        (gone.status, gone.vanished, gone.resolved_at, gone.next_check),
        (AlertStatus::Resolved, true, Some(at("2026-11-28T06:30:00Z")), None)
    );
    let kept = journal.incident(c).await.unwrap().unwrap();
    assert_eq!((kept.status, kept.vanished), (AlertStatus::Firing, false));
    let resolved = journal.incident(b).await.unwrap().unwrap();
    assert!(!resolved.vanished, "a resolved incident is not vanished");
    assert_eq!(
        journal
            .firing()
            .await
            .unwrap()
            .iter()
            .map(|f| f.incident_id)
            .collect::<Vec<_>>(),
        vec![c]
    );
    assert_eq!(journal.next_due().await.unwrap(), Some(at("2026-11-28T06:10:00Z")));
    assert_eq!(
        journal
            .vanish(vec![a], cutoff, at("2026-11-28T06:31:00Z"))
            .await
            .unwrap(),
        0,
        "closed once"
    );
    // The fingerprint is free again: it firing later is a new incident.
    let back = deliver_at(&journal, firing("a"), "2026-11-28T06:40:00Z").await;
    assert_eq!(back.kind, EventKind::Opened);
    assert!(back.incident_id > c, "{back:?}");
}

/// The outbox: one notification per sink, kept across a reopen; only due
/// ones are handed out, soonest first; a failed attempt backs off, a
/// success records `sent_at` once, and a resolved or failed one is no
/// longer due.
async fn the_outbox_hands_out_what_is_due_soonest_first_and_backs_off_failures(backend: Backend) {
    use notifications::{Attempt, Notification, NotificationStatus};

    let db = TestDb::new(backend).await;
    let (journal, writer) = db.open().await;
    let x = deliver_at(
        &journal,
        alert("x", AlertStatus::Firing, T0, &[]),
        "2026-11-28T06:00:00Z",
    )
    .await
    .incident_id;
    let y = deliver_at(
        &journal,
        alert("y", AlertStatus::Firing, T0, &[]),
        "2026-11-28T06:00:00Z",
    )
    .await
    .incident_id;
    let escalated = serde_json::json!({"incident": x, "summary": "web is down"});
    let sinks = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    journal
        .queue_notifications(
            x,
            sinks(&["slack", "email"]),
            "escalated",
            &escalated,
            at("2026-11-28T07:00:00Z"),
        )
        .await
        .unwrap();
    journal
        .queue_notifications(
            y,
            sinks(&["slack"]),
            "notify",
            &serde_json::json!({}),
            at("2026-11-28T06:30:00Z"),
        )
        .await
        .unwrap();
    journal
        .queue_notifications(y, vec![], "notify", &serde_json::json!({}), at("2026-11-28T06:00:00Z"))
        .await
        .unwrap();
    drop(journal);
    writer.join();

    let (journal, _writer) = db.open().await;
    let queued = journal.notifications(x).await.unwrap();
    assert_eq!(queued.len(), 2, "{queued:#?}");
    let (x_slack, x_email) = (queued[0].id, queued[1].id);
    assert_eq!(
        queued[0],
        Notification {
            id: x_slack,
            incident_id: x,
            sink: "slack".into(),
            event: "escalated".into(),
            body: escalated.clone(),
            created_at: at("2026-11-28T07:00:00Z"),
            status: NotificationStatus::Pending,
            attempts: 0,
            next_attempt: Some(at("2026-11-28T07:00:00Z")),
            last_error: None,
            sent_at: None,
            resolved_at: None,
            incident: (AlertStatus::Firing, None),
        }
    );
    assert_eq!((queued[1].sink.as_str(), queued[1].body.clone()), ("email", escalated));
    let y_queued = journal.notifications(y).await.unwrap();
    assert_eq!(y_queued.len(), 1, "no sinks, nothing queued: {y_queued:#?}");
    let y_slack = y_queued[0].id;

    let due = |now: &str, limit| {
        let (journal, now) = (journal.clone(), at(now));
        async move {
            let due = journal.due_notifications(now, limit).await.unwrap();
            due.iter().map(|n| n.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(
        journal.next_notification().await.unwrap(),
        Some(at("2026-11-28T06:30:00Z"))
    );
    assert_eq!(due("2026-11-28T06:29:59Z", 10).await, Vec::<i64>::new());
    assert_eq!(due("2026-11-28T06:59:59Z", 10).await, vec![y_slack]);

    let attempt = |id, status, attempts, next: Option<&str>, error: Option<&str>, time: &str, delivered| Attempt {
        id,
        status,
        attempts,
        next_attempt: next.map(at),
        error: error.map(str::to_owned),
        at: at(time),
        delivered,
    };
    // y's goes out; sent, it is looked at again at 08:00 (a refresh).
    journal
        .record_attempt(attempt(
            y_slack,
            NotificationStatus::Sent,
            0,
            Some("2026-11-28T08:00:00Z"),
            None,
            "2026-11-28T06:31:00Z",
            true,
        ))
        .await
        .unwrap();
    // x's slack fails: it backs off to 07:05; email is still due at 07:00.
    journal
        .record_attempt(attempt(
            x_slack,
            NotificationStatus::Pending,
            1,
            Some("2026-11-28T07:05:00Z"),
            Some("connection refused"),
            "2026-11-28T07:00:00Z",
            false,
        ))
        .await
        .unwrap();
    assert_eq!(due("2026-11-28T07:01:00Z", 10).await, vec![x_email]);
    assert_eq!(due("2026-11-28T07:05:00Z", 10).await, vec![x_email, x_slack]);
    assert_eq!(due("2026-11-28T08:00:00Z", 10).await, vec![x_email, x_slack, y_slack]);
    assert_eq!(due("2026-11-28T08:00:00Z", 2).await, vec![x_email, x_slack]);
    assert_eq!(
        journal.next_notification().await.unwrap(),
        Some(at("2026-11-28T07:00:00Z"))
    );
    let backed_off = &journal.notifications(x).await.unwrap()[0];
    assert_eq!(
        (
            backed_off.status,
            backed_off.attempts,
            backed_off.last_error.as_deref(),
            backed_off.sent_at
        ),
        (NotificationStatus::Pending, 1, Some("connection refused"), None)
    );

    // The retry succeeds, and a later refresh does not move `sent_at`.
    journal
        .record_attempt(attempt(
            x_slack,
            NotificationStatus::Sent,
            0,
            None,
            None,
            "2026-11-28T07:05:00Z",
            true,
        ))
        .await
        .unwrap();
    journal
        .record_attempt(attempt(
            x_slack,
            NotificationStatus::Sent,
            0,
            None,
            None,
            "2026-11-28T07:30:00Z",
            true,
        ))
        .await
        .unwrap();
    // Email gives up.
    journal
        .record_attempt(attempt(
            x_email,
            NotificationStatus::Failed,
            5,
            None,
            Some("gave up"),
            "2026-11-28T07:10:00Z",
            false,
        ))
        .await
        .unwrap();
    // y's incident ends and its sink is told.
    deliver_at(
        &journal,
        alert("y", AlertStatus::Resolved, T0, &[]),
        "2026-11-28T07:50:00Z",
    )
    .await;
    journal
        .record_attempt(attempt(
            y_slack,
            NotificationStatus::Resolved,
            0,
            None,
            None,
            "2026-11-28T08:00:00Z",
            true,
        ))
        .await
        .unwrap();
    assert_eq!(due("2026-11-29T00:00:00Z", 10).await, Vec::<i64>::new());
    assert_eq!(journal.next_notification().await.unwrap(), None);

    let view = |n: &Notification| {
        (
            n.id,
            n.status,
            n.attempts,
            n.next_attempt,
            n.last_error.clone(),
            n.sent_at,
            n.resolved_at,
            n.incident,
        )
    };
    let x_now: Vec<_> = journal.notifications(x).await.unwrap().iter().map(view).collect();
    assert_eq!(
        x_now,
        vec![
            (
                x_slack,
                NotificationStatus::Sent,
                0,
                None,
                None,
                Some(at("2026-11-28T07:05:00Z")),
                None,
                (AlertStatus::Firing, None)
            ),
            (
                x_email,
                NotificationStatus::Failed,
                5,
                None,
                Some("gave up".into()),
                None,
                None,
                (AlertStatus::Firing, None)
            ),
        ]
    );
    let y_now: Vec<_> = journal.notifications(y).await.unwrap().iter().map(view).collect();
    assert_eq!(
        y_now,
        vec![(
            y_slack,
            NotificationStatus::Resolved,
            0,
            None,
            None,
            Some(at("2026-11-28T06:31:00Z")),
            Some(at("2026-11-28T08:00:00Z")),
            (AlertStatus::Resolved, Some(at("2026-11-28T07:50:00Z"))),
        )]
    );
}

/// `answer` answers only the incident's latest, unexpired, unanswered
/// proposal, once: the answer, its audit entry and the incident's next
/// look (the answer's time) land together, and a second answer changes
/// nothing. `audit` lists operator actions newest first.
async fn a_proposal_is_answered_once_with_its_audit_entry_and_made_due(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (journal, _writer) = db.open().await;
    let incident = deliver_at(
        &journal,
        alert("p", AlertStatus::Firing, T0, &[]),
        "2026-11-28T06:01:00Z",
    )
    .await
    .incident_id;
    // Waiting for a human: nothing due.
    assert!(journal
        .schedule(incident, Some(at("2026-11-28T06:01:00Z")), None)
        .await
        .unwrap());
    let entry = |time: &str, who: &str, action: &str, reason: &str| audit::AuditEntry {
        at: at(time),
        who: who.into(),
        role: "operator".into(),
        action: action.into(),
        subject: Some(incident.to_string()),
        reason: Some(reason.into()),
    };
    let an_hour_ago = Utc::now() - chrono::Duration::hours(1);

    let early = entry("2026-11-28T06:50:00Z", "alice", "approve", "too early");
    assert_eq!(
        journal.answer(incident, true, early, an_hour_ago).await.unwrap(),
        None,
        "no proposal yet"
    );
    assert_eq!(
        journal.audit(10).await.unwrap(),
        vec![],
        "a refused answer is not audited"
    );

    let proposal = journal
        .record_decision(new_decision(incident, "proposed"))
        .await
        .unwrap();
    let expired = entry("2026-11-28T06:55:00Z", "alice", "approve", "expired");
    assert_eq!(
        journal
            .answer(incident, true, expired, Utc::now() + chrono::Duration::seconds(1))
            .await
            .unwrap(),
        None,
        "a proposal made before `proposed_after` has expired"
    );
    let pause = audit::AuditEntry {
        subject: None,
        ..entry("2026-11-28T07:00:00Z", "carol", "pause", "maintenance")
    };
    journal.record_audit(pause.clone()).await.unwrap();

    let reject = entry("2026-11-28T07:10:00Z", "alice", "reject", "not during the sale");
    assert_eq!(
        journal
            .answer(incident, false, reject.clone(), an_hour_ago)
            .await
            .unwrap(),
        Some(proposal)
    );
    let answered = approvals::Answer {
        approved: false,
        who: "alice".into(),
        at: at("2026-11-28T07:10:00Z"),
        reason: Some("not during the sale".into()),
    };
    assert_eq!(journal.approval(proposal).await.unwrap(), Some(answered.clone()));
    let now_due = journal.incident(incident).await.unwrap().unwrap().next_check;
    assert_eq!(
        now_due,
        Some(at("2026-11-28T07:10:00Z")),
        "the answer makes the incident due"
    );

    // Bob's approval comes second: refused, and neither answer nor audit changes.
    let late = entry("2026-11-28T07:11:00Z", "bob", "approve", "go");
    assert_eq!(journal.answer(incident, true, late, an_hour_ago).await.unwrap(), None);
    assert_eq!(journal.approval(proposal).await.unwrap(), Some(answered));
    assert_eq!(journal.audit(10).await.unwrap(), vec![reject.clone(), pause]);
    assert_eq!(journal.audit(1).await.unwrap(), vec![reject]);

    // A proposal that is no longer the incident's latest decision is not open.
    let superseded = journal
        .record_decision(new_decision(incident, "proposed"))
        .await
        .unwrap();
    journal.record_decision(new_decision(incident, "defer")).await.unwrap();
    let approve = entry("2026-11-28T07:20:00Z", "bob", "approve", "go");
    assert_eq!(
        journal.answer(incident, true, approve, an_hour_ago).await.unwrap(),
        None
    );
    assert_eq!(journal.approval(superseded).await.unwrap(), None);
    // A new one is, to one of several operators answering at once.
    let second = journal
        .record_decision(new_decision(incident, "proposed"))
        .await
        .unwrap();
    let answers: Vec<_> = (0..8)
        .map(|i| {
            let journal = journal.clone();
            let entry = entry("2026-11-28T07:20:00Z", &format!("op{i}"), "approve", "go");
            tokio::spawn(async move { (i, journal.answer(incident, true, entry, an_hour_ago).await.unwrap()) })
        })
        .collect();
    let mut taken = Vec::new();
    for task in answers {
        let (i, answered) = task.await.unwrap();
        if let Some(id) = answered {
            taken.push((i, id));
        }
    }
    assert_eq!(taken.len(), 1, "answered once: {taken:?}");
    assert_eq!(taken[0].1, second);
    let winner = journal.approval(second).await.unwrap().unwrap();
    assert_eq!((winner.approved, winner.who), (true, format!("op{}", taken[0].0)));
    // A resolved incident's proposal is not open.
    let third = journal
        .record_decision(new_decision(incident, "proposed"))
        .await
        .unwrap();
    deliver_at(
        &journal,
        alert("p", AlertStatus::Resolved, T0, &[]),
        "2026-11-28T07:30:00Z",
    )
    .await;
    let after = entry("2026-11-28T07:40:00Z", "bob", "approve", "go");
    assert_eq!(journal.answer(incident, true, after, an_hour_ago).await.unwrap(), None);
    assert_eq!(journal.approval(third).await.unwrap(), None);
    assert_eq!(journal.audit(10).await.unwrap().len(), 3);
}

/// The pause switch is journalled: it survives a reopen, either way.
async fn the_pause_survives_reopening(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (journal, writer) = db.open().await;
    assert!(!journal.paused().await.unwrap(), "a new journal is not paused");
    journal.set_paused(true).await.unwrap();
    assert!(journal.paused().await.unwrap());
    drop(journal);
    writer.join();

    let (journal, writer) = db.open().await;
    assert!(journal.paused().await.unwrap(), "still paused after a reopen");
    journal.set_paused(false).await.unwrap();
    assert!(!journal.paused().await.unwrap());
    drop(journal);
    writer.join();

    let (journal, _writer) = db.open().await;
    assert!(!journal.paused().await.unwrap(), "still resumed after a reopen");
}

/// A save of the anomaly detectors' states replaces the one before (what it
/// does not hold is dropped) and survives a reopen.
async fn anomaly_detectors_resume_from_their_last_save(backend: Backend) {
    use anomaly::AnomalyState;
    use homeostat_core::detect::Snapshot;
    let state = |spec: &str, service: &str, last_point: i64, history: Vec<f64>| AnomalyState {
        spec: spec.into(),
        labels: [("service".to_owned(), service.to_owned())].into_iter().collect(),
        last_point,
        saved_at: at("2026-12-07T10:00:00Z"),
        snapshot: Snapshot {
            points: history.len() as u64,
            extremes_range: Some((0.5, 2.0)),
            extremes_resting: 3,
            art_range: Some((0.0, 2.5)),
            history,
            alarms: vec![0.5],
        },
    };
    let db = TestDb::new(backend).await;
    let (journal, writer) = db.open().await;
    assert!(journal.anomaly_states().await.unwrap().is_empty());
    journal
        .save_anomaly(vec![
            state("latency", "a", 100, vec![1.0, 2.0]),
            state("latency", "b", 100, vec![0.5]),
            state("errors", "a", 90, vec![]),
        ])
        .await
        .unwrap();
    journal
        .save_anomaly(vec![
            state("latency", "a", 115, vec![1.0, 2.0, 1.5]),
            state("latency", "b", 100, vec![0.5]),
            state("errors", "a", 90, vec![]),
        ])
        .await
        .unwrap();
    drop(journal);
    writer.join();

    let (journal, _writer) = db.open().await;
    let saved = journal.anomaly_states().await.unwrap();
    assert_eq!(saved.len(), 3);
    let a = saved
        .iter()
        .find(|s| s.spec == "latency" && s.labels["service"] == "a")
        .unwrap();
    assert_eq!(*a, state("latency", "a", 115, vec![1.0, 2.0, 1.5]));
    // A save without a spec's series drops them.
    journal
        .save_anomaly(vec![state("errors", "a", 95, vec![])])
        .await
        .unwrap();
    let saved = journal.anomaly_states().await.unwrap();
    assert_eq!(saved.iter().map(|s| s.spec.as_str()).collect::<Vec<_>>(), ["errors"]);
}

/// An instance's known good spec is replaced by the next one recorded,
/// other instances keep theirs, and both survive a reopen.
async fn a_known_good_spec_replaces_the_one_before_and_survives_reopening(backend: Backend) {
    use known_good::KnownGood;
    let known = |instance: &str, memory: i64, since: &str| KnownGood {
        instance: instance.into(),
        spec: serde_json::json!({"memory": memory, "networks": {"demo": ["web"]}}),
        healthy_since: at(since),
        recorded_at: at("2026-12-07T10:00:00Z"),
    };
    let db = TestDb::new(backend).await;
    let (journal, writer) = db.open().await;
    assert_eq!(journal.known_good("docker/container/a".into()).await.unwrap(), None);
    let first = known("docker/container/a", 256, "2026-12-07T09:00:00Z");
    journal.record_known_good(first).await.unwrap();
    let second = known("docker/container/a", 512, "2026-12-07T09:30:00Z");
    journal.record_known_good(second.clone()).await.unwrap();
    let other = known("docker/container/b", 128, "2026-12-07T08:00:00Z");
    journal.record_known_good(other.clone()).await.unwrap();
    drop(journal);
    writer.join();
    let (journal, _writer) = db.open().await;
    assert_eq!(
        journal.known_good("docker/container/a".into()).await.unwrap(),
        Some(second)
    );
    assert_eq!(
        journal.known_good("docker/container/b".into()).await.unwrap(),
        Some(other)
    );
}

/// `record_learned` saves only on top of the stored revision (`None`, with
/// nothing saved, when its base is stale or ahead), each save one revision
/// up; the state survives a reopen.
async fn the_learned_policy_saves_only_on_its_base_revision_and_survives_reopening(backend: Backend) {
    use policy::{Learned, Reward};

    let db = TestDb::new(backend).await;
    let (journal, writer) = db.open().await;
    assert_eq!(journal.policy().await.unwrap(), None);
    assert_eq!(journal.policy_revision().await.unwrap(), 0);
    let learned = |decision_id: i64, base_revision: i64, state: &str| Learned {
        reward: Reward {
            decision_id,
            at: at("2026-11-28T07:00:00Z"),
            policy_key: "ServiceDown/restart".into(),
            action: "restart".into(),
            reward: 1.0,
            outcome: serde_json::json!({"outcome": "success"}),
        },
        base_revision,
        state: state.into(),
    };
    let before = Utc::now() - chrono::Duration::seconds(1);

    assert_eq!(
        journal.record_learned(learned(1, 0, r#"{"n":1}"#)).await.unwrap(),
        Some(1)
    );
    // Another writer learned from the same base: refused.
    assert_eq!(
        journal.record_learned(learned(2, 0, r#"{"n":"lost"}"#)).await.unwrap(),
        None
    );
    let stored = journal.policy().await.unwrap().unwrap();
    assert_eq!(
        (stored.revision, stored.state.as_str(), stored.source.as_str()),
        (1, r#"{"n":1}"#, "learned")
    );
    assert!(
        before <= stored.updated_at && stored.updated_at <= Utc::now(),
        "{stored:?}"
    );
    // Reloaded, it learns again on top.
    assert_eq!(
        journal.record_learned(learned(2, 1, r#"{"n":2}"#)).await.unwrap(),
        Some(2)
    );
    assert_eq!(
        journal.record_learned(learned(3, 7, r#"{"n":"ahead"}"#)).await.unwrap(),
        None,
        "a base ahead is refused too"
    );
    assert_eq!(journal.policy_revision().await.unwrap(), 2);
    if let Some(path) = db.path() {
        // Only the saved rewards were kept (SQLite's reader can tell).
        let rewards = policy::JournalReader::open(&path).unwrap().rewards().unwrap();
        assert_eq!(rewards.iter().map(|r| r.decision_id).collect::<Vec<_>>(), vec![1, 2]);
    }
    drop(journal);
    writer.join();

    let (journal, _writer) = db.open().await;
    assert_eq!(journal.policy_revision().await.unwrap(), 2);
    let stored = journal.policy().await.unwrap().unwrap();
    assert_eq!((stored.revision, stored.state.as_str()), (2, r#"{"n":2}"#));
    assert_eq!(
        journal.record_learned(learned(4, 1, r#"{"n":"stale"}"#)).await.unwrap(),
        None
    );
    assert_eq!(
        journal.record_learned(learned(4, 2, r#"{"n":3}"#)).await.unwrap(),
        Some(3)
    );
    // Writers learning on the same base at once: one saves, the rest are refused.
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let journal = journal.clone();
            let state = format!(r#"{{"writer":{i}}}"#);
            let learned = learned(10 + i, 3, &state);
            tokio::spawn(async move { (state, journal.record_learned(learned).await.unwrap()) })
        })
        .collect();
    let mut saved = Vec::new();
    for task in writers {
        let (state, revision) = task.await.unwrap();
        if let Some(revision) = revision {
            saved.push((state, revision));
        }
    }
    assert_eq!(saved.len(), 1, "one save per base: {saved:?}");
    assert_eq!(saved[0].1, 4);
    let stored = journal.policy().await.unwrap().unwrap();
    assert_eq!((stored.revision, stored.state), (4, saved[0].0.clone()));
}

/// A raw session on a test database, as another application would have.
async fn raw_session(url: &str) -> tokio_postgres::Client {
    let mut config: tokio_postgres::Config = url.parse().unwrap();
    config.password(crate::pg_server::PASSWORD);
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// A PostgreSQL database holding another application's tables is refused
/// before homeostat creates anything in it, and a journal whose schema is
/// newer than this build is refused rather than misread.
#[tokio::test]
async fn a_database_homeostat_did_not_create_or_cannot_read_is_refused() {
    let db = TestDb::new(Backend::Postgres).await;
    let url = db.url.clone().unwrap();
    let other = raw_session(&url).await;
    other
        .batch_execute("CREATE TABLE orders (id int); CREATE VIEW recent AS SELECT * FROM orders;")
        .await
        .unwrap();
    let err = db.refused().await;
    assert!(
        err.contains("not a homeostat journal") && err.contains("(orders, recent)"),
        "{err}"
    );
    let tables: i64 = other
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = current_schema() AND c.relkind = 'r'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 1, "homeostat created tables beside another application's");

    let db = TestDb::new(Backend::Postgres).await;
    let (journal, writer) = db.open().await;
    drop(journal);
    writer.join();
    raw_session(db.url.as_deref().unwrap())
        .await
        .batch_execute("UPDATE homeostat_journal SET schema_version = 99")
        .await
        .unwrap();
    let err = db.refused().await;
    assert!(
        err.contains("schema version 99, newer than this homeostat understands"),
        "{err}"
    );
}

/// Deliveries that arrive together are committed together (group commit);
/// within the group each still sees the ones before it: an episode opened,
/// resolved and fired again, then a late repeat of the first resolution,
/// give the same incidents as one at a time would.
async fn a_whole_episode_in_one_group_commit_lands_in_order(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (journal, _writer) = db.open().await;
    let steps = |fp: String| {
        [
            alert(&fp, AlertStatus::Firing, T0, &[]),
            alert(&fp, AlertStatus::Resolved, T0, &[]),
            alert(&fp, AlertStatus::Firing, T1, &[]),
            alert(&fp, AlertStatus::Resolved, T0, &[]),
        ]
    };
    // Sent in this order, without waiting: they queue up for one commit.
    let mut all = Vec::new();
    for step in 0..4 {
        for i in 0..20 {
            all.push(steps(format!("g{i}"))[step].clone());
        }
    }
    let deliveries = futures_util::future::join_all(all.into_iter().map(|alert| {
        let journal = journal.clone();
        async move {
            let delivery = journal
                .ingest(message(vec![alert]), Utc::now(), slot().await)
                .await
                .unwrap();
            delivery.events[0].clone()
        }
    }))
    .await;
    let kinds: Vec<EventKind> = deliveries.iter().map(|e| e.kind).collect();
    let expected: Vec<EventKind> = [
        EventKind::Opened,
        EventKind::Resolved,
        EventKind::Opened,
        EventKind::Stale,
    ]
    .into_iter()
    .flat_map(|kind| std::iter::repeat_n(kind, 20))
    .collect();
    assert_eq!(kinds, expected);
    for i in 0..20 {
        let first = deliveries[i].incident_id;
        let second = deliveries[40 + i].incident_id;
        assert_ne!(first, second, "g{i}: the new episode is a new incident");
        assert_eq!(
            deliveries[20 + i].incident_id,
            first,
            "g{i}: the resolution closed the first"
        );
        assert_eq!(
            deliveries[60 + i].incident_id,
            first,
            "g{i}: the late repeat is of the first"
        );
        let first = journal.incident(first).await.unwrap().unwrap();
        let second = journal.incident(second).await.unwrap().unwrap();
        assert_eq!((first.status, first.deliveries), (AlertStatus::Resolved, 3), "g{i}");
        assert_eq!((second.status, second.deliveries), (AlertStatus::Firing, 1), "g{i}");
    }
}

/// A confounded outcome (the alert resolved with an outside change to the
/// target) is stored with its changes in the decision's record, beside what
/// the record held; it is no failure, and like a success it closes the
/// circuit breaker (someone fixed the target).
async fn a_confounded_outcome_keeps_its_outside_changes_and_closes_the_circuit_breaker(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (journal, _writer) = db.open().await;
    let target = "docker/container/web";
    let incident = deliver(&journal, alert("one", AlertStatus::Firing, T0, &[]))
        .await
        .incident_id;
    let acted = |outcome: Option<Verification>| {
        let journal = journal.clone();
        let decision = NewDecision {
            incident_id: incident,
            decided_at: Utc::now(),
            target_key: target.into(),
            action: "restart".into(),
            rule: Some("down".into()),
            attempt: 0,
            verdict: Verdict::Allow,
            reason: String::new(),
            record: serde_json::json!({"operation": {"operation": "restart_container"}}),
            dry_run: false,
        };
        async move {
            let id = journal.record_decision(decision).await.unwrap();
            journal
                .record_result(id, ActionResult::Done, "restarted", Utc::now())
                .await
                .unwrap();
            if let Some(outcome) = outcome {
                journal.record_outcome(id, outcome, Utc::now()).await.unwrap();
            }
            id
        }
    };
    let failures = || async {
        let since = Utc::now() - chrono::Duration::hours(1);
        let history = journal.history(target.into(), since, None).await.unwrap();
        history.consecutive_failures
    };
    acted(Some(Verification::Failure)).await;
    acted(Some(Verification::Timeout)).await;
    assert_eq!(failures().await, 2);
    let confounded = acted(None).await;
    let changes = [
        "network demo: container web connected at 20:31:02 UTC".to_owned(),
        "container web: limits or restart policy changed (docker update) at 20:31:05 UTC".to_owned(),
    ];
    journal
        .record_confounded(confounded, &changes, Utc::now())
        .await
        .unwrap();
    assert_eq!(failures().await, 0, "a confounded outcome closes the breaker");
    let recorded = journal.decisions(incident).await.unwrap();
    let recorded = recorded.iter().find(|d| d.id == confounded).unwrap();
    assert_eq!(recorded.outcome, Some(Verification::Confounded));
    assert!(recorded.verified_at.is_some());
    assert_eq!(recorded.new.record["outside_changes"], serde_json::json!(changes));
    assert_eq!(
        recorded.new.record["operation"]["operation"], "restart_container",
        "the rest of the record is kept"
    );
    acted(Some(Verification::Failure)).await;
    assert_eq!(failures().await, 1, "failures after it count again");
}
