//! Alert storm benchmark: distinct alerts at a steady rate into the real
//! binary, acting (in dry run, on Docker) with the default guard, so that
//! after the budget's first 10 actions every incident is deferred; how fast
//! incidents are decided, whether the webhook keeps acknowledging, memory,
//! and the journal's size per incident.
//!
//! `cargo bench --bench storm [-- --alerts 100000 --seconds 200]`
//!
//! Open loop (homeostat's own load generator): notifications of 5 distinct
//! alerts each at `alerts / 5 / seconds` requests/s. Every second the
//! benchmark reads `homeostat_decisions_total` (one decision per incident:
//! a deferral is recorded once) and reports the best 10-second decision
//! rate, the backlog (acknowledged alerts not yet decided), and how long
//! after the last acknowledgement the last decision came.

#[path = "serve.rs"]
mod serve;

use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use homeostat_demo::load::{self, MakeRequest};
use serde_json::{json, Value};

struct Options {
    alerts: u64,
    seconds: u64,
}

impl Options {
    fn from_args() -> Options {
        let mut options = Options {
            alerts: 100_000,
            seconds: 200,
        };
        let args: Vec<String> = std::env::args().collect();
        for pair in args.windows(2) {
            match pair[0].as_str() {
                "--alerts" => options.alerts = pair[1].parse().expect("--alerts takes a count"),
                "--seconds" => options.seconds = pair[1].parse().expect("--seconds takes seconds"),
                _ => {}
            }
        }
        options
    }
}

const PER_REQUEST: u64 = 5;

struct Homeostat {
    child: Child,
    addr: String,
}

impl Drop for Homeostat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &std::path::Path) -> Homeostat {
    let playbook = dir.join("playbook.yml");
    std::fs::write(&playbook, "rules:\n  - name: storm\n    actions: [recreate]\n").unwrap();
    let config = dir.join("homeostat.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  listen: 127.0.0.1:0\njournal:\n  path: {}\nactions:\n  backend: docker\n  dry_run: true\n  \
             playbook: {}\n  policy:\n    mode: playbook\n",
            dir.join("journal.db").display(),
            playbook.display()
        ),
    )
    .unwrap();
    let (child, addr) = serve::serve(&config, "warn,homeostat_server::app=info");
    Homeostat { child, addr }
}

fn requests(addr: &str) -> MakeRequest {
    let url = format!("http://{addr}/api/v1/alerts");
    Arc::new(move |client: &reqwest::Client, n: u64| {
        let alerts: Vec<Value> = (0..PER_REQUEST)
            .map(|a| {
                let id = n * PER_REQUEST + a;
                json!({
                    "status": "firing",
                    "labels": {"alertname": "ContainerDown", "container": format!("storm-{id}")},
                    "annotations": {},
                    "startsAt": "2026-12-07T06:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "",
                    "fingerprint": format!("{id:016x}"),
                })
            })
            .collect();
        let body = json!({
            "version": "4", "groupKey": format!("{{}}:{{n=\"{n}\"}}"), "truncatedAlerts": 0,
            "status": "firing", "receiver": "homeostat", "groupLabels": {}, "commonLabels": {},
            "commonAnnotations": {}, "externalURL": "http://alertmanager.invalid", "alerts": alerts,
        });
        client.post(&url).json(&body)
    })
}

/// Decisions homeostat has recorded, from its metrics.
async fn decided(client: &reqwest::Client, addr: &str) -> u64 {
    let text = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("homeostat_decisions_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let options = Options::from_args();
    tokio::runtime::Runtime::new().unwrap().block_on(run(options));
}

async fn run(options: Options) {
    let dir = tempfile::tempdir().unwrap();
    let homeostat = start(dir.path());
    let addr = homeostat.addr.clone();
    let rate = options.alerts as f64 / PER_REQUEST as f64 / options.seconds as f64;
    eprintln!(
        "{} alerts, {PER_REQUEST} per notification, {rate:.1} notifications/s for {} s",
        options.alerts, options.seconds
    );
    let client = reqwest::Client::new();
    let started = Instant::now();
    // Alerts acknowledged, once the load has ended: the sampler stops when
    // that many are decided (or 10 minutes later).
    let (acked_tx, acked_rx) = tokio::sync::watch::channel(None::<u64>);
    let sampler = {
        let client = client.clone();
        let addr = addr.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                samples.push((started.elapsed().as_secs_f64(), decided(&client, &addr).await));
                let acked = *acked_rx.borrow();
                if acked.is_some_and(|acked| samples.last().is_some_and(|s| s.1 >= acked)) {
                    return samples;
                }
                if started.elapsed() > Duration::from_secs(options.seconds + 600) {
                    return samples;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let sent = load::open_loop(client, rate, Duration::from_secs(options.seconds), requests(&addr)).await;
    let acked_at = started.elapsed().as_secs_f64();
    let summary = load::summarize(&sent);
    let _ = acked_tx.send(Some(summary.succeeded as u64 * PER_REQUEST));
    let samples = sampler.await.unwrap();
    let (last_at, last) = *samples.last().unwrap();
    let best_10s = samples
        .windows(11)
        .map(|w| (w[10].1 - w[0].1) as f64 / (w[10].0 - w[0].0))
        .fold(0.0, f64::max);
    let acked = summary.succeeded as u64 * PER_REQUEST;
    let backlog = samples
        .iter()
        .map(|(t, d)| ((t / options.seconds as f64).min(1.0) * acked as f64) as i64 - *d as i64)
        .max()
        .unwrap_or(0);
    let journal: u64 = ["journal.db", "journal.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.path().join(f)).ok())
        .map(|m| m.len())
        .sum();
    println!("| measure | value |");
    println!("|---|---|");
    let status = |code: u16| sent.iter().filter(|s| s.status == Some(code)).count();
    println!(
        "| notifications sent / answered 2xx / 503 / other failures | {} / {} / {} / {} |",
        summary.requests,
        summary.succeeded,
        status(503),
        summary.failed - status(503)
    );
    println!(
        "| ack latency p50 / p99 / max | {:.1} / {:.1} / {:.1} ms |",
        summary.p50_ms, summary.p99_ms, summary.max_ms
    );
    println!("| incidents decided | {last} of {acked} acknowledged |");
    println!(
        "| decided per second: whole run / best 10 s | {:.0} / {best_10s:.0} |",
        last as f64 / last_at
    );
    println!("| largest backlog (acknowledged, not yet decided) | {backlog} |");
    println!(
        "| last decision after the last acknowledgement | {:.1} s |",
        (last_at - acked_at).max(0.0)
    );
    println!("| peak RSS | {:.1} MiB |", peak_rss_mib(homeostat.child.id()));
    println!(
        "| journal size / per incident | {:.1} MiB / {:.0} bytes |",
        journal as f64 / 1048576.0,
        journal as f64 / acked.max(1) as f64
    );
}
