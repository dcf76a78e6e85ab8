//! The serving path on tokio's paused time: a verification deadline, a
//! cooldown and a maintenance window with the deferrals they cause, each passed
//! by advancing the clock instead of waiting for it. The pipeline runs as
//! in service (a real SQLite journal, the responder's stages); only the
//! executor is a stand-in that counts what it is asked to do.

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
use tokio::sync::mpsc;

/// Counts executions (shared with the test); every target is one ready
/// replica of one. A stalling one never answers an execution, as a Docker
/// socket that accepts and never answers.
#[derive(Clone, Default)]
struct Counting {
    executions: Arc<AtomicUsize>,
    stall: bool,
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

    async fn execute(&self, _operation: &Operation) -> Result<Done, ExecError> {
        self.executions.fetch_add(1, Ordering::SeqCst);
        if self.stall {
            std::future::pending::<()>().await;
        }
        Ok("restarted".into())
    }
}

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-02T10:00:00Z").unwrap().to_utc()
}

/// Restart, then recreate, for ServiceDown; verified within 30 s; a 5 m
/// cooldown; nothing acts from 10 m to 20 m after the start.
fn actions(dir: &Path) -> ActionsConfig {
    let playbook = dir.join("playbook.yml");
    std::fs::write(
        &playbook,
        "rules:\n  - name: down\n    matchers: ['alertname=\"ServiceDown\"']\n    actions: [restart, recreate]\n",
    )
    .unwrap();
    let mut config: ActionsConfig = serde_yaml::from_str(&format!(
        "backend: docker\ndry_run: false\nplaybook: {}\nverify_timeout: 30s\nguard:\n  min_ready_replicas: 0\n",
        playbook.display()
    ))
    .unwrap();
    config.guard.maintenance_windows = vec![MaintenanceWindow {
        start: start() + chrono::Duration::minutes(10),
        end: start() + chrono::Duration::minutes(20),
        reason: "planned upgrade".into(),
    }];
    config
}

struct Harness {
    journal: Journal,
    responder: Responder<Bounded<Counting>>,
    executor: Counting,
    clock: Arc<TokioClock>,
    queue: mpsc::Sender<Delivery>,
    deliveries: mpsc::Receiver<Delivery>,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new(executor: Counting) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let journal_config = JournalConfig {
            path: dir.path().join("journal.db"),
            ..JournalConfig::default()
        };
        let (journal, _writer) = homeostat_journal::open(&journal_config, JournalMetrics::default()).unwrap();
        let clock = Arc::new(TokioClock::starting_at(start()));
        let actions = actions(dir.path());
        let playbook = Playbook::load(&actions.playbook).unwrap();
        let parts = Parts {
            journal: journal.clone(),
            metrics: Arc::new(Metrics::new(16)),
            controls: Arc::new(Controls::default()),
            clock: clock.clone(),
        };
        let responder = Responder::new(Bounded::new(executor.clone(), &actions), parts, playbook, actions);
        let (queue, deliveries) = mpsc::channel(16);
        Harness {
            journal,
            responder,
            executor,
            clock,
            queue,
            deliveries,
            _dir: dir,
        }
    }

    /// Delivers ServiceDown (firing) for `container` and runs the pipeline on it.
    async fn deliver(&mut self, container: &str) -> i64 {
        let body = json!({
            "version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": "firing",
            "receiver": "homeostat", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://alertmanager",
            "alerts": [{
                "status": "firing",
                "labels": {"alertname": "ServiceDown", "container": container},
                "annotations": {},
                "startsAt": start().to_rfc3339(),
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": format!("fp-{container}"),
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

    /// Waits, on tokio's clock, for the incident's first decision's outcome.
    async fn outcome(&self, incident: i64, within: chrono::Duration) -> (Verification, DateTime<Utc>) {
        loop {
            let decisions = self.decisions(incident).await;
            if let Some(outcome) = decisions[0].outcome {
                break (outcome, decisions[0].verified_at.unwrap());
            }
            assert!(self.clock.now() < start() + within, "no outcome within {within}");
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

#[tokio::test(start_paused = true)]
async fn deadlines_cooldowns_and_maintenance_windows_run_on_the_injected_clock() {
    let real = std::time::Instant::now();
    let mut h = Harness::new(Counting::default());

    // The first action: the alert never resolves, so verification fails at
    // its 30 s deadline, on tokio's clock.
    let web = h.deliver("web-1").await;
    assert_eq!(h.executions(), 1);
    let first = h.decisions(web).await;
    assert_eq!(first.len(), 1, "{:?}", summary(&first));
    assert_eq!(
        (first[0].new.verdict, first[0].result),
        (Verdict::Allow, Some(ActionResult::Done))
    );
    assert_eq!(first[0].new.decided_at, start(), "decided at the injected clock's time");
    let verified = h.outcome(web, chrono::Duration::seconds(60)).await;
    assert_eq!(verified.0, Verification::Failure, "still firing at the deadline");
    let waited = verified.1 - start();
    assert!(
        waited >= chrono::Duration::seconds(30) && waited < chrono::Duration::seconds(32),
        "verified {waited} after the action; the deadline is 30 s"
    );

    // The next step (recreate) comes within the 5 m cooldown: deferred.
    h.deliver("web-1").await;
    let decisions = h.decisions(web).await;
    let deferred = decisions.last().unwrap();
    assert_eq!(deferred.new.action, "recreate", "{:?}", summary(&decisions));
    assert_eq!(deferred.new.verdict, Verdict::Defer, "{:?}", summary(&decisions));
    assert!(deferred.new.reason.contains("cooldown"), "{}", deferred.new.reason);
    assert_eq!(h.executions(), 1);

    // Once the cooldown has passed on the clock, the same step is allowed.
    tokio::time::advance(Duration::from_secs(5 * 60)).await;
    h.deliver("web-1").await;
    let decisions = h.decisions(web).await;
    let allowed = decisions.last().unwrap();
    assert_eq!(
        (allowed.new.action.as_str(), allowed.new.verdict),
        ("recreate", Verdict::Allow),
        "{:?}",
        summary(&decisions)
    );
    assert_eq!(h.executions(), 2);

    // Inside the maintenance window (10 m to 20 m), actions wait for its end...
    tokio::time::advance(Duration::from_secs(5 * 60)).await;
    let api = h.deliver("api-1").await;
    let decisions = h.decisions(api).await;
    assert_eq!(decisions.len(), 1, "{:?}", summary(&decisions));
    assert_eq!(decisions[0].new.verdict, Verdict::Defer, "{:?}", summary(&decisions));
    assert!(
        decisions[0].new.reason.contains("maintenance"),
        "{}",
        decisions[0].new.reason
    );
    assert_eq!(h.executions(), 2);

    // ...and after it, the same incident is acted on.
    tokio::time::advance(Duration::from_secs(10 * 60)).await;
    h.deliver("api-1").await;
    let decisions = h.decisions(api).await;
    assert_eq!(
        decisions.last().unwrap().new.verdict,
        Verdict::Allow,
        "{:?}",
        summary(&decisions)
    );
    assert_eq!(h.executions(), 3);

    // Twenty minutes of the clock went by; the test did not wait for them.
    assert!(h.clock.now() - start() >= chrono::Duration::minutes(20));
    assert!(real.elapsed() < Duration::from_secs(60), "took {:?}", real.elapsed());
}

/// A call that never answers is abandoned at `actions.execute_timeout` (1m
/// by default): recorded as timed out, verified like a done action, and no
/// second action starts on the incident while the first may still run.
#[tokio::test(start_paused = true)]
async fn a_stalled_call_times_out_is_verified_and_is_not_followed_by_another_action() {
    let real = std::time::Instant::now();
    let mut h = Harness::new(Counting {
        stall: true,
        ..Counting::default()
    });
    let web = h.deliver("web-1").await;
    let first = h.decisions(web).await;
    assert_eq!(first.len(), 1, "{:?}", summary(&first));
    assert_eq!(first[0].new.verdict, Verdict::Allow);
    assert_eq!(first[0].result, Some(ActionResult::TimedOut), "{:?}", summary(&first));
    assert!(
        first[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("did not answer within 60s"),
        "{:?}",
        first[0].detail
    );
    let abandoned = first[0].executed_at.unwrap() - first[0].new.decided_at;
    assert!(
        abandoned >= chrono::Duration::seconds(60) && abandoned < chrono::Duration::seconds(61),
        "abandoned after {abandoned}"
    );
    // Being verified: a repeated delivery starts nothing.
    h.deliver("web-1").await;
    assert_eq!(h.decisions(web).await.len(), 1);
    assert_eq!(h.executions(), 1);
    // Still firing at the verification deadline (30 s after the call was abandoned).
    let (outcome, at) = h.outcome(web, chrono::Duration::seconds(120)).await;
    assert_eq!(outcome, Verification::Failure);
    assert!(at - start() >= chrono::Duration::seconds(90), "verified at {at}");
    assert!(real.elapsed() < Duration::from_secs(60), "took {:?}", real.elapsed());
}
