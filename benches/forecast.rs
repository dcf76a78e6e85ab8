//! Fit speed and accuracy of homeostat's forecaster (MSTL + AutoETS) on
//! week-long series at one minute (10,080 points each), and the data for the
//! same comparison with Prophet (`benches/prophet_compare.py`).
//!
//! `cargo bench --bench forecast -- [--series N] [--sample K] [--out DIR] [--calibrated]`
//! generates N seeded synthetic series (daily cycle, trend, noise, a few
//! level shifts), fits each on all but its last hour and forecasts that hour,
//! on all cores: with the model alone (`forecast::model_band`), or with
//! `--calibrated` as `forecast::forecast` does it (band calibration and the
//! seasonal-naive blend: one more fit per series at this horizon). It prints fit time, peak RSS and the MASE against seasonal
//! naive, and writes the first K series (`series_<i>.csv`, columns
//! `minute,value`) and `homeostat.json` (per sampled series: fit seconds,
//! MASE) into DIR for the Python script.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use homeostat_core::forecast;

const POINTS: usize = 10_080;
const HOLDOUT: usize = 60;
const DAY: usize = 1_440;

/// A seeded xorshift: the same series on every run and in the Python script's input.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        // Box–Muller.
        let (u, v) = (self.next().max(1e-12), self.next());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

fn series(seed: u64) -> Vec<f64> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let level = 50.0 + 100.0 * rng.next();
    let amplitude = level * (0.1 + 0.4 * rng.next());
    let trend = (rng.next() - 0.5) * level / POINTS as f64;
    let noise = level * 0.02 * (1.0 + 4.0 * rng.next());
    let phase = rng.next() * 2.0 * std::f64::consts::PI;
    let mut shift = 0.0;
    (0..POINTS)
        .map(|i| {
            if rng.next() < 2.0 / POINTS as f64 {
                shift += (rng.next() - 0.5) * level * 0.2;
            }
            let daily = (2.0 * std::f64::consts::PI * i as f64 / DAY as f64 + phase).sin();
            level + amplitude * daily + trend * i as f64 + shift + noise * rng.normal()
        })
        .collect()
}

/// Mean absolute error of the forecast over that of seasonal naive (the
/// same minute a day earlier) on the holdout.
fn mase(y: &[f64], point: &[f64]) -> f64 {
    let start = y.len() - HOLDOUT;
    let (mut model, mut naive) = (0.0, 0.0);
    for (k, p) in point.iter().enumerate() {
        model += (y[start + k] - p).abs();
        naive += (y[start + k] - y[start + k - DAY]).abs();
    }
    model / naive
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut count, mut sample, mut out) = (1000usize, 20usize, PathBuf::from("target/forecast-bench"));
    let mut calibrated = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--series" => count = args.next().and_then(|v| v.parse().ok()).expect("--series N"),
            "--sample" => sample = args.next().and_then(|v| v.parse().ok()).expect("--sample K"),
            "--out" => out = args.next().map(PathBuf::from).expect("--out DIR"),
            "--calibrated" => calibrated = true,
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    std::fs::create_dir_all(&out).expect("create the output directory");
    let step = Duration::from_secs(60);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, f64, f64, String)>> = Mutex::new(Vec::new());
    let started = Instant::now();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let y = series(i as u64);
                let fit_started = Instant::now();
                let history = &y[..POINTS - HOLDOUT];
                let band = if calibrated {
                    forecast::forecast(history, step, HOLDOUT, 0.95).ok()
                } else {
                    forecast::model_band(history, step, HOLDOUT, 0.95)
                }
                .expect("a week of a daily cycle fits");
                let seconds = fit_started.elapsed().as_secs_f64();
                let score = mase(&y, &band.point);
                results.lock().unwrap().push((i, seconds, score, band.model));
            });
        }
    });
    let wall = started.elapsed().as_secs_f64();
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| r.0);
    let mut fits: Vec<f64> = results.iter().map(|r| r.1).collect();
    fits.sort_by(f64::total_cmp);
    let mut scores: Vec<f64> = results.iter().map(|r| r.2).collect();
    scores.sort_by(f64::total_cmp);
    let sampled: Vec<serde_json::Value> = results
        .iter()
        .take(sample)
        .map(|(i, seconds, score, model)| {
            let y = series(*i as u64);
            let csv: String = std::iter::once("minute,value\n".to_owned())
                .chain(y.iter().enumerate().map(|(m, v)| format!("{m},{v}\n")))
                .collect();
            std::fs::write(out.join(format!("series_{i}.csv")), csv).expect("write a sampled series");
            serde_json::json!({ "series": i, "fit_seconds": seconds, "mase": score, "model": model })
        })
        .collect();
    let summary = serde_json::json!({
        "series": count,
        "points": POINTS,
        "holdout": HOLDOUT,
        "workers": workers,
        "wall_seconds": wall,
        "fit_seconds_median": fits[fits.len() / 2],
        "fit_seconds_p99": fits[(fits.len() * 99 / 100).min(fits.len() - 1)],
        "mase_median": scores[scores.len() / 2],
        "mase_mean": scores.iter().sum::<f64>() / scores.len() as f64,
        "peak_rss_mib": peak_rss_mib(),
        "sample": sampled,
    });
    std::fs::write(
        out.join("homeostat.json"),
        serde_json::to_string_pretty(&summary).unwrap(),
    )
    .unwrap();
    println!(
        "{count} series × {POINTS} points on {workers} threads: {wall:.1} s wall; fit median {:.1} ms, p99 {:.1} ms; \
         MASE vs seasonal naive median {:.3}, mean {:.3}; peak RSS {:.0} MiB; sample of {} in {}",
        1000.0 * fits[fits.len() / 2],
        1000.0 * fits[(fits.len() * 99 / 100).min(fits.len() - 1)],
        scores[scores.len() / 2],
        scores.iter().sum::<f64>() / scores.len() as f64,
        peak_rss_mib().unwrap_or(f64::NAN),
        sample.min(count),
        out.display()
    );
}
