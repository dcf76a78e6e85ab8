//! `homeostat load`: HTTP requests at a fixed rate, every outcome recorded
//! (`--out`, CSV) and summarized.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use homeostat_core::duration::PromDuration;
use homeostat_demo::load::Sample;

use crate::exit;

#[derive(Args)]
pub struct LoadArgs {
    /// The URL to send GET requests to.
    url: String,
    /// Requests per second (open loop: sent on time whatever the answers).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// How long to send for.
    #[arg(long, default_value = "10s")]
    duration: PromDuration,
    /// A request not answered within this time counts as failed.
    #[arg(long, default_value = "5s")]
    timeout: PromDuration,
    /// Write every request's outcome here as CSV (due_ms,latency_ms,status).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: LoadArgs) -> ExitCode {
    let runtime = match crate::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    if !(args.rate.is_finite() && args.rate > 0.0) {
        eprintln!("homeostat load: --rate must be a positive number, got {}", args.rate);
        return ExitCode::from(2);
    }
    let client = match reqwest::Client::builder().timeout(args.timeout.0).build() {
        Ok(client) => client,
        Err(err) => {
            eprintln!("homeostat load: cannot build an HTTP client: {err}");
            return ExitCode::from(exit::STARTUP);
        }
    };
    let url = args.url.clone();
    let make: homeostat_demo::load::MakeRequest =
        std::sync::Arc::new(move |client: &reqwest::Client, _| client.get(&url));
    let samples = runtime.block_on(homeostat_demo::load::open_loop(
        client,
        args.rate,
        args.duration.0,
        make,
    ));
    if let Some(path) = &args.out {
        if let Err(err) = write_csv(path, &samples) {
            eprintln!("homeostat load: cannot write {}: {err}", path.display());
            return ExitCode::from(exit::RUNTIME);
        }
    }
    let summary = homeostat_demo::load::summarize(&samples);
    if args.json {
        outln!("{}", serde_json::to_string(&summary).unwrap_or_default());
    } else {
        outln!(
            "{} requests to {}: {} succeeded (2xx), {} failed; {:.1} ok/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            summary.requests, args.url, summary.succeeded, summary.failed, summary.throughput,
            summary.p50_ms, summary.p90_ms, summary.p99_ms, summary.max_ms
        );
    }
    ExitCode::SUCCESS
}

/// Writes one row per request, `due_ms,latency_ms,status`: milliseconds to
/// the microsecond, and the HTTP status or `error` (failed in transport).
fn write_csv(path: &Path, samples: &[Sample]) -> Result<(), csv::Error> {
    let mut writer = csv::Writer::from_path(path)?;
    writer.write_record(["due_ms", "latency_ms", "status"])?;
    for sample in samples {
        writer.write_record([
            format!("{:.3}", sample.due.as_secs_f64() * 1000.0),
            format!("{:.3}", sample.latency.as_secs_f64() * 1000.0),
            sample
                .status
                .map_or_else(|| "error".to_owned(), |code| code.to_string()),
        ])?;
    }
    writer.flush()?;
    Ok(())
}
