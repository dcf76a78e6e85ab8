//! `homeostat bench`: the demo's faults, each injected several times in a
//! seeded random order, under each contender — nothing, Docker's restart
//! policy, a health-check restarter, homeostat's playbook, homeostat's
//! learning policy — on the demo's stack, one stack per contender (two
//! per baseline), all at once. [`run`] is the whole command; [`stats`] and [`report`] turn
//! its [`Trial`]s into intervals, tables and plots.
//!
//! Each contender runs on a stack of its own ([`crate::Demo`]: the same
//! services, images, Prometheus, Alertmanager and load): the baselines
//! with homeostat in dry run (it records what it would have done and
//! acts on nothing), `none` without a restart policy, the others with
//! `restart: unless-stopped`, as users run them. Between trials each
//! stack is brought back to its known good state and checked; homeostat's
//! stacks also wait for every alert to resolve, as the demo does.

pub mod report;
pub mod stats;
pub mod trial;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use tokio::task::JoinHandle;

use crate::load::Sample;
use crate::stack::{Containers, Service};
use crate::{Demo, DemoError, Fault, FaultResult, Say};
pub use trial::{BenchReport, Contender, Trial};

/// The faults the bench injects by default: the demo's own (crash, hang,
/// memory leak, error burst, bad deploy, dependency failure), those
/// applied from outside through the Docker API (SIGKILL, freeze, clean
/// stop), and the no-fault control.
pub const DEFAULT_FAULTS: [Fault; 10] = [
    Fault::Crash,
    Fault::Hang,
    Fault::MemoryLeak,
    Fault::ErrorBurst,
    Fault::BadDeploy,
    Fault::DependencyFailure,
    Fault::Kill,
    Fault::Freeze,
    Fault::Stop,
    Fault::None,
];

/// The health-check restarter: how often it probes `/healthz` on each
/// service's main port, how long a probe may take, and how many failures
/// in a row restart the container. Docker's HEALTHCHECK defaults are 30 s,
/// 30 s and 3; these are the tighter settings a user who cares would pick.
pub const HEALTHCHECK_INTERVAL: Duration = Duration::from_secs(5);
pub const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(2);
pub const HEALTHCHECK_RETRIES: u32 = 3;

/// How far before and after an action failed requests are counted, to
/// call it harmful when more failed after it than before.
pub const HARM_WINDOW_S: f64 = 10.0;

/// homeostat's action budget per hour in the bench: a contender runs
/// about fifty trials an hour, most of them with an action.
const BENCH_MAX_ACTIONS: u32 = 500;

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// What every stack shares: the faults, where the report goes (the
    /// bench's), the binaries, the load's rate, the fault timeout and how
    /// long the control runs. Each contender's stack runs with a copy,
    /// set for its contender ([`BenchOptions::demo_options`]).
    pub demo: crate::Options,
    pub contenders: Vec<Contender>,
    /// Trials of each fault per contender.
    pub trials: usize,
    /// Seeds the trials' order (the same for every contender) and the
    /// bootstrap intervals.
    pub seed: u64,
}

impl BenchOptions {
    /// Every contender, 5 trials of each of [`DEFAULT_FAULTS`], a 90 s fault timeout.
    pub fn new(homeostat: PathBuf) -> BenchOptions {
        let mut demo = crate::Options::new(homeostat);
        demo.faults = DEFAULT_FAULTS.to_vec();
        demo.fault_timeout = Duration::from_secs(90);
        BenchOptions {
            demo,
            contenders: Contender::ALL.to_vec(),
            trials: 5,
            seed: 1,
        }
    }

    /// The demo's options for `contender`'s stack.
    fn demo_options(&self, contender: Contender) -> crate::Options {
        let mut options = self.demo.clone();
        options.report_dir = None;
        options.dry_run = !contender.is_homeostat();
        options.policy_mode = if contender == Contender::Playbook {
            "playbook"
        } else {
            "learn"
        };
        options.max_actions = BENCH_MAX_ACTIONS;
        options.restart_policy = contender != Contender::None;
        options.settle = contender.is_homeostat();
        options.build_images = false;
        options
    }

    /// Every trial's fault and number, in the seeded order every contender runs.
    pub fn order(&self) -> Vec<(Fault, usize)> {
        let mut order: Vec<(Fault, usize)> = self
            .demo
            .faults
            .iter()
            .flat_map(|&fault| (1..=self.trials).map(move |n| (fault, n)))
            .collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(self.seed));
        order
    }

    /// The stack's settings in words, for the report.
    fn settings(&self) -> String {
        format!(
            "{} Load: {} requests/s to service_a on each stack. Contenders: none (no restart policy; homeostat in \
             dry run), restart-policy (`restart: unless-stopped`; homeostat in dry run), healthcheck (the restart \
             policy, and a restarter probing each service's /healthz every {} s with a {} s timeout, restarting the \
             container through the Docker API after {} failures in a row, as docker-autoheal does with Docker's \
             HEALTHCHECK), playbook and learned (the restart policy, and homeostat acting with policy.mode playbook \
             or learn; the learned policy's state is carried from trial to trial). Every contender's stack runs \
             at the same time, each on its own network, ports and processes; each baseline's trials take turns \
             on two stacks, as most of them last the whole timeout.",
            crate::report::SETTINGS,
            self.demo.rate,
            HEALTHCHECK_INTERVAL.as_secs(),
            HEALTHCHECK_TIMEOUT.as_secs(),
            HEALTHCHECK_RETRIES,
        )
    }
}

/// The bench's progress, for its line per trial: trials done and to do
/// on each stack (by contender and stack number).
struct Progress {
    started: Instant,
    stacks: HashMap<(Contender, usize), (usize, usize)>,
}

impl Progress {
    /// Counts one more trial done on `stack`; says how many of how many,
    /// and the time left: the stacks run side by side, so it is the
    /// longest any has left if its trials go on as fast as its first.
    fn step(&mut self, stack: (Contender, usize)) -> String {
        if let Some((done, _)) = self.stacks.get_mut(&stack) {
            *done += 1;
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        let left = self
            .stacks
            .values()
            .map(|&(done, total)| elapsed / done.max(1) as f64 * (total - done.min(total)) as f64)
            .fold(0.0, f64::max);
        let done: usize = self.stacks.values().map(|(done, _)| done).sum();
        let total: usize = self.stacks.values().map(|(_, total)| total).sum();
        format!(
            "[{done}/{total}, {:.0} min in, about {:.0} min left]",
            elapsed / 60.0,
            left / 60.0
        )
    }
}

/// On how many stacks `contender`'s trials run. Under a baseline most
/// trials last the whole fault timeout, as nothing heals the fault: each
/// baseline runs on two stacks, taking turns, to finish with homeostat's.
/// homeostat's contenders run on one each: the learned policy carries its
/// state from trial to trial there, and the playbook runs as it does.
fn stacks(contender: Contender) -> usize {
    if contender.is_homeostat() {
        1
    } else {
        2
    }
}

/// The Compose project (and network) of `contender`'s `stack`.
fn project(contender: Contender, stack: usize) -> String {
    format!("homeostat-bench-{}-{contender}-{stack}", std::process::id())
}

/// The whole `homeostat bench`: builds the images once, runs every
/// contender's trials on its own stack, all at once, and writes the
/// report; Ctrl-C removes every container, process and file, as the demo's does.
pub async fn run(options: BenchOptions, say: Say) -> Result<BenchReport, DemoError> {
    let outcome = tokio::select! {
        outcome = run_all(&options, &say) => outcome,
        _ = tokio::signal::ctrl_c() => Err(DemoError::Interrupted),
    };
    if let Ok(executor) = crate::connect_docker().await {
        for &contender in &options.contenders {
            for stack in 0..stacks(contender) {
                Containers::remove_project(executor.client(), &project(contender, stack)).await;
            }
        }
    }
    let report = outcome?;
    if let Some(dir) = &options.demo.report_dir {
        crate::write_report(dir, &say, |dir| report::write(&report, dir))?;
    }
    Ok(report)
}

async fn run_all(options: &BenchOptions, say: &Say) -> Result<BenchReport, DemoError> {
    if options.trials == 0 || options.demo.faults.is_empty() || options.contenders.is_empty() {
        return Err(DemoError::Stack(
            "nothing to run: the bench needs at least one trial, one fault and one contender".into(),
        ));
    }
    let executor = crate::connect_docker().await?;
    let bin_dir = options.demo.bin_dir();
    crate::build_images(&executor, &bin_dir, false, say).await?;
    let started_at = Utc::now();
    let order = options.order();
    let progress = Arc::new(Mutex::new(Progress {
        started: Instant::now(),
        stacks: options
            .contenders
            .iter()
            .flat_map(|&c| (0..stacks(c)).map(move |stack| (c, stack)))
            // Stack s of n takes the places s, s + n, s + 2n, …
            .map(|(c, s)| ((c, s), (0, (order.len() + stacks(c) - 1 - s) / stacks(c))))
            .collect(),
    }));
    say(&format!(
        "bench: {} trials ({} of each of {} faults) under each of {}, seed {}",
        order.len(),
        options.trials,
        options.demo.faults.len(),
        options
            .contenders
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(", "),
        options.seed
    ));
    let runs = options.contenders.iter().flat_map(|&contender| {
        let stacks = stacks(contender);
        let (order, progress) = (&order, &progress);
        (0..stacks).map(move |stack| {
            // The stack's share of the order, each trial with its place in it.
            let share: Vec<(usize, Fault, usize)> = order
                .iter()
                .enumerate()
                .filter(|(place, _)| place % stacks == stack)
                .map(|(place, &(fault, number))| (place + 1, fault, number))
                .collect();
            let progress = Arc::clone(progress);
            async move {
                let run = run_contender(options, contender, stack, &share, say, progress).await;
                (contender, run)
            }
        })
    });
    let outcomes = futures_util::future::join_all(runs).await;
    let mut trials = Vec::new();
    let mut failures = Vec::new();
    for (contender, (done, failure)) in outcomes {
        trials.extend(done);
        if let Some(e) = failure {
            failures.push(format!("{contender}: {e}"));
        }
    }
    trials.sort_by_key(|t| (t.contender, t.order));
    let report = BenchReport {
        started_at,
        finished_at: Utc::now(),
        seed: options.seed,
        trials_per_fault: options.trials,
        contenders: options.contenders.clone(),
        faults: options.demo.faults.clone(),
        fault_timeout_s: options.demo.fault_timeout.as_secs_f64(),
        settings: options.settings(),
        trials,
        failures,
    };
    Ok(report)
}

/// One contender's trials (`share`: each trial's place in the order, its
/// fault and number), in order, on its `stack`; stops at the first error
/// (the stack failed), keeping the trials done.
async fn run_contender(
    options: &BenchOptions,
    contender: Contender,
    stack: usize,
    share: &[(usize, Fault, usize)],
    say: &Say,
    progress: Arc<Mutex<Progress>>,
) -> (Vec<Trial>, Option<DemoError>) {
    let prefix = contender.name();
    let quiet: Say = {
        let say = Arc::clone(say);
        // The stack's own running commentary stays out of the bench's
        // output, but for what goes wrong.
        Arc::new(move |line: &str| {
            if line.contains("FAILED") || line.contains("cannot") {
                say(&format!("{prefix}: {line}"));
            }
        })
    };
    let mut demo = match Demo::start(options.demo_options(contender), quiet, project(contender, stack)).await {
        Ok(demo) => demo,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let restarts: Restarts = Arc::default();
    let restarter = (contender == Contender::Healthcheck).then(|| {
        spawn_restarter(
            demo.containers.clone(),
            demo.services.clone(),
            demo.client.clone(),
            Arc::clone(&restarts),
        )
    });
    let mut trials = Vec::new();
    let mut failure = None;
    for &(place, fault, number) in share {
        match demo.run_fault(fault).await {
            Ok(result) => {
                let by_healthcheck: Vec<f64> = restarts
                    .lock()
                    .expect("the restarter's lock is never poisoned")
                    .iter()
                    .filter(|(_, container)| *container == demo.service(fault.target()).container)
                    .map(|(at, _)| demo.at(*at) - result.injected_at_s)
                    .filter(|&at| at >= 0.0 && at <= measured_for(&result, options))
                    .collect();
                let trial = trial_of(&demo, contender, number, place, &result, &by_healthcheck, options);
                let line = progress
                    .lock()
                    .expect("the progress lock is never poisoned")
                    .step((contender, stack));
                say(&format!("{line} {}", describe(&trial)));
                trials.push(trial);
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if let Some(restarter) = restarter {
        restarter.abort();
    }
    demo.stop().await;
    (trials, failure)
}

/// Seconds from injection to the end of what a trial measures: recovery,
/// or the fault's timeout.
fn measured_for(result: &FaultResult, options: &BenchOptions) -> f64 {
    result.recover_s.unwrap_or_else(|| timeout_of(result.fault, options))
}

/// How long `fault` is given to heal (the control and a clean stop: how
/// long they are watched), as the demo gives it ([`Fault::deadline`]).
fn timeout_of(fault: Fault, options: &BenchOptions) -> f64 {
    fault.deadline(&options.demo).as_secs_f64()
}

/// The trial a demo fault result makes, with the health-check restarter's
/// restarts of the target (seconds from injection) during it.
fn trial_of(
    demo: &Demo,
    contender: Contender,
    trial: usize,
    order: usize,
    result: &FaultResult,
    by_healthcheck: &[f64],
    options: &BenchOptions,
) -> Trial {
    // Each action, with when it came (seconds from injection).
    let mut actions: Vec<(f64, String)> = Vec::new();
    if contender.is_homeostat() {
        for decision in &result.decisions {
            let acted = decision["verdict"] == "allow" && decision["result"].is_string();
            if let (true, Some(action), Some(at)) =
                (acted, decision["action"].as_str(), decision["decided_at_s"].as_f64())
            {
                if action != "notify" {
                    actions.push((at - result.injected_at_s, action.to_owned()));
                }
            }
        }
    }
    // The runtime's restarts that the restarter did not make (the engine
    // counts neither an API restart nor a start by hand).
    if let Some(at) = result.runtime_restarted_s {
        for _ in 0..result.runtime_restarts {
            actions.push((at, "restart (runtime)".to_owned()));
        }
    }
    actions.extend(
        by_healthcheck
            .iter()
            .map(|&at| (at, "restart (healthcheck)".to_owned())),
    );
    actions.sort_by(|a, b| a.0.total_cmp(&b.0));

    let timeout_s = timeout_of(result.fault, options);
    let (harmful_actions, requests_total, requests_failed) = {
        let samples = demo.samples.lock().expect("the load lock is never poisoned");
        let harmful = actions
            .iter()
            .filter(|(at, _)| harmful(&samples, result.injected_at_s + at))
            .count();
        let (sent, failed) = over_horizon(
            &samples,
            result.injected_at_s,
            result.ended_at_s,
            timeout_s,
            options.demo.rate,
        );
        (harmful, sent, failed)
    };
    // homeostat notices a fault when an alert on the target reaches it,
    // or when the runtime restarts the target first; a baseline, when it
    // acts.
    let detect_s = if contender.is_homeostat() {
        [result.detect_s, result.runtime_restarted_s]
            .into_iter()
            .flatten()
            .min_by(f64::total_cmp)
    } else {
        actions.first().map(|(at, _)| *at)
    };
    let healed_by = match (result.recover_s, result.healed_by, by_healthcheck.is_empty()) {
        (Some(_), "none", false) => "healthcheck",
        (_, by, _) => by,
    };
    let escalations = if contender.is_homeostat() {
        escalations(&result.decisions)
    } else {
        0
    };
    Trial {
        contender,
        fault: result.fault,
        trial,
        order,
        detect_s: detect_s.map(|s| (s * 10.0).round() / 10.0),
        recover_s: result.recover_s,
        timeout_s,
        requests_total,
        requests_failed,
        actions: actions.into_iter().map(|(_, action)| action).collect(),
        harmful_actions,
        escalations,
        healed_by: healed_by.to_owned(),
        note: result.note.clone(),
        cleared: result.cleared.clone(),
        decisions: result.decisions.clone(),
    }
}

/// How many of homeostat's `decisions` (as the demo's report has them)
/// told a human: verdict `escalate` (it could not help) or `notify` (its
/// rule or policy says a person should look; a deliberate stop).
fn escalations(decisions: &[serde_json::Value]) -> usize {
    decisions
        .iter()
        .filter(|d| d["verdict"] == "escalate" || d["verdict"] == "notify")
        .count()
}

/// More of service_a's requests (`samples`, each with its due time) failed
/// in the [`HARM_WINDOW_S`] after `at` (seconds from the demo's start)
/// than in those before it.
fn harmful(samples: &[(f64, Sample)], at: f64) -> bool {
    let failed = |from: f64, to: f64| {
        samples
            .iter()
            .filter(|(due, sample)| *due >= from && *due < to && !crate::succeeded(sample))
            .count()
    };
    failed(at, at + HARM_WINDOW_S) > failed(at - HARM_WINDOW_S, at)
}

/// Requests due and failed from `start` until `horizon` seconds later
/// (seconds from the demo's start), as [`Trial::requests_total`] counts
/// them: those due after the trial's `end` are served, at `rate`.
fn over_horizon(samples: &[(f64, Sample)], start: f64, end: f64, horizon: f64, rate: f64) -> (usize, usize) {
    let observed_until = end.min(start + horizon);
    let observed: Vec<&Sample> = samples
        .iter()
        .filter(|(due, _)| *due >= start && *due < observed_until)
        .map(|(_, s)| s)
        .collect();
    let failed = observed.iter().filter(|s| !crate::succeeded(s)).count();
    let unobserved = ((start + horizon - observed_until).max(0.0) * rate).round() as usize;
    (observed.len() + unobserved, failed)
}

/// A trial in one line, for the progress output.
fn describe(trial: &Trial) -> String {
    let outcome = match (trial.fault, trial.recover_s) {
        (Fault::None, _) => format!("{} of {} requests failed", trial.requests_failed, trial.requests_total),
        (_, Some(s)) => format!("recovered in {s:.1} s"),
        (Fault::Stop, None) => format!("left stopped for {:.0} s", trial.timeout_s),
        (_, None) => format!("NOT recovered within {:.0} s", trial.timeout_s),
    };
    let actions = if trial.actions.is_empty() {
        "no action".to_owned()
    } else {
        trial.actions.join(", ")
    };
    format!(
        "{} · {} #{}: {outcome} ({actions})",
        trial.contender, trial.fault, trial.trial
    )
}

/// The health-check restarter's restarts: when, and which container.
type Restarts = Arc<Mutex<Vec<(DateTime<Utc>, String)>>>;

/// The health-check restarter, in the manner of docker-autoheal: every
/// [`HEALTHCHECK_INTERVAL`], each running service's `/healthz` on its main
/// port; [`HEALTHCHECK_RETRIES`] failures in a row restart its container
/// through the Docker API (a paused container is running to Docker, and
/// its probes fail). A stopped container is not probed: its health is
/// not "unhealthy", and autoheal leaves it. Each restart lands in `restarts`.
fn spawn_restarter(
    containers: Containers,
    services: Vec<Service>,
    client: reqwest::Client,
    restarts: Restarts,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut failures: HashMap<String, u32> = HashMap::new();
        let mut tick = tokio::time::interval(HEALTHCHECK_INTERVAL);
        loop {
            tick.tick().await;
            for service in &services {
                let running = matches!(
                    containers.inspect(&service.container).await,
                    Ok(Some(c)) if c.state.as_ref().and_then(|s| s.running) == Some(true)
                );
                let count = failures.entry(service.container.clone()).or_default();
                if !running {
                    *count = 0;
                    continue;
                }
                let healthy = client
                    .get(service.url("/healthz"))
                    .timeout(HEALTHCHECK_TIMEOUT)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                *count = if healthy { 0 } else { *count + 1 };
                if *count >= HEALTHCHECK_RETRIES {
                    *count = 0;
                    let at = Utc::now();
                    match containers.restart(&service.container).await {
                        Ok(()) => restarts
                            .lock()
                            .expect("the restarter's lock is never poisoned")
                            .push((at, service.container.clone())),
                        Err(e) => tracing::warn!("healthcheck: {e}"),
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_is_seeded_and_holds_each_trial_once() {
        let mut options = BenchOptions::new(PathBuf::from("/nowhere/homeostat"));
        options.demo.faults = vec![Fault::Crash, Fault::Hang, Fault::None];
        options.trials = 4;
        let order = options.order();
        assert_eq!(order, options.order(), "the same seed gives the same order");
        let mut sorted = order.clone();
        sorted.sort();
        let expected: Vec<(Fault, usize)> = [Fault::Crash, Fault::Hang, Fault::None]
            .into_iter()
            .flat_map(|f| (1..=4).map(move |n| (f, n)))
            .collect();
        assert_eq!(sorted, expected);
        options.seed = 2;
        assert_ne!(order, options.order(), "another seed, another order");
    }

    fn sample(due: f64, status: Option<u16>) -> (f64, Sample) {
        let sample = Sample {
            due: Duration::from_secs_f64(due),
            latency: Duration::from_millis(5),
            status,
        };
        (due, sample)
    }

    #[test]
    fn requests_are_counted_over_the_same_horizon_however_early_a_trial_ended() {
        // One request a second, failing from 10 s to 14 s.
        let samples: Vec<(f64, Sample)> = (0..100)
            .map(|i| {
                let at = f64::from(i);
                sample(at, Some(if (10.0..15.0).contains(&at) { 503 } else { 200 }))
            })
            .collect();
        // Injected at 10 s, ended at 20 s, a 60 s horizon: 10 observed, 50 at the rate.
        assert_eq!(over_horizon(&samples, 10.0, 20.0, 60.0, 1.0), (60, 5));
        // Ended after the horizon: only what was due within it.
        assert_eq!(over_horizon(&samples, 10.0, 95.0, 60.0, 1.0), (60, 5));
        assert_eq!(over_horizon(&samples, 10.0, 12.0, 60.0, 2.0), (2 + 116, 2));
    }

    #[test]
    fn escalations_are_the_decisions_that_tell_a_human() {
        let decisions = [
            serde_json::json!({"action": "restart", "verdict": "allow"}),
            serde_json::json!({"action": "notify", "verdict": "notify"}),
            serde_json::json!({"action": "rollback", "verdict": "escalate"}),
            serde_json::json!({"action": "restart", "verdict": "refuse"}),
        ];
        assert_eq!(escalations(&decisions), 2);
        assert_eq!(escalations(&[]), 0);
    }

    #[test]
    fn an_action_is_harmful_when_more_requests_fail_after_it_than_before() {
        // 500s from 20 s to 25 s, then 200s; a restart at 23 s cut them short.
        let mut samples: Vec<(f64, Sample)> = (0..40)
            .map(|i| {
                let at = f64::from(i);
                sample(at, Some(if (20.0..25.0).contains(&at) { 500 } else { 200 }))
            })
            .collect();
        assert!(!harmful(&samples, 23.0), "3 failed before, 2 after");
        assert!(harmful(&samples, 22.0), "2 failed before, 3 after");
        assert!(!harmful(&samples, 30.0), "5 failed before, none after");
        // Failures that start with the action: harmful.
        assert!(harmful(&samples, 20.0), "none failed before, 5 after");
        // Requests that got no answer failed too.
        assert!(!harmful(&samples, 35.0));
        samples.push(sample(36.0, None));
        assert!(harmful(&samples, 35.0));
    }
}
