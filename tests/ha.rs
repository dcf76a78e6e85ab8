//! Two homeostat replicas on one PostgreSQL journal, fed by two clustered
//! Alertmanagers that each send to both, acting on throwaway Docker
//! containers, while the leader is killed (`kill -9`) or paused
//! (`SIGSTOP` past its lease, then resumed) at random moments: no incident
//! lost, no action repeated, every interrupted action escalated once, and
//! each failover within the lease.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::docker::{image, Service};
use common::{Alertmanager, Process};
use serde_json::{json, Value};

/// The lease of the test's replicas: failover within about this.
const LEASE: Duration = Duration::from_secs(2);
/// Containers acted on, each by its own sequence of incidents.
const CONTAINERS: usize = 4;
/// Incidents per container.
const INCIDENTS: usize = 25;
/// Disruptions of the leader: `kill -9` and `SIGSTOP`, alternately; more
/// for the benchmark (`HOMEOSTAT_HA_DISRUPTIONS`, docs/BENCHMARKS.md).
fn disruptions() -> usize {
    std::env::var("HOMEOSTAT_HA_DISRUPTIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(8)
}

/// The two replicas, each on a port of its own; a killed one is started
/// again on its port (where Alertmanager sends).
struct Replicas {
    configs: [PathBuf; 2],
    processes: Mutex<[Option<Process>; 2]>,
}

impl Replicas {
    fn start(configs: [PathBuf; 2]) -> Replicas {
        let processes = [Some(Process::start(&configs[0])), Some(Process::start(&configs[1]))];
        Replicas {
            configs,
            processes: Mutex::new(processes),
        }
    }

    /// The base URL of replica `index`.
    fn url(&self, index: usize) -> String {
        self.processes.lock().unwrap()[index].as_ref().unwrap().url("")
    }

    /// The base URLs of the replicas running now.
    fn urls(&self) -> Vec<String> {
        let processes = self.processes.lock().unwrap();
        processes.iter().flatten().map(|p| p.url("")).collect()
    }

    /// Which replica leads, by its metrics, with its pid; `except` (a
    /// paused one, whose metrics would not answer) is not asked.
    async fn leader(&self, client: &reqwest::Client, except: Option<usize>) -> Option<(usize, u32)> {
        let candidates: Vec<(usize, String, u32)> = {
            let processes = self.processes.lock().unwrap();
            processes
                .iter()
                .enumerate()
                .filter(|(i, _)| Some(*i) != except)
                .filter_map(|(i, p)| p.as_ref().map(|p| (i, p.url(""), p.child.id())))
                .collect()
        };
        for (i, url, pid) in candidates {
            if common::leads(client, &url).await == Some(true) {
                return Some((i, pid));
            }
        }
        None
    }
}

/// A GET of the API on whichever replica answers.
async fn get(client: &reqwest::Client, replicas: &Replicas, path: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for url in replicas.urls() {
            let response = client.get(format!("{url}{path}")).send().await;
            if let Ok(response) = response {
                if response.status().is_success() {
                    if let Ok(value) = response.json::<Value>().await {
                        return value;
                    }
                }
            }
        }
        assert!(Instant::now() < deadline, "no replica answered GET {path} for 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends the alert of incident `case` on `container` to both
/// Alertmanagers, as Prometheus does: firing, or resolved now.
async fn send(alertmanagers: &[Alertmanager; 2], container: &str, case: &str, starts_at: &str, resolved: bool) {
    let mut alert = json!({
        "labels": {"alertname": "ContainerDown", "container": container, "case": case},
        "annotations": {},
        "startsAt": starts_at,
        "generatorURL": "http://prometheus.invalid/graph",
    });
    if resolved {
        alert["endsAt"] = chrono::Utc::now().to_rfc3339().into();
    }
    for alertmanager in alertmanagers {
        alertmanager.post_alerts(&json!([alert])).await;
    }
}

/// The incident of `case`, once journalled.
async fn incident(client: &reqwest::Client, replicas: &Replicas, case: &str) -> Vec<Value> {
    let page = get(client, replicas, &format!("/api/v1/incidents?label=case={case}")).await;
    page["incidents"].as_array().cloned().unwrap_or_default()
}

async fn decisions(client: &reqwest::Client, replicas: &Replicas, incident: i64) -> Vec<Value> {
    let page = get(client, replicas, &format!("/api/v1/incidents/{incident}/decisions")).await;
    page["decisions"].as_array().cloned().unwrap_or_default()
}

/// Whether the incident's action is settled: done (or timed out), or
/// escalated, or failed.
fn settled(decisions: &[Value]) -> Option<&'static str> {
    for d in decisions {
        if d["verdict"] == "escalate" {
            return Some("escalated");
        }
        if d["verdict"] == "allow" && (d["result"] == "done" || d["result"] == "timed_out") {
            return Some("done");
        }
        if d["verdict"] == "allow" && d["result"] == "error" {
            return Some("failed");
        }
    }
    None
}

/// Runs the incidents of one container, one after another: fire, wait
/// until the leader has acted (or escalated), resolve, wait for the
/// resolution to be journalled.
async fn run_container(
    client: reqwest::Client,
    replicas: Arc<Replicas>,
    alertmanagers: Arc<[Alertmanager; 2]>,
    container: String,
    index: usize,
) {
    for j in 0..INCIDENTS {
        let case = format!("c{index}i{j}");
        let starts_at = chrono::Utc::now().to_rfc3339();
        send(&alertmanagers, &container, &case, &starts_at, false).await;
        let id = common::eventually(&format!("{case} to be journalled"), Duration::from_secs(30), || async {
            incident(&client, &replicas, &case)
                .await
                .first()
                .and_then(|i| i["id"].as_i64())
        })
        .await;
        common::eventually(&format!("{case} to be acted on"), Duration::from_secs(60), || async {
            settled(&decisions(&client, &replicas, id).await)
        })
        .await;
        send(&alertmanagers, &container, &case, &starts_at, true).await;
        common::eventually(&format!("{case} to be resolved"), Duration::from_secs(30), || async {
            incident(&client, &replicas, &case)
                .await
                .first()
                .is_some_and(|i| i["status"] == "resolved")
                .then_some(())
        })
        .await;
    }
}

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill").args([signal, &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// Disrupts the leader [`disruptions`] times, at random moments: `kill -9`
/// (then starts it again) or `SIGSTOP` for three leases (then `SIGCONT`).
/// Returns each failover: from the disruption until the other replica leads.
async fn disrupt(client: reqwest::Client, replicas: Arc<Replicas>) -> Vec<(&'static str, Duration)> {
    let mut failovers = Vec::new();
    let mut seed = u64::from(std::process::id());
    for round in 0..disruptions() {
        // A cheap random pause of 0.5–3 s: acts land anywhere in an incident's life.
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        tokio::time::sleep(Duration::from_millis(500 + (seed >> 33) % 2500)).await;
        let (index, pid) = common::eventually("a replica to lead", Duration::from_secs(30), || {
            replicas.leader(&client, None)
        })
        .await;
        let kill = round % 2 == 0;
        let disrupted = Instant::now();
        if kill {
            signal(pid, "-KILL");
        } else {
            signal(pid, "-STOP");
        }
        common::eventually("the other replica to take over", Duration::from_secs(30), || {
            replicas.leader(&client, Some(index))
        })
        .await;
        failovers.push((if kill { "kill -9" } else { "SIGSTOP" }, disrupted.elapsed()));
        if kill {
            let config = replicas.configs[index].clone();
            let restarted = tokio::task::spawn_blocking(move || Process::start(&config))
                .await
                .unwrap();
            let old = replicas.processes.lock().unwrap()[index].replace(restarted);
            drop(old);
        } else {
            tokio::time::sleep(LEASE * 2).await;
            signal(pid, "-CONT");
            // Resumed past its lease, it follows: it neither records nor acts.
            common::until_leads(&client, &replicas.url(index), false).await;
        }
    }
    failovers
}

/// Docker's own record of restarts, streamed from before the first one
/// (the engine keeps only its last 256 events for a later `--since`).
struct Restarts {
    child: std::process::Child,
}

impl Restarts {
    fn watch(project: &str) -> Restarts {
        let child = Command::new("docker")
            .args([
                "events",
                "--filter",
                "type=container",
                "--filter",
                "event=restart",
                "--filter",
                &format!("label=com.docker.compose.project={project}"),
                "--format",
                "{{.Actor.Attributes.name}}",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        Restarts { child }
    }

    /// How many times each container was restarted, once the stream is stopped.
    fn count(mut self) -> BTreeMap<String, usize> {
        // Events reach the stream within moments; the last restart is long done.
        std::thread::sleep(Duration::from_secs(1));
        let _ = self.child.kill();
        let output = self.child.wait_with_output().unwrap();
        let mut counts = BTreeMap::new();
        for name in String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|l| !l.is_empty())
        {
            *counts.entry(name.to_owned()).or_insert(0) += 1;
        }
        counts
    }
}

/// A replica's config in `dir`, listening on `port`: the journal at `url`
/// with a lease of `lease`, restarts of containers on Docker, for real.
fn write_config(dir: &Path, url: &str, lease: Duration, port: u16) -> PathBuf {
    std::fs::write(dir.join("pg-password"), homeostat_journal::pg_server::PASSWORD).unwrap();
    std::fs::write(
        dir.join("playbook.yml"),
        "rules:\n  - name: down\n    matchers: ['alertname=\"ContainerDown\"']\n    actions: [restart]\n",
    )
    .unwrap();
    let config = dir.join(format!("homeostat-{port}.yaml"));
    std::fs::write(
        &config,
        format!(
            "server:\n  listen: 127.0.0.1:{port}\n\
             journal:\n  url: {url}\n  password: {{file: pg-password}}\n  lease: {}s\n\
             actions:\n  backend: docker\n  dry_run: false\n  playbook: playbook.yml\n  verify_timeout: 30s\n  \
             guard:\n    cooldown: 1s\n    budget: {{max_actions: 1000, window: 1h}}\n    max_concurrent: {CONTAINERS}\n    \
             min_ready_replicas: 0\n    circuit_breaker_failures: 1000\n  \
             docker:\n    stop_timeout_seconds: 1\n",
            lease.as_secs()
        ),
    )
    .unwrap();
    config
}

#[tokio::test]
async fn two_replicas_lose_nothing_and_repeat_nothing_while_the_leader_is_killed_or_paused() {
    image().await;
    let service = Service::new("ha");
    let containers: Vec<String> = (1..=CONTAINERS as u32).map(|n| service.run(n, &[])).collect();
    let restarts = Restarts::watch(&service.project);

    let dir = tempfile::tempdir().unwrap();
    let url = homeostat_journal::pg_server::database().await;
    let ports = [common::free_port(), common::free_port()];
    let replicas = Arc::new(Replicas::start(
        ports.map(|port| write_config(dir.path(), &url, LEASE, port)),
    ));
    // Two clustered Alertmanagers, each sending to both replicas.
    let receivers: String = ports
        .iter()
        .map(|port| format!("      - url: http://127.0.0.1:{port}/api/v1/alerts\n        send_resolved: true\n"))
        .collect();
    let alertmanagers = Arc::new(
        Alertmanager::clustered_pair(&format!(
            "route:\n  receiver: homeostat\n  group_by: ['case']\n  group_wait: 100ms\n  group_interval: 1s\n  \
             repeat_interval: 1h\nreceivers:\n  - name: homeostat\n    webhook_configs:\n{receivers}"
        ))
        .await,
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    let started = Instant::now();
    let chaos = tokio::spawn(disrupt(client.clone(), Arc::clone(&replicas)));
    let mut runs = Vec::new();
    for (index, container) in containers.iter().enumerate() {
        runs.push(tokio::spawn(run_container(
            client.clone(),
            Arc::clone(&replicas),
            Arc::clone(&alertmanagers),
            container.clone(),
            index,
        )));
    }
    for run in runs {
        run.await.unwrap();
    }
    let failovers = chaos.await.unwrap();
    let elapsed = started.elapsed();

    // Every incident journalled once, and what was done to it.
    let mut acted: BTreeMap<String, usize> = BTreeMap::new();
    let mut unknown: BTreeMap<String, usize> = BTreeMap::new();
    let (mut done, mut interrupted, mut escalated) = (0, 0, 0);
    for (index, container) in containers.iter().enumerate() {
        for j in 0..INCIDENTS {
            let case = format!("c{index}i{j}");
            let found = incident(&client, &replicas, &case).await;
            assert_eq!(found.len(), 1, "{case}: {found:?}");
            let id = found[0]["id"].as_i64().unwrap();
            let decided = decisions(&client, &replicas, id).await;
            let allowed: Vec<&Value> = decided.iter().filter(|d| d["verdict"] == "allow").collect();
            assert!(allowed.len() <= 1, "{case}: an action repeated: {decided:?}");
            let escalations = decided.iter().filter(|d| d["verdict"] == "escalate").count();
            if let Some(action) = allowed.first() {
                match action["result"].as_str() {
                    Some("done" | "timed_out") => {
                        done += 1;
                        *acted.entry(container.clone()).or_insert(0) += 1;
                    }
                    Some("interrupted") => {
                        interrupted += 1;
                        assert_eq!(
                            escalations, 1,
                            "{case}: an interrupted action is escalated once: {decided:?}"
                        );
                        *unknown.entry(container.clone()).or_insert(0) += 1;
                    }
                    other => panic!("{case}: the action's result is {other:?}: {decided:?}"),
                }
            }
            escalated += escalations;
        }
    }
    // Docker's own count: every confirmed restart happened once; an
    // interrupted one at most once; nothing more.
    let counted = restarts.count();
    for container in &containers {
        let confirmed = acted.get(container).copied().unwrap_or(0);
        let maybe = unknown.get(container).copied().unwrap_or(0);
        let seen = counted.get(container).copied().unwrap_or(0);
        assert!(
            (confirmed..=confirmed + maybe).contains(&seen),
            "{container}: Docker restarted it {seen} times; homeostat confirmed {confirmed} restarts \
             and {maybe} more were interrupted"
        );
    }
    eprintln!(
        "HA run: {} incidents in {:.0} s; {done} restarts confirmed, {interrupted} interrupted, {escalated} escalated; \
         Docker restarted the containers {} times",
        CONTAINERS * INCIDENTS,
        elapsed.as_secs_f64(),
        counted.values().sum::<usize>(),
    );
    for kind in ["kill -9", "SIGSTOP"] {
        let times: Vec<Duration> = failovers.iter().filter(|(k, _)| *k == kind).map(|(_, d)| *d).collect();
        eprintln!("failover after {kind}: {}", summary(times));
    }
    assert!(done + interrupted > 0);

    // A pause through the follower reaches the leader (woken by it).
    let (leader, _) = replicas.leader(&client, None).await.unwrap();
    let paused = client
        .post(format!("{}/api/v1/pause", replicas.url(1 - leader)))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), 200);
    common::eventually("the leader to pause", Duration::from_secs(10), || async {
        let state: Value = client
            .get(format!("{}/api/v1/controls", replicas.url(leader)))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (state["paused"] == true && state["leader"] == true).then_some(())
    })
    .await;
    for (how, took) in &failovers {
        assert!(
            *took < LEASE * 3,
            "a failover after {how} took {took:?}, more than the lease ({LEASE:?}) and a retry"
        );
    }
}

/// "n N, median M s, worst W s" of `times`.
fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    match (times.get(times.len() / 2), times.last()) {
        (Some(median), Some(worst)) => format!(
            "n {}, median {:.2} s, worst {:.2} s",
            times.len(),
            median.as_secs_f64(),
            worst.as_secs_f64()
        ),
        _ => "n 0".into(),
    }
}

/// Transactions the database has committed or rolled back so far.
async fn transactions(admin: &tokio_postgres::Client) -> i64 {
    admin
        .query_one(
            "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// The benchmark's other figures (docs/BENCHMARKS.md): the transactions
/// per second each idle replica costs the database, with the test's lease
/// and the default one, and the baseline for failover: one replica alone,
/// started again at once after `kill -9` (as a supervisor would), until it
/// leads again.
#[tokio::test]
#[ignore = "a benchmark: cargo test --test ha -- --ignored --nocapture"]
async fn benchmark_replica_cost_and_single_replica_restart() {
    let window = Duration::from_secs(30);
    let rate = |before: i64, after: i64| (after - before) as f64 / window.as_secs_f64();
    for lease in [LEASE, Duration::from_secs(15)] {
        let dir = tempfile::tempdir().unwrap();
        let url = homeostat_journal::pg_server::database().await;
        let config = write_config(dir.path(), &url, lease, 0);
        let mut pg: tokio_postgres::Config = url.parse().unwrap();
        pg.password(homeostat_journal::pg_server::PASSWORD);
        let (admin, connection) = pg.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let before = transactions(&admin).await;
        tokio::time::sleep(window).await;
        eprintln!(
            "lease {lease:?}, 0 replicas: {:.2} transactions/s (the measurement itself)",
            rate(before, transactions(&admin).await)
        );
        let mut processes = Vec::new();
        for n in 1..=3 {
            processes.push(Process::start(&config));
            tokio::time::sleep(Duration::from_secs(3)).await;
            let before = transactions(&admin).await;
            tokio::time::sleep(window).await;
            eprintln!(
                "lease {lease:?}, {n} idle replicas: {:.2} transactions/s",
                rate(before, transactions(&admin).await)
            );
        }
        if lease != LEASE {
            continue;
        }
        processes.truncate(1);
        let client = reqwest::Client::new();
        common::until_leads(&client, &processes[0].url(""), true).await;
        let mut restarts = Vec::new();
        for _ in 0..10 {
            let killed = Instant::now();
            signal(processes[0].child.id(), "-KILL");
            let _ = processes[0].child.wait();
            processes[0] = Process::start(&config);
            common::until_leads(&client, &processes[0].url(""), true).await;
            restarts.push(killed.elapsed());
        }
        eprintln!(
            "lease {lease:?}: one replica restarted at once after kill -9, until it leads: {}",
            summary(restarts)
        );
    }
}
