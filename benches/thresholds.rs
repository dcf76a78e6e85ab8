//! A refit round of adaptive thresholds at scale: N specs (default 1,000),
//! each one series of a week at one minute (10,080 points), through the
//! same `refit` that `homeostat serve` runs — fit (MSTL + AutoETS, band
//! calibration), thresholds, rendering, `promtool check rules` (when found;
//! `--no-promtool` skips it) and the atomic write of every rule file — with
//! the history generated in memory instead of queried from Prometheus (no
//! Prometheus querying, no reload). Baseline, in the same run: the bare
//! fit (`threshold::fit_series`) of the same series on the same threads.
//!
//! `cargo bench --bench thresholds -- [--specs N] [--no-promtool]`

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use homeostat_adapters::rules::{refit, HistorySource, RuleWriter, UpdateError};
use homeostat_core::threshold::{Series, ThresholdSpec};

const POINTS: usize = 10_080;
const STEP: Duration = Duration::from_secs(60);

/// A daily cycle with a weekday/weekend difference, a slow drift and noise;
/// each spec its own phase, level and noise, from a seeded splitmix64.
fn week(seed: u64) -> Vec<f64> {
    let mut state = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut uniform = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let level = 1.0 + 99.0 * uniform();
    let phase = uniform() * std::f64::consts::TAU;
    let noise = 0.01 + 0.05 * uniform();
    (0..POINTS)
        .map(|i| {
            let day = i as f64 / 1440.0;
            let weekend = if (day as usize) % 7 >= 5 { 0.8 } else { 1.0 };
            let cycle = 1.0 + 0.3 * (std::f64::consts::TAU * day + phase).sin();
            level * weekend * cycle * (1.0 + 0.001 * day) * (1.0 + noise * (uniform() - 0.5))
        })
        .collect()
}

/// History from [`week`], seeded by the spec's number.
struct Generated;

impl HistorySource for Generated {
    fn history(&self, spec: &ThresholdSpec, end: i64) -> impl Future<Output = Result<Vec<Series>, UpdateError>> + Send {
        let seed: u64 = spec.name.trim_start_matches("spec_").parse().unwrap_or(0);
        let start = end - (POINTS as i64 - 1) * 60;
        let labels = [("service".to_owned(), format!("svc-{seed}"))].into();
        std::future::ready(Ok(vec![Series {
            labels,
            start,
            values: week(seed),
        }]))
    }
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// CPU seconds (user + system) this process has used so far: on a shared
/// machine, wall time depends on the neighbours; this does not.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command name (in parentheses): fields 14 and 15 are utime and stime, in ticks.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut count, mut promtool) = (1000usize, true);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--specs" => count = args.next().and_then(|v| v.parse().ok()).expect("--specs N"),
            "--no-promtool" => promtool = false,
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let specs: Vec<ThresholdSpec> = (0..count)
        .map(|i| {
            serde_yaml::from_str(&format!(
                "{{name: spec_{i}, expr: 'p99_latency_seconds{{spec=\"{i}\"}}', alert: LatencyAboveBand, \
                 coverage: 0.99, step: 1m, history: 7d, refit_interval: 15m, labels: {{severity: page}}}}"
            ))
            .unwrap()
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let promtool = promtool
        .then(|| homeostat_demo::stack::find_program(&["promtool"], "prometheus").ok())
        .flatten();
    let writer = RuleWriter {
        dir: dir.path().join("generated"),
        promtool: promtool.clone(),
    };
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();

    let (started, cpu_before) = (Instant::now(), cpu_seconds());
    let outcomes = runtime.block_on(refit(
        &specs,
        &Generated,
        &HashMap::new(),
        &writer,
        None,
        chrono::Utc::now(),
        workers,
        None,
    ));
    let refit_seconds = started.elapsed().as_secs_f64();
    let refit_cpu = cpu_seconds() - cpu_before;
    let refit_rss = peak_rss_mib();
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().err().map(|e| format!("{}: {e}", o.spec)))
        .collect();
    assert!(failed.is_empty(), "{} specs failed, e.g. {}", failed.len(), failed[0]);
    let files = std::fs::read_dir(&writer.dir).unwrap().count();
    assert_eq!(files, count, "one rule file per spec");
    let bytes: u64 = std::fs::read_dir(&writer.dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();

    // Baseline: the fits alone (`fit_series`, as the refit calls it), same
    // series, one thread per worker,
    // each taking every `workers`-th series.
    let (started, cpu_before) = (Instant::now(), cpu_seconds());
    std::thread::scope(|scope| {
        for first in 0..workers {
            scope.spawn(move || {
                for i in (first..count).step_by(workers) {
                    homeostat_core::threshold::fit_series(&week(i as u64), STEP, 15, 0.99).expect("a week fits");
                }
            });
        }
    });
    let baseline_seconds = started.elapsed().as_secs_f64();
    let baseline_cpu = cpu_seconds() - cpu_before;

    let summary = serde_json::json!({
        "specs": count,
        "points_per_spec": POINTS,
        "workers": workers,
        "promtool_check": promtool.as_ref().map(|p| p.display().to_string()),
        "refit_seconds": refit_seconds,
        "refit_cpu_seconds": refit_cpu,
        "refit_peak_rss_mib": refit_rss,
        "rule_files": files,
        "rule_bytes": bytes,
        "baseline_forecast_only_seconds": baseline_seconds,
        "baseline_cpu_seconds": baseline_cpu,
        "peak_rss_mib_after_baseline": peak_rss_mib(),
    });
    println!("{}", serde_json::to_string_pretty(&summary).unwrap());
    println!(
        "refit of {count} specs × {POINTS} points on {workers} threads (fit, render, {}write; no Prometheus query): \
         {refit_seconds:.1} s wall, {refit_cpu:.1} CPU-s, peak RSS {refit_rss:.0} MiB; \
         baseline fit alone: {baseline_seconds:.1} s wall, {baseline_cpu:.1} CPU-s",
        if promtool.is_some() { "promtool check, " } else { "" }
    );
}
