//! A small HTTP load generator that records every request's outcome.
//!
//! [`open_loop`] sends at a fixed rate whatever the server does, and
//! measures each latency from the moment the request was *due*, so a stalled
//! server shows up as latency instead of silently lowering the rate (no
//! coordinated omission).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

/// The outcome of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// When the request was due, from the start of the run.
    pub due: Duration,
    /// From `due` until the response headers arrived (or the error).
    pub latency: Duration,
    /// The HTTP status, or `None` when the request failed in transport.
    pub status: Option<u16>,
}

/// Builds the request to send; `n` counts requests from 0.
pub type MakeRequest = Arc<dyn Fn(&reqwest::Client, u64) -> reqwest::RequestBuilder + Send + Sync>;

/// Sends `rate` requests per second for `duration`; every request's
/// outcome is returned, in due order. A rate that is not a positive number
/// sends nothing.
pub async fn open_loop(client: reqwest::Client, rate: f64, duration: Duration, make: MakeRequest) -> Vec<Sample> {
    if !(rate.is_finite() && rate > 0.0) {
        return Vec::new();
    }
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let (sink, mut outcomes) = mpsc::unbounded_channel();
    send(client, rate, Some(total), make, sink).await;
    let mut samples = Vec::with_capacity(total as usize);
    // Every request task holds a sender; the channel closes when the last answers.
    while let Some(sample) = outcomes.recv().await {
        samples.push(sample);
    }
    samples.sort_by_key(|s| s.due);
    samples
}

/// Sends `rate` requests per second, `limit` of them or until the future is
/// dropped, and reports each outcome to `sink` as it arrives (not in due
/// order). `due` counts from the call. Returns once the last request is
/// sent; answers still outstanding keep arriving.
pub async fn send(
    client: reqwest::Client,
    rate: f64,
    limit: Option<u64>,
    make: MakeRequest,
    sink: mpsc::UnboundedSender<Sample>,
) {
    if !(rate.is_finite() && rate > 0.0) {
        return;
    }
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    for n in 0..limit.unwrap_or(u64::MAX) {
        ticks.tick().await;
        let due = period.mul_f64(n as f64);
        let request = make(&client, n);
        let sink = sink.clone();
        tokio::spawn(async move {
            let status = request.send().await.ok().map(|r| r.status().as_u16());
            let _ = sink.send(Sample {
                due,
                latency: start.elapsed().saturating_sub(due),
                status,
            });
        });
    }
}

/// What a run of samples amounts to.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub requests: usize,
    /// Requests answered 2xx.
    pub succeeded: usize,
    pub failed: usize,
    /// 2xx answers per second, over the span from the start to the last answer.
    pub throughput: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Summarizes samples; percentiles are nearest-rank over every request, failed ones included.
pub fn summarize(samples: &[Sample]) -> Summary {
    let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    latencies.sort();
    let rank = |q: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let index = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index].as_secs_f64() * 1000.0
    };
    let succeeded = samples
        .iter()
        .filter(|s| s.status.is_some_and(|c| (200..300).contains(&c)))
        .count();
    let span = samples
        .iter()
        .map(|s| s.due + s.latency)
        .max()
        .unwrap_or_default()
        .as_secs_f64();
    Summary {
        requests: samples.len(),
        succeeded,
        failed: samples.len() - succeeded,
        throughput: if span > 0.0 { succeeded as f64 / span } else { 0.0 },
        p50_ms: rank(0.50),
        p90_ms: rank(0.90),
        p99_ms: rank(0.99),
        max_ms: rank(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(due_ms: u64, latency_ms: u64, status: Option<u16>) -> Sample {
        Sample {
            due: Duration::from_millis(due_ms),
            latency: Duration::from_millis(latency_ms),
            status,
        }
    }

    #[test]
    fn percentiles_are_nearest_rank_and_failures_count() {
        let mut samples: Vec<Sample> = (1..=100).map(|i| sample(i * 10, i, Some(200))).collect();
        samples[0].status = Some(503);
        samples[1].status = None;
        let s = summarize(&samples);
        assert_eq!((s.requests, s.succeeded, s.failed), (100, 98, 2));
        assert_eq!((s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms), (50.0, 90.0, 99.0, 100.0));
        // The last answer arrives at 1000 ms + 100 ms.
        assert!((s.throughput - 98.0 / 1.1).abs() < 1e-9);
    }

    #[tokio::test]
    async fn a_rate_that_is_not_positive_sends_nothing() {
        let make: MakeRequest = Arc::new(|client: &reqwest::Client, _| client.get("http://127.0.0.1:9/"));
        for rate in [0.0, -5.0, f64::NAN, f64::INFINITY] {
            let samples = open_loop(reqwest::Client::new(), rate, Duration::from_secs(1), Arc::clone(&make)).await;
            assert!(samples.is_empty(), "{rate}");
        }
    }

    #[test]
    fn an_empty_run_is_all_zero() {
        let s = summarize(&[]);
        assert_eq!((s.requests, s.p99_ms, s.throughput), (0, 0.0, 0.0));
    }
}
