//! The cost of the anomaly scorer's memory of sequences
//! (`homeostat_lab::anomaly::sequence`) and of its ART rule
//! (`homeostat_lab::anomaly::art`) on ordinary and adversarial streams.
//!
//! `cargo bench --bench memory -- [--points N] [--gaps 0,50]`
//! feeds each stream (N points, 20,000 by default) to a memory with each
//! relearn gap (`SequenceConfig::relearn_gap`; by default 0, the
//! default, then 50), one
//! after another on one core, and prints per stream and gap the total
//! time, the mean and the slowest point, and the contexts learned. Every
//! run sees the same values:
//! - `daily cycle`: a noisy daily cycle at 5 minutes (an ordinary metric);
//! - `uniform noise`: no pattern at all, so contexts pile up;
//! - `growth 1%`: each point 1% above the last, a new maximum every time;
//! - `noise on a trend`: noise on a slow climb, new maxima now and then.

use std::time::{Duration, Instant};

use homeostat_lab::anomaly::art::{ArtConfig, ArtScorer};
use homeostat_lab::anomaly::sequence::{SequenceConfig, SequenceMemory};

/// A fixed pseudo-random value in [0, 1) for point `i` (SplitMix64's
/// mixer): every run, on every machine, sees the same streams.
fn noise(i: usize) -> f64 {
    let mut z = (i as u64).wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}

fn streams(points: usize) -> Vec<(&'static str, Vec<f64>)> {
    let day = 288.0;
    let cycle = (0..points)
        .map(|i| 50.0 + 20.0 * (2.0 * std::f64::consts::PI * i as f64 / day).sin() + 4.0 * noise(i))
        .collect();
    let uniform = (0..points).map(|i| noise(points + i)).collect();
    let growth = (0..points).map(|i| 1.01f64.powi(i as i32)).collect();
    let trend = (0..points).map(|i| i as f64 * 0.002 + noise(2 * points + i)).collect();
    vec![
        ("daily cycle", cycle),
        ("uniform noise", uniform),
        ("growth 1%", growth),
        ("noise on a trend", trend),
    ]
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    let at = args.iter().position(|a| a == name)?;
    args.get(at + 1).and_then(|v| v.parse().ok())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let points: usize = arg(&args, "--points").unwrap_or(20_000);
    let gaps: Vec<usize> = arg::<String>(&args, "--gaps").map_or_else(
        || vec![SequenceConfig::default().relearn_gap, 50],
        |list| list.split(',').filter_map(|g| g.trim().parse().ok()).collect(),
    );
    println!("| stream | relearn gap | total | mean per point | slowest point | contexts |");
    println!("|---|---|---|---|---|---|");
    for (name, values) in streams(points) {
        for gap in &gaps {
            let mut memory = SequenceMemory::new(SequenceConfig {
                relearn_gap: *gap,
                ..SequenceConfig::default()
            });
            let timing = time(&values, |v| memory.push(v));
            println!("| {name} | {gap} | {timing} | {} |", memory.contexts());
        }
    }
    println!();
    println!("| stream | rule | total | mean per point | slowest point | rebuilds | categories |");
    println!("|---|---|---|---|---|---|---|");
    for (name, values) in streams(points) {
        let mut art = ArtScorer::new(ArtConfig::default());
        let timing = time(&values, |v| art.push(v));
        println!(
            "| {name} | ART | {timing} | {} | {} |",
            art.rebuilds(),
            art.categories()
        );
    }
}

/// Pushes every value, one at a time; the total, the mean and the slowest
/// point as table cells.
fn time(values: &[f64], mut push: impl FnMut(f64) -> f64) -> String {
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    for value in values {
        let point = Instant::now();
        std::hint::black_box(push(*value));
        slowest = slowest.max(point.elapsed());
    }
    let total = started.elapsed();
    format!(
        "{:.2} s | {:.1} µs | {:.1} ms",
        total.as_secs_f64(),
        total.as_secs_f64() * 1e6 / values.len().max(1) as f64,
        slowest.as_secs_f64() * 1e3,
    )
}
