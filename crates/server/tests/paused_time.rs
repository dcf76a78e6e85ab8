//! The reconciler on tokio's paused time: a verification deadline and the
//! next playbook step after it, a cooldown and a maintenance window with
//! the deferrals they cause and their retries, a stalled call — each with
//! one delivery per alert, as Alertmanager's default timings give, and the
//! clock passing without the test waiting for it. The pipeline runs as in
//! service (a real SQLite journal, the reconciler, the responder's stages);
//! only the executor is a stand-in that counts what it is asked to do.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use homeostat_adapters::executor::{Bounded, Done, ExecError, Executor};
use homeostat_core::action::{Backend, Operation, Target};
use homeostat_core::alert::{decode, WebhookMessage};
use homeostat_core::clock::Clock;
use homeostat_core::config::{ActionsConfig, JournalConfig};
use homeostat_core::decision::{ActionResult, Verdict, Verification};
use homeostat_core::guard::{MaintenanceWindow, Readiness};
use homeostat_core::playbook::Playbook;
use homeostat_journal::decisions::Decision;
use homeostat_journal::{Delivery, Journal, JournalMetrics};
use homeostat_server::clock::TokioClock;
use homeostat_server::metrics::Metrics;
use homeostat_server::pipeline::{Controls, Parts, Processor, Responder};
use serde_json::json;
use tokio::sync::{mpsc, watch};

/// Counts executions (shared with the test); every target is one ready
/// replica of one. Calls on the `stall` container never answer, as a Docker
/// socket that accepts and never answers.
#[derive(Clone, Default)]
struct Counting {
    executions: Arc<AtomicUsize>,
    stall: Option<&'static str>,
}

impl Executor for Counting {
    fn backend(&self) -> Backend {
        Backend::Docker
    }

    async fn readiness(&self, _target: &Target) -> Result<Option<Readiness>, ExecError> {
        Ok(Some(Readiness {
            ready: 1,
            total: 1,
            instance_ready: None,
        }))
    }

    async fn execute(&self, operation: &Operation) -> Result<Done, ExecError> {
        self.executions.fetch_add(1, Ordering::SeqCst);
        let stalls = matches!(
            (operation, self.stall),
            (Operation::RestartContainer { container: Some(c), .. }, Some(stall)) if c == stall
        );
        if stalls {
            std::future::pending::<()>().await;
        }
        Ok("restarted".into())
    }
}

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-02T10:00:00Z").unwrap().to_utc()
}

/// Minutes after the start.
fn minutes(m: i64) -> DateTime<Utc> {
    start() + chrono::Duration::minutes(m)
}

const RESTART_THEN_RECREATE: &str = "[restart, recreate]";
const RESTART: &str = "[restart]";

/// `actions` for ServiceDown; verified within 30 s; a 5 m cooldown; nothing
/// acts from 10 m to 20 m after the start; looks at least every 100 ms.
///
/// The journal's writer is a thread of its own: while a test waits for it,
/// tokio may advance its paused clock to the next timer, the reconciler's
/// sleep of a period at most. Hence the short period (shorter than the
/// configuration allows; fine for a stand-in executor), and deadlines in
/// these tests a few periods wide.
fn actions(dir: &Path, steps: &str) -> ActionsConfig {
    let playbook = dir.join("playbook.yml");
    std::fs::write(
        &playbook,
        format!("rules:\n  - name: down\n    matchers: ['alertname=\"ServiceDown\"']\n    actions: {steps}\n"),
    )
    .unwrap();
    let mut config: ActionsConfig = serde_yaml::from_str(&format!(
        "backend: docker\ndry_run: false\nplaybook: {}\nverify_timeout: 30s\nguard:\n  min_ready_replicas: 0\n",
        playbook.display()
    ))
    .unwrap();
    config.guard.maintenance_windows = vec![MaintenanceWindow {
        start: minutes(10),
        end: minutes(20),
        reason: "planned upgrade".into(),
    }];
    config.reconcile.period = "100ms".parse().unwrap();
    config
}

struct Harness {
    journal: Journal,
    responder: Arc<Responder<Bounded<Counting>>>,
    executor: Counting,
    clock: Arc<TokioClock>,
    queue: mpsc::Sender<Delivery>,
    deliveries: mpsc::Receiver<Delivery>,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new(executor: Counting, steps: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let journal_config = JournalConfig {
            path: dir.path().join("journal.db"),
            ..JournalConfig::default()
        };
        let (journal, _writer) = homeostat_journal::open(&journal_config, JournalMetrics::default()).unwrap();
        let clock = Arc::new(TokioClock::starting_at(start()));
        let actions = actions(dir.path(), steps);
        let playbook = Playbook::load(&actions.playbook).unwrap();
        let parts = Parts {
            journal: journal.clone(),
            metrics: Arc::new(Metrics::new(16)),
            controls: Arc::new(Controls::default()),
            clock: clock.clone(),
        };
        let responder = Arc::new(Responder::new(
            Bounded::new(executor.clone(), &actions),
            parts,
            playbook,
            actions,
        ));
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(Arc::clone(&responder).background(stopped));
        let (queue, deliveries) = mpsc::channel(16);
        Harness {
            journal,
            responder,
            executor,
            clock,
            queue,
            deliveries,
            _stop: stop,
            _dir: dir,
        }
    }

    /// Delivers ServiceDown (firing) for `container`, as alert `fingerprint`,
    /// and hands it to the pipeline, which wakes the reconciler.
    async fn deliver(&mut self, container: &str, fingerprint: &str) -> i64 {
        let body = json!({
            "version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": "firing",
            "receiver": "homeostat", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://alertmanager",
            "alerts": [{
                "status": "firing",
                "labels": {"alertname": "ServiceDown", "container": container, "alert": fingerprint},
                "annotations": {},
                "startsAt": start().to_rfc3339(),
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": fingerprint,
            }],
        });
        let message: WebhookMessage = decode(body.to_string().as_bytes()).unwrap();
        let slot = self.queue.clone().reserve_owned().await.unwrap();
        let delivery = self.journal.ingest(message, self.clock.now(), slot).await.unwrap();
        let queued = self.deliveries.recv().await.unwrap();
        assert_eq!(queued.id, delivery.id);
        self.responder.process(&queued).await;
        delivery.events[0].incident_id
    }

    async fn decisions(&self, incident: i64) -> Vec<Decision> {
        self.journal.decisions(incident).await.unwrap()
    }

    fn executions(&self) -> usize {
        self.executor.executions.load(Ordering::SeqCst)
    }

    /// Waits, on tokio's clock, until the incident has a decision `which`
    /// accepts, no later than `deadline`.
    async fn until(&self, incident: i64, deadline: DateTime<Utc>, which: impl Fn(&Decision) -> bool) -> Decision {
        loop {
            let decisions = self.decisions(incident).await;
            if let Some(found) = decisions.iter().find(|d| which(d)) {
                break found.clone();
            }
            assert!(
                self.clock.now() < deadline,
                "not by {deadline}: {:?}",
                summary(&decisions)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Verdicts and reasons, oldest first, for failure messages.
fn summary(decisions: &[Decision]) -> BTreeMap<i64, String> {
    decisions
        .iter()
        .map(|d| (d.id, format!("{} {}: {}", d.new.action, d.new.verdict, d.new.reason)))
        .collect()
}

fn seconds(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

/// One delivery, as Alertmanager gives with its default timings (the next
/// would come 4 h later): the failed restart is followed by the recreate as
/// soon as its verification fails, not held by the cooldown the restart
/// started; the failed recreate ends in one escalation, and nothing more.
#[tokio::test(start_paused = true)]
async fn the_next_step_follows_a_failed_verification_without_another_delivery() {
    let real = std::time::Instant::now();
    let mut h = Harness::new(Counting::default(), RESTART_THEN_RECREATE);
    let web = h.deliver("web-1", "fp-web").await;
    let restart = h.until(web, h.clock.now() + seconds(10), |d| d.result.is_some()).await;
    assert_eq!(
        (restart.new.action.as_str(), restart.new.verdict),
        ("restart", Verdict::Allow)
    );
    assert_eq!(restart.result, Some(ActionResult::Done));
    let failed = h.until(web, start() + seconds(60), |d| d.outcome.is_some()).await;
    assert_eq!(
        failed.outcome,
        Some(Verification::Failure),
        "still firing at the deadline"
    );
    let waited = failed.verified_at.unwrap() - restart.new.decided_at;
    assert!(
        waited >= seconds(30) && waited < seconds(35),
        "verified {waited} after the action"
    );

    let recreate = h
        .until(web, start() + seconds(120), |d| {
            d.new.action == "recreate" && d.result.is_some()
        })
        .await;
    assert_eq!(recreate.new.verdict, Verdict::Allow, "{}", recreate.new.reason);
    let after = recreate.new.decided_at - failed.verified_at.unwrap();
    assert!(
        after < seconds(5),
        "the next step came {after} after the failed verification"
    );
    assert_eq!(h.executions(), 2);

    let escalated = h
        .until(web, start() + seconds(180), |d| d.new.verdict == Verdict::Escalate)
        .await;
    assert!(
        escalated.new.reason.contains("all 2 actions"),
        "{}",
        escalated.new.reason
    );
    tokio::time::sleep(Duration::from_secs(600)).await;
    let all = h.decisions(web).await;
    assert_eq!(all.len(), 3, "nothing after the escalation: {:?}", summary(&all));
    assert_eq!(h.executions(), 2);
    assert!(real.elapsed() < Duration::from_secs(60), "took {:?}", real.elapsed());
}

/// A deferral is retried when it ends, with no delivery in between: a
/// cooldown (a second alert on a target acted on a second ago), then a
/// maintenance window.
#[tokio::test(start_paused = true)]
async fn deferrals_are_retried_when_they_end_without_another_delivery() {
    let real = std::time::Instant::now();
    let mut h = Harness::new(Counting::default(), RESTART);
    let first = h.deliver("web-1", "fp-first").await;
    h.until(first, h.clock.now() + seconds(10), |d| d.result.is_some())
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = h.deliver("web-1", "fp-second").await;
    let deferred = h.until(second, h.clock.now() + seconds(10), |_| true).await;
    assert_eq!(
        deferred.new.verdict,
        Verdict::Defer,
        "{:?}",
        summary(std::slice::from_ref(&deferred))
    );
    assert!(deferred.new.reason.contains("cooldown"), "{}", deferred.new.reason);
    let retried = h
        .until(second, minutes(6), |d| {
            d.new.verdict == Verdict::Allow && d.result.is_some()
        })
        .await;
    let cooldown_end = h.decisions(first).await[0].new.decided_at + chrono::Duration::minutes(5);
    assert!(
        retried.new.decided_at >= cooldown_end && retried.new.decided_at < cooldown_end + seconds(5),
        "retried at {}, the cooldown ended at {cooldown_end}",
        retried.new.decided_at
    );
    assert_eq!(h.executions(), 2);

    // Inside the maintenance window (10 m to 20 m), an action waits for its end.
    tokio::time::sleep((minutes(10) - h.clock.now()).to_std().unwrap()).await;
    let api = h.deliver("api-1", "fp-api").await;
    let waiting = h.until(api, minutes(11), |_| true).await;
    assert_eq!(
        waiting.new.verdict,
        Verdict::Defer,
        "{:?}",
        summary(std::slice::from_ref(&waiting))
    );
    assert!(waiting.new.reason.contains("maintenance"), "{}", waiting.new.reason);
    let acted = h
        .until(api, minutes(21), |d| {
            d.new.verdict == Verdict::Allow && d.result.is_some()
        })
        .await;
    assert!(
        acted.new.decided_at >= minutes(20) && acted.new.decided_at < minutes(20) + seconds(5),
        "acted at {}",
        acted.new.decided_at
    );
    assert_eq!(h.executions(), 3);
    assert!(real.elapsed() < Duration::from_secs(60), "took {:?}", real.elapsed());
}

/// A call that never answers is abandoned at `actions.execute_timeout` (1m
/// by default): recorded as timed out, verified like a done action, and no
/// second action starts on the incident while the first may still run.
/// Meanwhile an incident on another target is acted on at once.
#[tokio::test(start_paused = true)]
async fn a_stalled_call_times_out_is_verified_and_holds_up_no_other_target() {
    let real = std::time::Instant::now();
    let mut h = Harness::new(
        Counting {
            stall: Some("web-1"),
            ..Counting::default()
        },
        RESTART_THEN_RECREATE,
    );
    let web = h.deliver("web-1", "fp-web").await;
    h.until(web, h.clock.now() + seconds(10), |_| true).await;
    let api = h.deliver("api-1", "fp-api").await;
    let other = h.until(api, h.clock.now() + seconds(10), |d| d.result.is_some()).await;
    assert_eq!(
        other.result,
        Some(ActionResult::Done),
        "{:?}",
        summary(std::slice::from_ref(&other))
    );
    assert!(
        other.executed_at.unwrap() - other.new.decided_at < seconds(5),
        "held up: {:?}",
        other.executed_at
    );
    assert_eq!(
        h.decisions(web).await[0].result,
        None,
        "the stalled call is still running"
    );

    let first = h.until(web, start() + seconds(90), |d| d.result.is_some()).await;
    assert_eq!(first.new.verdict, Verdict::Allow);
    assert_eq!(first.result, Some(ActionResult::TimedOut));
    assert!(
        first.detail.as_deref().unwrap().contains("did not answer within 60s"),
        "{:?}",
        first.detail
    );
    let abandoned = first.executed_at.unwrap() - first.new.decided_at;
    assert!(
        abandoned >= seconds(60) && abandoned < seconds(65),
        "abandoned after {abandoned}"
    );
    // Being verified: a repeated delivery starts nothing.
    h.deliver("web-1", "fp-web").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(h.decisions(web).await.len(), 1);
    // Still firing at the verification deadline (30 s after the call was abandoned).
    let verified = h.until(web, start() + seconds(120), |d| d.outcome.is_some()).await;
    assert_eq!(verified.outcome, Some(Verification::Failure));
    assert!(
        verified.verified_at.unwrap() - start() >= seconds(90),
        "verified at {:?}",
        verified.verified_at
    );
    assert!(real.elapsed() < Duration::from_secs(60), "took {:?}", real.elapsed());
}
