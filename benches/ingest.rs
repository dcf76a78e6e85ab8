//! Webhook ingest benchmark: homeostat against a bare axum handler that only
//! parses the same JSON, in the same run, each in its own process.
//!
//! `cargo bench --bench ingest [-- --rate 2000 --seconds 10 --concurrency 32,128 --targets bare,full,normal,postgres]`
//!
//! `postgres` is homeostat on a PostgreSQL journal (`journal.url`), on a
//! local PostgreSQL 15 server the bench starts with its default durability
//! (every commit synced, as `full` syncs SQLite's).
//!
//! For each target: idle RSS after start-up; an open-loop run at `--rate`
//! requests/s with homeostat's own load generator (latency from each
//! request's due time, so stalls are counted); a closed-loop run with `wrk`
//! (Debian package `wrk`) at each `--concurrency` connection count, the best
//! of which is the maximum throughput: wrk is written in C and leaves the 2
//! cores to the servers; peak RSS. Payload: Alertmanager notifications of 5 alerts,
//! cycling through 1,000 groups (5,000 distinct alerts), so homeostat both
//! opens incidents and updates them.

#[path = "serve.rs"]
mod serve;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use homeostat_demo::load::{self, MakeRequest, Summary};
use serde_json::{json, Value};
use std::path::Path;

// The same allocator as the homeostat binary, so the baseline differs only in what the handler does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROLE_ENV: &str = "HOMEOSTAT_BENCH_ROLE";
const GROUPS: usize = 1000;

fn main() {
    if std::env::var(ROLE_ENV).as_deref() == Ok("bare") {
        return run_bare_server();
    }
    let options = Options::from_args();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run(options));
}

struct Options {
    rate: f64,
    seconds: u64,
    /// wrk connection counts to try; the best one is the maximum throughput.
    concurrency: Vec<usize>,
    /// Which of `bare`, `full`, `normal`, `postgres` to measure; the first is the baseline.
    targets: Vec<String>,
}

impl Options {
    fn from_args() -> Options {
        let mut options = Options {
            rate: 2000.0,
            seconds: 10,
            concurrency: vec![32, 128],
            targets: vec!["bare".into(), "full".into(), "normal".into(), "postgres".into()],
        };
        let args: Vec<String> = std::env::args().collect();
        for pair in args.windows(2) {
            match pair[0].as_str() {
                "--rate" => options.rate = pair[1].parse().expect("--rate takes requests per second"),
                "--seconds" => options.seconds = pair[1].parse().expect("--seconds takes a whole number"),
                "--concurrency" => {
                    options.concurrency = pair[1]
                        .split(',')
                        .map(|n| n.parse().expect("--concurrency takes whole numbers, comma-separated"))
                        .collect()
                }
                "--targets" => options.targets = pair[1].split(',').map(str::to_owned).collect(),
                _ => {}
            }
        }
        options
    }
}

/// The baseline: parse the notification with the same decoder, answer 200.
fn run_bare_server() {
    use axum::routing::post;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let app = axum::Router::new().route(
            "/api/v1/alerts",
            post(|body: axum::body::Bytes| async move {
                match homeostat_core::alert::decode(&body) {
                    Ok(message) => (axum::http::StatusCode::OK, message.alerts.len().to_string()),
                    Err(e) => (axum::http::StatusCode::BAD_REQUEST, e.to_string()),
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap());
        axum::serve(listener, app).await.unwrap();
    });
}

struct Target {
    name: String,
    child: Child,
    addr: String,
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_bare() -> Target {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(ROLE_ENV, "bare")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    Target {
        name: "bare axum + decode".into(),
        child,
        addr: line.trim().to_owned(),
    }
}

/// homeostat with `journal` as its config's journal section, named `name`.
fn start_homeostat(dir: &std::path::Path, name: &str, journal: String) -> Target {
    let config = dir.join(format!("homeostat-{name}.yaml"));
    std::fs::write(&config, format!("server:\n  listen: 127.0.0.1:0\njournal:\n{journal}")).unwrap();
    let (child, addr) = serve::serve(&config, "info");
    Target {
        name: format!("homeostat ({name})"),
        child,
        addr,
    }
}

/// VmRSS and VmHWM (peak) of a process, in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn payloads() -> Arc<Vec<bytes::Bytes>> {
    let groups = (0..GROUPS)
        .map(|g| {
            let alerts: Vec<Value> = (0..5)
                .map(|a| {
                    json!({
                        "status": "firing",
                        "labels": {"alertname": "HighLatency", "service": format!("svc-{g}"), "pod": format!("svc-{g}-{a}"), "severity": "page"},
                        "annotations": {"summary": "p99 latency above threshold", "runbook_url": "https://runbooks.invalid/high-latency"},
                        "startsAt": "2026-11-28T06:00:00.000Z",
                        "endsAt": "0001-01-01T00:00:00Z",
                        "generatorURL": "http://prometheus.invalid/graph?g0.expr=histogram_quantile",
                        "fingerprint": format!("{:016x}", g * 5 + a),
                    })
                })
                .collect();
            let body = json!({
                "version": "4", "groupKey": format!("{{}}:{{service=\"svc-{g}\"}}"), "truncatedAlerts": 0,
                "status": "firing", "receiver": "homeostat",
                "groupLabels": {"service": format!("svc-{g}")},
                "commonLabels": {"alertname": "HighLatency", "service": format!("svc-{g}"), "severity": "page"},
                "commonAnnotations": {"summary": "p99 latency above threshold"},
                "externalURL": "http://alertmanager.invalid", "alerts": alerts,
            });
            bytes::Bytes::from(serde_json::to_vec(&body).unwrap())
        })
        .collect();
    Arc::new(groups)
}

fn requests(addr: &str, payloads: Arc<Vec<bytes::Bytes>>) -> MakeRequest {
    let url = format!("http://{addr}/api/v1/alerts");
    Arc::new(move |client: &reqwest::Client, n: u64| {
        let body = payloads[n as usize % payloads.len()].clone();
        client.post(&url).header("content-type", "application/json").body(body)
    })
}

struct Row {
    name: String,
    idle_rss: f64,
    peak_rss: f64,
    paced: Summary,
    max: Wrk,
}

/// What wrk reports.
struct Wrk {
    concurrency: usize,
    /// Answers per second, whatever their status.
    requests_per_second: f64,
    requests: u64,
    non_2xx: u64,
    errors: u64,
}

/// A wrk script cycling through the payloads, one per request.
fn wrk_script(dir: &Path, payloads: &[bytes::Bytes]) -> std::path::PathBuf {
    let mut lua = String::from("local bodies = {\n");
    for body in payloads {
        lua.push_str(&format!("  [==[{}]==],\n", String::from_utf8_lossy(body)));
    }
    lua.push_str(
        "}\nlocal i = 0\nwrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
         request = function()\n  i = i % #bodies + 1\n  return wrk.format(nil, nil, nil, bodies[i])\nend\n",
    );
    let path = dir.join("ingest.lua");
    std::fs::write(&path, lua).unwrap();
    path
}

impl Wrk {
    /// 2xx answers per second: what counts as throughput.
    fn accepted_per_second(&self) -> f64 {
        let failed = (self.non_2xx + self.errors) as f64;
        let share = if self.requests == 0 {
            0.0
        } else {
            1.0 - failed / self.requests as f64
        };
        self.requests_per_second * share.max(0.0)
    }
}

fn run_wrk(script: &Path, addr: &str, concurrency: usize, seconds: u64) -> Wrk {
    let output = Command::new("wrk")
        .args(["-t1", &format!("-c{concurrency}"), &format!("-d{seconds}s"), "-s"])
        .arg(script)
        .arg(format!("http://{addr}/api/v1/alerts"))
        .output()
        .expect("wrk is needed for the throughput run: apt-get install wrk");
    let text = String::from_utf8_lossy(&output.stdout);
    let number_after = |label: &str| -> f64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.trim_end_matches(',').parse().ok())
            .unwrap_or(0.0)
    };
    let errors = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        .map_or(0, |rest| {
            rest.split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        });
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Wrk {
        concurrency,
        requests_per_second: number_after("Requests/sec:"),
        requests,
        non_2xx: number_after("Non-2xx or 3xx responses:") as u64,
        errors,
    }
}

async fn measure(target: &Target, options: &Options, payloads: &Arc<Vec<bytes::Bytes>>, script: &Path) -> Row {
    tokio::time::sleep(Duration::from_millis(500)).await; // let start-up allocations settle before reading idle RSS
    let (idle_rss, _) = rss_mib(target.child.id());
    let client = reqwest::Client::new();
    let make = requests(&target.addr, Arc::clone(payloads));
    let seconds = Duration::from_secs(options.seconds);
    // Warm-up: connections, caches, and the first GROUPS incidents opened.
    load::open_loop(client.clone(), 500.0, Duration::from_secs(2), Arc::clone(&make)).await;
    let paced = load::summarize(&load::open_loop(client, options.rate, seconds, make).await);
    let max = options
        .concurrency
        .iter()
        .map(|&c| run_wrk(script, &target.addr, c, options.seconds))
        .max_by(|a, b| a.accepted_per_second().total_cmp(&b.accepted_per_second()))
        .expect("at least one --concurrency");
    let (_, peak_rss) = rss_mib(target.child.id());
    Row {
        name: target.name.clone(),
        idle_rss,
        peak_rss,
        paced,
        max,
    }
}

async fn run(options: Options) {
    let dir = tempfile::tempdir().unwrap();
    let payloads = payloads();
    eprintln!(
        "payload: 5 alerts, {} bytes; open loop {} req/s for {}s; wrk with {:?} connections for {}s each",
        payloads[0].len(),
        options.rate,
        options.seconds,
        options.concurrency,
        options.seconds
    );
    let script = wrk_script(dir.path(), &payloads);
    let mut rows = Vec::new();
    for name in &options.targets {
        let target = match name.as_str() {
            "bare" => start_bare(),
            "full" | "normal" => start_homeostat(
                dir.path(),
                &format!("SQLite, journal.synchronous: {name}"),
                format!(
                    "  path: {}\n  synchronous: {name}\n",
                    dir.path().join(format!("journal-{name}.db")).display()
                ),
            ),
            "postgres" => {
                let url = homeostat_journal::pg_server::durable_database().await;
                let password = dir.path().join("pg-password");
                std::fs::write(&password, homeostat_journal::pg_server::PASSWORD).unwrap();
                let journal = format!("  url: {url}\n  password: {{file: {}}}\n", password.display());
                start_homeostat(dir.path(), "PostgreSQL 15, local", journal)
            }
            other => panic!("unknown target {other:?}: use bare, full, normal or postgres"),
        };
        eprintln!("measuring {} at {}", target.name, target.addr);
        rows.push(measure(&target, &options, &payloads, &script).await);
    }
    let baseline = rows[0].max.accepted_per_second();
    println!(
        "| target | idle RSS MiB | peak RSS MiB | at {} req/s: p50 ms | p99 ms | max ms | failed | wrk max 2xx/s | at -c | vs first | non-2xx + errors |",
        options.rate
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {} / {} | {:.0} | {} | {:.0}% | {} / {} |",
            r.name,
            r.idle_rss,
            r.peak_rss,
            r.paced.p50_ms,
            r.paced.p99_ms,
            r.paced.max_ms,
            r.paced.failed,
            r.paced.requests,
            r.max.accepted_per_second(),
            r.max.concurrency,
            100.0 * r.max.accepted_per_second() / baseline,
            r.max.non_2xx + r.max.errors,
            r.max.requests,
        );
    }
}
